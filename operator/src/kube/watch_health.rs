//! What the watchers could not read, as the operator reports it: the readiness detail
//! (`/readyz` shows it while the operator is ready, since every other kind and tenant is served)
//! and the gauges `bulkhead_operator_degraded_kinds{kind}` and
//! `bulkhead_operator_undecodable_objects_current{kind}`.
//!
//! | situation | readiness | detail | metrics |
//! |---|---|---|---|
//! | a kind's list fails (not 404) for `--watch-degrade-after` | ready once the rest compiled | `degraded kinds: TCPRoute (…)` | `degraded_kinds{kind} 1` |
//! | an object cannot be decoded | unaffected | `undecodable objects: HTTPRoute team-a/auth (…)` | `undecodable_objects_total{kind}` +1 per failure seen, `undecodable_objects_current{kind}` |

use super::store::ObjectStore;
use super::watch::WATCHED_KINDS;
use crate::index::Kind;
use crate::metrics::{KindLabel, OperatorMetrics};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Most undecodable objects named in the readiness detail; the rest are counted.
pub const MAX_DETAIL_OBJECTS: usize = 10;

/// The readiness detail of `store`: degraded kinds and undecodable objects (empty when all is
/// well).
pub fn readiness_detail(store: &ObjectStore) -> String {
    let mut out = String::new();
    let degraded: Vec<String> = store
        .degraded_kinds()
        .map(|(kind, reason)| format!("{kind} ({reason})"))
        .collect();
    if !degraded.is_empty() {
        let _ = write!(out, "degraded kinds: {}", degraded.join("; "));
    }
    // Only the objects shown are formatted: the detail is rebuilt on every event, and a
    // cluster may hold many objects we cannot decode.
    let total = store.unreadable_objects().count();
    let shown: Vec<String> = store
        .unreadable_objects()
        .take(MAX_DETAIL_OBJECTS)
        .map(|u| {
            let at = match &u.namespace {
                Some(ns) => format!("{ns}/{}", u.name),
                None => u.name.clone(),
            };
            format!("{} {at} ({})", u.kind, u.error)
        })
        .collect();
    if !shown.is_empty() {
        if !out.is_empty() {
            out.push_str("; ");
        }
        let _ = write!(out, "undecodable objects: {}", shown.join("; "));
        if total > shown.len() {
            let _ = write!(out, "; and {} more", total - shown.len());
        }
    }
    out
}

/// Sets the per-kind gauges from `store`.
pub fn update_gauges(store: &ObjectStore, metrics: &OperatorMetrics) {
    let mut unreadable: BTreeMap<Kind, i64> = BTreeMap::new();
    for u in store.unreadable_objects() {
        *unreadable.entry(u.kind).or_default() += 1;
    }
    let degraded: Vec<Kind> = store.degraded_kinds().map(|(k, _)| k).collect();
    for kind in WATCHED_KINDS {
        let label = KindLabel {
            kind: kind.as_str(),
        };
        metrics
            .degraded_kinds
            .get_or_create(&label)
            .set(i64::from(degraded.contains(kind)));
        metrics
            .undecodable_objects_current
            .get_or_create(&label)
            .set(unreadable.get(kind).copied().unwrap_or(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::control::{ControlLoop, Statuses};
    use crate::kube::decode::{Lenient, Unreadable};
    use crate::kube::events::Notice;
    use crate::kube::onboarding::Desired;
    use crate::kube::store::StoreEvent;
    use crate::kube::testing::WORLD;
    use crate::kube::TenantDirectory;
    use crate::objects::{parse_documents, Object};
    use bulkhead_snapshot_wire::{Identity, SnapshotServer, StaticTokens};
    use gateway_api::httproutes::HttpRoute;
    use prometheus_client::registry::Registry;
    use std::path::Path;
    use tokio::sync::{mpsc, watch};
    use tokio::time::Instant;

    struct Harness {
        control: ControlLoop<StaticTokens>,
        statuses: watch::Receiver<Statuses>,
        ready: watch::Receiver<bool>,
        detail: watch::Receiver<String>,
        notices: mpsc::Receiver<Notice>,
        metrics: OperatorMetrics,
    }

    fn harness() -> Harness {
        let (server, _acks) = SnapshotServer::new(StaticTokens::new().with("t", Identity::Edge));
        let (desired_tx, _) = watch::channel(Desired::new());
        let (status_tx, statuses) = watch::channel(Statuses::default());
        let (ready_tx, ready) = watch::channel(false);
        let (detail_tx, detail) = watch::channel(String::new());
        let (notice_tx, notices) = mpsc::channel(8);
        let metrics = OperatorMetrics::new();
        let control = ControlLoop::new(
            server,
            TenantDirectory::new(),
            desired_tx,
            status_tx,
            ready_tx,
        )
        .with_metrics(metrics.clone())
        .with_notices(notice_tx)
        .with_readiness_detail(detail_tx);
        Harness {
            control,
            statuses,
            ready,
            detail,
            notices,
            metrics,
        }
    }

    /// The route `bad`, as the watcher hands it on: an `ExternalAuth` filter our types lack.
    fn unreadable_route() -> Box<Unreadable> {
        let route: Lenient<HttpRoute> = serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "bad", "namespace": "team-a", "uid": "u-bad"},
            "spec": {"parentRefs": [{"name": "web"}], "rules": [{"filters": [
                {"type": "ExternalAuth", "externalAuth": {"protocol": "HTTP",
                 "backendRef": {"name": "auth"}}}]}]}
        }))
        .expect("lenient");
        route.into_result(Kind::HttpRoute).expect_err("undecodable")
    }

    /// Lists every kind with the world's objects; `extra` events end the kind's list.
    fn list(h: &mut Harness, extra: impl Fn(Kind) -> Vec<StoreEvent>) {
        let (objects, errors) = parse_documents(Path::new("w.yaml"), WORLD);
        assert!(errors.is_empty(), "{errors:?}");
        let now = Instant::now();
        for &kind in WATCHED_KINDS {
            h.control.on_event(StoreEvent::Init(kind), now);
            for o in objects.iter().filter(|o| o.kind() == kind) {
                h.control.on_event(StoreEvent::InitApply(o.clone()), now);
            }
            for e in extra(kind) {
                h.control.on_event(e, now);
            }
        }
    }

    fn routes(statuses: &Statuses) -> Vec<String> {
        statuses
            .values()
            .flat_map(|p| p.unpack())
            .filter(|s| s.kind == "HTTPRoute")
            .map(|s| s.metadata.name)
            .collect()
    }

    fn metrics_text(m: &OperatorMetrics) -> String {
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encodes");
        out
    }

    #[tokio::test]
    async fn an_undecodable_route_is_reported_and_every_other_route_is_compiled() {
        let mut h = harness();
        list(&mut h, |kind| {
            let mut events = Vec::new();
            if kind == Kind::HttpRoute {
                events.push(StoreEvent::Unreadable(unreadable_route()));
            }
            events.push(StoreEvent::InitDone(kind));
            events
        });
        assert!(h.control.due().is_some(), "every kind listed");
        h.control.compile();
        assert!(*h.ready.borrow(), "ready: the rest is served");
        assert_eq!(routes(&h.statuses.borrow()), ["app"]);
        let detail = h.detail.borrow().clone();
        assert!(detail.contains("HTTPRoute team-a/bad"), "{detail}");
        assert!(detail.contains("ExternalAuth"), "{detail}");
        let text = metrics_text(&h.metrics);
        assert!(
            text.contains("bulkhead_operator_undecodable_objects_total{kind=\"HTTPRoute\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("bulkhead_operator_undecodable_objects_current{kind=\"HTTPRoute\"} 1"),
            "{text}"
        );
        match h.notices.try_recv() {
            Ok(Notice::ObjectUnreadable(u)) => {
                assert_eq!((u.name.as_str(), u.uid.as_deref()), ("bad", Some("u-bad")));
            }
            other => panic!("expected an event about the route, got {other:?}"),
        }

        // The same failure seen again (a relist) is counted but not reported twice.
        h.control
            .on_event(StoreEvent::Unreadable(unreadable_route()), Instant::now());
        assert!(h.notices.try_recv().is_err(), "one event per failure");

        // Fixed: the route becomes readable, is compiled, and the detail clears.
        let (fixed, _) = parse_documents(
            Path::new("fixed.yaml"),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: bad, namespace: team-a}\nspec: {parentRefs: [{name: web}]}\n",
        );
        let fixed: Vec<Object> = fixed;
        h.control
            .on_event(StoreEvent::Apply(fixed[0].clone()), Instant::now());
        h.control.compile();
        let mut compiled = routes(&h.statuses.borrow());
        compiled.sort();
        assert_eq!(compiled, ["app", "bad"]);
        assert_eq!(*h.detail.borrow(), "");
    }

    #[tokio::test]
    async fn a_route_that_becomes_undecodable_is_no_longer_served() {
        let mut h = harness();
        list(&mut h, |kind| vec![StoreEvent::InitDone(kind)]);
        h.control.compile();
        assert_eq!(routes(&h.statuses.borrow()), ["app"]);
        let mut broken = unreadable_route();
        broken.name = "app".into();
        h.control
            .on_event(StoreEvent::Unreadable(broken), Instant::now());
        h.control.compile();
        assert!(
            routes(&h.statuses.borrow()).is_empty(),
            "the old version is dropped"
        );
        assert!(h.detail.borrow().contains("HTTPRoute team-a/app"));
    }

    #[tokio::test]
    async fn a_degraded_kind_does_not_hold_back_the_first_compile() {
        let mut h = harness();
        list(&mut h, |kind| {
            let mut events = vec![StoreEvent::InitDone(kind)];
            if kind == Kind::TcpRoute {
                events.push(StoreEvent::Degraded(
                    kind,
                    "tcproutes is forbidden (403)".into(),
                ));
            }
            events
        });
        h.control.compile();
        assert!(
            *h.ready.borrow(),
            "the other kinds and the tenant are served"
        );
        assert_eq!(routes(&h.statuses.borrow()), ["app"]);
        assert_eq!(
            *h.detail.borrow(),
            "degraded kinds: TCPRoute (tcproutes is forbidden (403))"
        );
        let text = metrics_text(&h.metrics);
        assert!(
            text.contains("bulkhead_operator_degraded_kinds{kind=\"TCPRoute\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("bulkhead_operator_degraded_kinds{kind=\"HTTPRoute\"} 0"),
            "{text}"
        );

        // The permission is granted: the next list succeeds and the kind recovers.
        let now = Instant::now();
        h.control.on_event(StoreEvent::Init(Kind::TcpRoute), now);
        h.control
            .on_event(StoreEvent::InitDone(Kind::TcpRoute), now);
        assert_eq!(*h.detail.borrow(), "");
        assert!(metrics_text(&h.metrics)
            .contains("bulkhead_operator_degraded_kinds{kind=\"TCPRoute\"} 0"));
    }
}
