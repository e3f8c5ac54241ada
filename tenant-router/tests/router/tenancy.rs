//! Cross-tenant reach at the router: names another tenant owns inside this tenant's grant (421 on
//! reused connections), requests naming two hosts (400), and PROXY headers from untrusted peers
//! (refused unread).

use crate::support::*;
use bulkhead_snapshot::BackendProtocol;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `*.acme.test` served on both listeners by `web`, with `shop.acme.test` owned by another tenant.
fn overlapping(pki: &Pki, web: &EchoBackend) -> bulkhead_snapshot::TenantSnapshot {
    let mut s = base_snapshot(pki, 1);
    s.hostnames = vec!["*.acme.test".into()];
    s.foreign_hostnames = vec!["shop.acme.test".into()];
    s.https.terminate.retain(|t| t.hostname == "*.acme.test");
    s.backends.insert(
        "acme/web:80".into(),
        backend(BackendProtocol::Http1, &[web.addr]),
    );
    let all = || {
        vec![route(
            "site",
            prefix("/"),
            vec![weighted(Some("acme/web:80"), 1)],
        )]
    };
    s.https.virtual_hosts = vec![vhost("*.acme.test", 443, all())];
    s.http.virtual_hosts = vec![vhost("*.acme.test", 80, all())];
    sealed(s)
}

#[tokio::test]
async fn a_name_another_tenant_owns_inside_ours_is_misdirected_on_a_reused_connection() {
    let pki = Pki::new();
    let web = EchoBackend::start("web").await;
    let router = TestRouter::start(overlapping(&pki, &web)).await;

    let mut h2 = h2_tls(&pki, &router, "www.acme.test").await;
    assert_eq!(h2.get("www.acme.test", "/a").await.status, StatusCode::OK);
    let coalesced = h2.get("shop.acme.test", "/b").await;
    assert_eq!(coalesced.status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(
        h2.get("deep.shop.acme.test", "/c").await.status,
        StatusCode::OK
    );

    let mut plain = h1_plain(&router).await;
    assert_eq!(
        plain.get("www.acme.test", "/d").await.status,
        StatusCode::OK
    );
    let kept_alive = plain.get("SHOP.acme.test:80", "/e").await;
    assert_eq!(kept_alive.status, StatusCode::MISDIRECTED_REQUEST);

    assert_eq!(
        *web.seen.lock().unwrap(),
        ["GET /a", "GET /c", "GET /d"],
        "the other tenant's requests never reach this tenant's backend"
    );
    assert_eq!(
        router.metric(
            "bulkhead_router_host_refusals_total",
            &[("reason", "other_tenant")]
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn two_hosts_in_one_request_are_a_bad_request() {
    let pki = Pki::new();
    let web = EchoBackend::start("web").await;
    let router = TestRouter::start(overlapping(&pki, &web)).await;

    // HTTP/1.1, raw bytes: two Host field lines (RFC 9112 section 3.2).
    let mut tcp = proxied_tcp(router.http).await;
    tcp.write_all(b"GET /dup HTTP/1.1\r\nHost: www.acme.test\r\nHost: evil.acme.test\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 400");

    // HTTP/2: `:authority` and `host` naming different hosts (RFC 9113 section 8.3.1).
    let mut h2 = h2_tls(&pki, &router, "www.acme.test").await;
    let req = h2
        .request("GET", "www.acme.test", "/mismatch")
        .header("host", "other.acme.test")
        .body(Full::<Bytes>::default())
        .unwrap();
    let r = read_reply(h2.send(req).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let req = h2
        .request("GET", "www.acme.test", "/same")
        .header("host", "WWW.acme.test:443")
        .body(Full::<Bytes>::default())
        .unwrap();
    let r = read_reply(h2.send(req).await.unwrap()).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the same host, spelled differently"
    );

    assert_eq!(*web.seen.lock().unwrap(), ["GET /same"]);
    for reason in ["duplicate", "authority_mismatch"] {
        assert_eq!(
            router.metric("bulkhead_router_host_refusals_total", &[("reason", reason)]),
            Some(1.0),
            "{reason}"
        );
    }
}

#[tokio::test]
async fn an_absolute_form_target_names_the_host_and_host_is_ignored() {
    let pki = Pki::new();
    let web = EchoBackend::start("web").await;
    let router = TestRouter::start(overlapping(&pki, &web)).await;
    let mut tcp = proxied_tcp(router.http).await;
    tcp.write_all(
        b"GET http://shop.acme.test/abs HTTP/1.1\r\nHost: www.acme.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut reply = Vec::new();
    tcp.read_to_end(&mut reply).await.unwrap();
    assert!(
        reply.starts_with(b"HTTP/1.1 421"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(web.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_proxy_header_is_accepted_only_from_trusted_networks() {
    let pki = Pki::new();
    let web = EchoBackend::start("web").await;
    let request = b"GET /who HTTP/1.1\r\nHost: www.acme.test\r\nConnection: close\r\n\r\n";

    // This test connects from 127.0.0.1; the router trusts only 10.0.0.0/8.
    let untrusted = TestRouter::start_custom(overlapping(&pki, &web), |c| {
        c.accept_proxy_from = vec!["10.0.0.0/8".parse().unwrap()];
    })
    .await;
    let mut tcp = proxied_tcp(untrusted.http).await;
    tcp.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    let _ = tcp.read_to_end(&mut reply).await;
    assert!(reply.is_empty(), "{}", String::from_utf8_lossy(&reply));
    assert!(web.seen.lock().unwrap().is_empty(), "never forwarded");
    assert!(
        eventually(|| untrusted.metric(
            "bulkhead_router_connections_total",
            &[("outcome", "proxy_untrusted")]
        ) == Some(1.0))
        .await
    );

    // The same bytes from a trusted peer: the header's client is the one forwarded.
    let trusted = TestRouter::start(overlapping(&pki, &web)).await;
    let mut tcp = proxied_tcp(trusted.http).await;
    tcp.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    tcp.read_to_end(&mut reply).await.unwrap();
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("192.0.2.10"),
        "declared client forwarded: {text}"
    );
}
