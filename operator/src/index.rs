//! [`ObjectIndex`]: every object the control plane reads, indexed for incremental compilation —
//! by kind, namespace and name, routes by the namespaces of the Gateways they name, and the
//! namespaces that exist — and [`Changes`], what a batch of updates touched.
//!
//! The compiler asks the index for one tenant's view (its namespace, the routes into it and the
//! namespaces they refer to) instead of walking every object, so the cost of a change is the size
//! of the tenants it touches, not of the cluster.

use crate::objects::ObjectKey;
use crate::objects::{Object, ObjectSet};
use crate::translator::world::RouteObject;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// A kind the control plane reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `bulkhead.dev` `Tenant` (cluster-scoped).
    Tenant,
    /// `v1` `Namespace` (cluster-scoped).
    Namespace,
    /// `GatewayClass` (cluster-scoped).
    GatewayClass,
    /// `Gateway`.
    Gateway,
    /// `HTTPRoute`.
    HttpRoute,
    /// `GRPCRoute`.
    GrpcRoute,
    /// `TLSRoute`.
    TlsRoute,
    /// `TCPRoute`.
    TcpRoute,
    /// `ReferenceGrant`.
    ReferenceGrant,
    /// `v1` `Secret`.
    Secret,
    /// `v1` `Service`.
    Service,
    /// `discovery.k8s.io/v1` `EndpointSlice`.
    EndpointSlice,
    /// `v1` `ConfigMap`.
    ConfigMap,
    /// `ListenerSet` (Gateway API v1.5).
    ListenerSet,
    /// `BackendTLSPolicy`.
    BackendTlsPolicy,
}

impl Kind {
    /// Every kind, the cluster-scoped ones first.
    pub const ALL: [Kind; 15] = [
        Kind::Tenant,
        Kind::Namespace,
        Kind::GatewayClass,
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::TlsRoute,
        Kind::TcpRoute,
        Kind::ReferenceGrant,
        Kind::Secret,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::ConfigMap,
        Kind::ListenerSet,
        Kind::BackendTlsPolicy,
    ];

    /// The route kinds.
    pub const ROUTES: [Kind; 4] = [
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::TlsRoute,
        Kind::TcpRoute,
    ];

    /// The API `kind` string (`HTTPRoute`, `Secret`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Tenant => "Tenant",
            Kind::Namespace => "Namespace",
            Kind::GatewayClass => "GatewayClass",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::TlsRoute => "TLSRoute",
            Kind::TcpRoute => "TCPRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Secret => "Secret",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::ConfigMap => "ConfigMap",
            Kind::ListenerSet => "ListenerSet",
            Kind::BackendTlsPolicy => "BackendTLSPolicy",
        }
    }

    /// Whether objects of the kind have no namespace.
    pub const fn is_cluster_scoped(self) -> bool {
        matches!(self, Kind::Tenant | Kind::Namespace | Kind::GatewayClass)
    }

    /// Whether the kind is a route kind.
    pub const fn is_route(self) -> bool {
        matches!(
            self,
            Kind::HttpRoute | Kind::GrpcRoute | Kind::TlsRoute | Kind::TcpRoute
        )
    }

    /// The kind an API `kind` string names, if the control plane reads it.
    pub fn parse(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a batch of updates touched.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Everything may have changed (first compilation, a standalone reload).
    pub all: bool,
    /// A cluster-scoped object changed (Tenant, Namespace, GatewayClass).
    pub cluster: bool,
    /// Namespace → kinds changed in it. A route counts in its own namespace and in every namespace
    /// whose Gateways it names (before and after the change).
    pub touched: BTreeMap<String, BTreeSet<Kind>>,
    /// Updates recorded (for the queue-depth metric).
    pub events: usize,
}

impl Changes {
    /// Changes that mean "recompute everything".
    pub fn everything() -> Self {
        Self {
            all: true,
            cluster: true,
            ..Self::default()
        }
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.all && !self.cluster && self.touched.is_empty()
    }

    /// Adds `other`.
    pub fn merge(&mut self, other: Changes) {
        self.all |= other.all;
        self.cluster |= other.cluster;
        self.events += other.events;
        for (ns, kinds) in other.touched {
            self.touched.entry(ns).or_default().extend(kinds);
        }
    }

    fn touch(&mut self, ns: &str, kind: Kind) {
        if ns.is_empty() {
            self.cluster = true;
        } else {
            self.touched.entry(ns.to_owned()).or_default().insert(kind);
        }
    }

    fn touch_object(&mut self, object: &Object) {
        let meta = object.metadata();
        let ns = meta.namespace.as_deref().unwrap_or_default();
        self.touch(ns, object.kind());
        for parent in parent_namespaces(object) {
            if parent != ns {
                self.touch(&parent, object.kind());
            }
        }
    }
}

/// The namespaces of the Gateways a route or a ListenerSet names (none for other kinds).
pub fn parent_namespaces(object: &Object) -> BTreeSet<String> {
    if let Object::ListenerSet(ls) = object {
        return crate::translator::listener_sets::parent_namespace(ls)
            .into_iter()
            .collect();
    }
    match route_object(object) {
        Some(r) => r.parent_namespaces(),
        None => BTreeSet::new(),
    }
}

fn route_object(object: &Object) -> Option<RouteObject<'_>> {
    match object {
        Object::HttpRoute(r) => Some(RouteObject::Http(r)),
        Object::GrpcRoute(r) => Some(RouteObject::Grpc(r)),
        Object::TlsRoute(r) => Some(RouteObject::Tls(r)),
        Object::TcpRoute(r) => Some(RouteObject::Tcp(r)),
        _ => None,
    }
}

type ByNamespace = BTreeMap<String, BTreeMap<String, Object>>;

/// Every object, indexed (see the module documentation).
#[derive(Debug, Default)]
pub struct ObjectIndex {
    /// kind → namespace → name → object.
    kinds: BTreeMap<Kind, ByNamespace>,
    /// Namespace → routes and ListenerSets living in another namespace that name a Gateway in it.
    routes_into: HashMap<String, BTreeSet<ObjectKey>>,
    /// Namespace → namespaced objects living in it.
    populated: HashMap<String, usize>,
    len: usize,
}

/// Whether two versions of an object are known to be identical (same `resourceVersion`).
fn same_version(a: &Object, b: &Object) -> bool {
    match (
        &a.metadata().resource_version,
        &b.metadata().resource_version,
    ) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

impl ObjectIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// An index of `objects` (later duplicates replace earlier ones).
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let mut index = Self::new();
        let mut ignored = Changes::default();
        for o in objects {
            index.upsert(o, &mut ignored);
        }
        index
    }

    /// An index of every object of `set`.
    pub fn from_set(set: &ObjectSet) -> Self {
        Self::from_objects(set.clone().into_objects())
    }

    /// Every object, as one set (a full copy; for standalone tools and tests).
    pub fn to_set(&self) -> ObjectSet {
        ObjectSet::from_objects(Kind::ALL.into_iter().flat_map(|k| self.of_kind(k).cloned()))
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds or replaces an object, recording what it touched (nothing when its `resourceVersion`
    /// did not change).
    pub fn upsert(&mut self, object: Object, changes: &mut Changes) {
        let ObjectKey {
            kind,
            namespace: ns,
            name,
        } = object.key();
        if let Some(old) = self.get(kind, &ns, &name) {
            if same_version(old, &object) {
                return;
            }
        }
        let old = self
            .kinds
            .get_mut(&kind)
            .and_then(|by_ns| by_ns.get_mut(&ns))
            .and_then(|names| names.remove(&name));
        changes.events += 1;
        changes.touch_object(&object);
        if let Some(old) = &old {
            changes.touch_object(old);
            self.link_route(old, false);
        }
        self.link_route(&object, true);
        self.kinds
            .entry(kind)
            .or_default()
            .entry(ns.clone())
            .or_default()
            .insert(name, object);
        if old.is_none() {
            self.len += 1;
            if !ns.is_empty() {
                *self.populated.entry(ns).or_default() += 1;
            }
        }
    }

    /// Removes an object, recording what it touched.
    pub fn remove(&mut self, kind: Kind, ns: &str, name: &str, changes: &mut Changes) {
        let Some(by_ns) = self.kinds.get_mut(&kind) else {
            return;
        };
        let Some(names) = by_ns.get_mut(ns) else {
            return;
        };
        let Some(old) = names.remove(name) else {
            return;
        };
        if names.is_empty() {
            by_ns.remove(ns);
        }
        changes.events += 1;
        changes.touch_object(&old);
        self.link_route(&old, false);
        self.len -= 1;
        if let Some(n) = self.populated.get_mut(ns) {
            *n -= 1;
            if *n == 0 {
                self.populated.remove(ns);
            }
        }
    }

    /// Replaces every object of `kind` (a relist), recording only what differs.
    pub fn replace_kind(
        &mut self,
        kind: Kind,
        objects: impl IntoIterator<Item = Object>,
        changes: &mut Changes,
    ) {
        let mut gone: BTreeSet<(String, String)> = self
            .kinds
            .get(&kind)
            .into_iter()
            .flat_map(|by_ns| {
                by_ns
                    .iter()
                    .flat_map(|(ns, names)| names.keys().map(move |n| (ns.clone(), n.clone())))
            })
            .collect();
        for o in objects.into_iter().filter(|o| o.kind() == kind) {
            let key = o.key();
            gone.remove(&(key.namespace, key.name));
            self.upsert(o, changes);
        }
        for (ns, name) in gone {
            self.remove(kind, &ns, &name, changes);
        }
    }

    /// One object.
    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<&Object> {
        self.kinds.get(&kind)?.get(ns)?.get(name)
    }

    /// Every object of `kind` in `ns`.
    pub fn in_namespace<'a>(&'a self, kind: Kind, ns: &str) -> impl Iterator<Item = &'a Object> {
        self.kinds
            .get(&kind)
            .and_then(|by_ns| by_ns.get(ns))
            .into_iter()
            .flat_map(BTreeMap::values)
    }

    /// Every object of `kind`.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Object> {
        self.kinds
            .get(&kind)
            .into_iter()
            .flat_map(|by_ns| by_ns.values().flat_map(BTreeMap::values))
    }

    /// Routes and ListenerSets living in another namespace that name a Gateway in `ns`.
    pub fn routes_into<'a>(&'a self, ns: &str) -> impl Iterator<Item = &'a Object> {
        self.routes_into
            .get(ns)
            .into_iter()
            .flatten()
            .filter_map(|key| self.get(key.kind, &key.namespace, &key.name))
    }

    /// Namespaces that exist: a Namespace object names them or some object lives in them.
    pub fn existing_namespaces(&self) -> BTreeSet<&str> {
        self.populated
            .keys()
            .map(String::as_str)
            .chain(
                self.in_namespace(Kind::Namespace, "")
                    .filter_map(|n| n.metadata().name.as_deref()),
            )
            .collect()
    }

    /// Whether `ns` exists (see [`Self::existing_namespaces`]).
    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.populated.contains_key(ns) || self.get(Kind::Namespace, "", ns).is_some()
    }

    fn link_route(&mut self, object: &Object, add: bool) {
        let key = object.key();
        for parent in parent_namespaces(object) {
            if parent == key.namespace {
                continue;
            }
            if add {
                self.routes_into
                    .entry(parent)
                    .or_default()
                    .insert(key.clone());
            } else if let Some(set) = self.routes_into.get_mut(&parent) {
                set.remove(&key);
                if set.is_empty() {
                    self.routes_into.remove(&parent);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::parse_documents;
    use std::path::Path;

    fn one(yaml: &str) -> Object {
        let (mut objects, errors) = parse_documents(Path::new("t.yaml"), yaml);
        assert!(errors.is_empty(), "{errors:?}");
        objects.remove(0)
    }

    fn route(ns: &str, name: &str, parent_ns: &str, rv: &str) -> Object {
        one(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}, resourceVersion: \"{rv}\"}}\nspec: {{parentRefs: [{{name: web, namespace: {parent_ns}}}]}}\n"
        ))
    }

    fn service(ns: &str, name: &str) -> Object {
        one(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{ports: [{{port: 80}}]}}\n"
        ))
    }

    #[test]
    fn every_kind_parses_from_its_api_name_and_the_cluster_scoped_ones_come_first() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("HttpRoute"), None, "the API spelling only");
        let scoped = Kind::ALL
            .iter()
            .take_while(|k| k.is_cluster_scoped())
            .count();
        assert!(Kind::ALL[scoped..].iter().all(|k| !k.is_cluster_scoped()));
        assert_eq!(
            Kind::ALL
                .into_iter()
                .filter(|k| k.is_route())
                .collect::<Vec<_>>(),
            Kind::ROUTES
        );
    }

    #[test]
    fn a_route_touches_its_namespace_and_the_namespaces_it_attaches_to_before_and_after() {
        let mut index = ObjectIndex::new();
        let mut c = Changes::default();
        index.upsert(route("partner", "r", "acme", "1"), &mut c);
        assert_eq!(
            c.touched.keys().collect::<Vec<_>>(),
            ["acme", "partner"],
            "{c:?}"
        );
        assert_eq!(index.routes_into("acme").count(), 1);

        let mut c = Changes::default();
        index.upsert(route("partner", "r", "globex", "2"), &mut c);
        assert_eq!(
            c.touched.keys().collect::<Vec<_>>(),
            ["acme", "globex", "partner"]
        );
        assert_eq!(index.routes_into("acme").count(), 0, "link moved");
        assert_eq!(index.routes_into("globex").count(), 1);

        let mut c = Changes::default();
        index.remove(Kind::HttpRoute, "partner", "r", &mut c);
        assert_eq!(c.touched.keys().collect::<Vec<_>>(), ["globex", "partner"]);
        assert_eq!(index.routes_into("globex").count(), 0);
        assert!(index.is_empty());
    }

    #[test]
    fn the_same_resource_version_is_no_change() {
        let mut index = ObjectIndex::new();
        let mut c = Changes::default();
        index.upsert(route("acme", "r", "acme", "7"), &mut c);
        let mut c = Changes::default();
        index.upsert(route("acme", "r", "acme", "7"), &mut c);
        assert!(c.is_empty(), "{c:?}");
        index.upsert(route("acme", "r", "acme", "8"), &mut c);
        assert_eq!(c.events, 1);
    }

    #[test]
    fn a_relist_records_only_what_differs_and_drops_what_is_gone() {
        let mut index = ObjectIndex::new();
        let mut c = Changes::default();
        index.upsert(route("acme", "a", "acme", "1"), &mut c);
        index.upsert(route("globex", "b", "globex", "1"), &mut c);
        index.upsert(service("acme", "s"), &mut c);
        let mut c = Changes::default();
        index.replace_kind(Kind::HttpRoute, [route("acme", "a", "acme", "1")], &mut c);
        assert_eq!(c.touched.keys().collect::<Vec<_>>(), ["globex"], "{c:?}");
        assert_eq!(index.of_kind(Kind::HttpRoute).count(), 1);
        assert_eq!(index.len(), 2);
        assert!(index.namespace_exists("acme"));
        assert!(!index.namespace_exists("globex"), "its only object is gone");
    }
}
