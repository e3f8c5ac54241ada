//! Protocol hygiene at the boundary, end to end through `bulkhead standalone` with raw bytes where a
//! client library would hide the attack: h2c upgrade smuggling, path spellings that side-step a
//! `PathPrefix` rule (`%2F`, `\`, `..;`), a client's `Connection` header removing what a filter
//! set, spoofed forwarding headers, and HTTP/2 cookie crumbs reaching an HTTP/1.1 backend.

mod common;

use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one raw exchange may take before the test fails (the router closes after answering).
const EXCHANGE_DEADLINE: Duration = Duration::from_secs(10);

/// A backend that answers every request with `101 Switching Protocols` to `h2c` and then writes
/// bytes no HTTP client should ever see, whatever the request asked for.
async fn h2c_switching_backend() -> SocketAddr {
    serve_each(|mut stream| async move {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let _ = stream
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nTUNNELLED")
            .await;
        let _ = stream.shutdown().await;
    })
    .await
}

fn rule(prefix: &str, svc: &str) -> String {
    format!(
        "  - matches: [{{path: {{type: PathPrefix, value: \"{prefix}\"}}}}]\n    backendRefs: [{{name: {svc}, port: 80}}]\n"
    )
}

fn route(name: &str, hostname: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  namespace: acme\n  name: {name}\nspec:\n  parentRefs:\n  - name: gw\n  hostnames: [\"{hostname}\"]\n  rules:\n{rules}"
    )
}

const ADDED_HEADER_RULES: &str = "  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        add: [{name: X-Added, value: by-filter}]
    backendRefs: [{name: echo, port: 80}]
";

struct Env {
    bh: Standalone,
    ca: String,
}

/// One tenant `acme`: `paths.acme.test` has `/public` and `/admin` rules (demo backends `public`
/// and `admin`), `nopaths.acme.test` only `/public`; `hdr.acme.test` adds `X-Added` in a filter;
/// `echo.acme.test` is the `echo` demo backend; `tunnel.acme.test` switches to h2c on anything.
async fn start(env: &[(&str, &str)]) -> Env {
    let ca = pki::DemoCa::new("acme CA").expect("CA");
    let leaf = ca.issue(&["*.acme.test"]).expect("leaf");
    let mut services = Vec::new();
    for name in ["echo", "public", "admin"] {
        services.push(service_yaml("acme", name, backend(name).await));
    }
    services.push(service_yaml(
        "acme",
        "tunnel",
        h2c_switching_backend().await,
    ));
    let routes = [
        route(
            "paths",
            "paths.acme.test",
            &(rule("/public", "public") + &rule("/admin", "admin")),
        ),
        route("nopaths", "nopaths.acme.test", &rule("/public", "public")),
        route("headers", "hdr.acme.test", ADDED_HEADER_RULES),
        route("echo", "echo.acme.test", &rule("/", "echo")),
        route("tunnel", "tunnel.acme.test", &rule("/", "tunnel")),
    ];
    let files = vec![
        ("tenant.yaml", tenant_yaml("acme", &["*.acme.test"])),
        (
            "gw.yaml",
            gateway_yaml("acme", "*.acme.test", Some("acme-tls")),
        ),
        ("tls.yaml", pki::tls_secret_yaml("acme", "acme-tls", &leaf)),
        ("services.yaml", services.join("---\n")),
        ("routes.yaml", routes.join("---\n")),
    ];
    let bh = Standalone::start_with_env(&files, env).await;
    let served = eventually(SETTLE, || async {
        let (status, _, _) = http_get(bh.http, "nopaths.acme.test", "/public")
            .await
            .ok()?;
        (status == 200).then_some(())
    })
    .await;
    assert!(served.is_some(), "routes never served; log:\n{}", bh.log());
    Env {
        bh,
        ca: ca.cert_pem().to_owned(),
    }
}

/// Sends `head` (request line and header lines, without the final empty line) plus
/// `Connection: close` handling left to the caller, and reads the whole answer until the router
/// closes the connection.
async fn raw_exchange(addr: SocketAddr, head: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("{head}\r\n\r\n").as_bytes())
        .await
        .expect("write request");
    let mut answer = Vec::new();
    tokio::time::timeout(EXCHANGE_DEADLINE, stream.read_to_end(&mut answer))
        .await
        .expect("the router closes the connection after answering")
        .expect("read answer");
    String::from_utf8_lossy(&answer).into_owned()
}

/// A raw `GET` of `target` on `host`, closing after the answer.
async fn raw_get(addr: SocketAddr, host: &str, target: &str) -> String {
    raw_exchange(
        addr,
        &format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close"),
    )
    .await
}

fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_default()
}

/// The bypass spellings of `/admin` under a `/public` prefix.
const BYPASSES: &[&str] = &[
    "/public/..%2Fadmin",
    "/public/..%2fadmin",
    "/public/..%5Cadmin",
    "/public/..\\admin",
    "/public/..;/admin",
    "/public/..;jsessionid=1/admin",
    "/public/.%2E/admin",
];

/// The invariant: a request the `/public` rule served reached its backend with a path that stays
/// inside `/public` however the backend reads separators, escapes and parameters.
fn assert_stays_in_public(target: &str, answer: &str) {
    if answer_field(answer, "backend").as_deref() != Some("public") {
        return;
    }
    let path = answer_field(answer, "path").unwrap_or_default();
    let lower = path.to_ascii_lowercase();
    assert!(
        path.starts_with("/public")
            && !lower.contains("%2f")
            && !lower.contains("%5c")
            && !path.contains('\\')
            && !path.split(['/', ';']).any(|s| s == ".."),
        "{target} reached the /public backend as {path:?}"
    );
}

#[tokio::test]
async fn path_spellings_never_leave_the_prefix_their_rule_matched() {
    let env = start(&[]).await;
    for target in BYPASSES {
        for host in ["paths.acme.test", "nopaths.acme.test"] {
            let answer = raw_get(env.bh.http, host, target).await;
            assert_stays_in_public(target, &answer);
            let status = status_of(&answer);
            if target.contains('%') && !target.contains("%2E") {
                // Escaped slashes: unescape and redirect (the default).
                assert_eq!(status, 307, "{host}{target}: {answer}");
                assert!(answer.contains("\r\nlocation: /admin\r\n"), "{answer}");
            } else if host == "paths.acme.test" {
                assert_eq!(status, 200, "{host}{target}: {answer}");
                assert_eq!(answer_field(&answer, "backend").as_deref(), Some("admin"));
                assert_eq!(answer_field(&answer, "path").as_deref(), Some("/admin"));
            } else {
                assert_eq!(status, 404, "{host}{target}: {answer}");
            }
        }
    }
    let metrics = env.bh.metrics().await;
    assert!(
        metrics.contains(
            "bulkhead_router_request_hygiene_total{tenant=\"acme\",action=\"path_redirected\"} 6"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn escaped_slash_policies_forward_decoded_or_refuse() {
    let forward = start(&[("BULKHEAD_ESCAPED_SLASHES", "unescape-and-forward")]).await;
    let answer = raw_get(forward.bh.http, "paths.acme.test", "/public/..%2Fadmin").await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(answer_field(&answer, "backend").as_deref(), Some("admin"));
    assert_eq!(answer_field(&answer, "path").as_deref(), Some("/admin"));
    drop(forward);
    let reject = start(&[("BULKHEAD_ESCAPED_SLASHES", "reject")]).await;
    for target in BYPASSES {
        let answer = raw_get(reject.bh.http, "nopaths.acme.test", target).await;
        assert_stays_in_public(target, &answer);
    }
    let answer = raw_get(reject.bh.http, "nopaths.acme.test", "/public/a%2Fb").await;
    assert_eq!(status_of(&answer), 400, "{answer}");
}

/// An h2c upgrade request as curl sends it (`--http2` over cleartext), on a fresh connection.
fn h2c_upgrade(host: &str) -> String {
    format!(
        "GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"
    )
}

#[tokio::test]
async fn h2c_upgrades_are_never_forwarded_nor_tunnelled() {
    let env = start(&[]).await;
    let answer = raw_exchange(env.bh.http, &h2c_upgrade("echo.acme.test")).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(echoed_header(&answer, "upgrade").is_empty(), "{answer}");
    assert!(
        echoed_header(&answer, "http2-settings").is_empty(),
        "{answer}"
    );

    // A backend that switches to h2c anyway is never joined to the client.
    let answer = raw_exchange(env.bh.http, &h2c_upgrade("tunnel.acme.test")).await;
    assert_eq!(status_of(&answer), 502, "{answer}");
    assert!(!answer.contains("TUNNELLED"), "{answer}");

    // Nor when the client asked for WebSocket and the backend switched to something else.
    let websocket = "GET /chat HTTP/1.1\r\nHost: tunnel.acme.test\r\nConnection: Upgrade\r\nConnection: close\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
    let answer = raw_exchange(env.bh.http, websocket).await;
    assert_eq!(status_of(&answer), 502, "{answer}");
    assert!(!answer.contains("TUNNELLED"), "{answer}");

    let metrics = env.bh.metrics().await;
    for line in [
        "action=\"upgrade_dropped\"} 2",
        "action=\"upgrade_refused\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}

#[tokio::test]
async fn a_client_connection_header_cannot_remove_what_a_filter_adds() {
    let env = start(&[]).await;
    let (status, _, body) = http_request(
        env.bh.http,
        "GET",
        "hdr.acme.test",
        "/",
        &[("connection", "X-Added")],
    )
    .await
    .expect("request");
    assert_eq!(status, 200, "{body}");
    assert_eq!(echoed_header(&body, "x-added"), ["by-filter"], "{body}");
}

/// Every spoofed forwarding header, in dash and underscore spellings.
const SPOOFED: &[(&str, &str)] = &[
    ("x-forwarded-for", "203.0.113.9, 198.51.100.1"),
    ("x_forwarded_for", "203.0.113.9"),
    ("forwarded", "for=203.0.113.9;proto=https"),
    ("x-real-ip", "203.0.113.9"),
    ("x_real_ip", "203.0.113.9"),
    ("x-forwarded-port", "8443"),
    ("x-forwarded-host", "evil.test"),
    ("x-forwarded-proto", "https"),
    ("true-client-ip", "203.0.113.9"),
];

#[tokio::test]
async fn spoofed_forwarding_headers_are_replaced() {
    let env = start(&[]).await;
    let (status, _, body) = http_request(env.bh.http, "GET", "echo.acme.test", "/", SPOOFED)
        .await
        .expect("request");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        echoed_header(&body, "x-forwarded-for"),
        ["127.0.0.1"],
        "{body}"
    );
    assert_eq!(echoed_header(&body, "x-real-ip"), ["127.0.0.1"], "{body}");
    assert_eq!(echoed_header(&body, "x-forwarded-port"), ["80"], "{body}");
    assert_eq!(
        echoed_header(&body, "x-forwarded-proto"),
        ["http"],
        "{body}"
    );
    assert_eq!(
        echoed_header(&body, "x-forwarded-host"),
        ["echo.acme.test"],
        "{body}"
    );
    for gone in [
        "x_forwarded_for",
        "forwarded",
        "x_real_ip",
        "true-client-ip",
    ] {
        assert!(echoed_header(&body, gone).is_empty(), "{gone}: {body}");
    }
    drop(env);
    let trusting = start(&[("BULKHEAD_XFF_TRUSTED_HOPS", "1")]).await;
    let (_, _, body) = http_request(trusting.bh.http, "GET", "echo.acme.test", "/", SPOOFED)
        .await
        .expect("request");
    assert_eq!(
        echoed_header(&body, "x-forwarded-for"),
        ["198.51.100.1, 127.0.0.1"],
        "{body}"
    );
    assert_eq!(
        echoed_header(&body, "x-real-ip"),
        ["198.51.100.1"],
        "{body}"
    );
    assert!(echoed_header(&body, "x_forwarded_for").is_empty(), "{body}");
}

#[tokio::test]
async fn http2_cookie_crumbs_reach_an_http1_backend_as_one_line() {
    let env = start(&[]).await;
    let tls = tls_connect(env.bh.https, "echo.acme.test", &env.ca, &[b"h2"])
        .await
        .expect("TLS");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let req = http::Request::get("https://echo.acme.test/")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(echoed_header(&body, "cookie"), ["a=1; b=2"], "{body}");
}
