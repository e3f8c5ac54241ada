//! The [`Edge`]: its two listeners, the snapshot loop that validates and swaps routing tables, and
//! graceful shutdown (stop accepting, not ready, let connections finish until the drain deadline,
//! then cut the rest).

use crate::config::{EdgeConfig, REFUSAL_SUMMARY_INTERVAL};
use crate::connection::{serve, Shared};
use crate::metrics::EdgeMetrics;
use crate::refusals::RefusalTally;
use crate::sources::SourceLimits;
use crate::table::{listener_label, validate, EdgeTable, SharedCounters};
use arc_swap::ArcSwap;
use bulkhead_admin::ReadyFlag;
use bulkhead_snapshot::Subscription;
use bulkhead_snapshot::{EdgePort, EdgeSnapshot};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the edge could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// Any other I/O failure (e.g. an accept loop ended abnormally).
    #[error("edge i/o error: {0}")]
    Io(#[from] io::Error),
}

/// The edge tier: bound listeners, ready to [`Edge::run`].
#[derive(Debug)]
pub struct Edge {
    config: EdgeConfig,
    metrics: Arc<EdgeMetrics>,
    ready: ReadyFlag,
    https: TcpListener,
    http: TcpListener,
    https_addr: SocketAddr,
    http_addr: SocketAddr,
}

impl Edge {
    /// Binds both listeners (port 0 picks a free port). `ready` stays false until the first valid
    /// snapshot is served.
    pub async fn bind(
        config: EdgeConfig,
        metrics: Arc<EdgeMetrics>,
        ready: ReadyFlag,
    ) -> Result<Edge, EdgeError> {
        let bind = |addr: SocketAddr| async move {
            let listener = bulkhead_net::bind_for_workers(addr)
                .await
                .map_err(|source| EdgeError::Bind { addr, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| EdgeError::Bind { addr, source })?;
            Ok::<_, EdgeError>((listener, local))
        };
        let (https, https_addr) = bind(config.https_listen).await?;
        let (http, http_addr) = bind(config.http_listen).await?;
        ready.set(false);
        Ok(Edge {
            config,
            metrics,
            ready,
            https,
            http,
            https_addr,
            http_addr,
        })
    }

    /// The TLS listener's address.
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    /// The plain HTTP listener's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Serves until `shutdown` is cancelled: applies every snapshot from `snapshots` (acknowledging
    /// each version: `Ok` once served, `Err(reason)` when refused and the previous one kept), and
    /// forwards connections. On shutdown: stops accepting, sets ready false, lets open connections
    /// finish for up to `drain_timeout`, then closes the rest. If the snapshot stream ends, the last
    /// snapshot keeps serving.
    pub async fn run(
        self,
        snapshots: Subscription<EdgeSnapshot>,
        shutdown: CancellationToken,
    ) -> Result<(), EdgeError> {
        let Edge {
            config,
            metrics,
            ready,
            https,
            http,
            ..
        } = self;
        let limits = config.limits.clone();
        let sources = SourceLimits::new(
            &limits,
            config.accept_proxy_from.clone(),
            metrics.source_rate_untracked.clone(),
        );
        let shared = Arc::new(Shared {
            table: ArcSwap::from_pointee(EdgeTable::empty()),
            sniff_slots: Arc::new(Semaphore::new(limits.max_sniffing)),
            limits,
            metrics,
            proxy_protocol: config.proxy_protocol,
            sources,
            accept_proxy_from: config.accept_proxy_from.clone(),
            refusals: RefusalTally::default(),
            hard_stop: bulkhead_net::HardStop::new(),
        });
        // Snapshots are applied on a thread of their own, off the workers that relay bytes.
        let mut applier = {
            let shared = Arc::clone(&shared);
            let ready = ready.clone();
            let mut counters = SharedCounters::default();
            let apply = move |snapshot: Arc<EdgeSnapshot>, snapshots: &Subscription<_>| {
                apply(&snapshot, snapshots, &shared, &mut counters, &ready);
                // Dropped once compiled (the applier then returns the freed memory to the system).
                drop(snapshot);
            };
            bulkhead_snapshot::applier::spawn("apply-edge", snapshots, &shutdown, apply)
                .map_err(EdgeError::Io)?
        };
        let tracker = TaskTracker::new();
        let connection_slots = Arc::new(Semaphore::new(shared.limits.max_connections));
        // Each listener is accepted from on every worker (a runtime per worker thread).
        let workers = bulkhead_net::workers::current();
        let mut acceptors = Vec::new();
        for (listener, port) in [(https, EdgePort::Https), (http, EdgePort::Http)] {
            let (shared, tracker) = (&shared, &tracker);
            let (slots, shutdown) = (&connection_slots, &shutdown);
            acceptors.extend(bulkhead_net::workers::spawn_accept_loops(
                &workers,
                listener,
                |l| {
                    accept_loop(
                        l,
                        port,
                        Arc::clone(shared),
                        tracker.clone(),
                        shared.hard_stop.group(),
                        Arc::clone(slots),
                        shutdown.clone(),
                    )
                },
            ));
        }

        let mut applying = true;
        let mut summary = tokio::time::interval(REFUSAL_SUMMARY_INTERVAL);
        summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = summary.tick() => shared.refusals.log_summary(),
                // The stream ended (logged by the applier): the last snapshot keeps serving.
                () = applier.stopped(), if applying => applying = false,
            }
        }
        applier.stopped().await;

        ready.set(false);
        let mut result = Ok(());
        for acceptor in acceptors {
            if let Err(e) = acceptor.await {
                result = Err(EdgeError::Io(io::Error::other(e)));
            }
        }
        tracker.close();
        tracing::info!(open = tracker.len(), "edge draining");
        if tokio::time::timeout(shared.limits.drain_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = tracker.len(),
                "drain timeout reached: closing the remaining connections"
            );
            shared.hard_stop.stop();
            tracker.wait().await;
        }
        shared.refusals.log_summary();
        tracing::info!("edge stopped");
        result
    }
}

/// Validates a snapshot and swaps it in, or refuses it and keeps the current one; acknowledges.
fn apply(
    snapshot: &EdgeSnapshot,
    subscription: &Subscription<EdgeSnapshot>,
    shared: &Shared,
    counters: &mut SharedCounters,
    ready: &ReadyFlag,
) {
    let version = snapshot.version;
    if let Err(reason) = validate(snapshot) {
        shared.metrics.snapshots_rejected.inc();
        tracing::warn!(version, %reason, "edge snapshot refused; the previous one keeps serving");
        subscription.ack(version, Err(reason));
        return;
    }
    let table = EdgeTable::build(snapshot, counters);
    shared.table.store(Arc::new(table));
    shared
        .metrics
        .snapshot_version
        .set(i64::try_from(version).unwrap_or(i64::MAX));
    ready.set(true);
    tracing::info!(
        version,
        hash = %snapshot.hash,
        routes = snapshot.routes.len(),
        tenants = snapshot.tenants.len(),
        "edge snapshot applied"
    );
    subscription.ack(version, Ok(()));
}

/// Accepts on one listener until shutdown; a connection needs one of the `slots` (at most
/// `max_connections` open, the rest wait in the kernel's backlog).
async fn accept_loop(
    listener: TcpListener,
    port: EdgePort,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    stops: bulkhead_net::StopGroup,
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let label = listener_label(port);
    while let Some(accepted) = bulkhead_net::accept_next(&listener, &slots, &shutdown, label).await
    {
        let bulkhead_net::Accepted {
            stream,
            peer,
            permit: slot,
        } = accepted;
        let shared = shared.clone();
        // Ended by the hard stop with an abort: the task waits on nothing else.
        stops.spawn(&tracker, async move {
            let _slot = slot;
            // Boxed: the connection's future (1.6 KiB) is then allocated once and never moved,
            // where tokio would copy it into the task and again on each stage change.
            Box::pin(serve(stream, peer, port, shared)).await;
        });
    }
}
