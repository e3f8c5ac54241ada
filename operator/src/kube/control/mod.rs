//! The operator's control loop: watcher events → [`ObjectStore`] → (once every initial list is
//! in, debounced) [`Compiler`] → snapshots published on the [`SnapshotServer`] (edge and tenant
//! streams) → statuses handed to the status task, Tenants handed to the onboarding task, the
//! [`TenantDirectory`] of the snapshot API's authenticator refreshed.
//!
//! Router acknowledgements mark Gateways `Programmed` and Tenants `Ready`
//! ([`crate::status::apply_acks`]), set `Tenant.status.acknowledgedVersion`, and promote the
//! acknowledged snapshot to the tenant's bootstrap Secret: a bootstrap snapshot is always one a
//! router accepted.
//!
//! [`super::wiring::run`] wires everything: watchers, this loop, the status task and the onboarding
//! task. Other controllers' route `status.parents` entries: [`super::route_parents`].

use super::auth::TenantDirectory;
use super::decode::Unreadable;
use super::events::Notice;
use super::onboarding::{Desired, DesiredTenant};
use super::route_parents::{detached_routes, ours_only};
use super::route_parents::{foreign_parents, merge_foreign_parents};
use super::secret_data::{FetchedSecret, SecretFetch};
use super::store::{Debounce, ObjectStore, StoreEvent};
use super::watch::WATCHED_KINDS;
use super::watch_health::{readiness_detail, update_gauges};
use crate::compiler::{Compiler, Endpoints, PackedPartition, Partition, CLUSTER_PARTITION};
use crate::index::Kind;
use crate::metrics::{KindLabel, OperatorMetrics};
use crate::status::{apply_acks, stamp_transitions, ObjectStatus};
use crate::status_installation::{apply_installation, Installation};
use crate::translator::TranslateSettings;
use bulkhead_crds::snapshot::{EdgeSnapshot, TenantSnapshot};
use bulkhead_crds::Tenant;
use bulkhead_snapshot::Ack;
use bulkhead_snapshot_wire::{
    AckReceiver, Authenticator, PublishError, SnapshotServer, StreamName,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the connected-client gauges are refreshed.
pub const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// How long the status task waits before retrying statuses it could not write.
pub const STATUS_RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// Statuses as they should be in the cluster, by partition (see [`crate::compiler`]). A
/// persistent map: handing it to the status task after a change shares every partition that did
/// not change, so the cost of a change does not grow with the number of tenants.
pub type Statuses = imbl::OrdMap<String, Arc<PackedPartition>>;

/// Longest one compilation round translates before it lets events and acknowledgements in;
/// tenants left over are translated by the next round, right after.
pub const COMPILE_BUDGET: Duration = Duration::from_millis(50);

/// The control loop's state; see the module documentation.
pub struct ControlLoop<A: Authenticator> {
    store: ObjectStore,
    compiler: Compiler,
    server: SnapshotServer<A>,
    directory: TenantDirectory,
    debounce: Debounce,
    /// Tenant → version published.
    published: BTreeMap<String, u64>,
    /// Tenant → newest version a router acknowledged as served.
    acked: BTreeMap<String, u64>,
    /// Tenant → the newest acknowledged snapshot (its bootstrap).
    bootstrap: BTreeMap<String, Arc<TenantSnapshot>>,
    /// The Tenants, by name (refreshed on cluster-wide changes).
    tenants: BTreeMap<String, Arc<Tenant>>,
    /// Statuses as rendered (acknowledgements applied, times stamped), by partition.
    rendered: Statuses,
    /// What onboarding should apply, kept up to date entry by entry (see [`Desired`]).
    desired_tenants: Desired,
    compiles: u64,
    /// Dirty tenants are waiting in the compiler's queue: compile again right away.
    backlog: bool,
    /// Tenant → object changes seen since its last translation.
    depth: BTreeMap<String, usize>,
    /// Tenant → when its oldest change not yet published arrived.
    first_change: BTreeMap<String, Instant>,
    /// Tenant → (version published, when its oldest change arrived), until acknowledged.
    awaiting: BTreeMap<String, (u64, Instant)>,
    desired: watch::Sender<Desired>,
    statuses: watch::Sender<Statuses>,
    ready: watch::Sender<bool>,
    metrics: OperatorMetrics,
    notices: Option<mpsc::Sender<Notice>>,
    /// The edge snapshot last published, until an edge acknowledges it.
    edge_published: Option<Arc<EdgeSnapshot>>,
    /// Where acknowledged edge snapshots go (the edge's bootstrap ConfigMap writer).
    edge_acked: Option<watch::Sender<Option<Arc<EdgeSnapshot>>>>,
    /// What the watchers could not read ([`readiness_detail`]), for `/readyz`.
    detail: watch::Sender<String>,
    /// Gateway addresses and CRD bundle, applied to every rendered status.
    installation: Installation,
    /// Where changes of `installation` come from (taken by [`ControlLoop::run`]).
    installation_rx: Option<watch::Receiver<Installation>>,
    /// Where Secret reads go ([`super::secret_data::run_secret_fetcher`]); without it a read
    /// fails at once (the Secret counts as missing).
    secret_fetches: Option<mpsc::UnboundedSender<SecretFetch>>,
    /// A referenced Secret is read for the first time: no compilation until it is answered.
    awaiting_secrets: bool,
}

impl<A: Authenticator> std::fmt::Debug for ControlLoop<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlLoop")
            .field("compiles", &self.compiles)
            .field("published", &self.published)
            .field("acked", &self.acked)
            .finish_non_exhaustive()
    }
}

impl<A: Authenticator> ControlLoop<A> {
    /// A loop over an empty store of [`WATCHED_KINDS`]. It sends the Tenants to onboard on
    /// `desired`, the statuses to write on `statuses`, and `true` on `ready` after the first
    /// compilation.
    pub fn new(
        server: SnapshotServer<A>,
        directory: TenantDirectory,
        desired: watch::Sender<Desired>,
        statuses: watch::Sender<Statuses>,
        ready: watch::Sender<bool>,
    ) -> Self {
        Self {
            store: ObjectStore::new(WATCHED_KINDS)
                .with_parking()
                .with_secrets_on_demand(),
            compiler: Compiler::new(),
            server,
            directory,
            debounce: Debounce::default(),
            published: BTreeMap::new(),
            acked: BTreeMap::new(),
            bootstrap: BTreeMap::new(),
            tenants: BTreeMap::new(),
            rendered: Statuses::new(),
            desired_tenants: Desired::new(),
            compiles: 0,
            backlog: false,
            depth: BTreeMap::new(),
            first_change: BTreeMap::new(),
            awaiting: BTreeMap::new(),
            desired,
            statuses,
            ready,
            metrics: OperatorMetrics::new(),
            notices: None,
            edge_published: None,
            edge_acked: None,
            detail: watch::Sender::new(String::new()),
            installation: Installation::default(),
            installation_rx: None,
            secret_fetches: None,
            awaiting_secrets: false,
        }
    }

    /// Sends the Secrets whose data is needed to `fetches` (the Secret reader); its answers come
    /// back as [`StoreEvent::SecretFetched`].
    pub fn with_secret_fetcher(mut self, fetches: mpsc::UnboundedSender<SecretFetch>) -> Self {
        self.secret_fetches = Some(fetches);
        self
    }

    /// Translates with `settings` (listener ports) instead of the defaults.
    pub fn with_translate_settings(mut self, settings: TranslateSettings) -> Self {
        self.compiler = Compiler::with_settings(settings);
        self
    }

    /// Follows `installation` (Gateway addresses, CRD bundle; [`super::installation`]).
    pub fn with_installation(mut self, installation: watch::Receiver<Installation>) -> Self {
        self.installation = installation.borrow().clone();
        self.installation_rx = Some(installation);
        self
    }

    /// Uses `installation` from now on: every rendered partition is rendered again.
    pub fn set_installation(&mut self, installation: Installation) {
        if installation == self.installation {
            return;
        }
        self.installation = installation;
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let names: Vec<String> = self.rendered.keys().cloned().collect();
        for name in names {
            if let Some(previous) = self.rendered.get(&name).cloned() {
                self.render_partition(name, ours_only(&previous.unpack()), &now);
            }
        }
        self.statuses.send_replace(self.rendered.clone());
    }

    /// Publishes the readiness detail (degraded kinds, undecodable objects) on `detail`.
    pub fn with_readiness_detail(mut self, detail: watch::Sender<String>) -> Self {
        self.detail = detail;
        self
    }

    /// Sends every edge snapshot an edge acknowledged to `acked` (the bootstrap writer).
    pub fn with_edge_bootstrap(mut self, acked: watch::Sender<Option<Arc<EdgeSnapshot>>>) -> Self {
        self.edge_acked = Some(acked);
        self
    }

    /// Sends what deserves a Kubernetes event (snapshot rejections) to `notices`.
    pub fn with_notices(mut self, notices: mpsc::Sender<Notice>) -> Self {
        self.notices = Some(notices);
        self
    }

    fn notify(&self, notice: Notice) {
        if let Some(tx) = &self.notices {
            if tx.try_send(notice).is_err() {
                tracing::debug!("event queue full or closed; notice dropped");
            }
        }
    }

    /// Uses `metrics` (registered by the caller) instead of private ones.
    pub fn with_metrics(mut self, metrics: OperatorMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The loop's metrics.
    pub fn metrics(&self) -> OperatorMetrics {
        self.metrics.clone()
    }

    /// Runs until `shutdown` or until every watcher is gone.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<StoreEvent>,
        mut acks: AckReceiver,
        shutdown: CancellationToken,
    ) {
        let mut acks_open = true;
        let mut announced_sync = false;
        let mut installation = self.installation_rx.take();
        let mut gauges = tokio::time::interval(GAUGE_INTERVAL);
        gauges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let due = self.due();
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = gauges.tick() => self.update_gauges(),
                event = events.recv() => match event {
                    Some(event) => self.on_event(event, Instant::now()),
                    None => {
                        tracing::error!("every watcher stopped; the control loop ends");
                        break;
                    }
                },
                changed = next_installation(&mut installation) => {
                    if let Some(i) = changed {
                        self.set_installation(i);
                    }
                },
                ack = acks.recv(), if acks_open => match ack {
                    Some((stream, ack)) => self.on_ack(stream, ack),
                    None => acks_open = false,
                },
                () = sleep_until(due), if due.is_some() => {
                    if !announced_sync {
                        announced_sync = true;
                        tracing::info!(objects = self.store.len(), "initial lists complete");
                    }
                    self.compile();
                }
            }
        }
    }

    /// Applies one watcher event to the store (and starts or extends the debounce).
    pub fn on_event(&mut self, event: StoreEvent, now: Instant) {
        let namespace = match &event {
            StoreEvent::Apply(o) | StoreEvent::Delete(o) => o.metadata().namespace.clone(),
            StoreEvent::Unreadable(u) => {
                self.report_unreadable(u);
                u.namespace.clone()
            }
            StoreEvent::SecretFetched(f) => {
                self.awaiting_secrets = false;
                self.report_secret_fetch(f);
                Some(f.request.namespace.clone())
            }
            _ => None,
        };
        let changed = self.store.apply(event);
        let detail = readiness_detail(&self.store);
        let detail_changed = self.detail.send_if_modified(|d| {
            let changed = *d != detail;
            *d = detail;
            changed
        });
        if detail_changed {
            update_gauges(&self.store, &self.metrics);
        }
        if changed {
            self.debounce.touch(now);
            if let Some(tenant) = namespace
                .as_deref()
                .and_then(|ns| self.compiler.tenant_of_namespace(ns))
            {
                let depth = self.depth.entry(tenant.to_owned()).or_insert(0);
                *depth += 1;
                self.metrics.set_queue_depth(tenant, *depth);
                self.first_change.entry(tenant.to_owned()).or_insert(now);
            }
            self.metrics.queue_depth_total.set(
                i64::try_from(self.store.pending_changes().events + self.compiler.queued())
                    .unwrap_or(i64::MAX),
            );
        }
    }

    /// Counts and logs an object the watchers could not decode; a new failure also becomes an
    /// event about the object.
    fn report_unreadable(&self, u: &Unreadable) {
        self.metrics
            .undecodable_objects
            .get_or_create(&KindLabel {
                kind: u.kind.as_str(),
            })
            .inc();
        if !self.store.knows_unreadable(u) {
            tracing::warn!(kind = %u.kind, namespace = ?u.namespace, name = %u.name, error = %u.error, "object cannot be decoded; it is not served");
            self.notify(Notice::ObjectUnreadable(Box::new(u.clone())));
        }
    }

    /// Counts and logs a Secret that could not be read.
    fn report_secret_fetch(&self, fetched: &FetchedSecret) {
        if let Err(error) = &fetched.result {
            self.metrics.error("secret_fetch");
            let SecretFetch {
                namespace, name, ..
            } = &fetched.request;
            tracing::warn!(%namespace, %name, %error, "referenced Secret cannot be read; it counts as missing");
        }
    }

    /// Sends the reads of referenced Secrets whose data is not held at their current version,
    /// and drops the data of Secrets no longer referenced. Returns whether the compilation must
    /// wait for a Secret read for the first time.
    fn request_secrets(&mut self) -> bool {
        let plan = self.store.plan_secrets();
        let mut all_sent = true;
        for request in plan.fetch {
            tracing::debug!(namespace = %request.namespace, name = %request.name, "reading a referenced Secret");
            let unsent = match &self.secret_fetches {
                Some(tx) => tx.send(request).err().map(|e| e.0),
                None => Some(request),
            };
            if let Some(request) = unsent {
                all_sent = false;
                self.on_event(
                    StoreEvent::SecretFetched(Box::new(FetchedSecret {
                        request,
                        result: Err("cannot be read (no Secret reader)".to_owned()),
                    })),
                    Instant::now(),
                );
            }
        }
        // A read that could not be sent was answered (as failed) at once: nothing to wait for.
        self.awaiting_secrets = plan.waiting && all_sent;
        self.awaiting_secrets
    }

    /// When the next compilation is due: `None` while nothing changed (and no failed Secret
    /// read is due again), while some kind has not finished its initial list, or while a
    /// referenced Secret is read for the first time.
    pub fn due(&self) -> Option<Instant> {
        if !self.store.is_synced() || self.awaiting_secrets {
            return None;
        }
        let compile = if self.backlog {
            Some(self.debounce.deadline().unwrap_or_else(Instant::now))
        } else {
            self.debounce.deadline()
        };
        match (compile, self.store.next_secret_retry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn update_gauges(&self) {
        let stats = self.server.stats();
        let (mut edges, mut routers) = (0, 0);
        for (stream, n) in &stats.subscribers {
            match stream {
                StreamName::Edge => edges += n,
                StreamName::Tenant(_) => routers += n,
            }
        }
        self.metrics.set_connected(edges, routers);
        let revoked = self.metrics.streams_revoked.get();
        if stats.revoked > revoked {
            self.metrics.streams_revoked.inc_by(stats.revoked - revoked);
        }
    }

    /// Compiles the store, publishes what changed, and hands statuses and Tenants on.
    pub fn compile(&mut self) {
        let started = std::time::Instant::now();
        self.debounce.clear();
        if self.request_secrets() {
            return;
        }
        let changes = self.store.take_changes();
        let out = self.compiler.update(
            self.store.index(),
            &changes,
            Endpoints::FromIndex,
            Some(COMPILE_BUDGET),
        );
        self.backlog = out.deferred > 0;
        self.compiles += 1;
        tracing::debug!(
            recomputed = out.recomputed.len(),
            deferred = out.deferred,
            partitions = out.partitions.len(),
            "compiled"
        );
        // The directory (which namespace's routers may read which tenant) changes before any
        // snapshot is published, so a snapshot never reaches a namespace its tenant left.
        let served_set_changed = changes.all
            || changes.cluster
            || !out.removed.is_empty()
            || out
                .changed
                .iter()
                .any(|s| !self.directory.owns(&s.namespace, &s.tenant));
        if served_set_changed {
            self.refresh_directory();
        }
        if let Some(edge) = &out.edge {
            self.publish_edge(edge);
        }
        for snapshot in &out.changed {
            self.publish_tenant(snapshot);
        }
        for tenant in &out.removed {
            self.forget_tenant(tenant);
        }
        if changes.all || changes.cluster {
            self.refresh_tenants();
        }
        if served_set_changed {
            self.push_desired();
        }
        self.settle_queue();
        self.refresh_statuses(out.partitions);
        self.metrics
            .record_compile(started.elapsed(), out.recomputed.len());
        if !self.backlog {
            // Ready once every tenant of the first compilation is translated and published.
            self.ready.send_replace(true);
        }
    }

    /// Counts and logs a snapshot that could not be published, labelled by the error's variant.
    fn publish_failed(&self, stream: &str, error: &PublishError) {
        self.metrics.error(publish_error_label(error));
        tracing::error!(stream, %error, "cannot publish the snapshot");
    }

    /// Publishes the edge snapshot (kept until an edge acknowledges it, for its bootstrap).
    fn publish_edge(&mut self, edge: &EdgeSnapshot) {
        match self.server.publish(&StreamName::Edge, edge) {
            Ok(()) => {
                if self.edge_acked.is_some() {
                    self.edge_published = Some(Arc::new(edge.clone()));
                }
                tracing::info!(
                    version = edge.version,
                    routes = edge.routes.len(),
                    "edge snapshot published"
                );
            }
            Err(e) => self.publish_failed("edge", &e),
        }
    }

    /// Publishes a tenant's snapshot and starts timing its acknowledgement.
    fn publish_tenant(&mut self, snapshot: &Arc<TenantSnapshot>) {
        let published = StreamName::tenant(snapshot.tenant.clone())
            .map_err(PublishError::from)
            .and_then(|stream| self.server.publish(&stream, snapshot.as_ref()));
        if let Err(e) = published {
            self.publish_failed(&snapshot.tenant, &e);
            return;
        }
        tracing::debug!(tenant = %snapshot.tenant, version = snapshot.version, "tenant snapshot published");
        self.metrics
            .snapshots_published
            .get_or_create(&crate::metrics::KindLabel { kind: "router" })
            .inc();
        self.published
            .insert(snapshot.tenant.clone(), snapshot.version);
        if let Some(since) = self.first_change.remove(&snapshot.tenant) {
            let since = self
                .awaiting
                .get(&snapshot.tenant)
                .map_or(since, |(_, t)| (*t).min(since));
            self.awaiting
                .insert(snapshot.tenant.clone(), (snapshot.version, since));
        }
    }

    /// Closes the streams of a tenant no longer served and forgets what it published.
    fn forget_tenant(&mut self, tenant: &str) {
        if let Ok(stream) = StreamName::tenant(tenant.to_owned()) {
            self.server.remove_stream(&stream);
        }
        self.published.remove(tenant);
        self.acked.remove(tenant);
        self.bootstrap.remove(tenant);
    }

    /// Reads the Tenants again from the store (after a cluster-wide change).
    fn refresh_tenants(&mut self) {
        self.tenants = self
            .store
            .index()
            .of_kind(Kind::Tenant)
            .filter_map(|o| match o {
                crate::objects::Object::Tenant(t) => {
                    Some((t.metadata.name.clone()?, Arc::new((**t).clone())))
                }
                _ => None,
            })
            .collect();
    }

    /// Queue bookkeeping after a round: what is no longer queued has been translated.
    fn settle_queue(&mut self) {
        let compiler = &self.compiler;
        let metrics = &self.metrics;
        self.depth.retain(|tenant, _| {
            let queued = compiler.is_queued(tenant);
            if !queued {
                metrics.set_queue_depth(tenant, 0);
            }
            queued
        });
        self.first_change
            .retain(|tenant, _| compiler.is_queued(tenant));
        self.metrics
            .queue_depth_total
            .set(i64::try_from(self.compiler.queued()).unwrap_or(i64::MAX));
    }

    /// Replaces the [`TenantDirectory`] with the compiled tenants and closes the streams of every
    /// tenant whose namespace changed: its routers reconnect and are authenticated against the
    /// new directory (the old namespace's routers are refused).
    fn refresh_directory(&mut self) {
        let withdrawn = self.directory.replace(
            self.compiler
                .tenants()
                .map(|s| (s.namespace.clone(), s.tenant.clone()))
                .collect(),
        );
        for (namespace, tenant) in withdrawn {
            let Ok(stream) = StreamName::tenant(tenant.clone()) else {
                continue;
            };
            if self.server.remove_stream(&stream) {
                tracing::warn!(%tenant, %namespace, "the tenant no longer owns this namespace: its snapshot streams are closed");
            }
        }
    }

    /// An edge served edge snapshot `version`: when that is the one last published, it becomes
    /// the edge's bootstrap.
    fn promote_edge_bootstrap(&mut self, version: u64) {
        let (Some(acked), Some(published)) = (&self.edge_acked, &self.edge_published) else {
            return;
        };
        if published.version == version {
            acked.send_if_modified(|current| {
                let newer = current.as_ref().is_none_or(|c| c.version < version);
                if newer {
                    *current = Some(Arc::clone(published));
                }
                newer
            });
        }
    }

    /// Records a router's or the edge's acknowledgement.
    pub fn on_ack(&mut self, stream: StreamName, ack: Ack) {
        let kind = match stream {
            StreamName::Edge => "edge",
            StreamName::Tenant(_) => "router",
        };
        let outcome = if ack.outcome.is_ok() {
            "accepted"
        } else {
            "rejected"
        };
        self.metrics
            .acks
            .get_or_create(&crate::metrics::AckLabel { kind, outcome })
            .inc();
        let StreamName::Tenant(tenant) = stream else {
            match ack.outcome {
                Ok(()) => {
                    tracing::debug!(subscriber = %ack.subscriber, version = ack.version, "edge snapshot acknowledged");
                    self.promote_edge_bootstrap(ack.version);
                }
                Err(reason) => {
                    tracing::warn!(subscriber = %ack.subscriber, version = ack.version, %reason, "edge snapshot rejected");
                    self.notify(Notice::EdgeSnapshotRejected {
                        subscriber: ack.subscriber.clone(),
                        version: ack.version,
                        reason: reason.clone(),
                    });
                }
            }
            return;
        };
        if let Err(reason) = &ack.outcome {
            tracing::warn!(%tenant, subscriber = %ack.subscriber, version = ack.version, %reason, "tenant snapshot rejected; the router keeps the previous one");
            self.notify(Notice::TenantSnapshotRejected {
                uid: self
                    .tenants
                    .get(&tenant)
                    .and_then(|t| t.metadata.uid.clone()),
                tenant,
                subscriber: ack.subscriber.clone(),
                version: ack.version,
                reason: reason.clone(),
            });
            return;
        }
        if !self.published.contains_key(&tenant) {
            return;
        }
        let newest = self.acked.entry(tenant.clone()).or_insert(0);
        if ack.version <= *newest {
            return;
        }
        *newest = ack.version;
        if let Some((version, since)) = self.awaiting.get(&tenant).copied() {
            if ack.version >= version {
                self.metrics
                    .change_to_ack
                    .observe(since.elapsed().as_secs_f64());
                self.awaiting.remove(&tenant);
            }
        }
        if let Some(current) = self.compiler.tenant_shared(&tenant) {
            if current.version <= ack.version {
                self.bootstrap.insert(tenant.clone(), Arc::clone(&current));
                self.push_bootstrap(&tenant, current);
            }
        }
        self.rerender(&tenant);
    }

    /// Recomputes every desired Tenant (the served set changed) and hands them to onboarding.
    fn push_desired(&mut self) {
        self.desired_tenants = desired_tenants(
            self.tenants.values(),
            |name| self.compiler.tenant(name).is_some(),
            &self.bootstrap,
        );
        self.desired.send_replace(self.desired_tenants.clone());
    }

    /// A served Tenant's bootstrap snapshot changed: only its entry changes.
    fn push_bootstrap(&mut self, tenant: &str, snapshot: Arc<TenantSnapshot>) {
        let Some(entry) = self.desired_tenants.get_mut(tenant) else {
            return;
        };
        entry.bootstrap = Some(snapshot);
        self.desired.send_replace(self.desired_tenants.clone());
    }

    /// Renders the compiled partitions given (`None`: the partition is gone) and hands every
    /// partition to the status task.
    fn refresh_statuses(&mut self, partitions: BTreeMap<String, Option<Partition>>) {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        for (name, compiled) in partitions {
            match compiled {
                Some(c) => self.render_partition(name, c.to_vec(), &now),
                None => {
                    self.rendered.remove(&name);
                }
            }
        }
        self.statuses.send_replace(self.rendered.clone());
    }

    /// Renders a tenant's partition again after an acknowledgement and hands every partition to
    /// the status task.
    fn rerender(&mut self, name: &str) {
        let Some(previous) = self.rendered.get(name).cloned() else {
            return;
        };
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        self.render_partition(name.to_owned(), ours_only(&previous.unpack()), &now);
        self.statuses.send_replace(self.rendered.clone());
    }

    /// Acknowledgements, transition times (from the partition as rendered before) and other
    /// controllers' route entries applied to `base`, kept as the partition `name`.
    fn render_partition(&mut self, name: String, base: Vec<ObjectStatus>, now: &Time) {
        let previous = self
            .rendered
            .get(&name)
            .map(|p| p.unpack())
            .unwrap_or_default();
        let mut rendered = render_statuses(
            &base,
            &self.published,
            &self.acked,
            &self.installation,
            &previous,
            now,
        );
        let index = self.store.index();
        let detached = if name == CLUSTER_PARTITION {
            let compiler = &self.compiler;
            let namespaces: std::collections::BTreeSet<&str> = Kind::ROUTES
                .into_iter()
                .flat_map(|k| index.of_kind(k))
                .filter_map(|r| r.metadata().namespace.as_deref())
                .filter(|ns| compiler.tenant_of_namespace(ns).is_none())
                .collect();
            detached_routes(namespaces.into_iter(), &rendered, index)
        } else {
            let ns = self.compiler.tenant(&name).map(|t| t.namespace.clone());
            detached_routes(ns.as_deref().into_iter(), &rendered, index)
        };
        rendered.extend(detached);
        let foreign = foreign_parents(&rendered, self.store.index());
        merge_foreign_parents(&mut rendered, &foreign);
        self.rendered
            .insert(name, Arc::new(PackedPartition::pack(rendered)));
    }

    /// Tenant → version published (for tests).
    #[cfg(test)]
    pub fn published(&self) -> &BTreeMap<String, u64> {
        &self.published
    }

    /// Number of compilations so far (for tests).
    #[cfg(test)]
    pub fn compiles(&self) -> u64 {
        self.compiles
    }

    /// The cached objects (for tests).
    #[cfg(test)]
    pub fn store(&self) -> &ObjectStore {
        &self.store
    }
}

/// The `bulkhead_operator_reconcile_errors_total` label of a publishing failure, by variant (as
/// controller-rs labels its errors).
fn publish_error_label(error: &PublishError) -> &'static str {
    match error {
        PublishError::Stream(_) => "publish_stream_name",
        PublishError::Encode(_) => "publish_encode",
        PublishError::Frame(_) => "publish_frame",
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The Tenants to onboard: those served (`served(name)`), each with its bootstrap snapshot.
pub fn desired_tenants<'a>(
    tenants: impl IntoIterator<Item = &'a Arc<Tenant>>,
    served: impl Fn(&str) -> bool,
    bootstrap: &BTreeMap<String, Arc<TenantSnapshot>>,
) -> Desired {
    tenants
        .into_iter()
        .filter_map(|t| {
            let name = t.metadata.name.clone()?;
            served(&name).then(|| {
                let desired = DesiredTenant {
                    tenant: Arc::clone(t),
                    bootstrap: bootstrap.get(&name).cloned(),
                };
                (name, desired)
            })
        })
        .collect()
}

/// The next installation from `rx` (`None` when it closed, then never again).
async fn next_installation(rx: &mut Option<watch::Receiver<Installation>>) -> Option<Installation> {
    let Some(r) = rx else {
        return std::future::pending().await;
    };
    if r.changed().await.is_err() {
        *rx = None;
        return None;
    }
    let installation = r.borrow_and_update().clone();
    Some(installation)
}

/// The statuses to write: `compiled` with acknowledgements applied (a tenant is served when a
/// router acknowledged its published version), `acknowledgedVersion` set on Tenants, the
/// installation applied (Gateway addresses, GatewayClass `SupportedVersion`), and transition
/// times carried over from `previous`.
pub fn render_statuses(
    compiled: &[ObjectStatus],
    published: &BTreeMap<String, u64>,
    acked: &BTreeMap<String, u64>,
    installation: &Installation,
    previous: &[ObjectStatus],
    now: &Time,
) -> Vec<ObjectStatus> {
    let mut statuses = compiled.to_vec();
    // Only the tenants these statuses name (one for a tenant's partition), not every tenant.
    let served: BTreeMap<String, bool> = statuses
        .iter()
        .filter_map(|s| s.tenant.as_deref())
        .filter_map(|t| {
            let v = published.get(t)?;
            Some((t.to_owned(), acked.get(t).is_some_and(|a| a >= v)))
        })
        .collect();
    apply_acks(&mut statuses, &served);
    for s in statuses.iter_mut().filter(|s| s.kind == "Tenant") {
        let version = s.tenant.as_ref().and_then(|t| acked.get(t));
        if let (Some(v), Some(map)) = (version, s.status.as_object_mut()) {
            map.insert("acknowledgedVersion".into(), serde_json::json!(v));
        }
    }
    apply_installation(&mut statuses, installation);
    stamp_transitions(&mut statuses, previous, now);
    statuses
}

#[cfg(test)]
mod tests;
