//! One client connection to the snapshot server: TCP, TLS, HTTP/2, the stream request and
//! acknowledgement posts. Every step has a deadline; every failure is a [`SessionError`] after which
//! the client drops the connection and reconnects with backoff.

use crate::ack::AckMessage;
use crate::cert_reload::{stamp, Stamp};
use crate::frame::FrameError;
use crate::handler::SUBSCRIBER_HEADER;
use crate::limits::{
    CONNECT_TIMEOUT, H2_PING_INTERVAL, H2_PING_TIMEOUT, MAX_TOKEN_LEN, READ_IDLE_TIMEOUT,
    REQUEST_TIMEOUT, TLS_HANDSHAKE_TIMEOUT,
};
use crate::stream::{StreamName, ACKS_PATH};
use crate::tls::client_tls_config;
use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// Why a connection attempt or an open stream failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("cannot resolve {addr}: {source}")]
    Resolve { addr: String, source: io::Error },
    #[error("{0} resolves to no address")]
    NoAddress(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("connecting timed out after {CONNECT_TIMEOUT:?}")]
    ConnectTimeout,
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    #[error("TLS handshake timed out after {TLS_HANDSHAKE_TIMEOUT:?}")]
    TlsTimeout,
    #[error("HTTP/2: {0}")]
    Http(#[from] hyper::Error),
    #[error("no response within {REQUEST_TIMEOUT:?}")]
    RequestTimeout,
    #[error("token file {path}: {source}")]
    Token { path: PathBuf, source: io::Error },
    #[error("token file {0} is empty, too long or not a valid header value")]
    BadToken(PathBuf),
    #[error("cannot build request: {0}")]
    Request(#[from] http::Error),
    #[error("cannot encode acknowledgement: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("server answered {0}")]
    Status(StatusCode),
    #[error("nothing received for {READ_IDLE_TIMEOUT:?}")]
    Idle,
    #[error("server ended the stream")]
    Ended,
    #[error("corrupt stream: {0}")]
    Frame(#[from] FrameError),
}

/// What a client needs to connect, fixed for its lifetime except the trusted CAs.
pub(crate) struct Settings {
    pub(crate) addr: String,
    pub(crate) server_name: ServerName<'static>,
    pub(crate) authority: String,
    pub(crate) connector: TlsConnector,
    /// The CA bundle file, read again before a connection attempt when it changed.
    pub(crate) ca_path: Option<PathBuf>,
    /// The version of `ca_path` that `connector` trusts (`None`: not read yet).
    pub(crate) ca_stamp: Option<Stamp>,
    pub(crate) token_path: PathBuf,
    pub(crate) subscriber: HeaderValue,
}

impl Settings {
    /// Rebuilds the connector from the CA file when the file changed since it was last read. An
    /// unreadable or invalid file is logged and the CAs trusted so far stay.
    pub(crate) async fn refresh_ca(&mut self, stream: &StreamName) {
        let Some(path) = &self.ca_path else {
            return;
        };
        let now = stamp(path).await;
        if self.ca_stamp == Some(now) {
            return;
        }
        self.ca_stamp = Some(now);
        let config = match tokio::fs::read(path).await {
            Ok(pem) => client_tls_config(&pem).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match config {
            Ok(config) => {
                tracing::debug!(%stream, path = %path.display(), "snapshot server CA bundle loaded");
                self.connector = TlsConnector::from(config);
            }
            Err(error) => {
                tracing::warn!(%stream, path = %path.display(), %error, "snapshot server CA bundle unusable; keeping the CAs trusted so far");
            }
        }
    }
}

/// What the server did with one acknowledgement.
#[derive(Debug)]
pub(crate) enum AckDelivery {
    /// Accepted (2xx).
    Delivered,
    /// Refused for good (4xx): sending it again would not help.
    Refused(StatusCode),
    /// Not taken now (5xx, e.g. the operator's queue is full): send it again later.
    Retry(StatusCode),
}

/// Aborts the HTTP/2 connection task when the session ends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An open HTTP/2 connection to the server.
pub(crate) struct Connection {
    send: SendRequest<Full<Bytes>>,
    _driver: AbortOnDrop,
}

impl Connection {
    /// Resolves, connects, handshakes TLS and HTTP/2.
    pub(crate) async fn open(settings: &Settings) -> Result<Self, SessionError> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tcp_connect(&settings.addr))
            .await
            .map_err(|_| SessionError::ConnectTimeout)??;
        let _ = tcp.set_nodelay(true);
        let tls = tokio::time::timeout(
            TLS_HANDSHAKE_TIMEOUT,
            settings
                .connector
                .connect(settings.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| SessionError::TlsTimeout)?
        .map_err(SessionError::Tls)?;
        let (send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .handshake(TokioIo::new(tls))
            .await?;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "snapshot client connection ended");
            }
        });
        Ok(Self {
            send,
            _driver: AbortOnDrop(driver),
        })
    }

    /// Requests `stream`; the body of a 200 answer is the frame stream.
    pub(crate) async fn open_stream(
        &mut self,
        settings: &Settings,
        stream: &StreamName,
    ) -> Result<Incoming, SessionError> {
        let req = request(settings, Method::GET, &stream.path(), Bytes::new()).await?;
        let response = self.send(req).await?;
        if response.status() != StatusCode::OK {
            return Err(SessionError::Status(response.status()));
        }
        Ok(response.into_body())
    }

    /// Posts one acknowledgement.
    pub(crate) async fn post_ack(
        &mut self,
        settings: &Settings,
        message: &AckMessage,
    ) -> Result<AckDelivery, SessionError> {
        let body = Bytes::from(serde_json::to_vec(message)?);
        let req = request(settings, Method::POST, ACKS_PATH, body).await?;
        let status = self.send(req).await?.status();
        if status.is_success() {
            Ok(AckDelivery::Delivered)
        } else if status.is_client_error() {
            Ok(AckDelivery::Refused(status))
        } else {
            Ok(AckDelivery::Retry(status))
        }
    }

    async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, SessionError> {
        let exchange = async {
            self.send.ready().await?;
            self.send.send_request(req).await
        };
        Ok(tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| SessionError::RequestTimeout)??)
    }
}

async fn tcp_connect(addr: &str) -> Result<TcpStream, SessionError> {
    let addrs = tokio::net::lookup_host(addr)
        .await
        .map_err(|source| SessionError::Resolve {
            addr: addr.to_owned(),
            source,
        })?;
    let mut last = SessionError::NoAddress(addr.to_owned());
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(tcp) => return Ok(tcp),
            Err(source) => last = SessionError::Connect { addr: a, source },
        }
    }
    Err(last)
}

/// A request with a freshly read token: projected tokens rotate, so the file is read every time.
async fn request(
    settings: &Settings,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, SessionError> {
    let token = read_token(settings).await?;
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("https://{}{path}", settings.authority))
        .header(AUTHORIZATION, token)
        .header(SUBSCRIBER_HEADER, settings.subscriber.clone());
    if !body.is_empty() {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    Ok(builder.body(Full::new(body))?)
}

async fn read_token(settings: &Settings) -> Result<HeaderValue, SessionError> {
    let path = &settings.token_path;
    let raw = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| SessionError::Token {
            path: path.clone(),
            source,
        })?;
    let token = raw.trim();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(SessionError::BadToken(path.clone()));
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| SessionError::BadToken(path.clone()))?;
    value.set_sensitive(true);
    Ok(value)
}
