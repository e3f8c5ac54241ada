//! Sniffing the routing name from the first bytes of a connection, without consuming them for good.
//!
//! * [`sniff_client_hello`]: the SNI (and ALPN) of a TLS ClientHello, however it is split across TLS
//!   records and TCP segments, up to [`MAX_CLIENT_HELLO`] bytes.
//! * [`sniff_http_host`]: the `Host` of an HTTP/1.x request head, up to [`MAX_HTTP_HEAD`] bytes.
//! * [`sniff_h2_host`]: the `:authority` (or `host`) of the first request of a cleartext HTTP/2
//!   connection with prior knowledge (preface, frames, HPACK), within the same [`MAX_HTTP_HEAD`].
//! * [`read_client_hello`] / [`read_http_host`]: read from a stream into a caller's buffer until the
//!   name is known, bounded by a deadline and the byte limits. The buffer keeps every byte read, so the
//!   caller can replay them untouched.
//!
//! Both parsers take untrusted bytes: they never panic, never allocate more than the limits, and
//! answer `Ok(None)` while more bytes are needed.
#![forbid(unsafe_code)]

mod error;
mod h2;
mod http;
mod read;
mod tls;

use std::time::Duration;

pub use error::SniffError;
pub use h2::{
    looks_like_h2_preface, sniff_h2_host, H2_HEADER_TABLE_SIZE, H2_MAX_FRAME_PAYLOAD, H2_PREFACE,
};
pub use http::{sniff_http_host, HttpHostInfo, HttpProtocol, MAX_HTTP_HEADERS};
pub use read::{read_client_hello, read_http_host, READ_CHUNK};
pub use tls::{looks_like_tls, sniff_client_hello, ClientHelloInfo, MAX_RECORD_PAYLOAD};

/// Most bytes of TLS records (headers included) read while looking for the end of a ClientHello.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;
/// Most bytes of an HTTP/1.x request head (request line and headers, final empty line included),
/// and of the start of a cleartext HTTP/2 connection up to the end of its first header block.
pub const MAX_HTTP_HEAD: usize = 16 * 1024;
/// Default deadline for a peer to deliver its whole ClientHello, request head or first HTTP/2
/// header block.
pub const DEFAULT_SNIFF_TIMEOUT: Duration = Duration::from_secs(5);
