//! `bulkhead-bench bench-operator`: the control plane's scale benchmark (a benchmark, not a test).
//!
//! It builds a synthetic cluster shaped like the origin story's tenants (per tenant: a Namespace, a
//! Tenant, a Gateway with an HTTP and an HTTPS listener and its certificate Secret, `--services`
//! Services each with an EndpointSlice of `--endpoints` addresses, `--routes` HTTPRoutes, and the
//! router's Service and EndpointSlice), feeds it to the operator's real control loop as watcher
//! initial lists, and serves snapshots from the real snapshot server over TLS on loopback to
//! `--watched` connected snapshot clients (one per sampled tenant, acknowledging like routers).
//!
//! Then it measures, in three phases, the time from an object change entering the control loop to
//! the changed snapshot being decoded by the tenant's connected client:
//!
//! * `idle`: probes only (one route change of a watched tenant every `1/--probe-rate` s);
//! * `spread`: probes while `--churn-rate` route changes per second hit random other tenants;
//! * `hot`: probes while the same churn hits one single other tenant.
//!
//! It prints the operator's RSS, the full compile time, and p50/p99/max latency per phase.

use anyhow::Context;
use bulkhead_operator::index::Kind;
use bulkhead_operator::kube::store::StoreEvent;
use bulkhead_operator::kube::watch::WATCHED_KINDS;
use bulkhead_operator::kube::{spawn_fed_control_loop, FedControlLoop};
use bulkhead_operator::objects::Object;
use bulkhead_snapshot::TenantSnapshot;
use bulkhead_snapshot_wire::{
    server_tls_config, subscribe, ClientConfig, Identity, SnapshotServer, StaticTokens, StreamName,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a probe may take before it counts as lost.
const PROBE_DEADLINE: Duration = Duration::from_secs(10);

/// Arguments of `bulkhead-bench bench-operator`.
#[derive(clap::Args, Debug, Clone)]
pub struct ScaleArgs {
    /// Tenants in the synthetic cluster.
    #[arg(long, default_value_t = 200)]
    pub tenants: usize,
    /// Services (each with one EndpointSlice) per tenant.
    #[arg(long, default_value_t = 60)]
    pub services: usize,
    /// HTTPRoutes per tenant.
    #[arg(long, default_value_t = 20)]
    pub routes: usize,
    /// Endpoints per EndpointSlice.
    #[arg(long, default_value_t = 3)]
    pub endpoints: usize,
    /// Tenants with a connected snapshot client (evenly sampled).
    #[arg(long, default_value_t = 20)]
    pub watched: usize,
    /// Probes per phase.
    #[arg(long, default_value_t = 200)]
    pub probes: usize,
    /// Probes per second.
    #[arg(long, default_value_t = 20.0)]
    pub probe_rate: f64,
    /// Background route changes per second in the `spread` and `hot` phases.
    #[arg(long, default_value_t = 100.0)]
    pub churn_rate: f64,
    /// Extra HTTPS listeners per tenant Gateway (at most 60), each with its own hostname and its
    /// own certificate Secret (the same `N` certificates in every tenant).
    #[arg(long, default_value_t = 0)]
    pub certificates: usize,
}

/// Pending probes: (tenant, sequence number) → when the change was sent.
type Pending = Arc<Mutex<HashMap<(String, u64), Instant>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Resident and peak memory of this process, in KiB.
fn memory_kib() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn tenant_name(i: usize) -> String {
    format!("t{i:05}")
}

/// The synthetic cluster's objects.
struct Cluster {
    args: ScaleArgs,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    /// The extra listeners' certificates (`--certificates`): PEM chain and key.
    extra: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Cluster {
    fn object(json: Value) -> anyhow::Result<Object> {
        Object::from_json(json).map_err(|e| anyhow::anyhow!("synthetic object: {e}"))
    }

    /// Every object of `kind` of tenant `i`.
    fn objects(&self, kind: Kind, i: usize) -> anyhow::Result<Vec<Object>> {
        let t = tenant_name(i);
        let a = &self.args;
        let mut out = Vec::new();
        match kind {
            Kind::Tenant => out.push(Self::object(json!({
                "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant",
                "metadata": {"name": t, "uid": format!("00000000-0000-4000-8000-{i:012}"),
                             "creationTimestamp": format!("2026-01-01T00:00:00Z"), "generation": 1},
                "spec": {"namespace": t, "hostnames": [format!("*.{t}.test")]}
            }))?),
            Kind::Namespace => out.push(Self::object(json!({
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": t}
            }))?),
            Kind::GatewayClass if i == 0 => out.push(Self::object(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                "metadata": {"name": "bulkhead"},
                "spec": {"controllerName": bulkhead_crds::CONTROLLER_NAME}
            }))?),
            Kind::Gateway => {
                let mut listeners = vec![
                    json!({"name": "http", "protocol": "HTTP", "port": 80, "hostname": format!("*.{t}.test")}),
                    json!({"name": "https", "protocol": "HTTPS", "port": 443, "hostname": format!("*.{t}.test"),
                           "tls": {"mode": "Terminate", "certificateRefs": [{"name": "web-tls"}]}}),
                ];
                listeners.extend((0..self.extra.len()).map(|c| {
                    json!({"name": format!("https-{c}"), "protocol": "HTTPS", "port": 443,
                           "hostname": format!("h{c}.{t}.test"),
                           "tls": {"mode": "Terminate", "certificateRefs": [{"name": format!("web-tls-{c}")}]}})
                }));
                out.push(Self::object(json!({
                    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                    "metadata": {"name": "web", "namespace": t, "generation": 1},
                    "spec": {"gatewayClassName": "bulkhead", "listeners": listeners}
                }))?);
            }
            Kind::HttpRoute => {
                for r in 0..a.routes {
                    out.push(self.route(i, r, "/app")?);
                }
            }
            Kind::Secret => {
                let pairs = std::iter::once(("web-tls".to_owned(), &self.cert_pem, &self.key_pem))
                    .chain(
                        self.extra
                            .iter()
                            .enumerate()
                            .map(|(c, (crt, key))| (format!("web-tls-{c}"), crt, key)),
                    );
                for (name, crt, key) in pairs {
                    let mut data = BTreeMap::new();
                    data.insert("tls.crt".to_owned(), ByteString(crt.clone()));
                    data.insert("tls.key".to_owned(), ByteString(key.clone()));
                    out.push(Object::Secret(Box::new(Secret {
                        metadata: ObjectMeta {
                            name: Some(name),
                            namespace: Some(t.clone()),
                            ..ObjectMeta::default()
                        },
                        type_: Some("kubernetes.io/tls".into()),
                        data: Some(data),
                        ..Secret::default()
                    })));
                }
            }
            Kind::Service => {
                for s in 0..a.services {
                    out.push(Self::object(json!({
                        "apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": format!("svc-{s}"), "namespace": t},
                        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
                    }))?);
                }
                out.push(Self::object(json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "bulkhead-router", "namespace": t},
                    "spec": {"ports": [{"name": "https", "port": 8443}, {"name": "http", "port": 8080}]}
                }))?);
            }
            Kind::EndpointSlice => {
                for s in 0..a.services {
                    let endpoints: Vec<Value> = (0..a.endpoints)
                        .map(|e| {
                            json!({"addresses": [format!("10.{}.{}.{}", i % 250, s, e + 1)],
                                   "conditions": {"ready": true}})
                        })
                        .collect();
                    out.push(Self::object(json!({
                        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": {"name": format!("svc-{s}-x7k2p"), "namespace": t,
                                     "labels": {"kubernetes.io/service-name": format!("svc-{s}")}},
                        "addressType": "IPv4",
                        "ports": [{"name": "http", "port": 8080}],
                        "endpoints": endpoints
                    }))?);
                }
                out.push(Self::object(json!({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": "bulkhead-router-q9f4s", "namespace": t,
                                 "labels": {"kubernetes.io/service-name": "bulkhead-router"}},
                    "addressType": "IPv4",
                    "ports": [{"name": "https", "port": 8443}, {"name": "http", "port": 8080}],
                    "endpoints": [{"addresses": [format!("10.200.{}.{}", i / 250, i % 250)]},
                                  {"addresses": [format!("10.201.{}.{}", i / 250, i % 250)]}]
                }))?);
            }
            _ => {}
        }
        Ok(out)
    }

    /// Route `r` of tenant `i`, its first rule matching `path`.
    fn route(&self, i: usize, r: usize, path: &str) -> anyhow::Result<Object> {
        let t = tenant_name(i);
        let s = self.args.services.max(1);
        Self::object(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": format!("r{r}"), "namespace": t, "generation": 1},
            "spec": {
                "parentRefs": [{"name": "web"}],
                "hostnames": [format!("r{r}.{t}.test")],
                "rules": [
                    {"matches": [{"path": {"type": "PathPrefix", "value": path}}],
                     "backendRefs": [{"name": format!("svc-{}", (3 * r) % s), "port": 80}]},
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/api"},
                                  "headers": [{"name": "x-canary", "value": "1"}]}],
                     "backendRefs": [{"name": format!("svc-{}", (3 * r + 1) % s), "port": 80, "weight": 90},
                                     {"name": format!("svc-{}", (3 * r + 2) % s), "port": 80, "weight": 10}]}
                ]
            }
        }))
    }
}

/// Latency percentiles of one phase.
struct PhaseResult {
    name: &'static str,
    samples: Vec<Duration>,
    lost: usize,
    compiles: u64,
}

impl PhaseResult {
    fn percentile(&self, p: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((self.samples.len() as f64 - 1.0) * p).round() as usize;
        self.samples[idx.min(self.samples.len() - 1)]
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the benchmark and prints its results.
pub async fn run(args: ScaleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.tenants >= 2, "--tenants must be at least 2");
    anyhow::ensure!(
        args.certificates <= 60,
        "--certificates must be at most 60 (a Gateway has at most 64 listeners)"
    );
    let (rss_start, _) = memory_kib();

    let ca = bulkhead::pki::DemoCa::new("bench-operator CA").context("CA")?;
    let tenant_cert = ca.issue(&["*.bench.test"]).context("tenant certificate")?;
    let server_cert = ca.issue(&["localhost"]).context("server certificate")?;
    let extra = (0..args.certificates)
        .map(|c| {
            let leaf = ca.issue(&[&format!("h{c}.bench.test")])?;
            Ok((leaf.cert_pem.into_bytes(), leaf.key_pem.into_bytes()))
        })
        .collect::<Result<Vec<_>, rcgen::Error>>()
        .context("extra certificates")?;
    let cluster = Cluster {
        args: args.clone(),
        cert_pem: tenant_cert.cert_pem.into_bytes(),
        key_pem: tenant_cert.key_pem.into_bytes(),
        extra,
    };

    // The watched tenants, evenly spread; the hot tenant is none of them.
    let watched_n = args.watched.clamp(1, args.tenants - 1);
    let step = args.tenants / watched_n;
    let watched: Vec<usize> = (0..watched_n).map(|k| k * step).collect();
    let hot = if step > 1 { 1 } else { args.tenants - 1 };

    let mut tokens = StaticTokens::new();
    for &i in &watched {
        tokens.insert(&format!("token-{i}"), Identity::Tenant(tenant_name(i)));
    }
    let (server, acks) = SnapshotServer::new(tokens);
    let tls = server_tls_config(
        server_cert.cert_pem.as_bytes(),
        server_cert.key_pem.as_bytes(),
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    {
        let server = server.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move { server.serve(listener, tls, stop.cancelled_owned()).await });
    }

    let mut fed: FedControlLoop = spawn_fed_control_loop(server, acks, shutdown.clone());
    let (events, metrics) = (fed.events.clone(), fed.metrics.clone());
    let ready = &mut fed.ready;

    // Initial lists, kind by kind, as the watchers deliver them.
    let load_start = Instant::now();
    let mut objects = 0usize;
    for &kind in WATCHED_KINDS {
        events.send(StoreEvent::Init(kind)).await?;
        for i in 0..args.tenants {
            for o in cluster.objects(kind, i)? {
                objects += 1;
                events.send(StoreEvent::InitApply(o)).await?;
            }
        }
        events.send(StoreEvent::InitDone(kind)).await?;
    }
    let listed = Instant::now();
    let (rss_listed, _) = memory_kib();
    ready.wait_for(|r| *r).await?;
    let compiled = Instant::now();
    let (rss_loaded, _) = memory_kib();
    println!(
        "tenants {} objects {} | lists fed in {:.0} ms; full compilation (every tenant translated and published) done {:.0} ms after the last list, in {} rounds",
        args.tenants,
        objects,
        ms(listed - load_start),
        ms(compiled - listed),
        metrics.compiles(),
    );

    // Connected clients.
    let dir = tempfile_dir()?;
    let ca_pem = ca.cert_pem().as_bytes().to_vec();
    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    let (sample_tx, mut samples) = mpsc::unbounded_channel::<Duration>();
    for &i in &watched {
        let token_path = dir.join(format!("token-{i}"));
        std::fs::write(&token_path, format!("token-{i}"))?;
        let config = ClientConfig {
            addr: addr.to_string(),
            server_name: "localhost".into(),
            ca_pem: ca_pem.clone(),
            token_path,
            subscriber: format!("router/{}/bench", tenant_name(i)),
            ca_path: None,
            bootstrap_path: None,
        };
        let (mut sub, _driver) =
            subscribe::<TenantSnapshot>(config, StreamName::tenant(tenant_name(i))?).await?;
        let pending = Arc::clone(&pending);
        let sample_tx = sample_tx.clone();
        let name = tenant_name(i);
        tokio::spawn(async move {
            while let Some(snapshot) = sub.next().await {
                let now = Instant::now();
                let text = serde_json::to_string(&*snapshot).unwrap_or_default();
                if std::env::var_os("BENCH_SHOW_SNAPSHOT_SIZE").is_some() {
                    eprintln!("snapshot of {name}: {} bytes as JSON", text.len());
                }
                // A probe is served when the snapshot holds it or a later probe of the tenant
                // (a newer change of the same route supersedes it).
                if let Some(newest) = probe_markers(&text).into_iter().max() {
                    let mut pending = lock(&pending);
                    let served: Vec<(String, u64)> = pending
                        .keys()
                        .filter(|(t, seq)| *t == name && *seq <= newest)
                        .cloned()
                        .collect();
                    for key in served {
                        if let Some(sent) = pending.remove(&key) {
                            let _ = sample_tx.send(now - sent);
                        }
                    }
                }
                sub.ack(snapshot.version, Ok(()));
            }
        });
    }
    let mut connected = 0;
    while connected < watched.len() {
        connected = metrics.connected_routers();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (rss_connected, hwm) = memory_kib();
    println!(
        "RSS: start {:.1} MiB, objects cached {:.1} MiB, compiled {:.1} MiB ({:.1} KiB per tenant), with {} clients {:.1} MiB, peak {:.1} MiB",
        rss_start as f64 / 1024.0,
        rss_listed as f64 / 1024.0,
        rss_loaded as f64 / 1024.0,
        (rss_loaded.saturating_sub(rss_start)) as f64 / args.tenants as f64,
        watched.len(),
        rss_connected as f64 / 1024.0,
        hwm as f64 / 1024.0,
    );

    let mut seq = 0u64;
    let mut results = Vec::new();
    for phase in ["idle", "spread", "hot"] {
        let churn_stop = CancellationToken::new();
        if phase != "idle" {
            let events = events.clone();
            let cluster = Cluster {
                args: args.clone(),
                cert_pem: Vec::new(),
                key_pem: Vec::new(),
                extra: Vec::new(),
            };
            let stop = churn_stop.clone();
            let watched = watched.clone();
            let tenants = args.tenants;
            let routes = args.routes.max(1);
            let rate = args.churn_rate;
            let spread = phase == "spread";
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
                let mut n: u64 = 0;
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    n += 1;
                    let mut i = if spread {
                        (n.wrapping_mul(2_654_435_761) % tenants as u64) as usize
                    } else {
                        hot
                    };
                    if watched.contains(&i) {
                        i = hot;
                    }
                    let r = (n as usize) % routes;
                    let Ok(route) = cluster.route(i, r, &format!("/churn/{n}")) else {
                        break;
                    };
                    if events.send(StoreEvent::Apply(route)).await.is_err() {
                        break;
                    }
                }
            });
        }
        let compiles_before = metrics.compiles();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.probe_rate));
        let mut got = Vec::new();
        for k in 0..args.probes {
            tick.tick().await;
            seq += 1;
            let i = watched[k % watched.len()];
            let route = cluster.route(i, 0, &format!("/probe/{seq}"))?;
            lock(&pending).insert((tenant_name(i), seq), Instant::now());
            events.send(StoreEvent::Apply(route)).await?;
            while let Ok(d) = samples.try_recv() {
                got.push(d);
            }
        }
        let deadline = Instant::now() + PROBE_DEADLINE;
        while got.len() < args.probes && Instant::now() < deadline {
            if let Ok(Some(d)) =
                tokio::time::timeout(Duration::from_millis(100), samples.recv()).await
            {
                got.push(d);
            }
        }
        churn_stop.cancel();
        let lost = args.probes - got.len();
        lock(&pending).clear();
        got.sort();
        results.push(PhaseResult {
            name: phase,
            samples: got,
            lost,
            compiles: metrics.compiles() - compiles_before,
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (rss_end, hwm_end) = memory_kib();
    println!("| phase | probes | p50 ms | p99 ms | max ms | lost | compiles |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &results {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {} | {} |",
            r.name,
            r.samples.len(),
            ms(r.percentile(0.5)),
            ms(r.percentile(0.99)),
            ms(r.samples.last().copied().unwrap_or_default()),
            r.lost,
            r.compiles,
        );
    }
    println!(
        "RSS at end {:.1} MiB, peak {:.1} MiB",
        rss_end as f64 / 1024.0,
        hwm_end as f64 / 1024.0
    );
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The sequence numbers of every `/probe/<n>` path in a serialised snapshot.
fn probe_markers(text: &str) -> Vec<u64> {
    text.match_indices("/probe/")
        .filter_map(|(at, m)| {
            let rest = &text[at + m.len()..];
            let digits: &str = &rest[..rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len())];
            digits.parse().ok()
        })
        .collect()
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("bulkhead-bench-operator-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
