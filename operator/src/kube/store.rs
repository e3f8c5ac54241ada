//! The operator's cache of the cluster: every watched object, per kind, fed by watcher events,
//! and the pure steps that turn it into compiler input.
//!
//! - [`ObjectStore`] applies [`StoreEvent`]s. A (re)list (`Init` … `InitApply`* … `InitDone`)
//!   replaces a kind's objects atomically at `InitDone`, as kube-rs's reflector does: until then
//!   the previous objects stay visible.
//! - [`ObjectStore::is_synced`] is the gate before the first compilation: every watched kind has
//!   finished its initial list. Compiling earlier would publish snapshots missing routes or
//!   certificates and flap statuses.
//! - [`strip_metadata`] drops what the translator never reads (`managedFields`, annotations
//!   outside `bulkhead.dev/`) before an object is cached.
//! - [`router_endpoints`] finds each served tenant's router addresses (for the edge snapshot) in
//!   the EndpointSlices of its `bulkhead-router` Service.
//! - [`Debounce`] decides when a burst of events is over.

use crate::children::ROUTER_NAME;
use crate::index::{Changes, ObjectIndex};
use crate::objects::{Object, ObjectSet};
use bulkhead_crds::snapshot::RouterEndpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::time::Instant;

/// Annotations with this prefix are kept in the cache; all others are dropped.
pub const KEPT_ANNOTATION_PREFIX: &str = "bulkhead.dev/";
/// The label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Port name of the routers' TLS port in their Service (and so in its EndpointSlices).
pub const HTTPS_PORT_NAME: &str = "https";
/// Port name of the routers' plain HTTP port.
pub const HTTP_PORT_NAME: &str = "http";

/// One change seen by a watcher, with the object already typed and stripped.
#[derive(Debug, Clone)]
pub enum StoreEvent {
    /// A (re)list of `kind` starts.
    Init(&'static str),
    /// An object of the (re)list in progress.
    InitApply(Object),
    /// The (re)list of `kind` is complete: it replaces the kind's objects.
    InitDone(&'static str),
    /// An object was added or changed.
    Apply(Object),
    /// An object was deleted.
    Delete(Object),
}

#[derive(Debug, Default)]
struct KindState {
    relisting: Option<Vec<Object>>,
    synced: bool,
}

/// Every watched object, indexed (see the module documentation), and the changes not yet
/// compiled.
#[derive(Debug)]
pub struct ObjectStore {
    kinds: BTreeMap<&'static str, KindState>,
    index: ObjectIndex,
    changes: Changes,
}

impl ObjectStore {
    /// A store for the given kinds (as [`Object::kind`] names them); events of other kinds are
    /// ignored.
    pub fn new(kinds: &[&'static str]) -> Self {
        Self {
            kinds: kinds.iter().map(|k| (*k, KindState::default())).collect(),
            index: ObjectIndex::new(),
            changes: Changes::default(),
        }
    }

    /// Applies one event; returns whether the visible objects may have changed.
    pub fn apply(&mut self, event: StoreEvent) -> bool {
        let before = self.changes.events;
        match event {
            StoreEvent::Init(kind) => {
                if let Some(state) = self.kinds.get_mut(kind) {
                    state.relisting = Some(Vec::new());
                }
            }
            StoreEvent::InitApply(object) => {
                if let Some(state) = self.kinds.get_mut(object.kind()) {
                    state.relisting.get_or_insert_with(Vec::new).push(object);
                }
            }
            StoreEvent::InitDone(kind) => {
                if let Some(state) = self.kinds.get_mut(kind) {
                    let objects = state.relisting.take().unwrap_or_default();
                    let first = !state.synced;
                    state.synced = true;
                    self.index.replace_kind(kind, objects, &mut self.changes);
                    if first {
                        // A kind's first list can matter even when empty (nothing was gated).
                        self.changes.events += 1;
                    }
                }
            }
            StoreEvent::Apply(object) => {
                if self.kinds.contains_key(object.kind()) {
                    self.index.upsert(object, &mut self.changes);
                }
            }
            StoreEvent::Delete(object) => {
                let kind = object.kind();
                if self.kinds.contains_key(kind) {
                    let meta = object.metadata();
                    self.index.remove(
                        kind,
                        meta.namespace.as_deref().unwrap_or_default(),
                        meta.name.as_deref().unwrap_or_default(),
                        &mut self.changes,
                    );
                }
            }
        }
        self.changes.events != before
    }

    /// Whether every kind finished its initial list.
    pub fn is_synced(&self) -> bool {
        self.kinds.values().all(|s| s.synced)
    }

    /// The kinds still waiting for their initial list.
    pub fn unsynced(&self) -> Vec<&'static str> {
        self.kinds
            .iter()
            .filter(|(_, s)| !s.synced)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Number of cached objects.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no object is cached.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The cached objects.
    pub fn index(&self) -> &ObjectIndex {
        &self.index
    }

    /// The changes since the last call.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// The changes not yet taken.
    pub fn pending_changes(&self) -> &Changes {
        &self.changes
    }

    /// The compiler's input as one set: every cached object (a full copy; for tests and tools).
    pub fn object_set(&self) -> ObjectSet {
        ObjectSet::from_objects(
            crate::index::ALL_KINDS
                .into_iter()
                .flat_map(|k| self.index.of_kind(k).cloned()),
        )
    }
}

/// Drops `managedFields` and every annotation outside [`KEPT_ANNOTATION_PREFIX`] (notably
/// `kubectl.kubernetes.io/last-applied-configuration`, a second copy of the object).
pub fn strip_metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| k.starts_with(KEPT_ANNOTATION_PREFIX));
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// Each tenant's router addresses: the ready endpoints of the EndpointSlices of the
/// `bulkhead-router` Service in the tenant's namespace, on the ports named `https` and `http`.
/// Every Tenant gets an entry (possibly empty); sorted and without duplicates.
pub fn router_endpoints(objects: &ObjectSet) -> BTreeMap<String, RouterEndpoints> {
    let mut by_namespace: BTreeMap<&str, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in &objects.endpoint_slices {
        let is_router = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .is_some_and(|s| s == ROUTER_NAME);
        if let (true, Some(ns)) = (is_router, slice.metadata.namespace.as_deref()) {
            by_namespace.entry(ns).or_default().push(slice);
        }
    }
    let mut out = BTreeMap::new();
    for tenant in &objects.tenants {
        let Some(name) = tenant.metadata.name.clone() else {
            continue;
        };
        let mut endpoints = RouterEndpoints::default();
        for slice in by_namespace
            .get(tenant.spec.namespace.as_str())
            .into_iter()
            .flatten()
        {
            endpoints
                .https
                .extend(slice_addresses(slice, HTTPS_PORT_NAME));
            endpoints
                .http
                .extend(slice_addresses(slice, HTTP_PORT_NAME));
        }
        for list in [&mut endpoints.https, &mut endpoints.http] {
            list.sort();
            list.dedup();
        }
        out.insert(name, endpoints);
    }
    out
}

/// Ready addresses of one slice on the port named `port_name`. An endpoint whose `ready` condition
/// is unknown counts as ready, as Kubernetes says consumers should.
fn slice_addresses(slice: &EndpointSlice, port_name: &str) -> Vec<SocketAddr> {
    let Some(port) = slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(port_name))
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
    else {
        return Vec::new();
    };
    slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// When a burst of changes is over: [`Debounce::QUIET`] after the last change, but never more
/// than [`Debounce::MAX_DELAY`] after the first one (so constant churn still compiles).
#[derive(Debug, Default, Clone, Copy)]
pub struct Debounce {
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Debounce {
    /// Quiet time that ends a burst.
    pub const QUIET: Duration = Duration::from_millis(5);
    /// Longest a change waits for its compilation.
    pub const MAX_DELAY: Duration = Duration::from_millis(30);

    /// Records a change at `now`.
    pub fn touch(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When to compile, if anything changed.
    pub fn deadline(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + Self::QUIET).min(first + Self::MAX_DELAY))
    }

    /// Forgets the burst (after compiling).
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::parse_documents;
    use std::path::Path;

    fn objects(yaml: &str) -> Vec<Object> {
        let (objects, errors) = parse_documents(Path::new("t.yaml"), yaml);
        assert!(errors.is_empty(), "{errors:?}");
        objects
    }

    fn one(yaml: &str) -> Object {
        objects(yaml).remove(0)
    }

    fn service(ns: &str, name: &str) -> Object {
        one(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{ports: [{{port: 80}}]}}\n"
        ))
    }

    fn tenant(name: &str, ns: &str) -> Object {
        one(&format!(
            "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {name}}}\nspec: {{namespace: {ns}, hostnames: [\"a.test\"]}}\n"
        ))
    }

    fn service_names(store: &ObjectStore) -> Vec<String> {
        store
            .object_set()
            .services
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect()
    }

    #[test]
    fn the_store_is_synced_only_when_every_kind_listed() {
        let mut store = ObjectStore::new(&["Service", "Tenant"]);
        assert!(!store.is_synced());
        store.apply(StoreEvent::Init("Service"));
        store.apply(StoreEvent::InitApply(service("a", "web")));
        assert!(!store.is_synced());
        assert!(store.apply(StoreEvent::InitDone("Service")));
        assert_eq!(store.unsynced(), vec!["Tenant"]);
        store.apply(StoreEvent::Init("Tenant"));
        store.apply(StoreEvent::InitDone("Tenant"));
        assert!(store.is_synced());
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_relist_replaces_the_kind_atomically_at_init_done() {
        let mut store = ObjectStore::new(&["Service", "Tenant"]);
        store.apply(StoreEvent::Init("Service"));
        store.apply(StoreEvent::InitApply(service("a", "old")));
        store.apply(StoreEvent::InitDone("Service"));
        store.apply(StoreEvent::Init("Tenant"));
        store.apply(StoreEvent::InitApply(tenant("acme", "a")));
        store.apply(StoreEvent::InitDone("Tenant"));

        store.apply(StoreEvent::Init("Service"));
        store.apply(StoreEvent::InitApply(service("a", "new")));
        assert_eq!(service_names(&store), vec!["old"], "old objects until done");
        store.apply(StoreEvent::InitDone("Service"));
        assert_eq!(service_names(&store), vec!["new"], "deleted during the gap");
        assert_eq!(store.object_set().tenants.len(), 1, "other kinds untouched");
    }

    #[test]
    fn applies_and_deletes_update_by_namespace_and_name() {
        let mut store = ObjectStore::new(&["Service"]);
        store.apply(StoreEvent::Init("Service"));
        store.apply(StoreEvent::InitDone("Service"));
        assert!(store.apply(StoreEvent::Apply(service("a", "web"))));
        assert!(store.apply(StoreEvent::Apply(service("b", "web"))));
        assert!(store.apply(StoreEvent::Apply(service("a", "web"))));
        assert_eq!(store.len(), 2);
        assert!(store.apply(StoreEvent::Delete(service("a", "web"))));
        assert!(!store.apply(StoreEvent::Delete(service("a", "web"))));
        let set = store.object_set();
        assert_eq!(
            set.services[0].metadata.namespace.as_deref(),
            Some("b"),
            "{set:?}"
        );
        assert!(
            !store.apply(StoreEvent::Apply(tenant("acme", "a"))),
            "unwatched kinds are ignored"
        );
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn stripping_keeps_only_bulkhead_annotations() {
        let mut meta = ObjectMeta {
            annotations: Some(BTreeMap::from([
                (
                    "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
                    "{...}".to_owned(),
                ),
                ("bulkhead.dev/note".to_owned(), "kept".to_owned()),
            ])),
            managed_fields: Some(vec![Default::default()]),
            name: Some("x".to_owned()),
            ..ObjectMeta::default()
        };
        strip_metadata(&mut meta);
        assert!(meta.managed_fields.is_none());
        assert_eq!(
            meta.annotations,
            Some(BTreeMap::from([(
                "bulkhead.dev/note".to_owned(),
                "kept".to_owned()
            )]))
        );
        assert_eq!(meta.name.as_deref(), Some("x"));
        let mut only_foreign = ObjectMeta {
            annotations: Some(BTreeMap::from([("a".to_owned(), "b".to_owned())])),
            ..ObjectMeta::default()
        };
        strip_metadata(&mut only_foreign);
        assert!(only_foreign.annotations.is_none());
    }

    #[test]
    fn router_endpoints_come_from_the_router_service_slices() {
        let set = ObjectSet::from_objects(objects(
            r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {name: acme}
spec: {namespace: team-a, hostnames: ["a.test"]}
---
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {name: globex}
spec: {namespace: team-g, hostnames: ["g.test"]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bulkhead-router-1, namespace: team-a, labels: {kubernetes.io/service-name: bulkhead-router}}
addressType: IPv4
ports: [{name: https, port: 8443}, {name: http, port: 8080}, {name: admin, port: 9901}]
endpoints:
- addresses: ["10.0.0.2"]
  conditions: {ready: true}
- addresses: ["10.0.0.1"]
- addresses: ["10.0.0.9"]
  conditions: {ready: false}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bulkhead-router-2, namespace: team-a, labels: {kubernetes.io/service-name: bulkhead-router}}
addressType: IPv4
ports: [{name: https, port: 8443}]
endpoints: [{addresses: ["10.0.0.1"]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: app-1, namespace: team-a, labels: {kubernetes.io/service-name: app}}
addressType: IPv4
ports: [{name: https, port: 443}]
endpoints: [{addresses: ["10.0.0.50"]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bulkhead-router-1, namespace: elsewhere, labels: {kubernetes.io/service-name: bulkhead-router}}
addressType: IPv4
ports: [{name: https, port: 8443}]
endpoints: [{addresses: ["10.9.9.9"]}]
"#,
        ));
        let eps = router_endpoints(&set);
        let acme = &eps["acme"];
        assert_eq!(
            acme.https,
            vec![
                "10.0.0.1:8443".parse().unwrap(),
                "10.0.0.2:8443".parse().unwrap()
            ]
        );
        assert_eq!(
            acme.http,
            vec![
                "10.0.0.1:8080".parse().unwrap(),
                "10.0.0.2:8080".parse().unwrap()
            ]
        );
        assert_eq!(eps["globex"], RouterEndpoints::default());
        assert_eq!(eps.len(), 2);
    }

    #[test]
    fn debounce_waits_for_quiet_but_not_forever() {
        let t0 = Instant::now();
        let mut d = Debounce::default();
        assert_eq!(d.deadline(), None);
        d.touch(t0);
        assert_eq!(d.deadline(), Some(t0 + Debounce::QUIET));
        let early = Debounce::QUIET / 2;
        d.touch(t0 + early);
        assert_eq!(d.deadline(), Some(t0 + early + Debounce::QUIET));
        d.touch(t0 + Debounce::MAX_DELAY - Debounce::QUIET / 2);
        assert_eq!(d.deadline(), Some(t0 + Debounce::MAX_DELAY));
        d.clear();
        assert_eq!(d.deadline(), None);
    }
}
