//! `bulkhead translate`: what the operator would accept, offline, as a tenant's CI would run it.

mod common;

use common::{gateway_yaml, pki, route_yaml, service_yaml, tenant_yaml, write_file};
use std::process::{Command, Output};

fn translate(dir: &std::path::Path) -> (Output, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["translate", "--manifests"])
        .arg(dir)
        .output()
        .expect("run bulkhead translate");
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, doc)
}

/// A tenant with an HTTPS Gateway (certificate from a demo CA) and one route.
fn good_world(dir: &std::path::Path) {
    let ca = pki::DemoCa::new("acme CA").expect("CA");
    let leaf = ca.issue(&["*.acme.test"]).expect("leaf");
    let addr = "127.0.0.1:9".parse().expect("addr");
    write_file(dir, "tenant.yaml", &tenant_yaml("acme", &["*.acme.test"]));
    write_file(
        dir,
        "gateway.yaml",
        &gateway_yaml("acme", "*.acme.test", Some("acme-tls")),
    );
    write_file(
        dir,
        "secret.yaml",
        &pki::tls_secret_yaml("acme", "acme-tls", &leaf),
    );
    write_file(dir, "svc.yaml", &service_yaml("acme", "web", addr));
    write_file(
        dir,
        "route.yaml",
        &route_yaml("acme", "web", &["www.acme.test"], "/", "web"),
    );
}

#[test]
fn a_valid_directory_exits_zero_with_programmed_statuses_and_no_private_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    good_world(dir.path());
    let (out, doc) = translate(dir.path());
    assert!(
        out.status.success(),
        "exit {:?}: {doc:#}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(doc["rejected"], serde_json::json!([]));
    let route = doc["statuses"]
        .as_array()
        .expect("statuses")
        .iter()
        .find(|s| s["kind"] == "HTTPRoute")
        .expect("route status");
    let accepted = &route["status"]["parents"][0]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Accepted")
        .expect("Accepted")["status"];
    assert_eq!(accepted, "True");
    let snapshot = &doc["snapshots"]["acme"];
    assert_eq!(snapshot["namespace"], "acme");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("PRIVATE KEY"),
        "a private key was printed: {text}"
    );
    assert!(text.contains("<redacted>"));
}

#[test]
fn a_route_with_an_invalid_regex_is_rejected_by_name_and_field_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    good_world(dir.path());
    write_file(
        dir.path(),
        "bad-route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  namespace: acme\n  name: bad\nspec:\n  parentRefs:\n  - name: gw\n  hostnames: [\"api.acme.test\"]\n  rules:\n  - matches:\n    - path: {type: RegularExpression, value: \"/(unclosed\"}\n    backendRefs:\n    - name: web\n      port: 80\n",
    );
    let (out, doc) = translate(dir.path());
    assert!(
        !out.status.success(),
        "exit 0 with a rejected route: {doc:#}"
    );
    let rejected = doc["rejected"].as_array().expect("rejected");
    assert_eq!(rejected.len(), 1, "{doc:#}");
    assert_eq!(rejected[0]["kind"], "HTTPRoute");
    assert_eq!(rejected[0]["name"], "acme/bad");
    assert_eq!(rejected[0]["reason"], "UnsupportedValue");
    assert!(
        rejected[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("path")),
        "{doc:#}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 rejection"));
}

#[test]
fn a_document_that_does_not_decode_is_a_rejection() {
    let dir = tempfile::tempdir().expect("tempdir");
    good_world(dir.path());
    write_file(
        dir.path(),
        "broken.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  namespace: acme\n  name: broken\nspec:\n  rules: 7\n",
    );
    let (out, doc) = translate(dir.path());
    assert!(!out.status.success(), "{doc:#}");
    let rejected = doc["rejected"].as_array().expect("rejected");
    assert!(
        rejected
            .iter()
            .any(|r| r["reason"] == "LoadError" && r["name"] == "acme/broken"),
        "{doc:#}"
    );
}
