//! `bulkhead-bench bench-candidate`: plugs one tier into the load harness in `shared/bench`.
//!
//! The harness describes routes in a small text file (`$BENCH_ROUTES`, replaced atomically on every
//! change) instead of Gateway API objects. This adapter turns that file into the same snapshots the
//! operator compiles and feeds them to a real edge or tenant router through the same subscription
//! interface, so what is measured is the production data path, minus the control plane:
//!
//! * edge: `<sni-host> <tls-backend host:port>` → one tenant per host, PROXY protocol off (the harness's
//!   TLS backends are plain nginx);
//! * router: `<host> <path-prefix> <http-backend host:port> <cert.crt> <key.key>` → one tenant owning
//!   `*`, a certificate per host (default certificate for unknown SNI), longest prefix first.

use anyhow::Context;
use bulkhead_admin::Readiness;
use bulkhead_edge::{Edge, EdgeConfig, EdgeMetrics};
use bulkhead_router::{Router, RouterConfig, RouterMetrics};
use bulkhead_snapshot::{handoff, ACK_QUEUE};
use bulkhead_snapshot::{
    Backend, BackendProtocol, Certificate, EdgeRoute, EdgeSnapshot, HttpMatch, ListenerRef,
    PathMatch, RouteEntry, RouteRef, RouterEndpoints, Sealed, TenantSnapshot, TlsTerminate,
    VirtualHost, WeightedBackend,
};
use bulkhead_snapshot_wire::cert_reload::stamp_now;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// New connections per second the harness's one source may open at the edge: far above what it
/// reaches, so no per-source rate limit shapes the figures.
const BENCH_SOURCE_CONNECT_RATE: u32 = 1_000_000;

/// The tenant name the router role serves.
const BENCH_TENANT: &str = "bench";

/// Runs the role named by `$BENCH_ROLE` until SIGTERM.
pub async fn run() -> anyhow::Result<()> {
    let role = env("BENCH_ROLE")?;
    let listen: SocketAddr = env("BENCH_LISTEN")?.parse().context("BENCH_LISTEN")?;
    let routes = PathBuf::from(env("BENCH_ROUTES")?);
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
        }
        stop.cancel();
    });
    match role.as_str() {
        "edge" => run_edge(listen, routes, shutdown).await,
        "router" => run_router(listen, routes, shutdown).await,
        other => anyhow::bail!("BENCH_ROLE must be edge or router, not {other:?}"),
    }
}

/// Arguments of `bulkhead-bench snapshot`.
#[derive(clap::Args, Debug)]
pub struct SnapshotArgs {
    /// Which tier's snapshot: `edge` or `router` (the routes file's format is that role's).
    #[arg(long)]
    role: String,
    /// The routes file, in `bench-candidate`'s format for that role.
    #[arg(long)]
    routes: PathBuf,
    /// Where to write the snapshot (JSON); a router snapshot's tenant is `bench`.
    #[arg(long)]
    out: PathBuf,
    /// Router: certificate for SNI names no route claims (with `--default-key`).
    #[arg(long, requires = "default_key")]
    default_cert: Option<PathBuf>,
    /// Key of `--default-cert`.
    #[arg(long, requires = "default_cert")]
    default_key: Option<PathBuf>,
}

/// Writes the snapshot `bench-candidate` would publish first for `args.routes`, for
/// `bulkhead-dataplane edge|router --bootstrap`.
pub fn write_snapshot(args: &SnapshotArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.routes)
        .with_context(|| format!("{}", args.routes.display()))?;
    let json = match args.role.as_str() {
        "edge" => {
            let mut snapshot = edge_snapshot(&text)?;
            snapshot.version = 1;
            snapshot.seal();
            serde_json::to_vec(&snapshot)
        }
        "router" => {
            let default_cert = args.default_cert.clone().zip(args.default_key.clone());
            let mut snapshot = router_snapshot(&text, default_cert.as_ref())?;
            snapshot.version = 1;
            snapshot.seal();
            serde_json::to_vec(&snapshot)
        }
        other => anyhow::bail!("--role must be edge or router, not {other:?}"),
    }
    .context("encoding the snapshot")?;
    std::fs::write(&args.out, json).with_context(|| format!("{}", args.out.display()))
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

async fn run_edge(
    listen: SocketAddr,
    routes: PathBuf,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = EdgeMetrics::register(&mut registry);
    let readiness = Readiness::new();
    let mut config = EdgeConfig {
        https_listen: listen,
        http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..EdgeConfig::default()
    };
    config.proxy_protocol = false;
    // The harness is one source (127.0.0.1) by design, opening thousands of connections a second:
    // the per-source limits would measure themselves, so they are set as wide as the global ones.
    let limits = &mut config.limits;
    limits.max_sniffing_per_source = limits.max_sniffing;
    limits.max_connections_per_source_per_tenant = limits.max_connections_per_tenant;
    limits.source_connect_rate = BENCH_SOURCE_CONNECT_RATE;
    limits.source_connect_burst = BENCH_SOURCE_CONNECT_RATE;
    let edge = Edge::bind(config, metrics, readiness.flag("edge")).await?;
    // A hand-off, as the cluster transport gives the data plane: it keeps what it compiled, not
    // the snapshot.
    let (ack_tx, _acks) = tokio::sync::mpsc::channel(ACK_QUEUE);
    let (publisher, subscription) = handoff("edge/bench", ack_tx);
    let task = tokio::spawn(edge.run(subscription, shutdown.clone()));
    watch_routes(&routes, &shutdown, move |text, version| {
        let mut snapshot = edge_snapshot(text)?;
        snapshot.version = version;
        snapshot.seal();
        publisher.put(std::sync::Arc::new(snapshot));
        Ok(())
    })
    .await?;
    task.await.context("edge task")??;
    Ok(())
}

async fn run_router(
    listen: SocketAddr,
    routes: PathBuf,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = RouterMetrics::register(&mut registry);
    let readiness = Readiness::new();
    let mut config = RouterConfig::new(BENCH_TENANT, listen, SocketAddr::from(([127, 0, 0, 1], 0)));
    config.expect_proxy = false;
    config.tls_resumption = std::env::var("BENCH_TLS_RESUMPTION").is_ok_and(|v| v == "1");
    if let Some(secs) = std::env::var("BENCH_DRAIN_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        config.limits.drain_timeout = Duration::from_secs(secs);
    }
    let router = Router::bind(config, metrics, readiness.flag("router")).await?;
    // A hand-off, as the cluster transport gives the data plane: it keeps what it compiled, not
    // the snapshot.
    let (ack_tx, _acks) = tokio::sync::mpsc::channel(ACK_QUEUE);
    let (publisher, subscription) = handoff("router/bench", ack_tx);
    let task = tokio::spawn(router.run(subscription, shutdown.clone()));
    let default_cert = match (
        std::env::var("BENCH_DEFAULT_CERT"),
        std::env::var("BENCH_DEFAULT_KEY"),
    ) {
        (Ok(c), Ok(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
        _ => None,
    };
    watch_routes(&routes, &shutdown, move |text, version| {
        let mut snapshot = router_snapshot(text, default_cert.as_ref())?;
        snapshot.version = version;
        snapshot.seal();
        publisher.put(std::sync::Arc::new(snapshot));
        Ok(())
    })
    .await?;
    task.await.context("router task")??;
    Ok(())
}

/// Publishes the routes file now and whenever it is replaced, until `shutdown`.
///
/// The file's directory is watched with inotify (through `notify`): the harness replaces the file
/// by renaming a new one over it, and an idle data plane must not pay for polling. The file is read
/// and its snapshot built on the watcher's thread, as the cluster transport decodes snapshots off
/// the data plane's workers: a route change does not wait for them.
async fn watch_routes(
    path: &Path,
    shutdown: &CancellationToken,
    publish: impl FnMut(&str, u64) -> anyhow::Result<()> + Send + 'static,
) -> anyhow::Result<()> {
    use notify::{RecursiveMode, Watcher};
    let routes = std::sync::Arc::new(std::sync::Mutex::new(RoutesFile {
        path: path.to_owned(),
        version: 0,
        seen: None,
        publish,
    }));
    let on_event = std::sync::Arc::clone(&routes);
    let name = path.file_name().map(ToOwned::to_owned);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let touches_file = res.is_ok_and(|event| {
            !matches!(event.kind, notify::EventKind::Access(_))
                && event.paths.iter().any(|p| p.file_name() == name.as_deref())
        });
        if touches_file {
            tracing::debug!("routes file event");
            RoutesFile::check(&on_event);
        }
    })
    .context("inotify watcher")?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", dir.display()))?;
    // The first version, read once the watch is in place so that no change is missed.
    tokio::task::spawn_blocking(move || RoutesFile::check(&routes))
        .await
        .context("reading the routes file")?;
    shutdown.cancelled().await;
    drop(watcher);
    Ok(())
}

/// The routes file and what was last published from it.
struct RoutesFile<F> {
    path: PathBuf,
    version: u64,
    /// What identifies a version of the file (the harness renames a new file over it): its
    /// metadata stamp. Keeping this rather than the text keeps the adapter's own memory out of the
    /// router's RSS.
    seen: bulkhead_snapshot_wire::cert_reload::Stamp,
    publish: F,
}

impl<F: FnMut(&str, u64) -> anyhow::Result<()>> RoutesFile<F> {
    /// Publishes the file if it changed since the last time (blocking: file reads).
    fn check(this: &std::sync::Mutex<Self>) {
        let mut this = this
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = stamp_now(&this.path);
        if current.is_none() {
            tracing::warn!(path = %this.path.display(), "cannot read the routes file");
            return;
        }
        if current == this.seen {
            return;
        }
        match std::fs::read_to_string(&this.path) {
            Ok(text) => {
                this.version += 1;
                let version = this.version;
                if let Err(e) = (this.publish)(&text, version) {
                    tracing::error!(error = %e, "routes file rejected");
                }
                this.seen = current;
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the routes file"),
        }
    }
}

fn lines(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect())
}

/// `<sni-host> <backend>` lines → one tenant per host whose "router" is the TLS backend.
fn edge_snapshot(text: &str) -> anyhow::Result<EdgeSnapshot> {
    let mut snapshot = EdgeSnapshot::default();
    for (i, fields) in lines(text).enumerate() {
        let [host, backend, ..] = fields[..] else {
            anyhow::bail!("edge route line {} needs <sni-host> <backend>", i + 1);
        };
        let addr: SocketAddr = backend
            .parse()
            .with_context(|| format!("backend {backend}"))?;
        let tenant = format!("t{i}");
        snapshot.routes.push(EdgeRoute {
            hostname: host.to_ascii_lowercase(),
            tenant: tenant.clone(),
        });
        snapshot.tenants.insert(
            tenant,
            RouterEndpoints {
                https: vec![addr],
                http: vec![],
            },
        );
    }
    Ok(snapshot)
}

/// `<host> <prefix> <backend> <crt> <key>` lines → one tenant snapshot.
fn router_snapshot(
    text: &str,
    default_cert: Option<&(PathBuf, PathBuf)>,
) -> anyhow::Result<TenantSnapshot> {
    let mut snapshot = TenantSnapshot {
        tenant: BENCH_TENANT.into(),
        namespace: BENCH_TENANT.into(),
        hostnames: vec!["*".into()],
        ..TenantSnapshot::default()
    };
    let listener = ListenerRef {
        namespace: BENCH_TENANT.into(),
        gateway: "bench".into(),
        listener: "https".into(),
        port: 443,
    };
    let mut load_cert = |crt: &Path, key: &Path| -> anyhow::Result<String> {
        let id = crt.display().to_string();
        if !snapshot.certificates.contains_key(&id) {
            let cert_pem =
                std::fs::read_to_string(crt).with_context(|| format!("{}", crt.display()))?;
            let key_pem =
                std::fs::read_to_string(key).with_context(|| format!("{}", key.display()))?;
            snapshot
                .certificates
                .insert(id.clone(), Certificate { cert_pem, key_pem });
        }
        Ok(id)
    };
    let mut terminate: BTreeMap<String, String> = BTreeMap::new();
    if let Some((crt, key)) = default_cert {
        terminate.insert("*".into(), load_cert(crt, key)?);
    }
    let mut vhosts: BTreeMap<String, Vec<RouteEntry>> = BTreeMap::new();
    let mut backends: BTreeMap<String, Backend> = BTreeMap::new();
    for (i, fields) in lines(text).enumerate() {
        let [host, prefix, backend, crt, key, ..] = fields[..] else {
            anyhow::bail!(
                "router route line {} needs <host> <prefix> <backend> <crt> <key>",
                i + 1
            );
        };
        let host = host.to_ascii_lowercase();
        let addr: SocketAddr = backend
            .parse()
            .with_context(|| format!("backend {backend}"))?;
        let cert = load_cert(Path::new(crt), Path::new(key))?;
        terminate.insert(host.clone(), cert);
        backends
            .entry(backend.to_owned())
            .or_insert_with(|| Backend {
                protocol: BackendProtocol::Http1,
                endpoints: vec![addr],
                tls: None,
            });
        // Room for one route per host (the common case) rather than the four a first `push` reserves.
        let routes = vhosts.entry(host).or_insert_with(|| Vec::with_capacity(1));
        routes.push(RouteEntry {
            route: RouteRef {
                kind: "HTTPRoute".into(),
                namespace: BENCH_TENANT.into(),
                name: format!("line{}", i + 1),
                rule: 0,
            },
            matches: HttpMatch {
                path: Some(PathMatch::PathPrefix(prefix.to_owned())),
                ..HttpMatch::default()
            },
            filters: vec![],
            backends: vec![WeightedBackend {
                backend: Some(backend.to_owned()),
                weight: 1,
                filters: vec![],
            }],
            timeouts: Default::default(),
        });
    }
    snapshot.backends = backends;
    snapshot.https.terminate = terminate
        .into_iter()
        .map(|(hostname, certificate)| TlsTerminate {
            hostname,
            certificate,
            listener: listener.clone(),
        })
        .collect();
    snapshot.https.virtual_hosts = vhosts
        .into_iter()
        .map(|(hostname, mut routes)| {
            routes.sort_by_key(|r| match &r.matches.path {
                Some(PathMatch::PathPrefix(p)) => std::cmp::Reverse(p.len()),
                _ => std::cmp::Reverse(0),
            });
            VirtualHost {
                hostname,
                listener_port: 443,
                routes,
            }
        })
        .collect();
    // What the router receives from the operator is decoded from JSON, without spare capacity.
    snapshot.shrink_to_fit();
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_routes_become_one_tenant_per_host() {
        let s = edge_snapshot(
            "# c\na.tenant1.example 127.0.0.1:18443\nB.tenant2.example 127.0.0.1:18444\n",
        )
        .unwrap();
        assert_eq!(s.routes.len(), 2);
        assert_eq!(s.routes[1].hostname, "b.tenant2.example");
        assert_eq!(
            s.tenants["t1"].https,
            vec!["127.0.0.1:18444".parse().unwrap()]
        );
        assert!(edge_snapshot("lonely-host\n").is_err());
    }

    #[test]
    fn written_snapshots_decode_and_a_router_would_serve_them() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (crt, pem_key) = (dir.path().join("a.crt"), dir.path().join("a.key"));
        std::fs::write(&crt, cert.pem()).unwrap();
        std::fs::write(&pem_key, key.serialize_pem()).unwrap();
        let routes = dir.path().join("routes.txt");
        let out = dir.path().join("snapshot.json");
        let args = |role: &str| SnapshotArgs {
            role: role.into(),
            routes: routes.clone(),
            out: out.clone(),
            default_cert: None,
            default_key: None,
        };

        let line = |host: &str| {
            format!(
                "{host} / 127.0.0.1:18080 {} {}\n",
                crt.display(),
                pem_key.display()
            )
        };
        std::fs::write(&routes, line("a.example") + &line("b.example")).unwrap();
        write_snapshot(&args("router")).unwrap();
        let router: TenantSnapshot = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!((router.version, router.https.virtual_hosts.len()), (1, 2));
        assert_eq!(
            router.certificates.len(),
            1,
            "one certificate shared by both hosts"
        );
        bulkhead_router::validate_snapshot(&router).expect("a router serves it");

        std::fs::write(&routes, "a.example 127.0.0.1:18443\n").unwrap();
        write_snapshot(&args("edge")).unwrap();
        let edge: EdgeSnapshot = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!((edge.version, edge.routes.len()), (1, 1));

        assert!(write_snapshot(&args("gateway")).is_err());
    }
}
