//! Gateway API ListenerSet (v1.5, GEP-1713; issue 14, item 6) through `bulkhead standalone`: the
//! platform owns shared Gateways in namespace `infra` (no Tenant owns it), tenants add listeners
//! to them with ListenerSets in their own namespaces, under each Gateway's `allowedListeners`.
//!
//! * acme's ListenerSet on the Gateway admitting `All` is served over TLS (its own certificate from
//!   a Secret in acme's namespace; HTTP/1.1 and HTTP/2) and plain HTTP, to the route attached with
//!   `parentRefs: [{kind: ListenerSet}]`; statuses are those the specification gives.
//! * A ListenerSet on a Gateway whose `allowedListeners` is `None`, or whose selector does not match
//!   the namespace, or in a namespace no Tenant owns, is not served and its status says why.
//! * Abuse: globex's ListenerSet claiming acme's hostname never receives acme's traffic and its
//!   listener is `HostnameNotPermitted`.
//! * Isolation: a change to acme's ListenerSet moves acme's snapshot version, never globex's.

mod common;

use common::*;
use serde_json::Value;

const LS_API: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: ListenerSet\n";

/// The platform's Gateways in `infra`: `shared` admits every namespace, `selective` the namespaces
/// labelled `listeners: allowed`, `closed` none (allowedListeners absent means None).
fn platform_gateways() -> String {
    let gateway = |name: &str, allowed: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{namespace: infra, name: {name}}}\nspec:\n  gatewayClassName: bulkhead\n{allowed}  listeners: []\n"
        )
    };
    [
        gateway("shared", "  allowedListeners: {namespaces: {from: All}}\n"),
        gateway(
            "selective",
            "  allowedListeners:\n    namespaces:\n      from: Selector\n      selector: {matchLabels: {listeners: allowed}}\n",
        ),
        gateway("closed", ""),
    ]
    .join("---\n")
}

/// A ListenerSet `name` in `ns` on Gateway `infra/parent` with the given listener entries (YAML
/// flow mappings).
fn listener_set(ns: &str, name: &str, parent: &str, listeners: &[String]) -> String {
    let mut s = format!(
        "{LS_API}metadata: {{namespace: {ns}, name: {name}}}\nspec:\n  parentRef: {{name: {parent}, namespace: infra}}\n  listeners:\n"
    );
    for l in listeners {
        s.push_str(&format!("  - {l}\n"));
    }
    s
}

fn http_listener(name: &str, hostname: &str) -> String {
    format!("{{name: {name}, protocol: HTTP, port: 80, hostname: \"{hostname}\"}}")
}

/// An HTTPRoute in `ns` attached to ListenerSet `set` (every listener), `/` to Service `svc`.
fn route_to_set(ns: &str, set: &str, svc: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{namespace: {ns}, name: {set}}}\nspec:\n  parentRefs:\n  - {{group: gateway.networking.k8s.io, kind: ListenerSet, name: {set}}}\n  rules:\n  - backendRefs: [{{name: {svc}, port: 80}}]\n"
    )
}

/// acme's ListenerSet `shop` on `shared`: HTTPS with its own certificate, plain HTTP, and `extra`.
fn acme_shop(extra: &[String]) -> String {
    let mut listeners = vec![
        "{name: https, protocol: HTTPS, port: 443, hostname: shop.acme.test, tls: {certificateRefs: [{name: shop-cert}]}}".to_owned(),
        http_listener("http", "shop.acme.test"),
    ];
    listeners.extend(extra.iter().cloned());
    listener_set("acme", "shop", "shared", &listeners)
}

struct World {
    bh: Standalone,
    ca: String,
}

async fn start() -> World {
    let ca = pki::DemoCa::new("listenerset CA").expect("CA");
    let leaf = ca.issue(&["shop.acme.test"]).expect("leaf");
    let acme_labels =
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: acme, labels: {listeners: allowed}}\n";
    let files = [
        (
            "tenants.yaml",
            [
                tenant_yaml("globex", &["*.globex.test"]),
                tenant_yaml("initech", &["initech.test"]),
                "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {name: acme}\nspec: {namespace: acme, hostnames: [\"*.acme.test\"]}\n".to_owned(),
                acme_labels.to_owned(),
            ]
            .join("---\n"),
        ),
        ("infra.yaml", platform_gateways()),
        (
            "acme-cert.yaml",
            pki::tls_secret_yaml("acme", "shop-cert", &leaf),
        ),
        (
            "acme.yaml",
            [
                acme_shop(&[]),
                route_to_set("acme", "shop", "shop"),
                service_yaml("acme", "shop", backend("acme-shop").await),
            ]
            .join("---\n"),
        ),
        (
            "globex.yaml",
            [
                listener_set(
                    "globex",
                    "thief",
                    "shared",
                    &[http_listener("http", "shop.acme.test")],
                ),
                route_to_set("globex", "thief", "thief"),
                service_yaml("globex", "thief", backend("globex-thief").await),
            ]
            .join("---\n"),
        ),
        (
            "initech.yaml",
            [
                listener_set(
                    "initech",
                    "blocked",
                    "closed",
                    &[http_listener("http", "initech.test")],
                ),
                listener_set(
                    "initech",
                    "unselected",
                    "selective",
                    &[http_listener("http", "initech.test")],
                ),
                route_to_set("initech", "blocked", "app"),
                service_yaml("initech", "app", backend("initech-app").await),
            ]
            .join("---\n"),
        ),
        (
            "nobody.yaml",
            listener_set(
                "nobody",
                "homeless",
                "shared",
                &[http_listener("http", "nobody.test")],
            ),
        ),
    ];
    let bh = Standalone::start(&files).await;
    let ca = ca.cert_pem().to_owned();
    let served = eventually(SETTLE, || async {
        let (code, _, body) = https_get(bh.https, "shop.acme.test", "/", &ca).await.ok()?;
        (code == 200).then_some(body)
    })
    .await;
    assert!(
        served.is_some(),
        "acme's ListenerSet never served over TLS\n{}",
        bh.log()
    );
    World { bh, ca }
}

/// The condition `kind` among `conditions`.
fn condition<'a>(conditions: &'a Value, kind: &str) -> &'a Value {
    conditions
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

/// `(status, reason)` of condition `kind`.
fn state(conditions: &Value, kind: &str) -> (String, String) {
    let c = condition(conditions, kind);
    (
        c["status"].as_str().unwrap_or_default().to_owned(),
        c["reason"].as_str().unwrap_or_default().to_owned(),
    )
}

fn is(status: &str, reason: &str) -> (String, String) {
    (status.to_owned(), reason.to_owned())
}

async fn status_of(bh: &Standalone, kind: &str, ns: &str, name: &str) -> Value {
    bh.object_status(kind, ns, name)
        .await
        .unwrap_or_else(|| panic!("no status for {kind} {ns}/{name}"))
}

/// The listener entry `name` of a Gateway or ListenerSet status.
fn listener<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["listeners"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == name))
        .unwrap_or(&Value::Null)
}

/// The snapshot version tenant `tenant`'s router serves (`bulkhead_router_snapshot_version`).
fn served_version(metrics: &str, tenant: &str) -> Option<u64> {
    let label = format!("tenant=\"{tenant}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("bulkhead_router_snapshot_version{") && l.contains(&label))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
}

#[tokio::test]
async fn an_admitted_listener_set_is_served_over_tls_and_plain_http() {
    let w = start().await;
    let (code, _, body) = https_get(w.bh.https, "shop.acme.test", "/", &w.ca)
        .await
        .expect("HTTPS/1.1");
    assert_eq!(code, 200, "{body}");
    assert_eq!(answer_field(&body, "backend").as_deref(), Some("acme-shop"));

    let (code, body, alpn) = https_get_h2(w.bh.https, "shop.acme.test", "/", &w.ca)
        .await
        .expect("HTTPS/2");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(code, 200, "{body}");
    assert_eq!(answer_field(&body, "backend").as_deref(), Some("acme-shop"));

    let (code, _, body) = http_get(w.bh.http, "shop.acme.test", "/")
        .await
        .expect("HTTP");
    assert_eq!(code, 200, "{body}");
    assert_eq!(answer_field(&body, "backend").as_deref(), Some("acme-shop"));
}

#[tokio::test]
async fn statuses_follow_the_specification() {
    let w = start().await;
    let bh = &w.bh;
    let programmed = eventually(SETTLE, || async {
        let s = status_of(bh, "ListenerSet", "acme", "shop").await;
        (state(&s["conditions"], "Programmed") == is("True", "Programmed")).then_some(s)
    })
    .await;
    let Some(programmed) = programmed else {
        panic!("acme/shop never Programmed: {}", bh.status().await);
    };
    assert_eq!(
        state(&programmed["conditions"], "Accepted"),
        is("True", "Accepted")
    );
    for name in ["https", "http"] {
        let l = listener(&programmed, name);
        assert_eq!(state(&l["conditions"], "Accepted"), is("True", "Accepted"));
        assert_eq!(
            state(&l["conditions"], "ResolvedRefs"),
            is("True", "ResolvedRefs")
        );
        assert_eq!(
            state(&l["conditions"], "Conflicted"),
            is("False", "NoConflicts")
        );
        assert_eq!(l["attachedRoutes"], 1, "{name}: {l}");
    }

    let route = status_of(bh, "HTTPRoute", "acme", "shop").await;
    assert_eq!(parent_condition(&route, "Accepted")["status"], "True");
    assert_eq!(route["parents"][0]["parentRef"]["kind"], "ListenerSet");

    let shared = status_of(bh, "Gateway", "infra", "shared").await;
    assert_eq!(
        state(&shared["conditions"], "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        state(&shared["conditions"], "AttachedListenerSets"),
        is("True", "ListenerSetsAttached")
    );
    // acme's and globex's (admitted by All; its only listener is refused), not the homeless one.
    assert_eq!(shared["attachedListenerSets"], 2, "{shared}");

    for (ns, name, why) in [
        ("initech", "blocked", "admits no ListenerSets"),
        ("initech", "unselected", "selector"),
        ("nobody", "homeless", "not the namespace of a served Tenant"),
    ] {
        let s = status_of(bh, "ListenerSet", ns, name).await;
        let accepted = condition(&s["conditions"], "Accepted");
        assert_eq!(
            state(&s["conditions"], "Accepted"),
            is("False", "NotAllowed"),
            "{ns}/{name}: {s}"
        );
        assert_eq!(
            state(&s["conditions"], "Programmed"),
            is("False", "NotAllowed")
        );
        assert!(
            accepted["message"]
                .as_str()
                .unwrap_or_default()
                .contains(why),
            "{ns}/{name}: {accepted}"
        );
    }
    let blocked_route = status_of(bh, "HTTPRoute", "initech", "blocked").await;
    assert_eq!(
        parent_condition(&blocked_route, "Accepted")["status"],
        "False",
        "{blocked_route}"
    );
}

#[tokio::test]
async fn refused_listener_sets_are_not_served() {
    let w = start().await;
    // initech's ListenerSets are refused (None; selector not matching): its grant is served by its
    // router, but no listener, so nothing reaches its backend.
    let (code, _, body) = http_get(w.bh.http, "initech.test", "/")
        .await
        .expect("HTTP");
    assert_ne!(code, 200, "{body}");
    assert_ne!(
        answer_field(&body, "backend").as_deref(),
        Some("initech-app")
    );
    // No Tenant owns nobody.test: the edge has no route for it.
    let (code, _, body) = http_get(w.bh.http, "nobody.test", "/").await.expect("HTTP");
    assert_ne!(code, 200, "{body}");
}

#[tokio::test]
async fn another_tenants_listener_set_cannot_take_a_hostname_outside_its_grant() {
    let w = start().await;
    for _ in 0..5 {
        let (code, _, body) = http_get(w.bh.http, "shop.acme.test", "/thief")
            .await
            .expect("HTTP");
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            answer_field(&body, "backend").as_deref(),
            Some("acme-shop"),
            "globex's ListenerSet received acme's traffic: {body}"
        );
    }
    let thief = status_of(&w.bh, "ListenerSet", "globex", "thief").await;
    let l = listener(&thief, "http");
    assert_eq!(
        state(&l["conditions"], "Accepted"),
        is("False", "HostnameNotPermitted"),
        "{thief}"
    );
    assert!(
        condition(&l["conditions"], "Accepted")["message"]
            .as_str()
            .unwrap_or_default()
            .contains("outside the hostnames of tenant \"globex\""),
        "{l}"
    );
    assert_eq!(
        state(&thief["conditions"], "Accepted"),
        is("False", "ListenersNotValid")
    );
    let route = status_of(&w.bh, "HTTPRoute", "globex", "thief").await;
    assert_eq!(
        parent_condition(&route, "Accepted")["status"],
        "False",
        "{route}"
    );
}

#[tokio::test]
async fn a_listener_set_change_reaches_only_its_own_tenants_router() {
    let w = start().await;
    let versions = eventually(SETTLE, || async {
        let m = w.bh.metrics().await;
        Some((served_version(&m, "acme")?, served_version(&m, "globex")?))
    })
    .await;
    let Some(versions) = versions else {
        panic!("no snapshot versions in:\n{}", w.bh.metrics().await);
    };

    w.bh.write(
        "acme.yaml",
        &[
            acme_shop(&[http_listener("new", "new.acme.test")]),
            route_to_set("acme", "shop", "shop"),
            service_yaml("acme", "shop", backend("acme-shop").await),
        ]
        .join("---\n"),
    );
    let served = eventually(SETTLE, || async {
        let (code, _, body) = http_get(w.bh.http, "new.acme.test", "/").await.ok()?;
        (code == 200 && answer_field(&body, "backend").as_deref() == Some("acme-shop"))
            .then_some(())
    })
    .await;
    assert!(
        served.is_some(),
        "the new listener never served\n{}",
        w.bh.log()
    );

    let m = w.bh.metrics().await;
    let acme = served_version(&m, "acme").expect("acme version");
    let globex = served_version(&m, "globex").expect("globex version");
    assert!(
        acme > versions.0,
        "acme's version must move: {versions:?} -> {acme}"
    );
    assert_eq!(
        globex, versions.1,
        "globex's snapshot moved on acme's ListenerSet change"
    );
}
