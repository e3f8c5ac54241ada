//! Onboarding: for every served Tenant, server-side apply its children
//! ([`crate::children::render_children`]) into `spec.namespace`, in order, with the field manager
//! [`FIELD_MANAGER`] (forced: the operator owns these objects).
//!
//! Deleting a Tenant needs no finalizer: every child is owned by it, and the garbage collector
//! removes them. A Tenant whose `spec.namespace` changed (the CRD forbids it; this is the defence
//! behind that rule) gets its children applied in the new namespace, then the ones it owns in the
//! previous namespace deleted ([`remove_children`]); objects of the same names owned by anyone
//! else (a tenant that now owns that namespace) are left alone. The previous namespace is
//! remembered in memory only: after an operator restart, children left behind stay until the
//! Tenant is deleted. A Tenant whose children cannot be rendered ([`ChildError`]) or whose namespace
//! is missing gets `Accepted=False` with the reason in its status, not a crash loop; the
//! [`run_onboarding`] driver retries failed tenants with exponential backoff, re-applies a
//! tenant's children as soon as one of them is deleted or edited by someone else
//! ([`super::child_watch`]), and re-applies everything every [`RESYNC_INTERVAL`] (a safety net).

use super::status_writer::{OnboardingFailure, StatusWriter};
use super::FIELD_MANAGER;
use crate::children::{render_children, validate_settings, ChildError, ChildSettings, Children};
use crate::children::{BOOTSTRAP_SECRET_NAME, OPERATOR_CA_CONFIG_MAP, ROUTER_NAME};
use ::kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use ::kube::{Client, Resource, ResourceExt};
use bulkhead_crds::snapshot::TenantSnapshot;
use bulkhead_crds::Tenant;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::NamespaceResourceScope;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// First retry delay of a failed tenant; doubles per failure.
pub const RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// Every tenant's children are applied again this often, changed or not.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(600);
/// Shortest time between two bootstrap Secret writes of one tenant when only its snapshot changed:
/// a tenant changing routes many times per second costs the API server one write per interval
/// (the newest snapshot wins), never one per change.
pub const BOOTSTRAP_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// Condition reason when the tenant's namespace does not exist.
pub const REASON_NAMESPACE_NOT_FOUND: &str = "NamespaceNotFound";
/// Condition reason when the API server refused a child.
pub const REASON_APPLY_FAILED: &str = "ChildApplyFailed";

/// A child could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("cannot apply {kind} {namespace}/{name}: {source}")]
pub struct ApplyError {
    /// The child's kind.
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The API error.
    #[source]
    pub source: ::kube::Error,
}

impl ApplyError {
    /// Whether the API server answered 404 (the namespace does not exist).
    pub fn is_not_found(&self) -> bool {
        matches!(&self.source, ::kube::Error::Api(s) if s.code == 404)
    }
}

/// Why a reconciliation must be retried.
#[derive(Debug, thiserror::Error)]
pub enum OnboardError {
    /// A child was refused.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The Tenant's status could not be written.
    #[error("cannot write the Tenant status: {0}")]
    Status(#[source] ::kube::Error),
}

/// The result of a reconciliation that needs no immediate retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every child is applied.
    Applied,
    /// The Tenant cannot be onboarded as it is; its status says why.
    Refused(OnboardingFailure),
}

/// The onboarding reconciler.
#[derive(Clone)]
pub struct Onboarding {
    client: Client,
    settings: Arc<ChildSettings>,
    status: Arc<StatusWriter>,
}

impl std::fmt::Debug for Onboarding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Onboarding")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Onboarding {
    /// A reconciler applying with `client`, rendering with `settings`, reporting through `status`.
    pub fn new(client: Client, settings: ChildSettings, status: Arc<StatusWriter>) -> Self {
        Self {
            client,
            settings: Arc::new(settings),
            status,
        }
    }

    /// Renders the routers' CA ConfigMaps with `pem` from now on (a rotated CA of the snapshot
    /// API). `true` when that changed the settings; a bundle the settings refuse (no PEM
    /// certificate) is logged and changes nothing.
    pub fn set_operator_ca(&mut self, pem: String) -> bool {
        if self.settings.operator_ca_pem == pem {
            return false;
        }
        let settings = ChildSettings {
            operator_ca_pem: pem,
            ..(*self.settings).clone()
        };
        match validate_settings(&settings) {
            Ok(()) => {
                tracing::info!("snapshot API CA changed: re-applying every tenant's children");
                self.settings = Arc::new(settings);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "snapshot API CA bundle refused; the routers keep the previous one");
                false
            }
        }
    }

    /// Applies only the bootstrap Secret of `tenant`: when nothing but its snapshot changed since
    /// the last successful [`Self::reconcile`]. Falls back to a full reconciliation when the
    /// children cannot be rendered.
    pub async fn refresh_bootstrap(
        &self,
        tenant: &Tenant,
        bootstrap: &TenantSnapshot,
    ) -> Result<Outcome, OnboardError> {
        match render_children(tenant, &self.settings, Some(bootstrap)) {
            Ok(Children {
                bootstrap: Some(secret),
                ..
            }) => {
                apply(&self.client, &tenant.spec.namespace, &secret).await?;
                Ok(Outcome::Applied)
            }
            _ => self.reconcile(tenant, Some(bootstrap)).await,
        }
    }

    /// Applies the children of `tenant` (with `bootstrap` as its bootstrap snapshot), or records
    /// why it cannot in its status.
    pub async fn reconcile(
        &self,
        tenant: &Tenant,
        bootstrap: Option<&TenantSnapshot>,
    ) -> Result<Outcome, OnboardError> {
        let name = tenant.name_any();
        let children = match render_children(tenant, &self.settings, bootstrap) {
            Ok(children) => children,
            Err(e) => {
                tracing::warn!(tenant = %name, error = %e, "tenant cannot be onboarded");
                return self.refuse(&name, &e).await;
            }
        };
        match apply_children(&self.client, &tenant.spec.namespace, &children).await {
            Ok(()) => {
                tracing::debug!(tenant = %name, "children applied");
                if self.status.set_failure(&name, None) {
                    self.status
                        .write_tenant(&name)
                        .await
                        .map_err(OnboardError::Status)?;
                }
                Ok(Outcome::Applied)
            }
            Err(e) if e.is_not_found() => {
                let failure = OnboardingFailure {
                    reason: REASON_NAMESPACE_NOT_FOUND.into(),
                    message: format!("namespace {:?} does not exist: {e}", tenant.spec.namespace),
                };
                self.record(&name, failure.clone()).await?;
                Ok(Outcome::Refused(failure))
            }
            Err(e) => {
                let failure = OnboardingFailure {
                    reason: REASON_APPLY_FAILED.into(),
                    message: e.to_string(),
                };
                if let Err(status) = self.record(&name, failure).await {
                    tracing::warn!(tenant = %name, error = %status, "cannot record the failure");
                }
                Err(e.into())
            }
        }
    }

    /// Deletes what `tenant` owns in `old_namespace`, which it no longer serves; a failure is logged
    /// and counted (the children stay until the Tenant is deleted).
    pub async fn remove_old_children(&self, tenant: &Tenant, old_namespace: &str) {
        let name = tenant.name_any();
        let Some(uid) = tenant.metadata.uid.as_deref() else {
            return;
        };
        match remove_children(&self.client, old_namespace, uid).await {
            Ok(removed) => {
                tracing::warn!(tenant = %name, namespace = %old_namespace, removed, "the tenant left this namespace: its children there are deleted")
            }
            Err(e) => {
                tracing::error!(tenant = %name, namespace = %old_namespace, error = %e, "cannot delete the children the tenant left behind")
            }
        }
    }

    async fn refuse(&self, tenant: &str, e: &ChildError) -> Result<Outcome, OnboardError> {
        let failure = OnboardingFailure {
            reason: e.reason().into(),
            message: e.to_string(),
        };
        self.record(tenant, failure.clone()).await?;
        Ok(Outcome::Refused(failure))
    }

    async fn record(&self, tenant: &str, failure: OnboardingFailure) -> Result<(), OnboardError> {
        self.status.set_failure(tenant, Some(failure));
        self.status
            .write_tenant(tenant)
            .await
            .map_err(OnboardError::Status)
    }
}

/// Server-side applies every child, in order (identity and configuration before the pods).
pub async fn apply_children(
    client: &Client,
    namespace: &str,
    children: &Children,
) -> Result<(), ApplyError> {
    apply(client, namespace, &children.service_account).await?;
    apply(client, namespace, &children.operator_ca).await?;
    if let Some(secret) = &children.bootstrap {
        apply(client, namespace, secret).await?;
    }
    apply(client, namespace, &children.deployment).await?;
    apply(client, namespace, &children.service).await?;
    apply(client, namespace, &children.pod_disruption_budget).await?;
    apply(client, namespace, &children.network_policy).await?;
    Ok(())
}

/// Server-side applies one object, forcing ownership of the fields the operator sets.
pub(crate) async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<(), ApplyError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(object))
        .await
        .map(|_| ())
        .map_err(|source| ApplyError {
            kind: K::kind(&()).into_owned(),
            namespace: namespace.to_owned(),
            name,
            source,
        })
}

/// Deletes the children that the Tenant with uid `owner_uid` owns in `namespace` (one it no longer
/// serves); same-named objects of other owners are kept. Returns how many were deleted.
pub async fn remove_children(
    client: &Client,
    namespace: &str,
    owner_uid: &str,
) -> Result<usize, ApplyError> {
    let mut removed = 0;
    removed +=
        usize::from(remove::<NetworkPolicy>(client, namespace, ROUTER_NAME, owner_uid).await?);
    removed += usize::from(
        remove::<PodDisruptionBudget>(client, namespace, ROUTER_NAME, owner_uid).await?,
    );
    removed += usize::from(remove::<Service>(client, namespace, ROUTER_NAME, owner_uid).await?);
    removed += usize::from(remove::<Deployment>(client, namespace, ROUTER_NAME, owner_uid).await?);
    removed +=
        usize::from(remove::<Secret>(client, namespace, BOOTSTRAP_SECRET_NAME, owner_uid).await?);
    removed += usize::from(
        remove::<ConfigMap>(client, namespace, OPERATOR_CA_CONFIG_MAP, owner_uid).await?,
    );
    removed +=
        usize::from(remove::<ServiceAccount>(client, namespace, ROUTER_NAME, owner_uid).await?);
    Ok(removed)
}

/// Deletes `namespace/name` if `owner_uid` owns it (with the object's uid as a precondition, so
/// a replacement created meanwhile is kept); `true` when deleted. The object is looked up by a
/// metadata-only `list` selecting its name, never `get`: the operator holds no `get` permission
/// on its children (`crate::rbac`), and a Secret's data is not fetched at all.
async fn remove<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    owner_uid: &str,
) -> Result<bool, ApplyError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let error = |source| ApplyError {
        kind: K::kind(&()).into_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source,
    };
    let by_name = ListParams::default().fields(&format!("metadata.name={name}"));
    let listed = api.list_metadata(&by_name).await.map_err(error)?;
    let Some(object) = listed.items.into_iter().find(|o| o.name_any() == name) else {
        return Ok(false);
    };
    let owned = object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == owner_uid);
    if !owned {
        return Ok(false);
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: object.meta().uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(::kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
        Err(e) => Err(error(e)),
    }
}

/// What the control loop wants onboarded: every served Tenant and its current snapshot. A
/// persistent map: the control loop updates one entry per acknowledged snapshot and hands the
/// whole map over without copying it.
pub type Desired = imbl::OrdMap<String, DesiredTenant>;

/// One served Tenant and the snapshot its bootstrap Secret should hold.
#[derive(Debug, Clone)]
pub struct DesiredTenant {
    /// The Tenant as last seen.
    pub tenant: Arc<Tenant>,
    /// Its current snapshot, if compiled.
    pub bootstrap: Option<Arc<TenantSnapshot>>,
}

impl DesiredTenant {
    /// What a successful reconciliation covered: the Tenant's identity and spec generation, and
    /// the snapshot version (status writes, which bump the resource version, are not changes).
    fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            uid: self.tenant.metadata.uid.clone(),
            generation: self.tenant.metadata.generation,
            snapshot_version: self.bootstrap.as_ref().map(|s| s.version),
        }
    }

    /// Whether `fp` is this Tenant's [`Self::fingerprint`] (compared without building one: the
    /// loop checks every desired Tenant on each change).
    fn has_fingerprint(&self, fp: &Fingerprint) -> bool {
        fp.uid.as_deref() == self.tenant.metadata.uid.as_deref()
            && fp.generation == self.tenant.metadata.generation
            && fp.snapshot_version == self.bootstrap.as_ref().map(|s| s.version)
    }
}

/// The delay before retry number `failures` (1-based).
pub fn retry_delay(failures: u32) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    RETRY_INITIAL.saturating_mul(factor).min(RETRY_MAX)
}

/// What a reconciliation of one Tenant covered ([`DesiredTenant::fingerprint`]): the same
/// fingerprint after a failure waits for its retry; a new one is reconciled at once.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    /// The Tenant's UID (a Tenant deleted and created again is another Tenant).
    uid: Option<String>,
    /// Its `metadata.generation` (spec changes).
    generation: Option<i64>,
    /// The version of its bootstrap snapshot.
    snapshot_version: Option<u64>,
}

impl Fingerprint {
    /// Whether only the snapshot version can differ (same Tenant, same spec generation).
    fn same_tenant_spec(&self, other: &Self) -> bool {
        self.uid == other.uid && self.generation == other.generation
    }
}

struct Retry {
    fingerprint: Fingerprint,
    failures: u32,
    at: Instant,
}

/// Reconciles the desired tenants until `shutdown`: each tenant when it (or its snapshot)
/// changes or when `repairs` names it (one of its children was deleted or edited:
/// [`super::child_watch`]), failed ones with backoff, all of them every [`RESYNC_INTERVAL`] and
/// whenever the snapshot API's CA bundle (`operator_ca`) changes.
pub async fn run_onboarding(
    mut onboarding: Onboarding,
    mut desired: watch::Receiver<Desired>,
    mut operator_ca: watch::Receiver<String>,
    mut repairs: mpsc::Receiver<String>,
    shutdown: CancellationToken,
) {
    let mut ca_open = true;
    let mut repairs_open = true;
    let mut done: HashMap<String, Fingerprint> = HashMap::new();
    let mut retries: HashMap<String, Retry> = HashMap::new();
    // Tenant → when its bootstrap Secret may be written again.
    let mut bootstrap_after: HashMap<String, Instant> = HashMap::new();
    // Tenant → the namespace its children were last applied in.
    let mut placed: HashMap<String, String> = HashMap::new();
    let mut resync_at = Instant::now() + RESYNC_INTERVAL;
    loop {
        let wanted = desired.borrow_and_update().clone();
        let now = Instant::now();
        if now >= resync_at {
            done.clear();
            resync_at = now + RESYNC_INTERVAL;
        }
        done.retain(|t, _| wanted.contains_key(t));
        placed.retain(|t, _| wanted.contains_key(t));
        retries.retain(|t, _| wanted.contains_key(t));
        bootstrap_after.retain(|t, at| wanted.contains_key(t) && *at > now);
        let mut deferred: Option<Instant> = None;
        for (name, d) in &wanted {
            if done.get(name).is_some_and(|f| d.has_fingerprint(f)) {
                continue;
            }
            let fp = d.fingerprint();
            if let Some(r) = retries.get(name) {
                if r.fingerprint == fp && r.at > now {
                    continue;
                }
            }
            let only_snapshot_changed = done.get(name).is_some_and(|old| old.same_tenant_spec(&fp));
            if only_snapshot_changed {
                if let Some(at) = bootstrap_after.get(name) {
                    deferred = Some(deferred.map_or(*at, |d| d.min(*at)));
                    continue;
                }
            }
            let work = async {
                match (&d.bootstrap, only_snapshot_changed) {
                    (Some(snapshot), true) => {
                        onboarding.refresh_bootstrap(&d.tenant, snapshot).await
                    }
                    _ => {
                        onboarding
                            .reconcile(&d.tenant, d.bootstrap.as_deref())
                            .await
                    }
                }
            };
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                r = work => r,
            };
            match &result {
                Ok(Outcome::Applied) => {
                    let namespace = &d.tenant.spec.namespace;
                    if let Some(old) = placed.insert(name.clone(), namespace.clone()) {
                        if old != *namespace {
                            onboarding.remove_old_children(&d.tenant, &old).await;
                        }
                    }
                    done.insert(name.clone(), fp);
                    retries.remove(name);
                    if d.bootstrap.is_some() {
                        bootstrap_after
                            .insert(name.clone(), Instant::now() + BOOTSTRAP_MIN_INTERVAL);
                    }
                }
                Ok(Outcome::Refused(_)) | Err(_) => {
                    if let Err(e) = &result {
                        tracing::warn!(tenant = %name, error = %e, "onboarding failed; retrying with backoff");
                    }
                    let failures = retries
                        .get(name)
                        .filter(|r| r.fingerprint == fp)
                        .map_or(1, |r| r.failures.saturating_add(1));
                    retries.insert(
                        name.clone(),
                        Retry {
                            fingerprint: fp,
                            failures,
                            at: Instant::now() + retry_delay(failures),
                        },
                    );
                }
            }
        }
        let wake = retries
            .values()
            .map(|r| r.at)
            .chain(deferred)
            .min()
            .map_or(resync_at, |at| at.min(resync_at));
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = desired.changed() => if changed.is_err() { return },
            changed = operator_ca.changed(), if ca_open => match changed {
                Ok(()) => {
                    let pem = operator_ca.borrow_and_update().clone();
                    if onboarding.set_operator_ca(pem) {
                        done.clear();
                    }
                }
                Err(_) => ca_open = false,
            },
            repair = repairs.recv(), if repairs_open => match repair {
                Some(tenant) => {
                    done.remove(&tenant);
                }
                None => repairs_open = false,
            },
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::testing::{failure, json_body, query_param, respond_json, MockApi};
    use crate::rbac::{allows, Scope};
    use bulkhead_crds::TenantSpec;
    use serde::Deserialize;
    use tokio::sync::mpsc;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn settings() -> ChildSettings {
        ChildSettings::new(
            "ghcr.io/bulkhead/bulkhead:test",
            "https://bulkhead-operator.bulkhead-system.svc:8443",
            CA,
        )
    }

    fn tenant(namespace: &str, replicas: Option<i32>) -> Tenant {
        let mut t = Tenant::new(
            "acme",
            TenantSpec {
                namespace: namespace.to_owned(),
                hostnames: vec!["*.acme.test".to_owned()],
                replicas,
            },
        );
        t.metadata.uid = Some("0b5c2f4e-0000-4000-8000-000000000001".to_owned());
        t.metadata.generation = Some(4);
        t
    }

    fn onboarding() -> (Onboarding, MockApi) {
        let (client, mock) = MockApi::pair();
        let status = Arc::new(StatusWriter::new(client.clone()));
        (Onboarding::new(client, settings(), status), mock)
    }

    /// (API group, resource) of a request path such as `/apis/apps/v1/namespaces/x/deployments/y`.
    fn group_and_resource(path: &str) -> (String, String) {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["api", _v, "namespaces", _ns, resource, ..] => (String::new(), (*resource).into()),
            ["apis", group, _v, "namespaces", _ns, resource, ..] => {
                ((*group).into(), (*resource).into())
            }
            ["apis", group, _v, resource, _name, "status"] => {
                ((*group).into(), format!("{resource}/status"))
            }
            _ => panic!("unexpected path {path}"),
        }
    }

    /// A repair channel nobody sends on.
    fn no_repairs() -> mpsc::Receiver<String> {
        mpsc::channel(1).1
    }

    #[tokio::test(start_paused = true)]
    async fn a_repair_reapplies_the_tenants_children_long_before_the_resync() {
        let (onboarding, mut mock) = onboarding();
        let desired = Desired::unit(
            "acme".to_owned(),
            DesiredTenant {
                tenant: Arc::new(tenant("team-a", None)),
                bootstrap: None,
            },
        );
        let (_desired_tx, desired_rx) = watch::channel(desired);
        let (_ca_tx, ca_rx) = watch::channel(CA.to_owned());
        let (repair_tx, repair_rx) = mpsc::channel(4);
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(run_onboarding(
            onboarding,
            desired_rx,
            ca_rx,
            repair_rx,
            shutdown.clone(),
        ));
        let mut applied = Vec::new();
        for _ in 0..6 {
            let (request, send) = mock.next_request().await;
            applied.push(request.uri().path().to_owned());
            let body = json_body(request).await;
            respond_json(send, 200, &body);
        }
        // The NetworkPolicy is deleted: the child watcher asks for a repair.
        let patience = Duration::from_secs(60);
        assert!(patience < RESYNC_INTERVAL);
        let started = Instant::now();
        repair_tx.send("acme".into()).await.expect("sent");
        let mut reapplied = Vec::new();
        for _ in 0..6 {
            let (request, send) = tokio::time::timeout(patience, mock.next_request())
                .await
                .expect("children re-applied before the resync");
            reapplied.push(request.uri().path().to_owned());
            let body = json_body(request).await;
            respond_json(send, 200, &body);
        }
        assert!(Instant::now() - started < patience);
        assert_eq!(
            reapplied, applied,
            "every child, in order, in one reconcile"
        );
        shutdown.cancel();
        run.await.expect("onboarding loop");
    }

    #[tokio::test]
    async fn children_are_applied_in_order_with_server_side_apply() {
        let (onboarding, mut mock) = onboarding();
        let t = tenant("team-a", None);
        let snapshot = TenantSnapshot {
            tenant: "acme".into(),
            namespace: "team-a".into(),
            version: 3,
            ..TenantSnapshot::default()
        };
        let serve = async {
            let mut seen = Vec::new();
            for _ in 0..7 {
                let (request, send) = mock.next_request().await;
                assert_eq!(request.method(), http::Method::PATCH);
                let path = request.uri().path().to_owned();
                assert!(path.contains("/namespaces/team-a/"), "{path}");
                assert_eq!(
                    query_param(&request, "fieldManager").as_deref(),
                    Some(FIELD_MANAGER)
                );
                assert_eq!(query_param(&request, "force").as_deref(), Some("true"));
                let (group, resource) = group_and_resource(&path);
                assert!(
                    allows(&group, &resource, "patch", Scope::Cluster),
                    "RBAC grants patch on {group}/{resource}"
                );
                let body = json_body(request).await;
                assert!(path.ends_with(&format!(
                    "/{}",
                    body["metadata"]["name"].as_str().expect("name")
                )));
                seen.push(body["kind"].as_str().expect("kind").to_owned());
                respond_json(send, 200, &body);
            }
            seen
        };
        let (result, seen) = tokio::join!(onboarding.reconcile(&t, Some(&snapshot)), serve);
        assert_eq!(result.expect("reconciled"), Outcome::Applied);
        assert_eq!(
            seen,
            vec![
                "ServiceAccount",
                "ConfigMap",
                "Secret",
                "Deployment",
                "Service",
                "PodDisruptionBudget",
                "NetworkPolicy"
            ]
        );
    }

    #[tokio::test]
    async fn a_rotated_ca_changes_the_settings_and_a_bad_bundle_does_not() {
        let (mut onboarding, _mock) = onboarding();
        assert!(!onboarding.set_operator_ca(CA.to_owned()), "same bundle");
        let rotated = format!("{CA}{CA}");
        assert!(onboarding.set_operator_ca(rotated.clone()));
        assert_eq!(onboarding.settings.operator_ca_pem, rotated);
        assert!(!onboarding.set_operator_ca("not a certificate".to_owned()));
        assert_eq!(onboarding.settings.operator_ca_pem, rotated);
    }

    /// Serves the mock API: answers every request with its own body and sends the CA bundle of
    /// each ConfigMap applied.
    async fn record_ca_configmaps(mut mock: MockApi, seen: mpsc::UnboundedSender<String>) {
        loop {
            let (request, send) = mock.next_request().await;
            let body = json_body(request).await;
            if body["kind"] == "ConfigMap" {
                let ca = body["data"][crate::children::OPERATOR_CA_KEY]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let _ = seen.send(ca);
            }
            respond_json(send, 200, &body);
        }
    }

    #[tokio::test]
    async fn a_rotated_ca_bundle_is_applied_to_every_tenant_at_once() {
        let (onboarding, mock) = onboarding();
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let api = tokio::spawn(record_ca_configmaps(mock, seen_tx));
        let mut desired = Desired::new();
        desired.insert(
            "acme".to_owned(),
            DesiredTenant {
                tenant: Arc::new(tenant("team-a", None)),
                bootstrap: None,
            },
        );
        let (_desired_tx, desired_rx) = watch::channel(desired);
        let (ca_tx, ca_rx) = watch::channel(CA.to_owned());
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(run_onboarding(
            onboarding,
            desired_rx,
            ca_rx,
            no_repairs(),
            shutdown.clone(),
        ));
        let patience = Duration::from_secs(10);
        let first = tokio::time::timeout(patience, seen.recv()).await;
        assert_eq!(first.ok().flatten().as_deref(), Some(CA));

        // Long before the periodic resync, the new bundle reaches the tenant's ConfigMap.
        let rotated = format!("{CA}{CA}");
        ca_tx.send_replace(rotated.clone());
        let second = tokio::time::timeout(patience, seen.recv()).await;
        assert_eq!(second.ok().flatten(), Some(rotated));
        shutdown.cancel();
        run.await.expect("onboarding loop");
        api.abort();
    }

    #[tokio::test]
    async fn a_child_error_becomes_the_tenant_status_reason() {
        let (onboarding, mut mock) = onboarding();
        let t = tenant("team-a", Some(-1));
        let serve = async {
            let (request, send) = mock.next_request().await;
            assert_eq!(request.method(), http::Method::PATCH);
            assert_eq!(
                request.uri().path(),
                "/apis/bulkhead.dev/v1alpha1/tenants/acme/status"
            );
            assert!(allows(
                "bulkhead.dev",
                "tenants/status",
                "patch",
                Scope::Cluster
            ));
            assert_eq!(
                query_param(&request, "fieldManager").as_deref(),
                Some(FIELD_MANAGER)
            );
            let body = json_body(request).await;
            assert_eq!(body["kind"], "Tenant");
            let accepted = &body["status"]["conditions"][0];
            assert_eq!(accepted["type"], "Accepted");
            assert_eq!(accepted["status"], "False");
            assert_eq!(accepted["reason"], "InvalidReplicas");
            let mut answer = body.clone();
            answer["metadata"] = serde_json::json!({"name": "acme"});
            respond_json(send, 200, &answer);
        };
        let (result, ()) = tokio::join!(onboarding.reconcile(&t, None), serve);
        match result.expect("no retry error") {
            Outcome::Refused(f) => assert_eq!(f.reason, "InvalidReplicas"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_missing_namespace_is_reported_not_retried_as_an_error() {
        let (onboarding, mut mock) = onboarding();
        let t = tenant("team-gone", None);
        let serve = async {
            let (request, send) = mock.next_request().await;
            assert!(request.uri().path().contains("/serviceaccounts/"));
            respond_json(
                send,
                404,
                &failure(404, "NotFound", "namespaces \"team-gone\" not found"),
            );
            let (request, send) = mock.next_request().await;
            assert!(request.uri().path().ends_with("/tenants/acme/status"));
            let body = json_body(request).await;
            assert_eq!(
                body["status"]["conditions"][0]["reason"],
                REASON_NAMESPACE_NOT_FOUND
            );
            let mut answer = body.clone();
            answer["metadata"] = serde_json::json!({"name": "acme"});
            respond_json(send, 200, &answer);
        };
        let (result, ()) = tokio::join!(onboarding.reconcile(&t, None), serve);
        assert!(
            matches!(result, Ok(Outcome::Refused(f)) if f.reason == REASON_NAMESPACE_NOT_FOUND)
        );
    }

    #[tokio::test]
    async fn other_api_errors_are_retried() {
        let (onboarding, mut mock) = onboarding();
        let t = tenant("team-a", None);
        let serve = async {
            let (_, send) = mock.next_request().await;
            respond_json(send, 500, &failure(500, "InternalError", "boom"));
            let (request, send) = mock.next_request().await;
            let body = json_body(request).await;
            assert_eq!(
                body["status"]["conditions"][0]["reason"],
                REASON_APPLY_FAILED
            );
            let mut answer = body.clone();
            answer["metadata"] = serde_json::json!({"name": "acme"});
            respond_json(send, 200, &answer);
        };
        let (result, ()) = tokio::join!(onboarding.reconcile(&t, None), serve);
        assert!(matches!(result, Err(OnboardError::Apply(_))), "{result:?}");
    }

    #[tokio::test]
    async fn a_new_snapshot_alone_rewrites_only_the_bootstrap_secret() {
        let (onboarding, mut mock) = onboarding();
        let t = tenant("team-a", None);
        let snapshot = TenantSnapshot {
            tenant: "acme".into(),
            namespace: "team-a".into(),
            version: 9,
            ..TenantSnapshot::default()
        };
        let serve = async {
            let (request, send) = mock.next_request().await;
            assert_eq!(request.method(), http::Method::PATCH);
            assert_eq!(
                request.uri().path(),
                "/api/v1/namespaces/team-a/secrets/bulkhead-router-bootstrap"
            );
            let body = json_body(request).await;
            assert_eq!(body["kind"], "Secret");
            respond_json(send, 200, &body);
        };
        let (result, ()) = tokio::join!(onboarding.refresh_bootstrap(&t, &snapshot), serve);
        assert_eq!(result.expect("applied"), Outcome::Applied);
    }

    #[tokio::test(start_paused = true)]
    async fn bootstrap_writes_of_a_busy_tenant_are_spaced_and_the_newest_wins() {
        let (onboarding, mut mock) = onboarding();
        let t = Arc::new(tenant("team-a", None));
        let desired_at = |version: u64| -> Desired {
            let snapshot = TenantSnapshot {
                tenant: "acme".into(),
                namespace: "team-a".into(),
                version,
                ..TenantSnapshot::default()
            };
            Desired::unit(
                "acme".to_owned(),
                DesiredTenant {
                    tenant: Arc::clone(&t),
                    bootstrap: Some(Arc::new(snapshot)),
                },
            )
        };
        let (tx, rx) = watch::channel(desired_at(1));
        let shutdown = CancellationToken::new();
        let (_ca_tx, ca_rx) = watch::channel(CA.to_owned());
        let task = tokio::spawn(run_onboarding(
            onboarding,
            rx,
            ca_rx,
            no_repairs(),
            shutdown.clone(),
        ));
        // The first reconciliation applies the 7 children.
        for _ in 0..7 {
            let (request, send) = mock.next_request().await;
            let body = json_body(request).await;
            respond_json(send, 200, &body);
        }
        let started = Instant::now();
        // Three new snapshots in quick succession: one bootstrap write, of the newest, and not
        // before the interval is over.
        for v in 2..=4 {
            tx.send_replace(desired_at(v));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (request, send) = mock.next_request().await;
        assert!(
            Instant::now() >= started + BOOTSTRAP_MIN_INTERVAL,
            "written after {:?}",
            Instant::now() - started
        );
        assert!(request
            .uri()
            .path()
            .ends_with("/secrets/bulkhead-router-bootstrap"));
        let body = json_body(request).await;
        respond_json(send, 200, &body);
        let secret: k8s_openapi::api::core::v1::Secret =
            serde_json::from_value(body).expect("a Secret");
        let bytes = &secret.data.as_ref().expect("data")[crate::children::BOOTSTRAP_KEY].0;
        let written: TenantSnapshot = serde_json::from_slice(bytes).expect("snapshot JSON");
        assert_eq!(written.version, 4, "the newest snapshot, once");
        shutdown.cancel();
        task.await.expect("onboarding task");
    }

    #[test]
    fn every_child_is_owned_by_its_tenant_so_deleting_the_tenant_deletes_them() {
        let t = tenant("team-a", None);
        let snapshot = TenantSnapshot {
            tenant: "acme".into(),
            namespace: "team-a".into(),
            version: 1,
            ..TenantSnapshot::default()
        };
        let children = render_children(&t, &settings(), Some(&snapshot)).expect("rendered");
        let yaml = children.to_yaml().expect("serialises");
        let mut count = 0;
        for document in serde_yaml::Deserializer::from_str(&yaml) {
            let child = serde_yaml::Value::deserialize(document).expect("YAML");
            if child.is_null() {
                continue;
            }
            count += 1;
            let owners = &child["metadata"]["ownerReferences"];
            let expected: serde_yaml::Value = serde_yaml::from_str(
                "- {apiVersion: bulkhead.dev/v1alpha1, kind: Tenant, name: acme, \
                 uid: 0b5c2f4e-0000-4000-8000-000000000001, controller: true}",
            )
            .expect("YAML");
            assert_eq!(owners, &expected, "{:?}", child["kind"]);
            assert_eq!(child["metadata"]["namespace"].as_str(), Some("team-a"));
        }
        assert_eq!(count, 7, "every child, the bootstrap Secret included");
    }

    /// Serves the mock API for a tenant moved from team-a to team-b: applies are echoed; in
    /// team-a, the ConfigMap belongs to another tenant, the Secret is gone and the rest is
    /// acme's. Sends every (method, path) it saw.
    async fn serve_moved_tenant(mut mock: MockApi, seen: mpsc::UnboundedSender<(String, String)>) {
        loop {
            let (request, send) = mock.next_request().await;
            let method = request.method().to_string();
            let path = request.uri().path().to_owned();
            let selector = query_param(&request, "fieldSelector").unwrap_or_default();
            let name = path.rsplit('/').next().unwrap_or_default().to_owned();
            let body = if method == "PATCH" {
                json_body(request).await
            } else {
                serde_json::Value::Null
            };
            let _ = seen.send((method.clone(), path.clone()));
            match method.as_str() {
                "PATCH" => respond_json(send, 200, &body),
                "GET" => {
                    // Children are looked up by a metadata-only list selecting the name (the
                    // operator has no `get` on them): the Secret is gone, the rest exist.
                    let name = selector.rsplit("%3D").next().unwrap_or_default();
                    let items = if path.ends_with("/secrets") {
                        Vec::new()
                    } else {
                        vec![child_metadata(&path, name)]
                    };
                    let list = serde_json::json!({"apiVersion": "meta.k8s.io/v1",
                        "kind": "PartialObjectMetadataList", "metadata": {}, "items": items});
                    respond_json(send, 200, &list);
                }
                "DELETE" => respond_json(send, 200, &child_metadata(&path, &name)),
                _ => respond_json(send, 405, &failure(405, "MethodNotAllowed", "no")),
            }
        }
    }

    /// A child's metadata in team-a: the ConfigMap belongs to another tenant, the rest to acme.
    fn child_metadata(path: &str, name: &str) -> serde_json::Value {
        let owner = if path.contains("/configmaps") {
            "another-tenant-uid"
        } else {
            "0b5c2f4e-0000-4000-8000-000000000001"
        };
        serde_json::json!({"metadata": {
            "name": name, "namespace": "team-a", "uid": "child-uid",
            "ownerReferences": [{"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant",
                                 "name": "acme", "uid": owner, "controller": true}]}})
    }

    /// The next (method, path) the operator sent, waiting at most a generous 30 s.
    async fn next_call(seen: &mut mpsc::UnboundedReceiver<(String, String)>) -> (String, String) {
        tokio::time::timeout(Duration::from_secs(30), seen.recv())
            .await
            .ok()
            .flatten()
            .expect("the operator's next API call")
    }

    #[tokio::test]
    async fn a_tenant_moved_to_another_namespace_leaves_no_children_in_the_old_one() {
        let (onboarding, mock) = onboarding();
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let api = tokio::spawn(serve_moved_tenant(mock, seen_tx));
        let desired_in = |namespace: &str, generation: i64| -> Desired {
            let mut t = tenant(namespace, None);
            t.metadata.generation = Some(generation);
            Desired::unit(
                "acme".to_owned(),
                DesiredTenant {
                    tenant: Arc::new(t),
                    bootstrap: None,
                },
            )
        };
        let (desired_tx, desired_rx) = watch::channel(desired_in("team-a", 1));
        let (_ca_tx, ca_rx) = watch::channel(CA.to_owned());
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(run_onboarding(
            onboarding,
            desired_rx,
            ca_rx,
            no_repairs(),
            shutdown.clone(),
        ));
        for _ in 0..6 {
            let (method, path) = next_call(&mut seen).await;
            assert_eq!(method, "PATCH");
            assert!(path.contains("/namespaces/team-a/"), "{path}");
        }
        desired_tx.send_replace(desired_in("team-b", 2));
        let mut deleted = Vec::new();
        let mut looked_up = 0;
        while looked_up < 7 {
            let (method, path) = next_call(&mut seen).await;
            match method.as_str() {
                "PATCH" => assert!(path.contains("/namespaces/team-b/"), "{path}"),
                "GET" => {
                    assert!(path.contains("/namespaces/team-a/"), "{path}");
                    let (group, resource) = group_and_resource(&format!("{path}/x"));
                    assert!(
                        allows(&group, &resource, "list", Scope::Cluster),
                        "a lookup the RBAC grants: list {group}/{resource}"
                    );
                    looked_up += 1;
                }
                "DELETE" => {
                    assert!(path.contains("/namespaces/team-a/"), "{path}");
                    deleted.push(path);
                }
                other => panic!("unexpected {other} {path}"),
            }
        }
        // The last lookup (the ServiceAccount) is followed by its deletion.
        let (method, path) = next_call(&mut seen).await;
        assert_eq!(method, "DELETE");
        deleted.push(path);
        let kinds: Vec<&str> = deleted
            .iter()
            .filter_map(|p| p.rsplit('/').nth(1))
            .collect();
        assert_eq!(
            kinds,
            vec![
                "networkpolicies",
                "poddisruptionbudgets",
                "services",
                "deployments",
                "serviceaccounts"
            ],
            "acme's children only: not another owner's ConfigMap, not a missing Secret"
        );
        assert!(allows("", "serviceaccounts", "delete", Scope::Cluster));
        assert!(!allows("apps", "deployments", "get", Scope::Cluster));
        assert!(!allows("", "configmaps", "get", Scope::Cluster));
        shutdown.cancel();
        run.await.expect("onboarding loop");
        api.abort();
    }

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        assert_eq!(retry_delay(1), RETRY_INITIAL);
        assert_eq!(retry_delay(2), RETRY_INITIAL * 2);
        assert_eq!(retry_delay(4), RETRY_INITIAL * 8);
        assert_eq!(retry_delay(40), RETRY_MAX);
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
    }
}
