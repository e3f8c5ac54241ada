//! `bulkhead standalone`: the whole system in one process, without Kubernetes.
//!
//! File provider → compiler (the operator's translator) → versioned snapshots published through the
//! same subscription interface the cluster transport uses → the edge and one tenant router per
//! `Tenant`, all on loopback. Routers acknowledge what they serve; `/status` shows every object's
//! status as it would be written to Kubernetes, with `Programmed` set only after acknowledgement.

use anyhow::Context;
use bulkhead_admin::{AdminServer, AdminState, Readiness};
use bulkhead_edge::{Edge, EdgeConfig, EdgeMetrics};
use bulkhead_operator::compiler::Compiler;
use bulkhead_operator::file_provider::{FileProvider, LoadedState};
use bulkhead_operator::status::{apply_acks, stamp_transitions, ObjectStatus};
use bulkhead_operator::status_installation::{
    apply_installation, CrdBundle, GatewayAddress, Installation,
};
use bulkhead_proxy_io::cidr::Cidr;
use bulkhead_router::{Router, RouterConfig, RouterMetrics};
use bulkhead_snapshot::{Ack, Publisher};
use bulkhead_snapshot::{EdgeSnapshot, RouterEndpoints, TenantSnapshot};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How long the file provider waits for a burst of file events to settle.
const DEFAULT_DEBOUNCE_MS: u64 = 50;
/// The only peer the tenant routers accept PROXY headers from: the edge, which reaches them on
/// 127.0.0.1 (where they listen) and so connects from 127.0.0.1.
const DEFAULT_ROUTER_ACCEPT_PROXY_FROM: [(IpAddr, u8); 1] = [(IpAddr::V4(Ipv4Addr::LOCALHOST), 32)];

/// [`DEFAULT_ROUTER_ACCEPT_PROXY_FROM`] as networks.
pub fn default_router_accept_proxy_from() -> Vec<Cidr> {
    bulkhead_proxy_io::cidr::networks(&DEFAULT_ROUTER_ACCEPT_PROXY_FROM)
}
/// Acknowledgements buffered between the data plane and the status view.
const ACK_CHANNEL: usize = 1024;
/// Worker threads of each tenant router's runtime in standalone mode: one core's worth, like a
/// router pod with a CPU limit of one.
pub const DEFAULT_ROUTER_WORKER_THREADS: u16 = 1;
/// How long a stopped router's runtime may take to drop its remaining tasks.
const ROUTER_RUNTIME_SHUTDOWN: Duration = Duration::from_secs(5);

/// Arguments of `bulkhead standalone`.
#[derive(clap::Args, Debug, Clone)]
pub struct StandaloneArgs {
    /// Directory of multi-document YAML manifests (subfolders too); watched for changes.
    #[arg(long)]
    pub manifests: PathBuf,
    /// Where plain HTTP (Gateway listeners on port 80) is served.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,
    /// Where TLS (Gateway listeners on port 443, HTTPS, TLS) is served.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub https_listen: SocketAddr,
    /// Where /healthz, /readyz, /metrics and /status are served.
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin_listen: SocketAddr,
    /// Debounce of manifest changes, in milliseconds.
    #[arg(long, default_value_t = DEFAULT_DEBOUNCE_MS)]
    pub debounce_ms: u64,
    #[command(flatten)]
    pub router_limits: bulkhead::router_flags::RouterLimitArgs,
    /// Networks (CIDR, comma separated) the tenant routers accept PROXY headers from: the edge,
    /// on loopback.
    #[arg(long, value_delimiter = ',', default_values_t = default_router_accept_proxy_from())]
    pub router_accept_proxy_from: Vec<Cidr>,
    /// The edge's limits.
    #[command(flatten)]
    pub edge_limits: bulkhead::edge_flags::EdgeLimitArgs,
    /// Worker threads of each tenant router. Every router runs on runtimes of its own (one
    /// current-thread runtime per worker, as in its pod), as it runs in a pod of its own in a
    /// cluster, so one tenant's load never queues another tenant's tasks.
    #[arg(long, env = "BULKHEAD_ROUTER_WORKER_THREADS", default_value_t = DEFAULT_ROUTER_WORKER_THREADS, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub router_worker_threads: u16,
    /// Listener ports and Gateway addresses.
    #[command(flatten)]
    pub gateway: crate::gateway_flags::GatewayArgs,
}

/// Counters of the standalone control loop.
struct LoopMetrics {
    compiles: Counter,
    load_errors: Gauge,
    snapshot_rejections: Counter,
}

impl LoopMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            compiles: Counter::default(),
            load_errors: Gauge::default(),
            snapshot_rejections: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("bulkhead_standalone");
        r.register(
            "compiles",
            "Compilations of the manifest directory",
            m.compiles.clone(),
        );
        r.register(
            "load_errors",
            "Files or objects currently rejected by the file provider",
            m.load_errors.clone(),
        );
        r.register(
            "snapshot_rejections",
            "Snapshots refused by a data-plane component",
            m.snapshot_rejections.clone(),
        );
        m
    }
}

/// What `/status` shows: compiled statuses, file errors and data-plane acknowledgements.
#[derive(Default)]
struct StatusView {
    /// Statuses as compiled (Programmed still pending).
    compiled: Vec<ObjectStatus>,
    /// What `/status` serves: `compiled` with acknowledgements applied and transition times stamped.
    rendered: Vec<ObjectStatus>,
    load_errors: Vec<String>,
    /// Tenant → version published.
    published: BTreeMap<String, u64>,
    /// Tenant → (version acknowledged as served, last rejection).
    acked: BTreeMap<String, (u64, Option<String>)>,
    /// Gateway addresses and CRD bundle (built in).
    installation: Installation,
}

impl StatusView {
    /// Recomputes `rendered` after statuses or acknowledgements changed, keeping each condition's
    /// `lastTransitionTime` while its status stays the same.
    fn refresh(&mut self) {
        let mut statuses = self.compiled.clone();
        let served: BTreeMap<String, bool> = self
            .published
            .iter()
            .map(|(t, v)| {
                let ok = self.acked.get(t).is_some_and(|(a, _)| a >= v);
                (t.clone(), ok)
            })
            .collect();
        apply_acks(&mut statuses, &served);
        apply_installation(&mut statuses, &self.installation);
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        stamp_transitions(&mut statuses, &self.rendered, &now);
        self.rendered = statuses;
    }

    fn document(&self) -> serde_json::Value {
        let rejections: Vec<serde_json::Value> = self
            .acked
            .iter()
            .filter_map(|(t, (_, e))| {
                e.as_ref()
                    .map(|e| serde_json::json!({"component": t, "message": e}))
            })
            .collect();
        serde_json::json!({
            "items": self.rendered,
            "errors": self.load_errors,
            "rejections": rejections,
        })
    }
}

/// The Gateway addresses `/status` shows: `--gateway-address`, else the IP addresses of the HTTP
/// and HTTPS listeners (unspecified ones, `0.0.0.0` and `[::]`, are left out).
fn standalone_addresses(args: &StandaloneArgs) -> Vec<GatewayAddress> {
    let given = args.gateway.static_addresses();
    if !given.is_empty() {
        return given;
    }
    let mut out: Vec<GatewayAddress> = [args.http_listen, args.https_listen]
        .iter()
        .map(SocketAddr::ip)
        .filter(|ip| !ip.is_unspecified())
        .map(GatewayAddress::ip)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// One tenant router running in this process.
struct RunningRouter {
    publisher: Publisher<TenantSnapshot>,
    endpoints: RouterEndpoints,
    stop: CancellationToken,
}

/// Runs standalone mode until SIGINT/SIGTERM.
pub async fn run(args: StandaloneArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    bulkhead::process::spawn_signal_handler(shutdown.clone());
    let running = start(args, shutdown.clone()).await?;
    running.await??;
    Ok(())
}

/// Starts everything; the returned future completes when `shutdown` is cancelled and all stopped.
pub async fn start(
    args: StandaloneArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let manifests = args.manifests.clone();
    anyhow::ensure!(
        manifests.is_dir(),
        "--manifests {} is not a directory",
        manifests.display()
    );

    let mut registry = Registry::default();
    let edge_metrics = EdgeMetrics::register(&mut registry);
    let router_metrics = RouterMetrics::register(&mut registry);
    let loop_metrics = LoopMetrics::register(&mut registry);
    let readiness = Readiness::new();
    let view = Arc::new(Mutex::new(StatusView {
        installation: Installation {
            addresses: standalone_addresses(&args),
            crd_bundle: CrdBundle::BuiltIn,
            missing_kinds: Vec::new(),
        },
        ..StatusView::default()
    }));

    let status_view = view.clone();
    let admin = AdminServer::bind(
        args.admin_listen,
        AdminState {
            readiness: readiness.clone(),
            registry: Arc::new(registry),
            status: Some(Arc::new(move || {
                status_view
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .document()
            })),
        },
    )
    .await?;
    tracing::info!(addr = %admin.local_addr(), "admin endpoints listening");
    tokio::spawn(admin.run(shutdown.clone()));

    let edge = Edge::bind(
        EdgeConfig {
            https_listen: args.https_listen,
            http_listen: args.http_listen,
            limits: args.edge_limits.limits(),
            ..EdgeConfig::default()
        },
        edge_metrics,
        readiness.flag("edge"),
    )
    .await
    .context("cannot start the edge")?;
    tracing::info!(https = %edge.https_addr(), http = %edge.http_addr(), "edge listening");
    let (edge_publisher, edge_acks) = Publisher::<EdgeSnapshot>::new();
    let (ack_tx, ack_rx) = mpsc::channel::<(String, Ack)>(ACK_CHANNEL);
    forward_acks("edge".into(), edge_acks, ack_tx.clone());
    let edge_task = tokio::spawn(edge.run(edge_publisher.subscribe("edge/0"), shutdown.clone()));

    let states = FileProvider::start(manifests.clone(), Duration::from_millis(args.debounce_ms))
        .with_context(|| format!("cannot watch {}", manifests.display()))?;
    tracing::info!(dir = %manifests.display(), "watching manifests");

    let control = ControlLoop {
        // Fixed contract: a listener is served by its protocol on either listen address, whatever
        // its port, unless ports are given.
        compiler: Compiler::with_settings(
            args.gateway
                .settings_or(&bulkhead_operator::translator::TranslateSettings::every_port()),
        ),
        routers: BTreeMap::new(),
        router_metrics,
        router_limits: args.router_limits.limits(),
        readiness,
        edge_publisher,
        ack_tx,
        view,
        metrics: loop_metrics,
        shutdown: shutdown.clone(),
        reported_errors: HashSet::new(),
        router_accept_proxy_from: args.router_accept_proxy_from.clone(),
        router_worker_threads: usize::from(args.router_worker_threads),
    };
    Ok(tokio::spawn(async move {
        control.run(states, ack_rx).await;
        match edge_task.await {
            Ok(r) => r.context("edge failed"),
            Err(e) => Err(anyhow::anyhow!("edge task failed: {e}")),
        }
    }))
}

struct ControlLoop {
    compiler: Compiler,
    routers: BTreeMap<String, RunningRouter>,
    router_metrics: Arc<RouterMetrics>,
    /// Limits of every tenant router (defaults with the command line's overrides).
    router_limits: bulkhead_router::RouterLimits,
    readiness: Readiness,
    edge_publisher: Publisher<EdgeSnapshot>,
    ack_tx: mpsc::Sender<(String, Ack)>,
    view: Arc<Mutex<StatusView>>,
    metrics: LoopMetrics,
    shutdown: CancellationToken,
    reported_errors: HashSet<String>,
    /// Who the routers accept PROXY headers from (see [`StandaloneArgs::router_accept_proxy_from`]).
    router_accept_proxy_from: Vec<Cidr>,
    /// Worker threads of each router's runtime (see [`StandaloneArgs::router_worker_threads`]).
    router_worker_threads: usize,
}

impl ControlLoop {
    async fn run(
        mut self,
        mut states: tokio::sync::watch::Receiver<Arc<LoadedState>>,
        mut acks: mpsc::Receiver<(String, Ack)>,
    ) {
        let initial = states.borrow_and_update().clone();
        self.apply(&initial).await;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                changed = states.changed() => {
                    if changed.is_err() {
                        tracing::error!("the file provider stopped; keeping the last configuration");
                        self.shutdown.cancelled().await;
                        break;
                    }
                    let state = states.borrow_and_update().clone();
                    self.apply(&state).await;
                }
                Some((component, ack)) = acks.recv() => self.record_ack(component, ack),
            }
        }
        for (_, r) in std::mem::take(&mut self.routers) {
            r.stop.cancel();
        }
    }

    fn record_ack(&mut self, component: String, ack: Ack) {
        let mut view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        match ack.outcome {
            Ok(()) => {
                tracing::debug!(component, version = ack.version, "snapshot acknowledged");
                let entry = view.acked.entry(component).or_insert((0, None));
                entry.0 = entry.0.max(ack.version);
                entry.1 = None;
            }
            Err(reason) => {
                self.metrics.snapshot_rejections.inc();
                tracing::warn!(component, version = ack.version, %reason, "snapshot rejected; the previous one keeps serving");
                view.acked.entry(component).or_insert((0, None)).1 = Some(reason);
            }
        }
        view.refresh();
    }

    async fn apply(&mut self, state: &LoadedState) {
        self.report_load_errors(state);
        self.reconcile_routers(state).await;
        let endpoints: BTreeMap<String, RouterEndpoints> = self
            .routers
            .iter()
            .map(|(t, r)| (t.clone(), r.endpoints.clone()))
            .collect();
        let out = self.compiler.compile(&state.objects, &endpoints);
        self.metrics.compiles.inc();
        tracing::debug!(
            generation = state.generation,
            recomputed = ?out.recomputed,
            statuses = out.statuses.len(),
            "manifests compiled"
        );
        if let Some(edge) = out.edge {
            tracing::info!(version = edge.version, hash = %edge.hash, routes = edge.routes.len(), "edge snapshot published");
            self.edge_publisher.publish(edge);
        }
        let mut view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        for snapshot in out.changed {
            let tenant = snapshot.tenant.clone();
            match self.routers.get(&tenant) {
                Some(r) => {
                    tracing::info!(tenant, version = snapshot.version, hash = %snapshot.hash, "tenant snapshot published");
                    view.published.insert(tenant, snapshot.version);
                    r.publisher.publish_shared(snapshot);
                }
                None => tracing::warn!(tenant, "snapshot for a tenant without a router"),
            }
        }
        for tenant in out.removed {
            view.published.remove(&tenant);
            view.acked.remove(&tenant);
        }
        view.compiled = out.statuses;
        view.load_errors = state.errors.iter().map(ToString::to_string).collect();
        view.refresh();
        self.metrics
            .load_errors
            .set(i64::try_from(state.errors.len()).unwrap_or(i64::MAX));
    }

    fn report_load_errors(&mut self, state: &LoadedState) {
        let current: HashSet<String> = state.errors.iter().map(ToString::to_string).collect();
        for e in current.difference(&self.reported_errors) {
            tracing::warn!(error = %e, "manifest rejected; the last good configuration keeps serving");
        }
        self.reported_errors = current;
    }

    /// Starts a router for every Tenant object and stops routers of removed tenants.
    async fn reconcile_routers(&mut self, state: &LoadedState) {
        let wanted: HashSet<String> = state
            .objects
            .tenants
            .iter()
            .filter_map(|t| t.metadata.name.clone())
            .collect();
        let gone: Vec<String> = self
            .routers
            .keys()
            .filter(|t| !wanted.contains(*t))
            .cloned()
            .collect();
        for tenant in gone {
            if let Some(r) = self.routers.remove(&tenant) {
                tracing::info!(tenant, "tenant removed: stopping its router");
                r.stop.cancel();
                self.readiness.remove(&router_component(&tenant));
            }
        }
        for tenant in wanted {
            if self.routers.contains_key(&tenant) {
                continue;
            }
            match self.start_router(&tenant).await {
                Ok(r) => {
                    self.routers.insert(tenant, r);
                }
                Err(e) => tracing::error!(tenant, error = %e, "cannot start the tenant router"),
            }
        }
    }

    /// Starts `tenant`'s router on runtimes of its own (threads named after the tenant, one per
    /// worker), so that in one process, as in a cluster, one tenant's load never queues another
    /// tenant's tasks.
    async fn start_router(&self, tenant: &str) -> anyhow::Result<RunningRouter> {
        let loopback: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        let config = RouterConfig {
            accept_proxy_from: self.router_accept_proxy_from.clone(),
            limits: self.router_limits.clone(),
            ..RouterConfig::new(tenant, loopback, loopback)
        };
        // A current-thread runtime per worker, as `bulkhead-dataplane router` runs it (see
        // `bulkhead_net::workers`): worker 0 on the thread below, the others beside it.
        let (runtime, workers, others) =
            bulkhead_net::workers::start(&format!("router-{tenant}"), self.router_worker_threads)
                .context("cannot start the tenant router's runtimes")?;
        let (publisher, acks) = Publisher::<TenantSnapshot>::new();
        forward_acks(tenant.to_owned(), acks, self.ack_tx.clone());
        let stop = self.shutdown.child_token();
        let subscription = publisher.subscribe(format!("router/{tenant}/0"));
        let (bound_tx, bound_rx) = oneshot::channel();
        let metrics = self.router_metrics.clone();
        let ready = self.readiness.flag(router_component(tenant));
        let name = tenant.to_owned();
        let token = stop.clone();
        std::thread::Builder::new()
            .name(format!("router-{tenant}"))
            .spawn(move || {
                bulkhead_net::workers::enter(&workers, 0);
                runtime.block_on(async move {
                    let router = match Router::bind(config, metrics, ready).await {
                        Ok(router) => router,
                        Err(e) => {
                            let _ = bound_tx.send(Err(e));
                            return;
                        }
                    };
                    let endpoints = RouterEndpoints {
                        https: vec![router.https_addr()],
                        http: vec![router.http_addr()],
                    };
                    if bound_tx.send(Ok(endpoints)).is_err() {
                        return;
                    }
                    if let Err(e) = router.run(subscription, token).await {
                        tracing::error!(tenant = name, error = %e, "tenant router stopped with an error");
                    }
                });
                runtime.shutdown_timeout(ROUTER_RUNTIME_SHUTDOWN);
                drop(others);
            })
            .context("cannot start the tenant router's thread")?;
        let endpoints = bound_rx
            .await
            .context("the tenant router's thread ended before binding")??;
        tracing::info!(tenant, https = %endpoints.https[0], http = %endpoints.http[0], "tenant router started");
        Ok(RunningRouter {
            publisher,
            endpoints,
            stop,
        })
    }
}

fn router_component(tenant: &str) -> String {
    format!("router/{tenant}")
}

fn forward_acks(component: String, mut acks: mpsc::Receiver<Ack>, to: mpsc::Sender<(String, Ack)>) {
    tokio::spawn(async move {
        while let Some(ack) = acks.recv().await {
            if to.send((component.clone(), ack)).await.is_err() {
                return;
            }
        }
    });
}
