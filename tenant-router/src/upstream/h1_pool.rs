//! HTTP/1.1 upstreams: a keep-alive pool of backend connections per endpoint, owned by the router.
//!
//! A request takes an idle connection that is still usable (or opens one) and runs its exchange
//! on it in its own task ([`h1_conn`](super::h1_conn)); the connection comes back when the
//! response body has been read to its end and the request written whole. Nothing is spawned per
//! request or per connection, and no channel sits between the request and its connection.

use super::h1_conn::{self, Failed, H1Body, H1Conn, Home, Sending};
use super::tls::UpstreamTls;
use super::{connect_stream, PoolKey, Unanswered, UpstreamBody, UpstreamError, UpstreamUpgrade};
use crate::body::ProxyBody;
use bulkhead_h1_wire::{ResponseLimits, MAX_HEADERS};
use bytes::Bytes;
use hyper::{Request, Response, StatusCode};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

/// Shortest interval between two sweeps for idle connections past their idle timeout.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// How the pool connects and how long it keeps idle connections.
#[derive(Debug, Clone, Copy)]
pub(super) struct H1Settings {
    /// Bound on establishing the connection (TCP, and the TLS handshake for a TLS backend).
    pub(super) connect_timeout: Duration,
    /// An idle connection older than this is closed.
    pub(super) idle_timeout: Duration,
    /// Idle connections kept per endpoint (0: no keep-alive reuse).
    pub(super) max_idle_per_endpoint: usize,
    /// Most bytes of a response head (and of a chunked body's trailer section).
    pub(super) max_buf_size: usize,
}

/// One idle connection.
struct Idle {
    conn: H1Conn,
    since: Instant,
}

/// Idle connections by pool key, newest last; keyed by configured endpoints (foldhash: a lookup
/// per request and one per release).
type IdleMap = HashMap<PoolKey, Vec<Idle>, foldhash::fast::RandomState>;

/// Idle HTTP/1.1 connections per endpoint, newest last.
pub(super) struct H1Pool {
    settings: H1Settings,
    idle: Mutex<IdleMap>,
    sweeping: AtomicBool,
}

impl std::fmt::Debug for H1Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Pool")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Sends `req`, with the field lines `extra` after its own, to `endpoint` (over TLS when `tls` is
/// set) on a pooled connection of the same TLS identity, or a new one. A request that could not be written at all on a pooled connection
/// (closed meanwhile) is sent again on another; one a fresh connection could not take is an
/// [`UpstreamError::Unsent`]. On any failure the request's head and `extra` are put in
/// `unanswered`, for
/// another attempt.
#[allow(clippy::manual_async_fn)] // an `async fn` would hold its arguments twice
pub(super) fn send<'a>(
    pool: &'a Arc<H1Pool>,
    endpoint: SocketAddr,
    tls: Option<&'a Arc<UpstreamTls>>,
    req: Request<ProxyBody>,
    extra: Bytes,
    unanswered: &'a mut Option<Unanswered>,
) -> impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + use<'a> {
    // Not an `async fn`, which would keep a second copy of its arguments (see `h1_conn::exchange`).
    async move {
        let key = PoolKey {
            endpoint,
            tls: tls.map(|t| t.identity),
        };
        let (mut sending, method) = Sending::new(req, extra);
        let limits = ResponseLimits {
            max_head_bytes: pool.settings.max_buf_size,
            max_headers: MAX_HEADERS,
        };
        loop {
            let (conn, reused) = match pool.checkout(key) {
                Some(conn) => (conn, true),
                // Boxed: connecting is the rare path, and its future would triple this one's size.
                None => match Box::pin(pool.connect(endpoint, tls)).await {
                    Ok(conn) => (conn, false),
                    Err(e) => {
                        *unanswered = Some(sending.into_head());
                        return Err(e);
                    }
                },
            };
            let (error, request) = match h1_conn::exchange(conn, sending, &method, &limits).await {
                Ok((head, conn, rest)) => return Ok(pool.response(key, head, conn, rest)),
                Err(Failed::Unwritten(unsent, _)) if reused => {
                    sending = *unsent;
                    continue;
                }
                Err(Failed::Unwritten(unsent, e)) => (UpstreamError::Unsent(e), unsent),
                Err(Failed::Other(e, request)) => (e, request),
            };
            *unanswered = Some(request.into_head());
            return Err(error);
        }
    }
}

impl H1Pool {
    /// An empty pool.
    pub(super) fn new(settings: H1Settings) -> Self {
        Self {
            settings,
            idle: Mutex::new(HashMap::default()),
            sweeping: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, IdleMap> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The newest idle connection under `key` that is still usable. Expired ones and ones the
    /// backend closed (or wrote to) meanwhile are dropped on the way.
    fn checkout(&self, key: PoolKey) -> Option<H1Conn> {
        let now = bulkhead_net::clock::now();
        loop {
            let Idle { mut conn, since } = self.lock().get_mut(&key)?.pop()?;
            if now.saturating_duration_since(since) < self.settings.idle_timeout
                && conn.is_reusable()
            {
                return Some(conn);
            }
        }
    }

    /// Puts a connection whose exchange ended back, dropping the oldest beyond the limit.
    pub(super) fn put(self: &Arc<Self>, key: PoolKey, mut conn: H1Conn) {
        let max = self.settings.max_idle_per_endpoint;
        if max == 0 {
            return;
        }
        conn.shrink();
        let mut idle = self.lock();
        let list = idle.entry(key).or_default();
        list.push(Idle {
            conn,
            since: bulkhead_net::clock::now(),
        });
        if list.len() > max {
            list.remove(0);
        }
        drop(idle);
        self.start_sweeper();
    }

    /// The response of `head`, whose body reads the rest from `conn` and gives the connection
    /// back when the exchange ended cleanly. A switched protocol takes the connection instead.
    fn response(
        self: &Arc<Self>,
        key: PoolKey,
        head: bulkhead_h1_wire::ResponseHead,
        conn: H1Conn,
        rest: Option<Box<Sending>>,
    ) -> Response<UpstreamBody> {
        if head.status == StatusCode::SWITCHING_PROTOCOLS {
            let mut resp = Response::new(crate::body::empty());
            *resp.status_mut() = head.status;
            *resp.version_mut() = head.version;
            *resp.headers_mut() = head.headers;
            resp.extensions_mut()
                .insert(UpstreamUpgrade::new(conn.into_upgraded()));
            return resp;
        }
        let home = Home {
            pool: Arc::clone(self),
            key,
        };
        let body = H1Body::new(&head, conn, rest, self.settings.max_buf_size, home);
        let mut resp = Response::new(crate::body::boxed(body));
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        // hyper's server writes a response's own reason phrase to HTTP/1.1 clients.
        if let Some(reason) = head
            .reason
            .and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok())
        {
            resp.extensions_mut().insert(reason);
        }
        resp
    }

    /// Drops idle connections to endpoints not in `live`.
    pub(super) fn retain(&self, live: &HashSet<SocketAddr>) {
        self.lock().retain(|key, _| live.contains(&key.endpoint));
    }

    /// Drops expired idle connections and those the backend closed (or wrote to); returns
    /// whether any are left (when none are, the sweeper stops).
    fn sweep(&self) -> bool {
        let now = Instant::now();
        let timeout = self.settings.idle_timeout;
        let mut idle = self.lock();
        idle.retain(|_, list| {
            // Also those the backend closed meanwhile: their sockets are not kept until checkout.
            list.retain_mut(|e| {
                now.saturating_duration_since(e.since) < timeout && e.conn.is_reusable()
            });
            !list.is_empty()
        });
        if idle.is_empty() {
            // Under the lock: a connection put back after this starts a new sweeper.
            self.sweeping.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// Opens a connection to `endpoint` (TLS when `tls` is set).
    async fn connect(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        tls: Option<&Arc<UpstreamTls>>,
    ) -> Result<H1Conn, UpstreamError> {
        let stream = connect_stream(endpoint, tls, self.settings.connect_timeout).await?;
        Ok(H1Conn::new(stream, self.settings.max_buf_size))
    }

    /// Sweeps expired idle connections while there are any; the task ends with the pool or when
    /// the pool is empty, and the next connection put back starts it again. (Outside a runtime,
    /// as when a body is dropped at shutdown, nothing is started.)
    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeping.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool: Weak<Self> = Arc::downgrade(self);
        let every = (self.settings.idle_timeout / 2).max(MIN_SWEEP_INTERVAL);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                if !pool.sweep() {
                    return;
                }
            }
        });
    }
}
