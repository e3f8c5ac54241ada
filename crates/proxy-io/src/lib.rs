//! Moving bytes between two sockets exactly: PROXY protocol v2 framing, replay of sniffed bytes, and a
//! bidirectional copy that propagates half-close in each direction and enforces an idle deadline.
//!
//! * [`encode_v2`] / [`parse_proxy_header`] / [`read_proxy_header`]: the PROXY protocol (v2 written,
//!   v1 and v2 read), at most [`MAX_PROXY_HEADER`] bytes.
//! * [`Rewind`]: a stream that yields bytes already read before reading on.
//! * [`copy_bidirectional`] / [`copy_bidirectional_observed`]: the byte pump.
#![forbid(unsafe_code)]

mod copy;
mod proxy;
mod rewind;

pub use copy::{
    copy_bidirectional, copy_bidirectional_observed, CopyDirection, CopyStats, COPY_BUFFER_SIZE,
    MAX_COPY_BUFFER_SIZE,
};
pub use proxy::{
    encode_v2, parse_proxy_header, read_proxy_header, ProxyAddresses, ProxyError, ProxyHeader,
    MAX_PROXY_HEADER,
};
pub use rewind::Rewind;
