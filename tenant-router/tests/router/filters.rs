//! Filters (header modifiers, redirects, rewrites) and forwarding headers.

use crate::support::*;
use bulkhead_snapshot::{
    BackendProtocol, HeaderModifier, HttpFilter, PathModifier, Redirect, RouteEntry,
    TenantSnapshot, UrlRewrite,
};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;

fn with_filters(mut r: RouteEntry, filters: Vec<HttpFilter>) -> RouteEntry {
    r.filters = filters;
    r
}

fn redirect(
    scheme: Option<&str>,
    hostname: Option<&str>,
    port: Option<u16>,
    path: Option<PathModifier>,
    status: u16,
) -> HttpFilter {
    HttpFilter::RequestRedirect(Redirect {
        scheme: scheme.map(str::to_owned),
        hostname: hostname.map(str::to_owned),
        port,
        path,
        status_code: status,
    })
}

async fn fixture(pki: &Pki, web: &EchoBackend) -> TestRouter {
    let mut s: TenantSnapshot = base_snapshot(pki, 1);
    s.backends.insert(
        "acme/web:80".into(),
        backend(BackendProtocol::Http1, &[web.addr]),
    );
    let to_web = || vec![weighted(Some("acme/web:80"), 1)];
    let modifiers = with_filters(
        route("mod", prefix("/mod"), to_web()),
        vec![
            HttpFilter::RequestHeaderModifier(HeaderModifier {
                set: vec![("x-set".into(), "new".into())],
                add: vec![("x-add".into(), "added".into())],
                remove: vec!["x-remove".into()],
            }),
            HttpFilter::ResponseHeaderModifier(HeaderModifier {
                set: vec![("x-resp".into(), "yes".into())],
                ..Default::default()
            }),
        ],
    );
    let rewrite = with_filters(
        route("rewrite", prefix("/old"), to_web()),
        vec![HttpFilter::UrlRewrite(UrlRewrite {
            hostname: Some("rewritten.example".into()),
            path: Some(PathModifier::ReplacePrefixMatch("/new".into())),
        })],
    );
    let full_rewrite = with_filters(
        route("full", prefix("/full"), to_web()),
        vec![HttpFilter::UrlRewrite(UrlRewrite {
            hostname: None,
            path: Some(PathModifier::ReplaceFullPath("/replaced".into())),
        })],
    );
    let https_redirect = with_filters(
        route("tohttp", prefix("/plain"), vec![]),
        vec![redirect(Some("http"), None, None, None, 0)],
    );
    let same_scheme = with_filters(
        route("same", prefix("/same"), vec![]),
        vec![redirect(None, None, None, None, 302)],
    );
    s.https.virtual_hosts = vec![vhost(
        "a.acme.test",
        443,
        vec![
            modifiers,
            rewrite,
            full_rewrite,
            https_redirect,
            same_scheme,
            route("web", prefix("/"), to_web()),
        ],
    )];
    s.http.virtual_hosts = vec![vhost(
        "a.acme.test",
        8080,
        vec![
            with_filters(
                route("tohttps", prefix("/secure"), vec![]),
                vec![redirect(Some("https"), None, None, None, 301)],
            ),
            with_filters(
                route("host", prefix("/host"), vec![]),
                vec![redirect(None, Some("b.acme.test"), None, None, 302)],
            ),
            with_filters(
                route("prefix", prefix("/pre"), vec![]),
                vec![redirect(
                    None,
                    None,
                    Some(9000),
                    Some(PathModifier::ReplacePrefixMatch("/post".into())),
                    302,
                )],
            ),
        ],
    )];
    TestRouter::start(s).await
}

fn location(r: &Reply) -> &str {
    r.headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn header_modifiers_edit_request_and_response() {
    let pki = Pki::new();
    let web = EchoBackend::start("web").await;
    let router = fixture(&pki, &web).await;
    let mut c = h1_tls(&pki, &router, "a.acme.test").await;
    let req = c
        .request("GET", "a.acme.test", "/mod")
        .header("x-set", "old")
        .header("x-add", "orig")
        .header("x-remove", "1")
        .body(Full::<Bytes>::default())
        .unwrap();
    let r = read_reply(c.send(req).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.seen_header("x-set").as_deref(), Some("new"));
    assert_eq!(r.seen_header("x-add").as_deref(), Some("orig, added"));
    assert_eq!(r.seen_header("x-remove"), None);
    assert_eq!(
        r.headers.get("x-resp").map(|v| v.as_bytes()),
        Some(&b"yes"[..])
    );
}

#[tokio::test]
async fn url_rewrite_changes_host_and_path_prefix() {
    let pki = Pki::new();
    let web = EchoBackend::start("web").await;
    let router = fixture(&pki, &web).await;
    let mut c = h2_tls(&pki, &router, "a.acme.test").await;
    let r = c.get("a.acme.test", "/old/thing?q=1").await;
    let j = r.json();
    assert_eq!(j["path"], "/new/thing?q=1");
    assert_eq!(r.seen_header("host").as_deref(), Some("rewritten.example"));
    assert_eq!(
        r.seen_header("x-forwarded-host").as_deref(),
        Some("a.acme.test")
    );
    assert_eq!(c.get("a.acme.test", "/old").await.json()["path"], "/new");
    assert_eq!(
        c.get("a.acme.test", "/full/a/b").await.json()["path"],
        "/replaced"
    );
}

#[tokio::test]
async fn forwarding_headers_are_added_and_hop_by_hop_removed() {
    let pki = Pki::new();
    let web = EchoBackend::start("web").await;
    let router = fixture(&pki, &web).await;
    let mut c = h1_tls(&pki, &router, "a.acme.test").await;
    let req = c
        .request("POST", "a.acme.test", "/")
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .body(Full::new(Bytes::from_static(b"hello body")))
        .unwrap();
    let r = read_reply(c.send(req).await.unwrap()).await;
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("192.0.2.10"),
        "client address from PROXY v2"
    );
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(r.seen_header("x-request-id").map(|id| id.len()), Some(32));
    assert_eq!(r.seen_header("x-hop"), None);
    assert!(r
        .seen_header("traceparent")
        .is_some_and(|t| t.starts_with("00-0af7")));
    assert_eq!(r.json()["body_len"], 10);
    assert_eq!(r.json()["method"], "POST");
}

#[tokio::test]
async fn redirects_follow_gateway_api_port_rules() {
    let pki = Pki::new();
    let web = EchoBackend::start("web").await;
    let router = fixture(&pki, &web).await;
    let mut plain = h1_plain(&router).await;
    let r = plain.get("a.acme.test", "/secure/x?y=1").await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        location(&r),
        "https://a.acme.test/secure/x?y=1",
        "scheme set: its well-known port, omitted"
    );
    let r = plain.get("a.acme.test:12345", "/host").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        location(&r),
        "http://b.acme.test:8080/host",
        "no scheme: the listener port, not the real one"
    );
    let r = plain.get("a.acme.test", "/pre/fix").await;
    assert_eq!(location(&r), "http://a.acme.test:9000/post/fix");

    let mut tls = h1_tls(&pki, &router, "a.acme.test").await;
    let r = tls.get("a.acme.test", "/same/p").await;
    assert_eq!(
        location(&r),
        "https://a.acme.test/same/p",
        "listener port 443 on https is omitted"
    );
    let r = tls.get("a.acme.test", "/plain").await;
    assert_eq!(
        location(&r),
        "http://a.acme.test/plain",
        "scheme change: new scheme's default port"
    );
}

#[tokio::test]
async fn request_mirror_sends_a_copy_and_the_answer_comes_from_the_backend() {
    let pki = Pki::new();
    let web = EchoBackend::start("web").await;
    let shadow = EchoBackend::start("shadow").await;
    let mut s: TenantSnapshot = base_snapshot(&pki, 1);
    s.backends.insert(
        "acme/web:80".into(),
        backend(BackendProtocol::Http1, &[web.addr]),
    );
    s.backends.insert(
        "acme/shadow:80".into(),
        backend(BackendProtocol::Http1, &[shadow.addr]),
    );
    let mirrored = with_filters(
        route(
            "mirror",
            prefix("/"),
            vec![weighted(Some("acme/web:80"), 1)],
        ),
        vec![HttpFilter::RequestMirror(bulkhead_snapshot::Mirror {
            backend: "acme/shadow:80".into(),
            percent: 100,
        })],
    );
    s.https.virtual_hosts = vec![vhost("a.acme.test", 443, vec![mirrored])];
    let router = TestRouter::start(s).await;
    let mut c = h1_tls(&pki, &router, "a.acme.test").await;
    let r = c.get("a.acme.test", "/copied").await;
    assert_eq!(r.backend(), "web");
    let copy_seen = eventually(|| {
        shadow
            .seen
            .lock()
            .unwrap()
            .contains(&"GET /copied".to_owned())
    })
    .await;
    assert!(copy_seen, "mirror backend received the copy");
    assert_eq!(web.seen.lock().unwrap().as_slice(), ["GET /copied"]);
}
