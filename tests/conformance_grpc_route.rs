//! `GRPCRoute`, the way the Gateway API conformance suite checks it: gRPC calls (HTTP/2 POST,
//! `content-type: application/grpc`, `te: trailers`) over TLS with ALPN `h2`, routed by service
//! and method to the backend the matching rule names (reached over h2c), and a method no rule
//! matches answered `UNIMPLEMENTED`.

mod common;

use common::*;

/// A GRPCRoute on `grpc.acme.test`: `echo.Echo/Ping` → Service `ping`, any method of
/// `echo.Other` → Service `other`.
const GRPC_ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  namespace: acme
  name: echo
spec:
  parentRefs: [{name: gw}]
  hostnames: [\"grpc.acme.test\"]
  rules:
  - matches:
    - method: {service: echo.Echo, method: Ping}
    backendRefs: [{name: ping, port: 80}]
  - matches:
    - method: {service: echo.Other}
    backendRefs: [{name: other, port: 80}]
";

/// One unary gRPC call to `path` on `grpc.acme.test`: HTTP status, `grpc-status` (if any) and
/// the body as text.
async fn grpc_call(s: &Standalone, ca: &pki::DemoCa, path: &str) -> (u16, Option<String>, String) {
    let answer = grpc_unary(s.https, "grpc.acme.test", ca.cert_pem(), path)
        .await
        .unwrap_or_else(|e| panic!("gRPC call: {e}; log:\n{}", s.log()));
    let grpc_status = answer
        .headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = String::from_utf8_lossy(&answer.body).into_owned();
    (answer.status, grpc_status, body)
}

#[tokio::test]
async fn grpc_calls_are_routed_by_service_and_method() {
    let ca = pki::DemoCa::new("grpc CA").expect("CA");
    let leaf = ca.issue(&["*.acme.test"]).expect("leaf");
    let s = Standalone::start(&[
        ("tenant.yaml", tenant_yaml("acme", &["*.acme.test"])),
        ("gw.yaml", gateway_yaml("acme", "*.acme.test", Some("tls"))),
        ("tls.yaml", pki::tls_secret_yaml("acme", "tls", &leaf)),
        ("grpc.yaml", GRPC_ROUTE.to_owned()),
        (
            "ping.yaml",
            service_yaml("acme", "ping", backend("ping").await),
        ),
        (
            "other.yaml",
            service_yaml("acme", "other", backend("other").await),
        ),
    ])
    .await;

    for (path, backend) in [
        ("/echo.Echo/Ping", "ping"),
        ("/echo.Other/Anything", "other"),
    ] {
        let body = eventually(SETTLE, || async {
            let (status, grpc_status, body) = grpc_call(&s, &ca, path).await;
            (status == 200 && grpc_status.is_none()).then_some(body)
        })
        .await
        .unwrap_or_else(|| panic!("{path} never reached a backend; log:\n{}", s.log()));
        assert_eq!(
            answer_field(&body, "backend").as_deref(),
            Some(backend),
            "{path}: {body}"
        );
        assert_eq!(
            answer_field(&body, "version").as_deref(),
            Some("HTTP/2.0"),
            "{path} reaches the backend over h2c: {body}"
        );
    }

    let (status, grpc_status, _) = grpc_call(&s, &ca, "/echo.Echo/Pong").await;
    assert_eq!(status, 200);
    assert_eq!(
        grpc_status.as_deref(),
        Some("12"),
        "a method no rule matches: UNIMPLEMENTED"
    );
}
