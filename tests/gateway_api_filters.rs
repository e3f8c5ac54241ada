//! Gateway API HTTPRoute filters and backend references, end to end through `bulkhead standalone`,
//! written from the specification (HTTPRoute v1): request and response header modifiers, redirects
//! (scheme, hostname, port, path; the port defaults to the listener's, and a well-known port is left
//! out of `Location`), URL rewrites, weighted backends, invalid backend references (500 and
//! `ResolvedRefs=False`) and cross-namespace references with and without a ReferenceGrant.

mod common;

use common::*;

/// Names of the demo backends in namespace `acme` (one Service each, same name).
const BACKENDS: &[&str] = &["echo", "heavy", "light", "zero"];

/// The Gateway: HTTP 80 and HTTPS 443 for `*.acme.test`, and HTTP 8080 for `alt.acme.test`.
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
    hostname: \"*.acme.test\"
  - name: https
    protocol: HTTPS
    port: 443
    hostname: \"*.acme.test\"
    tls:
      mode: Terminate
      certificateRefs:
      - name: acme-tls
  - name: alt
    protocol: HTTP
    port: 8080
    hostname: alt.acme.test
";

/// HTTPRoute header: namespace `acme`, listener `section` of `gw`, one hostname.
fn route_head(name: &str, section: &str, hostname: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  namespace: acme\n  name: {name}\nspec:\n  parentRefs:\n  - name: gw\n    sectionName: {section}\n  hostnames: [\"{hostname}\"]\n  rules:\n"
    )
}

/// A rule matching PathPrefix `prefix` with one RequestRedirect filter (flow-style YAML body).
fn redirect_rule(prefix: &str, redirect: &str) -> String {
    format!(
        "  - matches: [{{path: {{type: PathPrefix, value: \"{prefix}\"}}}}]\n    filters:\n    - type: RequestRedirect\n      requestRedirect: {redirect}\n"
    )
}

/// A rule matching PathPrefix `prefix` with one URLRewrite filter, forwarding to `echo`.
fn rewrite_rule(prefix: &str, rewrite: &str) -> String {
    format!(
        "  - matches: [{{path: {{type: PathPrefix, value: \"{prefix}\"}}}}]\n    filters:\n    - type: URLRewrite\n      urlRewrite: {rewrite}\n    backendRefs: [{{name: echo, port: 80}}]\n"
    )
}

const HEADERS_ROUTE_RULES: &str = "  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Set, value: new}]
        add: [{name: X-Add, value: added}]
        remove: [X-Remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: X-Backend, value: masked}]
        add: [{name: X-Resp, value: one}]
        remove: [Content-Type]
    backendRefs: [{name: echo, port: 80}]
";

const WEIGHTS_ROUTE_RULES: &str = "  - backendRefs:
    - {name: heavy, port: 80, weight: 3}
    - {name: light, port: 80, weight: 1}
    - {name: zero, port: 80, weight: 0}
";

const MISSING_ROUTE_RULES: &str = "  - matches: [{path: {type: PathPrefix, value: /all}}]
    backendRefs: [{name: nosuch, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /half}}]
    backendRefs:
    - {name: echo, port: 80}
    - {name: nosuch, port: 80}
";

const CROSS_NAMESPACE_ROUTE_RULES: &str = "  - backendRefs:
    - {name: shared, namespace: shared, port: 80}
";

const REFERENCE_GRANT: &str = "apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata:
  namespace: shared
  name: acme-routes
spec:
  from:
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: acme}
  to:
  - {group: \"\", kind: Service}
";

struct Env {
    bh: Standalone,
    ca: String,
}

async fn start() -> Env {
    let ca = pki::DemoCa::new("acme CA").expect("CA");
    let leaf = ca.issue(&["*.acme.test"]).expect("leaf");
    let mut services = String::new();
    for name in BACKENDS {
        services.push_str(&service_yaml("acme", name, backend(name).await));
        services.push_str("---\n");
    }
    let shared = service_yaml("shared", "shared", backend("shared").await);

    let redirects = route_head("redirects", "http", "redir.acme.test")
        + &redirect_rule("/https", "{scheme: https}")
        + &redirect_rule("/moved", "{hostname: www.acme.test, statusCode: 301}")
        + &redirect_rule(
            "/old",
            "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}",
        )
        + &redirect_rule(
            "/full",
            "{path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}}",
        )
        + &redirect_rule("/port", "{scheme: https, port: 8443}")
        + &redirect_rule("/port80", "{port: 80}");
    let secure_redirects = route_head("secure-redirects", "https", "sredir.acme.test")
        + &redirect_rule("/host", "{hostname: www.acme.test}")
        + &redirect_rule("/plain", "{scheme: http}");
    let alt_redirects = route_head("alt-redirects", "alt", "alt.acme.test")
        + &redirect_rule("/host", "{hostname: other.acme.test}")
        + &redirect_rule("/https", "{scheme: https}");
    let rewrites = route_head("rewrites", "http", "rw.acme.test")
        + &rewrite_rule(
            "/api",
            "{hostname: backend.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}",
        )
        + &rewrite_rule(
            "/strip",
            "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}",
        )
        + &rewrite_rule(
            "/prefix/one",
            "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}",
        )
        + &rewrite_rule(
            "/full",
            "{path: {type: ReplaceFullPath, replaceFullPath: /replaced}}",
        );
    let routes = [
        route_head("headers", "http", "hdr.acme.test") + HEADERS_ROUTE_RULES,
        redirects,
        secure_redirects,
        alt_redirects,
        rewrites,
        route_head("weights", "http", "w.acme.test") + WEIGHTS_ROUTE_RULES,
        route_head("missing", "http", "missing.acme.test") + MISSING_ROUTE_RULES,
        route_head("xns", "http", "xns.acme.test") + CROSS_NAMESPACE_ROUTE_RULES,
    ]
    .join("---\n");
    let files = vec![
        ("tenant.yaml", tenant_yaml("acme", &["*.acme.test"])),
        ("gw.yaml", GATEWAY.to_owned()),
        ("tls.yaml", pki::tls_secret_yaml("acme", "acme-tls", &leaf)),
        ("services.yaml", services),
        ("shared.yaml", shared),
        ("routes.yaml", routes),
    ];
    // The edge receives HTTP listeners on 8080 too (a second edge Service port in a cluster).
    let bh =
        Standalone::start_with_env(&files, &[("BULKHEAD_LISTENER_HTTP_PORTS", "80,8080")]).await;
    let env = Env {
        bh,
        ca: ca.cert_pem().to_owned(),
    };
    let served = eventually(SETTLE, || async {
        let (status, _, _) = http_get(env.bh.http, "hdr.acme.test", "/").await.ok()?;
        (status == 200).then_some(())
    })
    .await;
    assert!(
        served.is_some(),
        "routes never served; log:\n{}",
        env.bh.log()
    );
    env
}

/// A header of an answer as text (`""` when absent).
fn header(headers: &http::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn request_and_response_header_modifiers_edit_headers() {
    let env = start().await;
    let (status, headers, body) = http_request(
        env.bh.http,
        "GET",
        "hdr.acme.test",
        "/",
        &[
            ("X-Set", "old"),
            ("X-Add", "orig"),
            ("X-Remove", "gone"),
            ("X-Keep", "kept"),
        ],
    )
    .await
    .expect("request");
    assert_eq!(status, 200, "{body}");
    // The backend sees the edited request.
    assert_eq!(echoed_header(&body, "x-set"), ["new"], "{body}");
    assert_eq!(echoed_header(&body, "x-add"), ["orig", "added"], "{body}");
    assert!(echoed_header(&body, "x-remove").is_empty(), "{body}");
    assert_eq!(echoed_header(&body, "x-keep"), ["kept"], "{body}");
    // The client sees the edited response (the demo backend sends x-backend and content-type).
    assert_eq!(header(&headers, "x-backend"), "masked", "{headers:?}");
    assert_eq!(header(&headers, "x-resp"), "one", "{headers:?}");
    assert!(!headers.contains_key("content-type"), "{headers:?}");
}

#[tokio::test]
async fn request_redirects_build_location_from_the_listener_port() {
    let env = start().await;
    // (edge port is HTTPS?, host, path, expected status, expected Location)
    let cases: &[(bool, &str, &str, u16, &str)] = &[
        // Scheme https: port 443 is well known, so no port (whatever port the client dialled).
        (
            false,
            "redir.acme.test",
            "/https/x",
            302,
            "https://redir.acme.test/https/x",
        ),
        (
            false,
            "redir.acme.test:12345",
            "/https",
            302,
            "https://redir.acme.test/https",
        ),
        // Hostname only: the listener's scheme and port (80: left out); statusCode honoured.
        (
            false,
            "redir.acme.test",
            "/moved/a",
            301,
            "http://www.acme.test/moved/a",
        ),
        // ReplacePrefixMatch replaces the matched prefix element-wise.
        (
            false,
            "redir.acme.test",
            "/old/x/y",
            302,
            "http://redir.acme.test/new/x/y",
        ),
        (
            false,
            "redir.acme.test",
            "/old",
            302,
            "http://redir.acme.test/new",
        ),
        (
            false,
            "redir.acme.test",
            "/full/path/original",
            302,
            "http://redir.acme.test/full-path-replacement",
        ),
        // An explicit port that is not the scheme's well-known port is kept.
        (
            false,
            "redir.acme.test",
            "/port",
            302,
            "https://redir.acme.test:8443/port",
        ),
        // An explicit port 80 on http is left out.
        (
            false,
            "redir.acme.test",
            "/port80",
            302,
            "http://redir.acme.test/port80",
        ),
        // From the HTTPS listener (443): hostname only keeps https and leaves the port out.
        (
            true,
            "sredir.acme.test",
            "/host",
            302,
            "https://www.acme.test/host",
        ),
        // Scheme http from HTTPS: port 80, left out.
        (
            true,
            "sredir.acme.test",
            "/plain",
            302,
            "http://sredir.acme.test/plain",
        ),
        // From the HTTP listener on 8080: hostname only keeps the listener's port 8080...
        (
            false,
            "alt.acme.test",
            "/host/x",
            302,
            "http://other.acme.test:8080/host/x",
        ),
        // ...and scheme https takes https's well-known port.
        (
            false,
            "alt.acme.test",
            "/https",
            302,
            "https://alt.acme.test/https",
        ),
    ];
    let mut wrong = Vec::new();
    for (tls, host, path, want_status, want_location) in cases {
        let answer = if *tls {
            let sni = host.split(':').next().unwrap_or(host);
            https_gets_on_one_connection(env.bh.https, sni, &env.ca, &[(*host, *path)])
                .await
                .0
                .pop()
                .ok_or_else(|| "no answer over TLS".to_owned())
        } else {
            http_request(env.bh.http, "GET", host, path, &[]).await
        };
        let got = match answer {
            Ok((status, headers, _)) => (status, header(&headers, "location")),
            Err(e) => (0, e),
        };
        if got != (*want_status, (*want_location).to_owned()) {
            wrong.push(format!(
                "{host}{path} (tls: {tls}): want {want_status} {want_location}, got {} {}",
                got.0, got.1
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} redirects wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn url_rewrites_change_what_the_backend_sees() {
    let env = start().await;
    // (path sent, path the backend must see, host the backend must see)
    let cases: &[(&str, &str, &str)] = &[
        ("/api/users", "/v2/users", "backend.internal"),
        ("/api", "/v2", "backend.internal"),
        ("/api/users?x=1", "/v2/users?x=1", "backend.internal"),
        ("/strip/three", "/three", "rw.acme.test"),
        ("/strip", "/", "rw.acme.test"),
        ("/prefix/one/two", "/one/two", "rw.acme.test"),
        ("/full/any/thing", "/replaced", "rw.acme.test"),
    ];
    let mut wrong = Vec::new();
    for (path, want_path, want_host) in cases {
        let got = match http_request(env.bh.http, "GET", "rw.acme.test", path, &[]).await {
            Ok((200, _, body)) => (
                answer_field(&body, "path").unwrap_or_default(),
                answer_field(&body, "host").unwrap_or_default(),
            ),
            Ok((status, _, body)) => (format!("status {status}"), body),
            Err(e) => (format!("error {e}"), String::new()),
        };
        if got != ((*want_path).to_owned(), (*want_host).to_owned()) {
            wrong.push(format!(
                "{path}: want {want_path} on {want_host}, got {} on {}",
                got.0, got.1
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} rewrites wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

/// Number of requests sent to check a weighted split.
const SPLIT_REQUESTS: usize = 400;

#[tokio::test]
async fn weighted_backends_split_traffic_and_invalid_refs_answer_500() {
    let env = start().await;
    let mut keep = KeepAlive::connect(env.bh.http).await;
    let (mut heavy, mut light, mut other) = (0usize, 0usize, Vec::new());
    for _ in 0..SPLIT_REQUESTS {
        let (status, body) = keep.get("w.acme.test", "/").await.expect("request");
        match (status, answer_field(&body, "backend").as_deref()) {
            (200, Some("heavy")) => heavy += 1,
            (200, Some("light")) => light += 1,
            (s, b) => other.push(format!("{s} {b:?}")),
        }
    }
    assert!(other.is_empty(), "unexpected answers: {other:?}");
    // 3:1 is 75% for heavy; the bound is loose so that the test never fails by chance.
    let share = heavy as f64 / SPLIT_REQUESTS as f64;
    assert!(
        (0.60..=0.90).contains(&share),
        "heavy got {heavy}, light {light} of {SPLIT_REQUESTS}"
    );
    assert!(light > 0);

    // A rule whose only backend Service does not exist: 500.
    let (status, _, _) = http_get(env.bh.http, "missing.acme.test", "/all")
        .await
        .expect("request");
    assert_eq!(status, 500);
    // Half valid: the invalid reference's share is answered with 500, the rest is served.
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..100 {
        match http_get(env.bh.http, "missing.acme.test", "/half").await {
            Ok((200, _, _)) => ok += 1,
            Ok((500, _, _)) => failed += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(ok > 0 && failed > 0, "200s: {ok}, 500s: {failed}");
    let status = env
        .bh
        .object_status("HTTPRoute", "acme", "missing")
        .await
        .expect("status of acme/missing");
    let resolved = parent_condition(&status, "ResolvedRefs");
    assert_eq!(resolved["status"], "False", "{status}");
    assert_eq!(resolved["reason"], "BackendNotFound", "{status}");
    // The route itself is still accepted.
    assert_eq!(parent_condition(&status, "Accepted")["status"], "True");
}

#[tokio::test]
async fn cross_namespace_backend_needs_a_reference_grant() {
    let env = start().await;
    let (status, _, _) = http_get(env.bh.http, "xns.acme.test", "/")
        .await
        .expect("request");
    assert_eq!(status, 500, "a reference to another namespace is refused");
    let status = env
        .bh
        .object_status("HTTPRoute", "acme", "xns")
        .await
        .expect("status of acme/xns");
    let resolved = parent_condition(&status, "ResolvedRefs");
    assert_eq!(resolved["status"], "False", "{status}");
    assert_eq!(resolved["reason"], "RefNotPermitted", "{status}");

    env.bh.write("grant.yaml", REFERENCE_GRANT);
    let served = eventually(SETTLE, || async {
        let (status, _, body) = http_get(env.bh.http, "xns.acme.test", "/").await.ok()?;
        (status == 200 && answer_field(&body, "backend")? == "shared").then_some(())
    })
    .await;
    assert!(
        served.is_some(),
        "the grant did not open the reference; log:\n{}",
        env.bh.log()
    );
    let resolved = eventually(SETTLE, || async {
        let status = env.bh.object_status("HTTPRoute", "acme", "xns").await?;
        let c = parent_condition(&status, "ResolvedRefs");
        (c["status"] == "True").then_some(c)
    })
    .await;
    assert!(resolved.is_some(), "ResolvedRefs never became True");

    // Taking the grant back closes the reference again.
    env.bh.remove("grant.yaml");
    let refused = eventually(SETTLE, || async {
        let (status, _, _) = http_get(env.bh.http, "xns.acme.test", "/").await.ok()?;
        (status == 500).then_some(())
    })
    .await;
    assert!(refused.is_some(), "removing the grant must refuse again");
}
