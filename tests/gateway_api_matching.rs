//! Gateway API request matching, end to end through `bulkhead standalone`, written from the
//! specification (HTTPRoute v1): path match types and their element-wise semantics, header, query
//! parameter and method matches, precedence across rules and routes, listener ∩ route hostnames,
//! HTTPS and HTTP listeners with their own routes, 421 for a Host the connection cannot serve, and
//! request paths normalised before matching (what matched is what the backend receives).
//!
//! Every test runs the same manifests; each table lists requests and the demo backend that must
//! answer them (or the status code), and a failure prints the whole table of mismatches.

mod common;

use common::*;

/// Names of the demo backends (one Service each, same name).
const BACKENDS: &[&str] = &[
    "root", "exact", "prefix", "foo", "foobar", "regex", "hdr", "hdr2", "hdrre", "query", "post",
    "inherit", "wild", "deep", "plain", "secure",
];

/// One rule: a flow-style YAML list of matches (or `""` for none) and the backend Service.
fn rule(matches: &str, backend: &str) -> String {
    let mut s = String::from("  - ");
    if !matches.is_empty() {
        s.push_str(&format!("matches: {matches}\n    "));
    }
    s.push_str(&format!("backendRefs: [{{name: {backend}, port: 80}}]\n"));
    s
}

/// An HTTPRoute in namespace `acme` attached to listener `section` of Gateway `gw`.
fn route(name: &str, section: &str, hostnames: &[&str], rules: &[String]) -> String {
    let mut s = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  namespace: acme\n  name: {name}\nspec:\n  parentRefs:\n  - name: gw\n    sectionName: {section}\n"
    );
    if !hostnames.is_empty() {
        let hosts: Vec<String> = hostnames.iter().map(|h| format!("\"{h}\"")).collect();
        s.push_str(&format!("  hostnames: [{}]\n", hosts.join(", ")));
    }
    s.push_str("  rules:\n");
    for r in rules {
        s.push_str(r);
    }
    s
}

/// The Gateway: HTTP `*.acme.test`, HTTP `only.acme.example`, HTTPS `*.acme.test`.
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
  - name: exact
    protocol: HTTP
    port: 80
    hostname: only.acme.example
  - name: https
    protocol: HTTPS
    port: 443
    hostname: \"*.acme.test\"
    tls:
      mode: Terminate
      certificateRefs:
      - name: acme-tls
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
    let paths_a = route(
        "paths-a",
        "http",
        &["m.acme.test"],
        &[
            rule("[{path: {type: PathPrefix, value: /}}]", "root"),
            rule("[{path: {type: Exact, value: /exact}}]", "exact"),
            rule("[{path: {type: PathPrefix, value: /foo}}]", "foo"),
            rule(
                "[{path: {type: RegularExpression, value: \"/re/[0-9]+\"}}]",
                "regex",
            ),
        ],
    );
    // A second route on the same host: precedence is across routes, not only within one.
    let paths_b = route(
        "paths-b",
        "http",
        &["m.acme.test"],
        &[
            rule("[{path: {type: PathPrefix, value: /exact}}]", "prefix"),
            rule("[{path: {type: PathPrefix, value: /foo/bar/}}]", "foobar"),
            // Matches of one rule are ORed; the conditions of one match are ANDed.
            rule(
                "[{path: {type: Exact, value: /or-a}}, {path: {type: PathPrefix, value: /or-b}, headers: [{name: x-or, value: \"yes\"}]}]",
                "exact",
            ),
        ],
    );
    let headers_a = route(
        "headers-a",
        "http",
        &["h.acme.test"],
        &[
            rule("", "root"),
            rule("[{headers: [{name: x-env, value: canary}]}]", "hdr"),
            rule(
                "[{headers: [{type: RegularExpression, name: x-version, value: \"v[0-9]+\"}]}]",
                "hdrre",
            ),
            rule("[{queryParams: [{name: tier, value: gold}]}]", "query"),
            rule("[{method: POST}]", "post"),
            rule("[{path: {type: Exact, value: /special}}]", "exact"),
        ],
    );
    let headers_b = route(
        "headers-b",
        "http",
        &["h.acme.test"],
        &[rule(
            "[{headers: [{name: x-env, value: canary}, {name: X-User, value: alice}]}]",
            "hdr2",
        )],
    );
    let inherit = route(
        "inherit",
        "exact",
        &[],
        &[rule(
            "[{path: {type: PathPrefix, value: /inherit}}]",
            "inherit",
        )],
    );
    let wild = route(
        "wild",
        "exact",
        &["*.acme.example"],
        &[rule("[{path: {type: PathPrefix, value: /wild}}]", "wild")],
    );
    let deep = route("deep", "http", &["*.deep.acme.test"], &[rule("", "deep")]);
    let outside = route(
        "outside",
        "http",
        &["www.elsewhere.test"],
        &[rule("", "root")],
    );
    let plain = route("plain", "http", &["split.acme.test"], &[rule("", "plain")]);
    let secure = route(
        "secure",
        "https",
        &["split.acme.test"],
        &[rule("", "secure")],
    );
    let routes = [
        paths_a, paths_b, headers_a, headers_b, inherit, wild, deep, outside, plain, secure,
    ]
    .join("---\n");
    let files = vec![
        (
            "tenant.yaml",
            tenant_yaml("acme", &["*.acme.test", "*.acme.example"]),
        ),
        ("gw.yaml", GATEWAY.to_owned()),
        ("tls.yaml", pki::tls_secret_yaml("acme", "acme-tls", &leaf)),
        ("services.yaml", services),
        ("routes.yaml", routes),
    ];
    let bh = Standalone::start(&files).await;
    let env = Env {
        bh,
        ca: ca.cert_pem().to_owned(),
    };
    // Ready means serving a snapshot; wait until the routes of this one are in it.
    let served = eventually(SETTLE, || async {
        let (status, _, body) = http_get(env.bh.http, "split.acme.test", "/").await.ok()?;
        (status == 200 && answer_field(&body, "backend")? == "plain").then_some(())
    })
    .await;
    assert!(
        served.is_some(),
        "routes never served; log:\n{}",
        env.bh.log()
    );
    env
}

/// A request of a table: method, host, path, extra headers.
type Req<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)]);

/// `backend NAME` for a 200 from a demo backend, else `status N`.
fn outcome(answer: Result<Answer, String>) -> String {
    match answer {
        Ok((200, _, body)) => match answer_field(&body, "backend") {
            Some(b) => format!("backend {b}"),
            None => format!("200 without a backend: {body}"),
        },
        Ok((status, _, _)) => format!("status {status}"),
        Err(e) => format!("error {e}"),
    }
}

/// Runs a table of plain HTTP requests; panics listing every request whose outcome differs.
async fn check_table(env: &Env, cases: &[(Req<'_>, &str)]) {
    let mut wrong = Vec::new();
    for ((method, host, path, headers), want) in cases {
        let got = outcome(http_request(env.bh.http, method, host, path, headers).await);
        let want = if want.parse::<u16>().is_ok() {
            format!("status {want}")
        } else {
            format!("backend {want}")
        };
        if got != want {
            wrong.push(format!(
                "{method} {host}{path} {headers:?}: want {want}, got {got}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} requests routed wrongly:\n{}\nlog:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n"),
        env.bh.log()
    );
}

#[tokio::test]
async fn path_matches_follow_gateway_api_semantics_and_precedence() {
    let env = start().await;
    const H: &str = "m.acme.test";
    let none: &[(&str, &str)] = &[];
    let cases: Vec<(Req<'_>, &str)> = vec![
        // Exact beats a PathPrefix of the same value (in another route).
        (("GET", H, "/exact", none), "exact"),
        // Exact is exact: a trailing slash or a longer path falls to the prefix.
        (("GET", H, "/exact/", none), "prefix"),
        (("GET", H, "/exact/x", none), "prefix"),
        (("GET", H, "/exactly", none), "root"),
        // A query string is not part of the path.
        (("GET", H, "/exact?a=b", none), "exact"),
        // PathPrefix is element-wise: /foo matches /foo, /foo/ and /foo/x, never /foobar.
        (("GET", H, "/foo", none), "foo"),
        (("GET", H, "/foo/", none), "foo"),
        (("GET", H, "/foo/baz", none), "foo"),
        (("GET", H, "/foobar", none), "root"),
        // Longer prefix wins, across routes; a trailing slash in the prefix is ignored.
        (("GET", H, "/foo/bar", none), "foobar"),
        (("GET", H, "/foo/bar/baz", none), "foobar"),
        (("GET", H, "/foo/barn", none), "foo"),
        // OR across the matches of a rule, AND inside one match.
        (("GET", H, "/or-a", none), "exact"),
        (("GET", H, "/or-b/x", &[("x-or", "yes")]), "exact"),
        (("GET", H, "/or-b/x", none), "root"),
        (("GET", H, "/or-a/x", &[("x-or", "yes")]), "root"),
        // Matching is case-sensitive.
        (("GET", H, "/FOO", none), "root"),
        // RegularExpression matches the whole path.
        (("GET", H, "/re/123", none), "regex"),
        (("GET", H, "/re/12a", none), "root"),
        (("GET", H, "/x/re/1", none), "root"),
        // The Host header's port and case do not matter.
        (("GET", "M.Acme.Test:8080", "/foo", none), "foo"),
    ];
    check_table(&env, &cases).await;
}

/// Sends `GET path` as written (no client-side parsing) and returns the status line's code and the
/// path the demo backend reports, if one answered.
async fn raw_get(env: &Env, host: &str, path: &str) -> (u16, Option<String>, Option<String>) {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(env.bh.http)
        .await
        .expect("connect to the HTTP listener");
    let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("send");
    let answer = read_to_close(&mut stream, std::time::Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(answer.bytes()).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        answer_field(&text, "backend"),
        answer_field(&text, "path"),
    )
}

#[tokio::test]
async fn paths_are_normalised_before_matching_and_forwarding() {
    let env = start().await;
    const H: &str = "m.acme.test";
    // (sent path, status, backend, path the backend receives)
    let cases: &[(&str, u16, &str, &str)] = &[
        // Dot segments cannot reach around a route: this is /exact, not a /foo request.
        ("/foo/../exact", 200, "exact", "/exact"),
        ("/foo/./bar/x", 200, "foobar", "/foo/bar/x"),
        ("/../../foo", 200, "foo", "/foo"),
        ("/exact/.", 200, "prefix", "/exact/"),
        // Repeated slashes are one.
        ("//foo//bar", 200, "foobar", "/foo/bar"),
        // Escaped unreserved characters are the characters, escaped dots included.
        ("/%66oo/%2e%2E/exact", 200, "exact", "/exact"),
        ("/re/%31%32", 200, "regex", "/re/12"),
        // An escaped slash is a separator the client is redirected to spell as one (the default
        // escaped-slash policy); other escapes are kept (upper-case hex). A backslash is a slash.
        ("/foo%2fbar", 307, "", ""),
        ("/foo\\bar", 200, "foobar", "/foo/bar"),
        ("/foo/%c3%a9?q=%2e%2e/", 200, "foo", "/foo/%C3%A9?q=%2e%2e/"),
        // A canonical path goes through untouched.
        ("/foo/bar/?a=//", 200, "foobar", "/foo/bar/?a=//"),
        // A malformed escape is refused.
        ("/foo/%zz", 400, "", ""),
        ("/foo%2", 400, "", ""),
    ];
    let mut wrong = Vec::new();
    for (sent, status, backend, received) in cases {
        let got = raw_get(&env, H, sent).await;
        let want = (
            *status,
            (!backend.is_empty()).then(|| backend.to_string()),
            (!received.is_empty()).then(|| received.to_string()),
        );
        if got != want {
            wrong.push(format!("GET {sent}: want {want:?}, got {got:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} paths handled wrongly:\n{}\nlog:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n"),
        env.bh.log()
    );
}

#[tokio::test]
async fn header_query_and_method_matches_follow_gateway_api_precedence() {
    let env = start().await;
    const H: &str = "h.acme.test";
    let none: &[(&str, &str)] = &[];
    let canary: &[(&str, &str)] = &[("x-env", "canary")];
    let canary_upper_name: &[(&str, &str)] = &[("X-ENV", "canary")];
    let canary_upper_value: &[(&str, &str)] = &[("x-env", "CANARY")];
    let canary_alice: &[(&str, &str)] = &[("x-env", "canary"), ("x-user", "alice")];
    let alice: &[(&str, &str)] = &[("x-user", "alice")];
    let v12: &[(&str, &str)] = &[("x-version", "v12")];
    let beta: &[(&str, &str)] = &[("x-version", "beta")];
    let cases: Vec<(Req<'_>, &str)> = vec![
        (("GET", H, "/", none), "root"),
        // Header names are case-insensitive, values are not.
        (("GET", H, "/", canary), "hdr"),
        (("GET", H, "/", canary_upper_name), "hdr"),
        (("GET", H, "/", canary_upper_value), "root"),
        // More header matches win (the two-header rule lives in another, younger route).
        (("GET", H, "/", canary_alice), "hdr2"),
        (("GET", H, "/", alice), "root"),
        // RegularExpression header match.
        (("GET", H, "/", v12), "hdrre"),
        (("GET", H, "/", beta), "root"),
        // Query parameters: exact name and value.
        (("GET", H, "/?tier=gold", none), "query"),
        (("GET", H, "/x?a=1&tier=gold", none), "query"),
        (("GET", H, "/?tier=silver", none), "root"),
        (("GET", H, "/?Tier=gold", none), "root"),
        // A header match outranks a query match.
        (("GET", H, "/?tier=gold", canary), "hdr"),
        // Method.
        (("POST", H, "/", none), "post"),
        (("DELETE", H, "/", none), "root"),
        // A method match outranks header matches.
        (("POST", H, "/", canary_alice), "post"),
        // Path specificity outranks everything else.
        (("GET", H, "/special", canary_alice), "exact"),
        (("POST", H, "/special", none), "exact"),
    ];
    check_table(&env, &cases).await;
}

#[tokio::test]
async fn route_hostnames_intersect_listener_hostnames() {
    let env = start().await;
    let none: &[(&str, &str)] = &[];
    let cases: Vec<(Req<'_>, &str)> = vec![
        // Wildcard listener + exact route hostname: only that name.
        (("GET", "m.acme.test", "/", none), "root"),
        (("GET", "n.acme.test", "/", none), "404"),
        // A route without hostnames takes the listener's (only.acme.example).
        (("GET", "only.acme.example", "/inherit", none), "inherit"),
        // Exact listener + wildcard route: the intersection is the listener's name.
        (("GET", "only.acme.example", "/wild", none), "wild"),
        (("GET", "other.acme.example", "/wild", none), "404"),
        (("GET", "other.acme.example", "/inherit", none), "404"),
        // A wildcard route more specific than the listener's wildcard.
        (("GET", "a.deep.acme.test", "/", none), "deep"),
        (("GET", "x.a.deep.acme.test", "/", none), "deep"),
        (("GET", "deep.acme.test", "/", none), "404"),
    ];
    check_table(&env, &cases).await;

    let accepted = |name: &'static str| {
        let bh = &env.bh;
        async move {
            let status = bh.object_status("HTTPRoute", "acme", name).await?;
            let c = parent_condition(&status, "Accepted");
            (!c.is_null()).then_some(c)
        }
    };
    let ok = accepted("wild").await.expect("status of acme/wild");
    assert_eq!(ok["status"], "True", "{ok}");
    let ok = accepted("inherit").await.expect("status of acme/inherit");
    assert_eq!(ok["status"], "True", "{ok}");
    let refused = accepted("outside").await.expect("status of acme/outside");
    assert_eq!(refused["status"], "False", "{refused}");
    assert_eq!(refused["reason"], "NoMatchingListenerHostname", "{refused}");
}

#[tokio::test]
async fn https_and_http_listeners_serve_their_own_routes() {
    let env = start().await;
    // Same hostname, two listeners, two routes: each listener serves only the route attached to it.
    let (status, _, body) = http_get(env.bh.http, "split.acme.test", "/")
        .await
        .expect("HTTP");
    assert_eq!(status, 200, "{body}");
    assert_eq!(answer_field(&body, "backend").as_deref(), Some("plain"));
    let (status, _, body) = https_get(env.bh.https, "split.acme.test", "/", &env.ca)
        .await
        .unwrap_or_else(|e| panic!("HTTPS: {e}\n{}", env.bh.log()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(answer_field(&body, "backend").as_deref(), Some("secure"));
    let (status, body, _) = https_get_h2(env.bh.https, "split.acme.test", "/", &env.ca)
        .await
        .unwrap_or_else(|e| panic!("HTTPS h2: {e}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(answer_field(&body, "backend").as_deref(), Some("secure"));
    // Routes attached only to the HTTP listener are not served over HTTPS.
    let (status, _, _) = https_get(env.bh.https, "m.acme.test", "/exact", &env.ca)
        .await
        .expect("HTTPS m.acme.test");
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_host_the_tls_connection_cannot_serve_gets_421() {
    let env = start().await;
    let (answers, err) = https_gets_on_one_connection(
        env.bh.https,
        "www.acme.test",
        &env.ca,
        &[
            // Covered by the certificate's pattern: connection reuse is allowed.
            ("split.acme.test", "/"),
            // Another tenant's name on acme's connection.
            ("www.globex.test", "/"),
            // acme's own name, served by no HTTPS listener: misdirected (GEP-3567, decided by
            // listener: a host no listener serves gets 421, not 404).
            ("only.acme.example", "/inherit"),
            // The connection is still usable afterwards.
            ("split.acme.test", "/again"),
        ],
    )
    .await;
    assert!(
        err.is_none(),
        "connection failed: {err:?}\n{}",
        env.bh.log()
    );
    let got: Vec<String> = answers.into_iter().map(|a| outcome(Ok(a))).collect();
    assert_eq!(
        got,
        [
            "backend secure",
            "status 421",
            "status 421",
            "backend secure"
        ]
    );
}
