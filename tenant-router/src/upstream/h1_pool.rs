//! HTTP/1.1 upstreams: a keep-alive pool of hyper connections per endpoint, owned by the router.
//!
//! A request takes an idle connection that is ready (or opens one), sends on it, and the
//! connection goes back to the pool when the response body has been read to its end
//! ([`Release`], carried by [`UpstreamBody`]). Nothing is spawned per request and no channel sits
//! between the request and the pool; the one task per connection is hyper's own.

use super::tls::UpstreamTls;
use super::{connect_stream, PoolKey, UpstreamBody, UpstreamError};
use crate::body::ProxyBody;
use hyper::client::conn::http1;
use hyper::{Method, Request, Response, Uri};
use hyper_util::rt::TokioIo;
use std::collections::{HashMap, HashSet};
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
    /// hyper's read buffer limit for response heads.
    pub(super) max_buf_size: usize,
}

/// One idle connection.
struct Idle {
    sender: http1::SendRequest<ProxyBody>,
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

/// The right to put a connection back into its pool once its response body has ended.
pub(super) struct Release {
    pool: Arc<H1Pool>,
    key: PoolKey,
    sender: http1::SendRequest<ProxyBody>,
}

impl Release {
    /// Returns the connection to the pool.
    pub(super) fn give_back(self) {
        self.pool.put(self.key, self.sender);
    }
}

/// Sends `req` to `endpoint` (over TLS when `tls` is set) on a pooled connection of the same
/// TLS identity, or a new one. A request handed back unsent
/// by a pooled connection that closed meanwhile is sent again on another (as hyper-util's client
/// did); one handed back by a fresh connection is an [`UpstreamError::Unsent`].
pub(super) async fn send(
    pool: &Arc<H1Pool>,
    endpoint: SocketAddr,
    tls: Option<&Arc<UpstreamTls>>,
    mut req: Request<ProxyBody>,
) -> Result<Response<UpstreamBody>, UpstreamError> {
    request_target(&mut req);
    let key = PoolKey {
        endpoint,
        tls: tls.map(|t| t.identity),
    };
    loop {
        let (mut sender, reused) = match pool.checkout(key) {
            Some(sender) => (sender, true),
            // Boxed: connecting is the rare path, and its future would triple this one's size.
            None => (Box::pin(pool.connect(endpoint, tls)).await?, false),
        };
        match sender.try_send_request(req).await {
            Ok(resp) => return Ok(pool.release_with(key, sender, resp)),
            Err(mut e) => match e.take_message() {
                Some(unsent) if reused => req = unsent,
                Some(_) => return Err(UpstreamError::Unsent(Box::new(e.into_error()))),
                None => return Err(UpstreamError::from_sent(e.into_error())),
            },
        }
    }
}

/// The request target on the wire: origin form (`/path?query`), authority form for `CONNECT`.
/// Requests mostly arrive in origin form already; an absolute URI (a mirror's) is cut down.
fn request_target(req: &mut Request<ProxyBody>) {
    let uri = req.uri();
    if uri.authority().is_none() {
        return;
    }
    let mut parts = http::uri::Parts::default();
    if req.method() == Method::CONNECT {
        parts.authority = uri.authority().cloned();
    } else {
        parts.path_and_query = uri.path_and_query().cloned();
    }
    if let Ok(target) = Uri::from_parts(parts) {
        *req.uri_mut() = target;
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

    /// The newest idle connection under `key` that is ready for a request. Closed and expired
    /// ones are dropped on the way; one not ready yet (its last exchange still finishing) stays.
    fn checkout(&self, key: PoolKey) -> Option<http1::SendRequest<ProxyBody>> {
        let mut idle = self.lock();
        let list = idle.get_mut(&key)?;
        let now = Instant::now();
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let entry = &list[i];
            if entry.sender.is_closed()
                || now.saturating_duration_since(entry.since) >= self.settings.idle_timeout
            {
                list.remove(i);
            } else if entry.sender.is_ready() {
                return Some(list.remove(i).sender);
            }
        }
        None
    }

    /// Puts a connection whose exchange ended back, dropping the oldest beyond the limit.
    fn put(self: &Arc<Self>, key: PoolKey, sender: http1::SendRequest<ProxyBody>) {
        let max = self.settings.max_idle_per_endpoint;
        if max == 0 || sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        let list = idle.entry(key).or_default();
        list.push(Idle {
            sender,
            since: Instant::now(),
        });
        if list.len() > max {
            list.remove(0);
        }
        drop(idle);
        self.start_sweeper();
    }

    /// Wraps a response so that its connection comes back when the body has ended (at once for
    /// a response without a body). A switched protocol never comes back.
    fn release_with(
        self: &Arc<Self>,
        key: PoolKey,
        sender: http1::SendRequest<ProxyBody>,
        resp: Response<hyper::body::Incoming>,
    ) -> Response<UpstreamBody> {
        use http_body::Body as _;
        let release = (resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS).then(|| Release {
            pool: Arc::clone(self),
            key,
            sender,
        });
        let release = match release {
            Some(r) if resp.body().is_end_stream() => {
                r.give_back();
                None
            }
            other => other,
        };
        resp.map(|inner| UpstreamBody { inner, release })
    }

    /// Drops idle connections to endpoints not in `live`.
    pub(super) fn retain(&self, live: &HashSet<SocketAddr>) {
        self.lock().retain(|key, _| live.contains(&key.endpoint));
    }

    /// Drops closed and expired idle connections; returns whether any are left (when none are,
    /// the sweeper stops).
    fn sweep(&self) -> bool {
        let now = Instant::now();
        let timeout = self.settings.idle_timeout;
        let mut idle = self.lock();
        idle.retain(|_, list| {
            list.retain(|e| {
                !e.sender.is_closed() && now.saturating_duration_since(e.since) < timeout
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

    /// Opens a connection to `endpoint` (TLS when `tls` is set) and spawns hyper's connection
    /// task (with upgrades, for WebSocket and other protocol switches).
    async fn connect(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        tls: Option<&Arc<UpstreamTls>>,
    ) -> Result<http1::SendRequest<ProxyBody>, UpstreamError> {
        let stream = connect_stream(endpoint, tls, self.settings.connect_timeout).await?;
        let (sender, conn) = http1::Builder::new()
            .max_buf_size(self.settings.max_buf_size)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Connect(Box::new(e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%endpoint, error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
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
