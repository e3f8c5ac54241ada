//! Upstream connections: pooled HTTP/1.1 (hyper-util's keep-alive client) and HTTP/2 prior knowledge
//! (one multiplexed connection per endpoint, for gRPC and `h2c` backends).
//!
//! Pools belong to the router, not to a snapshot: a configuration swap keeps warm connections.

use crate::body::{BoxError, ProxyBody};
use crate::limits::{RouterLimits, MIN_H1_BUF_SIZE};
use bulkhead_snapshot::BackendProtocol;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpStream;

/// Why an upstream exchange failed before a response head arrived. The variants say how much of
/// the request may have reached the endpoint, which decides whether it may be sent again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// The endpoint could not be reached; nothing was sent (answered 503).
    #[error("connect to backend failed: {0}")]
    Connect(BoxError),
    /// A connection was open but closed before the request was written; nothing was sent
    /// (answered 502).
    #[error("backend connection closed before the request was sent: {0}")]
    Unsent(BoxError),
    /// The connection broke (closed, reset) after the request was at least partly written and
    /// before a response head arrived (answered 502).
    #[error("backend connection failed: {0}")]
    Broken(BoxError),
    /// The backend broke the exchange otherwise, e.g. with an invalid response head (answered 502).
    #[error("backend exchange failed: {0}")]
    Protocol(BoxError),
}

impl UpstreamError {
    /// Whether no byte of the request reached the endpoint (any request may be sent again).
    pub(crate) fn nothing_sent(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::Unsent(_))
    }

    /// Whether the connection itself failed (an idempotent request without a body may be sent
    /// again).
    pub(crate) fn connection_failed(&self) -> bool {
        !matches!(self, Self::Protocol(_))
    }

    /// Classifies an error of hyper-util's pooled HTTP/1 client. It retries a request by itself
    /// when a reused pooled connection closed before the request was written; what it returns is a
    /// connect failure, a fresh connection that closed first (hyper's `is_canceled`: the request
    /// was handed back unsent), or a failure after the request was started.
    fn from_h1(e: hyper_util::client::legacy::Error) -> Self {
        if e.is_connect() {
            return Self::Connect(Box::new(e));
        }
        let canceled = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<hyper::Error>())
            .is_some_and(hyper::Error::is_canceled);
        if canceled {
            Self::Unsent(Box::new(e))
        } else if is_connection_error(&e) {
            Self::Broken(Box::new(e))
        } else {
            Self::Protocol(Box::new(e))
        }
    }

    /// Classifies an error of a started HTTP/2 exchange. A stream the server refused
    /// (`REFUSED_STREAM`) was not processed at all (RFC 9113 section 8.7), so it counts as unsent.
    fn from_sent(e: hyper::Error) -> Self {
        if is_refused_stream(&e) {
            Self::Unsent(Box::new(e))
        } else if is_connection_error(&e) {
            Self::Broken(Box::new(e))
        } else {
            Self::Protocol(Box::new(e))
        }
    }
}

/// Whether `e` or one of its sources is an HTTP/2 `REFUSED_STREAM` reset.
fn is_refused_stream(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        current = err.source();
    }
    false
}

/// Whether `e` or one of its sources says the connection failed: hyper's "closed before the message
/// completed", "connection closed" or "canceled", or any I/O error.
fn is_connection_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return true;
            }
        }
        if err.is::<std::io::Error>() {
            return true;
        }
        current = err.source();
    }
    false
}

/// The router's upstream clients.
#[derive(Debug)]
pub(crate) struct Upstreams {
    h1: Client<HttpConnector, ProxyBody>,
    h2: H2Pool,
}

impl Upstreams {
    /// Clients configured from the router limits.
    pub(crate) fn new(limits: &RouterLimits) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(limits.upstream_connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let h1 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(limits.upstream_idle_timeout)
            .pool_max_idle_per_host(limits.upstream_max_idle_per_endpoint)
            .http1_max_buf_size(limits.upstream_max_buf_size.max(MIN_H1_BUF_SIZE))
            .set_host(false)
            .build(connector);
        Self {
            h1,
            h2: H2Pool {
                connect_timeout: limits.upstream_connect_timeout,
                keep_alive_interval: limits.h2_keep_alive_interval,
                keep_alive_timeout: limits.h2_keep_alive_timeout,
                senders: Mutex::new(HashMap::new()),
            },
        }
    }

    /// Sends `req` (whose URI must already be absolute: `http://endpoint/path` for HTTP/1,
    /// `http://host/path` for HTTP/2) to `endpoint`.
    pub(crate) async fn send(
        &self,
        protocol: BackendProtocol,
        endpoint: SocketAddr,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match protocol {
            BackendProtocol::H2c => self.h2.send(endpoint, req).await,
            BackendProtocol::Http1 | BackendProtocol::Tcp => {
                self.h1.request(req).await.map_err(UpstreamError::from_h1)
            }
        }
    }

    /// Drops pooled HTTP/2 connections to endpoints no longer configured.
    pub(crate) fn retain_h2(&self, live: &HashSet<SocketAddr>) {
        self.h2
            .senders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|addr, _| live.contains(addr));
    }
}

/// One HTTP/2 connection per endpoint, re-established when it closes.
#[derive(Debug)]
struct H2Pool {
    connect_timeout: Duration,
    keep_alive_interval: Duration,
    keep_alive_timeout: Duration,
    senders: Mutex<HashMap<SocketAddr, http2::SendRequest<ProxyBody>>>,
}

impl H2Pool {
    async fn send(
        &self,
        endpoint: SocketAddr,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let cached = self
            .senders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&endpoint)
            .filter(|s| !s.is_closed())
            .cloned();
        let mut sender = match cached {
            Some(s) => s,
            None => self.connect(endpoint).await?,
        };
        sender
            .ready()
            .await
            .map_err(|e| UpstreamError::Connect(Box::new(e)))?;
        sender.try_send_request(req).await.map_err(|mut e| {
            if e.take_message().is_some() {
                UpstreamError::Unsent(Box::new(e.into_error()))
            } else {
                UpstreamError::from_sent(e.into_error())
            }
        })
    }

    async fn connect(
        &self,
        endpoint: SocketAddr,
    ) -> Result<http2::SendRequest<ProxyBody>, UpstreamError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(endpoint))
            .await
            .map_err(|_| UpstreamError::Connect("connect timed out".into()))?
            .map_err(|e| UpstreamError::Connect(Box::new(e)))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(self.keep_alive_interval)
            .keep_alive_timeout(self.keep_alive_timeout)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Connect(Box::new(e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%endpoint, error = %e, "h2 upstream connection ended");
            }
        });
        self.senders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(endpoint, sender.clone());
        Ok(sender)
    }
}
