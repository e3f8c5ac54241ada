//! Watchers: one kube-rs `watcher` per kind the translator reads, with the default backoff,
//! metadata stripped ([`strip_metadata`]) and statuses we write ourselves dropped
//! ([`Object::strip_owned_status`], after the status writer has noted what they say:
//! [`StatusWriter::observe`]) before anything is cached, feeding [`StoreEvent`]s to
//! the control loop over one bounded channel (a slow control loop slows the watchers down rather
//! than growing memory).
//!
//! Secrets are watched by metadata only ([`spawn_secret_metadata`]), with the field selector
//! `type=kubernetes.io/tls` (the only Secrets a listener may reference): their data (private
//! keys) is read only for the Secrets a Gateway references ([`super::secret_data`]). A Gateway API kind whose CRD is not installed (the initial list answers
//! 404, e.g. the experimental `TCPRoute`) counts as listed and empty, so it does not hold back the
//! first compilation; the watcher keeps retrying and picks the kind up once the CRD appears. Any
//! other failure of a kind's initial list that lasts [`WatchSettings::degrade_after`] (403, a
//! broken conversion webhook) degrades the kind the same way, reported
//! ([`StoreEvent::Degraded`]) until a list succeeds.
//!
//! Objects are decoded one by one ([`Lenient`], see [`super::decode`]): one object our types
//! cannot read becomes [`StoreEvent::Unreadable`] and never fails its kind's list.

use super::decode::{Lenient, WatchedVersion};
use super::discovery::ServedVersions;
use super::status_writer::StatusWriter;
use super::store::{strip_metadata, StoreEvent};
use crate::index::Kind;
use crate::objects::{Object, StatusKey};
use ::kube::api::Api;
use ::kube::core::PartialObjectMeta;
use ::kube::runtime::watcher::{self, watcher};
use ::kube::runtime::WatchStreamExt;
use ::kube::{Client, Resource};
use bulkhead_crds::Tenant;
use futures::StreamExt;
use gateway_api::backendtlspolicies::BackendTlsPolicy;
use gateway_api::experimental::gateways::Gateway;
use gateway_api::experimental::tcproutes::TcpRoute;
use gateway_api::experimental::tlsroutes::TlsRoute;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::grpcroutes::GrpcRoute;
use gateway_api::httproutes::HttpRoute;
use gateway_api::listenersets::ListenerSet;
use gateway_api::referencegrants::ReferenceGrant;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Every kind watched: the store waits for all of them.
pub const WATCHED_KINDS: &[Kind] = &Kind::ALL;

/// Capacity of the channel from the watchers to the control loop.
pub const EVENT_QUEUE: usize = 1024;

/// The field selector of watched Secrets: [`TLS_SECRET_TYPE`] only.
pub const TLS_SECRET_SELECTOR: &str = "type=kubernetes.io/tls";

/// The type of the Secrets watched (the only Secrets a listener may reference).
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// How long a kind's initial list may fail (with anything but 404) before the kind is degraded:
/// counted as listed and empty so every other kind and tenant is compiled, reported in
/// readiness detail and `bulkhead_operator_degraded_kinds`, and still retried with backoff. Short
/// failures (an API server restart) do not degrade anything: compiling without a kind publishes
/// snapshots without its objects. Flag: `bulkhead operator --watch-degrade-after`.
pub const DEFAULT_DEGRADE_AFTER: Duration = Duration::from_secs(30);

/// Settings of the watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSettings {
    /// See [`DEFAULT_DEGRADE_AFTER`].
    pub degrade_after: Duration,
    /// See [`super::secret_data::DEFAULT_SECRET_FETCH_TIMEOUT`].
    pub secret_fetch_timeout: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            degrade_after: DEFAULT_DEGRADE_AFTER,
            secret_fetch_timeout: super::secret_data::DEFAULT_SECRET_FETCH_TIMEOUT,
        }
    }
}

/// What every watcher shares.
struct WatchContext {
    events: mpsc::Sender<StoreEvent>,
    statuses: Arc<StatusWriter>,
    settings: WatchSettings,
}

/// Starts one watcher per kind of [`WATCHED_KINDS`]; they run until `events` is closed. The
/// statuses the operator writes are reported to `statuses` as the objects carry them.
///
/// Gateway API kinds are watched at the version `versions` chose (API discovery); a required kind
/// the API server does not serve is not watched but reported degraded at once.
pub fn spawn_watchers(
    client: &Client,
    events: &mpsc::Sender<StoreEvent>,
    statuses: &Arc<StatusWriter>,
    settings: &WatchSettings,
    versions: &ServedVersions,
) -> JoinSet<()> {
    let all = watcher::Config::default();
    let mut set = JoinSet::new();
    let c = client.clone();
    let context = WatchContext {
        events: events.clone(),
        statuses: Arc::clone(statuses),
        settings: settings.clone(),
    };
    for missing in &versions.missing_required {
        let (events, kind) = (events.clone(), missing.kind);
        let reason = ServedVersions::missing_reason(missing);
        tracing::error!(%kind, %reason, "required Gateway API kind missing; serving every other kind without it");
        set.spawn(async move {
            for event in [
                StoreEvent::Init(kind),
                StoreEvent::InitDone(kind),
                StoreEvent::Degraded(kind, reason),
            ] {
                if events.send(event).await.is_err() {
                    return;
                }
            }
        });
    }
    for missing in &versions.missing_optional {
        tracing::info!(kind = %missing.kind, versions = ?missing.versions, "optional Gateway API kind not installed; its routes are not served");
    }
    let gateway_api = |kind: Kind| {
        let at = WatchedVersion(versions.version_of(kind));
        let watched = !versions.missing_required.iter().any(|m| m.kind == kind);
        (at, watched)
    };
    spawn_kind::<Tenant>(
        &mut set,
        Some(Api::all(c.clone())),
        all.clone(),
        Kind::Tenant,
        |o| Object::Tenant(Box::new(o)),
        &context,
    );
    spawn_kind::<Namespace>(
        &mut set,
        Some(Api::all(c.clone())),
        all.clone(),
        Kind::Namespace,
        |o| Object::Namespace(Box::new(o)),
        &context,
    );
    let (at, watched) = gateway_api(Kind::GatewayClass);
    spawn_kind::<GatewayClass>(
        &mut set,
        watched.then(|| Api::all_with(c.clone(), &at)),
        all.clone(),
        Kind::GatewayClass,
        |o| Object::GatewayClass(Box::new(o)),
        &context,
    );
    let (at, watched) = gateway_api(Kind::Gateway);
    spawn_kind::<Gateway>(
        &mut set,
        watched.then(|| Api::all_with(c.clone(), &at)),
        all.clone(),
        Kind::Gateway,
        |o| Object::Gateway(Box::new(o)),
        &context,
    );
    let (at, watched) = gateway_api(Kind::HttpRoute);
    spawn_kind::<HttpRoute>(
        &mut set,
        watched.then(|| Api::all_with(c.clone(), &at)),
        all.clone(),
        Kind::HttpRoute,
        |o| Object::HttpRoute(Box::new(o)),
        &context,
    );
    let (at, watched) = gateway_api(Kind::GrpcRoute);
    spawn_kind::<GrpcRoute>(
        &mut set,
        watched.then(|| Api::all_with(c.clone(), &at)),
        all.clone(),
        Kind::GrpcRoute,
        |o| Object::GrpcRoute(Box::new(o)),
        &context,
    );
    let (at, watched) = gateway_api(Kind::TlsRoute);
    spawn_kind::<TlsRoute>(
        &mut set,
        watched.then(|| Api::all_with(c.clone(), &at)),
        all.clone(),
        Kind::TlsRoute,
        |o| Object::TlsRoute(Box::new(o)),
        &context,
    );
    let (at, watched) = gateway_api(Kind::TcpRoute);
    spawn_kind::<TcpRoute>(
        &mut set,
        watched.then(|| Api::all_with(c.clone(), &at)),
        all.clone(),
        Kind::TcpRoute,
        |o| Object::TcpRoute(Box::new(o)),
        &context,
    );
    let (at, watched) = gateway_api(Kind::ReferenceGrant);
    spawn_kind::<ReferenceGrant>(
        &mut set,
        watched.then(|| Api::all_with(c.clone(), &at)),
        all.clone(),
        Kind::ReferenceGrant,
        |o| Object::ReferenceGrant(Box::new(o)),
        &context,
    );
    spawn_secret_metadata(
        &mut set,
        Api::all(c.clone()),
        all.clone().fields(TLS_SECRET_SELECTOR),
        &context,
    );
    spawn_kind::<Service>(
        &mut set,
        Some(Api::all(c.clone())),
        all.clone(),
        Kind::Service,
        |o| Object::Service(Box::new(o)),
        &context,
    );
    spawn_kind::<EndpointSlice>(
        &mut set,
        Some(Api::all(c.clone())),
        all.clone(),
        Kind::EndpointSlice,
        |o| Object::EndpointSlice(Box::new(o)),
        &context,
    );
    let (at, watched) = gateway_api(Kind::ListenerSet);
    spawn_kind::<ListenerSet>(
        &mut set,
        watched.then(|| Api::all_with(c.clone(), &at)),
        all.clone(),
        Kind::ListenerSet,
        |o| Object::ListenerSet(Box::new(o)),
        &context,
    );
    let (at, watched) = gateway_api(Kind::BackendTlsPolicy);
    spawn_kind::<BackendTlsPolicy>(
        &mut set,
        watched.then(|| Api::all_with(c.clone(), &at)),
        all.clone(),
        Kind::BackendTlsPolicy,
        |o| Object::BackendTlsPolicy(Box::new(o)),
        &context,
    );
    spawn_kind::<ConfigMap>(
        &mut set,
        Some(Api::all(c)),
        all,
        Kind::ConfigMap,
        |o| Object::ConfigMap(Box::new(o)),
        &context,
    );
    set
}

/// Whether a watcher error says the kind is not served (its CRD is not installed).
fn kind_not_served(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::InitialListFailed(::kube::Error::Api(s)) if s.code == 404)
}

/// Turns a watcher event into a store event, reporting to `observe` the status the operator
/// writes as the object carries it (`None` once it is deleted) before that is stripped.
pub fn store_event<K>(
    kind: Kind,
    event: watcher::Event<K>,
    wrap: fn(K) -> Object,
    observe: &dyn Fn(StatusKey, Option<Value>),
) -> StoreEvent
where
    K: Resource,
{
    let cached = |o: K, deleted: bool| {
        let mut o = wrap(o);
        if let Some((key, status)) = o.owned_status() {
            observe(key, status.filter(|_| !deleted));
        }
        o.strip_owned_status();
        o
    };
    match event.modify(|o| strip_metadata(o.meta_mut())) {
        watcher::Event::Init => StoreEvent::Init(kind),
        watcher::Event::InitApply(o) => StoreEvent::InitApply(cached(o, false)),
        watcher::Event::InitDone => StoreEvent::InitDone(kind),
        watcher::Event::Apply(o) => StoreEvent::Apply(cached(o, false)),
        watcher::Event::Delete(o) => StoreEvent::Delete(cached(o, true)),
    }
}

/// Turns a watcher event of possibly undecodable objects into a store event (see
/// [`store_event`]); an object that cannot be decoded becomes [`StoreEvent::Unreadable`] (listed,
/// added or changed) or [`StoreEvent::UnreadableGone`] (deleted).
pub fn lenient_store_event<K>(
    kind: Kind,
    event: watcher::Event<Lenient<K>>,
    wrap: fn(K) -> Object,
    observe: &dyn Fn(StatusKey, Option<Value>),
) -> StoreEvent
where
    K: Resource,
{
    let typed = match event {
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
        watcher::Event::InitApply(o) => match o.into_result(kind) {
            Ok(o) => watcher::Event::InitApply(o),
            Err(u) => return StoreEvent::Unreadable(u),
        },
        watcher::Event::Apply(o) => match o.into_result(kind) {
            Ok(o) => watcher::Event::Apply(o),
            Err(u) => return StoreEvent::Unreadable(u),
        },
        watcher::Event::Delete(o) => match o.into_result(kind) {
            Ok(o) => watcher::Event::Delete(o),
            Err(u) => return StoreEvent::UnreadableGone(u),
        },
    };
    store_event(kind, typed, wrap, observe)
}

/// What a watcher does with a failure before the kind's first list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ListFailure {
    /// Not served (404): listed and empty.
    NotServed,
    /// Failing for at least [`WatchSettings::degrade_after`]: listed and empty, degraded.
    Degrade(String),
    /// Retried (with backoff) before deciding.
    Retry,
}

fn classify_first_failure(
    e: &watcher::Error,
    failing_since: Instant,
    settings: &WatchSettings,
) -> ListFailure {
    if kind_not_served(e) {
        ListFailure::NotServed
    } else if failing_since.elapsed() >= settings.degrade_after {
        ListFailure::Degrade(e.to_string())
    } else {
        ListFailure::Retry
    }
}

fn spawn_kind<K>(
    set: &mut JoinSet<()>,
    api: Option<Api<Lenient<K>>>,
    config: watcher::Config,
    kind: Kind,
    wrap: fn(K) -> Object,
    context: &WatchContext,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let Some(api) = api else {
        return;
    };
    let statuses = Arc::clone(&context.statuses);
    let convert = move |event| {
        let observe = |key, status| statuses.observe(key, status);
        lenient_store_event(kind, event, wrap, &observe)
    };
    spawn_watch(set, watcher(api, config), kind, convert, context);
}

/// A TLS Secret as its metadata shows it: no data (see [`super::secret_data`]).
fn secret_from_metadata(meta: PartialObjectMeta<Secret>) -> Object {
    Object::Secret(Box::new(Secret {
        metadata: meta.metadata,
        type_: Some(TLS_SECRET_TYPE.to_owned()),
        ..Secret::default()
    }))
}

/// Watches TLS Secrets by metadata only (`PartialObjectMetadata` lists and watches): the
/// operator never lists or caches the data of a Secret no Gateway references.
fn spawn_secret_metadata(
    set: &mut JoinSet<()>,
    api: Api<PartialObjectMeta<Secret>>,
    config: watcher::Config,
    context: &WatchContext,
) {
    let convert = |event| store_event(Kind::Secret, event, secret_from_metadata, &|_, _| {});
    spawn_watch(set, watcher(api, config), Kind::Secret, convert, context);
}

/// Runs one kind's watch stream (with the default backoff), turning its events into store events
/// with `convert`; a failing initial list is retried, or the kind counted as listed and empty
/// (not served, or degraded: see the module documentation).
fn spawn_watch<T, S>(
    set: &mut JoinSet<()>,
    stream: S,
    kind: Kind,
    convert: impl Fn(watcher::Event<T>) -> StoreEvent + Send + 'static,
    context: &WatchContext,
) where
    T: Resource + Clone + Send + 'static,
    S: futures::Stream<Item = watcher::Result<watcher::Event<T>>> + Send + 'static,
{
    let events = context.events.clone();
    let settings = context.settings.clone();
    set.spawn(async move {
        let mut stream = std::pin::pin!(stream.default_backoff());
        let mut listed = false;
        let mut failing_since: Option<Instant> = None;
        while let Some(item) = stream.next().await {
            let event = match item {
                Ok(event) => event,
                Err(e) if !listed => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    let Some(synthetic) = first_failure_events(kind, &e, since, &settings) else {
                        continue;
                    };
                    listed = true;
                    for synthetic in synthetic {
                        if events.send(synthetic).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                Err(e) if kind_not_served(&e) => {
                    tracing::debug!(%kind, "kind still not served; retrying with backoff");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(%kind, error = %e, "watch failed; retrying with backoff");
                    continue;
                }
            };
            if matches!(event, watcher::Event::InitDone) {
                listed = true;
            }
            let event = convert(event);
            if let StoreEvent::Unreadable(u) | StoreEvent::UnreadableGone(u) = &event {
                tracing::debug!(%kind, namespace = ?u.namespace, name = %u.name, error = %u.error, "object cannot be decoded");
            }
            if events.send(event).await.is_err() {
                return;
            }
        }
    });
}

/// The synthetic events that end a kind's failing initial list (`None`: retry first), logged.
fn first_failure_events(
    kind: Kind,
    e: &watcher::Error,
    failing_since: Instant,
    settings: &WatchSettings,
) -> Option<Vec<StoreEvent>> {
    match classify_first_failure(e, failing_since, settings) {
        ListFailure::Retry => {
            tracing::warn!(%kind, error = %e, "initial list failed; retrying with backoff");
            None
        }
        ListFailure::NotServed => {
            tracing::warn!(
                %kind,
                "kind not served by the API server (CRD not installed?); treating it as empty"
            );
            Some(vec![StoreEvent::Init(kind), StoreEvent::InitDone(kind)])
        }
        ListFailure::Degrade(reason) => {
            tracing::error!(%kind, error = %reason, "kind cannot be listed; serving every other kind without it (degraded) and retrying with backoff");
            Some(vec![
                StoreEvent::Init(kind),
                StoreEvent::InitDone(kind),
                StoreEvent::Degraded(kind, reason),
            ])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    #[test]
    fn watcher_events_become_stripped_store_events() {
        let service = Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("a".into()),
                annotations: Some(BTreeMap::from([(
                    "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
                    "{}".to_owned(),
                )])),
                managed_fields: Some(vec![Default::default()]),
                ..ObjectMeta::default()
            },
            ..Service::default()
        };
        let wrap: fn(Service) -> Object = |o| Object::Service(Box::new(o));
        match store_event(
            Kind::Service,
            watcher::Event::Apply(service.clone()),
            wrap,
            &|_, _| {},
        ) {
            StoreEvent::Apply(Object::Service(s)) => {
                assert!(s.metadata.annotations.is_none());
                assert!(s.metadata.managed_fields.is_none());
                assert_eq!(s.metadata.name.as_deref(), Some("web"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            store_event(
                Kind::Service,
                watcher::Event::<Service>::Init,
                wrap,
                &|_, _| {}
            ),
            StoreEvent::Init(Kind::Service)
        ));
        assert!(matches!(
            store_event(
                Kind::Service,
                watcher::Event::<Service>::InitDone,
                wrap,
                &|_, _| {}
            ),
            StoreEvent::InitDone(Kind::Service)
        ));
        assert!(matches!(
            store_event(
                Kind::Service,
                watcher::Event::InitApply(service.clone()),
                wrap,
                &|_, _| {}
            ),
            StoreEvent::InitApply(Object::Service(_))
        ));
        assert!(matches!(
            store_event(
                Kind::Service,
                watcher::Event::Delete(service),
                wrap,
                &|_, _| {}
            ),
            StoreEvent::Delete(Object::Service(_))
        ));
    }

    /// A route with a status entry of ours (holding `our_conditions`) and one of another
    /// controller.
    fn route_with_two_parents(our_conditions: Value) -> HttpRoute {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "app", "namespace": "a"},
            "spec": {"parentRefs": [{"name": "web"}]},
            "status": {"parents": [
                {"parentRef": {"name": "web"}, "controllerName": bulkhead_crds::CONTROLLER_NAME,
                 "conditions": our_conditions},
                {"parentRef": {"name": "other"}, "controllerName": "example.com/other",
                 "conditions": []}
            ]}
        }))
        .expect("route")
    }

    #[test]
    fn our_route_status_entries_are_not_cached_but_other_controllers_are() {
        let route = route_with_two_parents(serde_json::json!([]));
        let wrap: fn(HttpRoute) -> Object = |o| Object::HttpRoute(Box::new(o));
        let StoreEvent::Apply(Object::HttpRoute(cached)) = store_event(
            Kind::HttpRoute,
            watcher::Event::Apply(route.clone()),
            wrap,
            &|_, _| {},
        ) else {
            panic!("not an HTTPRoute apply");
        };
        let parents = &cached.status.as_ref().expect("status kept").parents;
        assert_eq!(parents.len(), 1);
        assert_eq!(parents[0].controller_name, "example.com/other");

        let mut only_ours = route;
        if let Some(status) = only_ours.status.as_mut() {
            status.parents.truncate(1);
        }
        let StoreEvent::Apply(Object::HttpRoute(cached)) = store_event(
            Kind::HttpRoute,
            watcher::Event::Apply(only_ours),
            wrap,
            &|_, _| {},
        ) else {
            panic!("not an HTTPRoute apply");
        };
        assert!(cached.status.is_none(), "nothing left to cache");
    }

    #[test]
    fn the_status_we_write_is_observed_before_it_is_stripped() {
        let route = route_with_two_parents(serde_json::json!([
            {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ]));
        let wrap: fn(HttpRoute) -> Object = |o| Object::HttpRoute(Box::new(o));
        let seen = std::sync::Mutex::new(Vec::new());
        let observe = |key: StatusKey, status: Option<Value>| {
            seen.lock().expect("lock").push((key, status));
        };
        store_event(
            Kind::HttpRoute,
            watcher::Event::Apply(route.clone()),
            wrap,
            &observe,
        );
        store_event(
            Kind::HttpRoute,
            watcher::Event::Delete(route.clone()),
            wrap,
            &observe,
        );
        let mut foreign_only = route;
        if let Some(status) = foreign_only.status.as_mut() {
            status.parents.remove(0);
        }
        store_event(
            Kind::HttpRoute,
            watcher::Event::Apply(foreign_only),
            wrap,
            &observe,
        );
        let seen = seen.into_inner().expect("lock");
        let key: StatusKey = (
            "gateway.networking.k8s.io/v1".into(),
            "HTTPRoute".into(),
            "a".into(),
            "app".into(),
        );
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|(k, _)| *k == key), "{seen:?}");
        let whole = seen[0].1.as_ref().expect("our entry is there");
        assert_eq!(
            whole["parents"].as_array().map(Vec::len),
            Some(2),
            "foreign entries too"
        );
        assert_eq!(
            whole["parents"][0]["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(seen[1].1, None, "deleted");
        assert_eq!(seen[2].1, None, "no entry of ours");

        let svc: fn(Service) -> Object = |o| Object::Service(Box::new(o));
        let calls = std::cell::Cell::new(0);
        store_event(
            Kind::Service,
            watcher::Event::Apply(Service::default()),
            svc,
            &|_, _| calls.set(calls.get() + 1),
        );
        assert_eq!(calls.get(), 0, "not a kind whose status we write");
    }

    use crate::kube::testing::{failure, query_param, respond_json, MockApi};

    fn watch_kind<K>(
        client: ::kube::Client,
        kind: Kind,
        wrap: fn(K) -> Object,
        settings: WatchSettings,
    ) -> (JoinSet<()>, mpsc::Receiver<StoreEvent>)
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let (tx, rx) = mpsc::channel(16);
        let mut set = JoinSet::new();
        let context = WatchContext {
            events: tx,
            statuses: Arc::new(StatusWriter::new(client.clone())),
            settings,
        };
        spawn_kind::<K>(
            &mut set,
            Some(Api::all(client)),
            watcher::Config::default(),
            kind,
            wrap,
            &context,
        );
        (set, rx)
    }

    /// On Gateway API v1.4, ReferenceGrants are listed at `v1beta1`, the version discovery chose,
    /// and decoded by the same type; a required kind the cluster lacks is reported degraded at
    /// once and never requested.
    #[tokio::test(start_paused = true)]
    async fn kinds_are_watched_at_the_discovered_version_and_missing_ones_degraded() {
        use super::super::discovery::choose;
        use std::collections::{BTreeMap, BTreeSet};
        let served: BTreeMap<String, BTreeSet<String>> = [
            ("v1", vec!["gatewayclasses", "gateways", "httproutes"]),
            ("v1beta1", vec!["referencegrants"]),
        ]
        .into_iter()
        .map(|(v, rs)| (v.to_owned(), rs.into_iter().map(str::to_owned).collect()))
        .collect();
        let versions = choose(&served);
        let (client, mut mock) = MockApi::pair();
        let (tx, mut rx) = mpsc::channel(64);
        let writer = Arc::new(StatusWriter::new(client.clone()));
        let mut set = spawn_watchers(&client, &tx, &writer, &WatchSettings::default(), &versions);
        drop(tx);
        let mut paths = BTreeSet::new();
        let mut degraded = Vec::new();
        let mut reference_grant = None;
        let mut pending = Vec::new();
        while reference_grant.is_none() || degraded.is_empty() {
            tokio::select! {
                request = mock.next_request() => {
                    let (request, send) = request;
                    let path = request.uri().path().to_owned();
                    paths.insert(path.clone());
                    if path.ends_with("/referencegrants") && query_param(&request, "watch").is_none() {
                        respond_json(send, 200, &serde_json::json!({
                            "apiVersion": "gateway.networking.k8s.io/v1beta1",
                            "kind": "ReferenceGrantList", "metadata": {"resourceVersion": "1"},
                            "items": [{
                                "apiVersion": "gateway.networking.k8s.io/v1beta1",
                                "kind": "ReferenceGrant",
                                "metadata": {"name": "allow", "namespace": "b"},
                                "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "a"}],
                                         "to": [{"group": "", "kind": "Service"}]}
                            }]
                        }));
                    }
                    // Every other request stays unanswered: the test reads only what it needs.
                    else { pending.push(send); }
                }
                Some(event) = rx.recv() => match event {
                    StoreEvent::InitApply(Object::ReferenceGrant(g)) => reference_grant = g.metadata.name,
                    StoreEvent::Degraded(kind, reason) => degraded.push((kind, reason)),
                    _ => {}
                },
            }
        }
        assert_eq!(reference_grant.as_deref(), Some("allow"));
        assert!(
            paths.contains("/apis/gateway.networking.k8s.io/v1beta1/referencegrants"),
            "{paths:?}"
        );
        assert!(
            !paths.iter().any(|p| p.contains("/v1/referencegrants")),
            "{paths:?}"
        );
        assert_eq!(degraded.len(), 1, "{degraded:?}");
        assert_eq!(degraded[0].0, Kind::GrpcRoute);
        assert!(degraded[0].1.contains("not served"), "{}", degraded[0].1);
        assert!(!paths.iter().any(|p| p.contains("grpcroutes")), "{paths:?}");
        set.abort_all();
    }

    fn tcp_route_watch(client: ::kube::Client) -> (JoinSet<()>, mpsc::Receiver<StoreEvent>) {
        watch_kind::<TcpRoute>(
            client,
            Kind::TcpRoute,
            |o| Object::TcpRoute(Box::new(o)),
            WatchSettings::default(),
        )
    }

    fn http_route(name: &str, rule: Value) -> Value {
        serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": "team-a", "resourceVersion": "3"},
            "spec": {"parentRefs": [{"name": "web"}], "rules": [rule]}
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_list_with_undecodable_routes_delivers_every_other_route() {
        let (client, mut mock) = MockApi::pair();
        let (mut set, mut rx) = watch_kind::<HttpRoute>(
            client,
            Kind::HttpRoute,
            |o| Object::HttpRoute(Box::new(o)),
            WatchSettings::default(),
        );
        let (request, send) = mock.next_request().await;
        assert_eq!(
            request.uri().path(),
            "/apis/gateway.networking.k8s.io/v1/httproutes"
        );
        let backend = serde_json::json!([{"name": "app", "port": 80}]);
        respond_json(
            send,
            200,
            &serde_json::json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRouteList",
                "metadata": {"resourceVersion": "7"},
                "items": [
                    http_route("first", serde_json::json!({"backendRefs": backend})),
                    http_route("auth", serde_json::json!({"backendRefs": backend, "filters": [
                        {"type": "ExternalAuth", "externalAuth": {"protocol": "HTTP",
                         "backendRef": {"name": "auth"}}}]})),
                    http_route("glob", serde_json::json!({"backendRefs": backend, "matches": [
                        {"path": {"type": "Glob", "value": "/a/*"}}]})),
                    http_route("last", serde_json::json!({"backendRefs": backend})),
                ]
            }),
        );
        let mut seen = Vec::new();
        let listed = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            loop {
                match rx.recv().await.expect("an event") {
                    StoreEvent::Init(_) => seen.push("init".to_owned()),
                    StoreEvent::InitApply(o) => {
                        seen.push(o.metadata().name.clone().unwrap_or_default());
                    }
                    StoreEvent::Unreadable(u) => {
                        assert_eq!(u.kind, Kind::HttpRoute);
                        assert_eq!(u.namespace.as_deref(), Some("team-a"));
                        seen.push(format!("unreadable {}", u.name));
                    }
                    StoreEvent::InitDone(_) => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
        })
        .await;
        assert!(listed.is_ok(), "the list fails as a whole: {seen:?}");
        assert_eq!(
            seen,
            [
                "init",
                "first",
                "unreadable auth",
                "unreadable glob",
                "last"
            ]
        );
        set.abort_all();
    }

    #[tokio::test(start_paused = true)]
    async fn a_forbidden_kind_is_degraded_and_counts_as_listed() {
        let (client, mut mock) = MockApi::pair();
        let (mut set, mut rx) = watch_kind::<TcpRoute>(
            client,
            Kind::TcpRoute,
            |o| Object::TcpRoute(Box::new(o)),
            WatchSettings {
                degrade_after: std::time::Duration::ZERO,
                ..WatchSettings::default()
            },
        );
        let server = tokio::spawn(async move {
            // Forbidden at every attempt.
            loop {
                let (_, send) = mock.next_request().await;
                respond_json(
                    send,
                    403,
                    &failure(403, "Forbidden", "tcproutes is forbidden: no RBAC"),
                );
            }
        });
        let degraded = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            loop {
                match rx.recv().await {
                    Some(StoreEvent::Degraded(kind, reason)) => break (kind, reason),
                    Some(StoreEvent::Init(_) | StoreEvent::InitDone(_)) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
        })
        .await
        .expect("the kind is degraded instead of retried forever");
        assert_eq!(degraded.0, Kind::TcpRoute);
        assert!(degraded.1.contains("forbidden"), "{}", degraded.1);
        set.abort_all();
        server.abort();
    }

    #[test]
    fn a_short_failure_is_retried_before_the_kind_is_degraded() {
        let forbidden = watcher::Error::InitialListFailed(::kube::Error::Api(Box::new(
            serde_json::from_value(failure(403, "Forbidden", "no")).expect("status"),
        )));
        let settings = WatchSettings::default();
        assert_eq!(
            classify_first_failure(&forbidden, Instant::now(), &settings),
            ListFailure::Retry
        );
        let long_ago = Instant::now()
            .checked_sub(DEFAULT_DEGRADE_AFTER)
            .expect("clock");
        assert!(matches!(
            classify_first_failure(&forbidden, long_ago, &settings),
            ListFailure::Degrade(_)
        ));
        let not_found = watcher::Error::InitialListFailed(::kube::Error::Api(Box::new(
            serde_json::from_value(failure(404, "NotFound", "no")).expect("status"),
        )));
        assert_eq!(
            classify_first_failure(&not_found, Instant::now(), &settings),
            ListFailure::NotServed
        );
    }

    #[tokio::test]
    async fn an_initial_list_becomes_init_apply_done() {
        let (client, mut mock) = MockApi::pair();
        let (mut set, mut rx) = tcp_route_watch(client);
        let (request, send) = mock.next_request().await;
        assert_eq!(request.method(), http::Method::GET);
        assert_eq!(
            request.uri().path(),
            "/apis/gateway.networking.k8s.io/v1alpha2/tcproutes"
        );
        assert!(query_param(&request, "watch").is_none(), "a list first");
        respond_json(
            send,
            200,
            &serde_json::json!({
                "apiVersion": "gateway.networking.k8s.io/v1alpha2",
                "kind": "TCPRouteList",
                "metadata": {"resourceVersion": "7"},
                "items": [{
                    "apiVersion": "gateway.networking.k8s.io/v1alpha2",
                    "kind": "TCPRoute",
                    "metadata": {"name": "db", "namespace": "team-a", "resourceVersion": "6",
                                 "managedFields": [{"manager": "kubectl"}]},
                    "spec": {"rules": [{"backendRefs": [{"name": "db", "port": 5432}]}]}
                }]
            }),
        );
        assert!(matches!(
            rx.recv().await,
            Some(StoreEvent::Init(Kind::TcpRoute))
        ));
        match rx.recv().await {
            Some(StoreEvent::InitApply(Object::TcpRoute(r))) => {
                assert_eq!(r.metadata.name.as_deref(), Some("db"));
                assert!(r.metadata.managed_fields.is_none(), "stripped");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            rx.recv().await,
            Some(StoreEvent::InitDone(Kind::TcpRoute))
        ));
        set.abort_all();
    }

    #[tokio::test]
    async fn a_kind_without_its_crd_counts_as_listed_and_empty() {
        let (client, mut mock) = MockApi::pair();
        let (mut set, mut rx) = tcp_route_watch(client);
        let (_, send) = mock.next_request().await;
        respond_json(
            send,
            404,
            &failure(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
        // The watcher announces its list (`Init`) before making it; the synthetic list follows.
        loop {
            match rx.recv().await {
                Some(StoreEvent::Init(Kind::TcpRoute)) => {}
                Some(StoreEvent::InitDone(Kind::TcpRoute)) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        set.abort_all();
    }

    /// TLS Secrets are listed and watched as metadata only: what the watch delivers carries no
    /// data, so no private key of an unreferenced Secret is ever received or cached.
    #[tokio::test]
    async fn secrets_are_watched_by_metadata_only() {
        let (client, mut mock) = MockApi::pair();
        let (tx, mut rx) = mpsc::channel(16);
        let mut set = JoinSet::new();
        let context = WatchContext {
            events: tx,
            statuses: Arc::new(StatusWriter::new(client.clone())),
            settings: WatchSettings::default(),
        };
        spawn_secret_metadata(
            &mut set,
            Api::all(client),
            watcher::Config::default().fields(TLS_SECRET_SELECTOR),
            &context,
        );
        let (request, send) = mock.next_request().await;
        assert_eq!(request.uri().path(), "/api/v1/secrets");
        assert_eq!(
            query_param(&request, "fieldSelector").as_deref(),
            Some("type%3Dkubernetes.io%2Ftls")
        );
        let accept = request
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            accept.contains("as=PartialObjectMetadataList"),
            "{accept:?}"
        );
        respond_json(
            send,
            200,
            &serde_json::json!({
                "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                "metadata": {"resourceVersion": "10"},
                "items": [{"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                           "metadata": {"name": "unused", "namespace": "team-a",
                                        "resourceVersion": "9"}}]
            }),
        );
        assert!(matches!(
            rx.recv().await,
            Some(StoreEvent::Init(Kind::Secret))
        ));
        match rx.recv().await {
            Some(StoreEvent::InitApply(Object::Secret(s))) => {
                assert_eq!(s.metadata.name.as_deref(), Some("unused"));
                assert_eq!(s.metadata.resource_version.as_deref(), Some("9"));
                assert!(s.data.is_none() && s.string_data.is_none(), "no data");
                assert_eq!(s.type_.as_deref(), Some(TLS_SECRET_TYPE));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            rx.recv().await,
            Some(StoreEvent::InitDone(Kind::Secret))
        ));
        set.abort_all();
    }

    #[test]
    fn rbac_grants_list_and_watch_on_every_watched_kind() {
        use crate::rbac::{allows, Scope};
        let gw = "gateway.networking.k8s.io";
        let resources = [
            ("bulkhead.dev", "tenants"),
            ("", "namespaces"),
            (gw, "gatewayclasses"),
            (gw, "gateways"),
            (gw, "httproutes"),
            (gw, "grpcroutes"),
            (gw, "tlsroutes"),
            (gw, "tcproutes"),
            (gw, "referencegrants"),
            ("", "secrets"),
            ("", "services"),
            ("discovery.k8s.io", "endpointslices"),
            ("", "configmaps"),
            (gw, "listenersets"),
            (gw, "backendtlspolicies"),
        ];
        assert_eq!(resources.len(), WATCHED_KINDS.len());
        for (group, resource) in resources {
            for verb in ["list", "watch"] {
                assert!(
                    allows(group, resource, verb, Scope::Cluster),
                    "{verb} {group}/{resource}"
                );
            }
        }
    }

    #[test]
    fn watched_kinds_are_the_object_kinds() {
        let mut kinds = WATCHED_KINDS.to_vec();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), Kind::ALL.len());
    }
}
