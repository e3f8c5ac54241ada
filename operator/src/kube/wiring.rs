//! The Kubernetes side of the operator wired together: watchers, the Secret reader, the control
//! loop, and, while this replica leads, the status, onboarding, edge bootstrap and event writers.

use super::auth::TenantDirectory;
use super::child_watch::{spawn_child_watchers, REPAIR_QUEUE};
use super::control::{ControlLoop, Statuses, STATUS_RETRY_INTERVAL};
use super::discovery::{discover, ServedVersions};
use super::edge_bootstrap::run_edge_bootstrap;
use super::events::{run_events, NOTICE_QUEUE};
use super::installation::{self, InstallationSource};
use super::onboarding::{run_onboarding, Desired, Onboarding};
use super::secret_data::run_secret_fetcher;
use super::status_writer::StatusWriter;
use super::watch::{spawn_watchers, WatchSettings, EVENT_QUEUE};
use crate::children::ChildSettings;
use crate::metrics::OperatorMetrics;
use crate::translator::TranslateSettings;
use ::kube::Client;
use bulkhead_snapshot_wire::{AckReceiver, Authenticator, SnapshotServer};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Writes the newest statuses whenever they change, retrying failures every
/// [`STATUS_RETRY_INTERVAL`], until `shutdown`.
pub async fn run_status_writer(
    writer: Arc<StatusWriter>,
    mut statuses: watch::Receiver<Statuses>,
    shutdown: CancellationToken,
) {
    let mut retry = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = statuses.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(STATUS_RETRY_INTERVAL), if retry => {}
        }
        let current = statuses.borrow_and_update().clone();
        let report = tokio::select! {
            () = shutdown.cancelled() => return,
            report = writer.sync_partitions(&current) => report,
        };
        if report.written > 0 || report.failed > 0 {
            tracing::debug!(
                written = report.written,
                failed = report.failed,
                "statuses written"
            );
        }
        retry = report.failed > 0;
    }
}

/// What the Kubernetes side of the operator needs.
#[derive(Clone)]
pub struct OperatorConfig {
    /// The API client (in-cluster credentials).
    pub client: Client,
    /// Settings of the Tenants' children.
    pub settings: ChildSettings,
    /// The snapshot API's CA bundle as it changes (the routers' CA ConfigMaps follow it).
    pub operator_ca: watch::Receiver<String>,
    /// The directory the snapshot API's authenticator reads.
    pub directory: TenantDirectory,
    /// The control plane's metrics (registered by the caller).
    pub metrics: OperatorMetrics,
    /// This replica's name (the `reportingInstance` of its events).
    pub identity: String,
    /// Settings of the watchers.
    pub watch: WatchSettings,
    /// Receives the readiness detail: degraded kinds and undecodable objects (see
    /// [`super::watch_health`]).
    pub readiness_detail: watch::Sender<String>,
    /// Listener ports the edge receives.
    pub translate: TranslateSettings,
    /// Where Gateway addresses come from.
    pub installation: InstallationSource,
}

/// Waits until this replica leads; `false` when `shutdown` comes first.
async fn until_leading(leading: &mut watch::Receiver<bool>, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        r = leading.wait_for(|l| *l) => r.is_ok(),
    }
}

/// Runs watchers and the control loop (every replica compiles and serves snapshots), and, while
/// `leading` says this replica holds the Lease, the writers: statuses, onboarding and events.
/// Runs until `shutdown`. `ready` becomes `true` after the first full compilation (every initial
/// list is in and every tenant's first snapshot is published).
pub async fn run<A: Authenticator>(
    config: OperatorConfig,
    server: SnapshotServer<A>,
    acks: AckReceiver,
    ready: watch::Sender<bool>,
    leading: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
    let versions = match discover(&config.client).await {
        Ok(versions) => {
            tracing::info!(versions = ?versions.chosen, "Gateway API versions discovered");
            versions
        }
        Err(e) => {
            tracing::warn!(error = %e, "API discovery failed; watching each Gateway API kind at its newest version");
            ServedVersions::newest()
        }
    };
    let writer = Arc::new(StatusWriter::new(config.client.clone()).with_versions(&versions));
    let mut watchers = spawn_watchers(&config.client, &event_tx, &writer, &config.watch, &versions);
    // The reader holds a weak sender: the control loop still ends when every watcher stops.
    let answers = event_tx.downgrade();
    drop(event_tx);
    let (fetch_tx, fetch_rx) = mpsc::unbounded_channel();
    let fetcher_task = {
        let (client, timeout) = (config.client.clone(), config.watch.secret_fetch_timeout);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = run_secret_fetcher(client, fetch_rx, answers, timeout) => {}
            }
        })
    };
    let (desired_tx, desired_rx) = watch::channel(Desired::new());
    let (status_tx, mut status_rx) = watch::channel(Statuses::default());
    let (notice_tx, notice_rx) = mpsc::channel(NOTICE_QUEUE);
    let system_namespace = config.settings.system_namespace.clone();
    let onboarding = Onboarding::new(config.client.clone(), config.settings, Arc::clone(&writer));
    let operator_ca = config.operator_ca;
    let onboarding_task = {
        let (mut leading, shutdown) = (leading.clone(), shutdown.clone());
        let client = config.client.clone();
        tokio::spawn(async move {
            if until_leading(&mut leading, &shutdown).await {
                let (repair_tx, repairs) = mpsc::channel(REPAIR_QUEUE);
                let mut child_watchers = spawn_child_watchers(&client, &repair_tx);
                drop(repair_tx);
                run_onboarding(onboarding, desired_rx, operator_ca, repairs, shutdown).await;
                child_watchers.shutdown().await;
            }
        })
    };
    let status_task = {
        let (mut leading, shutdown) = (leading.clone(), shutdown.clone());
        tokio::spawn(async move {
            if until_leading(&mut leading, &shutdown).await {
                status_rx.mark_changed();
                run_status_writer(writer, status_rx, shutdown).await;
            }
        })
    };
    let (edge_acked_tx, edge_acked) = watch::channel(None);
    let edge_bootstrap_task = {
        let (mut leading, shutdown) = (leading.clone(), shutdown.clone());
        let (client, namespace) = (config.client.clone(), system_namespace.clone());
        let metrics = config.metrics.clone();
        tokio::spawn(async move {
            if until_leading(&mut leading, &shutdown).await {
                run_edge_bootstrap(client, namespace, edge_acked, metrics, shutdown).await;
            }
        })
    };
    let events_task = tokio::spawn(run_events(
        config.client.clone(),
        Some(config.identity.clone()),
        system_namespace,
        notice_rx,
        leading,
        shutdown.clone(),
    ));
    let missing_kinds = versions
        .missing_required
        .iter()
        .map(|k| format!("{} ({})", k.kind, k.versions.join(", ")))
        .collect();
    let installation = installation::spawn(
        config.client.clone(),
        config.installation,
        missing_kinds,
        shutdown.clone(),
    );
    ControlLoop::new(server, config.directory, desired_tx, status_tx, ready)
        .with_translate_settings(config.translate)
        .with_installation(installation)
        .with_metrics(config.metrics)
        .with_notices(notice_tx)
        .with_edge_bootstrap(edge_acked_tx)
        .with_readiness_detail(config.readiness_detail)
        .with_secret_fetcher(fetch_tx)
        .run(event_rx, acks, shutdown.clone())
        .await;
    shutdown.cancel();
    watchers.shutdown().await;
    for task in [
        onboarding_task,
        status_task,
        edge_bootstrap_task,
        events_task,
        fetcher_task,
    ] {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "operator task failed");
        }
    }
}
