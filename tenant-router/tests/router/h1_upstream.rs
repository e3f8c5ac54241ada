//! HTTP/1.1 backends that answer in every framing, and ones that answer wrongly: the router's own
//! upstream exchange (no hyper client) must relay the former exactly and refuse the latter with a
//! 502 or an aborted body, never pass a desynchronised message on or reuse its connection.

use crate::support::*;
use bulkhead_snapshot::BackendProtocol;
use bulkhead_test_support::net::serve_each;
use http::StatusCode;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A backend that answers every request head on a connection with `answer`, then waits for the
/// next (or closes, when `close` is set). Counts the connections it accepted.
async fn scripted(answer: Vec<u8>, close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    let answer = Arc::new(answer);
    let addr = serve_each(move |mut s| {
        counter.fetch_add(1, Ordering::SeqCst);
        let answer = Arc::clone(&answer);
        async move {
            let mut seen = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    seen.drain(..end + 4);
                    if s.write_all(&answer).await.is_err() || close {
                        return;
                    }
                }
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&chunk[..n]),
                }
            }
        }
    })
    .await;
    (addr, connections)
}

/// A router whose every route on `a.acme.test` goes to `endpoint`.
async fn router_to(pki: &Pki, endpoint: SocketAddr) -> TestRouter {
    let mut s = base_snapshot(pki, 1);
    s.backends.insert(
        "acme/raw:80".into(),
        backend(BackendProtocol::Http1, &[endpoint]),
    );
    s.https.virtual_hosts = vec![vhost(
        "a.acme.test",
        443,
        vec![route(
            "raw",
            prefix("/"),
            vec![weighted(Some("acme/raw:80"), 1)],
        )],
    )];
    TestRouter::start(s).await
}

/// The status (none when the connection failed first) and body one GET gets over HTTP/1.1 and
/// over HTTP/2 (a fresh client each).
async fn get_both(
    pki: &Pki,
    router: &TestRouter,
) -> Vec<(Option<StatusCode>, Result<Vec<u8>, String>)> {
    let mut out = Vec::new();
    for mut c in [
        h1_tls(pki, router, "a.acme.test").await,
        h2_tls(pki, router, "a.acme.test").await,
    ] {
        let req = c
            .request("GET", "a.acme.test", "/")
            .body(Default::default())
            .unwrap();
        // A body that fails at once may abort the client connection before the head leaves.
        let resp = match c.send(req).await {
            Ok(resp) => resp,
            Err(e) => {
                out.push((None, Err(e.to_string())));
                continue;
            }
        };
        let status = resp.status();
        let body = resp.into_body().collect().await;
        out.push((
            Some(status),
            body.map(|b| b.to_bytes().to_vec())
                .map_err(|e| e.to_string()),
        ));
    }
    out
}

#[tokio::test]
async fn chunked_interim_and_until_close_answers_are_relayed_whole() {
    let pki = Pki::new();
    for (answer, close, body) in [
        (
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 1\r\n\r\n"[..],
            false,
            &b"hello world"[..],
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            false,
            b"ok",
        ),
        (b"HTTP/1.0 200 OK\r\n\r\nall of it, until close", true, b"all of it, until close"),
    ] {
        let (backend, _) = scripted(answer.to_vec(), close).await;
        let router = router_to(&pki, backend).await;
        for (status, got) in get_both(&pki, &router).await {
            assert_eq!(status, Some(StatusCode::OK), "{}", String::from_utf8_lossy(answer));
            assert_eq!(got.as_deref(), Ok(body), "{}", String::from_utf8_lossy(answer));
        }
    }
}

#[tokio::test]
async fn content_length_beside_chunked_is_dropped_and_the_connection_not_reused() {
    let pki = Pki::new();
    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let (backend, connections) = scripted(answer.to_vec(), false).await;
    let router = router_to(&pki, backend).await;
    let mut c = h1_tls(&pki, &router, "a.acme.test").await;
    for _ in 0..3 {
        let reply = c.get("a.acme.test", "/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            &reply.body[..],
            b"hello",
            "the chunked body, not 3 bytes of it"
        );
        assert_ne!(
            reply.headers.get("content-length").map(|v| v.as_bytes()),
            Some(&b"3"[..])
        );
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        3,
        "a connection per answer"
    );
}

#[tokio::test]
async fn a_kept_alive_answer_reuses_its_connection() {
    let pki = Pki::new();
    let (backend, connections) = scripted(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        false,
    )
    .await;
    let router = router_to(&pki, backend).await;
    let mut c = h2_tls(&pki, &router, "a.acme.test").await;
    for _ in 0..5 {
        assert_eq!(&c.get("a.acme.test", "/").await.body[..], b"ok");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn malformed_conflicting_or_oversized_answers_are_502() {
    let pki = Pki::new();
    let oversized = [
        &b"HTTP/1.1 200 OK\r\nx-big: "[..],
        &vec![b'a'; 70 * 1024][..],
        b"\r\n\r\n",
    ]
    .concat();
    for answer in [
        b"HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\nab".to_vec(),
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n".to_vec(),
        b"hello there\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n".to_vec(),
        b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        oversized,
    ] {
        let (backend, _) = scripted(answer.clone(), true).await;
        let router = router_to(&pki, backend).await;
        for (status, _) in get_both(&pki, &router).await {
            assert_eq!(
                status,
                Some(StatusCode::BAD_GATEWAY),
                "{}",
                String::from_utf8_lossy(&answer[..answer.len().min(60)])
            );
        }
    }
}

#[tokio::test]
async fn broken_bodies_abort_the_client_response() {
    let pki = Pki::new();
    let endless_extension = [
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1;"[..],
        &vec![b'x'; 20 * 1024][..],
    ]
    .concat();
    for answer in [
        endless_extension,
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort".to_vec(),
    ] {
        let (backend, _) = scripted(answer.clone(), true).await;
        let router = router_to(&pki, backend).await;
        for (status, body) in get_both(&pki, &router).await {
            assert!(matches!(status, None | Some(StatusCode::OK)), "{status:?}");
            assert!(
                body.is_err(),
                "{}: a broken body must not end cleanly",
                String::from_utf8_lossy(&answer[..answer.len().min(60)])
            );
        }
    }
}

/// A request body fed from a channel, a frame per message.
struct ChannelBody(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl http_body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|data| data.map(|d| Ok(http_body::Frame::data(d))))
    }
}

#[tokio::test]
async fn a_backend_answering_while_the_request_body_streams_gets_the_rest_of_it() {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    // The backend echoes the body as it arrives: its answer's head leaves before the request body
    // has, and each echoed piece needs the router to keep writing the request meanwhile.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                TokioIo::new(s),
                service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(http::Response::new(req.into_body()))
                }),
            ));
        }
    });
    let pki = Pki::new();
    let router = router_to(&pki, backend).await;
    let mut sender = h2_client(&pki, &router).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let req = http::Request::post("https://a.acme.test/echo")
        .version(http::Version::HTTP_2)
        .body(ChannelBody(rx))
        .unwrap();
    let wait = std::time::Duration::from_secs(10);
    let resp = tokio::time::timeout(wait, sender.send_request(req))
        .await
        .expect("answer head before the request body ended")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    for i in 0..3 {
        let piece = bytes::Bytes::from(format!("piece {i};"));
        tx.send(piece.clone()).await.unwrap();
        let mut echoed = Vec::new();
        while echoed.len() < piece.len() {
            let frame = tokio::time::timeout(wait, body.frame())
                .await
                .expect("the piece comes back while the request is still open")
                .expect("a frame")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                echoed.extend_from_slice(&data);
            }
        }
        assert_eq!(echoed, piece);
    }
    drop(tx);
    let rest = tokio::time::timeout(wait, body.collect())
        .await
        .expect("the answer ends with the request")
        .unwrap();
    assert!(rest.to_bytes().is_empty());
}

#[tokio::test]
async fn a_reason_phrase_of_its_own_reaches_http1_clients() {
    let pki = Pki::new();
    let (backend, _) = scripted(
        b"HTTP/1.1 200 All Good\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        false,
    )
    .await;
    let router = router_to(&pki, backend).await;
    let mut c = h1_tls(&pki, &router, "a.acme.test").await;
    let req = c
        .request("GET", "a.acme.test", "/")
        .body(Default::default())
        .unwrap();
    let resp = c.send(req).await.unwrap();
    let reason = resp.extensions().get::<hyper::ext::ReasonPhrase>();
    assert_eq!(reason.map(|r| r.as_bytes()), Some(&b"All Good"[..]));
}

/// An HTTP/2 connection to `router`'s TLS listener as `a.acme.test`, driven by a task of its own.
async fn h2_client<B>(pki: &Pki, router: &TestRouter) -> hyper::client::conn::http2::SendRequest<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let tls = tls_connect(pki, router.https, "a.acme.test", &[b"h2"])
        .await
        .unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// A backend that answers each request with the request's head, as the bytes it received.
async fn head_echo() -> SocketAddr {
    serve_each(|mut s| async move {
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = seen.drain(..end + 4).collect();
                let mut answer =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", head.len())
                        .into_bytes();
                answer.extend_from_slice(&head);
                if s.write_all(&answer).await.is_err() {
                    return;
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
}

/// The `Host` lines of a request head as the backend received it.
fn host_lines(head: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .filter(|l| l.to_ascii_lowercase().starts_with("host:"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_backend_gets_one_host_line_from_http2_and_http1_clients() {
    let pki = Pki::new();
    let router = router_to(&pki, head_echo().await).await;

    // HTTP/2: the request has `:authority`, no `Host`; the HTTP/1.1 backend needs one.
    let mut sender = h2_client(&pki, &router).await;
    for _ in 0..2 {
        let req = http::Request::get("https://a.acme.test/h2?q=1")
            .version(http::Version::HTTP_2)
            .header("x-client", "h2")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let head = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&head);
        assert!(text.starts_with("GET /h2?q=1 HTTP/1.1\r\n"), "{text}");
        assert_eq!(host_lines(&head), ["host: a.acme.test"], "{text}");
        assert!(text.contains("\r\nx-client: h2\r\n"), "{text}");
        assert!(text.contains("\r\nx-forwarded-proto: https\r\n"), "{text}");
    }

    // HTTP/1.1: the client's own `Host` is the one the backend gets, where it stood.
    let mut c = h1_tls(&pki, &router, "a.acme.test").await;
    let req = c
        .request("GET", "a.acme.test", "/h1")
        .header("x-client", "h1")
        .body(Default::default())
        .unwrap();
    let resp = c.send(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let head = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&head);
    assert_eq!(host_lines(&head), ["host: a.acme.test"], "{text}");
    assert!(text.contains("\r\nx-client: h1\r\n"), "{text}");
}
