//! The edge's Prometheus metrics (prefix `bulkhead_edge_`). Label values come only from the snapshot
//! (tenant names, router endpoints) or from fixed sets (listener, reason, outcome, direction), never
//! from client input, so the number of series stays bounded.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// Connect latency buckets: 0.5 ms to about 4 s.
fn connect_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

/// `listener`, `tenant`, `endpoint`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EndpointLabels {
    pub(crate) listener: &'static str,
    pub(crate) tenant: String,
    pub(crate) endpoint: String,
}

/// `listener`, `tenant`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TenantLabels {
    pub(crate) listener: &'static str,
    pub(crate) tenant: String,
}

/// `listener`, `tenant`, `direction`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BytesLabels {
    pub(crate) listener: &'static str,
    pub(crate) tenant: String,
    pub(crate) direction: &'static str,
}

/// `listener`, `tenant` (empty before the tenant is known), `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefusedLabels {
    pub(crate) listener: &'static str,
    pub(crate) tenant: String,
    pub(crate) reason: &'static str,
}

/// `listener`, `tenant`, `outcome`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ClosedLabels {
    pub(crate) listener: &'static str,
    pub(crate) tenant: String,
    pub(crate) outcome: &'static str,
}

/// `listener`, `outcome` (`ok` or a sniff failure reason).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SniffLabels {
    pub(crate) listener: &'static str,
    pub(crate) outcome: &'static str,
}

/// `listener`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ListenerLabels {
    pub(crate) listener: &'static str,
}

/// The edge's metrics. Create once per process with [`EdgeMetrics::register`].
#[derive(Debug)]
pub struct EdgeMetrics {
    pub(crate) connections_active: Family<EndpointLabels, Gauge>,
    pub(crate) connections: Family<EndpointLabels, Counter>,
    pub(crate) connect_errors: Family<EndpointLabels, Counter>,
    pub(crate) endpoints_failing: Family<TenantLabels, Gauge>,
    pub(crate) connect_duration: Family<TenantLabels, Histogram, fn() -> Histogram>,
    pub(crate) bytes: Family<BytesLabels, Counter>,
    pub(crate) refused: Family<RefusedLabels, Counter>,
    pub(crate) closed: Family<ClosedLabels, Counter>,
    pub(crate) sniff: Family<SniffLabels, Counter>,
    /// The `sniff{outcome="ok"}` series of the two listeners, looked up once (every connection
    /// counts one).
    sniff_ok: [std::sync::OnceLock<Counter>; 2],
    pub(crate) unknown_hostnames: Family<ListenerLabels, Counter>,
    pub(crate) sniffing: Gauge,
    pub(crate) open_connections: Gauge,
    pub(crate) snapshot_version: Gauge,
    pub(crate) snapshots_rejected: Counter,
    pub(crate) source_rate_untracked: Counter,
}

impl EdgeMetrics {
    /// Creates the metrics and registers them in `registry` under the prefix `bulkhead_edge_`.
    pub fn register(registry: &mut Registry) -> Arc<EdgeMetrics> {
        let m = Self::unregistered();
        let r = registry.sub_registry_with_prefix("bulkhead_edge");
        r.register(
            "connections_active",
            "Forwarded connections currently open, by listener, tenant and router endpoint",
            m.connections_active.clone(),
        );
        r.register(
            "connections",
            "Connections forwarded, by listener, tenant and router endpoint",
            m.connections.clone(),
        );
        r.register(
            "connect_errors",
            "Failed connection attempts to a router endpoint (refused or timed out)",
            m.connect_errors.clone(),
        );
        r.register(
            "router_endpoints_failing",
            "Router endpoints whose last connection attempt failed, by listener and tenant (skipped \
             while another endpoint is not, for a backoff that doubles per failure)",
            m.endpoints_failing.clone(),
        );
        r.register(
            "connect_duration_seconds",
            "Time to connect to a router endpoint",
            m.connect_duration.clone(),
        );
        r.register(
            "bytes",
            "Bytes forwarded, by listener, tenant and direction (client_to_router, router_to_client)",
            m.bytes.clone(),
        );
        r.register(
            "refused",
            "Connections refused after they were accepted, by listener, tenant and reason \
             (per source: source_rate_limit, source_sniffing_limit, source_tenant_limit; \
             cleartext HTTP/2 without a valid first request: h2_timeout, h2_too_large, \
             h2_malformed, h2_bad_host, h2_closed)",
            m.refused.clone(),
        );
        r.register(
            "closed",
            "Forwarded connections ended, by listener, tenant and outcome",
            m.closed.clone(),
        );
        r.register(
            "sniff",
            "Sniffing outcomes (ok or the failure reason), by listener",
            m.sniff.clone(),
        );
        r.register(
            "unknown_hostnames",
            "Connections whose SNI or Host no tenant owns",
            m.unknown_hostnames.clone(),
        );
        r.register(
            "connections_sniffing",
            "Connections still reading their ClientHello or request head",
            m.sniffing.clone(),
        );
        r.register(
            "connections_open",
            "Client connections open, sniffing or forwarded",
            m.open_connections.clone(),
        );
        r.register(
            "snapshot_version",
            "Version of the edge snapshot being served",
            m.snapshot_version.clone(),
        );
        r.register(
            "snapshots_rejected",
            "Edge snapshots refused as invalid (the previous one kept serving)",
            m.snapshots_rejected.clone(),
        );
        r.register(
            "source_rate_untracked",
            "Connections admitted without a per-source rate check because the rate table was full \
             of busy sources (fail-open)",
            m.source_rate_untracked.clone(),
        );
        Arc::new(m)
    }

    fn unregistered() -> Self {
        Self {
            connections_active: Family::default(),
            connections: Family::default(),
            connect_errors: Family::default(),
            endpoints_failing: Family::default(),
            connect_duration: Family::new_with_constructor(connect_histogram),
            bytes: Family::default(),
            refused: Family::default(),
            closed: Family::default(),
            sniff: Family::default(),
            sniff_ok: Default::default(),
            unknown_hostnames: Family::default(),
            sniffing: Gauge::default(),
            open_connections: Gauge::default(),
            snapshot_version: Gauge::default(),
            snapshots_rejected: Counter::default(),
            source_rate_untracked: Counter::default(),
        }
    }

    /// Counts a connection's sniff outcome on `listener` (`https` or `http`).
    pub(crate) fn count_sniff(&self, listener: &'static str, outcome: &'static str) {
        let make = || {
            self.sniff
                .get_or_create_owned(&SniffLabels { listener, outcome })
        };
        match (outcome, listener) {
            ("ok", "https") => self.sniff_ok[0].get_or_init(make).inc(),
            ("ok", "http") => self.sniff_ok[1].get_or_init(make).inc(),
            _ => make().inc(),
        };
    }

    /// Counts a refused connection.
    pub(crate) fn refuse(&self, listener: &'static str, tenant: &str, reason: &'static str) {
        self.refused
            .get_or_create(&RefusedLabels {
                listener,
                tenant: tenant.to_owned(),
                reason,
            })
            .inc();
    }
}

/// Increments a gauge now and decrements it when dropped.
#[derive(Debug)]
pub(crate) struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub(crate) fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
