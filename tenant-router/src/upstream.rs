//! Upstream connections: pooled HTTP/1.1 (hyper-util's keep-alive client) and HTTP/2 prior knowledge
//! (one multiplexed connection per endpoint, for gRPC and `h2c` backends).
//!
//! Pools belong to the router, not to a snapshot: a configuration swap keeps warm connections.

use crate::body::{BoxError, ProxyBody};
use crate::limits::RouterLimits;
use bulkhead_crds::snapshot::BackendProtocol;
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

/// Why an upstream exchange failed before a response head arrived.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// The endpoint could not be reached (answered 503).
    #[error("connect to backend failed: {0}")]
    Connect(BoxError),
    /// The backend broke the exchange (answered 502).
    #[error("backend exchange failed: {0}")]
    Protocol(BoxError),
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
                self.h1.request(req).await.map_err(|e| {
                    if e.is_connect() {
                        UpstreamError::Connect(Box::new(e))
                    } else {
                        UpstreamError::Protocol(Box::new(e))
                    }
                })
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
        sender
            .send_request(req)
            .await
            .map_err(|e| UpstreamError::Protocol(Box::new(e)))
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
