//! Cluster mode of the data plane: `bulkhead edge` and `bulkhead router` take their snapshots from
//! the operator's snapshot service (TLS, authenticated by a projected service-account token) and,
//! until it answers, from a bootstrap file, so a restart while the operator is down still serves.

use anyhow::Context;
use bulkhead_admin::{AdminServer, AdminState, Readiness};
use bulkhead_edge::{Edge, EdgeConfig, EdgeMetrics};
use bulkhead_router::{Router, RouterConfig, RouterMetrics};
use bulkhead_snapshot::{EdgeSnapshot, TenantSnapshot};
use bulkhead_snapshot_wire::{subscribe, ClientConfig, StreamName};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The data-plane subcommands, shared by `bulkhead` and `bulkhead-dataplane`.
#[derive(clap::Subcommand, Debug)]
pub enum DataPlaneCommand {
    /// Run the edge tier, fed by the operator's snapshot service.
    Edge(EdgeArgs),
    /// Run one tenant router, fed by the operator's snapshot service.
    Router(RouterArgs),
}

impl DataPlaneCommand {
    /// Runs the subcommand until SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Edge(args) => run_edge(args).await,
            Self::Router(args) => run_router(args).await,
        }
    }
}

/// How a data-plane process reaches the operator.
#[derive(clap::Args, Debug, Clone)]
pub struct OperatorLink {
    /// The snapshot service, `https://host:port` or `host:port`.
    #[arg(long, env = "BULKHEAD_OPERATOR_URL")]
    pub operator_url: String,
    /// PEM CA bundle that signs the snapshot service's certificate.
    #[arg(long, env = "BULKHEAD_OPERATOR_CA")]
    pub operator_ca: PathBuf,
    /// Projected service-account token (audience `bulkhead.dev/snapshots`), re-read on every connect.
    #[arg(long, env = "BULKHEAD_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// Snapshot served until the operator answers (JSON or YAML).
    #[arg(long)]
    pub bootstrap: Option<PathBuf>,
}

/// Arguments of `bulkhead edge`.
#[derive(clap::Args, Debug, Clone)]
pub struct EdgeArgs {
    /// TLS listener (routed by SNI).
    #[arg(long, default_value = "[::]:8443")]
    pub https_listen: SocketAddr,
    /// Plain HTTP listener (routed by Host).
    #[arg(long, default_value = "[::]:8080")]
    pub http_listen: SocketAddr,
    /// Admin endpoints.
    #[arg(long, default_value = "[::]:9901")]
    pub admin_listen: SocketAddr,
    /// Source ranges (CIDR) of load balancers that must send a PROXY v1/v2 header; comma separated.
    #[arg(long, value_delimiter = ',')]
    pub accept_proxy_from: Vec<bulkhead_proxy_io::cidr::Cidr>,
    #[command(flatten)]
    pub limits: crate::edge_flags::EdgeLimitArgs,
    #[command(flatten)]
    pub link: OperatorLink,
}

/// Arguments of `bulkhead router`.
#[derive(clap::Args, Debug, Clone)]
pub struct RouterArgs {
    /// The tenant this router serves (the `Tenant` object's name).
    #[arg(long, env = "BULKHEAD_TENANT")]
    pub tenant: String,
    /// TLS listener (traffic from the edge, PROXY v2 first).
    #[arg(long, default_value = "[::]:8443")]
    pub https_listen: SocketAddr,
    /// Plain HTTP listener (traffic from the edge, PROXY v2 first).
    #[arg(long, default_value = "[::]:8080")]
    pub http_listen: SocketAddr,
    /// Admin endpoints.
    #[arg(long, default_value = "[::]:9901")]
    pub admin_listen: SocketAddr,
    /// Networks (CIDR, comma separated) allowed to send the PROXY header every connection starts
    /// with: the edge's pod (or node) addresses. Any other peer is refused. Default: the private
    /// address ranges (`bulkhead_router::DEFAULT_ACCEPT_PROXY_FROM`).
    #[arg(long, value_delimiter = ',', default_values_t = bulkhead_router::default_accept_proxy_from())]
    pub accept_proxy_from: Vec<bulkhead_proxy_io::cidr::Cidr>,
    #[command(flatten)]
    pub link: OperatorLink,
    #[command(flatten)]
    pub limits: crate::router_flags::RouterLimitArgs,
}

impl OperatorLink {
    fn client_config(&self, subscriber: String) -> anyhow::Result<ClientConfig> {
        let addr = self
            .operator_url
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_owned();
        let server_name = addr
            .rsplit_once(':')
            .map_or(addr.as_str(), |(host, _)| host)
            .to_owned();
        let ca_pem = std::fs::read(&self.operator_ca)
            .with_context(|| format!("cannot read {}", self.operator_ca.display()))?;
        Ok(ClientConfig {
            addr,
            server_name,
            ca_pem,
            token_path: self.token_file.clone(),
            subscriber,
            ca_path: Some(self.operator_ca.clone()),
            bootstrap_path: self.bootstrap.clone(),
        })
    }
}

fn instance() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| std::process::id().to_string())
}

async fn serve_admin(
    addr: SocketAddr,
    readiness: Readiness,
    registry: Registry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let admin = AdminServer::bind(
        addr,
        AdminState {
            readiness,
            registry: Arc::new(registry),
            status: None,
        },
    )
    .await?;
    tokio::spawn(admin.run(shutdown));
    Ok(())
}

/// Runs the edge tier until SIGTERM.
pub async fn run_edge(args: EdgeArgs) -> anyhow::Result<()> {
    let shutdown = crate::process::shutdown_on_signal();
    let mut registry = Registry::default();
    let metrics = EdgeMetrics::register(&mut registry);
    let readiness = Readiness::new();
    let edge = Edge::bind(
        EdgeConfig {
            https_listen: args.https_listen,
            http_listen: args.http_listen,
            accept_proxy_from: args.accept_proxy_from.clone(),
            limits: args.limits.limits(),
            ..EdgeConfig::default()
        },
        metrics,
        readiness.flag("edge"),
    )
    .await?;
    serve_admin(args.admin_listen, readiness, registry, shutdown.clone()).await?;
    let config = args.link.client_config(format!("edge/{}", instance()))?;
    let (subscription, _driver) = subscribe::<EdgeSnapshot>(config, StreamName::Edge).await?;
    edge.run(subscription, shutdown).await?;
    Ok(())
}

/// Runs one tenant router until SIGTERM.
pub async fn run_router(args: RouterArgs) -> anyhow::Result<()> {
    let shutdown = crate::process::shutdown_on_signal();
    let mut registry = Registry::default();
    let metrics = RouterMetrics::register(&mut registry);
    let readiness = Readiness::new();
    let config = RouterConfig {
        accept_proxy_from: args.accept_proxy_from.clone(),
        limits: args.limits.limits(),
        ..RouterConfig::new(&args.tenant, args.https_listen, args.http_listen)
    };
    let router = Router::bind(
        config,
        metrics,
        readiness.flag(format!("router/{}", args.tenant)),
    )
    .await?;
    serve_admin(args.admin_listen, readiness, registry, shutdown.clone()).await?;
    let stream = StreamName::tenant(args.tenant.clone())?;
    let config = args
        .link
        .client_config(format!("router/{}/{}", args.tenant, instance()))?;
    let (subscription, _driver) = subscribe::<TenantSnapshot>(config, stream).await?;
    router.run(subscription, shutdown).await?;
    Ok(())
}
