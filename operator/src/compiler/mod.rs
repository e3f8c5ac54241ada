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

mod packed;
mod views;

pub use packed::PackedPartition;
use packed::{pack_fragment, pack_status, unpack, Packed};
use views::{cluster_view, sort_statuses, tenant_view};

use crate::index::{Changes, Kind, ObjectIndex};
use crate::objects::{Object, ObjectSet};
use crate::router_endpoints::router_endpoints;
use crate::status::{digest, ObjectMeta, ObjectStatus};
use crate::translator::fingerprint::fingerprint;
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

        let cluster_wide = self.is_cluster_wide(changes);
        let mut all_dirty = changes.all || !self.initialized;
        if cluster_wide {
            all_dirty |= self.resolve_cluster(index, &mut affected);
        }
        self.initialized = true;
        let endpoints_changed = self.refresh_endpoints(index, changes, endpoints, cluster_wide);
        self.enqueue_dirty(changes, &affected, all_dirty);
        if cluster_wide {
            self.drop_unserved(&mut out, &mut affected);
        }
        self.translate_queue(index, started, budget, &mut out, &mut affected);
        if cluster_wide || endpoints_changed {
            self.publish_edge(&mut out);
        }
        self.report_partitions(affected, &mut out);
        out
    }

    /// Whether `changes` need the cluster-wide part recomputed: the first round, a cluster-scoped
    /// change, or a change in a namespace no served tenant owns that holds Gateways or is claimed.
    fn is_cluster_wide(&self, changes: &Changes) -> bool {
        !self.initialized
            || changes.all
            || changes.cluster
            || changes.touched.iter().any(|(ns, kinds)| {
                self.tenant_of_namespace(ns).is_none()
                    && (self.claims.contains_key(ns)
                        || kinds.contains(&Kind::Gateway)
                        || kinds.contains(&Kind::ListenerSet))
            })
    }

    /// Updates the tenants' router endpoints; returns whether any changed.
    fn refresh_endpoints(
        &mut self,
        index: &ObjectIndex,
        changes: &Changes,
        endpoints: Endpoints<'_>,
        cluster_wide: bool,
    ) -> bool {
        match endpoints {
            Endpoints::Given(map) => {
                let changed = *map != self.endpoints;
                if changed {
                    self.endpoints = map.clone();
                }
                changed
            }
            Endpoints::FromIndex => self.endpoints_from_index(index, changes, cluster_wide),
        }
    }

    /// Router endpoints read from the EndpointSlices of the claimed namespaces that changed
    /// (all of them after a cluster-wide change); returns whether any changed.
    fn endpoints_from_index(
        &mut self,
        index: &ObjectIndex,
        changes: &Changes,
        cluster_wide: bool,
    ) -> bool {
        let namespaces: Vec<String> = if cluster_wide {
            self.claims.keys().cloned().collect()
        } else {
            changes
                .touched
                .iter()
                .filter(|(ns, kinds)| {
                    kinds.contains(&Kind::EndpointSlice) && self.claims.contains_key(*ns)
                })
                .map(|(ns, _)| ns.clone())
                .collect()
        };
        let mut changed = false;
        for ns in namespaces {
            let Some(tenant) = self.claims.get(&ns).cloned() else {
                continue;
            };
            let mut objects: Vec<Object> = index
                .in_namespace(Kind::EndpointSlice, &ns)
                .cloned()
                .collect();
            objects.extend(index.get(Kind::Tenant, "", &tenant).cloned());
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

    /// Queues the tenants `changes` made dirty: every active one when `all_dirty`, else the
    /// owners and readers of the touched namespaces and the active tenants whose plan changed.
    fn enqueue_dirty(&mut self, changes: &Changes, affected: &BTreeSet<String>, all_dirty: bool) {
        if all_dirty {
            let active: Vec<String> = self
                .plans
                .values()
                .filter(|p| p.active)
                .map(|p| p.name.clone())
                .collect();
            active.iter().for_each(|t| self.enqueue(t));
            return;
        }
        let mut dirty = BTreeSet::new();
        for ns in changes.touched.keys() {
            if let Some(t) = self.tenant_of_namespace(ns) {
                dirty.insert(t.to_owned());
            }
            // Other tenants read a namespace for its Gateways, Services, Secrets and grants,
            // never for its ListenerSets (or those naming its Gateways).
            let only_listener_sets = changes.touched[ns].iter().all(|k| *k == Kind::ListenerSet);
            if let Some(readers) = self.readers.get(ns).filter(|_| !only_listener_sets) {
                dirty.extend(readers.iter().cloned());
            }
        }
        for t in affected {
            if self.plans.get(t).is_some_and(|p| p.active) {
                dirty.insert(t.clone());
            }
        }
        dirty.iter().for_each(|t| self.enqueue(t));
    }

    /// Forgets the tenants no longer served (plans change only with the cluster-wide part) and
    /// reports them removed.
    fn drop_unserved(&mut self, out: &mut CompileOutput, affected: &mut BTreeSet<String>) {
        let gone: Vec<String> = self
            .tenants
            .keys()
            .filter(|t| !self.plans.get(*t).is_some_and(|p| p.active))
            .cloned()
            .collect();
        for t in gone {
            if let Some(state) = self.tenants.remove(&t) {
                self.forget(&t, &state, affected);
            }
            self.queue.remove(&t);
            affected.insert(t.clone());
            affected.insert(CLUSTER_PARTITION.to_owned());
            out.removed.push(t);
        }
    }

    /// Translates the fair queue, oldest place first, until `budget` (counted from `started`)
    /// is spent.
    fn translate_queue(
        &mut self,
        index: &ObjectIndex,
        started: Instant,
        budget: Option<Duration>,
        out: &mut CompileOutput,
        affected: &mut BTreeSet<String>,
    ) {
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
            self.refresh_tenant(index, &plan, out, affected);
        }
        out.deferred = self.queue.len();
        out.recomputed.sort();
    }

    /// Builds the edge snapshot; publishes it with a new version when its content changed.
    fn publish_edge(&mut self, out: &mut CompileOutput) {
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

    /// Rebuilds the `affected` status partitions and reports those whose content changed.
    fn report_partitions(&mut self, affected: BTreeSet<String>, out: &mut CompileOutput) {
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
mod tests;
