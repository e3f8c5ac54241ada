//! Connection and request limits are enforced.

use crate::support::*;
use bulkhead_snapshot::BackendProtocol;
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
    router_with_pki(&Pki::new(), web, customise).await
}

async fn router_with_pki(
    pki: &Pki,
    web: &EchoBackend,
    customise: impl FnOnce(&mut bulkhead_router::RouterConfig),
) -> TestRouter {
    let mut s = base_snapshot(pki, 1);
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

// ------------------------------------------------ slow and silent clients (issue 12, items 5-8)

/// Longest a test waits for the router to close or answer; far above the lowered limits.
const WAIT: Duration = Duration::from_secs(10);
/// The lowered header read timeout of these tests.
const HEADER_TIMEOUT: Duration = Duration::from_millis(300);
/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty HTTP/2 SETTINGS frame.
const H2_EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

/// A router whose header read timeout is short and whose idle timeout is long, so that a test
/// sees which of the two closed a connection.
async fn strict_router(
    pki: &Pki,
    web: &EchoBackend,
    customise: impl FnOnce(&mut bulkhead_router::RouterConfig),
) -> TestRouter {
    router_with_pki(pki, web, |c| {
        c.limits.header_read_timeout = HEADER_TIMEOUT;
        c.limits.http_idle_timeout = Duration::from_secs(600);
        customise(c);
    })
    .await
}

/// A TLS connection to `a.acme.test` with ALPN `alpn` that has sent one HTTP/1.1 `GET /`.
async fn tls_get(
    pki: &Pki,
    router: &TestRouter,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut tls = tls_connect(pki, router.https, "a.acme.test", &[alpn])
        .await
        .expect("handshake");
    tls.write_all(b"GET / HTTP/1.1\r\nhost: a.acme.test\r\n\r\n")
        .await
        .unwrap();
    tls
}

/// Reads until the router closes the connection; `None` when it is still open after [`WAIT`].
async fn until_closed(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<Vec<u8>> {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.ok()?;
    Some(answer)
}

/// A plain-listener connection whose PROXY header names `source` as the client.
async fn tcp_from(addr: std::net::SocketAddr, source: &str) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let header = bulkhead_proxy_io::encode_v2(&bulkhead_proxy_io::ProxyAddresses {
        source: source.parse().unwrap(),
        destination: "10.0.0.1:80".parse().unwrap(),
    });
    s.write_all(&header).await.unwrap();
    s
}

/// Sends a GET on a fresh connection from `source` and returns the status line's code, if any.
async fn get_from(addr: std::net::SocketAddr, source: &str, path: &str) -> Option<String> {
    let mut conn = tcp_from(addr, source).await;
    let head = format!("GET {path} HTTP/1.1\r\nhost: a.acme.test\r\nconnection: close\r\n\r\n");
    conn.write_all(head.as_bytes()).await.ok()?;
    let answer = until_closed(&mut conn).await?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    text.strip_prefix("HTTP/1.1 ")
        .map(|rest| rest.chars().take(3).collect())
}

#[tokio::test]
async fn a_tls_client_silent_after_the_handshake_is_closed_by_the_header_read_timeout() {
    let web = EchoBackend::start("web").await;
    let pki = Pki::new();
    let router = strict_router(&pki, &web, |_| {}).await;
    for alpn in [&[][..], &[&b"http/1.1"[..]][..], &[&b"h2"[..]][..]] {
        let mut tls = tls_connect(&pki, router.https, "a.acme.test", alpn)
            .await
            .expect("handshake");
        if alpn == [&b"h2"[..]] {
            // HTTP/2 preface and settings, then no request.
            tls.write_all(H2_PREFACE).await.unwrap();
            tls.write_all(&H2_EMPTY_SETTINGS).await.unwrap();
        }
        assert!(
            until_closed(&mut tls).await.is_some(),
            "ALPN {alpn:?}: still open after {WAIT:?} (header read timeout {HEADER_TIMEOUT:?})"
        );
    }
}

#[tokio::test]
async fn a_plain_http2_connection_without_a_request_is_closed_by_the_header_read_timeout() {
    let web = EchoBackend::start("web").await;
    let router = strict_router(&Pki::new(), &web, |_| {}).await;
    let mut conn = proxied_tcp(router.http).await;
    conn.write_all(H2_PREFACE).await.unwrap();
    conn.write_all(&H2_EMPTY_SETTINGS).await.unwrap();
    assert!(until_closed(&mut conn).await.is_some(), "still open");
    let mut silent = proxied_tcp(router.http).await;
    assert!(
        until_closed(&mut silent).await.is_some(),
        "silent still open"
    );
}

#[tokio::test]
async fn alpn_h2_followed_by_an_http1_request_is_not_served() {
    let web = EchoBackend::start("web").await;
    let pki = Pki::new();
    let router = strict_router(&pki, &web, |_| {}).await;
    let mut tls = tls_get(&pki, &router, b"h2").await;
    let answer = until_closed(&mut tls)
        .await
        .expect("connection error closes");
    assert!(
        !answer.windows(8).any(|w| w == b"HTTP/1.1"),
        "served as HTTP/1.1: {}",
        String::from_utf8_lossy(&answer)
    );
    assert!(web.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn alpn_http1_followed_by_the_h2_preface_is_not_served_as_h2() {
    let web = EchoBackend::start("web").await;
    let pki = Pki::new();
    let router = strict_router(&pki, &web, |_| {}).await;
    let mut tls = tls_connect(&pki, router.https, "a.acme.test", &[b"http/1.1"])
        .await
        .expect("handshake");
    tls.write_all(H2_PREFACE).await.unwrap();
    tls.write_all(&H2_EMPTY_SETTINGS).await.unwrap();
    let answer = until_closed(&mut tls).await.expect("closed");
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
        "answered in HTTP/2: {answer:?}"
    );
}

#[tokio::test]
async fn a_request_body_that_stops_arriving_gets_408_and_frees_the_slot() {
    let web = EchoBackend::start("web").await;
    let router = strict_router(&Pki::new(), &web, |c| {
        c.limits.body_idle_timeout = Duration::from_millis(300);
        c.limits.max_connections = 1;
    })
    .await;
    let mut conn = proxied_tcp(router.http).await;
    conn.write_all(b"POST /upload HTTP/1.1\r\nhost: a.acme.test\r\ncontent-length: 100\r\n\r\nx")
        .await
        .unwrap();
    let answer = until_closed(&mut conn).await.expect("closed after 408");
    assert!(
        answer.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(
        router.metric(
            "bulkhead_router_limited_requests_total",
            &[("limit", "body_idle")]
        ),
        Some(1.0)
    );
    // The only connection slot is free again.
    let served = get_from(router.http, CLIENT_ADDR, "/").await;
    assert_eq!(served.as_deref(), Some("200"));
}

#[tokio::test]
async fn a_slow_but_steady_request_body_is_served() {
    let web = EchoBackend::start("web").await;
    let router = strict_router(&Pki::new(), &web, |c| {
        c.limits.body_idle_timeout = Duration::from_secs(1)
    })
    .await;
    let mut conn = proxied_tcp(router.http).await;
    conn.write_all(b"POST /upload HTTP/1.1\r\nhost: a.acme.test\r\nconnection: close\r\ncontent-length: 6\r\n\r\n")
        .await
        .unwrap();
    // Six bytes over 1.5 s: longer than the idle timeout in total, never idle for it.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        conn.write_all(b"x").await.unwrap();
    }
    let answer = until_closed(&mut conn).await.expect("answered");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"body_len\":6"), "{text}");
}

#[tokio::test]
async fn one_source_at_its_cap_does_not_lock_out_another_source() {
    let web = EchoBackend::start("web").await;
    let router = router_with(&web, |c| {
        c.limits.header_read_timeout = Duration::from_secs(60);
        c.limits.max_connections = 4;
        c.limits.max_connections_per_source = 2;
    })
    .await;
    // Source A opens twice the connections it may hold and trickles request heads on them.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut s = tcp_from(router.http, "198.51.100.7:4000").await;
        s.write_all(b"GET / HTTP/1.1\r\nhost: a.ac").await.unwrap();
        stalled.push(s);
    }
    let refused = eventually(|| {
        router.metric(
            "bulkhead_router_connections_total",
            &[("outcome", "source_limit")],
        ) == Some(2.0)
    })
    .await;
    assert!(refused, "{}", router.metrics_text());
    // Another source is served at once; so is an IPv6 client.
    let other = tokio::time::timeout(WAIT, get_from(router.http, "203.0.113.9:5000", "/")).await;
    assert_eq!(other.ok().flatten().as_deref(), Some("200"));
    let v6 = tokio::time::timeout(WAIT, get_from(router.http, "[2001:db8::1]:5000", "/")).await;
    assert_eq!(v6.ok().flatten().as_deref(), Some("200"));
    drop(stalled);
}

#[tokio::test]
async fn an_upgraded_tunnel_counts_as_an_open_connection_until_it_ends() {
    let web = EchoBackend::start("web").await;
    let router = router_with(&web, |c| c.limits.max_connections = 1).await;
    let mut tunnel = proxied_tcp(router.http).await;
    tunnel
        .write_all(b"GET /ws HTTP/1.1\r\nhost: a.acme.test\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tunnel.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    let open = || router.metric("bulkhead_router_open_connections", &[("listener", "http")]);
    // Still counted well after the upgrade, and the limit of one connection is taken.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(open(), Some(1.0));
    let refused = get_from(router.http, "203.0.113.9:5000", "/").await;
    assert_eq!(
        refused, None,
        "a second connection was served beside the tunnel"
    );
    // The tunnel works, then ends; its slot is free again.
    tunnel.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    let _ = tunnel.read_exact(&mut echoed).await;
    drop(tunnel);
    assert!(
        eventually(|| open() == Some(0.0)).await,
        "{}",
        router.metrics_text()
    );
    let served = get_from(router.http, "203.0.113.9:5000", "/").await;
    assert_eq!(served.as_deref(), Some("200"));
}

#[tokio::test]
async fn http2_streams_beyond_the_router_budget_are_refused_with_503() {
    let web = EchoBackend::start("web").await;
    let router = router_with(&web, |c| c.limits.h2_max_streams_per_router = 1).await;
    let io = proxied_tcp(router.http).await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(io),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let get = |path: &str| {
        http::Request::builder()
            .version(http::Version::HTTP_2)
            .uri(format!("http://a.acme.test{path}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    // The first stream waits on a slow backend; the second finds the budget spent.
    let slow = sender.send_request(get("/slow"));
    let slow = tokio::spawn(slow);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = sender.send_request(get("/")).await.expect("answered");
    assert_eq!(second.status(), 503);
    assert_eq!(
        router.metric(
            "bulkhead_router_limited_requests_total",
            &[("limit", "h2_streams")]
        ),
        Some(1.0)
    );
    slow.abort();
}

/// Reads one HTTP/1.1 response with a `content-length` body from `io`; returns its head.
async fn read_one_response(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(WAIT, io.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap();
        assert!(n > 0, "closed before a response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .expect("content-length");
    while buf.len() < head_end + length {
        let n = io.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed inside the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    head
}

#[tokio::test]
async fn a_slow_second_request_head_on_a_kept_alive_connection_is_cut_off() {
    let web = EchoBackend::start("web").await;
    let router = strict_router(&Pki::new(), &web, |_| {}).await;
    let mut conn = proxied_tcp(router.http).await;
    conn.write_all(b"GET /first HTTP/1.1\r\nhost: a.acme.test\r\n\r\n")
        .await
        .unwrap();
    let head = read_one_response(&mut conn).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The next head, a byte at a time: each byte well within the header read timeout, the whole
    // head never. The idle timeout (600 s) is not what closes it.
    let trickle = async {
        for byte in b"GET /second HTTP/1.1\r\nhost: a.acme.test\r\nx-pad: 0123456789abcdef" {
            if conn.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(HEADER_TIMEOUT / 6).await;
        }
    };
    tokio::time::timeout(WAIT, trickle)
        .await
        .expect("writes stop failing or end");
    assert!(
        until_closed(&mut conn).await.is_some(),
        "still open after {WAIT:?} (header read timeout {HEADER_TIMEOUT:?})"
    );
    assert_eq!(
        web.seen.lock().unwrap().len(),
        1,
        "only the first request was forwarded"
    );
}

#[tokio::test]
async fn a_kept_alive_http1_connection_without_a_next_request_is_closed_by_the_header_read_timeout()
{
    let web = EchoBackend::start("web").await;
    let pki = Pki::new();
    let router = strict_router(&pki, &web, |_| {}).await;
    let mut tls = tls_get(&pki, &router, b"http/1.1").await;
    let head = read_one_response(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    let rest = until_closed(&mut tls).await;
    assert_eq!(
        rest.as_deref(),
        Some(&b""[..]),
        "closed without another byte (idle timeout 600 s, header read timeout {HEADER_TIMEOUT:?})"
    );
}
