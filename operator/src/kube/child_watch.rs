//! Watching the operator's own children, so a deleted or edited child is repaired within seconds
//! rather than at the next [`super::onboarding::RESYNC_INTERVAL`].
//!
//! One metadata-only watcher per child kind (ServiceAccount, ConfigMap, Secret, Deployment,
//! Service, PodDisruptionBudget, NetworkPolicy), selected by the label
//! `app.kubernetes.io/managed-by=bulkhead-operator` that every child carries. [`ChildTracker`]
//! turns their events into repairs: the name of the Tenant owning the child (its owner
//! reference), which the onboarding loop reconciles again at once. A repair is asked for when a
//! child is deleted (or found gone after a relist), or when someone other than the operator wrote
//! it last: the newest entry of `managedFields` outside the `status` subresource changed and is not
//! [`FIELD_MANAGER`]'s. The operator's own applies and status updates (a Deployment's rollout
//! progress) ask for nothing, so no write loop can start. Runs only on the leader.

use super::FIELD_MANAGER;
use crate::children::MANAGED_BY;
use ::kube::api::Api;
use ::kube::core::PartialObjectMeta;
use ::kube::runtime::watcher::{self, watcher};
use ::kube::runtime::WatchStreamExt;
use ::kube::{Client, Resource};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Capacity of the channel of repairs (Tenant names) to the onboarding loop; a full channel
/// slows the child watchers down.
pub const REPAIR_QUEUE: usize = 256;

/// The label selector of every child.
pub fn child_selector() -> String {
    format!("app.kubernetes.io/managed-by={MANAGED_BY}")
}

/// The Tenant owning a child, from its owner references.
fn owning_tenant(meta: &ObjectMeta) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "Tenant" && o.api_version.starts_with("bulkhead.dev/"))
        .map(|o| o.name.clone())
}

/// The newest write of a child outside the `status` subresource: (time, manager).
type LastWrite = Option<(Timestamp, String)>;

fn last_write(meta: &ObjectMeta) -> LastWrite {
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|m| m.subresource.as_deref() != Some("status"))
        .filter_map(|m| Some((m.time.as_ref()?.0, m.manager.clone().unwrap_or_default())))
        .max()
}

/// Namespace and name of a child.
type ChildKey = (String, String);

fn key(meta: &ObjectMeta) -> ChildKey {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// What is known of one kind's children (see the module documentation).
#[derive(Debug, Default)]
pub struct ChildTracker {
    /// Child → (owning Tenant, its newest write).
    seen: BTreeMap<ChildKey, (String, LastWrite)>,
    relisting: Option<BTreeMap<ChildKey, (String, LastWrite)>>,
}

impl ChildTracker {
    /// Applies one watcher event of a child; returns the Tenants whose children need a repair.
    pub fn on_event(&mut self, event: watcher::Event<ObjectMeta>) -> Vec<String> {
        match event {
            watcher::Event::Init => {
                self.relisting = Some(BTreeMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(meta) => {
                if let Some(tenant) = owning_tenant(&meta) {
                    self.relisting
                        .get_or_insert_with(BTreeMap::new)
                        .insert(key(&meta), (tenant, last_write(&meta)));
                }
                Vec::new()
            }
            watcher::Event::InitDone => {
                let listed = self.relisting.take().unwrap_or_default();
                let old = std::mem::replace(&mut self.seen, listed);
                let repairs: BTreeSet<String> = old
                    .into_iter()
                    .filter(|(k, (_, write))| {
                        self.seen
                            .get(k)
                            .is_none_or(|(_, now)| changed_by_others(write, now))
                    })
                    .map(|(_, (tenant, _))| tenant)
                    .collect();
                repairs.into_iter().collect()
            }
            watcher::Event::Apply(meta) => {
                let Some(tenant) = owning_tenant(&meta) else {
                    return Vec::new();
                };
                let write = last_write(&meta);
                let before = self
                    .seen
                    .insert(key(&meta), (tenant.clone(), write.clone()));
                match before {
                    Some((_, old)) if changed_by_others(&old, &write) => vec![tenant],
                    _ => Vec::new(),
                }
            }
            watcher::Event::Delete(meta) => {
                self.seen.remove(&key(&meta));
                owning_tenant(&meta).into_iter().collect()
            }
        }
    }
}

/// Whether the newest write changed from `old` to `new` and is not the operator's.
fn changed_by_others(old: &LastWrite, new: &LastWrite) -> bool {
    old != new
        && new
            .as_ref()
            .is_some_and(|(_, manager)| manager != FIELD_MANAGER)
}

/// Starts one metadata watcher per child kind; each Tenant whose child needs a repair is sent
/// on `repairs`. They run until `repairs` is closed or the set is dropped.
pub fn spawn_child_watchers(client: &Client, repairs: &mpsc::Sender<String>) -> JoinSet<()> {
    let mut set = JoinSet::new();
    spawn_child_kind::<ServiceAccount>(&mut set, client, repairs);
    spawn_child_kind::<ConfigMap>(&mut set, client, repairs);
    spawn_child_kind::<Secret>(&mut set, client, repairs);
    spawn_child_kind::<Deployment>(&mut set, client, repairs);
    spawn_child_kind::<Service>(&mut set, client, repairs);
    spawn_child_kind::<PodDisruptionBudget>(&mut set, client, repairs);
    spawn_child_kind::<NetworkPolicy>(&mut set, client, repairs);
    set
}

fn spawn_child_kind<K>(set: &mut JoinSet<()>, client: &Client, repairs: &mpsc::Sender<String>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let api: Api<PartialObjectMeta<K>> = Api::all(client.clone());
    let config = watcher::Config::default().labels(&child_selector());
    let repairs = repairs.clone();
    set.spawn(async move {
        let kind = K::kind(&());
        let mut tracker = ChildTracker::default();
        let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
        while let Some(item) = stream.next().await {
            let event = match item {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(%kind, error = %e, "child watch failed; retrying with backoff");
                    continue;
                }
            };
            let metadata = match event {
                watcher::Event::Init => watcher::Event::Init,
                watcher::Event::InitDone => watcher::Event::InitDone,
                watcher::Event::InitApply(o) => watcher::Event::InitApply(o.metadata),
                watcher::Event::Apply(o) => watcher::Event::Apply(o.metadata),
                watcher::Event::Delete(o) => watcher::Event::Delete(o.metadata),
            };
            for tenant in tracker.on_event(metadata) {
                tracing::info!(%kind, %tenant, "a child was deleted or changed by someone else; repairing");
                if repairs.send(tenant).await.is_err() {
                    return;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::testing::{query_param, MockApi};
    use ::kube::client::Body;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        ManagedFieldsEntry, OwnerReference, Time,
    };

    fn entry(manager: &str, time: &str, subresource: Option<&str>) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            time: Some(Time(time.parse().expect("time"))),
            subresource: subresource.map(Into::into),
            ..ManagedFieldsEntry::default()
        }
    }

    fn child(name: &str, fields: Vec<ManagedFieldsEntry>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team-a".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "bulkhead.dev/v1alpha1".into(),
                kind: "Tenant".into(),
                name: "acme".into(),
                uid: "u".into(),
                ..OwnerReference::default()
            }]),
            managed_fields: Some(fields),
            ..ObjectMeta::default()
        }
    }

    fn listed(tracker: &mut ChildTracker, children: Vec<ObjectMeta>) -> Vec<String> {
        assert!(tracker.on_event(watcher::Event::Init).is_empty());
        for c in children {
            assert!(tracker.on_event(watcher::Event::InitApply(c)).is_empty());
        }
        tracker.on_event(watcher::Event::InitDone)
    }

    const T1: &str = "2026-01-01T00:00:00Z";
    const T2: &str = "2026-01-01T00:01:00Z";

    #[test]
    fn a_deleted_child_asks_for_its_tenant_to_be_repaired() {
        let mut tracker = ChildTracker::default();
        let ours = vec![entry(FIELD_MANAGER, T1, None)];
        assert!(listed(&mut tracker, vec![child("bulkhead-router", ours.clone())]).is_empty());
        assert_eq!(
            tracker.on_event(watcher::Event::Delete(child("bulkhead-router", ours))),
            ["acme"]
        );
    }

    #[test]
    fn an_edit_by_someone_else_is_repaired_and_our_own_writes_are_not() {
        let mut tracker = ChildTracker::default();
        listed(
            &mut tracker,
            vec![child(
                "bulkhead-router",
                vec![entry(FIELD_MANAGER, T1, None)],
            )],
        );
        // Our own apply, then the Deployment controller's status: nothing to repair.
        let ours = child("bulkhead-router", vec![entry(FIELD_MANAGER, T2, None)]);
        assert!(tracker.on_event(watcher::Event::Apply(ours)).is_empty());
        let status = child(
            "bulkhead-router",
            vec![
                entry(FIELD_MANAGER, T1, None),
                entry("kube-controller-manager", T2, Some("status")),
            ],
        );
        assert!(tracker.on_event(watcher::Event::Apply(status)).is_empty());
        // `kubectl edit` of the spec: repaired.
        let edited = child(
            "bulkhead-router",
            vec![
                entry(FIELD_MANAGER, T1, None),
                entry("kubectl-edit", T2, None),
            ],
        );
        assert_eq!(
            tracker.on_event(watcher::Event::Apply(edited.clone())),
            ["acme"]
        );
        // The same object seen again (a status update after): nothing new.
        assert!(tracker.on_event(watcher::Event::Apply(edited)).is_empty());
    }

    #[test]
    fn a_child_gone_during_a_relist_is_repaired() {
        let mut tracker = ChildTracker::default();
        let ours = vec![entry(FIELD_MANAGER, T1, None)];
        listed(
            &mut tracker,
            vec![
                child("bulkhead-router", ours.clone()),
                child("other", ours.clone()),
            ],
        );
        assert_eq!(listed(&mut tracker, vec![child("other", ours)]), ["acme"]);
    }

    #[test]
    fn children_of_no_tenant_are_ignored() {
        let mut tracker = ChildTracker::default();
        let mut stray = child("x", vec![]);
        stray.owner_references = None;
        assert!(tracker.on_event(watcher::Event::Delete(stray)).is_empty());
    }

    #[test]
    fn rbac_grants_list_and_watch_on_every_child_kind() {
        use crate::rbac::{allows, Scope};
        let children = [
            ("", "serviceaccounts"),
            ("", "configmaps"),
            ("", "secrets"),
            ("apps", "deployments"),
            ("", "services"),
            ("policy", "poddisruptionbudgets"),
            ("networking.k8s.io", "networkpolicies"),
        ];
        for (group, resource) in children {
            for verb in ["list", "watch"] {
                assert!(
                    allows(group, resource, verb, Scope::Cluster),
                    "{verb} {resource}"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_network_policy_deletion_watch_event_becomes_a_repair() {
        let (client, mut mock) = MockApi::pair();
        let (tx, mut rx) = mpsc::channel(4);
        let mut set = JoinSet::new();
        spawn_child_kind::<NetworkPolicy>(&mut set, &client, &tx);
        let meta = serde_json::to_value(child(
            "bulkhead-router",
            vec![entry(FIELD_MANAGER, T1, None)],
        ))
        .expect("meta");
        let mut object = serde_json::json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": meta
        });
        object["metadata"]["resourceVersion"] = "9".into();
        let (request, send) = mock.next_request().await;
        assert_eq!(
            request.uri().path(),
            "/apis/networking.k8s.io/v1/networkpolicies"
        );
        assert_eq!(
            query_param(&request, "labelSelector").as_deref(),
            Some("app.kubernetes.io%2Fmanaged-by%3Dbulkhead-operator")
        );
        let list = serde_json::json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
            "metadata": {"resourceVersion": "10"}, "items": [object]
        });
        send.send_response(
            http::Response::builder()
                .body(Body::from(serde_json::to_vec(&list).expect("json")))
                .expect("response"),
        );
        let (request, send) = mock.next_request().await;
        assert_eq!(query_param(&request, "watch").as_deref(), Some("true"));
        let deleted = serde_json::json!({"type": "DELETED", "object": object});
        let mut line = serde_json::to_vec(&deleted).expect("json");
        line.push(b'\n');
        send.send_response(
            http::Response::builder()
                .body(Body::from(line))
                .expect("response"),
        );
        let repair = tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv())
            .await
            .expect("a repair before any resync");
        assert_eq!(repair.as_deref(), Some("acme"));
        set.abort_all();
    }
}
