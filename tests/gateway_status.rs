//! Gateway and GatewayClass status as the ecosystem reads it, through `bulkhead standalone`'s
//! `/status`: `status.addresses` (external-dns and the conformance suite wait for them), a
//! listener port the edge does not receive reported `PortUnavailable` instead of being served on
//! the edge's HTTP port, and the GatewayClass's `supportedFeatures` and `SupportedVersion`.

mod common;

use bulkhead_operator::features::supported_feature_names;
use common::*;
use serde_json::{json, Value};

const GATEWAY_CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: bulkhead
spec:
  controllerName: bulkhead.dev/gateway-controller
";

/// HTTP listeners on 80 (all of the tenant's names) and on 8081 for `odd.acme.test`.
const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  namespace: acme
  name: gw
spec:
  gatewayClassName: bulkhead
  listeners:
  - name: http
    protocol: HTTP
    port: 80
  - name: odd
    protocol: HTTP
    port: 8081
    hostname: odd.acme.test
";

/// A route for `odd.acme.test` attached to the 8081 listener only.
const ODD_ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  namespace: acme
  name: odd
spec:
  parentRefs:
  - name: gw
    sectionName: odd
  hostnames: [\"odd.acme.test\"]
  rules:
  - backendRefs:
    - name: web
      port: 80
";

async fn files() -> Vec<(&'static str, String)> {
    vec![
        ("tenant.yaml", tenant_yaml("acme", &["*.acme.test"])),
        ("class.yaml", GATEWAY_CLASS.to_owned()),
        ("gateway.yaml", GATEWAY.to_owned()),
        ("route.yaml", ODD_ROUTE.to_owned()),
        (
            "web.yaml",
            service_yaml("acme", "web", backend("web").await),
        ),
    ]
}

fn condition(conditions: &Value, type_: &str) -> Value {
    conditions
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == type_))
        .cloned()
        .unwrap_or(Value::Null)
}

async fn gateway_status(bh: &Standalone) -> Value {
    let found = eventually(SETTLE, || async {
        bh.object_status("Gateway", "acme", "gw")
            .await
            .filter(|s| s.get("addresses").is_some())
    })
    .await;
    match found {
        Some(s) => s,
        None => panic!(
            "Gateway acme/gw has no status.addresses: {}",
            bh.status().await
        ),
    }
}

/// Standalone's fixed contract: without port flags, a listener is served by its protocol whatever
/// its port (here HTTP on 8081, on `--http-listen`).
#[tokio::test]
async fn standalone_serves_every_listener_port_by_protocol_by_default() {
    let bh = Standalone::start(&files().await).await;
    let served = eventually(SETTLE, || async {
        let (code, _, body) = http_get(bh.http, "odd.acme.test", "/").await.ok()?;
        (code == 200).then_some(body)
    })
    .await
    .expect("odd.acme.test served on the HTTP listen address");
    assert_eq!(answer_field(&served, "backend").as_deref(), Some("web"));
}

#[tokio::test]
async fn gateway_addresses_are_the_listener_addresses_and_an_odd_port_is_unavailable() {
    // The edge receives HTTP listeners on port 80 only, as in a cluster by default.
    let bh =
        Standalone::start_with_env(&files().await, &[("BULKHEAD_LISTENER_HTTP_PORTS", "80")]).await;
    let status = gateway_status(&bh).await;
    assert_eq!(
        status["addresses"],
        json!([{"type": "IPAddress", "value": "127.0.0.1"}]),
        "{status}"
    );

    let odd = status["listeners"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == "odd"))
        .cloned()
        .expect("listener odd");
    let accepted = condition(&odd["conditions"], "Accepted");
    assert_eq!(accepted["status"], "False", "{odd}");
    assert_eq!(accepted["reason"], "PortUnavailable", "{odd}");
    let route = bh
        .object_status("HTTPRoute", "acme", "odd")
        .await
        .expect("route status");
    assert_eq!(
        parent_condition(&route, "Accepted")["status"],
        "False",
        "{route}"
    );

    // Not silently served on the edge's HTTP port: the 80 listener has no route for the name.
    let (code, _, body) = http_get(bh.http, "odd.acme.test", "/")
        .await
        .expect("request");
    assert_eq!(code, 404, "{body}");
}

#[tokio::test]
async fn gateway_class_reports_supported_features_and_version() {
    let bh = Standalone::start(&files().await).await;
    let status = eventually(SETTLE, || bh.object_status("GatewayClass", "", "bulkhead"))
        .await
        .expect("GatewayClass status");
    let names: Vec<&str> = status["supportedFeatures"]
        .as_array()
        .expect("supportedFeatures")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(
        names,
        supported_feature_names().collect::<Vec<_>>(),
        "{status}"
    );
    let version = condition(&status["conditions"], "SupportedVersion");
    assert_eq!(version["status"], "True", "{status}");
    assert_eq!(version["reason"], "SupportedVersion", "{status}");
}

#[tokio::test]
async fn gateway_address_flags_override_the_listener_addresses() {
    let bh = Standalone::start_with_env(
        &files().await,
        &[("BULKHEAD_GATEWAY_ADDRESSES", "lb.example.test,192.0.2.10")],
    )
    .await;
    let status = gateway_status(&bh).await;
    assert_eq!(
        status["addresses"],
        json!([
            {"type": "IPAddress", "value": "192.0.2.10"},
            {"type": "Hostname", "value": "lb.example.test"},
        ]),
        "{status}"
    );
}

#[tokio::test]
async fn listener_ports_are_a_setting() {
    // The edge receives HTTP listeners on 8081 only: the 80 listener is the odd one out now.
    let bh =
        Standalone::start_with_env(&files().await, &[("BULKHEAD_LISTENER_HTTP_PORTS", "8081")])
            .await;
    let served = eventually(SETTLE, || async {
        let (code, _, body) = http_get(bh.http, "odd.acme.test", "/").await.ok()?;
        (code == 200).then_some(body)
    })
    .await
    .expect("odd.acme.test served once 8081 is a listener port");
    assert_eq!(answer_field(&served, "backend").as_deref(), Some("web"));

    let status = bh
        .object_status("Gateway", "acme", "gw")
        .await
        .expect("Gateway status");
    let http = status["listeners"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == "http"))
        .cloned()
        .expect("listener http");
    let accepted = condition(&http["conditions"], "Accepted");
    assert_eq!(accepted["reason"], "PortUnavailable", "{http}");
}
