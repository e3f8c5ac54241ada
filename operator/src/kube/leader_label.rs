//! The leader's pod label: snapshot clients reach only the leader.
//!
//! Only the elected operator serves snapshot streams (a standby compiles all the same, so a
//! takeover serves at once), yet every replica is ready. The operator's Service therefore selects
//! [`LEADER_LABEL`]` = "true"` as well as the app label, and the leader keeps that label on its own
//! pod: it removes the label from any other pod (a former leader that died without cleaning up)
//! before it labels itself, and removes its own when it stops leading. A restarted container
//! removes a label its pod may still carry from an earlier life. Rollouts are not stalled: they
//! wait for readiness, which standbys have.

use super::leader::{ElectionError, API_CALL_TIMEOUT};
use ::kube::api::{Api, ListParams, Patch, PatchParams};
use ::kube::Client;
use k8s_openapi::api::core::v1::Pod;

/// The label the operator's Service selects, kept on the leader's pod only.
pub const LEADER_LABEL: &str = "bulkhead.dev/leader";
/// The label's value on the leader's pod.
pub const LEADER_VALUE: &str = "true";

/// Keeps [`LEADER_LABEL`] on this pod while it leads, and on no other.
#[derive(Clone)]
pub struct LeaderLabel {
    pods: Api<Pod>,
    pod: String,
}

impl std::fmt::Debug for LeaderLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderLabel")
            .field("pod", &self.pod)
            .finish_non_exhaustive()
    }
}

impl LeaderLabel {
    /// The label of pod `pod` in `namespace` (the operator's own).
    pub fn new(client: Client, namespace: &str, pod: impl Into<String>) -> Self {
        Self {
            pods: Api::namespaced(client, namespace),
            pod: pod.into(),
        }
    }

    /// Removes the label from every other pod, then puts it on this one.
    pub async fn claim(&self) -> Result<(), ElectionError> {
        bounded(async {
            let selector = format!("{LEADER_LABEL}={LEADER_VALUE}");
            let labelled = self
                .pods
                .list_metadata(&ListParams::default().labels(&selector))
                .await?;
            for other in labelled.items {
                match other.metadata.name {
                    Some(name) if name != self.pod => self.set(&name, None).await?,
                    _ => {}
                }
            }
            self.set(&self.pod, Some(LEADER_VALUE)).await
        })
        .await
    }

    /// Removes the label from this pod.
    pub async fn resign(&self) -> Result<(), ElectionError> {
        bounded(self.set(&self.pod, None)).await
    }

    async fn set(&self, pod: &str, value: Option<&str>) -> Result<(), ::kube::Error> {
        let patch = serde_json::json!({ "metadata": { "labels": { LEADER_LABEL: value } } });
        match self
            .pods
            .patch_metadata(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            // A pod that is gone carries no label.
            Err(::kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// `call` under [`API_CALL_TIMEOUT`].
async fn bounded<F>(call: F) -> Result<(), ElectionError>
where
    F: std::future::Future<Output = Result<(), ::kube::Error>>,
{
    tokio::time::timeout(API_CALL_TIMEOUT, call)
        .await
        .map_err(|_| ElectionError::Timeout(API_CALL_TIMEOUT))?
        .map_err(ElectionError::Api)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::testing::{failure, json_body, query_param, respond_json, MockApi};
    use crate::rbac::{allows, Scope};

    fn pod(name: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "namespace": "bulkhead-system",
                          "labels": { LEADER_LABEL: LEADER_VALUE } }
        })
    }

    #[tokio::test]
    async fn a_new_leader_takes_the_label_from_a_dead_one() {
        let (client, mut mock) = MockApi::pair();
        let label = LeaderLabel::new(client, "bulkhead-system", "operator-b");
        let serve = async {
            let (request, send) = mock.next_request().await;
            assert_eq!(request.method(), http::Method::GET);
            assert_eq!(
                request.uri().path(),
                "/api/v1/namespaces/bulkhead-system/pods"
            );
            assert_eq!(
                query_param(&request, "labelSelector").as_deref(),
                Some("bulkhead.dev%2Fleader%3Dtrue")
            );
            assert!(allows("", "pods", "list", Scope::OperatorNamespace));
            respond_json(
                send,
                200,
                &serde_json::json!({
                    "apiVersion": "v1", "kind": "PodList", "metadata": {},
                    "items": [pod("operator-a"), pod("operator-b")]
                }),
            );
            let mut patched = Vec::new();
            for _ in 0..2 {
                let (request, send) = mock.next_request().await;
                assert_eq!(request.method(), http::Method::PATCH);
                assert!(allows("", "pods", "patch", Scope::OperatorNamespace));
                let path = request.uri().path().to_owned();
                let body = json_body(request).await;
                patched.push((path, body["metadata"]["labels"][LEADER_LABEL].clone()));
                respond_json(send, 200, &pod("x"));
            }
            assert_eq!(
                patched,
                vec![
                    (
                        "/api/v1/namespaces/bulkhead-system/pods/operator-a".to_owned(),
                        serde_json::Value::Null
                    ),
                    (
                        "/api/v1/namespaces/bulkhead-system/pods/operator-b".to_owned(),
                        serde_json::json!("true")
                    ),
                ],
                "the dead leader loses the label before the new one gets it"
            );
        };
        let (claimed, ()) = tokio::join!(label.claim(), serve);
        claimed.expect("claimed");
    }

    #[tokio::test]
    async fn resigning_removes_the_label_and_a_gone_pod_is_fine() {
        let (client, mut mock) = MockApi::pair();
        let label = LeaderLabel::new(client, "bulkhead-system", "operator-a");
        let serve = async {
            let (request, send) = mock.next_request().await;
            assert_eq!(request.method(), http::Method::PATCH);
            let body = json_body(request).await;
            assert_eq!(
                body,
                serde_json::json!({ "metadata": { "labels": { LEADER_LABEL: null } } })
            );
            respond_json(send, 404, &failure(404, "NotFound", "pods not found"));
        };
        let (resigned, ()) = tokio::join!(label.resign(), serve);
        resigned.expect("a missing pod has no label");
    }
}
