//! Certificate choice by SNI, HTTP/1.1 and HTTP/2 routing by host and path, 404 / 421 / 500, weights.

use crate::support::*;
use bulkhead_snapshot::{BackendProtocol, PathMatch, TenantSnapshot};
use http::{StatusCode, Version};

struct Fixture {
    pki: Pki,
    router: TestRouter,
    _backends: Vec<EchoBackend>,
}

async fn fixture() -> Fixture {
    let pki = Pki::new();
    let api = EchoBackend::start("api").await;
    let web = EchoBackend::start("web").await;
    let wild = EchoBackend::start("wild").await;
    let mut s: TenantSnapshot = base_snapshot(&pki, 1);
    s.backends.insert(
        "acme/api:80".into(),
        backend(BackendProtocol::Http1, &[api.addr]),
    );
    s.backends.insert(
        "acme/web:80".into(),
        backend(BackendProtocol::Http1, &[web.addr]),
    );
    s.backends.insert(
        "acme/wild:80".into(),
        backend(BackendProtocol::Http1, &[wild.addr]),
    );
    s.https.virtual_hosts = vec![
        vhost(
            "a.acme.test",
            443,
            vec![
                route(
                    "exact",
                    Some(PathMatch::Exact("/api/exact".into())),
                    vec![weighted(Some("acme/wild:80"), 1)],
                ),
                route(
                    "api",
                    prefix("/api"),
                    vec![weighted(Some("acme/api:80"), 1)],
                ),
                route("invalid", prefix("/invalid"), vec![weighted(None, 1)]),
                route("empty", prefix("/empty"), vec![]),
                route(
                    "split",
                    prefix("/split"),
                    vec![
                        weighted(Some("acme/web:80"), 1),
                        weighted(Some("acme/api:80"), 3),
                        weighted(Some("acme/wild:80"), 0),
                    ],
                ),
                route("web", prefix("/"), vec![weighted(Some("acme/web:80"), 1)]),
            ],
        ),
        vhost(
            "*.acme.test",
            443,
            vec![route(
                "wild",
                prefix("/w"),
                vec![weighted(Some("acme/wild:80"), 1)],
            )],
        ),
    ];
    s.http.virtual_hosts = vec![vhost(
        "a.acme.test",
        80,
        vec![route(
            "plain",
            prefix("/"),
            vec![weighted(Some("acme/web:80"), 1)],
        )],
    )];
    let router = TestRouter::start(s).await;
    Fixture {
        pki,
        router,
        _backends: vec![api, web, wild],
    }
}

#[tokio::test]
async fn certificate_is_chosen_by_sni_exact_before_wildcard() {
    let f = fixture().await;
    let tls = tls_connect(&f.pki, f.router.https, "a.acme.test", &[b"http/1.1"])
        .await
        .unwrap();
    assert!(
        peer_leaf(&tls) == f.pki.exact.der,
        "a.acme.test gets its exact certificate"
    );
    let tls = tls_connect(&f.pki, f.router.https, "b.acme.test", &[b"http/1.1"])
        .await
        .unwrap();
    assert!(
        peer_leaf(&tls) == f.pki.wildcard.der,
        "b.acme.test gets the wildcard certificate"
    );
}

#[tokio::test]
async fn unknown_sni_is_refused_with_unrecognized_name() {
    let f = fixture().await;
    let err = tls_connect(&f.pki, f.router.https, "other.test", &[b"http/1.1"])
        .await
        .expect_err("unknown SNI refused");
    let rustls_err = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(
            rustls_err,
            Some(rustls::Error::AlertReceived(
                rustls::AlertDescription::UnrecognisedName
            ))
        ),
        "{err:?}"
    );
}

async fn check_routing(client: &mut Client, version: Version) {
    let r = client.get("a.acme.test", "/api/users").await;
    assert_eq!((r.status, r.backend().as_str()), (StatusCode::OK, "api"));
    assert_eq!(r.version, version);
    assert_eq!(r.json()["path"], "/api/users");
    assert_eq!(client.get("a.acme.test", "/api").await.backend(), "api");
    assert_eq!(
        client.get("a.acme.test", "/api/exact").await.backend(),
        "wild",
        "first matching entry wins"
    );
    assert_eq!(
        client.get("a.acme.test", "/apiary").await.backend(),
        "web",
        "prefix is element-wise"
    );
    assert_eq!(client.get("a.acme.test", "/").await.backend(), "web");
    assert_eq!(
        client.get("A.ACME.test:8443", "/api").await.backend(),
        "api",
        "host normalised, port ignored"
    );
    let other_vhost = client.get("b.acme.test", "/w").await;
    assert_eq!(
        other_vhost.status,
        StatusCode::MISDIRECTED_REQUEST,
        "b.acme.test is served by another listener than a.acme.test's"
    );
    assert_eq!(
        client.get("evil.test", "/").await.status,
        StatusCode::MISDIRECTED_REQUEST
    );
    assert_eq!(
        client.get("a.acme.test", "/invalid").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        client.get("a.acme.test", "/empty").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test]
async fn http1_routes_by_host_and_path_precedence() {
    let f = fixture().await;
    let mut c = h1_tls(&f.pki, &f.router, "a.acme.test").await;
    check_routing(&mut c, Version::HTTP_11).await;
}

#[tokio::test]
async fn http2_routes_by_authority_and_path_precedence() {
    let f = fixture().await;
    let mut c = h2_tls(&f.pki, &f.router, "a.acme.test").await;
    check_routing(&mut c, Version::HTTP_2).await;
    let r = c.get("a.acme.test", "/api/x").await;
    assert_eq!(
        r.json()["version"],
        "HTTP/1.1",
        "HTTP/1 backend is spoken to in HTTP/1.1"
    );
    assert_eq!(
        r.seen_header("host").as_deref(),
        Some("a.acme.test"),
        "authority becomes Host"
    );
}

#[tokio::test]
async fn wildcard_connection_serves_sibling_names_and_404s_unmatched_paths() {
    let f = fixture().await;
    let mut c = h2_tls(&f.pki, &f.router, "b.acme.test").await;
    assert_eq!(c.get("b.acme.test", "/w/1").await.backend(), "wild");
    assert_eq!(
        c.get("c.acme.test", "/w/2").await.backend(),
        "wild",
        "same listener"
    );
    assert_eq!(
        c.get("b.acme.test", "/nothing").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get("a.acme.test", "/").await.status,
        StatusCode::MISDIRECTED_REQUEST,
        "a.acme.test has a listener of its own: a coalesced request is misdirected (GEP-3567)"
    );
}

#[tokio::test]
async fn weights_are_respected_and_weight_zero_is_never_chosen() {
    let f = fixture().await;
    let mut c = h2_tls(&f.pki, &f.router, "a.acme.test").await;
    let (mut web, mut api) = (0, 0);
    for _ in 0..400 {
        match c.get("a.acme.test", "/split").await.backend().as_str() {
            "web" => web += 1,
            "api" => api += 1,
            other => panic!("weight-0 or unknown backend answered: {other:?}"),
        }
    }
    assert!(
        (240..=360).contains(&api),
        "api {api} of 400 (expected ~300)"
    );
    assert!(web > 0);
}

#[tokio::test]
async fn plain_http_listener_routes_by_host() {
    let f = fixture().await;
    let mut c = h1_plain(&f.router).await;
    let r = c.get("a.acme.test", "/x").await;
    assert_eq!((r.status, r.backend().as_str()), (StatusCode::OK, "web"));
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        c.get("b.acme.test", "/x").await.status,
        StatusCode::NOT_FOUND,
        "owned but no HTTP vhost"
    );
    assert_eq!(
        c.get("evil.test", "/x").await.status,
        StatusCode::MISDIRECTED_REQUEST
    );
}

#[tokio::test]
async fn router_without_proxy_protocol_uses_the_peer_address() {
    let pki = Pki::new();
    let web = EchoBackend::start("web").await;
    let mut s = base_snapshot(&pki, 1);
    s.backends.insert(
        "acme/web:80".into(),
        backend(BackendProtocol::Http1, &[web.addr]),
    );
    s.http.virtual_hosts = vec![vhost(
        "*",
        80,
        vec![route("plain", None, vec![weighted(Some("acme/web:80"), 1)])],
    )];
    s.hostnames = vec!["*".into()];
    let router = TestRouter::start_with(s, false).await;
    let tcp = tokio::net::TcpStream::connect(router.http).await.unwrap();
    let mut c = Client::h1(tcp).await;
    let r = c.get("anything.example", "/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
}
