//! The edge's bootstrap ConfigMap: the last edge snapshot an edge acknowledged, so that an edge
//! pod restarted while the operator is down still routes every onboarded tenant.
//!
//! `deploy/edge.yaml` mounts the ConfigMap [`EDGE_BOOTSTRAP_CONFIG_MAP`] (optional) and passes its
//! [`BOOTSTRAP_KEY`] to `--bootstrap`. The leader keeps it current: every edge snapshot that an
//! edge acknowledged is written (a snapshot some edge refused never becomes anyone's bootstrap), at
//! most once per [`EDGE_BOOTSTRAP_MIN_INTERVAL`], always the newest (changes in between are
//! coalesced), retried after [`EDGE_BOOTSTRAP_RETRY`] when the write fails. The edge snapshot holds
//! hostnames and router addresses only, never keys, so a ConfigMap is the right home.

use super::onboarding::{apply, ApplyError};
use crate::children::{BOOTSTRAP_KEY, MAX_BOOTSTRAP_BYTES};
use crate::metrics::OperatorMetrics;
use ::kube::Client;
use bulkhead_crds::snapshot::EdgeSnapshot;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Name of the edge's bootstrap ConfigMap, in the operator's (and the edge's) namespace.
pub const EDGE_BOOTSTRAP_CONFIG_MAP: &str = "bulkhead-edge-bootstrap";
/// Shortest time between two writes of the ConfigMap (onboarding bursts become one write).
pub const EDGE_BOOTSTRAP_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// How long a failed write waits before it is tried again.
pub const EDGE_BOOTSTRAP_RETRY: Duration = Duration::from_secs(10);

/// Why the edge's bootstrap could not be written.
#[derive(Debug, thiserror::Error)]
pub enum EdgeBootstrapError {
    /// The snapshot does not fit in a ConfigMap.
    #[error("the edge snapshot is {len} bytes, more than the {max} a ConfigMap may hold", max = MAX_BOOTSTRAP_BYTES)]
    TooLarge {
        /// Its length as JSON.
        len: usize,
    },
    /// The snapshot could not be serialised.
    #[error("the edge snapshot cannot be serialised: {0}")]
    Encoding(#[from] serde_json::Error),
    /// The API server refused the write.
    #[error(transparent)]
    Apply(Box<ApplyError>),
}

/// The ConfigMap holding `snapshot` as JSON, in `namespace`.
pub fn edge_bootstrap_config_map(
    namespace: &str,
    snapshot: &EdgeSnapshot,
) -> Result<ConfigMap, EdgeBootstrapError> {
    let json = serde_json::to_string(snapshot)?;
    if json.len() > MAX_BOOTSTRAP_BYTES {
        return Err(EdgeBootstrapError::TooLarge { len: json.len() });
    }
    let labels = BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "bulkhead-edge".to_owned(),
        ),
        (
            "app.kubernetes.io/part-of".to_owned(),
            "bulkhead".to_owned(),
        ),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "bulkhead-operator".to_owned(),
        ),
    ]);
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(EDGE_BOOTSTRAP_CONFIG_MAP.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(BOOTSTRAP_KEY.to_owned(), json)])),
        ..ConfigMap::default()
    })
}

/// Writes every acknowledged edge snapshot `acked` carries to the bootstrap ConfigMap in
/// `namespace`, rate-limited and retried (see the module documentation), until `shutdown`.
pub async fn run_edge_bootstrap(
    client: Client,
    namespace: String,
    mut acked: watch::Receiver<Option<Arc<EdgeSnapshot>>>,
    metrics: OperatorMetrics,
    shutdown: CancellationToken,
) {
    let mut written: Option<u64> = None;
    acked.mark_changed();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = acked.changed() => if changed.is_err() { return },
        }
        let Some(snapshot) = acked.borrow_and_update().clone() else {
            continue;
        };
        if written == Some(snapshot.version) {
            continue;
        }
        let outcome = async {
            let config_map = edge_bootstrap_config_map(&namespace, &snapshot)?;
            apply(&client, &namespace, &config_map)
                .await
                .map_err(|e| EdgeBootstrapError::Apply(Box::new(e)))?;
            Ok::<_, EdgeBootstrapError>(())
        };
        let pause = match outcome.await {
            Ok(()) => {
                tracing::info!(
                    version = snapshot.version,
                    routes = snapshot.routes.len(),
                    "edge bootstrap written"
                );
                written = Some(snapshot.version);
                EDGE_BOOTSTRAP_MIN_INTERVAL
            }
            Err(e) => {
                metrics.error("edge_bootstrap");
                tracing::warn!(version = snapshot.version, error = %e, "cannot write the edge bootstrap; retrying");
                acked.mark_changed();
                EDGE_BOOTSTRAP_RETRY
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::testing::{json_body, respond_json, MockApi};
    use crate::rbac::{allows, Scope};

    fn snapshot(version: u64) -> Arc<EdgeSnapshot> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "version": version,
                "routes": [{"hostname": "*.acme.test", "tenant": "acme"}],
                "tenants": {"acme": {"https": ["10.0.0.7:8443"], "http": ["10.0.0.7:8080"]}}
            }))
            .expect("edge snapshot"),
        )
    }

    #[test]
    fn the_config_map_holds_the_snapshot_as_the_edge_reads_it() {
        let s = snapshot(7);
        let cm = edge_bootstrap_config_map("bulkhead-system", &s).expect("renders");
        assert_eq!(cm.metadata.name.as_deref(), Some(EDGE_BOOTSTRAP_CONFIG_MAP));
        let json = &cm.data.as_ref().expect("data")[BOOTSTRAP_KEY];
        let back: EdgeSnapshot = serde_json::from_str(json).expect("the edge's own type");
        assert_eq!(&back, s.as_ref());
    }

    /// Three acknowledged snapshots in a burst become two writes: the first at once, then the
    /// newest after the interval; the one in between is never written.
    #[tokio::test(start_paused = true)]
    async fn acknowledged_snapshots_are_written_rate_limited_newest_first() {
        let (client, mut mock) = MockApi::pair();
        let (tx, rx) = watch::channel(Some(snapshot(1)));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_edge_bootstrap(
            client,
            "bulkhead-system".into(),
            rx,
            OperatorMetrics::new(),
            shutdown.clone(),
        ));
        let mut versions = Vec::new();
        for round in 0..2 {
            let (request, send) = mock.next_request().await;
            assert_eq!(request.method(), http::Method::PATCH);
            assert_eq!(
                request.uri().path(),
                "/api/v1/namespaces/bulkhead-system/configmaps/bulkhead-edge-bootstrap"
            );
            assert!(allows("", "configmaps", "patch", Scope::OperatorNamespace));
            let body = json_body(request).await;
            let written: EdgeSnapshot =
                serde_json::from_str(body["data"][BOOTSTRAP_KEY].as_str().expect("data"))
                    .expect("snapshot");
            versions.push(written.version);
            respond_json(send, 200, &body);
            if round == 0 {
                tx.send_replace(Some(snapshot(2)));
                tx.send_replace(Some(snapshot(3)));
            }
        }
        assert_eq!(versions, vec![1, 3]);
        shutdown.cancel();
        task.await.expect("task");
    }
}
