//! Sniffing the routing name from the first bytes of a connection, without consuming them for good.
//!
//! * [`sniff_client_hello`]: the SNI (and ALPN) of a TLS ClientHello, however it is split across TLS
//!   records and TCP segments, up to [`MAX_CLIENT_HELLO`] bytes.
//! * [`sniff_http_host`]: the `Host` of an HTTP/1.x request head, up to [`MAX_HTTP_HEAD`] bytes.
//! * [`read_client_hello`] / [`read_http_host`]: read from a stream into a caller's buffer until the
//!   name is known, bounded by a deadline and the byte limits. The buffer keeps every byte read, so the
//!   caller can replay them untouched.
//!
//! Both parsers take untrusted bytes: they never panic, never allocate more than the limits, and
//! answer `Ok(None)` while more bytes are needed.
#![forbid(unsafe_code)]

mod error;
mod http;
mod read;
mod tls;

use std::time::Duration;

pub use error::SniffError;
pub use http::{sniff_http_host, HttpHostInfo, MAX_HTTP_HEADERS};
pub use read::{read_client_hello, read_http_host, READ_CHUNK};
pub use tls::{looks_like_tls, sniff_client_hello, ClientHelloInfo, MAX_RECORD_PAYLOAD};

/// Most bytes of TLS records (headers included) read while looking for the end of a ClientHello.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;
/// Most bytes of an HTTP/1.x request head (request line and headers, final empty line included).
pub const MAX_HTTP_HEAD: usize = 16 * 1024;
/// Default deadline for a peer to deliver its whole ClientHello or request head.
pub const DEFAULT_SNIFF_TIMEOUT: Duration = Duration::from_secs(5);
