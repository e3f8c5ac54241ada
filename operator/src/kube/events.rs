//! Kubernetes Events for what a cluster admin or tenant must notice but no status holds: a data
//! plane rejecting a snapshot (the router or edge keeps serving the previous one; the event names
//! the Tenant or the edge Deployment, the version, the subscriber and the reason), and an object
//! the operator cannot decode (the event is about that object: it is not served until fixed).
//!
//! The control loop sends [`Notice`]s on a bounded channel and never waits for the API server;
//! [`run_events`] publishes them through kube-rs's [`Recorder`] (which folds repeats into an
//! event series) while this replica leads, and drops them otherwise. A full channel drops notices
//! (they are also logged and counted by the control loop).

use super::decode::Unreadable;
use ::kube::runtime::events::{Event, EventType, Recorder, Reporter};
use ::kube::Client;
use k8s_openapi::api::core::v1::ObjectReference;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Capacity of the channel from the control loop to the events task.
pub const NOTICE_QUEUE: usize = 256;
/// The `reportingController` of Bulkhead's events.
pub const REPORTING_CONTROLLER: &str = "bulkhead.dev/operator";
/// Name of the edge Deployment (the object edge events are about).
pub const EDGE_DEPLOYMENT: &str = "bulkhead-edge";

/// Something worth an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A tenant router refused a snapshot.
    TenantSnapshotRejected {
        /// The Tenant.
        tenant: String,
        /// Its UID, when known.
        uid: Option<String>,
        /// The subscriber that refused (e.g. `router/acme/<pod>`).
        subscriber: String,
        /// The version refused.
        version: u64,
        /// Why.
        reason: String,
    },
    /// An object cannot be decoded by the operator's types; it is not served.
    ObjectUnreadable(Box<Unreadable>),
    /// The edge refused its snapshot.
    EdgeSnapshotRejected {
        /// The subscriber that refused.
        subscriber: String,
        /// The version refused.
        version: u64,
        /// Why.
        reason: String,
    },
}

/// Longest `note` the API server accepts (1 kB), less room for the prefix.
const MAX_NOTE: usize = 1000;

fn truncate(mut s: String) -> String {
    if s.len() > MAX_NOTE {
        let mut end = MAX_NOTE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// A Warning event of the snapshot-serving action.
fn rejection(reason: &str, note: String) -> Event {
    Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(truncate(note)),
        action: "ServeSnapshot".into(),
        secondary: None,
    }
}

impl Notice {
    /// The event and the object it is about; `system_namespace` holds the edge.
    pub fn to_event(&self, system_namespace: &str) -> (Event, ObjectReference) {
        match self {
            Self::TenantSnapshotRejected {
                tenant,
                uid,
                subscriber,
                version,
                reason,
            } => (
                rejection(
                    "SnapshotRejected",
                    format!("{subscriber} rejected snapshot version {version} and keeps serving the previous one: {reason}"),
                ),
                ObjectReference {
                    api_version: Some("bulkhead.dev/v1alpha1".into()),
                    kind: Some("Tenant".into()),
                    name: Some(tenant.clone()),
                    uid: uid.clone(),
                    ..ObjectReference::default()
                },
            ),
            Self::ObjectUnreadable(u) => (
                Event {
                    type_: EventType::Warning,
                    reason: "Undecodable".into(),
                    note: Some(truncate(format!(
                        "Bulkhead cannot read this {} and does not serve it until it can: {}",
                        u.kind, u.error
                    ))),
                    action: "Decode".into(),
                    secondary: None,
                },
                ObjectReference {
                    api_version: Some(u.api_version.clone()),
                    kind: Some(u.kind.as_str().to_owned()),
                    name: Some(u.name.clone()),
                    namespace: u.namespace.clone(),
                    uid: u.uid.clone(),
                    ..ObjectReference::default()
                },
            ),
            Self::EdgeSnapshotRejected {
                subscriber,
                version,
                reason,
            } => (
                rejection(
                    "EdgeSnapshotRejected",
                    format!("{subscriber} rejected edge snapshot version {version} and keeps serving the previous one: {reason}"),
                ),
                ObjectReference {
                    api_version: Some("apps/v1".into()),
                    kind: Some("Deployment".into()),
                    name: Some(EDGE_DEPLOYMENT.into()),
                    namespace: Some(system_namespace.to_owned()),
                    ..ObjectReference::default()
                },
            ),
        }
    }
}

/// Publishes notices as events while `leading` is true, until `shutdown` or until every sender
/// is gone.
pub async fn run_events(
    client: Client,
    instance: Option<String>,
    system_namespace: String,
    mut notices: mpsc::Receiver<Notice>,
    leading: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: REPORTING_CONTROLLER.into(),
            instance,
        },
    );
    loop {
        let notice = tokio::select! {
            () = shutdown.cancelled() => return,
            n = notices.recv() => match n {
                Some(n) => n,
                None => return,
            },
        };
        if !*leading.borrow() {
            continue;
        }
        let (event, reference) = notice.to_event(&system_namespace);
        let published = tokio::select! {
            () = shutdown.cancelled() => return,
            r = recorder.publish(&event, &reference) => r,
        };
        if let Err(e) = published {
            tracing::warn!(error = %e, reason = %event.reason, "cannot publish a Kubernetes event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::testing::{json_body, respond_json, MockApi};
    use crate::rbac::{allows, Scope};

    fn rejected() -> Notice {
        Notice::TenantSnapshotRejected {
            tenant: "acme".into(),
            uid: Some("0b5c2f4e-0000-4000-8000-000000000001".into()),
            subscriber: "router/acme/router-7d9f".into(),
            version: 12,
            reason: "certificate for www.acme.test does not load".into(),
        }
    }

    #[tokio::test]
    async fn a_rejection_becomes_a_warning_event_about_the_tenant() {
        let (client, mut api) = MockApi::pair();
        let (tx, rx) = mpsc::channel(4);
        let (_leading_tx, leading) = watch::channel(true);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_events(
            client,
            Some("operator-0".into()),
            "bulkhead-system".into(),
            rx,
            leading,
            shutdown.clone(),
        ));
        tx.send(rejected()).await.expect("sent");
        let (request, send) = api.next_request().await;
        assert_eq!(request.method(), http::Method::POST);
        let path = request.uri().path().to_owned();
        assert_eq!(path, "/apis/events.k8s.io/v1/namespaces/default/events");
        assert!(allows("events.k8s.io", "events", "create", Scope::Cluster));
        let body = json_body(request).await;
        assert_eq!(body["type"], "Warning");
        assert_eq!(body["reason"], "SnapshotRejected");
        assert_eq!(body["regarding"]["kind"], "Tenant");
        assert_eq!(body["regarding"]["name"], "acme");
        assert_eq!(body["reportingController"], REPORTING_CONTROLLER);
        let note = body["note"].as_str().expect("note");
        assert!(
            note.contains("version 12") && note.contains("router/acme/router-7d9f"),
            "{note}"
        );
        respond_json(send, 201, &body);
        shutdown.cancel();
        task.await.expect("events task");
    }

    #[tokio::test]
    async fn a_standby_replica_publishes_nothing() {
        let (client, mut api) = MockApi::pair();
        let (tx, rx) = mpsc::channel(4);
        let (leading_tx, leading) = watch::channel(false);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_events(
            client,
            None,
            "bulkhead-system".into(),
            rx,
            leading,
            shutdown.clone(),
        ));
        tx.send(rejected()).await.expect("sent");
        // Leadership arrives: the next notice is published, the one before was dropped.
        tokio::task::yield_now().await;
        let edge = Notice::EdgeSnapshotRejected {
            subscriber: "edge/bulkhead-edge-1".into(),
            version: 3,
            reason: "bad".into(),
        };
        // Wait until the first notice was consumed (the channel is empty again).
        while tx.capacity() < 4 {
            tokio::task::yield_now().await;
        }
        leading_tx.send_replace(true);
        tx.send(edge).await.expect("sent");
        let (request, send) = api.next_request().await;
        assert_eq!(
            request.uri().path(),
            "/apis/events.k8s.io/v1/namespaces/bulkhead-system/events"
        );
        let body = json_body(request).await;
        assert_eq!(body["reason"], "EdgeSnapshotRejected");
        assert_eq!(body["regarding"]["kind"], "Deployment");
        respond_json(send, 201, &body);
        shutdown.cancel();
        task.await.expect("events task");
    }

    #[tokio::test]
    async fn posted_events_fit_the_api_server_limits() {
        use bulkhead_crds::api_limits::{
            check_object, condition_reason, dns1123_subdomain, MAX_EVENT_NOTE, MAX_EVENT_REASON,
        };
        let (client, mut api) = MockApi::pair();
        let (tx, rx) = mpsc::channel(4);
        let (_leading_tx, leading) = watch::channel(true);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_events(
            client,
            Some("operator-0".into()),
            "bulkhead-system".into(),
            rx,
            leading,
            shutdown.clone(),
        ));
        let notices = [
            Notice::TenantSnapshotRejected {
                tenant: "a".repeat(63),
                uid: Some("0b5c2f4e-0000-4000-8000-000000000001".into()),
                subscriber: format!("router/{}/{}", "a".repeat(63), "p".repeat(253)),
                version: u64::MAX,
                reason: "é".repeat(40_000),
            },
            Notice::EdgeSnapshotRejected {
                subscriber: "edge/bulkhead-edge-1".into(),
                version: u64::MAX,
                reason: "x".repeat(40_000),
            },
        ];
        for notice in notices {
            tx.send(notice).await.expect("sent");
            let (request, send) = api.next_request().await;
            let body = json_body(request).await;
            assert_eq!(check_object(&body), vec![], "{body}");
            let note = body["note"].as_str().expect("note");
            assert!(note.len() <= MAX_EVENT_NOTE, "{} bytes", note.len());
            for field in ["reason", "action"] {
                let value = body[field].as_str().expect(field);
                assert!(value.len() <= MAX_EVENT_REASON, "{field} {value}");
                assert_eq!(condition_reason(value), Ok(()), "{field} {value}");
            }
            let regarding = body["regarding"]["name"].as_str().expect("regarding");
            assert_eq!(dns1123_subdomain(regarding), Ok(()));
            respond_json(send, 201, &body);
        }
        shutdown.cancel();
        task.await.expect("events task");
    }

    #[test]
    fn long_reasons_are_cut_to_what_the_api_server_accepts() {
        let n = Notice::EdgeSnapshotRejected {
            subscriber: "edge/x".into(),
            version: 1,
            reason: "é".repeat(2000),
        };
        let (event, _) = n.to_event("ns");
        assert!(event.note.expect("note").len() <= MAX_NOTE);
    }
}
