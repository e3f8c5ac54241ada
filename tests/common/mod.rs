//! Shared harness of the end-to-end tests: runs the real `bulkhead standalone` binary on loopback
//! with a manifest directory the test writes, real demo backends, and real HTTP and TLS clients.
#![allow(dead_code)]

#[path = "../../src/demo.rs"]
pub mod demo;
// The shared fixtures under the names the tests use (each test binary uses some of them).
#[allow(unused_imports)]
pub use bulkhead_test_support::{
    manifests::{gateway_yaml, route_yaml, service_yaml, tenant_yaml, tls_passthrough_yaml},
    net::{connect_from, echo, serve_each},
    pki,
    tls::{
        client_config as tls_client_config, first_flight, serve_tls_each,
        server_config as tls_server_config, ALERT_DECODE_ERROR, ALERT_UNRECOGNIZED_NAME,
    },
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How long a test waits for a configuration change to be visible before failing.
pub const SETTLE: Duration = Duration::from_secs(15);

/// A running `bulkhead standalone`.
pub struct Standalone {
    child: Child,
    /// The manifest directory.
    pub dir: tempfile::TempDir,
    /// Plain HTTP listener.
    pub http: SocketAddr,
    /// TLS listener.
    pub https: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let [addr] = free_addrs();
    addr
}

/// `N` distinct loopback addresses whose ports were free a moment ago: all are held while the
/// next is picked, so the kernel cannot hand out the same port twice (which separate
/// [`free_addr`] calls can, since each port is released at once).
pub fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().expect("local addr"))
}

impl Standalone {
    /// Writes `files` into a fresh manifest directory and starts the binary on it.
    pub async fn start(files: &[(&str, String)]) -> Self {
        Self::start_with_env(files, &[]).await
    }

    /// [`Standalone::start`] with extra environment variables for the process.
    ///
    /// The listen ports are picked free and released before the process binds them, so another
    /// process can take one meanwhile (a parallel test's router binding an ephemeral port): a
    /// start that fails for that reason alone is tried again on other ports.
    pub async fn start_with_env(files: &[(&str, String)], env: &[(&str, &str)]) -> Self {
        let mut dir = tempfile::tempdir().expect("tempdir");
        for (name, content) in files {
            write_file(dir.path(), name, content);
        }
        for attempt in 1.. {
            let mut s = Self::spawn(dir, env);
            if s.ready().await {
                return s;
            }
            let lost_a_port = s.child.try_wait().ok().flatten().is_some()
                && s.log().contains("Address already in use");
            assert!(
                lost_a_port && attempt < 3,
                "standalone never became ready; log:\n{}",
                s.log()
            );
            dir = std::mem::replace(&mut s.dir, tempfile::tempdir().expect("tempdir"));
        }
        unreachable!("the loop returns or fails")
    }

    /// Starts the binary on the manifests in `dir`, on ports free a moment ago.
    fn spawn(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Self {
        let log_dir = tempfile::tempdir().expect("tempdir");
        let log = log_dir.path().join("bulkhead.log");
        let [http, https, admin] = free_addrs();
        let child = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
            .args(["standalone", "--manifests"])
            .arg(dir.path())
            .args(["--http-listen", &http.to_string()])
            .args(["--https-listen", &https.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn bulkhead standalone");
        Self {
            child,
            dir,
            http,
            https,
            admin,
            log,
            _log_dir: log_dir,
        }
    }

    /// The process id of `bulkhead standalone` (to read its memory use from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether `/readyz` answers 200 within the settle time (`false` at once if the process
    /// exited).
    async fn ready(&mut self) -> bool {
        let child = &mut self.child;
        let admin = self.admin;
        let answered = eventually(SETTLE, || {
            let exited = child.try_wait().ok().flatten().is_some();
            async move {
                if exited {
                    return Some(false);
                }
                let (status, _, _) = http_get(admin, "admin", "/readyz").await.ok()?;
                (status == 200).then_some(true)
            }
        })
        .await;
        answered == Some(true)
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        let (_, _, body) = http_get(self.admin, "admin", "/status")
            .await
            .expect("GET /status");
        serde_json::from_str(&body).expect("status is JSON")
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> String {
        http_get(self.admin, "admin", "/metrics")
            .await
            .expect("GET /metrics")
            .2
    }

    /// Writes (creates or replaces atomically) a manifest file.
    pub fn write(&self, name: &str, content: &str) {
        write_file(self.dir.path(), name, content);
    }

    /// Deletes a manifest file.
    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.path().join(name)).expect("remove manifest");
    }

    /// Finds the status item of one object.
    pub async fn object_status(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<serde_json::Value> {
        let doc = self.status().await;
        doc["items"]
            .as_array()?
            .iter()
            .find(|i| {
                i["kind"] == kind
                    && i["metadata"]["name"] == name
                    && (i["metadata"]["namespace"] == namespace || namespace.is_empty())
            })
            .map(|i| i["status"].clone())
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a file atomically (temp file + rename), creating parent folders.
pub fn write_file(dir: &Path, name: &str, content: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create dirs");
    }
    let tmp = dir.join(format!(".{}.tmp", name.replace('/', "_")));
    std::fs::write(&tmp, content).expect("write manifest");
    std::fs::rename(&tmp, &path).expect("rename manifest");
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A parsed demo-backend answer: `backend: NAME` and friends.
pub fn answer_field(body: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}: ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
}

/// Sends one HTTP/1.1 GET over a new connection to `addr` with the given Host.
pub async fn http_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<(u16, http::HeaderMap, String), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    request_over(stream, host, path).await
}

async fn request_over<S>(
    stream: S,
    host: &str,
    path: &str,
) -> Result<(u16, http::HeaderMap, String), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    send_on(&mut sender, "GET", host, path, &[]).await
}

/// A TLS client that trusts `ca_pem` and offers the given ALPN protocols.
pub fn tls_connector(ca_pem: &str, alpn: &[&[u8]]) -> TlsConnector {
    TlsConnector::from(tls_client_config(ca_pem, alpn))
}

/// Opens a TLS connection to `addr` with SNI `sni`.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    tokio::time::timeout(
        Duration::from_secs(10),
        tls_connector(ca_pem, alpn).connect(name, stream),
    )
    .await
    .map_err(|_| "TLS handshake timeout".to_string())?
    .map_err(|e| e.to_string())
}

/// One HTTPS GET over HTTP/1.1 with SNI and Host `host`.
pub async fn https_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    ca_pem: &str,
) -> Result<(u16, http::HeaderMap, String), String> {
    let tls = tls_connect(addr, host, ca_pem, &[b"http/1.1"]).await?;
    request_over(tls, host, path).await
}

/// An HTTP/2 connection over TLS with SNI `sni` (ALPN h2 offered), and the negotiated ALPN.
pub async fn h2_connect(
    addr: SocketAddr,
    sni: &str,
    ca_pem: &str,
) -> Result<
    (
        hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
        Option<Vec<u8>>,
    ),
    String,
> {
    let tls = tls_connect(addr, sni, ca_pem, &[b"h2"]).await?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok((sender, alpn))
}

/// What a gRPC client sees of one unary call's answer.
#[derive(Debug)]
pub struct GrpcAnswer {
    /// HTTP status.
    pub status: u16,
    /// Response headers (a trailers-only answer carries `grpc-status` here).
    pub headers: http::HeaderMap,
    /// Whether the HEADERS frame ended the stream (a trailers-only response).
    pub trailers_only: bool,
    /// The response body.
    pub body: Bytes,
}

/// One unary gRPC call (an empty message) to `path`, as a gRPC client sends it: an HTTP/2 POST
/// with `content-type: application/grpc` and `te: trailers`, over TLS to `addr` with SNI and
/// `:authority` `authority` and ALPN `h2`.
pub async fn grpc_unary(
    addr: SocketAddr,
    authority: &str,
    ca_pem: &str,
    path: &str,
) -> Result<GrpcAnswer, String> {
    use hyper::body::Body as _;
    let (mut sender, _) = h2_connect(addr, authority, ca_pem).await?;
    let req = http::Request::post(format!("https://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let trailers_only = resp.body().is_end_stream();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(GrpcAnswer {
        status,
        headers,
        trailers_only,
        body: body.to_bytes(),
    })
}

/// One HTTPS GET over HTTP/2 (ALPN h2); returns status, body and the negotiated ALPN.
pub async fn https_get_h2(
    addr: SocketAddr,
    host: &str,
    path: &str,
    ca_pem: &str,
) -> Result<(u16, String, Option<Vec<u8>>), String> {
    let (mut sender, alpn) = h2_connect(addr, host, ca_pem).await?;
    let (status, body) = h2_get_on(&mut sender, host, path).await?;
    Ok((status, body, alpn))
}

/// One GET for `https://{authority}{path}` on an open HTTP/2 connection: status and body.
pub async fn h2_get_on(
    sender: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    authority: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let req = http::Request::get(format!("https://{authority}{path}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let (status, _, body) = answer_of(resp).await?;
    Ok((status, body))
}

/// The DNS names in the leaf certificate the server presented.
pub fn peer_leaf_der<S>(tls: &tokio_rustls::client::TlsStream<S>) -> Vec<u8> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default()
}

/// Starts a demo backend named `name` on an ephemeral loopback port.
pub async fn backend(name: &str) -> SocketAddr {
    let token = tokio_util::sync::CancellationToken::new();
    let addr = demo::spawn(
        "127.0.0.1:0".parse().expect("addr"),
        name.to_owned(),
        token.clone(),
    )
    .await
    .expect("demo backend");
    // Never cancelled: the backend lives as long as the test process.
    drop(token);
    addr
}

/// The two-tenant world (`bulkhead_test_support::manifests::TwoTenants`) running in
/// `bulkhead standalone`, each tenant's `web` a demo backend (`acme-web`, `globex-web`).
pub struct TwoTenants {
    /// The running process.
    pub bh: Standalone,
    /// acme's CA, PEM.
    pub acme_ca: String,
    /// globex's CA, PEM.
    pub globex_ca: String,
}

/// Starts the two-tenant world and waits until both tenants serve `www.<tenant>.test` over HTTPS.
pub async fn two_tenants() -> TwoTenants {
    two_tenants_with_env(&[]).await
}

/// [`two_tenants`] with extra environment variables for the process.
pub async fn two_tenants_with_env(env: &[(&str, &str)]) -> TwoTenants {
    let world = bulkhead_test_support::manifests::TwoTenants::new(
        backend("acme-web").await,
        backend("globex-web").await,
    )
    .expect("two-tenant manifests");
    let bh = Standalone::start_with_env(&world.file_refs(), env).await;
    let (acme_ca, globex_ca) = (world.acme_ca.cert_pem(), world.globex_ca.cert_pem());
    for (host, ca) in [("www.acme.test", acme_ca), ("www.globex.test", globex_ca)] {
        let served = eventually(SETTLE, || async {
            let (status, _, _) = https_get(bh.https, host, "/", ca).await.ok()?;
            (status == 200).then_some(())
        })
        .await;
        assert!(served.is_some(), "{host} never served\n{}", bh.log());
    }
    TwoTenants {
        bh,
        acme_ca: acme_ca.to_owned(),
        globex_ca: globex_ca.to_owned(),
    }
}

/// An HTTP/1.1 keep-alive connection that stays open across requests.
pub struct KeepAlive {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl KeepAlive {
    /// Connects to `addr` (plain HTTP).
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Self::over(stream).await.expect("HTTP/1.1 handshake")
    }

    /// An HTTP/1.1 connection over an open stream (plain or TLS).
    pub async fn over<S>(stream: S) -> Result<Self, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(Self { sender })
    }

    /// One request on the open connection.
    pub async fn get(&mut self, host: &str, path: &str) -> Result<(u16, String), String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection closed: {e}"))?;
        let req = http::Request::get(path)
            .header(http::header::HOST, host)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

// ---- Gateway API conformance helpers (tests/gateway_api_*.rs) ------------------------------------

/// An HTTP answer: status, headers and body.
pub type Answer = (u16, http::HeaderMap, String);

/// Sends one HTTP/1.1 request with a method, a Host and extra headers over `stream`.
pub async fn send_request_over<S>(
    stream: S,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    send_on(&mut sender, method, host, path, headers).await
}

/// Sends one request on an open HTTP/1.1 connection.
async fn send_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection closed: {e}"))?;
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    answer_of(resp).await
}

/// One plain HTTP/1.1 request with `method`, Host `host` and extra `headers`, on a new connection.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    send_request_over(stream, method, host, path, headers).await
}

/// Opens one TLS connection with SNI `sni` and sends a GET for each `(host, path)` on it, in order;
/// stops at the first transport error (the answers so far are returned with it).
pub async fn https_gets_on_one_connection(
    addr: SocketAddr,
    sni: &str,
    ca_pem: &str,
    requests: &[(&str, &str)],
) -> (Vec<Answer>, Option<String>) {
    let tls = match tls_connect(addr, sni, ca_pem, &[b"http/1.1"]).await {
        Ok(t) => t,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(tls)).await {
        Ok(x) => x,
        Err(e) => return (Vec::new(), Some(e.to_string())),
    };
    tokio::spawn(conn);
    let mut answers = Vec::new();
    for (host, path) in requests {
        match send_on(&mut sender, "GET", host, path, &[]).await {
            Ok(a) => answers.push(a),
            Err(e) => return (answers, Some(e)),
        }
    }
    (answers, None)
}

/// Every value of header `name` the demo backend echoed (`header NAME: VALUE` lines), in order.
pub fn echoed_header(body: &str, name: &str) -> Vec<String> {
    let prefix = format!("header {}: ", name.to_ascii_lowercase());
    body.lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

/// The condition `kind` of the first `status.parents[]` entry of a route status, or `Null`.
pub fn parent_condition(status: &serde_json::Value, kind: &str) -> serde_json::Value {
    status["parents"][0]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .cloned()
        .unwrap_or_default()
}

// ---- raw TLS clients (edge sniffing tests) ----------------------------------------------------

/// Re-frames one TLS record (`flight` must be exactly one handshake record) into `parts` records
/// carrying the same handshake bytes, with the same content type and record version.
pub fn split_into_records(flight: &[u8], parts: usize) -> Vec<u8> {
    assert!(flight.len() > 5 && flight[0] == 0x16, "a handshake record");
    let len = usize::from(u16::from_be_bytes([flight[3], flight[4]]));
    assert_eq!(flight.len(), 5 + len, "the flight is exactly one record");
    let payload = &flight[5..];
    let chunk = payload.len().div_ceil(parts);
    let mut out = Vec::new();
    for piece in payload.chunks(chunk) {
        out.extend_from_slice(&flight[..3]);
        let n = u16::try_from(piece.len()).expect("record fits");
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(piece);
    }
    out
}

/// Blocking: connects to `addr`, lets `send_hello` deliver the first flight of `conn` however it
/// likes, then completes the handshake and sends `GET path` with Host `host` and
/// `Connection: close`. Returns the whole response (head and body) as text.
pub fn https_get_with_hello(
    addr: SocketAddr,
    conn: rustls::ClientConnection,
    send_hello: impl FnOnce(&mut std::net::TcpStream) -> std::io::Result<()>,
    host: &str,
    path: &str,
) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(SETTLE))
        .map_err(|e| e.to_string())?;
    send_hello(&mut sock).map_err(|e| format!("sending the hello: {e}"))?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("handshake or request: {e}"))?;
    tls.flush().map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            // A peer that closes without close_notify after a complete answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {
                break
            }
            Err(e) => return Err(format!("reading the response: {e}")),
        }
    }
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// Writes `bytes` one per TCP segment (Nagle off, a pause after each), spreading them over at
/// most `budget` in total.
pub fn write_bytewise(
    sock: &mut std::net::TcpStream,
    bytes: &[u8],
    budget: Duration,
) -> std::io::Result<()> {
    use std::io::Write;
    sock.set_nodelay(true)?;
    let pause = (budget / u32::try_from(bytes.len().max(1)).unwrap_or(u32::MAX))
        .min(Duration::from_millis(2));
    for b in bytes {
        sock.write_all(std::slice::from_ref(b))?;
        sock.flush()?;
        std::thread::sleep(pause);
    }
    Ok(())
}

/// How a raw connection ended when read to its end.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// The peer closed (FIN) after sending these bytes.
    Closed(Vec<u8>),
    /// The peer reset the connection after these bytes.
    Reset(Vec<u8>),
    /// Still open after the wait, with these bytes received.
    Open(Vec<u8>),
}

impl Ending {
    /// The bytes received, however it ended.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Ending::Closed(b) | Ending::Reset(b) | Ending::Open(b) => b,
        }
    }
}

/// Reads `stream` until the peer closes or resets it, or `wait` passes.
pub async fn read_to_close(stream: &mut TcpStream, wait: Duration) -> Ending {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => return true,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(_) => return false,
            }
        }
    };
    match tokio::time::timeout(wait, read).await {
        Ok(true) => Ending::Closed(got),
        Ok(false) => Ending::Reset(got),
        Err(_) => Ending::Open(got),
    }
}

/// One raw HTTP/2 frame: the 9-byte header and `payload` (for tests that send what a client
/// library would not).
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .expect("frame length")
        .to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A response's status, headers and body (lossy UTF-8), read to the end.
pub async fn answer_of(resp: http::Response<hyper::body::Incoming>) -> Result<Answer, String> {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}
