//! Writing statuses to Kubernetes: server-side apply of the `status` subresource (field manager
//! [`FIELD_MANAGER`], forced), only when an object's status differs from what this process last
//! wrote.
//!
//! Tenant statuses have two sources: the translator (namespace, hostnames, readiness) and the
//! onboarding reconciler (its children could not be applied). An onboarding failure replaces
//! the translator's `Accepted` condition ([`overlay_onboarding`]); both writers go through one
//! [`StatusWriter`], so they never undo each other's writes.

use super::FIELD_MANAGER;
use crate::compiler::PackedPartition;
use crate::status::{digest, ObjectMeta, ObjectStatus, FALSE};
use ::kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use ::kube::Client;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

/// Which object a status belongs to: apiVersion, kind, namespace (`""` if cluster-scoped), name.
pub type StatusKey = (String, String, String, String);

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
        "GRPCRoute" => "grpcroutes",
        "TLSRoute" => "tlsroutes",
        "TCPRoute" => "tcproutes",
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
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Accepted"));
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
        "type": "Accepted",
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
        match list.iter_mut().find(|c| c["type"] == "Accepted") {
            Some(c) => *c = condition,
            None => list.insert(0, condition),
        }
    }
}

/// What was written for one object: Tenant statuses whole (onboarding failures are overlaid on
/// them), others as a digest, so the writer does not hold a second copy of every status.
#[derive(Debug, Clone, PartialEq)]
enum Written {
    Whole(Value),
    Digest(u64),
}

impl Written {
    fn of(kind: &str, v: &Value) -> Self {
        if kind == "Tenant" {
            Self::Whole(v.clone())
        } else {
            Self::Digest(digest(v))
        }
    }

    fn matches(&self, v: &Value) -> bool {
        match self {
            Self::Whole(w) => w == v,
            Self::Digest(d) => *d == digest(v),
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
    failures: Mutex<BTreeMap<String, OnboardingFailure>>,
    compiled_tenants: Mutex<BTreeMap<String, ObjectStatus>>,
    /// The partitions last synced without failure (compared by pointer).
    synced: Mutex<BTreeMap<String, Arc<PackedPartition>>>,
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
            failures: Mutex::new(BTreeMap::new()),
            compiled_tenants: Mutex::new(BTreeMap::new()),
            synced: Mutex::new(BTreeMap::new()),
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

    /// The statuses to write now: `current` with onboarding failures overlaid on Tenants, minus
    /// those equal to what was last written.
    pub fn pending(&self, current: &[ObjectStatus], now: &Time) -> Vec<ObjectStatus> {
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
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
                (!written.get(&key).is_some_and(|w| w.matches(&s.status))).then_some(s)
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
    pub async fn sync_partitions(
        &self,
        current: &BTreeMap<String, Arc<PackedPartition>>,
    ) -> SyncReport {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mut report = SyncReport::default();
        let previous =
            std::mem::take(&mut *self.synced.lock().unwrap_or_else(PoisonError::into_inner));
        let mut synced = BTreeMap::new();
        let mut stale: HashSet<StatusKey> = HashSet::new();
        for (name, old) in &previous {
            match current.get(name) {
                Some(new) if Arc::ptr_eq(new, old) => {
                    synced.insert(name.clone(), Arc::clone(new));
                }
                _ => stale.extend(old.records().map(status_key)),
            }
        }
        let changed: Vec<(&String, &Arc<PackedPartition>, Vec<ObjectStatus>)> = current
            .iter()
            .filter(|(name, _)| !synced.contains_key(*name))
            .map(|(name, p)| (name, p, p.unpack()))
            .collect();
        {
            let mut tenants = self
                .compiled_tenants
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for (_, _, statuses) in &changed {
                for s in statuses {
                    stale.remove(&status_key(s));
                    if s.kind == "Tenant" {
                        tenants.insert(s.metadata.name.clone(), s.clone());
                    }
                }
            }
            let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
            for key in &stale {
                written.remove(key);
                if key.1 == "Tenant" {
                    tenants.remove(&key.3);
                }
            }
        }
        for (name, partition, statuses) in changed {
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
            if ok {
                synced.insert(name.clone(), Arc::clone(partition));
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

    /// Server-side applies one status (unconditionally) and remembers it.
    pub async fn write(&self, s: &ObjectStatus) -> Result<(), ::kube::Error> {
        let key = status_key(s);
        let Some(resource) = api_resource(&s.api_version, &s.kind) else {
            tracing::debug!(kind = %s.kind, "no status subresource written for this kind");
            return Ok(());
        };
        let api: Api<DynamicObject> = match &s.metadata.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        let body = json!({
            "apiVersion": s.api_version,
            "kind": s.kind,
            "status": s.status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let result = api
            .patch_status(&s.metadata.name, &params, &Patch::Apply(&body))
            .await;
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(_) => {
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

    fn now() -> Time {
        Time("2026-01-01T00:00:00Z".parse().expect("time"))
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
        let first = vec![tenant_status("acme", true), route_status("web", "Accepted")];
        assert_eq!(writer.pending(&first, &now()).len(), 2);

        // Write the route; the API server answers with the object.
        let route = first[1].clone();
        let serve = async {
            let (request, send) = mock.next_request().await;
            assert_eq!(request.method(), http::Method::PATCH);
            assert_eq!(
                request.uri().path(),
                "/apis/gateway.networking.k8s.io/v1/namespaces/team-a/httproutes/web/status"
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
            assert_eq!(body["kind"], "HTTPRoute");
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

        let changed = vec![tenant_status("acme", true), route_status("web", "NoMatch")];
        assert_eq!(writer.pending(&changed, &now()).len(), 2);
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
