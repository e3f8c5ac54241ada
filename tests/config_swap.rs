//! Live configuration changes: editing, adding and deleting manifest files changes routing without a
//! restart and without breaking open connections (whose next requests follow it); bad input is reported and the last good
//! configuration keeps serving.

mod common;

use common::*;

async fn one_tenant(v1: std::net::SocketAddr) -> Standalone {
    Standalone::start(&[
        ("tenant.yaml", tenant_yaml("acme", &["*.acme.test"])),
        ("gw.yaml", gateway_yaml("acme", "*.acme.test", None)),
        ("svc.yaml", service_yaml("acme", "v1", v1)),
        (
            "route.yaml",
            route_yaml("acme", "web", &["www.acme.test"], "/", "v1"),
        ),
    ])
    .await
}

async fn backend_for(bh: &Standalone, path: &str) -> Option<String> {
    let (status, _, body) = http_get(bh.http, "www.acme.test", path).await.ok()?;
    if status != 200 {
        return Some(format!("status {status}"));
    }
    answer_field(&body, "backend")
}

#[tokio::test]
async fn editing_adding_and_deleting_manifests_changes_routing_live() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let v3 = backend("v3").await;
    let bh = one_tenant(v1).await;
    assert_eq!(
        backend_for(&bh, "/").await.as_deref(),
        Some("v1"),
        "{}",
        bh.log()
    );

    let mut open = KeepAlive::connect(bh.http).await;
    let (status, body) = open.get("www.acme.test", "/").await.unwrap();
    assert_eq!(
        (status, answer_field(&body, "backend").as_deref()),
        (200, Some("v1"))
    );

    // Edit: the route now sends traffic to v2.
    bh.write(
        "svc.yaml",
        &(service_yaml("acme", "v1", v1) + "---\n" + &service_yaml("acme", "v2", v2)),
    );
    bh.write(
        "route.yaml",
        &route_yaml("acme", "web", &["www.acme.test"], "/", "v2"),
    );
    let switched = eventually(SETTLE, || async {
        (backend_for(&bh, "/").await.as_deref() == Some("v2")).then_some(())
    })
    .await;
    assert!(switched.is_some(), "edit not applied; log:\n{}", bh.log());

    // Add: a new file with a second route.
    bh.write(
        "extra/new.yaml",
        &(service_yaml("acme", "v3", v3)
            + "---\n"
            + &route_yaml("acme", "new", &["www.acme.test"], "/new", "v3")),
    );
    let added = eventually(SETTLE, || async {
        (backend_for(&bh, "/new/page").await.as_deref() == Some("v3")).then_some(())
    })
    .await;
    assert!(
        added.is_some(),
        "added file not applied; log:\n{}",
        bh.log()
    );
    assert_eq!(backend_for(&bh, "/").await.as_deref(), Some("v2"));

    // Delete: the route disappears, "/new" falls back to the "/" route.
    bh.remove("extra/new.yaml");
    let removed = eventually(SETTLE, || async {
        (backend_for(&bh, "/new/page").await.as_deref() == Some("v2")).then_some(())
    })
    .await;
    assert!(
        removed.is_some(),
        "deleted file still routed; log:\n{}",
        bh.log()
    );

    // The connection opened before all of this still carries requests, routed by the current
    // configuration: the deleted route is gone for it too.
    let (status, body) = open
        .get("www.acme.test", "/")
        .await
        .expect("open connection survives");
    assert_eq!(
        (status, answer_field(&body, "backend").as_deref()),
        (200, Some("v2")),
        "{body}"
    );
    let (status, body) = open
        .get("www.acme.test", "/new/page")
        .await
        .expect("open connection survives");
    assert_eq!(
        (status, answer_field(&body, "backend").as_deref()),
        (200, Some("v2")),
        "the deleted route still served on an open connection: {body}"
    );
}

#[tokio::test]
async fn broken_yaml_and_invalid_routes_keep_the_previous_routing_and_are_reported() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let bh = one_tenant(v1).await;
    assert_eq!(backend_for(&bh, "/").await.as_deref(), Some("v1"));

    // A file that is not YAML: reported with its name; the route it held keeps serving.
    bh.write(
        "route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: [unclosed\n",
    );
    let reported = eventually(SETTLE, || async {
        let doc = bh.status().await;
        let errors = doc["errors"].to_string();
        errors.contains("route.yaml").then_some(errors)
    })
    .await;
    assert!(
        reported.is_some(),
        "broken file not reported; status: {}",
        bh.status().await
    );
    assert_eq!(backend_for(&bh, "/").await.as_deref(), Some("v1"));

    // An invalid route (a regular expression that does not compile) is refused and reported; a valid
    // route added at the same time is served.
    let bad = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  namespace: acme\n  name: bad\nspec:\n  parentRefs:\n  - name: gw\n  hostnames: [\"www.acme.test\"]\n  rules:\n  - matches:\n    - path: {type: RegularExpression, value: \"/(unclosed\"}\n    backendRefs:\n    - name: v2\n      port: 80\n";
    bh.write("bad.yaml", bad);
    bh.write(
        "good.yaml",
        &(service_yaml("acme", "v2", v2)
            + "---\n"
            + &route_yaml("acme", "good", &["www.acme.test"], "/good", "v2")),
    );
    let good = eventually(SETTLE, || async {
        (backend_for(&bh, "/good").await.as_deref() == Some("v2")).then_some(())
    })
    .await;
    assert!(
        good.is_some(),
        "valid route next to an invalid one not served; log:\n{}",
        bh.log()
    );
    let bad_status = bh
        .object_status("HTTPRoute", "acme", "bad")
        .await
        .expect("the invalid route has a status");
    let text = bad_status.to_string();
    assert!(
        text.contains("\"False\""),
        "invalid route must not be accepted: {text}"
    );
    assert!(
        text.contains("matches"),
        "the status names the field: {text}"
    );
    assert_eq!(
        backend_for(&bh, "/").await.as_deref(),
        Some("v1"),
        "the last good route still serves"
    );
}
