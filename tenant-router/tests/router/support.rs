//! Test support: a private PKI, echo backends, snapshot builders, a router under test and clients
//! that speak PROXY v2 + rustls + hyper over real loopback sockets.

use bulkhead_admin::ReadyFlag;
use bulkhead_proxy_io::{encode_v2, ProxyAddresses};
use bulkhead_router::{Router, RouterConfig, RouterError, RouterMetrics};
use bulkhead_snapshot::{Ack, Publisher};
use bulkhead_snapshot::{
    Backend, BackendProtocol, Certificate, HttpMatch, ListenerRef, PathMatch, RouteEntry, RouteRef,
    Sealed, TenantSnapshot, TlsTerminate, VirtualHost, WeightedBackend,
};
#[allow(unused_imports)] // otel.rs includes this module and needs no closed port
pub use bulkhead_test_support::net::closed_port;
use bulkhead_test_support::net::serve_each;
use bulkhead_test_support::pki::{DemoCa, LeafCert};
use bulkhead_test_support::tls;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// The client address the tests put in their PROXY headers.
pub const CLIENT_ADDR: &str = "192.0.2.10:5555";
/// The network the tests' PROXY headers come from (they play the edge).
pub const LOOPBACK_V4: &str = "127.0.0.0/8";
/// The tenant of every test.
pub const TENANT: &str = "acme";
/// How long a test waits for an acknowledgement before failing.
const ACK_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- PKI

/// A certificate issued by the test CA.
pub struct Issued {
    pub pem: Certificate,
    pub der: CertificateDer<'static>,
}

impl From<LeafCert> for Issued {
    fn from(leaf: LeafCert) -> Issued {
        let der = leaf.der();
        Issued {
            pem: Certificate {
                cert_pem: leaf.cert_pem,
                key_pem: leaf.key_pem,
            },
            der,
        }
    }
}

/// A test CA and leaf certificates for `a.acme.test` and `*.acme.test`.
pub struct Pki {
    pub exact: Issued,
    pub wildcard: Issued,
    authority: DemoCa,
}

impl Pki {
    pub fn new() -> Pki {
        let authority = DemoCa::new("acme test CA").expect("test CA");
        let issue = |names: &[&str]| Issued::from(authority.issue(names).expect("leaf"));
        Pki {
            exact: issue(&["a.acme.test"]),
            wildcard: issue(&["*.acme.test"]),
            authority,
        }
    }

    /// The test CA's certificate, PEM (also usable as a client-certificate trust anchor).
    pub fn ca_pem(&self) -> &str {
        self.authority.cert_pem()
    }

    /// A client configuration trusting the test CA, presenting a client certificate it issued,
    /// and offering `alpn`.
    pub fn client_config_presenting(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let identity = self
            .authority
            .issue(&["client.acme.test"])
            .expect("client leaf");
        tls::client_config_presenting(self.authority.cert_pem(), &identity, alpn)
    }

    /// A client configuration trusting the test CA and offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        tls::client_config(self.authority.cert_pem(), alpn)
    }
}

// ---------------------------------------------------------------- backends

/// An HTTP echo backend (HTTP/1.1 and HTTP/2 prior knowledge). It answers with a JSON description
/// of the request and the header `x-backend: <name>`. Special paths: `/slow` waits 30 s, `/delay` 300 ms, `/fail`
/// sends part of a body then breaks, `/ws` accepts an upgrade and echoes bytes.
pub struct EchoBackend {
    pub addr: SocketAddr,
    /// `METHOD path` of every request received, in order.
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl EchoBackend {
    pub async fn start(name: &str) -> EchoBackend {
        let name: Arc<str> = Arc::from(name);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let addr = serve_each(move |stream| {
            let name = Arc::clone(&name);
            let log = Arc::clone(&log);
            async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    log.lock()
                        .unwrap()
                        .push(format!("{} {}", req.method(), req.uri().path()));
                    echo(Arc::clone(&name), req)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            }
        })
        .await;
        EchoBackend { addr, seen }
    }
}

/// A body that sends one chunk, waits a moment (so the head and chunk are flushed), then fails.
struct BrokenBody {
    sent: bool,
    pause: Pin<Box<tokio::time::Sleep>>,
}

impl Body for BrokenBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.sent {
            self.sent = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"partial-")))));
        }
        match self.pause.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Some(Err("backend broke".into()))),
        }
    }
}

async fn echo(
    name: Arc<str>,
    mut req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    if path == "/delay" {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if path == "/fail" {
        let broken = BrokenBody {
            sent: false,
            pause: Box::pin(tokio::time::sleep(Duration::from_millis(50))),
        };
        let mut resp = Response::new(broken.boxed_unsync());
        resp.headers_mut()
            .insert("x-backend", name.parse().unwrap());
        return Ok(resp);
    }
    if path == "/ws" {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = upgrade.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .body(
                Full::new(Bytes::new())
                    .map_err(|e| match e {})
                    .boxed_unsync(),
            )
            .unwrap();
        return Ok(resp);
    }
    let mut headers = BTreeMap::<String, String>::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        headers
            .entry(k.as_str().to_owned())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    let description = serde_json::json!({
        "backend": &*name,
        "method": req.method().as_str(),
        "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "authority": req.uri().authority().map(|a| a.as_str()),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    });
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let mut description = description;
    description["body_len"] = body.into();
    let mut resp = Response::new(
        Full::new(Bytes::from(description.to_string()))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    resp.headers_mut()
        .insert("x-backend", name.parse().unwrap());
    resp.headers_mut()
        .insert("connection", "keep-alive".parse().unwrap());
    Ok(resp)
}

/// A raw TCP backend: reads until EOF, answers with the hex SHA-256 of everything it received.
pub async fn hashing_tcp_backend() -> SocketAddr {
    use sha2::Digest;
    serve_each(|mut s| async move {
        let mut all = Vec::new();
        if s.read_to_end(&mut all).await.is_ok() {
            let digest = hex::encode(sha2::Sha256::digest(&all));
            let _ = s.write_all(digest.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    })
    .await
}

// ---------------------------------------------------------------- snapshots

pub fn route_ref(name: &str, rule: usize) -> RouteRef {
    RouteRef {
        kind: "HTTPRoute".into(),
        namespace: TENANT.into(),
        name: name.into(),
        rule,
    }
}

pub fn weighted(backend: Option<&str>, weight: u32) -> WeightedBackend {
    WeightedBackend {
        backend: backend.map(str::to_owned),
        weight,
        filters: vec![],
    }
}

pub fn route(name: &str, path: Option<PathMatch>, backends: Vec<WeightedBackend>) -> RouteEntry {
    RouteEntry {
        route: route_ref(name, 0),
        matches: HttpMatch {
            path,
            ..Default::default()
        },
        filters: vec![],
        backends,
        timeouts: Default::default(),
    }
}

pub fn prefix(p: &str) -> Option<PathMatch> {
    Some(PathMatch::PathPrefix(p.into()))
}

pub fn vhost(hostname: &str, listener_port: u16, routes: Vec<RouteEntry>) -> VirtualHost {
    VirtualHost {
        hostname: hostname.into(),
        listener_port,
        routes,
    }
}

pub fn backend(protocol: BackendProtocol, endpoints: &[SocketAddr]) -> Backend {
    Backend {
        protocol,
        endpoints: endpoints.to_vec(),
        tls: None,
    }
}

pub fn listener_ref(port: u16) -> ListenerRef {
    ListenerRef {
        namespace: TENANT.into(),
        gateway: "gw".into(),
        listener: "https".into(),
        port,
    }
}

/// A snapshot that terminates `a.acme.test` (exact certificate, listener `https`) and
/// `*.acme.test` (wildcard certificate, listener `https-wildcard`).
pub fn base_snapshot(pki: &Pki, version: u64) -> TenantSnapshot {
    let mut s = TenantSnapshot {
        tenant: TENANT.into(),
        namespace: TENANT.into(),
        version,
        hostnames: vec!["a.acme.test".into(), "*.acme.test".into()],
        ..Default::default()
    };
    s.certificates
        .insert("acme/exact".into(), pki.exact.pem.clone());
    s.certificates
        .insert("acme/wild".into(), pki.wildcard.pem.clone());
    s.https.terminate = vec![
        TlsTerminate {
            hostname: "a.acme.test".into(),
            certificate: "acme/exact".into(),
            listener: listener_ref(443),
        },
        TlsTerminate {
            hostname: "*.acme.test".into(),
            certificate: "acme/wild".into(),
            listener: ListenerRef {
                listener: "https-wildcard".into(),
                ..listener_ref(443)
            },
        },
    ];
    s
}

/// A snapshot whose one virtual host, `a.acme.test` on the TLS listener, routes everything to
/// `backend_id` (HTTP/1.1 at `addr`).
pub fn web_snapshot(
    pki: &Pki,
    version: u64,
    backend_id: &str,
    addr: std::net::SocketAddr,
) -> TenantSnapshot {
    let mut s = base_snapshot(pki, version);
    s.backends
        .insert(backend_id.into(), backend(BackendProtocol::Http1, &[addr]));
    s.https.virtual_hosts = vec![vhost(
        "a.acme.test",
        443,
        vec![route(
            "web",
            prefix("/"),
            vec![weighted(Some(backend_id), 1)],
        )],
    )];
    s
}

pub fn sealed(mut s: TenantSnapshot) -> TenantSnapshot {
    s.seal();
    s
}

// ---------------------------------------------------------------- router under test

pub struct TestRouter {
    pub registry: prometheus_client::registry::Registry,
    pub https: SocketAddr,
    pub http: SocketAddr,
    pub ready: ReadyFlag,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<Result<(), RouterError>>>,
    publisher: Publisher<TenantSnapshot>,
    acks: mpsc::Receiver<Ack>,
}

impl TestRouter {
    /// Starts a router (PROXY headers expected) and waits until `snapshot` is served.
    pub async fn start(snapshot: TenantSnapshot) -> TestRouter {
        Self::start_with(snapshot, true).await
    }

    pub async fn start_with(snapshot: TenantSnapshot, expect_proxy: bool) -> TestRouter {
        Self::start_custom(snapshot, |c| c.expect_proxy = expect_proxy).await
    }

    /// Starts a router whose configuration `customise` may change.
    pub async fn start_custom(
        snapshot: TenantSnapshot,
        customise: impl FnOnce(&mut RouterConfig),
    ) -> TestRouter {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut config = RouterConfig::new(TENANT, any, any);
        // The tests play the edge from loopback.
        config.accept_proxy_from = vec![LOOPBACK_V4.parse().unwrap()];
        config.limits.drain_timeout = Duration::from_secs(2);
        customise(&mut config);
        let ready = ReadyFlag::new("router/acme");
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = RouterMetrics::register(&mut registry);
        let router = Router::bind(config, metrics, ready.clone()).await.unwrap();
        let (https, http) = (router.https_addr(), router.http_addr());
        let (publisher, acks) = Publisher::new();
        let subscription = publisher.subscribe("router/acme/0");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(router.run(subscription, shutdown.clone()));
        let mut r = TestRouter {
            registry,
            https,
            http,
            ready,
            shutdown,
            task: Some(task),
            publisher,
            acks,
        };
        r.publish(snapshot)
            .await
            .expect("initial snapshot accepted");
        r
    }

    /// The metrics in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }

    /// The value of the series `name` whose labels include every `labels` pair; `None` when no
    /// such series was exported.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = self.metrics_text();
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .find(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Publishes a snapshot and returns its acknowledgement.
    pub async fn publish(&mut self, snapshot: TenantSnapshot) -> Result<(), String> {
        let version = snapshot.version;
        self.publisher.publish(sealed(snapshot));
        loop {
            let ack = tokio::time::timeout(ACK_WAIT, self.acks.recv())
                .await
                .expect("acknowledgement in time")
                .expect("router alive");
            if ack.version == version {
                return ack.outcome;
            }
        }
    }
}

/// Polls `check` until it holds, for at most a few seconds (for effects that happen after a reply).
pub async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

// ---------------------------------------------------------------- clients

pub fn proxy_header() -> Vec<u8> {
    encode_v2(&ProxyAddresses {
        source: CLIENT_ADDR.parse().unwrap(),
        destination: "10.0.0.1:443".parse().unwrap(),
    })
}

/// TCP connection with the PROXY v2 header already written.
pub async fn proxied_tcp(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&proxy_header()).await.unwrap();
    s
}

/// PROXY header, then a TLS handshake with `sni`.
pub async fn tls_connect(
    pki: &Pki,
    addr: SocketAddr,
    sni: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = proxied_tcp(addr).await;
    let connector = tokio_rustls::TlsConnector::from(pki.client_config(alpn));
    connector
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
}

/// The leaf certificate the server presented.
pub fn peer_leaf(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// An HTTP client connection, either protocol.
pub enum Client {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// A response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("JSON body ({e}): {:?}", self.body))
    }

    /// The echo backend that answered.
    pub fn backend(&self) -> String {
        self.headers
            .get("x-backend")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    /// A header as the echo backend received it.
    pub fn seen_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_owned)
    }
}

impl Client {
    pub async fn h1<IO>(io: IO) -> Client
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .unwrap();
        tokio::spawn(conn.with_upgrades());
        Client::H1(sender)
    }

    pub async fn h2<IO>(io: IO) -> Client
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .unwrap();
        tokio::spawn(conn);
        Client::H2(sender)
    }

    /// Sends a request; `host` goes in `Host` (HTTP/1) or `:authority` (HTTP/2).
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> hyper::Result<Response<Incoming>> {
        match self {
            Client::H1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Client::H2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }

    pub fn request(&self, method: &str, host: &str, path: &str) -> http::request::Builder {
        match self {
            Client::H1(_) => Request::builder()
                .method(method)
                .uri(path)
                .header("host", host),
            Client::H2(_) => Request::builder()
                .method(method)
                .version(Version::HTTP_2)
                .uri(format!("https://{host}{path}")),
        }
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Reply {
        let req = self
            .request("GET", host, path)
            .body(Full::default())
            .unwrap();
        read_reply(self.send(req).await.unwrap()).await
    }
}

pub async fn read_reply(resp: Response<Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

/// An HTTP/1.1 client over TLS with `sni`.
pub async fn h1_tls(pki: &Pki, router: &TestRouter, sni: &str) -> Client {
    let tls = tls_connect(pki, router.https, sni, &[b"http/1.1"])
        .await
        .unwrap();
    Client::h1(tls).await
}

/// An HTTP/2 client over TLS with `sni` (ALPN h2).
pub async fn h2_tls(pki: &Pki, router: &TestRouter, sni: &str) -> Client {
    let tls = tls_connect(pki, router.https, sni, &[b"h2"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    Client::h2(tls).await
}

/// An HTTP/1.1 client on the plain listener.
pub async fn h1_plain(router: &TestRouter) -> Client {
    Client::h1(proxied_tcp(router.http).await).await
}
