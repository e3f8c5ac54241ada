use super::*;
use crate::kube::testing::WORLD;
use crate::objects::{parse_documents, Object};
use bulkhead_crds::CONTROLLER_NAME;
use bulkhead_snapshot_wire::{Identity, StaticTokens};
use std::path::Path;

struct Harness {
    control: ControlLoop<StaticTokens>,
    directory: TenantDirectory,
    desired: watch::Receiver<Desired>,
    statuses: watch::Receiver<Statuses>,
    ready: watch::Receiver<bool>,
}

fn harness() -> Harness {
    let (server, _acks) = SnapshotServer::new(StaticTokens::new().with("t", Identity::Edge));
    let directory = TenantDirectory::new();
    let (desired_tx, desired) = watch::channel(Desired::new());
    let (status_tx, statuses) = watch::channel(Statuses::default());
    let (ready_tx, ready) = watch::channel(false);
    Harness {
        control: ControlLoop::new(server, directory.clone(), desired_tx, status_tx, ready_tx),
        directory,
        desired,
        statuses,
        ready,
    }
}

fn world() -> Vec<Object> {
    let (objects, errors) = parse_documents(Path::new("w.yaml"), WORLD);
    assert!(errors.is_empty(), "{errors:?}");
    objects
}

/// Lists every kind: the world's objects as initial lists.
fn list_everything(control: &mut ControlLoop<StaticTokens>, now: Instant) {
    let objects = world();
    for &kind in WATCHED_KINDS {
        control.on_event(StoreEvent::Init(kind), now);
        for o in objects.iter().filter(|o| o.kind() == kind) {
            control.on_event(StoreEvent::InitApply(o.clone()), now);
        }
        control.on_event(StoreEvent::InitDone(kind), now);
    }
}

fn status(statuses: &Statuses, kind: &str, name: &str) -> ObjectStatus {
    statuses
        .values()
        .flat_map(|p| p.unpack())
        .find(|s| s.kind == kind && s.metadata.name == name)
        .expect("status present")
}

fn condition<'a>(status: &'a serde_json::Value, type_: &str) -> &'a serde_json::Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .expect("condition present")
}

#[tokio::test]
async fn nothing_compiles_before_every_initial_list_is_done() {
    let mut h = harness();
    let now = Instant::now();
    let objects = world();
    for &kind in &WATCHED_KINDS[..WATCHED_KINDS.len() - 1] {
        h.control.on_event(StoreEvent::Init(kind), now);
        for o in objects.iter().filter(|o| o.kind() == kind) {
            h.control.on_event(StoreEvent::InitApply(o.clone()), now);
        }
        h.control.on_event(StoreEvent::InitDone(kind), now);
    }
    assert_eq!(h.control.due(), None, "EndpointSlices not listed yet");
    assert!(!h.directory.is_loaded());
    let last = WATCHED_KINDS[WATCHED_KINDS.len() - 1];
    h.control.on_event(StoreEvent::Init(last), now);
    h.control.on_event(StoreEvent::InitDone(last), now);
    let due = h.control.due().expect("due once synced");
    assert!(due <= now + Debounce::MAX_DELAY);
    assert!(!*h.ready.borrow());
}

#[tokio::test]
async fn a_new_installation_renders_gateway_addresses_again() {
    use crate::status_installation::GatewayAddress;
    let mut h = harness();
    list_everything(&mut h.control, Instant::now());
    h.control.compile();
    let before = h.statuses.borrow().clone();
    assert!(status(&before, "Gateway", "web")
        .status
        .get("addresses")
        .is_none());

    h.control.set_installation(Installation {
        addresses: vec![GatewayAddress::parse("203.0.113.5")],
        crd_bundle: crate::status_installation::CrdBundle::Unknown,
        missing_kinds: Vec::new(),
    });
    let after = h.statuses.borrow().clone();
    assert_eq!(
        status(&after, "Gateway", "web").status["addresses"],
        serde_json::json!([{"type": "IPAddress", "value": "203.0.113.5"}])
    );
    let gateway = status(&after, "Gateway", "web");
    assert_eq!(
        condition(&gateway.status, "Accepted")["lastTransitionTime"],
        condition(&status(&before, "Gateway", "web").status, "Accepted")["lastTransitionTime"],
        "conditions keep their transition times"
    );
}

#[tokio::test]
async fn a_compile_publishes_fills_the_directory_and_hands_on_statuses() {
    let mut h = harness();
    list_everything(&mut h.control, Instant::now());
    h.control.compile();
    assert!(*h.ready.borrow());
    assert_eq!(h.control.published().get("acme"), Some(&1));
    assert!(!h.control.published().contains_key("ghost"), "not served");
    assert_eq!(h.directory.tenant_of("team-a").as_deref(), Some("acme"));
    assert_eq!(h.directory.tenant_of("nowhere"), None);

    let desired = h.desired.borrow().clone();
    assert_eq!(desired.keys().collect::<Vec<_>>(), vec!["acme"]);
    assert!(
        desired["acme"].bootstrap.is_none(),
        "no snapshot is acknowledged yet"
    );

    let statuses = h.statuses.borrow().clone();
    let gateway = status(&statuses, "Gateway", "web");
    assert_eq!(condition(&gateway.status, "Programmed")["status"], "False");
    let acme = status(&statuses, "Tenant", "acme");
    assert_eq!(condition(&acme.status, "Ready")["status"], "False");
    assert_ne!(
        condition(&acme.status, "Ready")["lastTransitionTime"],
        "1970-01-01T00:00:00Z",
        "transition times are stamped"
    );
    assert_eq!(h.control.due(), None, "the burst is consumed");
}

#[tokio::test]
async fn an_acknowledgement_programs_the_gateway_and_promotes_the_bootstrap() {
    let mut h = harness();
    list_everything(&mut h.control, Instant::now());
    h.control.compile();
    let stream = StreamName::tenant("acme").expect("stream");
    h.control.on_ack(
        stream.clone(),
        Ack {
            subscriber: "router/acme/0".into(),
            version: 1,
            outcome: Ok(()),
        },
    );
    let statuses = h.statuses.borrow().clone();
    let gateway = status(&statuses, "Gateway", "web");
    assert_eq!(condition(&gateway.status, "Programmed")["status"], "True");
    let acme = status(&statuses, "Tenant", "acme");
    assert_eq!(condition(&acme.status, "Ready")["status"], "True");
    assert_eq!(acme.status["acknowledgedVersion"], 1);
    let desired = h.desired.borrow().clone();
    let bootstrap = desired["acme"].bootstrap.as_ref().expect("bootstrap");
    assert_eq!(bootstrap.version, 1);
    assert_eq!(bootstrap.tenant, "acme");

    // A rejection changes nothing.
    h.control.on_ack(
        stream,
        Ack {
            subscriber: "router/acme/1".into(),
            version: 2,
            outcome: Err("bad".into()),
        },
    );
    let again = h.statuses.borrow().clone();
    assert_eq!(again, statuses);
}

#[tokio::test]
async fn a_route_detached_from_our_gateways_gets_its_stale_entries_removed() {
    let mut h = harness();
    let now = Instant::now();
    list_everything(&mut h.control, now);
    h.control.compile();
    let route = status(&h.statuses.borrow().clone(), "HTTPRoute", "app");
    assert_eq!(route.status["parents"].as_array().map(Vec::len), Some(1));

    // The route now names another Gateway; the cluster still shows our entry (and another
    // controller's), as the watcher delivers it.
    let route: gateway_api::httproutes::HttpRoute = serde_json::from_value(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "app", "namespace": "team-a"},
        "spec": {"parentRefs": [{"name": "elsewhere"}]},
        "status": {"parents": [
            {"parentRef": {"name": "web"}, "controllerName": CONTROLLER_NAME, "conditions": []},
            {"parentRef": {"name": "elsewhere"}, "controllerName": "example.com/other",
             "conditions": []}
        ]}
    }))
    .expect("route");
    let mut detached = Object::HttpRoute(Box::new(route));
    detached.strip_owned_status();
    h.control.on_event(StoreEvent::Apply(detached), now);
    h.control.compile();
    let route = status(&h.statuses.borrow().clone(), "HTTPRoute", "app");
    let parents = route.status["parents"].as_array().expect("parents");
    assert_eq!(parents.len(), 1, "ours removed: {parents:?}");
    assert_eq!(parents[0]["controllerName"], "example.com/other");

    // A route that never had an entry of ours gets no status from us.
    let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: stranger, namespace: team-a}\nspec:\n  parentRefs: [{name: elsewhere}]\n";
    let mut stranger = parse_documents(Path::new("s.yaml"), yaml).0.remove(0);
    stranger.strip_owned_status();
    h.control.on_event(StoreEvent::Apply(stranger), now);
    h.control.compile();
    let listed = h
        .statuses
        .borrow()
        .values()
        .flat_map(|p| p.unpack())
        .any(|s| s.metadata.name == "stranger");
    assert!(!listed);
}

/// Only an edge snapshot an edge served becomes the edge's bootstrap: a refusal, or an
/// acknowledgement of an older version, leaves the bootstrap as it was.
#[tokio::test]
async fn an_acknowledged_edge_snapshot_becomes_the_edge_bootstrap() {
    let mut h = harness();
    let (tx, rx) = watch::channel(None);
    let mut control = std::mem::replace(&mut h.control, harness().control).with_edge_bootstrap(tx);
    list_everything(&mut control, Instant::now());
    control.compile();
    let edge_ack = |version, outcome| Ack {
        subscriber: "edge/0".into(),
        version,
        outcome,
    };
    control.on_ack(StreamName::Edge, edge_ack(1, Err("bad edge".into())));
    assert!(
        rx.borrow().is_none(),
        "a refused snapshot is nobody's bootstrap"
    );
    control.on_ack(StreamName::Edge, edge_ack(0, Ok(())));
    assert!(rx.borrow().is_none(), "not the version published");
    control.on_ack(StreamName::Edge, edge_ack(1, Ok(())));
    let bootstrap = rx.borrow().clone().expect("promoted");
    assert_eq!(bootstrap.version, 1);
    assert_eq!(
        bootstrap
            .routes
            .iter()
            .map(|r| r.tenant.as_str())
            .collect::<Vec<_>>(),
        vec!["acme"]
    );
}

#[tokio::test]
async fn rejections_become_notices_for_events_and_are_counted() {
    let mut h = harness();
    let (tx, mut rx) = mpsc::channel(4);
    let mut control = std::mem::replace(&mut h.control, harness().control).with_notices(tx);
    list_everything(&mut control, Instant::now());
    control.compile();
    control.on_ack(
        StreamName::tenant("acme").expect("stream"),
        Ack {
            subscriber: "router/acme/1".into(),
            version: 1,
            outcome: Err("certificate does not load".into()),
        },
    );
    control.on_ack(
        StreamName::Edge,
        Ack {
            subscriber: "edge/0".into(),
            version: 1,
            outcome: Err("bad edge".into()),
        },
    );
    assert_eq!(
        rx.try_recv().expect("tenant notice"),
        Notice::TenantSnapshotRejected {
            tenant: "acme".into(),
            uid: Some("0b5c2f4e-0000-4000-8000-000000000001".into()),
            subscriber: "router/acme/1".into(),
            version: 1,
            reason: "certificate does not load".into(),
        }
    );
    assert!(matches!(
        rx.try_recv().expect("edge notice"),
        Notice::EdgeSnapshotRejected { version: 1, .. }
    ));
    let rejected = control
        .metrics()
        .acks
        .get_or_create(&crate::metrics::AckLabel {
            kind: "router",
            outcome: "rejected",
        })
        .get();
    assert_eq!(rejected, 1);
}

#[tokio::test]
async fn deleting_the_tenant_removes_its_stream_and_directory_entry() {
    let mut h = harness();
    let now = Instant::now();
    list_everything(&mut h.control, now);
    h.control.compile();
    let acme = world()
        .into_iter()
        .find(|o| o.kind() == Kind::Tenant)
        .expect("tenant");
    h.control.on_event(StoreEvent::Delete(acme), now);
    assert!(h.control.due().is_some());
    h.control.compile();
    assert!(h.control.published().is_empty());
    assert_eq!(h.directory.tenant_of("team-a"), None);
    assert!(h.desired.borrow().is_empty());
}

/// Admits `token` as `username` through a [`TokenReviewAuth`] on `directory`, the mock API
/// server answering the review.
async fn admit_router(
    directory: &TenantDirectory,
    username: &str,
) -> (
    super::super::auth::TokenReviewAuth,
    bulkhead_snapshot_wire::Admission,
) {
    use crate::kube::testing::{respond_json, MockApi};
    let (client, mut mock) = MockApi::pair();
    let auth =
        super::super::auth::TokenReviewAuth::new(client, directory.clone(), "bulkhead-system");
    let answer = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {},
        "spec": {}, "status": {"authenticated": true, "user": {"username": username},
                               "audiences": [crate::children::SNAPSHOT_AUDIENCE]}
    });
    let serve = async {
        let (_request, send) = mock.next_request().await;
        respond_json(send, 200, &answer);
    };
    let (admission, ()) = tokio::join!(auth.admit("router-token"), serve);
    (auth, admission.expect("admitted"))
}

#[tokio::test]
async fn a_tenant_moved_to_another_namespace_is_no_longer_served_to_the_old_one() {
    let mut h = harness();
    let now = Instant::now();
    list_everything(&mut h.control, now);
    h.control.compile();
    let (auth, admission) =
        admit_router(&h.directory, "system:serviceaccount:team-a:bulkhead-router").await;
    assert_eq!(admission.identity, Identity::Tenant("acme".into()));
    assert!(admission.still_allowed());

    // spec.namespace changes (the CRD forbids it; this is the defence behind that rule).
    let mut moved = world()
        .into_iter()
        .find(|o| o.kind() == Kind::Tenant)
        .expect("tenant");
    if let Object::Tenant(t) = &mut moved {
        t.spec.namespace = "team-b".into();
        t.metadata.generation = Some(2);
    }
    let (team_b, errors) = parse_documents(
        Path::new("b.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-b}\n",
    );
    assert!(errors.is_empty(), "{errors:?}");
    for o in team_b.into_iter().chain([moved]) {
        h.control.on_event(StoreEvent::Apply(o), now);
    }
    h.control.compile();

    assert_eq!(h.directory.tenant_of("team-a"), None);
    assert_eq!(h.directory.tenant_of("team-b").as_deref(), Some("acme"));
    assert!(
        !admission.still_allowed(),
        "the open stream of team-a's router must end before team-b's snapshot is sent"
    );
    // Reconnecting (with the cached review) is refused too.
    let again = tokio::time::timeout(Duration::from_secs(30), auth.admit("router-token"))
        .await
        .expect("cached review, no API call");
    assert!(
        matches!(
            again,
            Err(bulkhead_snapshot_wire::AuthError::Unauthenticated(_))
        ),
        "{again:?}"
    );
    let desired = h.desired.borrow().clone();
    assert_eq!(desired["acme"].tenant.spec.namespace, "team-b");
}

#[tokio::test]
async fn other_controllers_route_parents_are_kept_in_our_writes() {
    let mut h = harness();
    let now = Instant::now();
    let objects = world();
    for &kind in WATCHED_KINDS {
        h.control.on_event(StoreEvent::Init(kind), now);
        for o in objects.iter().filter(|o| o.kind() == kind) {
            let mut o = o.clone();
            if let Object::HttpRoute(route) = &mut o {
                route.status = Some(
                        serde_json::from_value(serde_json::json!({"parents": [
                            {"parentRef": {"name": "other"}, "controllerName": "example.com/other",
                             "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                             "message": "theirs", "lastTransitionTime": "2020-01-01T00:00:00Z"}]},
                            {"parentRef": {"name": "web"}, "controllerName": CONTROLLER_NAME,
                             "conditions": []}
                        ]}))
                        .expect("route status"),
                    );
            }
            h.control.on_event(StoreEvent::InitApply(o), now);
        }
        h.control.on_event(StoreEvent::InitDone(kind), now);
    }
    h.control.compile();
    let statuses = h.statuses.borrow().clone();
    let route = status(&statuses, "HTTPRoute", "app");
    let parents = route.status["parents"].as_array().expect("parents");
    let controllers: Vec<&str> = parents
        .iter()
        .filter_map(|p| p["controllerName"].as_str())
        .collect();
    assert_eq!(controllers, vec![CONTROLLER_NAME, "example.com/other"]);
    assert_eq!(
        parents[1]["conditions"][0]["lastTransitionTime"], "2020-01-01T00:00:00Z",
        "their conditions are carried as they are"
    );
}

#[test]
fn desired_tenants_are_the_served_ones_with_their_bootstrap() {
    let tenants: Vec<Arc<Tenant>> = world()
        .into_iter()
        .filter_map(|o| match o {
            Object::Tenant(t) => Some(Arc::new(*t)),
            _ => None,
        })
        .collect();
    let snap = Arc::new(TenantSnapshot {
        tenant: "acme".into(),
        namespace: "team-a".into(),
        version: 4,
        ..TenantSnapshot::default()
    });
    let bootstrap = BTreeMap::from([("acme".to_owned(), snap)]);
    let desired = desired_tenants(&tenants, |n| n == "acme", &bootstrap);
    assert_eq!(desired.len(), 1);
    assert_eq!(
        desired["acme"].bootstrap.as_ref().map(|s| s.version),
        Some(4)
    );
    assert!(desired_tenants(&tenants, |_| false, &bootstrap).is_empty());
}

/// Two certificates and keys (ECDSA P-256, `a.test` and `b.test`), the golden files' own.
const PEMS: [(&str, &str); 2] = [
    (
        include_str!("../../../testdata/translator/certs/a.crt"),
        include_str!("../../../testdata/translator/certs/a.key"),
    ),
    (
        include_str!("../../../testdata/translator/certs/b.crt"),
        include_str!("../../../testdata/translator/certs/b.key"),
    ),
];

/// A TLS Secret of `team-a` as the metadata watch delivers it: no data.
fn secret_meta(name: &str, version: &str) -> Object {
    one(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: team-a, resourceVersion: \"{version}\"}}\ntype: kubernetes.io/tls\n"
        ))
}

/// The same Secret as a `GET` returns it: with its data (a certificate per version).
fn secret_read(name: &str, version: &str) -> k8s_openapi::api::core::v1::Secret {
    let (crt, key) = PEMS[version.parse::<usize>().unwrap_or(0) % 2];
    let Object::Secret(mut secret) = secret_meta(name, version) else {
        unreachable!("secret_meta is a Secret");
    };
    secret.string_data = Some(BTreeMap::from([
        ("tls.crt".to_owned(), crt.to_owned()),
        ("tls.key".to_owned(), key.to_owned()),
    ]));
    *secret
}

fn one(yaml: &str) -> Object {
    let (mut objects, errors) = parse_documents(Path::new("o.yaml"), yaml);
    assert!(errors.is_empty(), "{errors:?}");
    objects.remove(0)
}

/// Gateway `web` with an HTTP listener and, when `cert` is given, an HTTPS listener serving
/// that Secret.
fn gateway(cert: Option<&str>, generation: u32) -> Object {
    let https = cert.map_or(String::new(), |c| {
            format!("\n  - {{name: https, protocol: HTTPS, port: 443, hostname: secure.acme.test, tls: {{certificateRefs: [{{name: {c}}}]}}}}")
        });
    one(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: web, namespace: team-a, generation: {generation}, resourceVersion: \"{generation}\"}}\nspec:\n  gatewayClassName: bulkhead\n  listeners:\n  - {{name: http, protocol: HTTP, port: 80, hostname: www.acme.test}}{https}\n"
        ))
}

/// The world with `gateway` for its Gateway and `secrets` listed by the metadata watch.
fn list_with_secrets(control: &mut ControlLoop<StaticTokens>, gw: Object, secrets: &[Object]) {
    let now = Instant::now();
    let mut objects: Vec<Object> = world()
        .into_iter()
        .filter(|o| o.kind() != Kind::Gateway)
        .collect();
    objects.push(gw);
    objects.extend(secrets.iter().cloned());
    for &kind in WATCHED_KINDS {
        control.on_event(StoreEvent::Init(kind), now);
        for o in objects.iter().filter(|o| o.kind() == kind) {
            control.on_event(StoreEvent::InitApply(o.clone()), now);
        }
        control.on_event(StoreEvent::InitDone(kind), now);
    }
}

fn answer(
    request: SecretFetch,
    result: Result<k8s_openapi::api::core::v1::Secret, String>,
) -> StoreEvent {
    StoreEvent::SecretFetched(Box::new(FetchedSecret { request, result }))
}

fn listener_condition(statuses: &Statuses, listener: &str, type_: &str) -> serde_json::Value {
    let gateway = status(statuses, "Gateway", "web");
    let listeners = gateway.status["listeners"]
        .as_array()
        .expect("listeners")
        .clone();
    let l = listeners
        .iter()
        .find(|l| l["name"] == listener)
        .expect("listener status");
    condition(l, type_).clone()
}

fn secret_harness() -> (Harness, mpsc::UnboundedReceiver<SecretFetch>) {
    let mut h = harness();
    let (tx, rx) = mpsc::unbounded_channel();
    h.control = std::mem::replace(&mut h.control, harness().control).with_secret_fetcher(tx);
    (h, rx)
}

fn has_secret_data(control: &ControlLoop<StaticTokens>, name: &str) -> bool {
    control
        .store()
        .index()
        .get(Kind::Secret, "team-a", name)
        .is_some()
        || control.store().tracks_secret_data("team-a", name)
}

/// Gateway `web` serving Secret `web-cert` (version 1), listed and compiled: the compilation
/// waits for the read it asked for, returned here.
fn web_cert_listed() -> (Harness, mpsc::UnboundedReceiver<SecretFetch>, SecretFetch) {
    let (mut h, mut fetches) = secret_harness();
    list_with_secrets(
        &mut h.control,
        gateway(Some("web-cert"), 1),
        &[secret_meta("web-cert", "1")],
    );
    h.control.compile();
    let request = fetches.try_recv().expect("the referenced Secret is read");
    (h, fetches, request)
}

/// Only the referenced Secret is read; the compilation waits for it, and its certificate is
/// then served. The unreferenced one is never read and its data never held.
#[tokio::test]
async fn only_referenced_secrets_are_read_and_the_first_compile_waits_for_them() {
    let (mut h, mut fetches) = secret_harness();
    let secrets = [secret_meta("web-cert", "1"), secret_meta("unused", "1")];
    list_with_secrets(&mut h.control, gateway(Some("web-cert"), 1), &secrets);
    h.control.compile();
    let request = fetches.try_recv().expect("the referenced Secret is read");
    assert_eq!(
        (request.namespace.as_str(), request.name.as_str()),
        ("team-a", "web-cert")
    );
    assert_eq!(request.resource_version, "1");
    assert!(fetches.try_recv().is_err(), "nothing else is read");
    assert!(
        h.control.published().is_empty(),
        "no snapshot without the certificate"
    );
    assert_eq!(h.control.due(), None, "waiting for the read");
    assert!(!has_secret_data(&h.control, "unused"));

    h.control.on_event(
        answer(request, Ok(secret_read("web-cert", "1"))),
        Instant::now(),
    );
    assert!(h.control.due().is_some());
    h.control.compile();
    assert_eq!(h.control.published().get("acme"), Some(&1));
    let statuses = h.statuses.borrow().clone();
    assert_eq!(
        listener_condition(&statuses, "https", "ResolvedRefs")["status"],
        "True"
    );
    assert!(has_secret_data(&h.control, "web-cert"));
    assert!(!has_secret_data(&h.control, "unused"), "never held");
    assert!(fetches.try_recv().is_err());
}

/// A new resourceVersion of a referenced Secret (from the metadata watch) is read again
/// and published; its old data serves meanwhile.
#[tokio::test]
async fn a_changed_referenced_secret_is_read_again_and_published() {
    let (mut h, mut fetches, first) = web_cert_listed();
    h.control.on_event(
        answer(first, Ok(secret_read("web-cert", "1"))),
        Instant::now(),
    );
    h.control.compile();
    assert_eq!(h.control.published().get("acme"), Some(&1));

    h.control.on_event(
        StoreEvent::Apply(secret_meta("web-cert", "2")),
        Instant::now(),
    );
    assert!(h.control.due().is_some(), "a referenced Secret changed");
    h.control.compile();
    let again = fetches.try_recv().expect("read again");
    assert_eq!(again.resource_version, "2");
    assert!(
        has_secret_data(&h.control, "web-cert"),
        "the old data serves meanwhile"
    );
    h.control.on_event(
        answer(again, Ok(secret_read("web-cert", "2"))),
        Instant::now(),
    );
    h.control.compile();
    assert_eq!(
        h.control.published().get("acme"),
        Some(&2),
        "a new snapshot"
    );

    // A change of a Secret nobody references costs nothing.
    let before = h.control.compiles();
    h.control
        .on_event(StoreEvent::Apply(secret_meta("other", "5")), Instant::now());
    assert_eq!(h.control.due(), None);
    assert_eq!(h.control.compiles(), before);
}

/// A Secret the Gateway stops referencing has its data dropped from memory.
#[tokio::test]
async fn a_secret_no_longer_referenced_has_its_data_dropped() {
    let (mut h, mut fetches, request) = web_cert_listed();
    h.control.on_event(
        answer(request, Ok(secret_read("web-cert", "1"))),
        Instant::now(),
    );
    h.control.compile();
    assert!(has_secret_data(&h.control, "web-cert"));

    h.control
        .on_event(StoreEvent::Apply(gateway(None, 2)), Instant::now());
    h.control.compile();
    assert!(!has_secret_data(&h.control, "web-cert"), "dropped");
    assert!(fetches.try_recv().is_err());

    // Referenced again: read again.
    h.control.on_event(
        StoreEvent::Apply(gateway(Some("web-cert"), 3)),
        Instant::now(),
    );
    h.control.compile();
    assert_eq!(fetches.try_recv().expect("read anew").name, "web-cert");
}

/// A read refused (403) or not found (404) is reported as a missing Secret on its listener;
/// the other listener and the tenant are served, and the failure is counted.
#[tokio::test]
async fn an_unreadable_secret_counts_as_missing_and_the_rest_is_served() {
    let (mut h, mut fetches, request) = web_cert_listed();
    h.control.on_event(
        answer(request, Err("cannot be read (403 Forbidden)".into())),
        Instant::now(),
    );
    h.control.compile();
    assert_eq!(
        h.control.published().get("acme"),
        Some(&1),
        "the tenant is served"
    );
    let statuses = h.statuses.borrow().clone();
    let refs = listener_condition(&statuses, "https", "ResolvedRefs");
    assert_eq!(refs["status"], "False");
    assert_eq!(refs["reason"], "InvalidCertificateRef");
    assert_eq!(
        listener_condition(&statuses, "http", "ResolvedRefs")["status"],
        "True"
    );
    assert!(h
        .control
        .store()
        .index()
        .get(Kind::Secret, "team-a", "web-cert")
        .is_none());
    let failures = h
        .control
        .metrics()
        .reconcile_errors
        .get_or_create(&KindLabel {
            kind: "secret_fetch",
        })
        .get();
    assert_eq!(failures, 1);
    assert!(
        fetches.try_recv().is_err(),
        "not read again before its retry is due"
    );
}

/// A failed read is retried on a timer with backoff (1 s, then 2 s), without any change in the
/// cluster, and a read that succeeds serves the certificate: a transient failure heals itself.
#[tokio::test(start_paused = true)]
async fn a_failed_secret_read_is_retried_with_backoff_and_heals() {
    let (mut h, mut fetches, request) = web_cert_listed();
    h.control.on_event(
        answer(request, Err("cannot be read (no answer within 10s)".into())),
        Instant::now(),
    );
    h.control.compile();
    assert_eq!(h.control.published().get("acme"), Some(&1));
    let failed_at = Instant::now();
    assert_eq!(
        h.control.due(),
        Some(failed_at + Duration::from_secs(1)),
        "the retry is what wakes the loop"
    );

    tokio::time::advance(Duration::from_secs(1)).await;
    h.control.compile();
    let retry = fetches.try_recv().expect("read again after 1 s");
    assert_eq!(
        (retry.name.as_str(), retry.resource_version.as_str()),
        ("web-cert", "1")
    );
    h.control.on_event(
        answer(retry, Err("cannot be read (403 Forbidden)".into())),
        Instant::now(),
    );
    h.control.compile();
    tokio::time::advance(Duration::from_secs(1)).await;
    h.control.compile();
    assert!(fetches.try_recv().is_err(), "the second retry waits 2 s");
    tokio::time::advance(Duration::from_secs(1)).await;
    h.control.compile();
    let third = fetches.try_recv().expect("read again after 2 s more");
    h.control.on_event(
        answer(third, Ok(secret_read("web-cert", "1"))),
        Instant::now(),
    );
    h.control.compile();
    assert_eq!(h.control.published().get("acme"), Some(&2), "healed");
    let statuses = h.statuses.borrow().clone();
    assert_eq!(
        listener_condition(&statuses, "https", "ResolvedRefs")["status"],
        "True"
    );
    assert_eq!(h.control.due(), None, "nothing left to retry");
}

/// With the Secret reader gone, a referenced Secret counts as unreadable at once: the
/// compilation does not wait for an answer that cannot come.
#[tokio::test]
async fn without_a_secret_reader_the_compilation_never_waits() {
    let (mut h, fetches) = secret_harness();
    drop(fetches);
    list_with_secrets(
        &mut h.control,
        gateway(Some("web-cert"), 1),
        &[secret_meta("web-cert", "1")],
    );
    h.control.compile();
    assert_eq!(h.control.published().get("acme"), Some(&1));
    let statuses = h.statuses.borrow().clone();
    let refs = listener_condition(&statuses, "https", "ResolvedRefs");
    assert_eq!(refs["reason"], "InvalidCertificateRef");
}
