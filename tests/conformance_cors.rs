//! HTTPRoute `CORS` filter (Gateway API v1.5 `HTTPCORSFilter`, feature `HTTPRouteCORS`), end to end
//! through `bulkhead standalone`, written from the field docs and the official conformance tests
//! (`httproute-cors.go`, `cors-allow-credentials-behavior.go`): preflights answered by the router
//! (never the backend), exact, wildcard and port-carrying origins, `*` methods and headers with and
//! without credentials, `maxAge`, simple requests forwarded with the CORS response headers added,
//! routes without CORS untouched, and abusive origins and header lists refused and counted. Over
//! HTTP/1.1 (plain) and HTTP/2 (TLS, ALPN h2).

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{Empty, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the counting backend saw.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    origins: Mutex<Vec<String>>,
}

/// A backend that counts requests, remembers their `Origin`, and answers 200 with `x-header-3`.
async fn counting_backend() -> (SocketAddr, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let shared = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = Arc::clone(&shared);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<_>| {
                    seen.requests.fetch_add(1, Ordering::SeqCst);
                    if let Some(o) = req.headers().get("origin") {
                        let o = String::from_utf8_lossy(o.as_bytes()).into_owned();
                        seen.origins.lock().expect("lock").push(o);
                    }
                    let resp = http::Response::builder()
                        .header("x-header-3", "three")
                        .body(Full::new(Bytes::from_static(b"counted\n")));
                    async move { resp }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

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
";

/// The routes of `cors.acme.test`: the conformance suite's policies, one rule each, to the counting
/// backend; `/plain` has no CORS filter and goes to the demo echo backend.
const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  namespace: acme
  name: cors
spec:
  parentRefs: [{name: gw}]
  hostnames: [cors.acme.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /cors-1}}]
    filters:
    - type: CORS
      cors:
        allowOrigins: [\"https://www.foo.com\", \"https://*.bar.com\", \"http://app.test:8080\"]
        allowMethods: [GET, OPTIONS]
        allowHeaders: [x-header-1, x-header-2]
        exposeHeaders: [x-header-3, x-header-4]
        allowCredentials: true
        maxAge: 3600
    backendRefs: [{name: counted, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /cors-2}}]
    filters:
    - type: CORS
      cors:
        allowOrigins: [\"https://www.foo.com\"]
        allowMethods: [\"*\"]
    backendRefs: [{name: counted, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /wild-creds}}]
    filters:
    - type: CORS
      cors:
        allowOrigins: [\"*\"]
        allowMethods: [\"*\"]
        allowHeaders: [\"*\"]
        exposeHeaders: [\"*\"]
        allowCredentials: true
    backendRefs: [{name: counted, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /wild}}]
    filters:
    - type: CORS
      cors:
        allowOrigins: [\"*\"]
        allowMethods: [\"*\"]
        allowHeaders: [\"*\"]
    backendRefs: [{name: counted, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /plain}}]
    backendRefs: [{name: echo, port: 80}]
";

struct Env {
    bh: Standalone,
    ca: String,
    seen: Arc<Seen>,
}

async fn start_with_env(env: &[(&str, &str)]) -> Env {
    let ca = pki::DemoCa::new("acme CA").expect("CA");
    let leaf = ca.issue(&["*.acme.test"]).expect("leaf");
    let (counted, seen) = counting_backend().await;
    let files = [
        ("tenant.yaml", tenant_yaml("acme", &["*.acme.test"])),
        ("tls.yaml", pki::tls_secret_yaml("acme", "acme-tls", &leaf)),
        ("gateway.yaml", GATEWAY.to_owned()),
        ("route.yaml", ROUTE.to_owned()),
        (
            "services.yaml",
            service_yaml("acme", "counted", counted)
                + "---\n"
                + &service_yaml("acme", "echo", backend("echo").await),
        ),
    ];
    let bh = Standalone::start_with_env(&files, env).await;
    Env {
        bh,
        ca: ca.cert_pem().to_owned(),
        seen,
    }
}

/// HTTP/1.1 on the plain listener, or HTTP/2 over TLS.
#[derive(Debug, Clone, Copy)]
enum Proto {
    H1,
    H2,
}

const HOST: &str = "cors.acme.test";

impl Env {
    async fn send(
        &self,
        proto: Proto,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let answer = match proto {
            Proto::H1 => http_request(self.bh.http, method, HOST, path, headers).await,
            Proto::H2 => self.send_h2(method, path, headers).await,
        };
        answer.unwrap_or_else(|e| panic!("{proto:?} {method} {path}: {e}"))
    }

    async fn send_h2(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Answer, String> {
        let (mut sender, alpn) = h2_connect(self.bh.https, HOST, &self.ca).await?;
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("https://{HOST}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        common::answer_of(resp).await
    }

    fn backend_requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }
}

/// Header `name` as text ("" when absent).
fn header(headers: &http::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// A comma-separated header value as a sorted list of trimmed items (order and spaces are free).
fn items(headers: &http::HeaderMap, name: &str) -> Vec<String> {
    let mut v: Vec<String> = header(headers, name)
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    v.sort();
    v
}

fn preflight<'a>(origin: &'a str, method: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("origin", origin),
        ("access-control-request-method", method),
    ]
}

#[tokio::test]
async fn preflights_are_answered_by_the_router_from_the_route_policy() {
    let env = start_with_env(&[]).await;
    for proto in [Proto::H1, Proto::H2] {
        for origin in [
            "https://www.foo.com",
            "https://www.bar.com",
            "https://xpto.www.bar.com",
            "https://www.foo.com:443",
            "http://app.test:8080",
        ] {
            let mut asks = preflight(origin, "GET");
            asks.push(("access-control-request-headers", "x-header-1, x-header-2"));
            let (status, h, body) = env.send(proto, "OPTIONS", "/cors-1", &asks).await;
            let at = format!("{proto:?} {origin}");
            assert!(status == 200 || status == 204, "{at}: {status} {body}");
            assert_eq!(header(&h, "access-control-allow-origin"), origin, "{at}");
            assert_eq!(
                items(&h, "access-control-allow-methods"),
                ["GET", "OPTIONS"],
                "{at}"
            );
            assert_eq!(
                items(&h, "access-control-allow-headers"),
                ["x-header-1", "x-header-2"],
                "{at}"
            );
            assert_eq!(
                items(&h, "access-control-expose-headers"),
                ["x-header-3", "x-header-4"],
                "{at}"
            );
            assert_eq!(header(&h, "access-control-max-age"), "3600", "{at}");
            assert_eq!(
                header(&h, "access-control-allow-credentials"),
                "true",
                "{at}"
            );
            assert!(
                items(&h, "vary").contains(&"Origin".to_owned()),
                "{at}: {h:?}"
            );
        }
        // maxAge defaults to 5 s; without allowCredentials there is no credentials header.
        let (status, h, _) = env
            .send(
                proto,
                "OPTIONS",
                "/cors-2",
                &preflight("https://www.foo.com", "POST"),
            )
            .await;
        assert_eq!(status, 204, "{proto:?}");
        assert_eq!(header(&h, "access-control-max-age"), "5");
        assert_eq!(header(&h, "access-control-allow-methods"), "*");
        assert!(h.get("access-control-allow-credentials").is_none(), "{h:?}");
    }
    assert_eq!(env.backend_requests(), 0, "a preflight reached the backend");
}

#[tokio::test]
async fn a_preflight_from_an_origin_not_allowed_is_refused_without_cors_headers() {
    let env = start_with_env(&[]).await;
    for proto in [Proto::H1, Proto::H2] {
        for origin in [
            "https://foobar.com",
            "https://bar.com",
            "http://www.foo.com",
            "https://www.foo.com:8443",
            "http://app.test",
            "null",
        ] {
            let (status, h, _) = env
                .send(proto, "OPTIONS", "/cors-1", &preflight(origin, "GET"))
                .await;
            assert_eq!(status, 403, "{proto:?} {origin}");
            assert!(
                h.get("access-control-allow-origin").is_none(),
                "{origin}: {h:?}"
            );
            assert!(
                h.get("access-control-allow-credentials").is_none(),
                "{origin}"
            );
        }
    }
    assert_eq!(env.backend_requests(), 0, "a preflight reached the backend");
    let counted =
        "bulkhead_router_request_refusals_total{tenant=\"acme\",reason=\"cors_preflight\"} 12";
    let metrics = env.bh.metrics().await;
    assert!(metrics.contains(counted), "{counted} in {metrics}");
}

#[tokio::test]
async fn wildcard_methods_and_headers_are_echoed_with_credentials_and_literal_without() {
    let env = start_with_env(&[]).await;
    let origin = "https://other.foo.com:12345";
    for proto in [Proto::H1, Proto::H2] {
        let mut asks = preflight(origin, "PUT");
        asks.push(("access-control-request-headers", "x-header-1, x-header-2"));
        let (status, h, _) = env.send(proto, "OPTIONS", "/wild-creds", &asks).await;
        assert_eq!(status, 204, "{proto:?}");
        assert_eq!(header(&h, "access-control-allow-origin"), origin);
        assert_eq!(header(&h, "access-control-allow-methods"), "PUT");
        assert_eq!(
            items(&h, "access-control-allow-headers"),
            ["x-header-1", "x-header-2"]
        );
        assert_eq!(header(&h, "access-control-allow-credentials"), "true");

        let (status, h, _) = env.send(proto, "OPTIONS", "/wild", &asks).await;
        assert_eq!(status, 204, "{proto:?}");
        assert_eq!(header(&h, "access-control-allow-origin"), "*");
        assert_eq!(header(&h, "access-control-allow-methods"), "*");
        assert_eq!(header(&h, "access-control-allow-headers"), "*");
        assert!(h.get("access-control-allow-credentials").is_none(), "{h:?}");

        // With credentials and no Access-Control-Request-Headers, no allow-headers is sent at all.
        let (_, h, _) = env
            .send(proto, "OPTIONS", "/wild-creds", &preflight(origin, "PUT"))
            .await;
        assert!(h.get("access-control-allow-headers").is_none(), "{h:?}");

        // A credentialed simple request gets its own origin back, never `*`, and the response's
        // header names for `exposeHeaders: ["*"]`.
        let (status, h, _) = env
            .send(
                proto,
                "GET",
                "/wild-creds",
                &[("origin", origin), ("cookie", "foo=bar")],
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(header(&h, "access-control-allow-origin"), origin);
        assert_eq!(header(&h, "access-control-allow-credentials"), "true");
        assert!(
            items(&h, "access-control-expose-headers").contains(&"x-header-3".to_owned()),
            "{h:?}"
        );
    }
    assert_eq!(
        env.backend_requests(),
        2,
        "only the two GETs reach the backend"
    );
}

#[tokio::test]
async fn simple_requests_reach_the_backend_and_get_the_cors_headers() {
    let env = start_with_env(&[]).await;
    for proto in [Proto::H1, Proto::H2] {
        let (status, h, body) = env
            .send(
                proto,
                "GET",
                "/cors-1",
                &[("origin", "https://www.bar.com")],
            )
            .await;
        assert_eq!((status, body.as_str()), (200, "counted\n"), "{proto:?}");
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            "https://www.bar.com"
        );
        assert_eq!(header(&h, "access-control-allow-credentials"), "true");
        assert_eq!(
            items(&h, "access-control-expose-headers"),
            ["x-header-3", "x-header-4"]
        );
        assert_eq!(header(&h, "x-header-3"), "three");
        assert!(items(&h, "vary").contains(&"Origin".to_owned()), "{h:?}");

        // Not allowed: forwarded all the same, without CORS headers (the browser keeps the answer
        // from the script).
        let (status, h, _) = env
            .send(proto, "GET", "/cors-1", &[("origin", "https://foobar.com")])
            .await;
        assert_eq!(status, 200);
        assert!(h.get("access-control-allow-origin").is_none(), "{h:?}");
        assert!(h.get("access-control-allow-credentials").is_none(), "{h:?}");

        // An OPTIONS without Access-Control-Request-Method is no preflight: the backend answers.
        let (status, h, body) = env
            .send(
                proto,
                "OPTIONS",
                "/cors-1",
                &[("origin", "https://www.foo.com")],
            )
            .await;
        assert_eq!((status, body.as_str()), (200, "counted\n"));
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            "https://www.foo.com"
        );
    }
    assert_eq!(env.backend_requests(), 6);
    let origins = env.seen.origins.lock().expect("lock").clone();
    assert_eq!(
        origins,
        [
            "https://www.bar.com",
            "https://foobar.com",
            "https://www.foo.com",
            "https://www.bar.com",
            "https://foobar.com",
            "https://www.foo.com"
        ],
        "the backend sees each request with its Origin"
    );
}

#[tokio::test]
async fn a_route_without_cors_is_untouched() {
    let env = start_with_env(&[]).await;
    for proto in [Proto::H1, Proto::H2] {
        let (status, h, body) = env
            .send(
                proto,
                "OPTIONS",
                "/plain",
                &preflight("https://www.foo.com", "GET"),
            )
            .await;
        assert_eq!(status, 200, "{proto:?}: the backend answers the preflight");
        assert_eq!(answer_field(&body, "method").as_deref(), Some("OPTIONS"));
        assert_eq!(echoed_header(&body, "origin"), ["https://www.foo.com"]);
        assert_eq!(
            echoed_header(&body, "access-control-request-method"),
            ["GET"]
        );
        for name in [
            "access-control-allow-origin",
            "access-control-max-age",
            "vary",
        ] {
            assert!(h.get(name).is_none(), "{proto:?}: {name} in {h:?}");
        }
    }
}

/// Sends `request` as raw bytes on a new plain connection; the answer's status line and head.
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer within 10 s");
    String::from_utf8_lossy(&got).into_owned()
}

fn raw_preflight(origin: &[u8], request_headers: &str) -> Vec<u8> {
    let mut out = format!("OPTIONS /wild-creds HTTP/1.1\r\nHost: {HOST}\r\nOrigin: ").into_bytes();
    out.extend_from_slice(origin);
    out.extend_from_slice(b"\r\nAccess-Control-Request-Method: GET\r\n");
    if !request_headers.is_empty() {
        out.extend_from_slice(
            format!("Access-Control-Request-Headers: {request_headers}\r\n").as_bytes(),
        );
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

#[tokio::test]
async fn abusive_origins_and_header_lists_are_refused_counted_and_the_router_keeps_serving() {
    // Small limits through the flags' environment variables, so the test stays small.
    let env = start_with_env(&[
        ("BULKHEAD_ROUTER_CORS_MAX_ORIGIN_BYTES", "256"),
        ("BULKHEAD_ROUTER_CORS_MAX_REQUEST_HEADERS", "8"),
    ])
    .await;
    let addr = env.bh.http;
    let fits = format!("https://{}.test", "a".repeat(200));
    let huge = format!("https://{}.test", "a".repeat(300));
    let eight: Vec<String> = (0..8).map(|i| format!("x-h{i}")).collect();
    let nine: Vec<String> = (0..9).map(|i| format!("x-h{i}")).collect();
    let cases: [(&[u8], String, &str); 6] = [
        (fits.as_bytes(), String::new(), "204"),
        (huge.as_bytes(), String::new(), "403"),
        (b"https://\xff\xfe.test", String::new(), "403"),
        (b"https://www.foo.com", eight.join(", "), "204"),
        (b"https://www.foo.com", nine.join(", "), "403"),
        (b"https://www.foo.com", ",".repeat(40), "403"),
    ];
    for (origin, asked, expected) in &cases {
        let head = raw_exchange(addr, &raw_preflight(origin, asked)).await;
        let status = head.split(' ').nth(1).unwrap_or_default();
        assert_eq!(
            status,
            *expected,
            "origin {} bytes, asked {asked:?}: {head}",
            origin.len()
        );
        if *expected == "403" {
            assert!(
                !head
                    .to_ascii_lowercase()
                    .contains("access-control-allow-origin"),
                "{head}"
            );
        }
    }
    let counted =
        "bulkhead_router_request_refusals_total{tenant=\"acme\",reason=\"cors_preflight\"} 4";
    let metrics = env.bh.metrics().await;
    assert!(metrics.contains(counted), "{counted} in {metrics}");
    // The rest keeps serving: an ordinary preflight and request right after.
    let (status, _, _) = env
        .send(
            Proto::H2,
            "OPTIONS",
            "/cors-1",
            &preflight("https://www.foo.com", "GET"),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _, _) = env.send(Proto::H1, "GET", "/plain", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(env.backend_requests(), 0);
}
