//! TLS terminated by the tenant router, then plain TCP: a Gateway listener with protocol `TLS` and
//! mode `Terminate` and a TCPRoute attached, end to end through `bulkhead standalone`. Plain `TCP`
//! listeners stay unsupported (the edge cannot tell tenants apart without SNI) and say so.

mod common;

use common::*;
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  namespace: acme
  name: gw
spec:
  gatewayClassName: bulkhead
  listeners:
  - name: db
    protocol: TLS
    port: 5433
    hostname: db.acme.test
    tls:
      mode: Terminate
      certificateRefs:
      - name: acme-tls
  - name: https
    protocol: HTTPS
    port: 443
    hostname: www.acme.test
    tls:
      certificateRefs:
      - name: acme-tls
  - name: tcp
    protocol: TCP
    port: 5432
";

const TCP_ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata:
  namespace: acme
  name: db
spec:
  parentRefs:
  - name: gw
    sectionName: db
  rules:
  - backendRefs:
    - name: db
      port: 80
";

/// A TCP backend answering every line with the line in upper case.
async fn upper_case_backend() -> SocketAddr {
    serve_each(|stream| async move {
        let (rd, mut wr) = stream.into_split();
        let mut lines = BufReader::new(rd).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let answer = format!("{}\n", line.to_uppercase());
            if wr.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn tls_terminate_listener_copies_plaintext_to_the_tcproute_backend() {
    let ca = pki::DemoCa::new("acme CA").expect("CA");
    let leaf = ca.issue(&["db.acme.test", "www.acme.test"]).expect("leaf");
    let db = upper_case_backend().await;
    let web = backend("web").await;
    let web_route = route_yaml("acme", "web", &["www.acme.test"], "/", "web");
    let files = vec![
        ("tenant.yaml", tenant_yaml("acme", &["*.acme.test"])),
        ("gw.yaml", GATEWAY.to_owned()),
        ("tls.yaml", pki::tls_secret_yaml("acme", "acme-tls", &leaf)),
        (
            "db.yaml",
            service_yaml("acme", "db", db) + "---\n" + TCP_ROUTE,
        ),
        (
            "web.yaml",
            service_yaml("acme", "web", web) + "---\n" + &web_route,
        ),
    ];
    // The edge receives TLS listeners on 5433 too (a second edge Service port in a cluster).
    let bh =
        Standalone::start_with_env(&files, &[("BULKHEAD_LISTENER_TLS_PORTS", "443,5433")]).await;

    let tls = eventually(SETTLE, || async {
        tls_connect(bh.https, "db.acme.test", ca.cert_pem(), &[])
            .await
            .ok()
    })
    .await
    .unwrap_or_else(|| panic!("no TLS handshake for db.acme.test; log:\n{}", bh.log()));
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    let (rd, mut wr) = tokio::io::split(tls);
    let mut rd = BufReader::new(rd);
    for word in ["hello", "bulkhead", "tcp route"] {
        wr.write_all(format!("{word}\n").as_bytes())
            .await
            .expect("write");
        let mut line = String::new();
        rd.read_line(&mut line).await.expect("read");
        assert_eq!(line, format!("{}\n", word.to_uppercase()));
    }
    // Half-close travels through: the backend sees EOF and closes, the client sees EOF.
    wr.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    rd.read_to_end(&mut rest).await.expect("read to EOF");
    assert!(rest.is_empty(), "{rest:?}");

    // HTTPS on another listener of the same Gateway is unaffected.
    let (status, _, body) = https_get(bh.https, "www.acme.test", "/", ca.cert_pem())
        .await
        .expect("HTTPS");
    assert_eq!(status, 200, "{body}");
    assert_eq!(answer_field(&body, "backend").as_deref(), Some("web"));

    let route = bh
        .object_status("TCPRoute", "acme", "db")
        .await
        .expect("TCPRoute status");
    assert_eq!(
        parent_condition(&route, "Accepted")["status"],
        "True",
        "{route}"
    );
    assert_eq!(
        parent_condition(&route, "ResolvedRefs")["status"],
        "True",
        "{route}"
    );
    // A plain TCP listener is refused with a reason.
    let gw = bh
        .object_status("Gateway", "acme", "gw")
        .await
        .expect("Gateway status");
    let tcp = gw["listeners"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == "tcp"))
        .cloned()
        .unwrap_or_default();
    let accepted = tcp["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Accepted"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(accepted["status"], "False", "{gw}");
    assert_eq!(accepted["reason"], "UnsupportedProtocol", "{gw}");
    assert!(
        accepted["message"]
            .as_str()
            .is_some_and(|m| m.contains("SNI")),
        "{accepted}"
    );
}
