//! Refusing a connection before anything was forwarded: a fatal TLS alert on the TLS listener, a
//! short HTTP answer with `Connection: close` on the HTTP listener, then a lingering close (the
//! client's unread bytes are drained for a moment so a TCP reset does not destroy the answer).

use crate::config::LINGER_MAX_BYTES;
use bulkhead_snapshot::EdgePort;
use bulkhead_sniff::SniffError;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// TLS alert `unrecognized_name` (RFC 6066).
const ALERT_UNRECOGNIZED_NAME: u8 = 112;
/// TLS alert `decode_error`.
const ALERT_DECODE_ERROR: u8 = 50;
/// TLS alert `internal_error`.
const ALERT_INTERNAL_ERROR: u8 = 80;
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

    /// The whole HTTP/1.1 response sent on the HTTP listener.
    pub(crate) fn http_response(self) -> Vec<u8> {
        let (status, body) = match self {
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
        };
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// Tells the client why (alert or HTTP answer, per listener) and closes, within `linger`.
pub(crate) async fn refuse(
    mut client: TcpStream,
    port: EdgePort,
    refusal: Refusal,
    linger: Duration,
) {
    let answer = match port {
        EdgePort::Https => refusal.tls_alert().map(|a| a.to_vec()),
        EdgePort::Http => Some(refusal.http_response()),
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
