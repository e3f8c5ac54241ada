//! The incremental compiler: runs the translator over a changing [`ObjectIndex`], re-translating
//! only the tenants a change can affect, and versions the snapshots.
//!
//! A change in a namespace marks dirty the tenant owning that namespace and every tenant that read
//! it at its last translation (routes attaching from there, Services, Secrets and ReferenceGrants
//! referred to there). A cluster-scoped change (Tenant, Namespace, GatewayClass) or a Gateway
//! outside every served namespace recomputes the cluster-wide part (hostname ownership, Tenant,
//! GatewayClass and orphan Gateway statuses) and marks dirty the tenants whose plan changed.
//!
//! Dirty tenants wait in a fair queue: one entry per tenant however many changes it had, served in
//! the order they became dirty, so one tenant's churn costs one translation per round and never
//! delays the others. A round stops after a time budget; the rest waits for the next round.
//!
//! Each dirty tenant is translated from its own view of the index (its namespace, routes into it,
//! the namespaces they refer to) after comparing the fingerprint of that view with the previous
//! one. A snapshot's version goes up only when its content hash changes; versions of a tenant keep
//! increasing even if the tenant disappears and comes back.
//!
//! Statuses are kept in partitions: one per served tenant (its Tenant, Gateways and the routes in
//! its namespace) and one cluster-wide partition (`""`: GatewayClasses, orphan Gateways, Tenants not
//! served and routes outside served namespaces). A round reports only the partitions it changed.

use crate::index::{Changes, ObjectIndex, NAMESPACED_KINDS};
use crate::objects::{Object, ObjectSet};
use crate::router_endpoints::router_endpoints;
use crate::status::{digest, ObjectMeta, ObjectStatus};
use crate::translator::fingerprint::{collect_refs, fingerprint};
use crate::translator::global::{self, TenantPlan};
use crate::translator::tenant::{self, RouteParentFragment};
use crate::translator::world::{RouteKind, World};
use crate::translator::TranslateSettings;
use bulkhead_crds::snapshot::{EdgeSnapshot, RouterEndpoints, Sealed, TenantSnapshot};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One status partition (see the module documentation), sorted by kind, namespace, name.
pub type Partition = Arc<Vec<ObjectStatus>>;

/// The name of the cluster-wide status partition.
pub const CLUSTER_PARTITION: &str = "";

/// What one compilation changed.
#[derive(Debug, Clone, Default)]
pub struct CompileOutput {
    /// The new edge snapshot, when its content changed (its version was bumped).
    pub edge: Option<EdgeSnapshot>,
    /// The tenant snapshots whose content changed, each with its version bumped.
    pub changed: Vec<Arc<TenantSnapshot>>,
    /// Tenants that are no longer served.
    pub removed: Vec<String>,
    /// [`Compiler::compile`] only: the status of every object we own a status for (as
    /// [`crate::translator::Translation`]).
    pub statuses: Vec<ObjectStatus>,
    /// The status partitions that changed (`None`: the partition is gone).
    pub partitions: BTreeMap<String, Option<Partition>>,
    /// Tenants that were actually re-translated (their inputs changed), sorted.
    pub recomputed: Vec<String>,
    /// Dirty tenants left for the next round (the time budget ran out).
    pub deferred: usize,
}

/// Where the tenants' router endpoints come from.
#[derive(Debug, Clone, Copy)]
pub enum Endpoints<'a> {
    /// Given by the caller (standalone mode).
    Given(&'a BTreeMap<String, RouterEndpoints>),
    /// The `bulkhead-router` EndpointSlices in the index.
    FromIndex,
}

struct TenantState {
    fingerprint: String,
    /// Content hash of the translated snapshot (version 0).
    content_hash: String,
    /// Statuses of the tenant's Gateways, packed.
    gateway_statuses: Vec<Packed<ObjectStatus>>,
    /// `status.parents[]` entries for parentRefs naming the tenant's Gateways, packed.
    route_parents: Vec<Packed<RouteParentFragment>>,
    /// The snapshot as last published (current version, sealed), shared with bootstrap copies.
    published: Arc<TenantSnapshot>,
    /// Namespaces read by the last translation.
    reads: BTreeSet<String>,
}

/// A status kept as compact JSON text (a `serde_json::Value` tree costs several times more), with
/// the rest of its record; the value is parsed again only when a partition is rebuilt.
#[derive(Debug, Clone, PartialEq)]
struct Packed<T> {
    record: T,
    json: Box<str>,
}

fn pack_status(mut s: ObjectStatus) -> Packed<ObjectStatus> {
    let json = serde_json::to_string(&s.status)
        .unwrap_or_default()
        .into_boxed_str();
    s.status = Value::Null;
    Packed { record: s, json }
}

fn pack_fragment(mut f: RouteParentFragment) -> Packed<RouteParentFragment> {
    let json = serde_json::to_string(&f.status)
        .unwrap_or_default()
        .into_boxed_str();
    f.status = Value::Null;
    Packed { record: f, json }
}

/// A status partition as kept between rounds (rendered, written): each status packed as compact
/// JSON, unpacked only when the partition is rendered or written again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PackedPartition(Vec<Packed<ObjectStatus>>);

impl PackedPartition {
    /// Packs statuses.
    pub fn pack(statuses: Vec<ObjectStatus>) -> Self {
        Self(statuses.into_iter().map(pack_status).collect())
    }

    /// The statuses, unpacked.
    pub fn unpack(&self) -> Vec<ObjectStatus> {
        self.0
            .iter()
            .map(|p| ObjectStatus {
                status: unpack(&p.json),
                ..p.record.clone()
            })
            .collect()
    }

    /// The statuses without their `status` values (for their identity: kind, namespace, name).
    pub fn records(&self) -> impl Iterator<Item = &ObjectStatus> {
        self.0.iter().map(|p| &p.record)
    }

    /// Number of statuses.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the partition holds no status.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn unpack(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or(Value::Null)
}

/// (namespace, kind, name) of a route.
type RouteKey = (String, RouteKind, String);

/// Incremental, versioning front of the translator.
#[derive(Default)]
pub struct Compiler {
    tenants: BTreeMap<String, TenantState>,
    versions: BTreeMap<String, u64>,
    edge: Option<EdgeSnapshot>,
    edge_content_hash: Option<String>,
    edge_version: u64,
    initialized: bool,
    plans: BTreeMap<String, TenantPlan>,
    /// Namespace → the tenant claiming it (served or not).
    claims: HashMap<String, String>,
    classes: BTreeSet<String>,
    readers: HashMap<String, BTreeSet<String>>,
    endpoints: BTreeMap<String, RouterEndpoints>,
    tenant_statuses: BTreeMap<String, ObjectStatus>,
    cluster_statuses: Vec<ObjectStatus>,
    contributors: BTreeMap<RouteKey, BTreeSet<String>>,
    /// Partition → digest of its statuses (the statuses themselves live with the caller).
    partitions: BTreeMap<String, u64>,
    /// The fair queue: dirty tenant → its place (lower first).
    queue: BTreeMap<String, u64>,
    next_place: u64,
    /// What every translation reads besides objects.
    settings: TranslateSettings,
}

impl std::fmt::Debug for Compiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiler")
            .field("tenants", &self.tenants.len())
            .field("queue", &self.queue.len())
            .field("edge_version", &self.edge_version)
            .finish_non_exhaustive()
    }
}

fn clone_kind(index: &ObjectIndex, kind: &str, ns: &str, out: &mut Vec<Object>) {
    out.extend(index.in_namespace(kind, ns).cloned());
}

/// One tenant's view of the index and the namespaces it covers.
fn tenant_view(index: &ObjectIndex, ns: &str) -> (ObjectSet, BTreeSet<String>) {
    let mut objects = Vec::new();
    for &kind in NAMESPACED_KINDS {
        clone_kind(index, kind, ns, &mut objects);
    }
    let mut reads = BTreeSet::from([ns.to_owned()]);
    let mut refs = BTreeSet::new();
    for o in index.routes_into(ns) {
        let rns = o.metadata().namespace.clone().unwrap_or_default();
        reads.insert(rns.clone());
        objects.push(o.clone());
    }
    for o in &objects {
        let rns = o.metadata().namespace.as_deref().unwrap_or_default();
        let spec = match o {
            Object::Gateway(g) => serde_json::to_value(&g.spec),
            Object::HttpRoute(r) => serde_json::to_value(&r.spec),
            Object::GrpcRoute(r) => serde_json::to_value(&r.spec),
            Object::TlsRoute(r) => serde_json::to_value(&r.spec),
            Object::TcpRoute(r) => serde_json::to_value(&r.spec),
            _ => continue,
        };
        collect_refs(&spec.unwrap_or(Value::Null), rns, &mut refs);
    }
    reads.extend(refs.into_iter().map(|(_, rns, _)| rns));
    for other in reads.iter().filter(|r| r.as_str() != ns) {
        for kind in [
            "Service",
            "EndpointSlice",
            "Secret",
            "ConfigMap",
            "ReferenceGrant",
        ] {
            clone_kind(index, kind, other, &mut objects);
        }
    }
    for r in &reads {
        if let Some(n) = index.get("Namespace", "", r) {
            objects.push(n.clone());
        }
    }
    objects.extend(index.of_kind("GatewayClass").cloned());
    (ObjectSet::from_objects(objects), reads)
}

/// The cluster-wide view: Tenants, Namespaces, GatewayClasses and Gateways.
fn cluster_view(index: &ObjectIndex) -> ObjectSet {
    ObjectSet::from_objects(
        ["Tenant", "Namespace", "GatewayClass", "Gateway"]
            .into_iter()
            .flat_map(|k| index.of_kind(k).cloned()),
    )
}

fn sort_statuses(statuses: &mut [ObjectStatus]) {
    statuses.sort_by(|a, b| {
        (a.kind.as_str(), &a.metadata.namespace, &a.metadata.name).cmp(&(
            b.kind.as_str(),
            &b.metadata.namespace,
            &b.metadata.name,
        ))
    });
}

impl Compiler {
    /// A compiler that has published nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A compiler that has published nothing yet and translates with `settings`.
    pub fn with_settings(settings: TranslateSettings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    /// Compiles a whole object set (standalone mode: every reload is a new set) and returns every
    /// status in [`CompileOutput::statuses`]. Only tenants whose inputs changed are re-translated.
    pub fn compile(
        &mut self,
        objects: &ObjectSet,
        router_endpoints: &BTreeMap<String, RouterEndpoints>,
    ) -> CompileOutput {
        let index = ObjectIndex::from_set(objects);
        let mut out = self.update(
            &index,
            &Changes::everything(),
            Endpoints::Given(router_endpoints),
            None,
        );
        out.statuses = self.statuses();
        out
    }

    /// Every status, sorted by kind, namespace, name (built again from the translations).
    pub fn statuses(&self) -> Vec<ObjectStatus> {
        let mut all: Vec<ObjectStatus> = self
            .partitions
            .keys()
            .filter_map(|p| self.build_partition(p))
            .flat_map(|p| p.iter().cloned().collect::<Vec<_>>())
            .collect();
        sort_statuses(&mut all);
        all
    }

    /// Tenants waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether a tenant waits in the queue.
    pub fn is_queued(&self, tenant: &str) -> bool {
        self.queue.contains_key(tenant)
    }

    /// The served tenant owning namespace `ns`, if any.
    pub fn tenant_of_namespace(&self, ns: &str) -> Option<&str> {
        self.claims
            .get(ns)
            .filter(|t| self.plans.get(*t).is_some_and(|p| p.active))
            .map(String::as_str)
    }

    fn enqueue(&mut self, tenant: &str) {
        if !self.queue.contains_key(tenant) {
            self.next_place += 1;
            self.queue.insert(tenant.to_owned(), self.next_place);
        }
    }

    /// Applies `changes` (what happened in `index` since the last call), then translates queued
    /// tenants in fair order until `budget` is spent (all of them without a budget).
    pub fn update(
        &mut self,
        index: &ObjectIndex,
        changes: &Changes,
        endpoints: Endpoints<'_>,
        budget: Option<Duration>,
    ) -> CompileOutput {
        let started = Instant::now();
        let mut out = CompileOutput::default();
        let mut affected: BTreeSet<String> = BTreeSet::new();

        let cluster_wide = !self.initialized
            || changes.all
            || changes.cluster
            || changes.touched.iter().any(|(ns, kinds)| {
                self.tenant_of_namespace(ns).is_none()
                    && (self.claims.contains_key(ns) || kinds.contains("Gateway"))
            });
        let mut all_dirty = changes.all || !self.initialized;
        if cluster_wide {
            all_dirty |= self.resolve_cluster(index, &mut affected);
        }
        self.initialized = true;

        // Router endpoints.
        let endpoints_changed = match endpoints {
            Endpoints::Given(map) => {
                let changed = *map != self.endpoints;
                if changed {
                    self.endpoints = map.clone();
                }
                changed
            }
            Endpoints::FromIndex => {
                let namespaces: Vec<String> = if cluster_wide {
                    self.claims.keys().cloned().collect()
                } else {
                    changes
                        .touched
                        .iter()
                        .filter(|(ns, kinds)| {
                            kinds.contains("EndpointSlice") && self.claims.contains_key(*ns)
                        })
                        .map(|(ns, _)| ns.clone())
                        .collect()
                };
                let mut changed = false;
                for ns in namespaces {
                    let Some(tenant) = self.claims.get(&ns).cloned() else {
                        continue;
                    };
                    let mut objects: Vec<Object> =
                        index.in_namespace("EndpointSlice", &ns).cloned().collect();
                    objects.extend(index.get("Tenant", "", &tenant).cloned());
                    let found = router_endpoints(&ObjectSet::from_objects(objects))
                        .remove(&tenant)
                        .unwrap_or_default();
                    if self.endpoints.get(&tenant) != Some(&found) {
                        self.endpoints.insert(tenant, found);
                        changed = true;
                    }
                }
                if cluster_wide {
                    let before = self.endpoints.len();
                    let plans = &self.plans;
                    self.endpoints.retain(|t, _| plans.contains_key(t));
                    changed |= before != self.endpoints.len();
                }
                changed
            }
        };

        // Dirty tenants.
        if all_dirty {
            let active: Vec<String> = self
                .plans
                .values()
                .filter(|p| p.active)
                .map(|p| p.name.clone())
                .collect();
            active.iter().for_each(|t| self.enqueue(t));
        } else {
            let mut dirty = BTreeSet::new();
            for ns in changes.touched.keys() {
                if let Some(t) = self.tenant_of_namespace(ns) {
                    dirty.insert(t.to_owned());
                }
                if let Some(readers) = self.readers.get(ns) {
                    dirty.extend(readers.iter().cloned());
                }
            }
            for t in &affected {
                if self.plans.get(t).is_some_and(|p| p.active) {
                    dirty.insert(t.clone());
                }
            }
            dirty.iter().for_each(|t| self.enqueue(t));
        }

        // Tenants no longer served (plans change only with the cluster-wide part).
        let gone: Vec<String> = if cluster_wide {
            self.tenants
                .keys()
                .filter(|t| !self.plans.get(*t).is_some_and(|p| p.active))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        for t in gone {
            if let Some(state) = self.tenants.remove(&t) {
                self.forget(&t, &state, &mut affected);
            }
            self.queue.remove(&t);
            affected.insert(t.clone());
            affected.insert(CLUSTER_PARTITION.to_owned());
            out.removed.push(t);
        }

        // The fair queue, oldest place first, within the budget.
        let mut order: Vec<(u64, String)> = self
            .queue
            .iter()
            .map(|(t, place)| (*place, t.clone()))
            .collect();
        order.sort();
        for (_, name) in order {
            if budget.is_some_and(|b| started.elapsed() >= b) {
                break;
            }
            self.queue.remove(&name);
            let Some(plan) = self.plans.get(&name).filter(|p| p.active).cloned() else {
                continue;
            };
            self.refresh_tenant(index, &plan, &mut out, &mut affected);
        }
        out.deferred = self.queue.len();
        out.recomputed.sort();

        // The edge snapshot.
        if cluster_wide || endpoints_changed {
            let mut edge = global::edge_snapshot(&self.plans, &self.endpoints);
            if self.edge_content_hash.as_deref() != Some(edge.hash.as_str()) {
                self.edge_content_hash = Some(edge.hash.clone());
                self.edge_version += 1;
                edge.version = self.edge_version;
                edge.seal();
                self.edge = Some(edge.clone());
                out.edge = Some(edge);
            }
        }

        for p in affected {
            let partition = self.build_partition(&p);
            let digest = partition.as_deref().map(digest);
            if digest != self.partitions.get(&p).copied() {
                match digest {
                    Some(d) => self.partitions.insert(p.clone(), d),
                    None => self.partitions.remove(&p),
                };
                out.partitions.insert(p, partition);
            }
        }
        out
    }

    /// Recomputes the cluster-wide part; returns whether every tenant must be re-translated (the
    /// set of our GatewayClasses changed). Tenants whose plan changed go to `affected`.
    fn resolve_cluster(&mut self, index: &ObjectIndex, affected: &mut BTreeSet<String>) -> bool {
        let view = cluster_view(index);
        let world = World::with_existing(&view, index.existing_namespaces());
        let resolved = global::resolve(&world);
        let classes_changed = world.our_classes != self.classes;
        self.classes = world.our_classes.clone();

        for (name, plan) in &resolved.plans {
            if self.plans.get(name) != Some(plan) {
                affected.insert(name.clone());
            }
        }
        for name in self.plans.keys() {
            if !resolved.plans.contains_key(name) {
                affected.insert(name.clone());
            }
        }
        let mut tenant_statuses = BTreeMap::new();
        let mut cluster = Vec::new();
        for s in resolved.statuses {
            if s.kind == "Tenant" {
                tenant_statuses.insert(s.metadata.name.clone(), s);
            } else {
                cluster.push(s);
            }
        }
        for (name, s) in &tenant_statuses {
            if self.tenant_statuses.get(name) != Some(s) {
                affected.insert(name.clone());
            }
        }
        if !affected.is_empty() || cluster != self.cluster_statuses {
            affected.insert(CLUSTER_PARTITION.to_owned());
        }
        self.tenant_statuses = tenant_statuses;
        self.cluster_statuses = cluster;
        // Namespace → tenant: the served one, else the oldest claimant.
        self.claims.clear();
        for p in resolved.plans.values() {
            let served = self
                .claims
                .get(&p.namespace)
                .and_then(|t| resolved.plans.get(t))
                .is_some_and(|q| q.active);
            if !served {
                self.claims.insert(p.namespace.clone(), p.name.clone());
            }
        }
        self.plans = resolved.plans;
        classes_changed
    }

    /// Translates one tenant if its inputs changed.
    fn refresh_tenant(
        &mut self,
        index: &ObjectIndex,
        plan: &TenantPlan,
        out: &mut CompileOutput,
        affected: &mut BTreeSet<String>,
    ) {
        let (view, reads) = tenant_view(index, &plan.namespace);
        let world =
            World::with_existing(&view, BTreeSet::new()).with_settings(self.settings.clone());
        let fp = fingerprint(&world, plan);
        if self
            .tenants
            .get(&plan.name)
            .is_some_and(|s| s.fingerprint == fp)
        {
            return;
        }
        out.recomputed.push(plan.name.clone());
        let mut output = tenant::translate(&world, plan);
        let snapshot = std::mem::take(&mut output.snapshot);
        let content_hash = snapshot.hash.clone();
        let old = self.tenants.remove(&plan.name);
        let unchanged = old.as_ref().is_some_and(|o| o.content_hash == content_hash);
        if let Some(old) = &old {
            self.forget(&plan.name, old, affected);
        }
        let published = match old {
            Some(o) if unchanged => o.published,
            _ => {
                let version = self.versions.entry(plan.name.clone()).or_insert(0);
                *version += 1;
                let mut s = snapshot;
                s.version = *version;
                s.seal();
                let s = Arc::new(s);
                out.changed.push(Arc::clone(&s));
                s
            }
        };
        for ns in &reads {
            self.readers
                .entry(ns.clone())
                .or_default()
                .insert(plan.name.clone());
        }
        for f in &output.route_parents {
            let key = (f.namespace.clone(), f.kind, f.name.clone());
            affected.insert(self.route_partition(&key.0));
            self.contributors
                .entry(key)
                .or_default()
                .insert(plan.name.clone());
        }
        affected.insert(plan.name.clone());
        self.tenants.insert(
            plan.name.clone(),
            TenantState {
                fingerprint: fp,
                content_hash,
                gateway_statuses: output
                    .gateway_statuses
                    .into_iter()
                    .map(pack_status)
                    .collect(),
                route_parents: output
                    .route_parents
                    .into_iter()
                    .map(pack_fragment)
                    .collect(),
                published,
                reads,
            },
        );
    }

    /// Drops what a tenant's previous translation registered (readers, route contributions).
    fn forget(&mut self, tenant: &str, state: &TenantState, affected: &mut BTreeSet<String>) {
        for ns in &state.reads {
            if let Some(set) = self.readers.get_mut(ns) {
                set.remove(tenant);
                if set.is_empty() {
                    self.readers.remove(ns);
                }
            }
        }
        for f in state.route_parents.iter().map(|p| &p.record) {
            let key = (f.namespace.clone(), f.kind, f.name.clone());
            affected.insert(self.route_partition(&key.0));
            if let Some(set) = self.contributors.get_mut(&key) {
                set.remove(tenant);
                if set.is_empty() {
                    self.contributors.remove(&key);
                }
            }
        }
    }

    /// The partition of the statuses of routes living in `ns`.
    fn route_partition(&self, ns: &str) -> String {
        self.tenant_of_namespace(ns)
            .unwrap_or(CLUSTER_PARTITION)
            .to_owned()
    }

    fn route_status(&self, key: &RouteKey) -> Option<ObjectStatus> {
        let contributors = self.contributors.get(key)?;
        let (ns, kind, name) = key;
        let mut fragments: Vec<_> = contributors
            .iter()
            .filter_map(|t| self.tenants.get(t))
            .flat_map(|s| s.route_parents.iter())
            .filter(|f| {
                f.record.kind == *kind && &f.record.namespace == ns && &f.record.name == name
            })
            .collect();
        fragments.sort_by_key(|f| f.record.index);
        let parents: Vec<Value> = fragments.into_iter().map(|f| unpack(&f.json)).collect();
        Some(ObjectStatus {
            api_version: kind.api_version().to_owned(),
            kind: kind.as_str().to_owned(),
            metadata: ObjectMeta {
                namespace: Some(ns.clone()),
                name: name.clone(),
            },
            status: serde_json::json!({ "parents": parents }),
            tenant: None,
        })
    }

    /// The statuses of partition `p`, `None` when it has none.
    fn build_partition(&self, p: &str) -> Option<Partition> {
        let mut statuses = Vec::new();
        if p == CLUSTER_PARTITION {
            statuses.extend(self.cluster_statuses.iter().cloned());
            statuses.extend(
                self.tenant_statuses
                    .iter()
                    .filter(|(t, _)| !self.plans.get(*t).is_some_and(|p| p.active))
                    .map(|(_, s)| s.clone()),
            );
            for key in self.contributors.keys() {
                if self.tenant_of_namespace(&key.0).is_none() {
                    statuses.extend(self.route_status(key));
                }
            }
        } else {
            let state = self.tenants.get(p)?;
            let plan = self.plans.get(p)?;
            statuses.extend(self.tenant_statuses.get(p).cloned());
            statuses.extend(state.gateway_statuses.iter().map(|p| ObjectStatus {
                status: unpack(&p.json),
                ..p.record.clone()
            }));
            let from = (plan.namespace.clone(), RouteKind::Http, String::new());
            for key in self
                .contributors
                .range(from..)
                .map(|(k, _)| k)
                .take_while(|k| k.0 == plan.namespace)
            {
                statuses.extend(self.route_status(key));
            }
        }
        if statuses.is_empty() {
            return None;
        }
        sort_statuses(&mut statuses);
        Some(Arc::new(statuses))
    }

    /// The edge snapshot last published, if any.
    pub fn edge(&self) -> Option<&EdgeSnapshot> {
        self.edge.as_ref()
    }

    /// The snapshot last published for a tenant that is still served.
    pub fn tenant(&self, name: &str) -> Option<&TenantSnapshot> {
        self.tenants.get(name).map(|s| s.published.as_ref())
    }

    /// The snapshot last published for a tenant that is still served, shared.
    pub fn tenant_shared(&self, name: &str) -> Option<Arc<TenantSnapshot>> {
        self.tenants.get(name).map(|s| Arc::clone(&s.published))
    }

    /// Every served tenant's last published snapshot, by tenant name.
    pub fn tenants(&self) -> impl Iterator<Item = &TenantSnapshot> {
        self.tenants.values().map(|s| s.published.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{parse_documents, ObjectSet};
    use crate::translator::{translate, TranslateInput};
    use std::path::Path;
    use std::time::Duration;

    /// Two tenants (acme, globex), each with a Gateway, a route and a Service; acme also uses a
    /// Service in `shared` (granted) and receives a route from `partner`. `edits` replace parts.
    struct World {
        acme_path: &'static str,
        acme_generation: i64,
        globex_hostnames: &'static str,
        globex_slice_ip: &'static str,
        shared_slice_ip: &'static str,
        grant: bool,
        partner_path: &'static str,
        unrelated_port: u16,
        with_globex: bool,
    }

    impl Default for World {
        fn default() -> Self {
            Self {
                acme_path: "/a",
                acme_generation: 1,
                globex_hostnames: "[\"globex.test\"]",
                globex_slice_ip: "10.2.0.1",
                shared_slice_ip: "10.3.0.1",
                grant: true,
                partner_path: "/partner",
                unrelated_port: 80,
                with_globex: true,
            }
        }
    }

    impl World {
        fn yaml(&self) -> String {
            let mut docs = vec![format!(
                r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: acme}}
spec: {{namespace: acme, hostnames: ["*.acme.test"]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web, namespace: acme}}
spec:
  gatewayClassName: bulkhead
  listeners:
  - {{name: http, protocol: HTTP, port: 80, allowedRoutes: {{namespaces: {{from: All}}}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app, namespace: acme, generation: {gen}}}
spec:
  parentRefs: [{{name: web}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: "{path}"}}}}]
    backendRefs: [{{name: app, port: 80}}, {{name: api, namespace: shared, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: app, namespace: acme}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: api, namespace: shared}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: api-1, namespace: shared, labels: {{kubernetes.io/service-name: api}}}}
addressType: IPv4
ports: [{{port: 8080}}]
endpoints: [{{addresses: ["{shared_ip}"]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: visitor, namespace: partner}}
spec:
  parentRefs: [{{name: web, namespace: acme}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: "{partner}"}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: unrelated, namespace: nobody}}
spec: {{ports: [{{port: {unrelated}}}]}}
"#,
                gen = self.acme_generation,
                path = self.acme_path,
                shared_ip = self.shared_slice_ip,
                partner = self.partner_path,
                unrelated = self.unrelated_port,
            )];
            if self.grant {
                docs.push(
                    r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: acme, namespace: shared}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: acme}]
  to: [{group: "", kind: Service}]
"#
                    .to_owned(),
                );
            }
            if self.with_globex {
                docs.push(format!(
                    r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: globex}}
spec: {{namespace: globex, hostnames: {hosts}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web, namespace: globex}}
spec:
  gatewayClassName: bulkhead
  listeners: [{{name: http, protocol: HTTP, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: site, namespace: globex}}
spec:
  parentRefs: [{{name: web}}]
  rules: [{{backendRefs: [{{name: site, port: 80}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: site, namespace: globex}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: site-1, namespace: globex, labels: {{kubernetes.io/service-name: site}}}}
addressType: IPv4
ports: [{{port: 8080}}]
endpoints: [{{addresses: ["{ip}"]}}]
"#,
                    hosts = self.globex_hostnames,
                    ip = self.globex_slice_ip,
                ));
            }
            docs.join("\n---\n")
        }

        fn objects(&self) -> ObjectSet {
            let (objects, errors) = parse_documents(Path::new("test.yaml"), &self.yaml());
            assert!(errors.is_empty(), "{errors:?}");
            ObjectSet::from_objects(objects)
        }
    }

    fn endpoints(port: u16) -> BTreeMap<String, RouterEndpoints> {
        ["acme", "globex"]
            .into_iter()
            .map(|t| {
                (
                    t.to_owned(),
                    RouterEndpoints {
                        https: vec![],
                        http: vec![format!("127.0.0.1:{port}").parse().unwrap()],
                    },
                )
            })
            .collect()
    }

    fn versions(out: &CompileOutput) -> Vec<(String, u64)> {
        out.changed
            .iter()
            .map(|s| (s.tenant.clone(), s.version))
            .collect()
    }

    fn compiled(w: &World) -> (Compiler, CompileOutput) {
        let mut c = Compiler::new();
        let out = c.compile(&w.objects(), &endpoints(1));
        (c, out)
    }

    #[test]
    fn first_compile_translates_and_publishes_everything_at_version_1() {
        let (_, out) = compiled(&World::default());
        assert_eq!(out.recomputed, vec!["acme", "globex"]);
        assert_eq!(
            versions(&out),
            vec![("acme".into(), 1), ("globex".into(), 1)]
        );
        assert_eq!(out.edge.as_ref().map(|e| e.version), Some(1));
        assert!(out.removed.is_empty());
    }

    #[test]
    fn unchanged_input_recomputes_nothing_and_publishes_nothing() {
        let w = World::default();
        let (mut c, first) = compiled(&w);
        let out = c.compile(&w.objects(), &endpoints(1));
        assert!(out.recomputed.is_empty());
        assert!(out.changed.is_empty());
        assert!(out.edge.is_none());
        assert_eq!(out.statuses, first.statuses);
    }

    #[test]
    fn a_route_edit_recomputes_and_bumps_only_its_tenant() {
        let (mut c, _) = compiled(&World::default());
        let out = c.compile(
            &World {
                acme_path: "/b",
                ..Default::default()
            }
            .objects(),
            &endpoints(1),
        );
        assert_eq!(out.recomputed, vec!["acme"]);
        assert_eq!(versions(&out), vec![("acme".into(), 2)]);
        assert!(
            out.edge.is_none(),
            "a route edit never changes the edge snapshot"
        );
        assert_eq!(c.tenant("globex").map(|s| s.version), Some(1));
        assert_eq!(c.tenant("acme").map(|s| s.version), Some(2));
    }

    #[test]
    fn a_status_only_change_recomputes_without_a_new_version() {
        let (mut c, _) = compiled(&World::default());
        let out = c.compile(
            &World {
                acme_generation: 2,
                ..Default::default()
            }
            .objects(),
            &endpoints(1),
        );
        assert_eq!(out.recomputed, vec!["acme"]);
        assert!(
            out.changed.is_empty(),
            "same snapshot content, same version"
        );
        let route = out
            .statuses
            .iter()
            .find(|s| s.kind == "HTTPRoute" && s.metadata.name == "app")
            .expect("route status");
        assert_eq!(
            route.status["parents"][0]["conditions"][0]["observedGeneration"],
            2
        );
    }

    #[test]
    fn endpoint_changes_recompute_the_tenant_that_uses_them() {
        let (mut c, _) = compiled(&World::default());
        let out = c.compile(
            &World {
                globex_slice_ip: "10.2.0.9",
                ..Default::default()
            }
            .objects(),
            &endpoints(1),
        );
        assert_eq!(out.recomputed, vec!["globex"]);
        assert_eq!(versions(&out), vec![("globex".into(), 2)]);

        let out = c.compile(
            &World {
                globex_slice_ip: "10.2.0.9",
                shared_slice_ip: "10.3.0.9",
                ..Default::default()
            }
            .objects(),
            &endpoints(1),
        );
        assert_eq!(
            out.recomputed,
            vec!["acme"],
            "a referenced Service in another namespace"
        );
        let acme = &out.changed[0];
        assert_eq!(
            acme.backends["shared/api:80"].endpoints,
            vec!["10.3.0.9:8080".parse().unwrap()]
        );
    }

    #[test]
    fn reference_grants_and_foreign_routes_count_as_inputs() {
        let (mut c, _) = compiled(&World::default());
        let out = c.compile(
            &World {
                grant: false,
                ..Default::default()
            }
            .objects(),
            &endpoints(1),
        );
        assert_eq!(out.recomputed, vec!["acme"]);
        let acme = &out.changed[0];
        assert!(
            !acme.backends.contains_key("shared/api:80"),
            "grant withdrawn"
        );

        let out = c.compile(
            &World {
                grant: false,
                partner_path: "/elsewhere",
                ..Default::default()
            }
            .objects(),
            &endpoints(1),
        );
        assert_eq!(
            out.recomputed,
            vec!["acme"],
            "a route from another namespace"
        );
    }

    #[test]
    fn unrelated_objects_and_router_endpoints_recompute_no_tenant() {
        let (mut c, _) = compiled(&World::default());
        let out = c.compile(
            &World {
                unrelated_port: 81,
                ..Default::default()
            }
            .objects(),
            &endpoints(1),
        );
        assert!(out.recomputed.is_empty());
        assert!(out.edge.is_none());

        let out = c.compile(&World::default().objects(), &endpoints(2));
        assert!(out.recomputed.is_empty());
        assert_eq!(out.edge.as_ref().map(|e| e.version), Some(2));
        assert_eq!(c.edge().map(|e| e.version), Some(2));
    }

    #[test]
    fn hostname_changes_recompute_the_tenant_and_the_edge() {
        let (mut c, _) = compiled(&World::default());
        let out = c.compile(
            &World {
                globex_hostnames: "[\"globex.test\", \"www.globex.test\"]",
                ..Default::default()
            }
            .objects(),
            &endpoints(1),
        );
        assert_eq!(out.recomputed, vec!["globex"]);
        let edge = out.edge.expect("edge changes with hostnames");
        assert_eq!(edge.version, 2);
        assert!(edge.routes.iter().any(|r| r.hostname == "www.globex.test"));
    }

    #[test]
    fn removed_tenants_are_reported_and_versions_never_go_back() {
        let (mut c, _) = compiled(&World::default());
        let _ = c.compile(
            &World {
                globex_slice_ip: "10.2.0.9",
                ..Default::default()
            }
            .objects(),
            &endpoints(1),
        );
        let out = c.compile(
            &World {
                with_globex: false,
                ..Default::default()
            }
            .objects(),
            &endpoints(1),
        );
        assert_eq!(out.removed, vec!["globex"]);
        assert!(c.tenant("globex").is_none());
        let out = c.compile(&World::default().objects(), &endpoints(1));
        assert_eq!(out.recomputed, vec!["globex"]);
        assert_eq!(versions(&out), vec![("globex".into(), 3)]);
    }

    #[test]
    fn incremental_output_equals_a_full_translation() {
        let mut c = Compiler::new();
        let worlds = [
            World::default(),
            World {
                acme_path: "/x",
                ..Default::default()
            },
            World {
                acme_path: "/x",
                grant: false,
                globex_slice_ip: "10.2.0.7",
                ..Default::default()
            },
        ];
        for w in &worlds {
            let objects = w.objects();
            let out = c.compile(&objects, &endpoints(1));
            let full = translate(&TranslateInput {
                objects: &objects,
                router_endpoints: &endpoints(1),
            });
            assert_eq!(out.statuses, full.statuses);
            for (name, snapshot) in &full.tenants {
                let mut published = c.tenant(name).expect("published").clone();
                published.version = 0;
                published.seal();
                assert_eq!(&published, snapshot, "{name}");
            }
        }
    }

    fn one(yaml: &str) -> Object {
        let (mut objects, errors) = parse_documents(Path::new("change.yaml"), yaml);
        assert!(errors.is_empty(), "{errors:?}");
        objects.remove(0)
    }

    fn indexed(w: &World) -> (Compiler, ObjectIndex) {
        let index = ObjectIndex::from_set(&w.objects());
        let mut c = Compiler::new();
        let out = c.update(
            &index,
            &Changes::everything(),
            Endpoints::Given(&endpoints(1)),
            None,
        );
        assert_eq!(out.recomputed, vec!["acme", "globex"]);
        assert_eq!(out.deferred, 0);
        (c, index)
    }

    #[test]
    fn a_change_in_a_namespace_read_by_a_tenant_recomputes_that_tenant_only() {
        let (mut c, mut index) = indexed(&World::default());
        let mut changes = Changes::default();
        index.upsert(
            one("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: api-1, namespace: shared, labels: {kubernetes.io/service-name: api}}\naddressType: IPv4\nports: [{port: 8080}]\nendpoints: [{addresses: [\"10.3.0.99\"]}]\n"),
            &mut changes,
        );
        let out = c.update(&index, &changes, Endpoints::Given(&endpoints(1)), None);
        assert_eq!(
            out.recomputed,
            vec!["acme"],
            "acme reads shared; globex does not"
        );
        let acme = &out.changed[0];
        let api = &acme.backends["shared/api:80"];
        assert_eq!(api.endpoints, vec!["10.3.0.99:8080".parse().unwrap()]);
        assert!(out.edge.is_none());
        assert!(
            out.partitions.keys().all(|p| p == "acme"),
            "{:?}",
            out.partitions.keys()
        );
    }

    #[test]
    fn a_route_change_recomputes_its_tenant_and_reports_its_partition() {
        let (mut c, mut index) = indexed(&World::default());
        let mut changes = Changes::default();
        index.upsert(
            one("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: site, namespace: globex}\nspec:\n  parentRefs: [{name: web}]\n  rules: [{backendRefs: [{name: missing, port: 80}]}]\n"),
            &mut changes,
        );
        let out = c.update(&index, &changes, Endpoints::Given(&endpoints(1)), None);
        assert_eq!(out.recomputed, vec!["globex"]);
        let globex = out.partitions["globex"].as_ref().expect("partition");
        let route = globex
            .iter()
            .find(|s| s.kind == "HTTPRoute" && s.metadata.name == "site")
            .expect("route status");
        let text = route.status.to_string();
        assert!(text.contains("BackendNotFound"), "{text}");
        // The full list still equals a full translation.
        let full = translate(&TranslateInput {
            objects: &index.to_set(),
            router_endpoints: &endpoints(1),
        });
        assert_eq!(c.statuses(), full.statuses);
    }

    #[test]
    fn the_queue_is_fair_and_a_round_stops_at_its_budget() {
        let (mut c, mut index) = indexed(&World::default());
        let mut changes = Changes::default();
        let route = |ns: &str, name: &str, path: &str| {
            one(&format!("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  parentRefs: [{{name: web}}]\n  rules: [{{matches: [{{path: {{type: PathPrefix, value: {path}}}}}]}}]\n"))
        };
        index.upsert(route("globex", "site", "/g1"), &mut changes);
        let _ = c.update(
            &index,
            &changes,
            Endpoints::Given(&endpoints(1)),
            Some(Duration::ZERO),
        );
        let mut changes = Changes::default();
        index.upsert(route("acme", "app", "/a1"), &mut changes);
        let out = c.update(
            &index,
            &changes,
            Endpoints::Given(&endpoints(1)),
            Some(Duration::ZERO),
        );
        assert!(out.recomputed.is_empty());
        assert_eq!(out.deferred, 2);
        assert!(c.is_queued("acme") && c.is_queued("globex"));

        // globex changes again: it keeps its place (one entry per tenant), ahead of acme.
        let mut changes = Changes::default();
        index.upsert(route("globex", "site", "/g2"), &mut changes);
        let _ = c.update(
            &index,
            &changes,
            Endpoints::Given(&endpoints(1)),
            Some(Duration::ZERO),
        );
        assert_eq!(c.queued(), 2);
        let order: Vec<&String> = {
            let mut q: Vec<(&u64, &String)> = c.queue.iter().map(|(t, p)| (p, t)).collect();
            q.sort();
            q.into_iter().map(|(_, t)| t).collect()
        };
        assert_eq!(order, ["globex", "acme"]);

        let out = c.update(
            &index,
            &Changes::default(),
            Endpoints::Given(&endpoints(1)),
            None,
        );
        assert_eq!(out.recomputed, vec!["acme", "globex"]);
        assert_eq!(out.deferred, 0);
        let globex = c.tenant("globex").expect("served");
        let text = serde_json::to_string(globex).expect("json");
        assert!(text.contains("/g2") && !text.contains("/g1"), "{text}");
    }
}
