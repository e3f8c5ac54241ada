//! The snapshot transport end to end: a real server and real clients over TLS on 127.0.0.1, with
//! certificates made by rcgen. Waits are bounded by a generous [`PATIENCE`] so a broken build fails
//! instead of hanging; nothing asserts on how long anything took.

use bulkhead_snapshot::{Ack, Subscription};
use bulkhead_snapshot::{EdgeRoute, EdgeSnapshot, TenantSnapshot};
use bulkhead_snapshot_wire::{
    client_tls_config, server_tls_config, subscribe, write_bootstrap, AckReceiver, ClientConfig,
    ClientDriver, Identity, LinkStatus, SnapshotServer, StaticTokens, StreamName,
};
use bulkhead_test_support::net::closed_port;
use bulkhead_test_support::pki::DemoCa;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Upper bound of any wait: only a broken implementation gets near it.
const PATIENCE: Duration = Duration::from_secs(60);
const SERVER_NAME: &str = "snapshots.bulkhead.test";
const ACME_TOKEN: &str = "token-of-acme-router";
const GLOBEX_TOKEN: &str = "token-of-globex-router";
const EDGE_TOKEN: &str = "token-of-the-edge";

async fn patiently<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("gave up waiting for {what}"))
}

struct Pki {
    ca_pem: String,
    tls: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    let ca = DemoCa::new("snapshot CA").unwrap();
    let leaf = ca.issue(&[SERVER_NAME]).unwrap();
    let tls = server_tls_config(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes()).unwrap();
    Pki {
        ca_pem: ca.cert_pem().to_owned(),
        tls,
    }
}

fn tokens() -> StaticTokens {
    StaticTokens::new()
        .with(ACME_TOKEN, Identity::Tenant("acme".into()))
        .with(GLOBEX_TOKEN, Identity::Tenant("globex".into()))
        .with(EDGE_TOKEN, Identity::Edge)
}

/// A running server on a fixed address, stopped by `stop`.
struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        patiently("the server to stop", self.task).await.unwrap();
    }
}

async fn serve_on(server: &SnapshotServer<StaticTokens>, pki: &Pki, addr: SocketAddr) -> Running {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = server.clone();
    let tls = Arc::clone(&pki.tls);
    let task = tokio::spawn(async move {
        server
            .serve(listener, tls, async {
                let _ = stopped.await;
            })
            .await
    });
    Running { addr, stop, task }
}

fn new_server() -> (SnapshotServer<StaticTokens>, AckReceiver) {
    SnapshotServer::new(tokens())
}

fn acme() -> StreamName {
    StreamName::tenant("acme").unwrap()
}

fn tenant_snapshot(tenant: &str, version: u64) -> TenantSnapshot {
    TenantSnapshot {
        tenant: tenant.into(),
        namespace: format!("{tenant}-ns"),
        version,
        hostnames: vec![format!("*.{tenant}.example")],
        ..TenantSnapshot::default()
    }
}

struct Client {
    dir: tempfile::TempDir,
    config: ClientConfig,
}

impl Client {
    fn new(pki: &Pki, addr: SocketAddr, token: &str, subscriber: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let token_path = dir.path().join("token");
        std::fs::write(&token_path, format!("{token}\n")).unwrap();
        let config = ClientConfig {
            addr: addr.to_string(),
            server_name: SERVER_NAME.into(),
            ca_pem: pki.ca_pem.clone().into_bytes(),
            token_path,
            subscriber: subscriber.into(),
            ca_path: None,
            bootstrap_path: None,
        };
        Self { dir, config }
    }

    fn bootstrap_path(&self) -> PathBuf {
        self.dir.path().join("bootstrap.json")
    }

    async fn subscribe<T: serde::de::DeserializeOwned + Send + Sync + 'static>(
        &self,
        stream: StreamName,
    ) -> (Subscription<T>, ClientDriver) {
        subscribe(self.config.clone(), stream).await.unwrap()
    }
}

async fn next<T>(sub: &mut Subscription<T>) -> Arc<T> {
    patiently("the next snapshot", sub.next())
        .await
        .expect("the subscription ended")
}

async fn wait_status(
    driver: &ClientDriver,
    what: &str,
    f: impl FnMut(&LinkStatus) -> bool,
) -> LinkStatus {
    let mut status = driver.status();
    let seen = patiently(what, status.wait_for(f)).await.unwrap().clone();
    seen
}

async fn wait_subscribers(server: &SnapshotServer<StaticTokens>, stream: &StreamName, n: usize) {
    patiently("the subscriber count", async {
        while server.subscribers(stream) != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// One raw HTTP/2 request over TLS; returns the status.
async fn raw(
    pki: &Pki,
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> StatusCode {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector =
        tokio_rustls::TlsConnector::from(client_tls_config(pki.ca_pem.as_bytes()).unwrap());
    let tls = connector
        .connect(SERVER_NAME.try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(format!("https://{SERVER_NAME}{path}"));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    patiently("a response", send.send_request(req))
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn tenant_receives_its_snapshot_then_newer_versions_and_its_acks_reach_the_operator() {
    let pki = pki();
    let (server, mut acks) = new_server();
    server
        .publish(&acme(), &tenant_snapshot("acme", 1))
        .unwrap();
    server
        .publish(
            &StreamName::tenant("globex").unwrap(),
            &tenant_snapshot("globex", 50),
        )
        .unwrap();
    let running = serve_on(&server, &pki, "127.0.0.1:0".parse().unwrap()).await;
    let client = Client::new(&pki, running.addr, ACME_TOKEN, "router/acme/0");
    let (mut sub, driver) = client.subscribe::<TenantSnapshot>(acme()).await;

    assert_eq!(*next(&mut sub).await, tenant_snapshot("acme", 1));
    wait_subscribers(&server, &acme(), 1).await;
    assert_eq!(server.stats().subscribers.get(&acme()), Some(&1));
    assert_eq!(
        server.subscribers(&StreamName::tenant("globex").unwrap()),
        0
    );

    server
        .publish(&acme(), &tenant_snapshot("acme", 2))
        .unwrap();
    assert_eq!(next(&mut sub).await.version, 2);
    server
        .publish(&acme(), &tenant_snapshot("acme", 3))
        .unwrap();
    let third = next(&mut sub).await;
    assert_eq!((third.tenant.as_str(), third.version), ("acme", 3));

    sub.ack(3, Ok(()));
    let (stream, ack) = patiently("an ack", acks.recv()).await.unwrap();
    assert_eq!(stream, acme());
    assert_eq!(
        ack,
        Ack {
            subscriber: "router/acme/0".into(),
            version: 3,
            outcome: Ok(())
        }
    );
    sub.ack(4, Err("bad regex in acme/web rule 0".into()));
    let (_, ack) = patiently("a rejection", acks.recv()).await.unwrap();
    assert_eq!(
        (ack.version, ack.outcome),
        (4, Err("bad regex in acme/web rule 0".into()))
    );

    let status = driver.status().borrow().clone();
    assert!(status.connected && !status.serving_bootstrap, "{status:?}");
    assert_eq!(server.stats().acks, 2);
    drop(sub);
    patiently(
        "the driver to end with its subscription",
        driver.into_task(),
    )
    .await
    .unwrap();
    wait_subscribers(&server, &acme(), 0).await;
    running.stop().await;
}

#[tokio::test]
async fn edge_receives_the_edge_snapshot() {
    let pki = pki();
    let (server, mut acks) = new_server();
    let edge = EdgeSnapshot {
        version: 7,
        routes: vec![EdgeRoute {
            hostname: "*.acme.example".into(),
            tenant: "acme".into(),
        }],
        ..EdgeSnapshot::default()
    };
    server.publish(&StreamName::Edge, &edge).unwrap();
    let running = serve_on(&server, &pki, "127.0.0.1:0".parse().unwrap()).await;
    let client = Client::new(&pki, running.addr, EDGE_TOKEN, "edge/0");
    let (mut sub, _driver) = client.subscribe::<EdgeSnapshot>(StreamName::Edge).await;
    assert_eq!(*next(&mut sub).await, edge);
    sub.ack(7, Ok(()));
    let (stream, ack) = patiently("the edge ack", acks.recv()).await.unwrap();
    assert_eq!(
        (stream, ack.subscriber.as_str(), ack.version),
        (StreamName::Edge, "edge/0", 7)
    );
    running.stop().await;
}

#[tokio::test]
async fn unknown_or_missing_token_is_refused_401_and_counted() {
    let pki = pki();
    let (server, _acks) = new_server();
    server
        .publish(&acme(), &tenant_snapshot("acme", 1))
        .unwrap();
    let running = serve_on(&server, &pki, "127.0.0.1:0".parse().unwrap()).await;
    let path = acme().path();
    let a = running.addr;
    assert_eq!(
        raw(&pki, a, Method::GET, &path, Some("wrong"), "").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        raw(&pki, a, Method::GET, &path, None, "").await,
        StatusCode::UNAUTHORIZED
    );
    let ack = r#"{"stream":"tenants/acme","subscriber":"x","version":1,"ok":true}"#;
    assert_eq!(
        raw(&pki, a, Method::POST, "/v1/acks", Some("wrong"), ack).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(server.stats().unauthenticated, 3);

    let client = Client::new(&pki, a, "wrong", "router/acme/0");
    let (sub, driver) = client.subscribe::<TenantSnapshot>(acme()).await;
    let status = wait_status(&driver, "a refused connection", |s| s.failures >= 1).await;
    assert!(
        status.last_error.as_deref().unwrap_or("").contains("401"),
        "{status:?}"
    );
    assert!(sub.latest().is_none(), "no snapshot without a valid token");
    running.stop().await;
}

#[tokio::test]
async fn tenant_cannot_read_or_acknowledge_another_tenants_stream_nor_the_edge_stream() {
    let pki = pki();
    let (server, mut acks) = new_server();
    server
        .publish(&acme(), &tenant_snapshot("acme", 1))
        .unwrap();
    server
        .publish(&StreamName::Edge, &EdgeSnapshot::default())
        .unwrap();
    let running = serve_on(&server, &pki, "127.0.0.1:0".parse().unwrap()).await;
    let a = running.addr;
    let get =
        |path: &'static str, token: &'static str| raw(&pki, a, Method::GET, path, Some(token), "");
    assert_eq!(
        get("/v1/snapshots/tenants/acme", GLOBEX_TOKEN).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get("/v1/snapshots/edge", ACME_TOKEN).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get("/v1/snapshots/tenants/acme", EDGE_TOKEN).await,
        StatusCode::FORBIDDEN
    );
    let ack = r#"{"stream":"tenants/acme","subscriber":"globex/0","version":1,"ok":true}"#;
    assert_eq!(
        raw(&pki, a, Method::POST, "/v1/acks", Some(GLOBEX_TOKEN), ack).await,
        StatusCode::FORBIDDEN
    );
    // Malformed requests are refused too, and never reach the operator.
    assert_eq!(
        get("/v1/snapshots/tenants/ACME", ACME_TOKEN).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        raw(&pki, a, Method::POST, "/v1/acks", Some(ACME_TOKEN), "{").await,
        StatusCode::BAD_REQUEST
    );
    let big = format!(
        r#"{{"stream":"tenants/acme","subscriber":"a","version":1,"ok":false,"reason":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    assert_eq!(
        raw(&pki, a, Method::POST, "/v1/acks", Some(ACME_TOKEN), &big).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let stats = server.stats();
    assert_eq!((stats.forbidden, stats.bad_requests, stats.acks), (4, 3, 0));
    assert!(acks.try_recv().is_err());

    let client = Client::new(&pki, a, ACME_TOKEN, "router/acme/0");
    let (sub, driver) = client.subscribe::<EdgeSnapshot>(StreamName::Edge).await;
    let status = wait_status(&driver, "a forbidden stream", |s| s.failures >= 1).await;
    assert!(
        status.last_error.as_deref().unwrap_or("").contains("403"),
        "{status:?}"
    );
    assert!(sub.latest().is_none());

    // Its own stream and its own acknowledgements are fine.
    let own = r#"{"stream":"tenants/acme","subscriber":"router/acme/0","version":1,"ok":true}"#;
    assert_eq!(
        raw(&pki, a, Method::POST, "/v1/acks", Some(ACME_TOKEN), own).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(patiently("the ack", acks.recv()).await.unwrap().0, acme());
    running.stop().await;
}

#[tokio::test]
async fn client_keeps_its_snapshot_while_the_server_is_down_and_resumes_after_restart() {
    let pki = pki();
    let (server, _acks) = new_server();
    server
        .publish(&acme(), &tenant_snapshot("acme", 1))
        .unwrap();
    let running = serve_on(&server, &pki, "127.0.0.1:0".parse().unwrap()).await;
    let addr = running.addr;
    let client = Client::new(&pki, addr, ACME_TOKEN, "router/acme/0");
    let (mut sub, driver) = client.subscribe::<TenantSnapshot>(acme()).await;
    let first = next(&mut sub).await;
    assert_eq!(first.version, 1);
    wait_status(&driver, "the connection", |s| s.connected).await;
    // Handed over: once the data plane drops what it took, the transport holds no copy.
    let weak = Arc::downgrade(&first);
    drop(first);
    assert!(weak.upgrade().is_none(), "the transport kept the snapshot");

    running.stop().await;
    let down = wait_status(&driver, "two failed reconnections", |s| {
        !s.connected && s.failures >= 2
    })
    .await;
    assert!(down.last_error.is_some());
    assert!(
        sub.latest().is_none(),
        "nothing replaces what the data plane applied while the server is down"
    );

    // The operator comes back (a new process: new state, newer version) on the same address.
    let (server, mut acks) = new_server();
    server
        .publish(&acme(), &tenant_snapshot("acme", 2))
        .unwrap();
    let running = serve_on(&server, &pki, addr).await;
    assert_eq!(next(&mut sub).await.version, 2);
    let up = wait_status(&driver, "the reconnection", |s| s.connected).await;
    assert_eq!(up.snapshots, 2);
    sub.ack(2, Ok(()));
    assert_eq!(
        patiently("the ack after restart", acks.recv())
            .await
            .unwrap()
            .1
            .version,
        2
    );
    running.stop().await;
}

#[tokio::test]
async fn bootstrap_snapshot_is_served_while_the_server_is_down_until_the_server_answers() {
    let pki = pki();
    // An address where nothing listens yet.
    let addr = closed_port().await;
    let mut client = Client::new(&pki, addr, ACME_TOKEN, "router/acme/0");
    write_bootstrap(&client.bootstrap_path(), &tenant_snapshot("acme", 41))
        .await
        .unwrap();
    client.config.bootstrap_path = Some(client.bootstrap_path());

    let (mut sub, driver) = client.subscribe::<TenantSnapshot>(acme()).await;
    assert_eq!(
        sub.latest().map(|s| s.version),
        Some(41),
        "served before any connection"
    );
    assert_eq!(next(&mut sub).await.version, 41);
    let down = wait_status(&driver, "a failed connection", |s| s.failures >= 1).await;
    assert!(down.serving_bootstrap && !down.connected, "{down:?}");
    assert!(
        sub.latest().is_none(),
        "nothing after the bootstrap while the server is down"
    );

    let (server, _acks) = new_server();
    server
        .publish(&acme(), &tenant_snapshot("acme", 42))
        .unwrap();
    let running = serve_on(&server, &pki, addr).await;
    assert_eq!(next(&mut sub).await.version, 42);
    let up = wait_status(&driver, "the server's snapshot", |s| s.snapshots == 1).await;
    assert!(!up.serving_bootstrap);
    running.stop().await;
}

#[tokio::test]
async fn yaml_bootstrap_is_served_and_a_missing_one_is_not_an_error() {
    let pki = pki();
    let addr = closed_port().await;
    let mut client = Client::new(&pki, addr, ACME_TOKEN, "router/acme/0");
    let path = client.dir.path().join("bootstrap.yaml");
    client.config.bootstrap_path = Some(path.clone());
    let (sub, _driver) = client.subscribe::<TenantSnapshot>(acme()).await;
    assert!(sub.latest().is_none());

    let yaml = serde_yaml::to_string(&tenant_snapshot("acme", 9)).unwrap();
    std::fs::write(&path, yaml).unwrap();
    let (sub, _driver) = client.subscribe::<TenantSnapshot>(acme()).await;
    assert_eq!(sub.latest().map(|s| s.version), Some(9));
}

#[tokio::test]
async fn router_connected_before_its_first_snapshot_receives_it_when_published() {
    let pki = pki();
    let (server, _acks) = new_server();
    let running = serve_on(&server, &pki, "127.0.0.1:0".parse().unwrap()).await;
    let client = Client::new(&pki, running.addr, ACME_TOKEN, "router/acme/0");
    let (mut sub, driver) = client.subscribe::<TenantSnapshot>(acme()).await;
    wait_status(&driver, "the connection", |s| s.connected).await;
    assert!(sub.latest().is_none());
    assert_eq!(server.subscribers(&acme()), 1);
    server
        .publish(&acme(), &tenant_snapshot("acme", 1))
        .unwrap();
    assert_eq!(next(&mut sub).await.version, 1);
    running.stop().await;
}

#[tokio::test]
async fn removed_stream_ends_and_its_subscriber_comes_back_to_the_next_snapshot() {
    let pki = pki();
    let (server, _acks) = new_server();
    server
        .publish(&acme(), &tenant_snapshot("acme", 1))
        .unwrap();
    let running = serve_on(&server, &pki, "127.0.0.1:0".parse().unwrap()).await;
    let client = Client::new(&pki, running.addr, ACME_TOKEN, "router/acme/0");
    let (mut sub, driver) = client.subscribe::<TenantSnapshot>(acme()).await;
    assert_eq!(next(&mut sub).await.version, 1);

    assert!(server.remove_stream(&acme()));
    let ended = wait_status(&driver, "the stream to end", |s| s.failures >= 1).await;
    assert!(
        ended.last_error.as_deref().unwrap_or("").contains("ended"),
        "{ended:?}"
    );
    assert!(sub.latest().is_none(), "an ended stream hands nothing over");
    wait_subscribers(&server, &acme(), 1).await;

    // The same snapshot again is received but not published twice; a new one is.
    server
        .publish(&acme(), &tenant_snapshot("acme", 1))
        .unwrap();
    let again = wait_status(&driver, "the repeated snapshot", |s| s.received == 2).await;
    assert_eq!(again.snapshots, 1, "{again:?}");
    server
        .publish(&acme(), &tenant_snapshot("acme", 2))
        .unwrap();
    assert_eq!(next(&mut sub).await.version, 2);
    assert_eq!(driver.status().borrow().snapshots, 2);
    running.stop().await;
}

#[tokio::test]
async fn undecodable_snapshot_is_refused_with_its_version_and_the_last_one_kept() {
    let pki = pki();
    let (server, mut acks) = new_server();
    server
        .publish(&acme(), &tenant_snapshot("acme", 1))
        .unwrap();
    let running = serve_on(&server, &pki, "127.0.0.1:0".parse().unwrap()).await;
    let client = Client::new(&pki, running.addr, ACME_TOKEN, "router/acme/0");
    let (mut sub, driver) = client.subscribe::<TenantSnapshot>(acme()).await;
    assert_eq!(next(&mut sub).await.version, 1);

    server
        .publish(&acme(), &serde_json::json!({"version": 2, "tenant": 5}))
        .unwrap();
    let (stream, ack) = patiently("the refusal", acks.recv()).await.unwrap();
    assert_eq!((stream, ack.version), (acme(), 2));
    assert!(ack.outcome.unwrap_err().contains("cannot be decoded"));
    assert_eq!(
        wait_status(&driver, "the rejection", |s| s.rejected == 1)
            .await
            .snapshots,
        1
    );
    assert!(
        sub.latest().is_none(),
        "the refused snapshot is not handed over"
    );

    server
        .publish(&acme(), &tenant_snapshot("acme", 3))
        .unwrap();
    assert_eq!(next(&mut sub).await.version, 3);
    running.stop().await;
}

#[tokio::test]
async fn token_file_is_read_again_on_every_connection() {
    let pki = pki();
    let (server, _acks) = new_server();
    server
        .publish(&acme(), &tenant_snapshot("acme", 1))
        .unwrap();
    let running = serve_on(&server, &pki, "127.0.0.1:0".parse().unwrap()).await;
    let client = Client::new(&pki, running.addr, "not-yet-valid", "router/acme/0");
    let (mut sub, driver) = client.subscribe::<TenantSnapshot>(acme()).await;
    wait_status(&driver, "a refusal", |s| s.failures >= 1).await;
    // The kubelet rotates the projected token: the next attempt uses the new one.
    write_token(&client.config.token_path, ACME_TOKEN);
    assert_eq!(next(&mut sub).await.version, 1);
    running.stop().await;
}

fn write_token(path: &Path, token: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, token).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

#[tokio::test]
async fn invalid_configuration_is_reported_up_front() {
    let pki = pki();
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut client = Client::new(&pki, addr, ACME_TOKEN, "router/acme/0");
    client.config.ca_pem = b"not a certificate".to_vec();
    assert!(subscribe::<TenantSnapshot>(client.config.clone(), acme())
        .await
        .is_err());
    let client = Client::new(&pki, addr, ACME_TOKEN, "bad\nname");
    assert!(subscribe::<TenantSnapshot>(client.config.clone(), acme())
        .await
        .is_err());
    let client = Client::new(&pki, addr, ACME_TOKEN, "router/x/0");
    assert!(
        subscribe::<TenantSnapshot>(client.config.clone(), StreamName::Tenant("X/..".into()))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn acknowledgement_the_operator_cannot_take_is_kept_without_dropping_the_stream() {
    let pki = pki();
    let (server, acks) = new_server();
    drop(acks); // the operator is not reading acknowledgements: every one is answered 503
    server
        .publish(&acme(), &tenant_snapshot("acme", 1))
        .unwrap();
    let running = serve_on(&server, &pki, "127.0.0.1:0".parse().unwrap()).await;
    let client = Client::new(&pki, running.addr, ACME_TOKEN, "router/acme/0");
    let (mut sub, driver) = client.subscribe::<TenantSnapshot>(acme()).await;
    assert_eq!(next(&mut sub).await.version, 1);
    sub.ack(1, Ok(()));
    patiently("the refused acknowledgement", async {
        while server.stats().acks_dropped == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    server
        .publish(&acme(), &tenant_snapshot("acme", 2))
        .unwrap();
    assert_eq!(next(&mut sub).await.version, 2);
    let status = driver.status().borrow().clone();
    assert!(status.connected && status.failures == 0, "{status:?}");
    assert_eq!(server.subscribers(&acme()), 1);
    running.stop().await;
}

#[tokio::test]
async fn a_rotated_ca_file_is_read_again_before_the_next_connection_attempt() {
    let pki = pki();
    let stale = self::pki();
    let (server, _acks) = new_server();
    server
        .publish(&acme(), &tenant_snapshot("acme", 3))
        .unwrap();
    let running = serve_on(&server, &pki, "127.0.0.1:0".parse().unwrap()).await;
    // The client starts trusting a CA that did not sign the server's certificate.
    let mut client = Client::new(&stale, running.addr, ACME_TOKEN, "router/acme/0");
    let ca_path = client.dir.path().join("ca.crt");
    std::fs::write(&ca_path, &stale.ca_pem).unwrap();
    client.config.ca_path = Some(ca_path.clone());
    let (mut sub, driver) = client.subscribe::<TenantSnapshot>(acme()).await;
    let failed = wait_status(&driver, "a failed attempt", |s| s.failures > 0).await;
    assert!(!failed.connected);
    assert_eq!(failed.snapshots, 0);

    // The CA file is rotated (a new file renamed over the old, as the kubelet does).
    let tmp = client.dir.path().join("ca.crt.new");
    std::fs::write(&tmp, &pki.ca_pem).unwrap();
    std::fs::rename(&tmp, &ca_path).unwrap();
    assert_eq!(*next(&mut sub).await, tenant_snapshot("acme", 3));
    running.stop().await;
}
