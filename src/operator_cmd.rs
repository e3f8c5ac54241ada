//! `bulkhead operator`: the control plane in a cluster. Watches Tenants, Gateway API objects,
//! TLS Secrets, Services and EndpointSlices; serves snapshots over TLS to the edge and the routers
//! (authenticated by `TokenReview`); applies one tenant router per Tenant; writes statuses.
//!
//! Only the leader (a `coordination.k8s.io` Lease in the operator's namespace) serves snapshots
//! and writes to the cluster. A standby replica reports ready (so a rolling update can start the
//! new pod before stopping the old one) but does not listen for snapshots; clients retry. The
//! leader becomes ready after its first compilation, gives the Lease up on shutdown, and exits
//! with an error if it loses the Lease, so Kubernetes restarts it as a candidate.

use anyhow::Context;
use bulkhead_admin::{AdminServer, AdminState, Readiness};
use bulkhead_operator::children::ChildSettings;
use bulkhead_operator::kube::leader::LeaderElector;
use bulkhead_operator::kube::{self as provider, OperatorConfig, TenantDirectory, TokenReviewAuth};
use bulkhead_snapshot_wire::{server_tls_config, SnapshotServer};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Arguments of `bulkhead operator` (see `deploy/operator.yaml`).
#[derive(clap::Args, Debug, Clone)]
pub struct OperatorArgs {
    /// Snapshot API listener (HTTP/2 over TLS), for the edge and the routers.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub snapshot_listen: SocketAddr,
    /// Admin endpoints (`/healthz`, `/readyz`, `/metrics`).
    #[arg(long, default_value = "0.0.0.0:9901")]
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
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Runs the operator until SIGTERM.
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let shutdown = crate::standalone::shutdown_on_signal();
    let tls = server_tls_config(&read(&args.tls_cert)?, &read(&args.tls_key)?)
        .context("invalid snapshot API certificate or key")?;
    let ca_pem = String::from_utf8(read(&args.ca_cert)?).context("--ca-cert is not PEM text")?;
    let mut settings =
        ChildSettings::new(args.router_image.clone(), args.operator_url.clone(), ca_pem);
    settings.system_namespace = args.namespace.clone();

    let client = provider::default_client()
        .await
        .context("cannot configure the Kubernetes client")?;

    let readiness = Readiness::new();
    let flag = readiness.flag("operator");
    let admin = AdminServer::bind(
        args.admin_listen,
        AdminState {
            readiness,
            registry: Arc::new(Registry::default()),
            status: None,
        },
    )
    .await?;
    tokio::spawn(admin.run(shutdown.clone()));

    let identity = args
        .pod_name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("operator-{}", std::process::id()));
    let elector = LeaderElector::new(client.clone(), &args.namespace, identity.clone());
    tracing::info!(%identity, "waiting to lead");
    flag.set(true);
    if !elector.acquire(&shutdown).await {
        return Ok(());
    }
    flag.set(false);
    let elector = Arc::new(elector);
    let lost = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        let lost = lost.clone();
        let elector = Arc::clone(&elector);
        tokio::spawn(async move {
            if !elector.hold(&shutdown).await {
                tracing::error!("leadership lost: stopping");
                lost.cancel();
                shutdown.cancel();
            }
        });
    }

    let directory = TenantDirectory::new();
    let auth = TokenReviewAuth::new(client.clone(), directory.clone(), args.namespace.clone());
    let (server, acks) = SnapshotServer::new(auth);
    let listener = TcpListener::bind(args.snapshot_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.snapshot_listen))?;
    let serving = {
        let server = server.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move { server.serve(listener, tls, stop.cancelled_owned()).await })
    };
    tracing::info!(snapshots = %args.snapshot_listen, admin = %args.admin_listen, "operator leading");

    let (ready_tx, mut ready_rx) = watch::channel(false);
    tokio::spawn(async move {
        while ready_rx.changed().await.is_ok() {
            flag.set(*ready_rx.borrow_and_update());
        }
    });
    provider::run(
        OperatorConfig {
            client,
            settings,
            directory,
        },
        server,
        acks,
        ready_tx,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    serving.await.context("snapshot server task failed")?;
    anyhow::ensure!(!lost.is_cancelled(), "leadership lost");
    if let Err(e) = elector.release().await {
        tracing::warn!(error = %e, "cannot release the leader Lease; it expires by itself");
    }
    Ok(())
}
