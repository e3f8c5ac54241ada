//! The operator's cache of the cluster: every watched object, per kind, fed by watcher events,
//! and the pure steps that turn it into compiler input.
//!
//! - [`ObjectStore`] applies [`StoreEvent`]s. A (re)list (`Init` … `InitApply`* … `InitDone`)
//!   replaces a kind's objects atomically at `InitDone`, as kube-rs's reflector does: until then
//!   the previous objects stay visible.
//! - [`ObjectStore::is_synced`] is the gate before the first compilation: every watched kind has
//!   finished its initial list. Compiling earlier would publish snapshots missing routes or
//!   certificates and flap statuses.
//! - With [`ObjectStore::with_parking`] (the operator), Secrets, Services, EndpointSlices and ConfigMaps
//!   outside every admitted namespace (a Tenant's namespace, or one holding a ReferenceGrant) are
//!   dropped from the index early and parked as compact JSON: churn in the rest of the cluster
//!   costs no compilation; they are indexed when their namespace is admitted.
//! - [`strip_metadata`] drops what the translator never reads (`managedFields`, annotations
//!   outside `bulkhead.dev/`) before an object is cached.
//! - With [`ObjectStore::with_secrets_on_demand`] (the operator), Secret events carry metadata
//!   only: the store keeps their `resourceVersion`s and indexes the data only of the Secrets a
//!   Gateway references, once fetched ([`super::secret_data`]).
//! - [`Debounce`] decides when a burst of events is over.

use super::decode::Unreadable;
use super::secret_data::{referenced_secrets, FetchedSecret, SecretData, SecretKey, SecretPlan};
use crate::index::{Changes, Kind, ObjectIndex};
use crate::objects::{Object, ObjectSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// Annotations with this prefix are kept in the cache; all others are dropped.
pub const KEPT_ANNOTATION_PREFIX: &str = "bulkhead.dev/";

/// One change seen by a watcher, with the object already typed and stripped.
#[derive(Debug, Clone)]
pub enum StoreEvent {
    /// A (re)list of `kind` starts.
    Init(Kind),
    /// An object of the (re)list in progress.
    InitApply(Object),
    /// The (re)list of `kind` is complete: it replaces the kind's objects.
    InitDone(Kind),
    /// An object was added or changed.
    Apply(Object),
    /// An object was deleted.
    Delete(Object),
    /// An object that cannot be decoded was listed, added or changed: it is not served, and any
    /// version of it cached before is dropped.
    Unreadable(Box<Unreadable>),
    /// An object that could not be decoded was deleted.
    UnreadableGone(Box<Unreadable>),
    /// A Secret's data, read because a Gateway references it (or why it could not be read).
    SecretFetched(Box<FetchedSecret>),
    /// The kind cannot be listed (for example 403, or a broken conversion webhook): it counts as
    /// listed and empty, with this reason, until a list succeeds.
    Degraded(Kind, String),
}

/// Namespace (empty when cluster-scoped) and name of an object.
type ObjectKey = (String, String);

fn unreadable_key(u: &Unreadable) -> ObjectKey {
    (u.namespace.clone().unwrap_or_default(), u.name.clone())
}

#[derive(Debug, Default)]
struct KindState {
    relisting: Option<Vec<Object>>,
    synced: bool,
    /// Objects of the kind that cannot be decoded, as of the last list and the changes since.
    unreadable: BTreeMap<ObjectKey, Unreadable>,
    /// The unreadable objects of the (re)list in progress.
    relisting_unreadable: Option<BTreeMap<ObjectKey, Unreadable>>,
    /// Why the kind could not be listed, while it cannot.
    degraded: Option<String>,
}

/// Every watched object, indexed (see the module documentation), and the changes not yet
/// compiled.
#[derive(Debug)]
pub struct ObjectStore {
    kinds: BTreeMap<Kind, KindState>,
    index: ObjectIndex,
    changes: Changes,
    /// Namespaces whose [`PARKED_KINDS`] objects are indexed (`None`: all of them).
    admitted: Option<BTreeSet<String>>,
    /// Namespace → (kind, name) → compact JSON of objects of [`PARKED_KINDS`] outside admitted
    /// namespaces: kept, but neither indexed nor compiled.
    parked: HashMap<String, BTreeMap<(Kind, String), Box<str>>>,
    /// Secrets watched by metadata, their data held only while referenced (`None`: Secret events
    /// carry their data and are indexed as they come).
    secrets: Option<SecretData>,
    /// The Secrets the served Gateways reference, as last worked out; `None` once a Gateway,
    /// GatewayClass or ReferenceGrant changed. Working it out reads every Gateway, so it is not
    /// repeated for the route churn that makes up most compilations.
    referenced: Option<BTreeSet<SecretKey>>,
}

/// Kinds whose changes can change which Secrets are referenced.
const SECRET_REFERRING_KINDS: [Kind; 4] = [
    Kind::Gateway,
    Kind::GatewayClass,
    Kind::ReferenceGrant,
    Kind::ListenerSet,
];

/// Kinds parked outside admitted namespaces: the bulk of a cluster (every namespace has
/// Services and EndpointSlices, and they churn) that no tenant can use until its namespace is
/// onboarded or grants access with a ReferenceGrant.
pub const PARKED_KINDS: [Kind; 4] = [
    Kind::Secret,
    Kind::Service,
    Kind::EndpointSlice,
    Kind::ConfigMap,
];

impl ObjectStore {
    /// A store for the given kinds; events of other kinds are ignored.
    pub fn new(kinds: &[Kind]) -> Self {
        Self {
            kinds: kinds.iter().map(|k| (*k, KindState::default())).collect(),
            index: ObjectIndex::new(),
            changes: Changes::default(),
            admitted: None,
            parked: HashMap::new(),
            secrets: None,
            referenced: None,
        }
    }

    /// Takes Secret events as metadata only (the operator's metadata watch): the store keeps
    /// each Secret's `resourceVersion`, and indexes the data of referenced Secrets when it is
    /// fetched ([`ObjectStore::plan_secrets`], [`StoreEvent::SecretFetched`]).
    pub fn with_secrets_on_demand(mut self) -> Self {
        self.secrets = Some(SecretData::default());
        self
    }

    /// Decides which Secrets' data to fetch and drops from the index the data of Secrets no
    /// longer referenced (see [`super::secret_data`]); empty without
    /// [`ObjectStore::with_secrets_on_demand`].
    pub fn plan_secrets(&mut self) -> SecretPlan {
        let Some(secrets) = self.secrets.as_mut() else {
            return SecretPlan::default();
        };
        let index = &self.index;
        let changed = self.referenced.is_none();
        let referenced = self
            .referenced
            .get_or_insert_with(|| referenced_secrets(index));
        let plan = secrets.plan_if_changed(referenced, changed);
        for (ns, name) in &plan.drop {
            self.index.remove(Kind::Secret, ns, name, &mut self.changes);
        }
        plan
    }

    /// When a failed Secret read is due again ([`SecretData::next_retry`]).
    pub fn next_secret_retry(&self) -> Option<tokio::time::Instant> {
        self.secrets.as_ref()?.next_retry()
    }

    /// Whether the data of Secret `ns`/`name` is held or being fetched.
    pub fn tracks_secret_data(&self, ns: &str, name: &str) -> bool {
        self.secrets
            .as_ref()
            .is_some_and(|s| s.is_tracked(&(ns.to_owned(), name.to_owned())))
    }

    /// Applies the answer to a Secret fetch: its data is indexed, or (the fetch failed) the
    /// Secret leaves the index and counts as missing. Always counts as a change, so the waiting
    /// compilation runs.
    fn secret_fetched(&mut self, fetched: FetchedSecret) {
        self.changes.events += 1;
        let Some(secrets) = self.secrets.as_mut() else {
            return;
        };
        let (ns, name) = (
            fetched.request.namespace.clone(),
            fetched.request.name.clone(),
        );
        match secrets.fetched(fetched) {
            Some(Ok(mut secret)) => {
                strip_metadata(&mut secret.metadata);
                self.index
                    .upsert(Object::Secret(Box::new(secret)), &mut self.changes);
            }
            Some(Err(_)) => self
                .index
                .remove(Kind::Secret, &ns, &name, &mut self.changes),
            None => {}
        }
    }

    /// Whether Secret events carry metadata only (they go to [`SecretData`], not the index).
    fn secret_meta(&self, kind: Kind) -> bool {
        kind == Kind::Secret && self.secrets.is_some()
    }

    /// Parks Secrets, Services, EndpointSlices and ConfigMaps outside admitted namespaces (a Tenant's
    /// namespace, or one holding a ReferenceGrant) instead of indexing them: churn there costs no
    /// compilation, and they are kept as compact JSON. They are indexed when their namespace is
    /// admitted.
    pub fn with_parking(mut self) -> Self {
        self.admitted = Some(BTreeSet::new());
        self
    }

    fn is_parked_kind(kind: Kind) -> bool {
        PARKED_KINDS.contains(&kind)
    }

    /// Whether objects of `kind` in `ns` go to the parking instead of the index.
    fn parks(&self, kind: Kind, ns: &str) -> bool {
        !self.secret_meta(kind)
            && Self::is_parked_kind(kind)
            && self.admitted.as_ref().is_some_and(|a| !a.contains(ns))
    }

    fn park(&mut self, object: &Object) {
        let meta = object.metadata();
        let ns = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let json = match object {
            Object::Secret(o) => serde_json::to_string(o),
            Object::Service(o) => serde_json::to_string(o),
            Object::EndpointSlice(o) => serde_json::to_string(o),
            Object::ConfigMap(o) => serde_json::to_string(o),
            _ => return,
        };
        match json {
            Ok(json) => {
                self.parked
                    .entry(ns)
                    .or_default()
                    .insert((object.kind(), name), json.into_boxed_str());
            }
            Err(e) => tracing::warn!(error = %e, "cannot park an object; it is dropped"),
        }
    }

    fn unpark(&mut self, kind: Kind, ns: &str, name: &str) {
        if let Some(names) = self.parked.get_mut(ns) {
            names.remove(&(kind, name.to_owned()));
            if names.is_empty() {
                self.parked.remove(ns);
            }
        }
    }

    /// Recomputes the admitted namespaces after a Tenant or ReferenceGrant change and indexes
    /// what was parked in newly admitted ones.
    fn readmit(&mut self) {
        let Some(old) = &self.admitted else {
            return;
        };
        let mut admitted: BTreeSet<String> = self
            .index
            .of_kind(Kind::Tenant)
            .filter_map(|o| match o {
                Object::Tenant(t) => Some(t.spec.namespace.clone()),
                _ => None,
            })
            .collect();
        admitted.extend(
            self.index
                .of_kind(Kind::ReferenceGrant)
                .filter_map(|o| o.metadata().namespace.clone()),
        );
        let newly: Vec<String> = admitted.difference(old).cloned().collect();
        self.admitted = Some(admitted);
        for ns in newly {
            let Some(names) = self.parked.remove(&ns) else {
                continue;
            };
            for json in names.into_values() {
                let object = serde_json::from_str(&json)
                    .map_err(|e| e.to_string())
                    .and_then(Object::from_json);
                match object {
                    Ok(o) => self.index.upsert(o, &mut self.changes),
                    Err(e) => {
                        tracing::warn!(namespace = %ns, error = %e, "cannot index a parked object")
                    }
                }
            }
        }
    }

    /// Objects parked (for tests and metrics).
    pub fn parked(&self) -> usize {
        self.parked.values().map(BTreeMap::len).sum()
    }

    /// Applies one event; returns whether the visible objects may have changed.
    pub fn apply(&mut self, event: StoreEvent) -> bool {
        let before = self.changes.events;
        let kind = match &event {
            StoreEvent::Init(kind) | StoreEvent::InitDone(kind) | StoreEvent::Degraded(kind, _) => {
                Some(*kind)
            }
            StoreEvent::InitApply(o) | StoreEvent::Apply(o) | StoreEvent::Delete(o) => {
                Some(o.kind())
            }
            StoreEvent::Unreadable(u) | StoreEvent::UnreadableGone(u) => Some(u.kind),
            StoreEvent::SecretFetched(_) => None,
        };
        if kind.is_some_and(|k| SECRET_REFERRING_KINDS.contains(&k)) {
            self.referenced = None;
        }
        match event {
            StoreEvent::Init(kind) => {
                if let Some(state) = self.kinds.get_mut(&kind) {
                    state.relisting = Some(Vec::new());
                    state.relisting_unreadable = Some(BTreeMap::new());
                }
            }
            StoreEvent::InitApply(object) => {
                if let Some(state) = self.kinds.get_mut(&object.kind()) {
                    state.relisting.get_or_insert_with(Vec::new).push(object);
                }
            }
            StoreEvent::InitDone(kind) => {
                if let Some(state) = self.kinds.get_mut(&kind) {
                    let objects = state.relisting.take().unwrap_or_default();
                    state.unreadable = state.relisting_unreadable.take().unwrap_or_default();
                    state.degraded = None;
                    let first = !state.synced;
                    state.synced = true;
                    if let (Some(secrets), Kind::Secret) = (self.secrets.as_mut(), kind) {
                        for (ns, name) in secrets.replace_meta(&objects) {
                            self.index
                                .remove(Kind::Secret, &ns, &name, &mut self.changes);
                        }
                        if first {
                            self.changes.events += 1;
                        }
                        return self.changes.events != before;
                    }
                    let (indexed, parked): (Vec<Object>, Vec<Object>) =
                        objects.into_iter().partition(|o| {
                            !self.parks(kind, o.metadata().namespace.as_deref().unwrap_or_default())
                        });
                    if Self::is_parked_kind(kind) {
                        for names in self.parked.values_mut() {
                            names.retain(|(k, _), _| *k != kind);
                        }
                        self.parked.retain(|_, names| !names.is_empty());
                        for o in &parked {
                            self.park(o);
                        }
                    }
                    self.index.replace_kind(kind, indexed, &mut self.changes);
                    if first {
                        // A kind's first list can matter even when empty (nothing was gated).
                        self.changes.events += 1;
                    }
                    if matches!(kind, Kind::Tenant | Kind::ReferenceGrant) {
                        self.readmit();
                    }
                }
            }
            StoreEvent::Apply(object) => {
                let kind = object.kind();
                self.readable_again(&object);
                if let (Some(secrets), Kind::Secret) = (self.secrets.as_mut(), kind) {
                    if secrets.upsert_meta(&object) {
                        self.changes.events += 1;
                    }
                } else if self.kinds.contains_key(&kind) {
                    let ns = object.metadata().namespace.clone().unwrap_or_default();
                    if self.parks(kind, &ns) {
                        self.park(&object);
                    } else {
                        self.index.upsert(object, &mut self.changes);
                        if matches!(kind, Kind::Tenant | Kind::ReferenceGrant) {
                            self.readmit();
                        }
                    }
                }
            }
            StoreEvent::Delete(object) => {
                let kind = object.kind();
                self.readable_again(&object);
                if self.kinds.contains_key(&kind) {
                    let meta = object.metadata();
                    let ns = meta.namespace.as_deref().unwrap_or_default();
                    let name = meta.name.as_deref().unwrap_or_default();
                    if let (Some(secrets), Kind::Secret) = (self.secrets.as_mut(), kind) {
                        if secrets.remove_meta(&(ns.to_owned(), name.to_owned())) {
                            self.changes.events += 1;
                        }
                    }
                    self.unpark(kind, ns, name);
                    self.index.remove(kind, ns, name, &mut self.changes);
                }
            }
            StoreEvent::Unreadable(u) => self.unreadable(*u),
            StoreEvent::UnreadableGone(u) => {
                if let Some(state) = self.kinds.get_mut(&u.kind) {
                    state.unreadable.remove(&unreadable_key(&u));
                }
            }
            StoreEvent::SecretFetched(fetched) => self.secret_fetched(*fetched),
            StoreEvent::Degraded(kind, reason) => {
                if let Some(state) = self.kinds.get_mut(&kind) {
                    state.degraded = Some(reason);
                }
            }
        }
        self.changes.events != before
    }

    /// Records an object that cannot be decoded: part of the (re)list in progress, or a change
    /// that drops the version cached before.
    fn unreadable(&mut self, u: Unreadable) {
        let Some(state) = self.kinds.get_mut(&u.kind) else {
            return;
        };
        let key = unreadable_key(&u);
        if let Some(listing) = state.relisting_unreadable.as_mut() {
            listing.insert(key, u);
            return;
        }
        let kind = u.kind;
        state.unreadable.insert(key.clone(), u);
        self.unpark(kind, &key.0, &key.1);
        self.index.remove(kind, &key.0, &key.1, &mut self.changes);
    }

    /// Forgets that `object` could not be decoded (it now can, or it is gone).
    fn readable_again(&mut self, object: &Object) {
        if let Some(state) = self.kinds.get_mut(&object.kind()) {
            let meta = object.metadata();
            let key = (
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            );
            state.unreadable.remove(&key);
        }
    }

    /// Whether this exact failure is already known (so it is reported once, not at every
    /// relist).
    pub fn knows_unreadable(&self, u: &Unreadable) -> bool {
        self.kinds
            .get(&u.kind)
            .and_then(|s| s.unreadable.get(&unreadable_key(u)))
            .is_some_and(|known| known.error == u.error)
    }

    /// Every object that cannot be decoded, by kind, namespace and name.
    pub fn unreadable_objects(&self) -> impl Iterator<Item = &Unreadable> {
        self.kinds.values().flat_map(|s| s.unreadable.values())
    }

    /// The kinds that cannot be listed, and why.
    pub fn degraded_kinds(&self) -> impl Iterator<Item = (Kind, &str)> {
        self.kinds
            .iter()
            .filter_map(|(k, s)| s.degraded.as_deref().map(|r| (*k, r)))
    }

    /// Whether every kind finished its initial list.
    pub fn is_synced(&self) -> bool {
        self.kinds.values().all(|s| s.synced)
    }

    /// The kinds still waiting for their initial list.
    pub fn unsynced(&self) -> Vec<Kind> {
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
        self.index.to_set()
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
        let mut store = ObjectStore::new(&[Kind::Service, Kind::Tenant]);
        assert!(!store.is_synced());
        store.apply(StoreEvent::Init(Kind::Service));
        store.apply(StoreEvent::InitApply(service("a", "web")));
        assert!(!store.is_synced());
        assert!(store.apply(StoreEvent::InitDone(Kind::Service)));
        assert_eq!(store.unsynced(), vec![Kind::Tenant]);
        store.apply(StoreEvent::Init(Kind::Tenant));
        store.apply(StoreEvent::InitDone(Kind::Tenant));
        assert!(store.is_synced());
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_relist_replaces_the_kind_atomically_at_init_done() {
        let mut store = ObjectStore::new(&[Kind::Service, Kind::Tenant]);
        store.apply(StoreEvent::Init(Kind::Service));
        store.apply(StoreEvent::InitApply(service("a", "old")));
        store.apply(StoreEvent::InitDone(Kind::Service));
        store.apply(StoreEvent::Init(Kind::Tenant));
        store.apply(StoreEvent::InitApply(tenant("acme", "a")));
        store.apply(StoreEvent::InitDone(Kind::Tenant));

        store.apply(StoreEvent::Init(Kind::Service));
        store.apply(StoreEvent::InitApply(service("a", "new")));
        assert_eq!(service_names(&store), vec!["old"], "old objects until done");
        store.apply(StoreEvent::InitDone(Kind::Service));
        assert_eq!(service_names(&store), vec!["new"], "deleted during the gap");
        assert_eq!(store.object_set().tenants.len(), 1, "other kinds untouched");
    }

    #[test]
    fn applies_and_deletes_update_by_namespace_and_name() {
        let mut store = ObjectStore::new(&[Kind::Service]);
        store.apply(StoreEvent::Init(Kind::Service));
        store.apply(StoreEvent::InitDone(Kind::Service));
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

    fn grant(ns: &str) -> Object {
        one(&format!(
            "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: g, namespace: {ns}}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: team-a}}]\n  to: [{{group: \"\", kind: Service}}]\n"
        ))
    }

    fn list(store: &mut ObjectStore, kind: Kind, objects: Vec<Object>) {
        store.apply(StoreEvent::Init(kind));
        for o in objects {
            store.apply(StoreEvent::InitApply(o));
        }
        store.apply(StoreEvent::InitDone(kind));
    }

    #[test]
    fn services_outside_admitted_namespaces_are_parked_until_admitted() {
        let mut store =
            ObjectStore::new(&[Kind::Tenant, Kind::ReferenceGrant, Kind::Service]).with_parking();
        // Services listed before the Tenants: parked, then indexed when the Tenant list arrives.
        list(
            &mut store,
            Kind::Service,
            vec![service("team-a", "web"), service("kube-system", "dns")],
        );
        assert!(service_names(&store).is_empty());
        assert_eq!(store.parked(), 2);
        list(&mut store, Kind::Tenant, vec![tenant("acme", "team-a")]);
        list(&mut store, Kind::ReferenceGrant, vec![]);
        assert_eq!(service_names(&store), ["web"]);
        assert_eq!(store.parked(), 1);
        let _ = store.take_changes();

        // Churn in a parked namespace changes nothing the compiler sees.
        assert!(!store.apply(StoreEvent::Apply(service("kube-system", "metrics"))));
        assert!(store.take_changes().is_empty());
        assert_eq!(store.parked(), 2);

        // A ReferenceGrant admits its namespace: its parked objects are indexed.
        assert!(store.apply(StoreEvent::Apply(grant("kube-system"))));
        assert_eq!(service_names(&store), ["dns", "metrics", "web"]);
        assert_eq!(store.parked(), 0);
        let changes = store.take_changes();
        assert!(changes.touched.contains_key("kube-system"), "{changes:?}");

        // Deleting a parked object forgets it.
        store.apply(StoreEvent::Apply(service("other", "x")));
        assert_eq!(store.parked(), 1);
        store.apply(StoreEvent::Delete(service("other", "x")));
        assert_eq!(store.parked(), 0);
    }
}
