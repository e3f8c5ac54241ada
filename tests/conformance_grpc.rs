//! Gateway API conformance: gRPC statuses for the router's own answers (issue 14, item 5).
//!
//! A GRPCRoute rule whose backends are all invalid MUST answer `UNAVAILABLE`; a gRPC client reads
//! HTTP 500 as `UNKNOWN`. Sent as a gRPC client sends it: an HTTP/2 POST with
//! `content-type: application/grpc` and `te: trailers`; the answer must be trailers-only (HTTP 200,
//! `grpc-status` in the HEADERS frame that ends the stream). HTTPRoute keeps its 500.

mod common;

use common::*;

/// Tenant `acme` (`*.acme.test`), an HTTPS Gateway, a GRPCRoute on `grpc.acme.test` for
/// `echo.Echo/Ping` and an HTTPRoute on `web.acme.test`, both to a Service that does not exist.
async fn world() -> (Standalone, pki::DemoCa) {
    let ca = pki::DemoCa::new("grpc CA").expect("CA");
    let leaf = ca.issue(&["*.acme.test"]).expect("leaf");
    let grpc_route = "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata:\n  namespace: acme\n  name: echo\nspec:\n  parentRefs: [{name: gw}]\n  hostnames: [\"grpc.acme.test\"]\n  rules:\n  - matches:\n    - method: {service: echo.Echo, method: Ping}\n    backendRefs: [{name: missing, port: 50051}]\n";
    let s = Standalone::start(&[
        ("tenant.yaml", tenant_yaml("acme", &["*.acme.test"])),
        ("gw.yaml", gateway_yaml("acme", "*.acme.test", Some("tls"))),
        ("tls.yaml", pki::tls_secret_yaml("acme", "tls", &leaf)),
        ("grpc.yaml", grpc_route.to_owned()),
        (
            "web.yaml",
            route_yaml("acme", "web", &["web.acme.test"], "/", "missing"),
        ),
    ])
    .await;
    (s, ca)
}

/// One unary gRPC call (an empty message) to `path` on `authority`, over HTTP/2 with ALPN.
async fn grpc_call(s: &Standalone, ca: &pki::DemoCa, authority: &str, path: &str) -> GrpcAnswer {
    grpc_unary(s.https, authority, ca.cert_pem(), path)
        .await
        .unwrap_or_else(|e| panic!("gRPC call to {authority}: {e}; log:\n{}", s.log()))
}

#[tokio::test]
async fn grpc_route_with_only_invalid_backends_answers_unavailable_and_http_route_500() {
    let (s, ca) = world().await;
    let answer = eventually(SETTLE, || async {
        let a = grpc_call(&s, &ca, "grpc.acme.test", "/echo.Echo/Ping").await;
        (a.status != 404).then_some(a)
    })
    .await
    .unwrap_or_else(|| panic!("route never served; log:\n{}", s.log()));
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.headers["grpc-status"], "14",
        "UNAVAILABLE: {answer:?}"
    );
    assert_eq!(answer.headers["content-type"], "application/grpc");
    assert!(answer.headers.contains_key("grpc-message"));
    assert!(
        answer.trailers_only,
        "status in the HEADERS frame: {answer:?}"
    );
    assert!(answer.body.is_empty());

    // A method no rule serves: UNIMPLEMENTED, also trailers-only.
    let answer = grpc_call(&s, &ca, "grpc.acme.test", "/echo.Echo/Other").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.headers["grpc-status"], "12",
        "UNIMPLEMENTED: {answer:?}"
    );
    assert!(answer.trailers_only);

    // HTTPRoute keeps its 500, over HTTP/1.1 and HTTP/2.
    let answer = eventually(SETTLE, || async {
        let (status, _, body) = https_get(s.https, "web.acme.test", "/", ca.cert_pem())
            .await
            .ok()?;
        (status != 404).then_some((status, body))
    })
    .await
    .unwrap_or_else(|| panic!("route never served; log:\n{}", s.log()));
    assert_eq!(answer.0, 500, "{}", answer.1);
    let (status, body, _) = https_get_h2(s.https, "web.acme.test", "/", ca.cert_pem())
        .await
        .expect("HTTP/2");
    assert_eq!(status, 500, "{body}");
}
