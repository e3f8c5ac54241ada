//! Shared harness of the end-to-end tests: runs the real `bulkhead standalone` binary on loopback
//! with a manifest directory the test writes, real demo backends, and real HTTP and TLS clients.
#![allow(dead_code)]

#[path = "../../src/demo.rs"]
pub mod demo;
#[path = "../../src/pki.rs"]
pub mod pki;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
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
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr")
}

impl Standalone {
    /// Writes `files` into a fresh manifest directory and starts the binary on it.
    pub async fn start(files: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, content) in files {
            write_file(dir.path(), name, content);
        }
        let log_dir = tempfile::tempdir().expect("tempdir");
        let log = log_dir.path().join("bulkhead.log");
        let (http, https, admin) = (free_addr(), free_addr(), free_addr());
        let child = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
            .args(["standalone", "--manifests"])
            .arg(dir.path())
            .args(["--http-listen", &http.to_string()])
            .args(["--https-listen", &https.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn bulkhead standalone");
        let s = Self {
            child,
            dir,
            http,
            https,
            admin,
            log,
            _log_dir: log_dir,
        };
        s.wait_ready().await;
        s
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let ok = eventually(SETTLE, || async {
            let (status, _, _) = http_get(self.admin, "admin", "/readyz").await.ok()?;
            (status == 200).then_some(())
        })
        .await;
        assert!(
            ok.is_some(),
            "standalone never became ready; log:\n{}",
            self.log()
        );
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
    let req = http::Request::get(path)
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
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

/// A TLS client that trusts `ca_pem` and offers the given ALPN protocols.
pub fn tls_connector(ca_pem: &str, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let mut reader = std::io::BufReader::new(ca_pem.as_bytes());
    for cert in rustls_pemfile_certs(&mut reader) {
        roots.add(cert).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

fn rustls_pemfile_certs(reader: &mut dyn std::io::BufRead) -> Vec<CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    let mut all = Vec::new();
    let _ = reader.read_to_end(&mut all);
    CertificateDer::pem_slice_iter(&all)
        .filter_map(Result::ok)
        .collect()
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

/// One HTTPS GET over HTTP/2 (ALPN h2); returns status, body and the negotiated ALPN.
pub async fn https_get_h2(
    addr: SocketAddr,
    host: &str,
    path: &str,
    ca_pem: &str,
) -> Result<(u16, String, Option<Vec<u8>>), String> {
    let tls = tls_connect(addr, host, ca_pem, &[b"h2"]).await?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let uri = format!("https://{host}{path}");
    let req = http::Request::get(uri)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned(), alpn))
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

// ---- manifest builders ------------------------------------------------------------------------

/// A Namespace and a Tenant owning `hostnames`.
pub fn tenant_yaml(name: &str, hostnames: &[&str]) -> String {
    let hosts: Vec<String> = hostnames.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n---\napiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata:\n  name: {name}\nspec:\n  namespace: {name}\n  hostnames: [{}]\n",
        hosts.join(", ")
    )
}

/// A Gateway with an HTTP listener on 80 and, when `secret` is given, an HTTPS listener on 443.
pub fn gateway_yaml(ns: &str, hostname: &str, secret: Option<&str>) -> String {
    let mut s = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  namespace: {ns}\n  name: gw\nspec:\n  gatewayClassName: bulkhead\n  listeners:\n  - name: http\n    protocol: HTTP\n    port: 80\n    hostname: \"{hostname}\"\n"
    );
    if let Some(secret) = secret {
        s.push_str(&format!(
            "  - name: https\n    protocol: HTTPS\n    port: 443\n    hostname: \"{hostname}\"\n    tls:\n      mode: Terminate\n      certificateRefs:\n      - name: {secret}\n"
        ));
    }
    s
}

/// An HTTPRoute sending `path` (PathPrefix) on `hostnames` to Service `svc` port 80.
pub fn route_yaml(ns: &str, name: &str, hostnames: &[&str], path: &str, svc: &str) -> String {
    let hosts: Vec<String> = hostnames.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  namespace: {ns}\n  name: {name}\nspec:\n  parentRefs:\n  - name: gw\n  hostnames: [{}]\n  rules:\n  - matches:\n    - path: {{type: PathPrefix, value: \"{path}\"}}\n    backendRefs:\n    - name: {svc}\n      port: 80\n",
        hosts.join(", ")
    )
}

/// A Service (port 80, name http) and an EndpointSlice pointing at `addr`.
pub fn service_yaml(ns: &str, svc: &str, addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  namespace: {ns}\n  name: {svc}\nspec:\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  namespace: {ns}\n  name: {svc}-1\n  labels:\n    kubernetes.io/service-name: {svc}\naddressType: IPv4\nports:\n- name: http\n  port: {}\nendpoints:\n- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n",
        addr.port(),
        addr.ip()
    )
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

/// An HTTP/1.1 keep-alive connection that stays open across requests.
pub struct KeepAlive {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl KeepAlive {
    /// Connects to `addr` (plain HTTP).
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(conn);
        Self { sender }
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
