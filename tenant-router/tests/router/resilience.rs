//! Upstream resilience: retries after connection failures (never of a request that may have been
//! acted on) and passive ejection of failing endpoints, over real loopback sockets.

use crate::support::*;
use bulkhead_snapshot::{BackendProtocol, TenantSnapshot};
use bulkhead_test_support::net::{exchange_head, serve_each};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

const HOST: &str = "a.acme.test";
const WEB: &str = "acme/web:80";
/// An ejection that outlasts any test run, so that "is ejected" never depends on timing.
const LONG_EJECTION: Duration = Duration::from_secs(3600);
/// Requests a test sends at most while waiting for a random choice to hit a given endpoint; the
/// chance that P2C misses one of two endpoints this many times is 2^-200.
const MAX_TRIES: usize = 200;
/// Requests per batch in the tests that count outcomes.
const BATCH: usize = 24;

/// A backend that reads request heads and never answers: it closes the connection after the first
/// head ([`Hangup::start`]) or holds every connection open ([`Hangup::holding`]).
struct Hangup {
    addr: SocketAddr,
    heads: Arc<AtomicUsize>,
}

impl Hangup {
    async fn start() -> Hangup {
        Self::serve(false).await
    }

    async fn holding() -> Hangup {
        Self::serve(true).await
    }

    async fn serve(hold: bool) -> Hangup {
        let heads = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&heads);
        let addr = serve_each(move |mut s| {
            let count = Arc::clone(&count);
            async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                    let ends = head.windows(4).filter(|w| w == b"\r\n\r\n").count();
                    if ends > 0 {
                        head.clear();
                        count.fetch_add(ends, Ordering::SeqCst);
                        if !hold {
                            return;
                        }
                    }
                }
            }
        })
        .await;
        Hangup { addr, heads }
    }

    fn heads(&self) -> usize {
        self.heads.load(Ordering::SeqCst)
    }
}

/// A snapshot whose plain listener sends every path of `a.acme.test` to the backend `WEB` with
/// `endpoints`, plus `extra` backends routed by prefix (`/<name>` to `acme/<name>:80`).
fn snapshot_for(
    version: u64,
    endpoints: &[SocketAddr],
    extra: &[(&str, &[SocketAddr])],
) -> TenantSnapshot {
    let pki = Pki::new();
    let mut s = base_snapshot(&pki, version);
    s.backends
        .insert(WEB.into(), backend(BackendProtocol::Http1, endpoints));
    let mut routes = Vec::new();
    for (name, eps) in extra {
        let id = format!("acme/{name}:80");
        s.backends
            .insert(id.clone(), backend(BackendProtocol::Http1, eps));
        routes.push(route(
            name,
            prefix(&format!("/{name}")),
            vec![weighted(Some(&id), 1)],
        ));
    }
    routes.push(route("web", prefix("/"), vec![weighted(Some(WEB), 1)]));
    s.http.virtual_hosts = vec![vhost(HOST, 80, routes)];
    s
}

/// A router serving [`snapshot_for`] whose ejections outlast the test.
async fn router_for(
    endpoints: &[SocketAddr],
    extra: &[(&str, &[SocketAddr])],
    consecutive_failures: u32,
) -> TestRouter {
    TestRouter::start_custom(snapshot_for(1, endpoints, extra), |c| {
        c.limits.outlier_consecutive_failures = consecutive_failures;
        c.limits.outlier_base_ejection_time = LONG_EJECTION;
        c.limits.outlier_max_ejection_time = LONG_EJECTION;
    })
    .await
}

fn web_labels(backend: &str) -> [(&'static str, &str); 2] {
    [("tenant", TENANT), ("backend", backend)]
}

async fn send(c: &mut Client, method: &str, path: &str, body: &'static [u8]) -> Reply {
    let req = c
        .request(method, HOST, path)
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    read_reply(c.send(req).await.unwrap()).await
}

#[tokio::test]
async fn refusing_endpoint_is_retried_around_and_ejected() {
    let web = EchoBackend::start("web").await;
    let refusing = closed_port().await;
    let router = router_for(&[web.addr, refusing], &[], 5).await;
    let mut c = h1_plain(&router).await;
    let ejections =
        |r: &TestRouter| r.metric("bulkhead_router_outlier_ejections_total", &web_labels(WEB));
    let mut sent = 0;
    while ejections(&router).is_none_or(|v| v < 1.0) {
        assert!(
            sent < MAX_TRIES,
            "never ejected:\n{}",
            router.metrics_text()
        );
        let r = send(&mut c, "GET", "/", b"").await;
        assert_eq!(r.status, StatusCode::OK, "request {sent} failed");
        assert_eq!(r.backend(), "web");
        sent += 1;
    }
    let retries = router
        .metric(
            "bulkhead_router_upstream_retries_total",
            &[("backend", WEB), ("reason", "not_sent")],
        )
        .unwrap_or(0.0);
    assert_eq!(retries, 5.0, "each of the 5 failures was retried");
    assert_eq!(
        router.metric(
            "bulkhead_router_outlier_ejected_endpoints",
            &web_labels(WEB)
        ),
        Some(1.0)
    );
    let connect_errors = |r: &TestRouter| {
        r.metric(
            "bulkhead_router_upstream_errors_total",
            &[("backend", WEB), ("kind", "connect")],
        )
    };
    let before = connect_errors(&router);
    for _ in 0..BATCH {
        assert_eq!(send(&mut c, "GET", "/", b"").await.status, StatusCode::OK);
    }
    assert_eq!(
        connect_errors(&router),
        before,
        "the ejected endpoint is not tried"
    );

    // A new configuration naming the same endpoints keeps the ejection...
    let other = EchoBackend::start("other").await;
    let mut router = router;
    let v2 = snapshot_for(2, &[web.addr, refusing], &[("other", &[other.addr])]);
    router.publish(v2).await.expect("v2 accepted");
    drop(c); // (an open connection would take the change too; a new one is what clients open)
    let mut c = h1_plain(&router).await;
    for _ in 0..BATCH {
        assert_eq!(send(&mut c, "GET", "/", b"").await.status, StatusCode::OK);
    }
    assert_eq!(
        connect_errors(&router),
        before,
        "still ejected after the swap"
    );
    let gauge = |r: &TestRouter| {
        r.metric(
            "bulkhead_router_outlier_ejected_endpoints",
            &web_labels(WEB),
        )
    };
    assert_eq!(gauge(&router), Some(1.0));
    // ...and one without the endpoint forgets it.
    let v3 = snapshot_for(3, &[web.addr], &[]);
    router.publish(v3).await.expect("v3 accepted");
    drop(c);
    assert!(
        eventually(|| gauge(&router) == Some(0.0)).await,
        "the removed endpoint left the gauge:\n{}",
        router.metrics_text()
    );
}

#[tokio::test]
async fn request_with_a_body_is_resent_whole_when_the_connect_failed() {
    let web = EchoBackend::start("web").await;
    let router = router_for(&[web.addr, closed_port().await], &[], 0).await;
    let mut c = h1_plain(&router).await;
    for i in 0..BATCH {
        let r = send(&mut c, "POST", "/", b"hello world").await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
        assert_eq!(r.json()["body_len"], 11, "request {i}");
    }
    let retries = router.metric(
        "bulkhead_router_upstream_retries_total",
        &[("backend", WEB), ("reason", "not_sent")],
    );
    assert!(retries.is_some_and(|v| v >= 1.0), "{retries:?}");
    assert_eq!(
        router.metric("bulkhead_router_outlier_ejections_total", &web_labels(WEB)),
        Some(0.0),
        "detection is off in this test"
    );
}

#[tokio::test]
async fn get_is_retried_when_the_connection_closes_without_an_answer() {
    let web = EchoBackend::start("web").await;
    let hangup = Hangup::start().await;
    let router = router_for(&[web.addr, hangup.addr], &[], 0).await;
    let mut c = h1_plain(&router).await;
    let mut sent = 0;
    while hangup.heads() == 0 || sent < BATCH {
        assert!(sent < MAX_TRIES, "the hang-up endpoint was never chosen");
        let r = send(&mut c, "GET", "/", b"").await;
        assert_eq!(r.status, StatusCode::OK, "request {sent}");
        assert_eq!(r.backend(), "web");
        sent += 1;
    }
    let retries = router.metric(
        "bulkhead_router_upstream_retries_total",
        &[("backend", WEB), ("reason", "connection_failed")],
    );
    assert_eq!(retries, Some(hangup.heads() as f64));
}

/// An HTTP/2 (h2c) backend that resets its first `refuse` streams with `REFUSED_STREAM` and
/// answers the others 200 `ok`; counts the streams it saw.
struct Refuser {
    addr: SocketAddr,
    streams: Arc<AtomicUsize>,
}

impl Refuser {
    async fn start(refuse: usize) -> Refuser {
        let streams = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&streams);
        let addr = serve_each(move |s| {
            let count = Arc::clone(&count);
            async move {
                let Ok(mut conn) = h2::server::handshake(s).await else {
                    return;
                };
                while let Some(Ok((_request, mut respond))) = conn.accept().await {
                    if count.fetch_add(1, Ordering::SeqCst) < refuse {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let head = http::Response::builder()
                        .status(200)
                        .header("x-backend", "refuser")
                        .body(())
                        .unwrap();
                    if let Ok(mut body) = respond.send_response(head, false) {
                        let _ = body.send_data(Bytes::from_static(b"ok"), true);
                    }
                }
            }
        })
        .await;
        Refuser { addr, streams }
    }
}

#[tokio::test]
async fn a_request_the_http2_backend_refused_is_sent_again() {
    let refuser = Refuser::start(1).await;
    let mut s = snapshot_for(1, &[], &[]);
    s.backends
        .insert(WEB.into(), backend(BackendProtocol::H2c, &[refuser.addr]));
    let router = TestRouter::start(s).await;
    let mut c = h1_plain(&router).await;
    // Not idempotent, but a refused stream was never processed (RFC 9113 section 8.7).
    let r = send(&mut c, "POST", "/", b"").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"ok");
    assert_eq!(refuser.streams.load(Ordering::SeqCst), 2);
    let retries = router.metric(
        "bulkhead_router_upstream_retries_total",
        &[("backend", WEB), ("reason", "not_sent")],
    );
    assert_eq!(retries, Some(1.0));
}

#[tokio::test]
async fn request_with_a_body_is_not_retried_once_sent() {
    let web = EchoBackend::start("web").await;
    let hangup = Hangup::start().await;
    let router = router_for(&[web.addr, hangup.addr], &[], 0).await;
    let mut c = h1_plain(&router).await;
    let mut bad_gateway = 0;
    let mut sent = 0;
    while hangup.heads() == 0 || sent < BATCH {
        assert!(sent < MAX_TRIES, "the hang-up endpoint was never chosen");
        // POST is not idempotent; PUT is, but its body may have been consumed.
        let method = if sent % 2 == 0 { "POST" } else { "PUT" };
        let r = send(&mut c, method, "/", b"payload").await;
        match r.status {
            StatusCode::OK => assert_eq!(r.backend(), "web"),
            StatusCode::BAD_GATEWAY => bad_gateway += 1,
            other => panic!("request {sent}: {other}"),
        }
        sent += 1;
    }
    assert_eq!(
        bad_gateway,
        hangup.heads(),
        "every request the hang-up endpoint got failed"
    );
    assert_eq!(
        router.metric(
            "bulkhead_router_upstream_retries_total",
            &[("backend", WEB)]
        ),
        None,
        "nothing was retried"
    );
}

#[tokio::test]
async fn ejection_never_removes_the_last_endpoint() {
    let both_down = [closed_port().await, closed_port().await];
    let lone = [closed_port().await];
    let web = EchoBackend::start("web").await;
    let router = router_for(&[web.addr], &[("down", &both_down), ("lone", &lone)], 5).await;
    let mut c = h1_plain(&router).await;
    for path in ["/down", "/lone"] {
        for i in 0..BATCH {
            let r = send(&mut c, "GET", path, b"").await;
            assert_eq!(
                r.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{path} request {i}"
            );
        }
    }
    let down = web_labels("acme/down:80");
    assert_eq!(
        router.metric("bulkhead_router_outlier_ejections_total", &down),
        Some(1.0),
        "one of two endpoints ejected, never both"
    );
    assert_eq!(
        router.metric("bulkhead_router_outlier_ejected_endpoints", &down),
        Some(1.0)
    );
    let lone = web_labels("acme/lone:80");
    assert_eq!(
        router
            .metric("bulkhead_router_outlier_ejections_total", &lone)
            .unwrap_or(0.0),
        0.0,
        "a lone endpoint is never ejected"
    );
    let lone_errors = router.metric(
        "bulkhead_router_upstream_errors_total",
        &[("backend", "acme/lone:80"), ("kind", "connect")],
    );
    assert_eq!(
        lone_errors,
        Some((BATCH * 3) as f64),
        "every request tried the lone endpoint three times (two retries)"
    );
    assert_eq!(send(&mut c, "GET", "/", b"").await.status, StatusCode::OK);
}

// ------------------------------------------------- faults blamed on whoever caused them

/// Client faults a test sends: more than [`CLIENT_FAULT_THRESHOLD`] consecutive failures, several
/// times over, so that counting them against endpoints would eject one.
const CLIENT_FAULTS: usize = 10;
/// The consecutive gateway failures that eject an endpoint in these tests.
const CLIENT_FAULT_THRESHOLD: u32 = 2;
/// How long a test waits for the router's answer on a raw connection (generous: never reached
/// when the router answers).
const RAW_ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Two echo endpoints (`one`, `two`) of `WEB`, and a router ejecting after
/// [`CLIENT_FAULT_THRESHOLD`] consecutive gateway failures.
async fn two_endpoint_router() -> (EchoBackend, EchoBackend, TestRouter) {
    let one = EchoBackend::start("one").await;
    let two = EchoBackend::start("two").await;
    let router = router_for(&[one.addr, two.addr], &[], CLIENT_FAULT_THRESHOLD).await;
    (one, two, router)
}

/// Whether normal requests still reach each of the two endpoints (none was ejected).
async fn both_endpoints_serve(router: &TestRouter) -> bool {
    let mut c = h1_plain(router).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..MAX_TRIES {
        let r = send(&mut c, "GET", "/", b"").await;
        assert_eq!(r.status, StatusCode::OK);
        seen.insert(r.backend());
        if seen.len() == 2 {
            return true;
        }
    }
    false
}

/// No endpoint was ejected, no upstream error counted, and normal requests reach each endpoint.
async fn assert_blamed_on_the_client(router: &TestRouter) {
    let ejections = router
        .metric("bulkhead_router_outlier_ejections_total", &web_labels(WEB))
        .unwrap_or(0.0);
    assert_eq!(ejections, 0.0, "{}", router.metrics_text());
    assert_eq!(
        router.metric("bulkhead_router_upstream_errors_total", &[("backend", WEB)]),
        None,
        "no upstream error was counted"
    );
    assert!(
        both_endpoints_serve(router).await,
        "an endpoint was ejected"
    );
}

fn client_errors(router: &TestRouter, kind: &str) -> f64 {
    router
        .metric(
            "bulkhead_router_client_errors_total",
            &[("backend", WEB), ("kind", kind)],
        )
        .unwrap_or(0.0)
}

/// Writes `bytes` on a new plain connection (after the PROXY header), half-closes it when asked,
/// and returns the response head the router sent (empty when it sent none).
async fn raw_exchange(router: &TestRouter, bytes: &[u8], half_close: bool) -> String {
    let mut s = proxied_tcp(router.http).await;
    exchange_head(&mut s, bytes, half_close, RAW_ANSWER_WAIT).await
}

#[tokio::test]
async fn malformed_chunked_body_is_400_and_ejects_no_endpoint() {
    let (_one, _two, router) = two_endpoint_router().await;
    // One valid chunk, then a chunk-size line that is not hexadecimal.
    let request = b"POST / HTTP/1.1\r\nhost: a.acme.test\r\ntransfer-encoding: chunked\r\n\r\n\
        5\r\nhello\r\nzz\r\nmore\r\n0\r\n\r\n";
    for i in 0..CLIENT_FAULTS {
        let answer = raw_exchange(&router, request, false).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "request {i} answered {answer:?}"
        );
    }
    assert_eq!(
        client_errors(&router, "malformed_body"),
        CLIENT_FAULTS as f64
    );
    assert_blamed_on_the_client(&router).await;
}

#[tokio::test]
async fn upload_abandoned_halfway_ejects_no_endpoint() {
    let (_one, _two, router) = two_endpoint_router().await;
    let request = b"POST / HTTP/1.1\r\nhost: a.acme.test\r\ncontent-length: 100\r\n\r\nonly ten b";
    for _ in 0..CLIENT_FAULTS {
        let answer = raw_exchange(&router, request, true).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "{answer:?}"
        );
    }
    assert_blamed_on_the_client(&router).await;
}

#[tokio::test]
async fn http2_client_resetting_mid_body_ejects_no_endpoint() {
    let (_one, _two, router) = two_endpoint_router().await;
    let tcp = proxied_tcp(router.http).await;
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::spawn(conn);
    for _ in 0..CLIENT_FAULTS {
        let mut client = client.clone().ready().await.expect("stream capacity");
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://{HOST}/"))
            .body(())
            .unwrap();
        let (response, mut body) = client.send_request(req, false).expect("stream opened");
        body.send_data(Bytes::from_static(b"first half"), false)
            .expect("data sent");
        // Let the router start forwarding the body before the stream is reset.
        tokio::time::sleep(Duration::from_millis(20)).await;
        body.send_reset(h2::Reason::CANCEL);
        let _ = response.await;
    }
    assert_blamed_on_the_client(&router).await;
}

#[tokio::test]
async fn circuit_breaker_refuses_requests_beyond_the_backend_maximum() {
    const MAX_REQUESTS: usize = 3;
    let web = EchoBackend::start("web").await;
    let held = Hangup::holding().await;
    let s = snapshot_for(1, &[web.addr], &[("held", &[held.addr])]);
    let router = TestRouter::start_custom(s, |c| {
        c.limits.max_requests_per_backend = MAX_REQUESTS;
        c.limits.outlier_consecutive_failures = 1;
    })
    .await;
    let mut waiting = Vec::new();
    for _ in 0..MAX_REQUESTS {
        let mut c = h1_plain(&router).await;
        waiting.push(tokio::spawn(async move {
            let _ = send(&mut c, "GET", "/held", b"").await;
        }));
    }
    assert!(
        eventually(|| held.heads() == MAX_REQUESTS).await,
        "the held backend got {} requests",
        held.heads()
    );
    let mut c = h1_plain(&router).await;
    let refused = tokio::time::timeout(RAW_ANSWER_WAIT, send(&mut c, "GET", "/held", b""))
        .await
        .expect("refused at once, not held");
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused
            .headers
            .get("x-bulkhead-overflow")
            .map(|v| v.as_bytes()),
        Some(&b"max_requests"[..])
    );
    assert_eq!(held.heads(), MAX_REQUESTS, "the refused request never left");
    let held_labels = [("backend", "acme/held:80"), ("breaker", "max_requests")];
    assert_eq!(
        router.metric("bulkhead_router_upstream_overflow_total", &held_labels),
        Some(1.0)
    );
    assert_eq!(
        router
            .metric(
                "bulkhead_router_outlier_ejections_total",
                &web_labels("acme/held:80")
            )
            .unwrap_or(0.0),
        0.0,
        "an overflow is no endpoint failure"
    );
    let other = send(&mut c, "GET", "/", b"").await;
    assert_eq!(
        other.status,
        StatusCode::OK,
        "other backends are unaffected"
    );
    for task in waiting {
        task.abort();
    }
}

#[tokio::test]
async fn mirrors_beyond_the_bound_are_dropped_and_the_request_still_served() {
    const SENT: usize = 4;
    let web = EchoBackend::start("web").await;
    let held = Hangup::holding().await;
    let mut s = snapshot_for(1, &[web.addr], &[("held", &[held.addr])]);
    let mirror = bulkhead_snapshot::HttpFilter::RequestMirror(bulkhead_snapshot::Mirror {
        backend: "acme/held:80".into(),
        percent: 100,
    });
    for vhost in &mut s.http.virtual_hosts {
        for route in &mut vhost.routes {
            route.filters = vec![mirror.clone()];
        }
    }
    let router = TestRouter::start_custom(s, |c| c.limits.max_mirrors_in_flight = 1).await;
    let mut c = h1_plain(&router).await;
    for i in 0..SENT {
        let r = send(&mut c, "POST", "/", b"payload").await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
        assert_eq!(r.backend(), "web");
        assert_eq!(r.json()["body_len"], 7, "request {i}");
    }
    assert!(
        eventually(|| held.heads() == 1).await,
        "one mirror in flight"
    );
    assert_eq!(
        router.metric(
            "bulkhead_router_mirrors_dropped_total",
            &[("backend", "acme/held:80")]
        ),
        Some((SENT - 1) as f64)
    );
    assert_eq!(held.heads(), 1, "the dropped mirrors never left");
}
