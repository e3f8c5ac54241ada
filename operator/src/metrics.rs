//! The control plane's Prometheus metrics. Labels are bounded by configuration: `tenant` names a
//! `Tenant` (cluster admins create them) and a per-tenant queue-depth series exists only while the
//! tenant has work waiting.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Smallest duration bucket, in seconds (100 µs).
const BUCKET_START: f64 = 0.0001;
/// Number of duration buckets (doubling from 100 µs up to about 105 s).
const BUCKETS: u16 = 21;

/// `tenant` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TenantLabel {
    /// Tenant name.
    pub tenant: String,
}

/// `kind` label of a data-plane client or a failed task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabel {
    /// `edge` / `router`, or `onboarding` / `status` / `publish`, or `loaded` / `refused`.
    pub kind: &'static str,
}

/// Outcome of an acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AckLabel {
    /// `edge` or `router`.
    pub kind: &'static str,
    /// `accepted` or `rejected`.
    pub outcome: &'static str,
}

fn histogram() -> Histogram {
    Histogram::new(exponential_buckets(BUCKET_START, 2.0, BUCKETS))
}

/// Every metric of the control plane. Cheap to clone (all handles are shared).
#[derive(Debug, Clone)]
pub struct OperatorMetrics {
    /// Duration of each compilation (translating the tenants whose inputs changed and publishing).
    pub compile_duration: Histogram,
    /// Tenants re-translated.
    pub tenants_translated: Counter,
    /// Snapshots published, by kind.
    pub snapshots_published: Family<KindLabel, Counter>,
    /// Errors of the reconcilers, by kind (`publish`, `onboarding`, `status`).
    pub reconcile_errors: Family<KindLabel, Counter>,
    /// Changed snapshot server certificate files, by outcome (`loaded` / `refused`).
    pub certificate_reloads: Family<KindLabel, Counter>,
    /// Object changes waiting for compilation, per tenant (series present only while non-zero).
    pub queue_depth: Family<TenantLabel, Gauge>,
    /// Object changes waiting for compilation, all tenants (including cluster-wide changes).
    pub queue_depth_total: Gauge,
    /// Connected snapshot clients, by kind.
    pub connected: Family<KindLabel, Gauge>,
    /// Acknowledgements, by kind and outcome.
    pub acks: Family<AckLabel, Counter>,
    /// Open snapshot streams closed because their client may no longer read them (a router whose
    /// namespace no longer belongs to its tenant).
    pub streams_revoked: Counter,
    /// Time from the first object change of a tenant to a router acknowledging a snapshot that
    /// includes it.
    pub change_to_ack: Histogram,
    /// Objects the watchers could not decode, by kind (each time one is listed or changed).
    pub undecodable_objects: Family<KindLabel, Counter>,
    /// Objects not served now because they cannot be decoded, by kind.
    pub undecodable_objects_current: Family<KindLabel, Gauge>,
    /// 1 while a kind cannot be listed and is served as empty (degraded), by kind.
    pub degraded_kinds: Family<KindLabel, Gauge>,
    compiles: Arc<AtomicU64>,
    last_compile_micros: Arc<AtomicU64>,
    connected_routers: Arc<AtomicU64>,
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        Self {
            compile_duration: histogram(),
            tenants_translated: Counter::default(),
            snapshots_published: Family::default(),
            reconcile_errors: Family::default(),
            certificate_reloads: Family::default(),
            queue_depth: Family::default(),
            queue_depth_total: Gauge::default(),
            connected: Family::default(),
            acks: Family::default(),
            streams_revoked: Counter::default(),
            change_to_ack: histogram(),
            undecodable_objects: Family::default(),
            undecodable_objects_current: Family::default(),
            degraded_kinds: Family::default(),
            compiles: Arc::default(),
            last_compile_micros: Arc::default(),
            connected_routers: Arc::default(),
        }
    }
}

impl OperatorMetrics {
    /// New metrics, not yet registered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers every metric under `bulkhead_operator_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("bulkhead_operator");
        r.register(
            "compile_duration_seconds",
            "Duration of one compilation (changed tenants translated and published)",
            self.compile_duration.clone(),
        );
        r.register(
            "tenants_translated",
            "Tenants re-translated because their inputs changed",
            self.tenants_translated.clone(),
        );
        r.register(
            "snapshots_published",
            "Snapshots published, by kind (edge, router)",
            self.snapshots_published.clone(),
        );
        r.register(
            "reconcile_errors",
            "Reconciliation errors, by kind (publish, onboarding, status)",
            self.reconcile_errors.clone(),
        );
        r.register(
            "certificate_reloads",
            "Changed snapshot server certificate files, by outcome (loaded, refused)",
            self.certificate_reloads.clone(),
        );
        r.register(
            "queue_depth",
            "Object changes waiting for compilation, per tenant",
            self.queue_depth.clone(),
        );
        r.register(
            "queue_depth_total",
            "Object changes waiting for compilation",
            self.queue_depth_total.clone(),
        );
        r.register(
            "connected_data_planes",
            "Connected snapshot clients, by kind (edge, router)",
            self.connected.clone(),
        );
        r.register(
            "snapshot_streams_revoked",
            "Open snapshot streams closed because their client may no longer read them",
            self.streams_revoked.clone(),
        );
        r.register(
            "acknowledgements",
            "Snapshot acknowledgements, by kind and outcome",
            self.acks.clone(),
        );
        r.register(
            "change_to_ack_seconds",
            "Time from an object change to a router acknowledging the snapshot that includes it",
            self.change_to_ack.clone(),
        );
        r.register(
            "undecodable_objects",
            "Objects the watchers could not decode (skipped), by kind",
            self.undecodable_objects.clone(),
        );
        r.register(
            "undecodable_objects_current",
            "Objects not served because they cannot be decoded, by kind",
            self.undecodable_objects_current.clone(),
        );
        r.register(
            "degraded_kinds",
            "1 while a kind cannot be listed and is served as empty, by kind",
            self.degraded_kinds.clone(),
        );
    }

    /// Records one compilation.
    pub fn record_compile(&self, took: Duration, translated: usize) {
        self.compile_duration.observe(took.as_secs_f64());
        self.tenants_translated.inc_by(translated as u64);
        self.compiles.fetch_add(1, Ordering::Relaxed);
        self.last_compile_micros.store(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Counts a reconciliation error of `kind`.
    pub fn error(&self, kind: &'static str) {
        self.reconcile_errors
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// Sets the connected client counts.
    pub fn set_connected(&self, edges: usize, routers: usize) {
        let gauge = |kind| self.connected.get_or_create(&KindLabel { kind }).clone();
        gauge("edge").set(i64::try_from(edges).unwrap_or(i64::MAX));
        gauge("router").set(i64::try_from(routers).unwrap_or(i64::MAX));
        self.connected_routers
            .store(routers as u64, Ordering::Relaxed);
    }

    /// Sets a tenant's queue depth (removing the series at zero).
    pub fn set_queue_depth(&self, tenant: &str, depth: usize) {
        let label = TenantLabel {
            tenant: tenant.to_owned(),
        };
        if depth == 0 {
            self.queue_depth.remove(&label);
        } else {
            self.queue_depth
                .get_or_create(&label)
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
    }

    /// Compilations so far.
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    /// Duration of the last compilation.
    pub fn last_compile(&self) -> Duration {
        Duration::from_micros(self.last_compile_micros.load(Ordering::Relaxed))
    }

    /// Connected router streams at the last update.
    pub fn connected_routers(&self) -> usize {
        usize::try_from(self.connected_routers.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn render(m: &OperatorMetrics) -> String {
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut out = String::new();
        encode(&mut out, &registry).expect("encodes");
        out
    }

    #[test]
    fn queue_depth_series_exist_only_while_work_waits() {
        let m = OperatorMetrics::new();
        m.set_queue_depth("acme", 3);
        m.set_queue_depth("globex", 1);
        let text = render(&m);
        assert!(
            text.contains("bulkhead_operator_queue_depth{tenant=\"acme\"} 3"),
            "{text}"
        );
        m.set_queue_depth("acme", 0);
        let text = render(&m);
        assert!(!text.contains("tenant=\"acme\""), "{text}");
        assert!(text.contains("tenant=\"globex\""), "{text}");
    }

    #[test]
    fn compile_records_feed_the_histogram_and_the_accessors() {
        let m = OperatorMetrics::new();
        m.record_compile(Duration::from_millis(3), 2);
        m.record_compile(Duration::from_millis(5), 1);
        assert_eq!(m.compiles(), 2);
        assert_eq!(m.last_compile(), Duration::from_millis(5));
        let text = render(&m);
        assert!(
            text.contains("bulkhead_operator_compile_duration_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains("bulkhead_operator_tenants_translated_total 3"),
            "{text}"
        );
        m.set_connected(1, 7);
        assert_eq!(m.connected_routers(), 7);
        assert!(render(&m).contains("bulkhead_operator_connected_data_planes{kind=\"router\"} 7"));
    }
}
