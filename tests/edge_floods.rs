//! Floods at the edge through `bulkhead standalone`: one source holding many silent connections,
//! or one source holding many connections to one tenant, leaves other sources and other tenants
//! served; the excess is refused and counted in `/metrics`. Limits are lowered through the
//! edge's flags (as environment variables) so the floods stay small. Other sources are other
//! loopback addresses: Linux routes all of 127/8 to `lo`.

mod common;

use common::*;
use rustls_pki_types::ServerName;
use std::net::SocketAddr;

/// Silent connections the flooding source keeps open per test.
const FLOOD: usize = 40;
/// The lowered per-source cap on connections still sniffing.
const PER_SOURCE: usize = 16;
/// A sniff deadline far beyond the test's length: only the per-source cap may close a connection.
const SNIFF_TIMEOUT_MS: &str = "120000";

/// An HTTPS GET from `source`: TLS handshake with SNI `host`, then one request.
async fn https_get_from(
    source: &str,
    addr: SocketAddr,
    host: &str,
    ca_pem: &str,
) -> Result<(u16, String), String> {
    let stream = connect_from(source, addr).await;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(
        SETTLE,
        tls_connector(ca_pem, &[b"http/1.1"]).connect(name, stream),
    )
    .await
    .map_err(|_| "TLS handshake timeout".to_string())?
    .map_err(|e| format!("TLS handshake: {e}"))?;
    KeepAlive::over(tls).await?.get(host, "/").await
}

/// A plain HTTP keep-alive connection from `source`.
async fn http_from(source: &str, addr: SocketAddr) -> KeepAlive {
    KeepAlive::over(connect_from(source, addr).await)
        .await
        .expect("HTTP/1.1 handshake")
}

/// Two tenants, each with a TLS and a plain listener and a backend of its own.
async fn two_tenants(env: &[(&str, &str)]) -> (Standalone, pki::DemoCa) {
    let ca = pki::DemoCa::new("floods CA").unwrap();
    let mut files = Vec::new();
    for tenant in ["acme", "globex"] {
        let wildcard = format!("*.{tenant}.test");
        let leaf = ca.issue(&[&wildcard]).unwrap();
        let web = backend(&format!("{tenant}-web")).await;
        files.push((
            format!("{tenant}.yaml"),
            [
                tenant_yaml(tenant, &[&wildcard]),
                gateway_yaml(tenant, &wildcard, Some("tls")),
                pki::tls_secret_yaml(tenant, "tls", &leaf),
                route_yaml(tenant, "web", &[&format!("www.{tenant}.test")], "/", "web"),
                service_yaml(tenant, "web", web),
            ]
            .join("---\n"),
        ));
    }
    let files: Vec<(&str, String)> = files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    let bh = Standalone::start_with_env(&files, env).await;
    for tenant in ["acme", "globex"] {
        let host = format!("www.{tenant}.test");
        let served = eventually(SETTLE, || async {
            let (status, _) = https_get_from("127.0.0.9", bh.https, &host, ca.cert_pem())
                .await
                .ok()?;
            (status == 200).then_some(())
        })
        .await;
        assert!(served.is_some(), "{tenant} never served\n{}", bh.log());
    }
    (bh, ca)
}

/// Waits until `/metrics` has exactly `line`.
async fn metric_eventually(bh: &Standalone, line: &str) {
    let seen = eventually(SETTLE, || async {
        bh.metrics().await.lines().any(|l| l == line).then_some(())
    })
    .await;
    assert!(
        seen.is_some(),
        "no line {line:?} in\n{}",
        bh.metrics().await
    );
}

#[tokio::test]
async fn one_source_holding_silent_connections_leaves_other_sources_served() {
    let per_source = PER_SOURCE.to_string();
    let (bh, ca) = two_tenants(&[
        ("BULKHEAD_EDGE_MAX_SNIFFING_PER_SOURCE", per_source.as_str()),
        // Below the flood: without a per-source cap the flood alone would fill the pool.
        ("BULKHEAD_EDGE_MAX_SNIFFING", "24"),
        ("BULKHEAD_EDGE_SNIFF_TIMEOUT_MS", SNIFF_TIMEOUT_MS),
    ])
    .await;
    let mut silent = Vec::new();
    for _ in 0..FLOOD {
        silent.push(connect_from("127.0.0.1", bh.https).await);
    }
    let refused = FLOOD - PER_SOURCE;
    metric_eventually(
        &bh,
        &format!(
            r#"bulkhead_edge_refused_total{{listener="https",tenant="",reason="source_sniffing_limit"}} {refused}"#
        ),
    )
    .await;
    metric_eventually(
        &bh,
        &format!("bulkhead_edge_connections_sniffing {PER_SOURCE}"),
    )
    .await;
    // Another source completes TLS handshakes and requests to both tenants meanwhile.
    for tenant in ["acme", "globex"] {
        let host = format!("www.{tenant}.test");
        let (status, body) = https_get_from("127.0.0.2", bh.https, &host, ca.cert_pem())
            .await
            .unwrap_or_else(|e| panic!("{tenant} during the flood: {e}\n{}", bh.log()));
        assert_eq!(status, 200);
        assert_eq!(
            answer_field(&body, "backend"),
            Some(format!("{tenant}-web"))
        );
    }
    drop(silent);
}

#[tokio::test]
async fn one_source_cannot_fill_a_tenants_quota_and_a_full_tenant_leaves_others_served() {
    let (bh, _ca) = two_tenants(&[
        ("BULKHEAD_EDGE_MAX_CONNECTIONS_PER_TENANT", "4"),
        ("BULKHEAD_EDGE_MAX_CONNECTIONS_PER_SOURCE_PER_TENANT", "2"),
    ])
    .await;
    // Source 1 holds its share of acme: two keep-alive connections.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = http_from("127.0.0.1", bh.http).await;
        assert_eq!(c.get("www.acme.test", "/").await.unwrap().0, 200);
        held.push(c);
    }
    // Its third is refused by the edge, like a full tenant.
    let mut c = http_from("127.0.0.1", bh.http).await;
    let (status, body) = c.get("www.acme.test", "/").await.unwrap();
    assert_eq!(status, 503, "{body}");
    metric_eventually(
        &bh,
        r#"bulkhead_edge_refused_total{listener="http",tenant="acme",reason="source_tenant_limit"} 1"#,
    )
    .await;
    // Source 2 still reaches acme, filling its quota.
    for _ in 0..2 {
        let mut c = http_from("127.0.0.2", bh.http).await;
        assert_eq!(c.get("www.acme.test", "/").await.unwrap().0, 200);
        held.push(c);
    }
    // acme is full for everyone now; globex serves everyone, source 1 included.
    let mut c = http_from("127.0.0.3", bh.http).await;
    assert_eq!(c.get("www.acme.test", "/").await.unwrap().0, 503);
    metric_eventually(
        &bh,
        r#"bulkhead_edge_refused_total{listener="http",tenant="acme",reason="tenant_limit"} 1"#,
    )
    .await;
    for source in ["127.0.0.1", "127.0.0.3"] {
        let mut c = http_from(source, bh.http).await;
        let (status, body) = c.get("www.globex.test", "/").await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            answer_field(&body, "backend").as_deref(),
            Some("globex-web")
        );
    }
    drop(held);
}

#[tokio::test]
async fn a_source_beyond_its_connection_burst_is_refused_and_counted() {
    let (bh, ca) = two_tenants(&[
        ("BULKHEAD_EDGE_SOURCE_CONNECT_RATE", "1"),
        ("BULKHEAD_EDGE_SOURCE_CONNECT_BURST", "5"),
    ])
    .await;
    // Source 1 opens connections far faster than one a second: beyond the burst they are closed.
    let mut flood = Vec::new();
    for _ in 0..20 {
        flood.push(connect_from("127.0.0.1", bh.https).await);
    }
    // 20 connections against a burst of 5 refilled at 1/s: at least 10 are refused once the edge
    // has seen them all (the counter grows while it accepts them, so wait for the count).
    let refused = eventually(SETTLE, || async {
        let metrics = bh.metrics().await;
        let refused: usize = metrics
            .lines()
            .find(|l| {
                l.starts_with(
                    r#"bulkhead_edge_refused_total{listener="https",tenant="",reason="source_rate_limit"}"#,
                )
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())?;
        (refused >= 10).then_some(refused)
    })
    .await;
    assert!(
        refused.is_some(),
        "fewer than 10 source_rate_limit refusals\n{}\n{}",
        bh.metrics().await,
        bh.log()
    );
    // Another source has its own bucket.
    let (status, _) = https_get_from("127.0.0.2", bh.https, "www.globex.test", ca.cert_pem())
        .await
        .unwrap();
    assert_eq!(status, 200);
    drop(flood);
}
