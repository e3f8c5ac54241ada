//! Reading a connection's first bytes until the routing name is known, under a deadline.
//!
//! Every byte read is appended to the caller's buffer, so the caller can replay the stream untouched
//! (e.g. with `bulkhead_proxy_io::Rewind`). Reads stop as soon as the name is known; the buffer grows
//! to at most the protocol limit plus one [`READ_CHUNK`].

use crate::h2::{first_header_block, is_preface_prefix, sniff_h2_host, Progress, H2_PREFACE};
use crate::http::{check_request_start, has_empty_line_after, sniff_http_host, HttpHostInfo};
use crate::tls::{ClientHelloInfo, HelloAssembler};
use crate::{SniffError, MAX_HTTP_HEAD};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Most bytes asked of the peer in one read.
pub const READ_CHUNK: usize = 8 * 1024;

/// Reads a TLS ClientHello from `r`, appending every byte read to `buf` (which may already hold the
/// first bytes of the stream). Fails with [`SniffError::Timeout`] if it is not complete within
/// `timeout`, and reads no further than `MAX_CLIENT_HELLO` bytes of records (plus one chunk).
pub async fn read_client_hello<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Result<ClientHelloInfo, SniffError> {
    let mut assembler = HelloAssembler::default();
    let sniff = async {
        loop {
            if let Some(info) = assembler.advance(buf)? {
                return Ok(info);
            }
            read_more(r, buf).await?;
        }
    };
    tokio::time::timeout(timeout, sniff)
        .await
        .map_err(|_| SniffError::Timeout)?
}

/// Reads the first request's host from a plain HTTP connection `r`: an HTTP/1.x request head, or,
/// when the stream starts with the HTTP/2 preface, the first HTTP/2 header block (see
/// [`sniff_h2_host`](crate::sniff_h2_host)). Every byte read is appended to `buf` (which may
/// already hold the first bytes of the stream). Fails with [`SniffError::Timeout`] if the head is
/// not complete within `timeout`, and reads no further than [`MAX_HTTP_HEAD`] bytes (plus one
/// chunk).
pub async fn read_http_host<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Result<HttpHostInfo, SniffError> {
    let sniff = async {
        // A parse runs only when it can complete: for HTTP/1 when an empty line (a possible end
        // of head) arrived, for HTTP/2 when the next frame is whole, so a peer trickling bytes
        // costs linear time.
        let mut scanned = 0;
        let mut h2_need = 0;
        loop {
            if buf.len() < H2_PREFACE.len() && is_preface_prefix(buf) {
                // Too early to tell HTTP/2 from an HTTP/1 request line.
            } else if buf.starts_with(H2_PREFACE) {
                if buf.len() >= h2_need {
                    match first_header_block(buf)? {
                        Progress::Need(n) => h2_need = n,
                        Progress::Block { .. } => {
                            if let Some(info) = sniff_h2_host(buf)? {
                                return Ok(info);
                            }
                        }
                    }
                }
            } else {
                check_request_start(buf)?;
                if has_empty_line_after(buf, scanned) || buf.len() >= MAX_HTTP_HEAD {
                    if let Some(info) = sniff_http_host(buf)? {
                        return Ok(info);
                    }
                }
            }
            scanned = buf.len();
            read_more(r, buf).await?;
        }
    };
    tokio::time::timeout(timeout, sniff)
        .await
        .map_err(|_| SniffError::Timeout)?
}

/// Appends at most [`READ_CHUNK`] bytes; end of stream is [`SniffError::Closed`]. Cancel-safe: when
/// the deadline drops it mid-read, `buf` holds exactly the bytes received.
async fn read_more<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Result<(), SniffError> {
    buf.reserve(READ_CHUNK);
    let chunk = u64::try_from(READ_CHUNK).unwrap_or(u64::MAX);
    match (&mut *r).take(chunk).read_buf(buf).await? {
        0 => Err(SniffError::Closed),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::tests::{reframe, rustls_client_hello};
    use bulkhead_test_support::net::tcp_pair as pair;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn client_hello_trickled_over_tcp_is_read_and_kept_for_replay() {
        let hello = reframe(&rustls_client_hello("a.example", &[b"h2"]), &[100, 7, 3000]);
        let (mut client, mut server) = pair().await;
        let sent = hello.clone();
        let writer = tokio::spawn(async move {
            for chunk in sent.chunks(37) {
                client.write_all(chunk).await.unwrap();
                client.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            client.write_all(b"after").await.unwrap();
            client
        });
        let mut buf = Vec::new();
        let info = read_client_hello(&mut server, &mut buf, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(info.sni.as_deref(), Some("a.example"));
        assert_eq!(info.hello_len, hello.len());
        assert_eq!(
            &buf[..hello.len()],
            &hello[..],
            "bytes kept untouched for replay"
        );
        let _client = writer.await.unwrap();
    }

    #[tokio::test]
    async fn bytes_already_in_the_buffer_count() {
        let hello = rustls_client_hello("a.example", &[]);
        let (mut client, mut server) = pair().await;
        let mut buf = hello[..10].to_vec();
        client.write_all(&hello[10..]).await.unwrap();
        let info = read_client_hello(&mut server, &mut buf, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(info.sni.as_deref(), Some("a.example"));
        assert_eq!(buf, hello);
    }

    #[tokio::test]
    async fn peer_closing_mid_hello_is_closed() {
        let hello = rustls_client_hello("a.example", &[]);
        let (mut client, mut server) = pair().await;
        client.write_all(&hello[..20]).await.unwrap();
        drop(client);
        let mut buf = Vec::new();
        let err = read_client_hello(&mut server, &mut buf, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(err, SniffError::Closed), "{err:?}");
        assert_eq!(buf, &hello[..20]);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_peer_times_out() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut buf = Vec::new();
        let err = read_client_hello(&mut server, &mut buf, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, SniffError::Timeout), "{err:?}");
        assert!(buf.is_empty(), "a cancelled read leaves no bytes behind");
        let err = read_http_host(&mut server, &mut buf, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, SniffError::Timeout), "{err:?}");
        drop(client);
    }

    #[tokio::test]
    async fn http_head_in_pieces_is_read() {
        let req = b"GET / HTTP/1.1\r\nHost: b.example\r\n\r\nBODY";
        let (mut client, mut server) = pair().await;
        let writer = tokio::spawn(async move {
            for chunk in req.chunks(3) {
                client.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        let mut buf = Vec::new();
        let info = read_http_host(&mut server, &mut buf, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(info.host.to_string(), "b.example");
        assert_eq!(info.head_len, req.len() - 4);
        assert!(req.starts_with(&buf));
        let _client = writer.await.unwrap();
    }

    #[tokio::test]
    async fn h2_prior_knowledge_from_a_real_client_is_read_and_kept_for_replay() {
        let (client, mut server) = pair().await;
        let client_task = tokio::spawn(async move {
            let (mut send, conn) = h2::client::handshake(client).await.unwrap();
            let conn = tokio::spawn(conn);
            let req = http::Request::post("http://GRPC.example.test:8080/pkg.Svc/Call")
                .header("content-type", "application/grpc")
                .body(())
                .unwrap();
            let (_response, _stream) = send.send_request(req, false).unwrap();
            // Keep the connection open until the server side is done.
            let _ = conn.await;
        });
        let mut buf = Vec::new();
        let info = read_http_host(&mut server, &mut buf, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(info.host.to_string(), "grpc.example.test");
        assert_eq!(info.protocol, crate::HttpProtocol::Http2PriorKnowledge);
        assert!(buf.starts_with(crate::H2_PREFACE));
        assert!(info.head_len <= buf.len());
        drop(server);
        client_task.abort();
    }

    #[tokio::test]
    async fn h2_preface_then_nothing_times_out_with_the_bytes_kept() {
        let (mut client, mut server) = pair().await;
        client.write_all(crate::H2_PREFACE).await.unwrap();
        let mut buf = Vec::new();
        let err = read_http_host(&mut server, &mut buf, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, SniffError::Timeout), "{err:?}");
        assert_eq!(buf, crate::H2_PREFACE);
    }

    #[tokio::test]
    async fn h2_frames_trickled_byte_by_byte_are_read() {
        let req = crate::h2::tests::request(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "t.example"),
            (":path", "/"),
        ]);
        let (mut client, mut server) = pair().await;
        let sent = req.clone();
        let writer = tokio::spawn(async move {
            for b in sent {
                client.write_all(&[b]).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        let mut buf = Vec::new();
        let info = read_http_host(&mut server, &mut buf, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(info.host.to_string(), "t.example");
        assert_eq!(info.head_len, req.len());
        let _client = writer.await.unwrap();
    }

    #[tokio::test]
    async fn tls_on_the_http_port_fails_at_once() {
        let (mut client, mut server) = pair().await;
        client
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
            .await
            .unwrap();
        let mut buf = Vec::new();
        let err = read_http_host(&mut server, &mut buf, Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(matches!(err, SniffError::NotHttp), "{err:?}");
    }

    #[tokio::test]
    async fn endless_head_is_too_large_and_buffer_stays_bounded() {
        let (mut client, mut server) = pair().await;
        let writer = tokio::spawn(async move {
            let _ = client.write_all(b"GET / HTTP/1.1\r\nX: ").await;
            let junk = vec![b'a'; 4096];
            for _ in 0..64 {
                if client.write_all(&junk).await.is_err() {
                    break;
                }
            }
        });
        let mut buf = Vec::new();
        let err = read_http_host(&mut server, &mut buf, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(err, SniffError::TooLarge), "{err:?}");
        assert!(buf.len() < MAX_HTTP_HEAD + READ_CHUNK);
        drop(server);
        writer.await.unwrap();
    }
}
