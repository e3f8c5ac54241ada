//! Moving bytes between two sockets exactly: PROXY protocol v2 framing, replay of sniffed bytes, and a
//! bidirectional copy that propagates half-close in each direction and enforces an idle deadline.
//!
//! * [`encode_v2`] / [`parse_proxy_header`] / [`read_proxy_header`]: the PROXY protocol (v2 written,
//!   v1 and v2 read), at most [`MAX_PROXY_HEADER`] bytes.
//! * [`cidr`]: the networks trusted to send a PROXY header (edge and router alike).
//! * [`Rewind`]: a stream that yields bytes already read before reading on.
//! * [`copy_bidirectional`] / [`copy_bidirectional_observed`]: the byte pump;
//!   [`copy_tcp_bidirectional_observed`]: the same between two TCP sockets, with bulk flows moved by
//!   `splice(2)` on Linux.
#![forbid(unsafe_code)]

pub mod cidr;
mod copy;
mod proxy;
mod rewind;
#[cfg(target_os = "linux")]
mod splice;
#[cfg(test)]
mod test_support;

#[cfg(target_os = "linux")]
pub use splice::copy_tcp_bidirectional_observed;

/// [`copy_bidirectional_observed`] for two TCP sockets (no `splice(2)` on this platform).
#[cfg(not(target_os = "linux"))]
pub async fn copy_tcp_bidirectional_observed<F>(
    a: &mut tokio::net::TcpStream,
    b: &mut tokio::net::TcpStream,
    idle: std::time::Duration,
    observe: F,
) -> Result<CopyStats, std::io::Error>
where
    F: FnMut(CopyDirection, u64),
{
    copy_bidirectional_observed(a, b, idle, observe).await
}

pub use copy::{
    copy_bidirectional, copy_bidirectional_observed, CopyDirection, CopyStats, MAX_COPY_BUFFER_SIZE,
};
pub use proxy::{
    encode_v2, parse_proxy_header, read_proxy_header, ProxyAddresses, ProxyError, ProxyHeader,
    MAX_PROXY_HEADER,
};
pub use rewind::Rewind;
