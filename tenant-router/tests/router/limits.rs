//! Connection and request limits are enforced.

use crate::support::*;
use bulkhead_crds::snapshot::BackendProtocol;
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn router(web: &EchoBackend, header_read_timeout: Duration) -> TestRouter {
    router_with(web, |c| {
        c.limits.header_read_timeout = header_read_timeout;
        c.limits.max_headers = 20;
    })
    .await
}

async fn router_with(
    web: &EchoBackend,
    customise: impl FnOnce(&mut bulkhead_router::RouterConfig),
) -> TestRouter {
    let pki = Pki::new();
    let mut s = base_snapshot(&pki, 1);
    s.backends.insert(
        "acme/web:80".into(),
        backend(BackendProtocol::Http1, &[web.addr]),
    );
    s.http.virtual_hosts = vec![vhost(
        "a.acme.test",
        80,
        vec![route(
            "web",
            prefix("/"),
            vec![weighted(Some("acme/web:80"), 1)],
        )],
    )];
    TestRouter::start_custom(s, customise).await
}

/// A request body that sends `chunks` small chunks, one every `every`.
struct TrickleBody {
    chunks: usize,
    every: Duration,
    pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl hyper::body::Body for TrickleBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        if self.chunks == 0 {
            return std::task::Poll::Ready(None);
        }
        let every = self.every;
        let pause = self
            .pause
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
        std::task::ready!(pause.as_mut().poll(cx));
        self.pause = None;
        self.chunks -= 1;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(
            bytes::Bytes::from_static(b"tick"),
        ))))
    }
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_but_not_while_a_request_is_in_flight() {
    let web = EchoBackend::start("web").await;
    let idle = Duration::from_secs(1);
    let router = router_with(&web, |c| c.limits.http_idle_timeout = idle).await;
    let io = proxied_tcp(router.http).await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(io),
    )
    .await
    .expect("h2 handshake");
    let conn = tokio::spawn(conn);

    // A request whose body takes twice the idle timeout to arrive is in flight all along.
    let req = http::Request::builder()
        .method("POST")
        .version(http::Version::HTTP_2)
        .uri("http://a.acme.test/upload")
        .body(TrickleBody {
            chunks: 8,
            every: Duration::from_millis(250),
            pause: None,
        })
        .expect("request");
    sender.ready().await.expect("ready");
    let resp = sender
        .send_request(req)
        .await
        .expect("slow upload answered");
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("upload"),
        "{body:?}"
    );
    assert!(!conn.is_finished(), "closed while a request was in flight");

    // Then nothing: the router sends GOAWAY and closes the connection.
    let closed = tokio::time::timeout(idle * 10, conn).await;
    assert!(
        matches!(closed, Ok(Ok(Ok(())))),
        "idle connection not closed cleanly: {closed:?}"
    );
}

#[tokio::test]
async fn too_many_request_headers_are_refused_with_431() {
    let web = EchoBackend::start("web").await;
    let router = router(&web, Duration::from_secs(10)).await;
    let mut conn = proxied_tcp(router.http).await;
    let mut head = String::from("GET / HTTP/1.1\r\nhost: a.acme.test\r\n");
    for i in 0..30 {
        head.push_str(&format!("x-h{i}: v\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(web.seen.lock().unwrap().is_empty(), "never forwarded");
}

#[tokio::test]
async fn slow_request_head_is_cut_off_by_the_header_read_timeout() {
    let web = EchoBackend::start("web").await;
    let router = router(&web, Duration::from_millis(300)).await;
    let mut conn = proxied_tcp(router.http).await;
    conn.write_all(b"GET / HTTP/1.1\r\nhost: a.ac")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "connection closed by the router");
    assert!(!answer.starts_with(b"HTTP/1.1 200"));
    assert!(web.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn missing_proxy_header_closes_the_connection() {
    let web = EchoBackend::start("web").await;
    let router = router(&web, Duration::from_secs(10)).await;
    let mut conn = tokio::net::TcpStream::connect(router.http).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nhost: a.acme.test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer)).await;
    assert!(answer.is_empty(), "no HTTP answer without a PROXY header");
    assert!(web.seen.lock().unwrap().is_empty());
}
