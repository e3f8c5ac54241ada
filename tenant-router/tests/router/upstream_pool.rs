//! The router's HTTP/1.1 upstream pool: keep-alive reuse, what never goes back into the pool, idle
//! expiry and the per-endpoint bound, against a backend that counts its connections.

use crate::support::*;
use bulkhead_snapshot::{BackendProtocol, TenantSnapshot};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

const HOST: &str = "a.acme.test";
const WEB: &str = "acme/web:80";
/// Size of `/big`: far more than socket buffers hold, so a client that stops reading leaves most
/// of it unsent.
const BIG: usize = 8 << 20;

/// An HTTP/1.1 keep-alive backend that counts the connections it accepted and those still open.
/// `/` answers `ok` with the connection's number, `/big` [`BIG`] bytes, `/hold` `ok` after 300 ms;
/// with `close_after_each` it closes every connection after its first response (without saying so).
struct CountingBackend {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

impl CountingBackend {
    async fn start(close_after_each: bool) -> CountingBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (acc, live) = (Arc::clone(&accepted), Arc::clone(&open));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = acc.fetch_add(1, Ordering::SeqCst) + 1;
                live.fetch_add(1, Ordering::SeqCst);
                let live = Arc::clone(&live);
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| answer(n, req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(!close_after_each)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    live.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        CountingBackend {
            addr,
            accepted,
            open,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

async fn answer(conn: usize, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match req.uri().path() {
        "/big" => Bytes::from(vec![b'x'; BIG]),
        "/hold" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Bytes::from_static(b"ok")
        }
        _ => Bytes::from_static(b"ok"),
    };
    Ok(Response::builder()
        .header("x-conn", conn.to_string())
        .body(Full::new(body))
        .unwrap())
}

fn snapshot(endpoint: SocketAddr) -> TenantSnapshot {
    let pki = Pki::new();
    let mut s = base_snapshot(&pki, 1);
    s.backends
        .insert(WEB.into(), backend(BackendProtocol::Http1, &[endpoint]));
    s.http.virtual_hosts = vec![vhost(
        HOST,
        80,
        vec![route("web", prefix("/"), vec![weighted(Some(WEB), 1)])],
    )];
    s
}

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection_across_client_connections() {
    let web = CountingBackend::start(false).await;
    let router = TestRouter::start(snapshot(web.addr)).await;
    let mut h1 = h1_plain(&router).await;
    for i in 0..20 {
        let r = h1.get(HOST, "/").await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
        assert_eq!(r.body, "ok");
    }
    let mut h1b = h1_plain(&router).await;
    for _ in 0..5 {
        assert_eq!(h1b.get(HOST, "/").await.status, StatusCode::OK);
    }
    assert_eq!(
        web.accepted(),
        1,
        "one keep-alive connection serves every request in turn"
    );
}

#[tokio::test]
async fn a_response_abandoned_halfway_never_returns_its_connection_to_the_pool() {
    let web = CountingBackend::start(false).await;
    let router = TestRouter::start(snapshot(web.addr)).await;
    {
        let mut c = h1_plain(&router).await;
        let resp = c
            .send(
                c.request("GET", HOST, "/big")
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let conn = resp.headers()["x-conn"].to_str().unwrap().to_owned();
        assert_eq!(conn, "1");
        // Read one frame, then hang up with most of the body unread.
        let mut body = resp.into_body();
        let _ = body.frame().await;
    }
    // The next requests must not land on the half-read connection (they would read the rest of
    // the abandoned body as their response).
    let mut c = h1_plain(&router).await;
    for i in 0..5 {
        let r = c.get(HOST, "/").await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
        assert_eq!(r.body, "ok", "request {i}");
        assert_ne!(
            r.headers["x-conn"], "1",
            "request {i} reused the abandoned connection"
        );
    }
    assert!(
        eventually(|| web.open() == 1).await,
        "the abandoned connection is closed: {} open",
        web.open()
    );
}

#[tokio::test]
async fn idle_upstream_connections_close_after_the_idle_timeout() {
    let web = CountingBackend::start(false).await;
    let router = TestRouter::start_custom(snapshot(web.addr), |c| {
        c.limits.upstream_idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut c = h1_plain(&router).await;
    assert_eq!(c.get(HOST, "/").await.status, StatusCode::OK);
    assert_eq!(web.open(), 1);
    assert!(
        eventually(|| web.open() == 0).await,
        "the idle connection outlived its timeout"
    );
    // And a new request opens a fresh one.
    assert_eq!(c.get(HOST, "/").await.status, StatusCode::OK);
    assert_eq!(web.accepted(), 2);
}

#[tokio::test]
async fn at_most_the_configured_idle_connections_stay_per_endpoint() {
    let web = CountingBackend::start(false).await;
    let router = TestRouter::start_custom(snapshot(web.addr), |c| {
        c.limits.upstream_max_idle_per_endpoint = 2;
    })
    .await;
    let mut held = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let mut c = h1_plain(&router).await;
        held.spawn(async move { c.get(HOST, "/hold").await.status });
    }
    while let Some(status) = held.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        web.accepted(),
        6,
        "six requests at once need six connections"
    );
    assert!(
        eventually(|| web.open() == 2).await,
        "{} idle connections kept",
        web.open()
    );
}

#[tokio::test]
async fn connections_the_backend_closes_after_each_answer_are_replaced_without_errors() {
    let web = CountingBackend::start(true).await;
    let router = TestRouter::start(snapshot(web.addr)).await;
    let mut c = h1_plain(&router).await;
    for i in 0..10 {
        let r = c.get(HOST, "/").await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
        assert_eq!(r.body, "ok", "request {i}");
    }
    assert_eq!(web.accepted(), 10);
}
