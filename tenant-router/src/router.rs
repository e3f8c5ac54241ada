//! [`Router`]: one tenant's router — binds its two listeners, applies snapshots as they arrive
//! (compile, then swap atomically; refuse and keep the previous one when invalid) and drains on
//! shutdown.

use crate::balance::EndpointRegistry;
use crate::compile::{compile, CertificateCache, CompiledConfig};
use crate::error::{CompileError, RouterError};
use crate::http::Shared;
use crate::limits::{default_accept_proxy_from, RouterLimits, OUTLIER_SWEEP_INTERVAL};
use crate::listener::{accept_loop, Admission, HttpServers, ListenerState};
use crate::metrics::{ListenerLabel, RouterMetrics, SnapshotLabels, SnapshotOutcome, TenantLabels};
use crate::outlier::OutlierPolicy;
use crate::upstream::Upstreams;
use arc_swap::ArcSwapOption;
use bulkhead_admin::ReadyFlag;
use bulkhead_proxy_io::cidr::Cidr;
use bulkhead_snapshot::Subscription;
use bulkhead_snapshot::{BackendProtocol, TenantSnapshot};
use rustls::crypto::CryptoProvider;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Where and how one tenant router listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// The tenant served; snapshots for another tenant are refused.
    pub tenant: String,
    /// The TLS listener (terminate and passthrough, routed by SNI).
    pub https_listen: SocketAddr,
    /// The plain HTTP listener.
    pub http_listen: SocketAddr,
    /// Whether every connection starts with a PROXY protocol header (v2 from the edge; v1 accepted);
    /// true behind the edge.
    pub expect_proxy: bool,
    /// The peers allowed to send that PROXY header (the edge's networks); a connection from any
    /// other peer is refused unread. Default [`crate::limits::DEFAULT_ACCEPT_PROXY_FROM`].
    pub accept_proxy_from: Vec<Cidr>,
    /// Limits and timeouts.
    pub limits: RouterLimits,
    /// Whether TLS clients may resume sessions (TLS 1.3 tickets, 1.2 session ids); default true.
    /// Off only to measure full handshakes against peers configured the same way.
    pub tls_resumption: bool,
}

impl RouterConfig {
    /// A configuration with default limits that expects PROXY headers from
    /// [`crate::limits::DEFAULT_ACCEPT_PROXY_FROM`].
    pub fn new(
        tenant: impl Into<String>,
        https_listen: SocketAddr,
        http_listen: SocketAddr,
    ) -> Self {
        Self {
            tenant: tenant.into(),
            https_listen,
            http_listen,
            expect_proxy: true,
            accept_proxy_from: default_accept_proxy_from(),
            limits: RouterLimits::default(),
            tls_resumption: true,
        }
    }
}

/// One tenant's router, bound and ready to [`run`](Router::run).
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    https: TcpListener,
    http: TcpListener,
    https_addr: SocketAddr,
    http_addr: SocketAddr,
    metrics: Arc<RouterMetrics>,
    ready: ReadyFlag,
}

impl Router {
    /// Binds both listeners (port 0 picks a free port; see [`Router::https_addr`]).
    pub async fn bind(
        config: RouterConfig,
        metrics: Arc<RouterMetrics>,
        ready: ReadyFlag,
    ) -> Result<Router, RouterError> {
        if config.tenant.is_empty() {
            return Err(RouterError::Config("tenant name is empty".into()));
        }
        let https = bind(config.https_listen).await?;
        let http = bind(config.http_listen).await?;
        let https_addr = local_addr(&https, config.https_listen)?;
        let http_addr = local_addr(&http, config.http_listen)?;
        Ok(Router {
            config,
            https,
            http,
            https_addr,
            http_addr,
            metrics,
            ready,
        })
    }

    /// The bound TLS listener address.
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    /// The bound plain HTTP listener address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Serves until `shutdown` is cancelled. Connections are accepted once the first valid snapshot
    /// arrived (earlier ones wait in the backlog). Each snapshot is compiled and swapped in, or
    /// refused with the reason, and acknowledged either way. On shutdown: stop accepting, mark not
    /// ready, let open connections finish for up to the drain timeout, then drop the rest.
    pub async fn run(
        self,
        snapshots: Subscription<TenantSnapshot>,
        shutdown: CancellationToken,
    ) -> Result<(), RouterError> {
        let Router {
            config,
            https,
            http,
            metrics,
            ready,
            ..
        } = self;
        let tenant: Arc<str> = Arc::from(config.tenant.as_str());
        let tracker = TaskTracker::new();
        // The runtimes connections are served on: this one, or a runtime per worker thread.
        let workers = bulkhead_net::workers::current();
        let shared = Arc::new(Shared {
            tenant: Arc::clone(&tenant),
            metrics,
            upstreams: Upstreams::new(&config.limits, workers.len()),
            outlier: OutlierPolicy::from_limits(&config.limits),
            limits: config.limits.clone(),
            hard_stop: CancellationToken::new(),
            tasks: tracker.clone(),
            mirror_slots: Arc::new(tokio::sync::Semaphore::new(
                config
                    .limits
                    .max_mirrors_in_flight
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            current: ArcSwapOption::empty(),
        });
        let state = Arc::new(ListenerState {
            shared: Arc::clone(&shared),
            servers: HttpServers::new(&config.limits),
            expect_proxy: config.expect_proxy,
            accept_proxy_from: config.accept_proxy_from.clone(),
            drain: shutdown.clone(),
        });
        let registry = Arc::new(EndpointRegistry::new(
            Arc::clone(&tenant),
            Arc::clone(&shared.metrics),
        ));
        let applier = SnapshotApplier {
            tenant: config.tenant.clone(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            registry: Arc::clone(&registry),
            certificates: CertificateCache::default(),
            tls_resumption: config.tls_resumption,
        };
        // Snapshots are compiled and swapped in on a thread of their own: a compile (about 12 ms
        // at 5,000 routes) does not stall the connections, and a new one is not queued behind them.
        // One admission per listener, whichever worker accepts; made here rather than on the
        // applier's thread, whose malloc arena would keep their pages.
        let admissions = [
            Arc::new(Admission::new(&config.limits)),
            Arc::new(Admission::new(&config.limits)),
        ];
        let mut listeners = Some((https, http));
        let mut applier = {
            let state = Arc::clone(&state);
            let ready = ready.clone();
            let tracker = tracker.clone();
            let thread = format!("apply-{tenant}");
            let apply = move |snapshot: Arc<TenantSnapshot>, snapshots: &Subscription<_>| {
                let outcome = applier.apply(&state, &snapshot);
                if outcome.is_ok() {
                    ready.set(true);
                }
                snapshots.ack(snapshot.version, outcome);
                if state.shared.current.load().is_some() {
                    if let Some((https, http)) = listeners.take() {
                        let listeners =
                            [(https, ListenerLabel::Https), (http, ListenerLabel::Http)];
                        for ((listener, kind), admission) in listeners.into_iter().zip(&admissions)
                        {
                            let admission = Arc::clone(admission);
                            let (loop_state, loop_tracker) = (Arc::clone(&state), tracker.clone());
                            // Detached: the tracker waits for them.
                            drop(bulkhead_net::workers::spawn_accept_loops(
                                &workers,
                                listener,
                                move |listener| {
                                    loop_tracker.track_future(accept_loop(
                                        listener,
                                        kind,
                                        Arc::clone(&loop_state),
                                        Arc::clone(&admission),
                                        loop_tracker.clone(),
                                    ))
                                },
                            ));
                        }
                    }
                }
                // Dropped here, once compiled: the router keeps only what it compiled (the
                // applier then returns the freed memory to the system).
                drop(snapshot);
            };
            bulkhead_snapshot::applier::spawn(&thread, snapshots, &shutdown, apply)
                .map_err(RouterError::Applier)?
        };
        let mut applying = true;
        let mut sweep = tokio::time::interval(OUTLIER_SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = sweep.tick() => {
                    registry.sweep(Instant::now(), &shared.outlier);
                }
                // The stream ended (logged by the applier): the last configuration keeps serving.
                () = applier.stopped(), if applying => applying = false,
            }
        }
        // A snapshot being applied finishes before the router reports itself not ready.
        applier.stopped().await;
        ready.set(false);
        tracing::info!(tenant = %tenant, "router draining");
        tracker.close();
        if tokio::time::timeout(config.limits.drain_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(tenant = %tenant, open = tracker.len(), "drain timeout passed; closing remaining connections");
        }
        shared.hard_stop.cancel();
        tracker.wait().await;
        tracing::info!(tenant = %tenant, "router stopped");
        Ok(())
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, RouterError> {
    bulkhead_net::bind_for_workers(addr)
        .await
        .map_err(|source| RouterError::Bind { addr, source })
}

fn local_addr(l: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, RouterError> {
    l.local_addr()
        .map_err(|source| RouterError::Bind { addr, source })
}

/// Compiles `snapshot` exactly as a router of `snapshot.tenant` would before serving it, and
/// throws the result away: `Ok` when a router would accept it, else why it would refuse it. For
/// offline checks (`bulkhead translate`) and tests; nothing is bound or started.
pub fn validate_snapshot(snapshot: &TenantSnapshot) -> Result<(), CompileError> {
    let tenant: Arc<str> = Arc::from(snapshot.tenant.as_str());
    let metrics = RouterMetrics::register(&mut prometheus_client::registry::Registry::default());
    compile(
        snapshot,
        &snapshot.tenant,
        &Arc::new(rustls::crypto::ring::default_provider()),
        &EndpointRegistry::new(tenant, metrics),
        &CertificateCache::default(),
        false,
    )
    .map(drop)
}

/// Turns snapshots into served configurations.
struct SnapshotApplier {
    tenant: String,
    provider: Arc<CryptoProvider>,
    registry: Arc<EndpointRegistry>,
    certificates: CertificateCache,
    tls_resumption: bool,
}

impl SnapshotApplier {
    /// Compiles and swaps in `snapshot`, or explains why not (the previous configuration stays).
    fn apply(&self, state: &ListenerState, snapshot: &TenantSnapshot) -> Result<(), String> {
        let metrics = &state.shared.metrics;
        let tenant = &state.shared.tenant;
        if let Some(current) = state.shared.current.load().as_ref() {
            if current.version == snapshot.version
                && !snapshot.hash.is_empty()
                && current.hash == snapshot.hash
            {
                return Ok(());
            }
        }
        let count = |outcome| {
            metrics
                .snapshots
                .get_or_create(&SnapshotLabels {
                    tenant: Arc::clone(tenant),
                    outcome,
                })
                .inc();
        };
        let started = Instant::now();
        match compile(
            snapshot,
            &self.tenant,
            &self.provider,
            &self.registry,
            &self.certificates,
            self.tls_resumption,
        ) {
            Ok(compiled) => {
                let live = h2_endpoints(&compiled);
                state.shared.current.store(Some(Arc::new(compiled)));
                self.registry.prune();
                self.certificates.prune();
                state.shared.upstreams.retain(&live);
                count(SnapshotOutcome::Applied);
                metrics
                    .snapshot_version
                    .get_or_create(&TenantLabels {
                        tenant: Arc::clone(tenant),
                    })
                    .set(i64::try_from(snapshot.version).unwrap_or(i64::MAX));
                let compile_ms = started.elapsed().as_secs_f64() * 1e3;
                tracing::info!(tenant = %tenant, version = snapshot.version, hash = %snapshot.hash, compile_ms = %format_args!("{compile_ms:.2}"), "snapshot applied");
                Ok(())
            }
            Err(e) => {
                count(SnapshotOutcome::Rejected);
                tracing::warn!(tenant = %tenant, version = snapshot.version, error = %e, "snapshot refused; previous configuration kept");
                Err(e.to_string())
            }
        }
    }
}

/// Every HTTP/2 endpoint a configuration can send to (route backends and mirrors).
fn h2_endpoints(config: &CompiledConfig) -> HashSet<SocketAddr> {
    let mut out = HashSet::new();
    for table in [&config.https_vhosts, &config.http_vhosts] {
        for (_, vhost) in table.iter() {
            for route in &vhost.routes {
                for wb in route.backends.iter() {
                    if let Some(b) = &wb.backend {
                        if b.protocol == BackendProtocol::H2c {
                            out.extend(b.endpoints.iter().map(|e| e.addr));
                        }
                    }
                }
            }
        }
    }
    out
}
