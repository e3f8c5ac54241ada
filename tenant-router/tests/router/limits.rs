//! Connection and request limits are enforced.

use crate::support::*;
use bulkhead_crds::snapshot::BackendProtocol;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn router(web: &EchoBackend, header_read_timeout: Duration) -> TestRouter {
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
    TestRouter::start_custom(s, |c| {
        c.limits.header_read_timeout = header_read_timeout;
        c.limits.max_headers = 20;
    })
    .await
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
