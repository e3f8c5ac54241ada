//! Gateway API conformance: requests by the Gateway's address (issue 14, item 1).
//!
//! The conformance suite sends every request for a route without `hostnames` to the Gateway's
//! address, `Host: <IP>` or `Host: <IP>:<port>` (and users curl a load balancer's IP the same way);
//! over TLS its client, given an address, sends no SNI. Both reach the tenant granted `"*"`, whose
//! listener without hostname serves them. The abuse side: an address never reaches a tenant that is
//! not granted `"*"`, not even over a connection opened for one of its names, and with no `"*"`
//! tenant the edge refuses clearly and counts the refusal.

mod common;

use common::*;
use std::net::SocketAddr;

/// A Gateway with listeners without hostname: HTTP on 80, HTTPS on 443 with Secret `tls`.
fn catch_all_gateway(ns: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  namespace: {ns}\n  name: gw\nspec:\n  gatewayClassName: bulkhead\n  listeners:\n  - name: http\n    protocol: HTTP\n    port: 80\n  - name: https\n    protocol: HTTPS\n    port: 443\n    tls:\n      mode: Terminate\n      certificateRefs:\n      - name: tls\n"
    )
}

/// Tenant `acme` (granted `acme.test` only); with `catch_all`, tenant `any` granted `"*"` whose
/// route has no hostnames. Returns the system and the CA clients trust.
async fn world(catch_all: bool) -> (Standalone, pki::DemoCa) {
    let ca = pki::DemoCa::new("conformance CA").expect("CA");
    let acme_leaf = ca.issue(&["acme.test"]).expect("leaf");
    let mut files = vec![
        ("acme.yaml", tenant_yaml("acme", &["acme.test"])),
        (
            "acme-gw.yaml",
            gateway_yaml("acme", "acme.test", Some("tls")),
        ),
        (
            "acme-tls.yaml",
            pki::tls_secret_yaml("acme", "tls", &acme_leaf),
        ),
        (
            "acme-route.yaml",
            route_yaml("acme", "web", &[], "/", "web"),
        ),
        (
            "acme-svc.yaml",
            service_yaml("acme", "web", backend("acme").await),
        ),
    ];
    if catch_all {
        let any_leaf = ca
            .issue(&["127.0.0.1", "::1", "default.test"])
            .expect("leaf");
        files.extend([
            ("any.yaml", tenant_yaml("any", &["*"])),
            ("any-gw.yaml", catch_all_gateway("any")),
            (
                "any-tls.yaml",
                pki::tls_secret_yaml("any", "tls", &any_leaf),
            ),
            ("any-route.yaml", route_yaml("any", "web", &[], "/", "web")),
            (
                "any-svc.yaml",
                service_yaml("any", "web", backend("any").await),
            ),
        ]);
    }
    let s = Standalone::start(&files).await;
    (s, ca)
}

/// Waits until a plain GET with `host` is served by backend `want`.
async fn served_by(addr: SocketAddr, host: &str, want: &str) -> Option<(u16, String)> {
    eventually(SETTLE, || async {
        let (status, _, body) = http_get(addr, host, "/by-address").await.ok()?;
        (answer_field(&body, "backend").as_deref() == Some(want)).then_some((status, body))
    })
    .await
}

/// The value of the edge's `refused` counter for `listener` and `reason` (0 when absent).
fn refused(metrics: &str, listener: &str, reason: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("bulkhead_edge_refused_total{"))
        .filter(|l| {
            l.contains(&format!("listener=\"{listener}\""))
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn host_by_ipv4_and_ipv6_address_with_or_without_port_reaches_the_catch_all_tenant() {
    let (s, _ca) = world(true).await;
    let port = s.http.port();
    for host in [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_owned(),
        format!("[::1]:{port}"),
        "[::1]".to_owned(),
    ] {
        let served = served_by(s.http, &host, "any").await;
        assert_eq!(
            served.map(|(status, _)| status),
            Some(200),
            "Host: {host} must reach the route without hostnames of the tenant granted \"*\"; log:\n{}",
            s.log()
        );
    }
    // The names keep going to their owner.
    assert!(served_by(s.http, "acme.test", "acme").await.is_some());
}

#[tokio::test]
async fn tls_without_sni_reaches_the_catch_all_listener_over_http1_and_http2() {
    let (s, ca) = world(true).await;
    // Given an address, rustls sends no SNI, as the conformance suite's client does; the router
    // must present the certificate of the listener without hostname (valid for the address).
    let answer = eventually(SETTLE, || async {
        https_get(s.https, "127.0.0.1", "/by-address", ca.cert_pem())
            .await
            .ok()
    })
    .await;
    let (status, _, body) = answer.unwrap_or_else(|| panic!("no answer; log:\n{}", s.log()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(answer_field(&body, "backend").as_deref(), Some("any"));

    let (status, body, alpn) = https_get_h2(s.https, "127.0.0.1", "/by-address", ca.cert_pem())
        .await
        .expect("HTTP/2 by address");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(status, 200, "{body}");
    assert_eq!(answer_field(&body, "backend").as_deref(), Some("any"));
}

#[tokio::test]
async fn an_address_on_a_connection_to_a_tenant_without_the_star_grant_is_misdirected() {
    let (s, _ca) = world(true).await;
    assert!(served_by(s.http, "acme.test", "acme").await.is_some());
    // The edge sent this connection to acme by its first Host; a later request by address on it
    // must not be answered by acme, which is not granted "*".
    let mut conn = KeepAlive::connect(s.http).await;
    let (status, body) = conn.get("acme.test", "/").await.expect("first request");
    assert_eq!(
        (status, answer_field(&body, "backend")),
        (200, Some("acme".into()))
    );
    let (status, body) = conn
        .get(&format!("127.0.0.1:{}", s.http.port()), "/")
        .await
        .expect("second request");
    assert_eq!(status, 421, "{body}");
    assert_eq!(answer_field(&body, "backend"), None);
}

#[tokio::test]
async fn without_a_catch_all_tenant_an_address_is_refused_and_counted() {
    let (s, ca) = world(false).await;
    assert!(served_by(s.http, "acme.test", "acme").await.is_some());
    for host in ["127.0.0.1", "[::1]:80"] {
        let (status, _, body) = http_get(s.http, host, "/").await.expect("answer");
        assert_eq!(status, 404, "Host: {host}: {body}");
        assert!(body.contains("requests by IP address"), "{body}");
    }
    assert_eq!(refused(&s.metrics().await, "http", "no_catch_all"), 2);

    // A ClientHello without SNI: the unrecognized_name alert, counted the same way.
    let (_, hello) = first_flight(tls_client_config(ca.cert_pem(), &[]), "127.0.0.1");
    let mut stream = tokio::net::TcpStream::connect(s.https)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut stream, &hello)
        .await
        .expect("hello");
    let ending = read_to_close(&mut stream, SETTLE).await;
    assert_eq!(ending.bytes(), ALERT_UNRECOGNIZED_NAME);
    assert_eq!(refused(&s.metrics().await, "https", "no_catch_all"), 1);
}
