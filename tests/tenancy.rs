//! Two tenants behind one edge: each is reached with its own certificate, by SNI and by Host, and
//! neither can serve a name the cluster admin did not give it.

mod common;

use common::*;

#[tokio::test]
async fn https_reaches_each_tenants_backend_with_its_own_certificate() {
    let t = two_tenants().await;
    // Each client trusts only its tenant's CA: a handshake that succeeds proves which certificate was served.
    let (status, _, body) = https_get(t.bh.https, "www.acme.test", "/hello", &t.acme_ca)
        .await
        .unwrap_or_else(|e| panic!("acme over HTTPS: {e}\n{}", t.bh.log()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(answer_field(&body, "backend").as_deref(), Some("acme-web"));
    assert_eq!(answer_field(&body, "path").as_deref(), Some("/hello"));

    let (status, _, body) = https_get(t.bh.https, "www.globex.test", "/", &t.globex_ca)
        .await
        .unwrap_or_else(|e| panic!("globex over HTTPS: {e}"));
    assert_eq!(status, 200);
    assert_eq!(
        answer_field(&body, "backend").as_deref(),
        Some("globex-web")
    );

    // acme's CA does not vouch for the certificate globex's router serves.
    assert!(https_get(t.bh.https, "www.globex.test", "/", &t.acme_ca)
        .await
        .is_err());

    // HTTP/2 is negotiated by ALPN and routed the same way.
    let (status, body, alpn) = https_get_h2(t.bh.https, "www.acme.test", "/h2", &t.acme_ca)
        .await
        .unwrap_or_else(|e| panic!("acme over h2: {e}"));
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(status, 200);
    assert_eq!(answer_field(&body, "backend").as_deref(), Some("acme-web"));
}

/// Each tenant's router runs on a runtime (thread pool) of its own, as in a cluster each runs in a
/// pod of its own: one tenant's load queues only its own tasks.
#[tokio::test]
async fn each_tenant_router_runs_on_threads_of_its_own() {
    let t = two_tenants().await;
    let (status, _, _) = http_get(t.bh.http, "www.globex.test", "/").await.unwrap();
    assert_eq!(status, 200);
    let threads = thread_names(t.bh.pid());
    for tenant in ["acme", "globex"] {
        assert!(
            threads
                .iter()
                .any(|name| name == &format!("router-{tenant}")),
            "no thread of {tenant}'s router among {threads:?}"
        );
    }
}

/// With two workers per router, each worker runs a current-thread runtime on a thread of its own
/// and accepts from a socket of its own in the port's `SO_REUSEPORT` group, as in
/// `bulkhead-dataplane router`: every request on new connections is served.
#[tokio::test]
async fn a_router_with_two_workers_serves_on_both() {
    let t = two_tenants_with_env(&[("BULKHEAD_ROUTER_WORKER_THREADS", "2")]).await;
    for i in 0..20 {
        let (status, _, body) =
            https_get(t.bh.https, "www.acme.test", &format!("/{i}"), &t.acme_ca)
                .await
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(status, 200, "{body}");
        assert_eq!(answer_field(&body, "backend").as_deref(), Some("acme-web"));
    }
    let threads = thread_names(t.bh.pid());
    for worker in [
        "router-acme",
        "router-acme-1",
        "router-globex",
        "router-globex-1",
    ] {
        assert!(
            threads.iter().any(|name| name == worker),
            "no thread {worker} among {threads:?}"
        );
    }
}

/// The names of process `pid`'s threads.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process's threads")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn plain_http_is_routed_by_host() {
    let t = two_tenants().await;
    let (status, _, body) = http_get(t.bh.http, "www.globex.test", "/x").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        answer_field(&body, "backend").as_deref(),
        Some("globex-web")
    );
    // Host matching ignores case, a port and a trailing dot.
    let (status, _, body) = http_get(t.bh.http, "WWW.ACME.test.:80", "/").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(answer_field(&body, "backend").as_deref(), Some("acme-web"));
    // A host of an onboarded tenant without a matching route: that tenant's router answers 404.
    let (status, _, _) = http_get(t.bh.http, "api.acme.test", "/").await.unwrap();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn unknown_names_are_refused_at_the_edge() {
    let t = two_tenants().await;
    let err = tls_connect(t.bh.https, "www.initech.test", &t.acme_ca, &[b"http/1.1"]).await;
    assert!(
        err.is_err(),
        "a handshake for a name no tenant owns must fail"
    );
    let (status, _, _) = http_get(t.bh.http, "www.initech.test", "/").await.unwrap();
    assert_eq!(status, 404);
    // The refusal is counted.
    let metrics = t.bh.metrics().await;
    assert!(
        metrics.contains("unknown"),
        "no unknown-hostname metric in:\n{metrics}"
    );
}

fn futures_status(bh: &Standalone) -> String {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(bh.status()).to_string()
        })
        .join()
        .unwrap_or_default()
    })
}

#[tokio::test]
async fn a_hostname_outside_the_tenants_grant_is_not_served() {
    let t = two_tenants().await;
    // acme tries to take www.globex.test with a route of its own.
    t.bh.write(
        "acme/steal.yaml",
        &route_yaml("acme", "steal", &["www.globex.test"], "/", "web"),
    );
    let status = eventually(SETTLE, || async {
        let s = t.bh.object_status("HTTPRoute", "acme", "steal").await?;
        let text = s.to_string();
        text.contains("\"Accepted\"").then_some(s)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no status for acme/steal; status: {}",
            futures_status(&t.bh)
        )
    });
    let accepted = status["parents"][0]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Accepted"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        accepted["status"], "False",
        "acme/steal must not be accepted: {status}"
    );
    // globex keeps its name.
    let (status, _, body) = http_get(t.bh.http, "www.globex.test", "/").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        answer_field(&body, "backend").as_deref(),
        Some("globex-web")
    );
}

// ---- overlapping grants and connection reuse (issue 12) ----------------------------------------

/// A backend that answers 200 to everything and records each request's `Host path`.
struct Recorder {
    addr: std::net::SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Recorder {
    async fn start() -> Recorder {
        use hyper::service::service_fn;
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = std::sync::Arc::clone(&seen);
        let addr = serve_each(move |stream| {
            let log = std::sync::Arc::clone(&log);
            async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let host = req
                        .headers()
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    log.lock()
                        .unwrap()
                        .push(format!("{host} {}", req.uri().path()));
                    async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok\n")),
                        ))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        })
        .await;
        Recorder { addr, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Tenant a holds `*.example.test` (wildcard certificate), tenant b the more specific
/// `shop.example.test`; each routes everything to its own recording backend.
struct Overlap {
    bh: Standalone,
    a_ca: String,
    b_ca: String,
    a_web: Recorder,
    b_web: Recorder,
}

async fn overlapping_grants() -> Overlap {
    let a_ca = pki::DemoCa::new("a CA").unwrap();
    let b_ca = pki::DemoCa::new("b CA").unwrap();
    let a_leaf = a_ca.issue(&["*.example.test"]).unwrap();
    let b_leaf = b_ca.issue(&["shop.example.test"]).unwrap();
    let (a_web, b_web) = (Recorder::start().await, Recorder::start().await);
    let files = vec![
        ("tenants/a.yaml", tenant_yaml("a", &["*.example.test"])),
        ("tenants/b.yaml", tenant_yaml("b", &["shop.example.test"])),
        (
            "a/gw.yaml",
            gateway_yaml("a", "*.example.test", Some("a-tls")),
        ),
        ("a/tls.yaml", pki::tls_secret_yaml("a", "a-tls", &a_leaf)),
        (
            "a/web.yaml",
            route_yaml("a", "web", &["*.example.test"], "/", "web")
                + "---\n"
                + &service_yaml("a", "web", a_web.addr),
        ),
        (
            "b/gw.yaml",
            gateway_yaml("b", "shop.example.test", Some("b-tls")),
        ),
        ("b/tls.yaml", pki::tls_secret_yaml("b", "b-tls", &b_leaf)),
        (
            "b/web.yaml",
            route_yaml("b", "web", &["shop.example.test"], "/", "web")
                + "---\n"
                + &service_yaml("b", "web", b_web.addr),
        ),
    ];
    let bh = Standalone::start(&files).await;
    Overlap {
        bh,
        a_ca: a_ca.cert_pem().to_owned(),
        b_ca: b_ca.cert_pem().to_owned(),
        a_web,
        b_web,
    }
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body) from raw bytes; its status.
async fn read_status<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> u16 {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(SETTLE, stream.read(&mut byte))
            .await
            .expect("response in time")
            .expect("read");
        assert_eq!(n, 1, "closed before a response head: {buf:?}");
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    head[9..12].parse().unwrap()
}

#[tokio::test]
async fn h2_connection_reuse_cannot_carry_a_request_to_the_wider_grant() {
    let t = overlapping_grants().await;
    // b's own connection reaches b (the edge sends the name to the most specific grant).
    let (status, _, _) = https_get(t.bh.https, "shop.example.test", "/own", &t.b_ca)
        .await
        .unwrap_or_else(|e| panic!("b over HTTPS: {e}\n{}", t.bh.log()));
    assert_eq!(status, 200);

    // A browser's HTTP/2 connection to www (a's wildcard certificate also covers shop).
    let tls = tls_connect(t.bh.https, "www.example.test", &t.a_ca, &[b"h2"])
        .await
        .unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut get = |authority: &str, path: &str| {
        let req = http::Request::get(format!("https://{authority}{path}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        h2.send_request(req)
    };
    assert_eq!(get("www.example.test", "/www").await.unwrap().status(), 200);
    let reused = get("shop.example.test", "/cookies").await.unwrap();
    assert_eq!(reused.status(), 421, "{}", t.bh.log());

    assert_eq!(t.a_web.seen(), ["www.example.test /www"]);
    assert_eq!(
        t.b_web.seen(),
        ["shop.example.test /own"],
        "only b's own request"
    );
}

#[tokio::test]
async fn http1_keep_alive_cannot_carry_a_request_to_the_wider_grant() {
    use tokio::io::AsyncWriteExt;
    let t = overlapping_grants().await;
    let mut tcp = tokio::net::TcpStream::connect(t.bh.http).await.unwrap();
    tcp.write_all(b"GET /www HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_status(&mut tcp).await, 200, "{}", t.bh.log());
    tcp.write_all(b"GET /cookies HTTP/1.1\r\nHost: shop.example.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_status(&mut tcp).await, 421);
    assert_eq!(t.a_web.seen(), ["www.example.test /www"]);
    assert!(t.b_web.seen().is_empty());
}

#[tokio::test]
async fn duplicate_host_over_tls_is_a_bad_request() {
    use tokio::io::AsyncWriteExt;
    let t = overlapping_grants().await;
    let mut tls = tls_connect(t.bh.https, "www.example.test", &t.a_ca, &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(
        b"GET /dup HTTP/1.1\r\nHost: www.example.test\r\nHost: shop.example.test\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(read_status(&mut tls).await, 400, "{}", t.bh.log());
    assert!(t.a_web.seen().is_empty());
    assert!(t.b_web.seen().is_empty());
}
