//! Statuses shared with other controllers, written with optimistic concurrency: a route's
//! `status.parents` and a policy's (BackendTLSPolicy) `status.ancestors`.
//!
//! Such a list is atomic: whoever writes it writes every entry, including
//! other controllers'. Writing our entries with a forced server-side apply and other controllers'
//! entries from our cache would erase any entry written since the cache saw the route. So a route
//! status is read live, our entries (`controllerName` = [`CONTROLLER_NAME`]) are put in place of
//! the live ones of ours, every other controller's live entry is kept, and the result replaces
//! the status with the live `resourceVersion`: a write in between makes the API server answer 409,
//! and the route is read again and merged again, at most [`ROUTE_STATUS_ATTEMPTS`] times.

use super::FIELD_MANAGER;
use ::kube::api::{Api, DynamicObject, PostParams};
use bulkhead_crds::CONTROLLER_NAME;
use serde_json::Value;

/// Most read-merge-replace rounds of one route status write; each 409 Conflict (another writer
/// got in between) costs one. After the last, the write fails and the status task retries it
/// with the other failed statuses.
pub const ROUTE_STATUS_ATTEMPTS: usize = 5;

/// Whether a `status.parents` entry is Bulkhead's.
fn is_ours(entry: &Value) -> bool {
    entry["controllerName"] == CONTROLLER_NAME
}

/// `desired` (a route status as rendered) with its `parents` replaced by its entries of ours
/// followed by every other controller's entry of `live` (the route's status in the cluster).
pub fn merge_live_parents(desired: &Value, live: Option<&Value>) -> Value {
    merge_live_entries(desired, live, "parents")
}

/// [`merge_live_parents`] for the shared list `list` (`parents` or `ancestors`).
pub fn merge_live_entries(desired: &Value, live: Option<&Value>, list: &str) -> Value {
    let ours = desired[list].as_array().into_iter().flatten();
    let theirs = live
        .and_then(|l| l[list].as_array())
        .into_iter()
        .flatten()
        .filter(|p| !is_ours(p));
    let parents: Vec<Value> = ours.filter(|p| is_ours(p)).chain(theirs).cloned().collect();
    let mut merged = if desired.is_object() {
        desired.clone()
    } else {
        serde_json::json!({})
    };
    merged[list] = Value::Array(parents);
    merged
}

/// Writes `desired` as the status of route `name` (see the module documentation). Nothing is
/// written when the live status already says the same.
pub async fn replace_route_status(
    api: &Api<DynamicObject>,
    name: &str,
    desired: &Value,
) -> Result<(), ::kube::Error> {
    replace_shared_status(api, name, desired, "parents").await
}

/// [`replace_route_status`] for an object whose shared list is `list` (a BackendTLSPolicy's
/// `ancestors`).
pub async fn replace_shared_status(
    api: &Api<DynamicObject>,
    name: &str,
    desired: &Value,
    list: &str,
) -> Result<(), ::kube::Error> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    let mut attempt = 1;
    loop {
        let mut live = api.get(name).await?;
        let merged = merge_live_entries(desired, live.data.get("status"), list);
        if live.data.get("status") == Some(&merged) {
            return Ok(());
        }
        match live.data.as_object_mut() {
            Some(fields) => {
                fields.insert("status".to_owned(), merged);
            }
            None => live.data = serde_json::json!({ "status": merged }),
        }
        match api.replace_status(name, &params, &live).await {
            Err(::kube::Error::Api(e)) if e.code == 409 && attempt < ROUTE_STATUS_ATTEMPTS => {
                tracing::debug!(
                    name,
                    attempt,
                    "route status changed meanwhile; merging again"
                );
                attempt += 1;
            }
            other => return other.map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::status_writer::StatusWriter;
    use crate::kube::testing::{failure, json_body, respond_json, MockApi};
    use crate::kube::FIELD_MANAGER;
    use crate::status::ObjectStatus;
    use serde_json::json;

    fn entry(controller: &str, gateway: &str) -> Value {
        json!({"parentRef": {"name": gateway}, "controllerName": controller, "conditions": []})
    }

    fn route(resource_version: &str, parents: Vec<Value>) -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "app", "namespace": "team-a", "resourceVersion": resource_version},
            "spec": {"parentRefs": [{"name": "web"}]},
            "status": {"parents": parents}
        })
    }

    #[test]
    fn our_entries_replace_ours_and_every_other_live_entry_is_kept() {
        let desired =
            json!({"parents": [entry(CONTROLLER_NAME, "web"), entry("stale.example/cache", "x")]});
        let live =
            json!({"parents": [entry(CONTROLLER_NAME, "old"), entry("example.com/other", "lb")]});
        let merged = merge_live_parents(&desired, Some(&live));
        assert_eq!(
            merged["parents"],
            json!([
                entry(CONTROLLER_NAME, "web"),
                entry("example.com/other", "lb")
            ]),
            "ours from the rendering, theirs from the cluster, none from the cache"
        );
        let detached = merge_live_parents(&json!({"parents": []}), Some(&live));
        assert_eq!(
            detached["parents"],
            json!([entry("example.com/other", "lb")])
        );
    }

    #[tokio::test]
    async fn two_writers_keep_the_other_controllers_entry() {
        // We read the route at version 5 (another controller's entry A), a second controller adds
        // entry B (version 6), our replace at 5 conflicts: the retry reads 6 and keeps A and B.
        // Our cache saw neither: what the status writer is handed carries no foreign entry.
        let (client, mut mock) = MockApi::pair();
        let writer = StatusWriter::new(client);
        let desired = ObjectStatus {
            api_version: "gateway.networking.k8s.io/v1".into(),
            kind: "HTTPRoute".into(),
            metadata: crate::status::ObjectMeta {
                namespace: Some("team-a".into()),
                name: "app".into(),
            },
            status: json!({"parents": [entry(CONTROLLER_NAME, "web")]}),
            tenant: None,
        };
        let a = entry("example.com/a", "lb-a");
        let b = entry("example.com/b", "lb-b");
        let server = async {
            let path = "/apis/gateway.networking.k8s.io/v1/namespaces/team-a/httproutes/app";
            let (request, send) = mock.next_request().await;
            assert_eq!(
                (request.method(), request.uri().path()),
                (&http::Method::GET, path)
            );
            respond_json(send, 200, &route("5", vec![a.clone()]));
            let (request, send) = mock.next_request().await;
            assert_eq!(request.method(), http::Method::PUT);
            assert_eq!(request.uri().path(), format!("{path}/status"));
            assert!(
                request
                    .uri()
                    .query()
                    .is_some_and(|q| q.contains(&format!("fieldManager={FIELD_MANAGER}"))),
                "{:?}",
                request.uri()
            );
            let body = json_body(request).await;
            assert_eq!(body["metadata"]["resourceVersion"], "5");
            respond_json(
                send,
                409,
                &failure(409, "Conflict", "the object has been modified"),
            );
            let (request, send) = mock.next_request().await;
            assert_eq!(request.method(), http::Method::GET);
            respond_json(send, 200, &route("6", vec![a.clone(), b.clone()]));
            let (request, send) = mock.next_request().await;
            assert_eq!(request.method(), http::Method::PUT);
            let body = json_body(request).await;
            assert_eq!(body["metadata"]["resourceVersion"], "6");
            assert_eq!(
                body["status"]["parents"],
                json!([entry(CONTROLLER_NAME, "web"), a.clone(), b.clone()])
            );
            respond_json(send, 200, &body);
        };
        let (written, ()) = tokio::join!(writer.write(&desired), server);
        written.expect("written on the second attempt");
    }

    /// A BackendTLSPolicy's `status.ancestors` is shared like a route's `parents`: our write
    /// keeps the entry another controller wrote, read live.
    #[tokio::test]
    async fn a_policy_status_keeps_the_other_controllers_ancestor() {
        let (client, mut mock) = MockApi::pair();
        let writer = StatusWriter::new(client);
        let ancestor = |controller: &str, gateway: &str| json!({"ancestorRef": {"name": gateway}, "controllerName": controller, "conditions": []});
        let desired = ObjectStatus {
            api_version: "gateway.networking.k8s.io/v1".into(),
            kind: "BackendTLSPolicy".into(),
            metadata: crate::status::ObjectMeta {
                namespace: Some("team-a".into()),
                name: "tls".into(),
            },
            status: json!({"ancestors": [ancestor(CONTROLLER_NAME, "web")]}),
            tenant: None,
        };
        let theirs = ancestor("example.com/mesh", "mesh");
        let server = async {
            let path =
                "/apis/gateway.networking.k8s.io/v1/namespaces/team-a/backendtlspolicies/tls";
            let (request, send) = mock.next_request().await;
            assert_eq!(
                (request.method(), request.uri().path()),
                (&http::Method::GET, path)
            );
            respond_json(
                send,
                200,
                &json!({
                    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "BackendTLSPolicy",
                    "metadata": {"name": "tls", "namespace": "team-a", "resourceVersion": "7"},
                    "spec": {},
                    "status": {"ancestors": [theirs.clone()]}
                }),
            );
            let (request, send) = mock.next_request().await;
            assert_eq!(request.method(), http::Method::PUT);
            assert_eq!(request.uri().path(), format!("{path}/status"));
            let body = json_body(request).await;
            assert_eq!(body["metadata"]["resourceVersion"], "7");
            assert_eq!(
                body["status"]["ancestors"],
                json!([ancestor(CONTROLLER_NAME, "web"), theirs.clone()])
            );
            respond_json(send, 200, &body);
        };
        let (written, ()) = tokio::join!(writer.write(&desired), server);
        written.expect("written");
    }

    #[test]
    fn rbac_grants_reading_routes_and_replacing_their_status() {
        use crate::rbac::{allows, Scope};
        for kind in crate::index::Kind::ROUTES {
            let resource = super::super::status_writer::api_resource("g/v", kind.as_str())
                .expect("route kind")
                .plural;
            let gw = "gateway.networking.k8s.io";
            assert!(allows(gw, &resource, "get", Scope::Cluster), "{resource}");
            let status = format!("{resource}/status");
            assert!(allows(gw, &status, "update", Scope::Cluster), "{status}");
        }
    }

    #[tokio::test]
    async fn conflicts_end_after_the_last_attempt() {
        let (client, mut mock) = MockApi::pair();
        let resource =
            super::super::status_writer::api_resource("gateway.networking.k8s.io/v1", "HTTPRoute")
                .expect("route kind");
        let api: Api<DynamicObject> = Api::namespaced_with(client, "team-a", &resource);
        let desired = json!({"parents": [entry(CONTROLLER_NAME, "web")]});
        let server = async {
            for _ in 0..ROUTE_STATUS_ATTEMPTS {
                let (_, send) = mock.next_request().await;
                respond_json(send, 200, &route("5", vec![]));
                let (_, send) = mock.next_request().await;
                respond_json(send, 409, &failure(409, "Conflict", "modified"));
            }
        };
        let (written, ()) = tokio::join!(replace_route_status(&api, "app", &desired), server);
        assert!(
            matches!(written, Err(::kube::Error::Api(e)) if e.code == 409),
            "the conflict is reported"
        );
    }
}
