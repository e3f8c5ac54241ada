//! Refusing a connection before anything was forwarded: a fatal TLS alert on the TLS listener, a
//! short HTTP answer with `Connection: close` on the HTTP listener (to an HTTP/1 client), or the
//! server's SETTINGS and a GOAWAY frame (to a cleartext HTTP/2 client: last stream 0, so the client
//! knows no request was processed; error code per refusal, the reason as debug data), then a
//! lingering close (the client's unread bytes are drained for a moment so a TCP reset does not
//! destroy the answer).
//!
//! | refusal | TLS alert | HTTP/1 | HTTP/2 GOAWAY error code |
//! |---|---|---|---|
//! | unknown host, no catch-all | `unrecognized_name` | 404 | `NO_ERROR` |
//! | bad host, malformed | `unrecognized_name` / `decode_error` | 400 | `PROTOCOL_ERROR` |
//! | too large | `decode_error` | 431 | `ENHANCE_YOUR_CALM` |
//! | timeout | (close) | 408 | `NO_ERROR` |
//! | unavailable | `internal_error` | 503 | `REFUSED_STREAM` |

use crate::config::LINGER_MAX_BYTES;
use bulkhead_snapshot::EdgePort;
use bulkhead_sniff::{looks_like_h2_preface, SniffError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// TLS alert `unrecognized_name` (RFC 6066).
const ALERT_UNRECOGNIZED_NAME: u8 = 112;
/// TLS alert `decode_error`.
const ALERT_DECODE_ERROR: u8 = 50;
/// TLS alert `internal_error`.
const ALERT_INTERNAL_ERROR: u8 = 80;
/// HTTP/2 error code `NO_ERROR` (RFC 9113 §7).
const H2_NO_ERROR: u32 = 0x0;
/// HTTP/2 error code `PROTOCOL_ERROR`.
const H2_PROTOCOL_ERROR: u32 = 0x1;
/// HTTP/2 error code `REFUSED_STREAM`: nothing was processed, the client may retry.
const H2_REFUSED_STREAM: u32 = 0x7;
/// HTTP/2 error code `ENHANCE_YOUR_CALM`.
const H2_ENHANCE_YOUR_CALM: u32 = 0xb;
/// An empty SETTINGS frame: the server's connection preface (RFC 9113 §3.4), sent before GOAWAY.
const H2_EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];
/// HTTP/2 frame type GOAWAY.
const H2_GOAWAY: u8 = 0x7;
/// Bytes of the scratch buffer used while draining.
const DRAIN_CHUNK: usize = 4096;

/// Why a connection is refused, as the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No tenant owns the name.
    UnknownHost,
    /// The client named no host (a ClientHello without SNI, a request by IP address) and no
    /// tenant owns `*`, the catch-all that serves those.
    NoCatchAll,
    /// The name is not a valid hostname.
    BadHost,
    /// The ClientHello or request head breaks its grammar, or lacks a `Host`.
    Malformed,
    /// The ClientHello or request head exceeds its limit.
    TooLarge,
    /// The client was too slow (HTTP answers 408; TLS just closes).
    Timeout,
    /// The tenant is at its connection limit or none of its routers could be reached.
    Unavailable,
}

/// What a refused client spoke, so it is answered in kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// A TLS client (the TLS listener): a fatal alert.
    Tls,
    /// An HTTP/1 client: an HTTP/1.1 response.
    Http1,
    /// A cleartext HTTP/2 client (prior knowledge): SETTINGS and GOAWAY.
    H2,
}

impl Dialect {
    /// The dialect of a client on the listener of `port` whose first bytes (after any PROXY
    /// header) are `sniffed`.
    pub(crate) fn of(port: EdgePort, sniffed: &[u8]) -> Self {
        match port {
            EdgePort::Https => Self::Tls,
            EdgePort::Http if looks_like_h2_preface(sniffed) => Self::H2,
            EdgePort::Http => Self::Http1,
        }
    }
}

impl Refusal {
    /// The refusal for a sniffing failure; `None` when the connection is just closed.
    pub(crate) fn for_sniff_error(e: &SniffError) -> Option<Self> {
        match e {
            SniffError::NotTls | SniffError::Closed | SniffError::Io(_) => None,
            SniffError::NotHttp | SniffError::Malformed(_) | SniffError::MissingHost => {
                Some(Self::Malformed)
            }
            SniffError::TooLarge => Some(Self::TooLarge),
            SniffError::Timeout => Some(Self::Timeout),
            SniffError::BadHost(_) => Some(Self::BadHost),
        }
    }

    /// The fatal alert record sent on the TLS listener, if any.
    pub(crate) fn tls_alert(self) -> Option<[u8; 7]> {
        let description = match self {
            Self::UnknownHost | Self::NoCatchAll | Self::BadHost => ALERT_UNRECOGNIZED_NAME,
            Self::Malformed | Self::TooLarge => ALERT_DECODE_ERROR,
            Self::Unavailable => ALERT_INTERNAL_ERROR,
            Self::Timeout => return None,
        };
        // Alert record, TLS 1.2 record version, length 2, level fatal.
        Some([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description])
    }

    /// The server preface and GOAWAY frame sent to a cleartext HTTP/2 client.
    pub(crate) fn h2_goaway(self) -> Vec<u8> {
        let code = match self {
            Self::UnknownHost | Self::NoCatchAll | Self::Timeout => H2_NO_ERROR,
            Self::BadHost | Self::Malformed => H2_PROTOCOL_ERROR,
            Self::TooLarge => H2_ENHANCE_YOUR_CALM,
            Self::Unavailable => H2_REFUSED_STREAM,
        };
        let debug = self.reason_text().trim_end().as_bytes();
        let len = u32::try_from(8 + debug.len()).unwrap_or(8).to_be_bytes();
        let mut out = H2_EMPTY_SETTINGS.to_vec();
        out.extend_from_slice(&[len[1], len[2], len[3], H2_GOAWAY, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(debug);
        out
    }

    /// The human-readable reason (the HTTP/1 body, the HTTP/2 GOAWAY debug data).
    fn reason_text(self) -> &'static str {
        self.http_status_and_text().1
    }

    /// The whole HTTP/1.1 response sent on the HTTP listener.
    pub(crate) fn http_response(self) -> Vec<u8> {
        let (status, body) = self.http_status_and_text();
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// The HTTP/1 status line's status and the answer's text.
    fn http_status_and_text(self) -> (&'static str, &'static str) {
        match self {
            Self::UnknownHost => ("404 Not Found", "no service is configured for this host\n"),
            Self::NoCatchAll => (
                "404 Not Found",
                "no service is configured for requests by IP address; use a hostname\n",
            ),
            Self::BadHost => (
                "400 Bad Request",
                "the Host header is not a valid hostname\n",
            ),
            Self::Malformed => (
                "400 Bad Request",
                "malformed request or missing Host header\n",
            ),
            Self::TooLarge => (
                "431 Request Header Fields Too Large",
                "the request head is too large\n",
            ),
            Self::Timeout => ("408 Request Timeout", "the request head took too long\n"),
            Self::Unavailable => (
                "503 Service Unavailable",
                "the service is unavailable, try again later\n",
            ),
        }
    }
}

/// Tells the client why (alert, HTTP/1 answer or HTTP/2 GOAWAY, per dialect) and closes, within
/// `linger`.
pub(crate) async fn refuse(
    mut client: TcpStream,
    dialect: Dialect,
    refusal: Refusal,
    linger: Duration,
) {
    let answer = match dialect {
        Dialect::Tls => refusal.tls_alert().map(|a| a.to_vec()),
        Dialect::Http1 => Some(refusal.http_response()),
        Dialect::H2 => Some(refusal.h2_goaway()),
    };
    let Some(answer) = answer else {
        return;
    };
    let close = async {
        client.write_all(&answer).await?;
        client.shutdown().await?;
        // On the heap, and only here: an array would sit in every connection task's future.
        let mut scratch = vec![0u8; DRAIN_CHUNK];
        let mut drained = 0;
        while drained < LINGER_MAX_BYTES {
            match client.read(&mut scratch).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, std::io::Error>(())
    };
    if let Ok(Err(e)) = tokio::time::timeout(linger, close).await {
        tracing::debug!(error = %e, "refusal could not be delivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_name_is_the_unrecognized_name_alert() {
        assert_eq!(
            Refusal::UnknownHost.tls_alert(),
            Some([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70])
        );
        assert_eq!(
            Refusal::Malformed.tls_alert(),
            Some([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32])
        );
    }

    #[test]
    fn h2_clients_get_settings_then_a_goaway_naming_no_stream() {
        let frames = Refusal::TooLarge.h2_goaway();
        assert_eq!(frames[..9], H2_EMPTY_SETTINGS);
        let goaway = &frames[9..];
        let len = usize::from(goaway[1]) << 8 | usize::from(goaway[2]);
        assert_eq!(
            (goaway[0], goaway[3], len),
            (0, H2_GOAWAY, goaway.len() - 9)
        );
        assert_eq!(
            goaway[9..13],
            [0, 0, 0, 0],
            "last stream 0: nothing processed"
        );
        assert_eq!(goaway[13..17], 0xbu32.to_be_bytes());
        assert_eq!(&goaway[17..], b"the request head is too large");
    }

    #[test]
    fn the_preface_makes_an_h2_client() {
        assert_eq!(Dialect::of(EdgePort::Http, b"PRI * HTTP/2.0"), Dialect::H2);
        assert_eq!(
            Dialect::of(EdgePort::Http, b"GET / HTTP/1.1"),
            Dialect::Http1
        );
        assert_eq!(
            Dialect::of(EdgePort::Https, b"PRI * HTTP/2.0"),
            Dialect::Tls
        );
    }

    #[test]
    fn http_answers_have_exact_length_and_close() {
        for r in [
            Refusal::UnknownHost,
            Refusal::NoCatchAll,
            Refusal::BadHost,
            Refusal::Malformed,
            Refusal::TooLarge,
            Refusal::Timeout,
            Refusal::Unavailable,
        ] {
            let text = String::from_utf8(r.http_response()).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.contains("Connection: close"));
            assert!(head.contains(&format!("Content-Length: {}", body.len())));
        }
    }
}
