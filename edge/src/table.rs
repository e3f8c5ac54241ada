//! The routing table built from one [`EdgeSnapshot`]: hostname → tenant → router endpoints, with
//! the metric handles and load counters each connection needs. Immutable once built; a new snapshot
//! builds a new table that is swapped in atomically. Load and per-tenant connection counters
//! outlive a swap ([`SharedCounters`]), so limits and balancing see connections opened before it;
//! so do failure marks ([`EndpointHealth`]).

use crate::health::EndpointHealth;
use crate::metrics::{BytesLabels, ClosedLabels, EdgeMetrics, EndpointLabels, TenantLabels};
use bulkhead_hostmatch::{HostPattern, HostTable};
use bulkhead_snapshot::{EdgePort, EdgeSnapshot};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The metric label of a listener.
pub(crate) fn listener_label(port: EdgePort) -> &'static str {
    match port {
        EdgePort::Https => "https",
        EdgePort::Http => "http",
    }
}

/// Checks a snapshot before it replaces the one being served: the contract's
/// [`EdgeSnapshot::validate`] (every route names a known tenant, every pattern parses, no pattern
/// appears twice), with its reason as text for the acknowledgement.
pub(crate) fn validate(snapshot: &EdgeSnapshot) -> Result<(), String> {
    snapshot.validate().map_err(|e| e.to_string())
}

/// Counters that survive snapshot swaps, keyed by what the snapshot names.
#[derive(Debug, Default)]
pub(crate) struct SharedCounters {
    tenants: HashMap<String, Arc<AtomicUsize>>,
    endpoints: HashMap<EndpointKey, Arc<EndpointState>>,
}

/// What one router endpoint carries across snapshot swaps.
#[derive(Debug, Default)]
pub(crate) struct EndpointState {
    /// Open connections through this edge.
    active: AtomicUsize,
    /// Whether its connects fail.
    pub(crate) health: EndpointHealth,
}

/// Tenant, edge port and address of a router endpoint.
type EndpointKey = (String, EdgePort, SocketAddr);

/// The routing table of one snapshot version.
#[derive(Debug, Default)]
pub(crate) struct EdgeTable {
    hosts: HostTable<Arc<TenantEntry>>,
}

impl EdgeTable {
    /// A table that routes nothing (before the first snapshot).
    pub(crate) fn empty() -> Self {
        Self::default()
    }

    /// Builds the table of a snapshot that passed [`validate`]; routes to unknown tenants or with
    /// unparsable patterns are skipped (they cannot occur after validation).
    pub(crate) fn build(snapshot: &EdgeSnapshot, shared: &mut SharedCounters) -> Self {
        let mut entries: HashMap<&str, Arc<TenantEntry>> = HashMap::new();
        for (name, endpoints) in &snapshot.tenants {
            let connections = shared.tenants.entry(name.clone()).or_default().clone();
            let tenant: Arc<str> = Arc::from(name.as_str());
            let mut port =
                |port: EdgePort| PortEntry::new(&tenant, port, endpoints.for_port(port), shared);
            let https = port(EdgePort::Https);
            let http = port(EdgePort::Http);
            entries.insert(
                name,
                Arc::new(TenantEntry {
                    name: tenant,
                    connections,
                    https,
                    http,
                }),
            );
        }
        // Forget the counters of tenants and endpoints that left; open connections keep theirs.
        shared
            .tenants
            .retain(|name, _| snapshot.tenants.contains_key(name));
        let named = |(name, port, addr): &EndpointKey| {
            snapshot
                .tenants
                .get(name)
                .is_some_and(|e| e.for_port(*port).contains(addr))
        };
        shared.endpoints.retain(|key, _| named(key));
        let mut hosts = HostTable::new();
        for route in &snapshot.routes {
            let (Ok(pattern), Some(entry)) = (
                HostPattern::parse(&route.hostname),
                entries.get(route.tenant.as_str()),
            ) else {
                continue;
            };
            hosts.insert(pattern, entry.clone());
        }
        Self { hosts }
    }

    /// The tenant owning a (normalised) name, or for `None` (a ClientHello without SNI, a request
    /// by IP address) the tenant owning `*`.
    pub(crate) fn lookup(&self, host: Option<&str>) -> Option<&Arc<TenantEntry>> {
        match host {
            Some(host) => self.hosts.lookup(host),
            None => self.hosts.get_pattern(&HostPattern::Any),
        }
    }
}

/// One tenant: its name, its open-connection count, its routers per edge port.
#[derive(Debug)]
pub(crate) struct TenantEntry {
    /// Shared, so a per-connection key (the source limits') holds it without a copy.
    pub(crate) name: Arc<str>,
    connections: Arc<AtomicUsize>,
    https: PortEntry,
    http: PortEntry,
}

impl TenantEntry {
    /// The routers and metric handles for one edge port.
    pub(crate) fn port(&self, port: EdgePort) -> &PortEntry {
        match port {
            EdgePort::Https => &self.https,
            EdgePort::Http => &self.http,
        }
    }

    /// Takes one of the tenant's `limit` connection slots, if one is free.
    pub(crate) fn try_acquire(&self, limit: usize) -> Option<SlotGuard> {
        let taken = self
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            });
        taken.ok().map(|_| SlotGuard(self.connections.clone()))
    }
}

/// Something holding a count of taken slots.
pub(crate) trait Slots {
    /// The count.
    fn slots(&self) -> &AtomicUsize;
}

impl Slots for AtomicUsize {
    fn slots(&self) -> &AtomicUsize {
        self
    }
}

impl Slots for EndpointState {
    fn slots(&self) -> &AtomicUsize {
        &self.active
    }
}

/// A taken slot of a counter, released on drop.
#[derive(Debug)]
pub(crate) struct SlotGuard<T: Slots = AtomicUsize>(Arc<T>);

impl<T: Slots> SlotGuard<T> {
    fn take(counter: &Arc<T>) -> Self {
        counter.slots().fetch_add(1, Ordering::AcqRel);
        Self(counter.clone())
    }
}

impl<T: Slots> Drop for SlotGuard<T> {
    fn drop(&mut self) {
        self.0.slots().fetch_sub(1, Ordering::AcqRel);
    }
}

/// A tenant's routers on one edge port, and the per-tenant metric series of that port.
///
/// Series are created at the first connection that uses them, not when the table is built: an
/// edge serving 10,000 tenants, most idle at any moment, held some 15 MiB of empty series (about
/// 1.5 KiB a tenant) and exported them all on every scrape.
#[derive(Debug)]
pub(crate) struct PortEntry {
    pub(crate) endpoints: Vec<EndpointEntry>,
    pub(crate) tenant: Arc<str>,
    pub(crate) listener: &'static str,
    series: OnceLock<Box<PortSeries>>,
    /// The `closed` series of this tenant and listener by outcome, each looked up at its first
    /// use (a series appears only once it counts something; the box only once one does).
    closed: OnceLock<Box<[OnceLock<Counter>; CLOSED_OUTCOMES.len()]>>,
}

/// The series of a tenant on one edge port.
#[derive(Debug)]
pub(crate) struct PortSeries {
    pub(crate) bytes_to_router: Counter,
    pub(crate) bytes_to_client: Counter,
    pub(crate) connect_duration: Histogram,
}

/// How a forwarded connection ends (the `outcome` of `bulkhead_edge_closed_total`).
pub(crate) const CLOSED_OUTCOMES: [&str; 4] = ["ok", "error", "idle_timeout", "drained"];

impl PortEntry {
    fn new(
        tenant: &Arc<str>,
        port: EdgePort,
        addrs: &[SocketAddr],
        shared: &mut SharedCounters,
    ) -> Self {
        let endpoints = addrs
            .iter()
            .map(|&addr| EndpointEntry {
                addr,
                state: shared
                    .endpoints
                    .entry((tenant.to_string(), port, addr))
                    .or_default()
                    .clone(),
                series: OnceLock::new(),
            })
            .collect();
        Self {
            endpoints,
            tenant: Arc::clone(tenant),
            listener: listener_label(port),
            series: OnceLock::new(),
            closed: OnceLock::new(),
        }
    }

    /// This port's series, created at the first call.
    pub(crate) fn series(&self, metrics: &EdgeMetrics) -> &PortSeries {
        self.series.get_or_init(|| {
            let bytes = |direction| {
                metrics.bytes.get_or_create_owned(&BytesLabels {
                    listener: self.listener,
                    tenant: self.tenant.to_string(),
                    direction,
                })
            };
            Box::new(PortSeries {
                bytes_to_router: bytes("client_to_router"),
                bytes_to_client: bytes("router_to_client"),
                connect_duration: metrics
                    .connect_duration
                    .get_or_create_owned(&self.tenant_labels()),
            })
        })
    }

    /// The labels of this tenant's per-listener series.
    pub(crate) fn tenant_labels(&self) -> TenantLabels {
        TenantLabels {
            listener: self.listener,
            tenant: self.tenant.to_string(),
        }
    }

    /// The series of one of this port's endpoints, created at the first call.
    pub(crate) fn endpoint_series<'a>(
        &self,
        endpoint: &'a EndpointEntry,
        metrics: &EdgeMetrics,
    ) -> &'a EndpointSeries {
        endpoint.series.get_or_init(|| {
            let labels = EndpointLabels {
                listener: self.listener,
                tenant: self.tenant.to_string(),
                endpoint: endpoint.addr.to_string(),
            };
            Box::new(EndpointSeries {
                active: metrics.connections_active.get_or_create_owned(&labels),
                connections: metrics.connections.get_or_create_owned(&labels),
                connect_errors: metrics.connect_errors.get_or_create_owned(&labels),
            })
        })
    }

    /// Counts a connection to `endpoint` as open until the guards drop.
    pub(crate) fn open(
        &self,
        endpoint: &EndpointEntry,
        metrics: &EdgeMetrics,
    ) -> (SlotGuard<EndpointState>, crate::metrics::GaugeGuard) {
        let series = self.endpoint_series(endpoint, metrics);
        series.connections.inc();
        (
            SlotGuard::take(&endpoint.state),
            crate::metrics::GaugeGuard::new(&series.active),
        )
    }

    /// Counts a connection closed with `outcome` (one of [`CLOSED_OUTCOMES`]).
    pub(crate) fn count_closed(&self, outcome: &'static str, metrics: &EdgeMetrics) {
        let make = || {
            metrics.closed.get_or_create_owned(&ClosedLabels {
                listener: self.listener,
                tenant: self.tenant.to_string(),
                outcome,
            })
        };
        match CLOSED_OUTCOMES.iter().position(|o| *o == outcome) {
            Some(i) => self.closed.get_or_init(Box::default)[i]
                .get_or_init(make)
                .inc(),
            None => make().inc(),
        };
    }
}

/// One router endpoint: its address, its load (open connections through this edge) and metrics.
#[derive(Debug)]
pub(crate) struct EndpointEntry {
    pub(crate) addr: SocketAddr,
    /// Its load and health (shared across snapshot swaps).
    pub(crate) state: Arc<EndpointState>,
    /// Its series, created at its first connection attempt.
    series: OnceLock<Box<EndpointSeries>>,
}

/// The series of one router endpoint.
#[derive(Debug)]
pub(crate) struct EndpointSeries {
    active: Gauge,
    pub(crate) connections: Counter,
    pub(crate) connect_errors: Counter,
}

impl EndpointEntry {
    /// Open connections to this endpoint (the load power-of-two-choices compares).
    pub(crate) fn load(&self) -> usize {
        self.state.active.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_snapshot::{EdgeRoute, RouterEndpoints};
    use prometheus_client::registry::Registry;

    fn snapshot(routes: &[(&str, &str)], tenants: &[(&str, &[&str])]) -> EdgeSnapshot {
        EdgeSnapshot {
            version: 1,
            hash: String::new(),
            routes: routes
                .iter()
                .map(|(h, t)| EdgeRoute {
                    hostname: (*h).into(),
                    tenant: (*t).into(),
                })
                .collect(),
            tenants: tenants
                .iter()
                .map(|(t, addrs)| {
                    (
                        (*t).to_string(),
                        RouterEndpoints {
                            https: addrs.iter().map(|a| a.parse().unwrap()).collect(),
                            http: vec![],
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn lookup_prefers_exact_then_wildcard_and_no_sni_takes_any() {
        let s = snapshot(
            &[
                ("a.example", "acme"),
                ("*.example", "globex"),
                ("*", "initech"),
            ],
            &[
                ("acme", &["127.0.0.1:1"]),
                ("globex", &[]),
                ("initech", &[]),
            ],
        );
        validate(&s).unwrap();
        let t = EdgeTable::build(&s, &mut SharedCounters::default());
        let name = |h| t.lookup(h).map(|e| &*e.name);
        assert_eq!(name(Some("a.example")), Some("acme"));
        assert_eq!(name(Some("b.example")), Some("globex"));
        assert_eq!(name(Some("other.test")), Some("initech"));
        assert_eq!(name(None), Some("initech"));
        let empty = EdgeTable::empty();
        assert!(empty.lookup(Some("a.example")).is_none());
        assert!(empty.lookup(None).is_none());
    }

    #[test]
    fn tenant_slots_are_shared_across_tables_and_released_on_drop() {
        let s = snapshot(&[("a.example", "acme")], &[("acme", &["127.0.0.1:1"])]);
        let metrics = EdgeMetrics::register(&mut Registry::default());
        let mut shared = SharedCounters::default();
        let t1 = EdgeTable::build(&s, &mut shared);
        let t2 = EdgeTable::build(&s, &mut shared);
        let a = t1.lookup(Some("a.example")).unwrap().clone();
        let b = t2.lookup(Some("a.example")).unwrap().clone();
        let slot = a.try_acquire(1).unwrap();
        assert!(
            b.try_acquire(1).is_none(),
            "the new table sees the old table's connection"
        );
        drop(slot);
        assert!(b.try_acquire(1).is_some());
        let port = a.port(EdgePort::Https);
        let (_load, _gauge) = port.open(&port.endpoints[0], &metrics);
        assert_eq!(b.port(EdgePort::Https).endpoints[0].load(), 1);
    }

    #[test]
    fn a_tenant_has_series_only_once_it_is_used() {
        let s = snapshot(
            &[("a.example", "acme"), ("g.example", "globex")],
            &[("acme", &["127.0.0.1:1"]), ("globex", &["127.0.0.1:2"])],
        );
        let mut registry = Registry::default();
        let metrics = EdgeMetrics::register(&mut registry);
        let t = EdgeTable::build(&s, &mut SharedCounters::default());
        let exported = || {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            text
        };
        assert!(
            !exported().contains("tenant="),
            "no per-tenant series before any connection:\n{}",
            exported()
        );

        let acme = t.lookup(Some("a.example")).unwrap().port(EdgePort::Https);
        let guards = acme.open(&acme.endpoints[0], &metrics);
        acme.series(&metrics).bytes_to_router.inc_by(5);
        acme.count_closed("ok", &metrics);
        let text = exported();
        for series in [
            r#"bulkhead_edge_bytes_total{listener="https",tenant="acme",direction="client_to_router"} 5"#,
            r#"bulkhead_edge_connections_active{listener="https",tenant="acme",endpoint="127.0.0.1:1"} 1"#,
            r#"bulkhead_edge_closed_total{listener="https",tenant="acme",outcome="ok"} 1"#,
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
        assert!(!text.contains(r#"tenant="globex""#), "{text}");
        drop(guards);
        assert!(exported().contains(
            r#"bulkhead_edge_connections_active{listener="https",tenant="acme",endpoint="127.0.0.1:1"} 0"#
        ));
    }
}
