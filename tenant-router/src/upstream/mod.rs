//! Upstream connections: pooled HTTP/1.1 keep-alive connections ([`h1_pool`]), each exchange run in
//! the request's own task ([`h1_conn`]), and HTTP/2 prior knowledge (one multiplexed hyper
//! connection per endpoint, [`h2_pool`], for gRPC and `h2c` backends).
//!
//! Pools belong to the router, not to a snapshot: a configuration swap keeps warm connections.
//! Connections are pooled per [`PoolKey`]: endpoint and, for a backend with TLS ([`tls`]), the
//! identity of its TLS settings.

mod h1_conn;
mod h1_pool;
mod h2_pool;
pub(crate) mod tls;

use crate::body::{BoxError, ProxyBody};
use crate::limits::{RouterLimits, MIN_H1_BUF_SIZE};
use bulkhead_snapshot::BackendProtocol;
use hyper::{Request, Response};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_util::either::Either;

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
    /// The TLS handshake with the backend failed (certificate refused, handshake refused) or its
    /// TLS is not usable; nothing was sent (answered 502).
    #[error("backend TLS failed: {0}")]
    Tls(BoxError),
}

impl UpstreamError {
    /// Whether no byte of the request reached the endpoint (any request may be sent again).
    pub(crate) fn nothing_sent(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::Unsent(_) | Self::Tls(_))
    }

    /// Whether the connection itself failed (an idempotent request without a body may be sent
    /// again).
    pub(crate) fn connection_failed(&self) -> bool {
        !matches!(self, Self::Protocol(_))
    }

    /// Classifies an error of a started exchange. An HTTP/2 stream the server refused
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

/// Opens a TCP connection to `endpoint` and, for a TLS backend, runs the handshake, all within
/// `timeout`.
async fn connect_stream(
    endpoint: SocketAddr,
    tls: Option<&Arc<tls::UpstreamTls>>,
    timeout: std::time::Duration,
) -> Result<MaybeTls, UpstreamError> {
    let connect = async {
        let stream = tokio::net::TcpStream::connect(endpoint)
            .await
            .map_err(|e| UpstreamError::Connect(Box::new(e)))?;
        let _ = stream.set_nodelay(true);
        match tls {
            None => Ok(Either::Left(stream)),
            Some(tls) => match tls.handshake(stream).await {
                Ok(s) => Ok(Either::Right(Box::new(s))),
                Err(e) => {
                    tracing::warn!(%endpoint, error = %e, "backend TLS handshake failed");
                    Err(e)
                }
            },
        }
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| UpstreamError::Connect("connect timed out".into()))?
}

/// A backend connection: plain TCP or TLS over it.
pub(crate) type MaybeTls =
    Either<tokio::net::TcpStream, Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>;

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

/// Whether an exchange with `protocol` hands back the head of a request it failed to get an
/// answer to (so that retrying it needs no copy made beforehand).
pub(crate) fn returns_unanswered_head(protocol: BackendProtocol) -> bool {
    matches!(protocol, BackendProtocol::Http1 | BackendProtocol::Tcp)
}

/// What a pooled connection is kept under: the endpoint and, for TLS, how it was set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    /// The endpoint address.
    pub(crate) endpoint: SocketAddr,
    /// `None` for plaintext.
    pub(crate) tls: Option<tls::TlsIdentity>,
}

/// The router's upstream clients: a pool of connections per worker (see
/// [`bulkhead_net::workers`]), so that a request and the upstream connection it is sent on are
/// served by the same thread.
#[derive(Debug)]
pub(crate) struct Upstreams {
    per_worker: Box<[Pools]>,
}

/// One worker's upstream connections.
#[derive(Debug)]
struct Pools {
    h1: Arc<h1_pool::H1Pool>,
    h2: h2_pool::H2Pool,
}

impl Upstreams {
    /// Clients configured from the router limits, for `workers` workers (at least one).
    pub(crate) fn new(limits: &RouterLimits, workers: usize) -> Self {
        let pools = || Pools {
            h1: Arc::new(h1_pool::H1Pool::new(h1_pool::H1Settings {
                connect_timeout: limits.upstream_connect_timeout,
                idle_timeout: limits.upstream_idle_timeout,
                max_idle_per_endpoint: limits.upstream_max_idle_per_endpoint,
                max_buf_size: limits.upstream_max_buf_size.max(MIN_H1_BUF_SIZE),
            })),
            h2: h2_pool::H2Pool {
                connect_timeout: limits.upstream_connect_timeout,
                keep_alive_interval: limits.h2_keep_alive_interval,
                keep_alive_timeout: limits.h2_keep_alive_timeout,
                senders: Mutex::new(HashMap::default()),
            },
        };
        Self {
            per_worker: (0..workers.max(1)).map(|_| pools()).collect(),
        }
    }

    /// The calling worker's pools (the first on any other thread).
    fn pools(&self) -> &Pools {
        self.per_worker
            .get(bulkhead_net::workers::index())
            .unwrap_or(&self.per_worker[0])
    }

    /// Sends `req` (whose URI must already be absolute: `http://endpoint/path` for HTTP/1,
    /// `http://host/path` for HTTP/2) to `endpoint`, over TLS when `tls` is set.
    ///
    /// Not an `async fn`: that would keep its own copy of `req` beside the one in the protocol's
    /// future, and this future is held by every forwarding phase above it.
    ///
    /// `extra` are field lines (`name: value` and CRLF each) an HTTP/1.1 upstream writes after
    /// the request's own fields; an HTTP/2 request carries every field in its map (`extra` must be
    /// empty).
    ///
    /// When the exchange fails before a response head, an HTTP/1.1 upstream puts the request's
    /// head and `extra` in `unanswered` (see [`returns_unanswered_head`]); HTTP/2 does not.
    pub(crate) fn send<'a>(
        &'a self,
        protocol: BackendProtocol,
        tls: Option<&'a Arc<tls::UpstreamTls>>,
        endpoint: SocketAddr,
        req: Request<ProxyBody>,
        extra: bytes::Bytes,
        unanswered: &'a mut Option<Unanswered>,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + Send + 'a {
        use futures::FutureExt;
        let pools = self.pools();
        match protocol {
            BackendProtocol::H2c => Either::Left({
                debug_assert!(extra.is_empty(), "HTTP/2 fields go in the map");
                pools
                    .h2
                    .send(endpoint, tls, req)
                    .map(|sent| sent.map(|resp| resp.map(crate::body::boxed)))
            }),
            BackendProtocol::Http1 | BackendProtocol::Tcp => Either::Right(h1_pool::send(
                &pools.h1, endpoint, tls, req, extra, unanswered,
            )),
        }
    }

    /// Drops pooled connections to endpoints no longer configured (whatever their TLS identity).
    pub(crate) fn retain(&self, live: &HashSet<SocketAddr>) {
        for pools in &*self.per_worker {
            pools.h1.retain(live);
            pools.h2.retain(live);
        }
    }
}

/// A request head an exchange got no answer to, and the field lines written after it.
pub(crate) type Unanswered = (http::request::Parts, bytes::Bytes);

/// The backend side of a switched protocol (a 101 answer): the connection, the bytes already read
/// past the 101 head first.
pub(crate) type Upgraded = bulkhead_proxy_io::Rewind<MaybeTls>;

/// A 101 response's connection, in the response's extensions until the tunnel takes it.
#[derive(Clone)]
pub(crate) struct UpstreamUpgrade(Arc<Mutex<Option<Upgraded>>>);

impl UpstreamUpgrade {
    fn new(upgraded: Upgraded) -> Self {
        Self(Arc::new(Mutex::new(Some(upgraded))))
    }

    /// Takes the connection (once).
    pub(crate) fn take(&self) -> Option<Upgraded> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// A backend's response body, boxed where it is made: an HTTP/1.1 body (read by the request's own
/// task, the connection going back to its pool at the body's end) or an HTTP/2 stream. Boxed at
/// once because the response moves through every forwarding phase, and with its body inline
/// it would be 360 bytes to copy each time (the body is boxed for the client in any case).
pub(crate) type UpstreamBody = ProxyBody;
