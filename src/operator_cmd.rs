//! `bulkhead operator`: the control plane in a cluster. Watches Tenants, Gateway API objects,
//! TLS Secrets, Services and EndpointSlices; serves snapshots over TLS to the edge and the routers
//! (authenticated by `TokenReview`); applies one tenant router per Tenant; writes statuses.
//!
//! Every replica watches and compiles, so a standby holds the compiled state and takes over at
//! once; the leader (a `coordination.k8s.io` Lease in the operator's namespace) serves snapshot
//! streams (acknowledgements must reach the replica that writes statuses) and writes to the
//! cluster: statuses, children, events. A replica becomes ready after its first full compilation;
//! the leader gives the Lease up on shutdown and exits with an error if it loses the Lease, so
//! Kubernetes restarts it as a candidate.

use anyhow::Context;
use bulkhead_admin::{AdminServer, AdminState, Readiness};
use bulkhead_operator::children::{self, ChildSettings, RouterResources};
use bulkhead_operator::kube::installation::{
    parse_service_ref, InstallationSource, DEFAULT_EDGE_SERVICE,
};
use bulkhead_operator::kube::leader::LeaderElector;
use bulkhead_operator::kube::leader_label::LeaderLabel;
use bulkhead_operator::kube::secret_data::DEFAULT_SECRET_FETCH_TIMEOUT;
use bulkhead_operator::kube::watch::{WatchSettings, DEFAULT_DEGRADE_AFTER};
use bulkhead_operator::kube::{self as provider, OperatorConfig, TenantDirectory, TokenReviewAuth};
use bulkhead_operator::metrics::{KindLabel, OperatorMetrics};
use bulkhead_snapshot_wire::cert_reload::DEFAULT_CERT_CHECK_INTERVAL;
use bulkhead_snapshot_wire::{
    watch_cert_files, watch_files, CertFiles, ReloadingCert, SnapshotServer,
};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Arguments of `bulkhead operator` (see `deploy/operator.yaml`).
#[derive(clap::Args, Debug, Clone)]
pub struct OperatorArgs {
    /// Snapshot API listener (HTTP/2 over TLS), for the edge and the routers.
    #[arg(long, default_value = "[::]:8443")]
    pub snapshot_listen: SocketAddr,
    /// Admin endpoints (`/healthz`, `/readyz`, `/metrics`).
    #[arg(long, default_value = "[::]:9901")]
    pub admin_listen: SocketAddr,
    /// PEM certificate chain of the snapshot API (leaf first).
    #[arg(long)]
    pub tls_cert: PathBuf,
    /// PEM private key of the snapshot API.
    #[arg(long)]
    pub tls_key: PathBuf,
    /// PEM CA certificate the routers trust for the snapshot API (copied to every tenant).
    #[arg(long)]
    pub ca_cert: PathBuf,
    /// The snapshot API's URL as routers reach it (`https://…`).
    #[arg(long)]
    pub operator_url: String,
    /// The namespace of the operator and the edge.
    #[arg(long, env = "POD_NAMESPACE", default_value = "bulkhead-system")]
    pub namespace: String,
    /// This pod's name: its identity in leader election (default: the host name).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Image of the tenant routers (the operator's own).
    #[arg(long, env = "BULKHEAD_ROUTER_IMAGE")]
    pub router_image: String,
    /// Networks (CIDR, comma separated) the tenant routers accept PROXY headers from: where the
    /// edge connects from (its pod CIDR, or node CIDR on the host network). Default: the private
    /// address ranges (the pod CIDR cannot be known).
    #[arg(long, value_delimiter = ',', default_values_t = bulkhead_proxy_io::cidr::networks(&bulkhead_proxy_io::cidr::PRIVATE_NETWORKS))]
    pub router_accept_proxy_from: Vec<bulkhead_proxy_io::cidr::Cidr>,
    /// `imagePullSecrets` of the router pods (comma separated Secret names). Each Secret must
    /// exist in every tenant namespace; the operator does not copy it.
    #[arg(long, value_delimiter = ',')]
    pub router_image_pull_secrets: Vec<String>,
    /// CPU request of each router container.
    #[arg(long, default_value = children::DEFAULT_CPU_REQUEST)]
    pub router_cpu_request: String,
    /// Memory request of each router container.
    #[arg(long, default_value = children::DEFAULT_MEMORY_REQUEST)]
    pub router_memory_request: String,
    /// CPU limit of each router container (none by default: throttling a proxy adds latency;
    /// set it where a LimitRange or ResourceQuota requires one).
    #[arg(long)]
    pub router_cpu_limit: Option<String>,
    /// Memory limit of each router container.
    #[arg(long, default_value = children::DEFAULT_MEMORY_LIMIT)]
    pub router_memory_limit: String,
    /// Namespaces (comma separated) the routers may connect to besides their own tenant's
    /// namespace, the operator and DNS: where cross-namespace backends live.
    #[arg(long, value_delimiter = ',')]
    pub router_egress_namespaces: Vec<String>,
    /// Seconds a kind's initial list may fail (anything but 404: 403, a broken conversion
    /// webhook) before the kind is served as empty and reported degraded, so every other kind
    /// and tenant is compiled.
    #[arg(long, env = "BULKHEAD_WATCH_DEGRADE_AFTER_SECS", default_value_t = DEFAULT_DEGRADE_AFTER.as_secs())]
    pub watch_degrade_after_secs: u64,
    /// Seconds one read of a referenced TLS Secret may take before it counts as failed (the
    /// Secret is then reported missing until it changes).
    #[arg(long, env = "BULKHEAD_SECRET_FETCH_TIMEOUT_SECS", default_value_t = DEFAULT_SECRET_FETCH_TIMEOUT.as_secs())]
    pub secret_fetch_timeout_secs: u64,
    /// The edge Service (NAMESPACE/NAME) whose status.loadBalancer.ingress becomes every served
    /// Gateway's status.addresses (unless --gateway-address is given).
    #[arg(long, env = "BULKHEAD_EDGE_SERVICE", default_value = DEFAULT_EDGE_SERVICE, value_parser = parse_service_ref)]
    pub edge_service: (String, String),
    /// Listener ports and static Gateway addresses.
    #[command(flatten)]
    pub gateway: crate::gateway_flags::GatewayArgs,
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The settings of the tenant routers the operator applies, from its flags; a bad value (not a
/// quantity, not a Secret or namespace name) is an error naming the setting.
fn child_settings(args: &OperatorArgs, ca_pem: String) -> anyhow::Result<ChildSettings> {
    let mut settings =
        ChildSettings::new(args.router_image.clone(), args.operator_url.clone(), ca_pem);
    settings.system_namespace = args.namespace.clone();
    settings.router_accept_proxy_from = args.router_accept_proxy_from.clone();
    settings.image_pull_secrets = args.router_image_pull_secrets.clone();
    settings.router_egress_namespaces = args.router_egress_namespaces.clone();
    settings.operator_snapshot_port = i32::from(args.snapshot_listen.port());
    settings.resources = children::router_resources(&RouterResources {
        cpu_request: args.router_cpu_request.clone(),
        memory_request: args.router_memory_request.clone(),
        cpu_limit: args.router_cpu_limit.clone(),
        memory_limit: Some(args.router_memory_limit.clone()),
    });
    children::validate_settings(&settings).context("invalid tenant router settings")?;
    Ok(settings)
}

/// Runs the operator until SIGTERM.
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let shutdown = bulkhead::process::shutdown_on_signal();
    let cert = Arc::new(
        ReloadingCert::new(&read(&args.tls_cert)?, &read(&args.tls_key)?)
            .context("invalid snapshot API certificate or key")?,
    );
    let tls = cert.server_config()?;
    let ca_pem = String::from_utf8(read(&args.ca_cert)?).context("--ca-cert is not PEM text")?;
    let (ca_tx, operator_ca) = watch::channel(ca_pem.clone());
    let settings = child_settings(&args, ca_pem)?;

    let client = provider::default_client()
        .await
        .context("cannot configure the Kubernetes client")?;

    let readiness = Readiness::new();
    let flag = readiness.flag("operator");
    // Not ready while the election itself fails (a missing Role, an API server that hangs): a
    // replica that can never lead must not look healthy.
    let election_health = readiness.flag("leader-election");
    let metrics = OperatorMetrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let admin = AdminServer::bind(
        args.admin_listen,
        AdminState {
            readiness,
            registry: Arc::new(registry),
            status: None,
        },
    )
    .await?;
    tokio::spawn(admin.run(shutdown.clone()));
    // A rotated CA bundle reaches the routers' CA ConfigMaps (the onboarding re-applies them).
    tokio::spawn(watch_files(
        vec![args.ca_cert.clone()],
        DEFAULT_CERT_CHECK_INTERVAL,
        move |contents| match String::from_utf8(contents.concat()) {
            Ok(pem) => {
                ca_tx.send_if_modified(|current| {
                    let changed = *current != pem;
                    *current = pem;
                    changed
                });
            }
            Err(_) => tracing::warn!("--ca-cert is not PEM text; the routers keep the previous CA"),
        },
        shutdown.clone().cancelled_owned(),
    ));
    // cert-manager renews the mounted Secret in place: new handshakes get the new pair.
    let reloads = metrics.certificate_reloads.clone();
    tokio::spawn(watch_cert_files(
        CertFiles {
            cert: args.tls_cert.clone(),
            key: args.tls_key.clone(),
        },
        cert,
        DEFAULT_CERT_CHECK_INTERVAL,
        move |loaded| {
            let kind = if loaded { "loaded" } else { "refused" };
            reloads.get_or_create(&KindLabel { kind }).inc();
        },
        shutdown.clone().cancelled_owned(),
    ));

    let identity = args
        .pod_name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("operator-{}", std::process::id()));

    // Leader election runs beside the rest: every replica watches, compiles and serves
    // snapshots; only the leader writes (statuses, children, events).
    let elector = Arc::new(LeaderElector::new(
        client.clone(),
        &args.namespace,
        identity.clone(),
    ));
    // The snapshot Service selects the leader's pod label; a restarted container first drops a
    // label its pod may still carry from an earlier life.
    let label = LeaderLabel::new(client.clone(), &args.namespace, identity.clone());
    if let Err(e) = label.resign().await {
        tracing::warn!(error = %e, "cannot clear this pod's leader label");
    }
    let (leading_tx, leading) = watch::channel(false);
    let lost = CancellationToken::new();
    let election = {
        let shutdown = shutdown.clone();
        let lost = lost.clone();
        let elector = Arc::clone(&elector);
        let identity = identity.clone();
        tokio::spawn(async move {
            tracing::info!(%identity, "waiting to lead");
            let Some(won_at) = elector
                .acquire(&shutdown, |works| election_health.set(works))
                .await
            else {
                return false;
            };
            tracing::info!(%identity, "leading: writing statuses, children and events");
            leading_tx.send_replace(true);
            if !elector.hold(won_at, &shutdown).await {
                tracing::error!("leadership lost: stopping");
                lost.cancel();
                shutdown.cancel();
            }
            true
        })
    };

    let directory = TenantDirectory::new();
    let auth = TokenReviewAuth::new(client.clone(), directory.clone(), args.namespace.clone());
    let (server, acks) = SnapshotServer::new(auth);
    let serving = {
        let server = server.clone();
        let stop = shutdown.clone();
        let mut leading = leading.clone();
        let addr = args.snapshot_listen;
        tokio::spawn(async move {
            // Acknowledgements must reach the replica that writes statuses: only the leader
            // listens. Standbys compile all the same, so a takeover serves at once.
            let led = tokio::select! {
                () = stop.cancelled() => false,
                r = leading.wait_for(|l| *l) => r.is_ok(),
            };
            if !led {
                return Ok(());
            }
            let listener = bulkhead_net::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            tracing::info!(snapshots = %addr, "serving snapshots");
            // Listening first, then labelled: the Service sends clients only to a listening leader.
            if let Err(e) = label.claim().await {
                tracing::error!(error = %e, "cannot label this pod the leader; snapshot clients cannot reach it");
            }
            server.serve(listener, tls, stop.cancelled_owned()).await;
            if let Err(e) = label.resign().await {
                tracing::warn!(error = %e, "cannot remove this pod's leader label");
            }
            anyhow::Ok(())
        })
    };
    tracing::info!(admin = %args.admin_listen, "operator started");

    let (ready_tx, mut ready_rx) = watch::channel(false);
    let (detail_tx, mut detail_rx) = watch::channel(String::new());
    {
        let flag = flag.clone();
        tokio::spawn(async move {
            while detail_rx.changed().await.is_ok() {
                flag.set_detail(detail_rx.borrow_and_update().clone());
            }
        });
    }
    tokio::spawn(async move {
        while ready_rx.changed().await.is_ok() {
            flag.set(*ready_rx.borrow_and_update());
        }
    });
    provider::run(
        OperatorConfig {
            client,
            settings,
            operator_ca,
            directory,
            metrics,
            identity,
            watch: WatchSettings {
                degrade_after: std::time::Duration::from_secs(args.watch_degrade_after_secs),
                secret_fetch_timeout: std::time::Duration::from_secs(
                    args.secret_fetch_timeout_secs,
                ),
            },
            readiness_detail: detail_tx,
            translate: args.gateway.settings(),
            installation: InstallationSource {
                static_addresses: args.gateway.static_addresses(),
                edge_service: args.edge_service.clone(),
            },
        },
        server,
        acks,
        ready_tx,
        leading,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    serving.await.context("snapshot server task failed")??;
    let led = election.await.context("leader election task failed")?;
    anyhow::ensure!(!lost.is_cancelled(), "leadership lost");
    if led {
        if let Err(e) = elector.release().await {
            tracing::warn!(error = %e, "cannot release the leader Lease; it expires by itself");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `bulkhead operator` with the required flags and `extra`.
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: OperatorArgs,
    }

    fn parse(extra: &[&str]) -> OperatorArgs {
        let mut argv = vec![
            "operator",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--ca-cert",
            "ca",
            "--operator-url",
            "https://bulkhead-operator.bulkhead-system.svc:8443",
            "--router-image",
            "ghcr.io/bulkhead/bulkhead:0.1.0",
            "--namespace",
            "bulkhead-system",
        ];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).expect("flags parse").args
    }

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn router_flags_reach_the_child_settings() {
        let args = parse(&[
            "--snapshot-listen",
            "[::]:9443",
            "--router-image-pull-secrets",
            "registry-a,registry-b",
            "--router-cpu-limit",
            "2",
            "--router-memory-request",
            "256Mi",
            "--router-egress-namespaces",
            "shared-db",
        ]);
        let settings = child_settings(&args, CA.to_owned()).expect("valid settings");
        assert_eq!(settings.image_pull_secrets, ["registry-a", "registry-b"]);
        assert_eq!(settings.router_egress_namespaces, ["shared-db"]);
        assert_eq!(settings.operator_snapshot_port, 9443);
        let limits = settings.resources.limits.expect("limits");
        assert_eq!(limits.get("cpu").map(|q| q.0.as_str()), Some("2"));
        assert_eq!(
            limits.get("memory").map(|q| q.0.as_str()),
            Some(children::DEFAULT_MEMORY_LIMIT)
        );
        let requests = settings.resources.requests.expect("requests");
        assert_eq!(requests.get("memory").map(|q| q.0.as_str()), Some("256Mi"));
    }

    #[test]
    fn defaults_match_the_child_defaults() {
        let settings = child_settings(&parse(&[]), CA.to_owned()).expect("valid settings");
        let defaults = ChildSettings::new("i", "https://o", CA);
        assert_eq!(settings.resources, defaults.resources);
        assert!(settings.image_pull_secrets.is_empty());
        assert_eq!(
            settings.operator_snapshot_port,
            children::DEFAULT_OPERATOR_SNAPSHOT_PORT
        );
    }

    #[test]
    fn a_bad_router_setting_stops_the_operator_naming_it() {
        let args = parse(&["--router-cpu-request", "a lot"]);
        let err = child_settings(&args, CA.to_owned()).expect_err("refused");
        assert!(format!("{err:#}").contains("resources"), "{err:#}");
        let args = parse(&["--router-image-pull-secrets", "Bad_Name"]);
        let err = child_settings(&args, CA.to_owned()).expect_err("refused");
        assert!(format!("{err:#}").contains("image_pull_secrets"), "{err:#}");
    }
}
