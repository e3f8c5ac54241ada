//! Writing statuses to Kubernetes: server-side apply of the `status` subresource (field manager
//! [`FIELD_MANAGER`], forced) — route statuses, whose `parents` list other controllers share, by
//! read-merge-replace with optimistic concurrency instead ([`super::route_status`]) — only when an object's status differs from what the object is known
//! to carry: what this process last wrote, or what the watchers last saw on it
//! ([`StatusWriter::observe`]). Transition times come from the same knowledge: a condition whose
//! status the object already carries keeps the object's `lastTransitionTime`, so a restarted
//! operator or a new leader neither re-writes every status nor resets every transition time.
//!
//! Tenant statuses have two sources: the translator (namespace, hostnames, readiness) and the
//! onboarding reconciler (its children could not be applied). An onboarding failure replaces
//! the translator's `Accepted` condition ([`overlay_onboarding`]); both writers go through one
//! [`StatusWriter`], so they never undo each other's writes.

use super::control::Statuses;
use super::route_status::{replace_route_status, replace_shared_status};
use super::FIELD_MANAGER;
use crate::conditions::ACCEPTED;
use crate::index::Kind;
use crate::objects::typed_status;
use crate::status::{
    digest, restamp, transition_times, ConditionTime, ObjectMeta, ObjectStatus, FALSE,
};
use ::kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use ::kube::Client;
use imbl::ordmap::DiffItem;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

pub use crate::objects::StatusKey;

/// The key of a status.
pub fn status_key(s: &ObjectStatus) -> StatusKey {
    (
        s.api_version.clone(),
        s.kind.clone(),
        s.metadata.namespace.clone().unwrap_or_default(),
        s.metadata.name.clone(),
    )
}

/// Why a Tenant's children could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnboardingFailure {
    /// Condition reason (CamelCase).
    pub reason: String,
    /// Condition message.
    pub message: String,
}

/// The API resource of a kind whose status the operator writes; `None` for any other kind.
pub fn api_resource(api_version: &str, kind: &str) -> Option<ApiResource> {
    let plural = match kind {
        "Tenant" => "tenants",
        "GatewayClass" => "gatewayclasses",
        "Gateway" => "gateways",
        "HTTPRoute" => "httproutes",
        "BackendTLSPolicy" => "backendtlspolicies",
        "GRPCRoute" => "grpcroutes",
        "TLSRoute" => "tlsroutes",
        "TCPRoute" => "tcproutes",
        "ListenerSet" => "listenersets",
        _ => return None,
    };
    let (group, version) = api_version.split_once('/')?;
    Some(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        plural,
    ))
}

/// Replaces the `Accepted` condition of a Tenant status with `False` / the failure. The
/// transition time is kept from `previous` (the status last written) when that already said the
/// same, else `now`.
pub fn overlay_onboarding(
    status: &mut Value,
    failure: &OnboardingFailure,
    previous: Option<&Value>,
    now: &Time,
) {
    let old = previous
        .and_then(|p| p.get("conditions"))
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == ACCEPTED));
    let time = match old {
        Some(c) if c["status"] == FALSE && c["reason"] == failure.reason.as_str() => {
            c["lastTransitionTime"].clone()
        }
        _ => serde_json::to_value(now).unwrap_or(Value::Null),
    };
    if !status.is_object() {
        *status = json!({});
    }
    let generation = status.get("observedGeneration").cloned();
    let mut condition = json!({
        "type": ACCEPTED,
        "status": FALSE,
        "reason": failure.reason,
        "message": failure.message,
        "lastTransitionTime": time,
    });
    if let Some(g) = generation.filter(|g| !g.is_null()) {
        condition["observedGeneration"] = g;
    }
    let conditions = status
        .as_object_mut()
        .map(|m| m.entry("conditions").or_insert_with(|| json!([])));
    if let Some(Value::Array(list)) = conditions {
        match list.iter_mut().find(|c| c["type"] == ACCEPTED) {
            Some(c) => *c = condition,
            None => list.insert(0, condition),
        }
    }
}

/// What an object is known to carry (written, or observed): Tenant statuses whole (onboarding
/// failures are overlaid on them), others as a digest, so the writer does not hold a second copy
/// of every status. Both are taken of the typed form ([`typed_status`]), in which a rendered and
/// an observed status compare equal when they say the same.
#[derive(Debug, Clone, PartialEq)]
enum Written {
    Whole(Value),
    Digest(u64),
}

impl Written {
    fn of(kind: &str, v: &Value) -> Self {
        Self::of_typed(kind, typed_status(kind, v).unwrap_or_else(|| v.clone()))
    }

    /// [`Self::of`] a status already in typed form (as the watchers observe it).
    fn of_typed(kind: &str, typed: Value) -> Self {
        if kind == "Tenant" {
            Self::Whole(typed)
        } else {
            Self::Digest(digest(&typed))
        }
    }

    fn matches(&self, kind: &str, v: &Value) -> bool {
        let typed = typed_status(kind, v).unwrap_or_else(|| v.clone());
        match self {
            Self::Whole(w) => *w == typed,
            Self::Digest(d) => *d == digest(&typed),
        }
    }

    fn value(&self) -> Option<&Value> {
        match self {
            Self::Whole(w) => Some(w),
            Self::Digest(_) => None,
        }
    }
}

/// Writes statuses, remembering what it wrote. Shared (`Arc`) by the status task and the
/// onboarding reconciler.
pub struct StatusWriter {
    client: Client,
    written: Mutex<HashMap<StatusKey, Written>>,
    /// The conditions' transition times the objects are known to carry.
    times: Mutex<HashMap<StatusKey, Vec<ConditionTime>>>,
    failures: Mutex<BTreeMap<String, OnboardingFailure>>,
    compiled_tenants: Mutex<BTreeMap<String, ObjectStatus>>,
    /// The partitions last synced without failure (compared by pointer).
    synced: Mutex<Statuses>,
    /// Kind → the Gateway API version the cluster serves it at (API discovery); statuses of a
    /// kind not listed are written at the version they name.
    served: BTreeMap<Kind, &'static str>,
}

impl std::fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWriter").finish_non_exhaustive()
    }
}

/// What one [`StatusWriter::sync`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Statuses written.
    pub written: usize,
    /// Statuses that could not be written (retried by the next sync).
    pub failed: usize,
}

impl StatusWriter {
    /// A writer that has written nothing yet.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            written: Mutex::new(HashMap::new()),
            times: Mutex::new(HashMap::new()),
            failures: Mutex::new(BTreeMap::new()),
            compiled_tenants: Mutex::new(BTreeMap::new()),
            synced: Mutex::new(Statuses::new()),
            served: BTreeMap::new(),
        }
    }

    /// Writes each Gateway API kind's status at the version the cluster serves it at (a v1.4
    /// cluster serves TLSRoute at `v1alpha2`, where a `v1` URL would answer 404).
    pub fn with_versions(mut self, versions: &super::discovery::ServedVersions) -> Self {
        self.served = versions.chosen.clone();
        self
    }

    /// The API resource `s` is written to: its kind at the served version.
    fn resource_of(&self, s: &ObjectStatus) -> Option<ApiResource> {
        match (
            Kind::parse(&s.kind).and_then(|k| self.served.get(&k)),
            s.api_version.split_once('/'),
        ) {
            (Some(version), Some((group, _))) => {
                api_resource(&format!("{group}/{version}"), &s.kind)
            }
            _ => api_resource(&s.api_version, &s.kind),
        }
    }

    /// Records the status an object carries in the cluster, as a watcher saw it, in the typed
    /// form [`crate::objects::Object::owned_status`] gives (`None`: it carries none of ours, or
    /// is gone): the next write of the object compares with it and keeps its transition times.
    pub fn observe(&self, key: StatusKey, status: Option<Value>) {
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        let mut times = self.times.lock().unwrap_or_else(PoisonError::into_inner);
        match status {
            Some(v) => {
                times.insert(key.clone(), transition_times(&v));
                written.insert(key.clone(), Written::of_typed(&key.1, v));
            }
            None => {
                times.remove(&key);
                written.remove(&key);
            }
        }
    }

    /// Records (or clears, with `None`) a Tenant's onboarding failure; returns whether it changed.
    pub fn set_failure(&self, tenant: &str, failure: Option<OnboardingFailure>) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        match failure {
            Some(f) => failures.insert(tenant.to_owned(), f.clone()) != Some(f),
            None => failures.remove(tenant).is_some(),
        }
    }

    /// The statuses to write now: `current` with onboarding failures overlaid on Tenants and
    /// the transition times the objects carry (a condition whose status changed gets `now`),
    /// minus those equal to what the objects carry.
    pub fn pending(&self, current: &[ObjectStatus], now: &Time) -> Vec<ObjectStatus> {
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let now_value = serde_json::to_value(now).unwrap_or(Value::Null);
        let written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        let times = self.times.lock().unwrap_or_else(PoisonError::into_inner);
        current
            .iter()
            .filter_map(|s| {
                let key = status_key(s);
                let mut s = s.clone();
                if s.kind == "Tenant" {
                    if let Some(f) = failures.get(&s.metadata.name) {
                        overlay_onboarding(
                            &mut s.status,
                            f,
                            written.get(&key).and_then(Written::value),
                            now,
                        );
                    }
                }
                if let Some(known) = times.get(&key) {
                    restamp(&mut s.status, known, &now_value, None);
                }
                (!written
                    .get(&key)
                    .is_some_and(|w| w.matches(&s.kind, &s.status)))
                .then_some(s)
            })
            .collect()
    }

    /// Takes `current` as the complete list of statuses: remembers the translator's Tenant
    /// statuses (for [`Self::write_tenant`]) and forgets what was written for objects no longer
    /// listed, so they are written again if they come back.
    fn replace_current(&self, current: &[ObjectStatus]) {
        *self
            .compiled_tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = current
            .iter()
            .filter(|s| s.kind == "Tenant")
            .map(|s| (s.metadata.name.clone(), s.clone()))
            .collect();
        let keys: HashSet<StatusKey> = current.iter().map(status_key).collect();
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k, _| keys.contains(k));
        self.times
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k, _| keys.contains(k));
    }

    /// Writes every status of `current` that changed (see [`Self::pending`]).
    pub async fn sync(&self, current: &[ObjectStatus]) -> SyncReport {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mut report = SyncReport::default();
        self.replace_current(current);
        for s in self.pending(current, &now) {
            match self.write(&s).await {
                Ok(()) => report.written += 1,
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(kind = %s.kind, namespace = ?s.metadata.namespace, name = %s.metadata.name, error = %e, "cannot write status");
                }
            }
        }
        report
    }

    /// Writes the statuses of the partitions that changed since the last call (compared by
    /// pointer, so an unchanged partition costs nothing): every status of such a partition that
    /// differs from what was written, forgetting objects no longer listed. A partition with a
    /// failed write is retried whole by the next call.
    pub async fn sync_partitions(&self, current: &Statuses) -> SyncReport {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mut report = SyncReport::default();
        let previous =
            std::mem::take(&mut *self.synced.lock().unwrap_or_else(PoisonError::into_inner));
        // Both maps share the subtrees no change touched: the diff visits only the rest.
        let mut synced = current.clone();
        let mut stale: HashSet<StatusKey> = HashSet::new();
        let mut changed: Vec<(&String, Vec<ObjectStatus>)> = Vec::new();
        for item in previous.diff(current) {
            match item {
                DiffItem::Add(name, new) => changed.push((name, new.unpack())),
                DiffItem::Update {
                    old: (_, old),
                    new: (name, new),
                } => {
                    stale.extend(old.records().map(status_key));
                    changed.push((name, new.unpack()));
                }
                DiffItem::Remove(_, old) => stale.extend(old.records().map(status_key)),
            }
        }
        {
            let mut tenants = self
                .compiled_tenants
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for (_, statuses) in &changed {
                for s in statuses {
                    stale.remove(&status_key(s));
                    if s.kind == "Tenant" {
                        tenants.insert(s.metadata.name.clone(), s.clone());
                    }
                }
            }
            let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
            let mut times = self.times.lock().unwrap_or_else(PoisonError::into_inner);
            for key in &stale {
                written.remove(key);
                times.remove(key);
                if key.1 == "Tenant" {
                    tenants.remove(&key.3);
                }
            }
        }
        for (name, statuses) in changed {
            let mut ok = true;
            for s in self.pending(&statuses, &now) {
                match self.write(&s).await {
                    Ok(()) => report.written += 1,
                    Err(e) => {
                        ok = false;
                        report.failed += 1;
                        tracing::warn!(kind = %s.kind, namespace = ?s.metadata.namespace, name = %s.metadata.name, error = %e, "cannot write status");
                    }
                }
            }
            if !ok {
                // Not synced: the next call sees it as new and writes it again.
                synced.remove(name);
            }
        }
        *self.synced.lock().unwrap_or_else(PoisonError::into_inner) = synced;
        report
    }

    /// Writes the status of one Tenant now: the translator's last status for it (if any) with
    /// its onboarding failure overlaid, unless that was already written.
    pub async fn write_tenant(&self, tenant: &str) -> Result<(), ::kube::Error> {
        let base = self
            .compiled_tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned()
            .unwrap_or_else(|| ObjectStatus {
                api_version: "bulkhead.dev/v1alpha1".into(),
                kind: "Tenant".into(),
                metadata: ObjectMeta {
                    namespace: None,
                    name: tenant.to_owned(),
                },
                status: json!({}),
                tenant: None,
            });
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        match self.pending(std::slice::from_ref(&base), &now).pop() {
            Some(s) => self.write(&s).await,
            None => Ok(()),
        }
    }

    /// Writes one status (unconditionally: server-side apply, or for routes and BackendTLSPolicies
    /// read-merge-replace)
    /// and remembers it.
    pub async fn write(&self, s: &ObjectStatus) -> Result<(), ::kube::Error> {
        let key = status_key(s);
        let Some(resource) = self.resource_of(s) else {
            tracing::debug!(kind = %s.kind, "no status subresource written for this kind");
            return Ok(());
        };
        let api: Api<DynamicObject> = match &s.metadata.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        let kind = Kind::parse(&s.kind);
        let result = if kind.is_some_and(Kind::is_route) {
            replace_route_status(&api, &s.metadata.name, &s.status).await
        } else if kind == Some(Kind::BackendTlsPolicy) {
            // `status.ancestors` is shared with other controllers, as routes' `parents` are.
            replace_shared_status(&api, &s.metadata.name, &s.status, "ancestors").await
        } else {
            let body = json!({
                "apiVersion": resource.api_version,
                "kind": s.kind,
                "status": s.status,
            });
            let params = PatchParams::apply(FIELD_MANAGER).force();
            api.patch_status(&s.metadata.name, &params, &Patch::Apply(&body))
                .await
                .map(|_| ())
        };
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(_) => {
                self.times
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key.clone(), transition_times(&s.status));
                written.insert(key, Written::of(&s.kind, &s.status));
                Ok(())
            }
            // The object is gone: there is nothing to write, and retrying cannot help.
            Err(::kube::Error::Api(e)) if e.code == 404 => {
                written.remove(&key);
                tracing::debug!(kind = %s.kind, name = %s.metadata.name, "object gone; status not written");
                Ok(())
            }
            Err(e) => {
                written.remove(&key);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::testing::{failure, json_body, query_param, respond_json, MockApi};

    fn tenant_status(name: &str, accepted: bool) -> ObjectStatus {
        ObjectStatus {
            api_version: "bulkhead.dev/v1alpha1".into(),
            kind: "Tenant".into(),
            metadata: ObjectMeta {
                namespace: None,
                name: name.into(),
            },
            status: json!({
                "observedGeneration": 3,
                "conditions": [
                    {"type": "Accepted", "status": if accepted {"True"} else {"False"},
                     "reason": "Accepted", "message": "ok", "lastTransitionTime": "2025-01-01T00:00:00Z"},
                    {"type": "Ready", "status": "False", "reason": "Pending", "message": "wait",
                     "lastTransitionTime": "2025-01-01T00:00:00Z"}
                ]
            }),
            tenant: Some(name.into()),
        }
    }

    fn route_status(name: &str, reason: &str) -> ObjectStatus {
        ObjectStatus {
            api_version: "gateway.networking.k8s.io/v1".into(),
            kind: "HTTPRoute".into(),
            metadata: ObjectMeta {
                namespace: Some("team-a".into()),
                name: name.into(),
            },
            status: json!({"parents": [{"controllerName": "bulkhead.dev/gateway-controller",
                                         "conditions": [{"type": "Accepted", "reason": reason}]}]}),
            tenant: None,
        }
    }

    fn gateway_status(name: &str, reason: &str) -> ObjectStatus {
        ObjectStatus {
            kind: "Gateway".into(),
            status: json!({"conditions": [{"type": "Accepted", "reason": reason}]}),
            ..route_status(name, reason)
        }
    }

    fn now() -> Time {
        Time("2026-01-01T00:00:00Z".parse().expect("time"))
    }

    /// On a Gateway API v1.4 experimental cluster TLSRoute is served at `v1alpha2` only: its
    /// status is written there, not at the `v1` the translator names.
    #[tokio::test]
    async fn statuses_are_written_at_the_served_version() {
        use crate::kube::discovery::ServedVersions;
        let (client, mut mock) = MockApi::pair();
        let mut versions = ServedVersions::newest();
        versions.chosen.insert(Kind::TlsRoute, "v1alpha2");
        let writer = StatusWriter::new(client).with_versions(&versions);
        let status = ObjectStatus {
            api_version: "gateway.networking.k8s.io/v1".into(),
            kind: "TLSRoute".into(),
            metadata: ObjectMeta {
                namespace: Some("team-a".into()),
                name: "passthrough".into(),
            },
            status: json!({"parents": []}),
            tenant: None,
        };
        let serve = async {
            let (request, send) = mock.next_request().await;
            assert_eq!(
                request.uri().path(),
                "/apis/gateway.networking.k8s.io/v1alpha2/namespaces/team-a/tlsroutes/passthrough"
            );
            respond_json(send, 404, &failure(404, "NotFound", "gone"));
        };
        let (written, ()) = tokio::join!(writer.write(&status), serve);
        written.expect("a route that is gone needs no status");
    }

    #[test]
    fn api_resources_of_status_kinds() {
        let r = api_resource("gateway.networking.k8s.io/v1", "HTTPRoute").expect("known");
        assert_eq!(r.plural, "httproutes");
        assert_eq!(r.group, "gateway.networking.k8s.io");
        assert_eq!(r.version, "v1");
        let t = api_resource("bulkhead.dev/v1alpha1", "Tenant").expect("known");
        assert_eq!(t.plural, "tenants");
        assert!(api_resource("v1", "Service").is_none());
        assert!(api_resource("v1", "Tenant").is_none(), "no group: not ours");
    }

    #[test]
    fn overlay_replaces_accepted_and_keeps_time_while_unchanged() {
        let failure = OnboardingFailure {
            reason: "ReservedNamespace".into(),
            message: "spec.namespace \"kube-system\" is reserved".into(),
        };
        let mut s = tenant_status("acme", true).status;
        overlay_onboarding(&mut s, &failure, None, &now());
        let accepted = &s["conditions"][0];
        assert_eq!(accepted["type"], "Accepted");
        assert_eq!(accepted["status"], "False");
        assert_eq!(accepted["reason"], "ReservedNamespace");
        assert_eq!(accepted["observedGeneration"], 3);
        assert_eq!(accepted["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert_eq!(s["conditions"][1]["type"], "Ready", "other conditions kept");

        let later = Time("2026-02-01T00:00:00Z".parse().expect("time"));
        let mut again = tenant_status("acme", true).status;
        overlay_onboarding(&mut again, &failure, Some(&s), &later);
        assert_eq!(again, s, "same failure, same status: nothing to write");

        let mut empty = json!({});
        overlay_onboarding(&mut empty, &failure, None, &now());
        assert_eq!(empty["conditions"][0]["reason"], "ReservedNamespace");
    }

    #[tokio::test]
    async fn only_changed_statuses_are_written() {
        let (client, mut mock) = MockApi::pair();
        let writer = StatusWriter::new(client);
        let first = vec![
            tenant_status("acme", true),
            gateway_status("web", "Accepted"),
        ];
        assert_eq!(writer.pending(&first, &now()).len(), 2);

        // Write the Gateway; the API server answers with the object.
        let route = first[1].clone();
        let serve = async {
            let (request, send) = mock.next_request().await;
            assert_eq!(request.method(), http::Method::PATCH);
            assert_eq!(
                request.uri().path(),
                "/apis/gateway.networking.k8s.io/v1/namespaces/team-a/gateways/web/status"
            );
            assert_eq!(
                query_param(&request, "fieldManager").as_deref(),
                Some(FIELD_MANAGER)
            );
            assert_eq!(query_param(&request, "force").as_deref(), Some("true"));
            assert_eq!(
                request
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok()),
                Some("application/apply-patch+yaml")
            );
            let body = json_body(request).await;
            assert_eq!(body["kind"], "Gateway");
            assert_eq!(body["status"], route.status);
            let mut answer = body.clone();
            answer["metadata"] = json!({"name": "web", "namespace": "team-a"});
            respond_json(send, 200, &answer);
        };
        let (written, ()) = tokio::join!(writer.write(&route), serve);
        written.expect("written");

        let pending = writer.pending(&first, &now());
        assert_eq!(pending.len(), 1, "the route is unchanged");
        assert_eq!(pending[0].kind, "Tenant");

        let changed = vec![
            tenant_status("acme", true),
            gateway_status("web", "NoMatch"),
        ];
        assert_eq!(writer.pending(&changed, &now()).len(), 2);
    }

    fn key(s: &ObjectStatus) -> StatusKey {
        status_key(s)
    }

    #[tokio::test]
    async fn a_status_the_object_already_carries_is_not_written_again() {
        // A new leader (or a restarted operator) renders with its own clock; the watchers saw
        // what the object carries.
        let (client, _mock) = MockApi::pair();
        let writer = StatusWriter::new(client);
        let carried = tenant_status("acme", true);
        let mut rendered = carried.clone();
        for c in rendered.status["conditions"]
            .as_array_mut()
            .expect("conditions")
        {
            c["lastTransitionTime"] = json!("2026-03-03T00:00:00Z");
        }
        assert_eq!(
            writer
                .pending(std::slice::from_ref(&rendered), &now())
                .len(),
            1
        );
        writer.observe(key(&carried), Some(carried.status.clone()));
        assert!(
            writer
                .pending(std::slice::from_ref(&rendered), &now())
                .is_empty(),
            "same conditions: the carried times are kept and nothing is written"
        );

        // Ready turns True: only that condition gets a new time.
        rendered.status["conditions"][1]["status"] = json!("True");
        let pending = writer.pending(std::slice::from_ref(&rendered), &now());
        assert_eq!(pending.len(), 1);
        let conditions = &pending[0].status["conditions"];
        assert_eq!(conditions[0]["lastTransitionTime"], "2025-01-01T00:00:00Z");
        assert_eq!(conditions[1]["lastTransitionTime"], "2026-01-01T00:00:00Z");

        // Gone (or carrying none of ours): written again, with the rendered times.
        writer.observe(key(&carried), None);
        let pending = writer.pending(std::slice::from_ref(&rendered), &now());
        assert_eq!(pending.len(), 1);
        assert_eq!(
            pending[0].status["conditions"][0]["lastTransitionTime"],
            "2026-03-03T00:00:00Z"
        );
    }

    #[test]
    fn observed_and_rendered_statuses_have_the_same_keys() {
        // The watchers key what they observe by the typed object's apiVersion; the translator
        // renders statuses with its own: they must agree for every kind, or nothing matches.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/translator");
        let mut rendered = std::collections::BTreeMap::new();
        let mut observed = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("testdata") {
            let path = entry.expect("entry").path();
            let name = path.to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if name.ends_with(".out.yaml") {
                let golden: Value = serde_yaml::from_str(&text).expect("yaml");
                for s in golden["statuses"].as_array().into_iter().flatten() {
                    rendered.insert(
                        s["kind"].as_str().unwrap_or_default().to_owned(),
                        s["apiVersion"].as_str().unwrap_or_default().to_owned(),
                    );
                }
            } else if name.ends_with(".in.yaml") {
                let (objects, _) = crate::objects::parse_documents(&path, &text);
                observed.extend(
                    objects
                        .iter()
                        .filter_map(|o| o.owned_status())
                        .map(|(k, _)| k),
                );
            }
        }
        let mut kinds = std::collections::BTreeSet::new();
        for (api_version, kind, _, _) in &observed {
            assert_eq!(rendered.get(kind), Some(api_version), "{kind}");
            kinds.insert(kind.as_str());
        }
        assert!(kinds.len() >= 6, "kinds covered: {kinds:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_leader_writes_nothing_the_objects_already_carry() {
        // The old leader wrote every status of a golden world at `now()`; the watchers of the
        // new leader saw them. The new leader renders the same world with its own clock.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/translator/01-two-tenants-basic.out.yaml");
        let golden: Value =
            serde_yaml::from_str(&std::fs::read_to_string(path).expect("read")).expect("yaml");
        let compiled: Vec<ObjectStatus> =
            serde_json::from_value(golden["statuses"].clone()).expect("statuses");
        assert!(compiled.len() > 5, "a world with several objects");
        let mut carried = compiled.clone();
        crate::status::stamp_transitions(&mut carried, &[], &now());

        let (client, _mock) = MockApi::pair();
        let writer = StatusWriter::new(client);
        for s in &carried {
            writer.observe(status_key(s), typed_status(&s.kind, &s.status));
        }
        let later = Time("2026-06-01T00:00:00Z".parse().expect("time"));
        let mut rendered = compiled;
        crate::status::stamp_transitions(&mut rendered, &[], &later);
        let partitions = Statuses::unit(
            "acme".to_owned(),
            std::sync::Arc::new(crate::compiler::PackedPartition::pack(rendered)),
        );
        // A write would wait for the mock API forever: the timeout turns it into a failure.
        let report = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            writer.sync_partitions(&partitions),
        )
        .await
        .expect("no status written");
        assert_eq!(report, SyncReport::default());
    }

    #[test]
    fn every_rendered_status_reads_back_unchanged_through_its_typed_status() {
        // The comparison with observed statuses goes through the typed statuses: they must hold
        // everything the translator renders, for every kind.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/translator");
        let mut kinds = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(&dir).expect("testdata") {
            let path = entry.expect("entry").path();
            if !path.to_string_lossy().ends_with(".out.yaml") {
                continue;
            }
            let golden: Value =
                serde_yaml::from_str(&std::fs::read_to_string(&path).expect("read")).expect("yaml");
            for s in golden["statuses"].as_array().into_iter().flatten() {
                let kind = s["kind"].as_str().expect("kind");
                let typed = typed_status(kind, &s["status"]);
                assert_eq!(
                    typed.as_ref(),
                    Some(&s["status"]),
                    "{kind} {} in {}",
                    s["metadata"],
                    path.display()
                );
                kinds.insert(kind.to_owned());
            }
        }
        let status_kinds = [Kind::Tenant, Kind::GatewayClass, Kind::Gateway];
        for kind in status_kinds.into_iter().chain(Kind::ROUTES) {
            assert!(
                kinds.contains(kind.as_str()),
                "no golden status of kind {kind}"
            );
        }
    }

    /// Partitions are compared with what was synced: only a changed partition is written, an
    /// unchanged one costs no request, and a partition whose write failed is written again by
    /// the next sync even though it did not change.
    #[tokio::test(start_paused = true)]
    async fn only_changed_or_failed_partitions_are_written() {
        let (client, mut mock) = MockApi::pair();
        let writer = StatusWriter::new(client);
        let part =
            |s: ObjectStatus| std::sync::Arc::new(crate::compiler::PackedPartition::pack(vec![s]));
        let mut current = Statuses::new();
        current.insert("a".into(), part(tenant_status("a", true)));
        current.insert("b".into(), part(tenant_status("b", true)));
        async fn answer(mock: &mut MockApi, code: u16) -> String {
            let (request, send) = mock.next_request().await;
            let path = request.uri().path().to_owned();
            if code == 200 {
                respond_json(send, 200, &json!({}));
            } else {
                respond_json(send, code, &failure(code, "InternalError", "down"));
            }
            path
        }
        let (report, (first, second)) = tokio::join!(writer.sync_partitions(&current), async {
            (answer(&mut mock, 200).await, answer(&mut mock, 200).await)
        });
        assert_eq!(report.written, 2, "{first} {second}");

        let mut changed = current.clone();
        changed.insert("a".into(), part(tenant_status("a", false)));
        let (report, path) = tokio::join!(writer.sync_partitions(&changed), answer(&mut mock, 500));
        assert!(path.ends_with("/tenants/a/status"), "{path}");
        assert_eq!((report.written, report.failed), (0, 1));

        let (report, path) = tokio::join!(writer.sync_partitions(&changed), answer(&mut mock, 200));
        assert!(
            path.ends_with("/tenants/a/status"),
            "the failed one again: {path}"
        );
        assert_eq!((report.written, report.failed), (1, 0));

        // Nothing changed: a request would wait for the mock forever.
        let report = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            writer.sync_partitions(&changed),
        )
        .await
        .expect("nothing written");
        assert_eq!(report, SyncReport::default());
    }

    #[tokio::test]
    async fn a_failed_write_is_retried_by_the_next_sync() {
        let (client, mut mock) = MockApi::pair();
        let writer = StatusWriter::new(client);
        let statuses = vec![route_status("web", "Accepted")];
        let serve = async {
            let (_, send) = mock.next_request().await;
            respond_json(send, 409, &failure(409, "Conflict", "conflict"));
        };
        let (report, ()) = tokio::join!(writer.sync(&statuses), serve);
        assert_eq!(
            report,
            SyncReport {
                written: 0,
                failed: 1
            }
        );
        assert_eq!(writer.pending(&statuses, &now()).len(), 1);
    }

    #[tokio::test]
    async fn onboarding_failures_change_the_tenant_status_to_write() {
        let (client, _mock) = MockApi::pair();
        let writer = StatusWriter::new(client);
        let failure = OnboardingFailure {
            reason: "InvalidReplicas".into(),
            message: "spec.replicas must not be negative".into(),
        };
        assert!(writer.set_failure("acme", Some(failure.clone())));
        assert!(!writer.set_failure("acme", Some(failure)));
        let pending = writer.pending(&[tenant_status("acme", true)], &now());
        assert_eq!(
            pending[0].status["conditions"][0]["reason"],
            "InvalidReplicas"
        );
        assert!(writer.set_failure("acme", None));
        let pending = writer.pending(&[tenant_status("acme", true)], &now());
        assert_eq!(pending[0].status["conditions"][0]["reason"], "Accepted");
    }
}
