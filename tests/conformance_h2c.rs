//! Gateway API conformance: GRPCRoute on an HTTP listener (issue 14, item 4). The GRPCRoute
//! specification says an HTTP listener serves cleartext HTTP/2 with prior knowledge: the client
//! sends the HTTP/2 preface on port 80, the edge routes by the first request's `:authority` and
//! forwards every byte unchanged, the tenant router serves the connection as HTTP/2. HTTPRoute is
//! served the same way. Abuse, in raw frames: the preface then silence, a header block beyond the
//! edge's budget, an endless CONTINUATION chain; and a request for another tenant's host on the
//! same connection (the router's 421).

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The edge's sniff deadline in these tests (the default is 5 s).
const SNIFF_TIMEOUT_MS: &str = "1000";
/// How long a test waits for the edge to answer and close (well beyond the deadline).
const ANSWER_WAIT: Duration = Duration::from_secs(10);
/// The client connection preface of HTTP/2.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// GOAWAY error codes the edge answers with.
const NO_ERROR: u32 = 0x0;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// A Service `svc` whose port speaks h2c (`appProtocol: kubernetes.io/h2c`), at `addr`.
fn h2c_service_yaml(ns: &str, svc: &str, addr: std::net::SocketAddr) -> String {
    service_yaml(ns, svc, addr).replacen(
        "  - name: http\n    port: 80\n",
        "  - name: http\n    port: 80\n    appProtocol: kubernetes.io/h2c\n",
        1,
    )
}

/// Tenant `acme` (`*.acme.test`) with only an HTTP listener, a GRPCRoute on `grpc.acme.test` for
/// `echo.Echo` to the h2c demo backend `grpc-echo`, an HTTPRoute on `web.acme.test` to the demo
/// backend `web`; tenant `globex` (`*.globex.test`) with an HTTPRoute to `globex-web`.
async fn world() -> Standalone {
    let grpc_route = "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata:\n  namespace: acme\n  name: echo\nspec:\n  parentRefs: [{name: gw}]\n  hostnames: [\"grpc.acme.test\"]\n  rules:\n  - matches:\n    - method: {service: echo.Echo}\n    backendRefs: [{name: grpc-echo, port: 80}]\n";
    Standalone::start_with_env(
        &[
            ("acme.yaml", tenant_yaml("acme", &["*.acme.test"])),
            ("acme-gw.yaml", gateway_yaml("acme", "*.acme.test", None)),
            ("grpc.yaml", grpc_route.to_owned()),
            (
                "grpc-svc.yaml",
                h2c_service_yaml("acme", "grpc-echo", backend("grpc-echo").await),
            ),
            (
                "web.yaml",
                route_yaml("acme", "web", &["web.acme.test"], "/", "web"),
            ),
            (
                "web-svc.yaml",
                service_yaml("acme", "web", backend("web").await),
            ),
            ("globex.yaml", tenant_yaml("globex", &["*.globex.test"])),
            (
                "globex-gw.yaml",
                gateway_yaml("globex", "*.globex.test", None),
            ),
            (
                "globex-web.yaml",
                route_yaml("globex", "web", &["web.globex.test"], "/", "globex-web"),
            ),
            (
                "globex-svc.yaml",
                service_yaml("globex", "globex-web", backend("globex-web").await),
            ),
        ],
        &[("BULKHEAD_EDGE_SNIFF_TIMEOUT_MS", SNIFF_TIMEOUT_MS)],
    )
    .await
}

type H2Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// A cleartext HTTP/2 connection with prior knowledge to the edge's HTTP port (hyper's client
/// sends the preface at once; no upgrade, no ALPN).
async fn h2c_connect(s: &Standalone) -> H2Sender {
    let tcp = TcpStream::connect(s.http).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .expect("h2c handshake");
    tokio::spawn(conn);
    sender
}

/// One request on an h2c connection: status, headers and body text.
async fn send(
    sender: &mut H2Sender,
    req: http::Request<Empty<Bytes>>,
) -> Result<(u16, http::HeaderMap, String), String> {
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    common::answer_of(resp).await
}

/// A unary gRPC call's request (an empty body) for `path` on `authority`.
fn grpc_request(authority: &str, path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::post(format!("http://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Empty::new())
        .expect("request")
}

/// A GET for `path` on `authority`.
fn get(authority: &str, path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("http://{authority}{path}"))
        .body(Empty::new())
        .expect("request")
}

#[tokio::test]
async fn grpc_and_http_routes_on_an_http_listener_serve_h2c_prior_knowledge() {
    let s = world().await;
    let (status, _, body) = eventually(SETTLE, || async {
        let mut sender = h2c_connect(&s).await;
        let answer = send(
            &mut sender,
            grpc_request("grpc.acme.test", "/echo.Echo/Ping"),
        )
        .await
        .ok()?;
        (answer.0 == 200 && answer.2.contains("backend: grpc-echo")).then_some(answer)
    })
    .await
    .unwrap_or_else(|| panic!("gRPC over h2c never served; log:\n{}", s.log()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(answer_field(&body, "backend").as_deref(), Some("grpc-echo"));
    assert_eq!(answer_field(&body, "version").as_deref(), Some("HTTP/2.0"));
    assert_eq!(
        answer_field(&body, "path").as_deref(),
        Some("/echo.Echo/Ping")
    );

    // HTTPRoute over h2c, on a connection of its own and on the gRPC one (same tenant).
    let mut sender = h2c_connect(&s).await;
    let (status, _, body) = send(&mut sender, get("web.acme.test", "/x"))
        .await
        .expect("HTTPRoute over h2c");
    assert_eq!(status, 200, "{body}");
    assert_eq!(answer_field(&body, "backend").as_deref(), Some("web"));
    let (status, _, body) = send(
        &mut sender,
        grpc_request("grpc.acme.test", "/echo.Echo/Ping"),
    )
    .await
    .expect("second request on the connection");
    assert_eq!(status, 200, "{body}");
    assert_eq!(answer_field(&body, "backend").as_deref(), Some("grpc-echo"));

    // The edge picked acme's router from the first request; another tenant's host on the same
    // connection is misdirected, never served by acme nor relayed to globex.
    let (status, _, body) = send(&mut sender, get("web.globex.test", "/"))
        .await
        .expect("request for another tenant");
    assert_eq!(status, 421, "{body}");
    assert_ne!(
        answer_field(&body, "backend").as_deref(),
        Some("globex-web")
    );

    // globex is reached over h2c on its own connection.
    let mut sender = h2c_connect(&s).await;
    let (status, _, body) = send(&mut sender, get("web.globex.test", "/"))
        .await
        .expect("globex over h2c");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        answer_field(&body, "backend").as_deref(),
        Some("globex-web")
    );

    // HTTP/1.1 keeps working on the same port.
    let (status, _, body) = http_get(s.http, "web.acme.test", "/")
        .await
        .expect("HTTP/1.1");
    assert_eq!(status, 200, "{body}");
}

/// The preface and an empty SETTINGS frame.
fn preface_and_settings() -> Vec<u8> {
    [PREFACE, &h2_frame(0x4, 0, 0, &[])].concat()
}

/// Sends `bytes` (ignoring a write the edge cut short) and reads until the edge closes.
async fn exchange(s: &Standalone, bytes: &[u8]) -> Ending {
    let mut tcp = TcpStream::connect(s.http).await.expect("connect");
    for chunk in bytes.chunks(4096) {
        if tcp.write_all(chunk).await.is_err() {
            break;
        }
    }
    read_to_close(&mut tcp, ANSWER_WAIT).await
}

/// The error code of the GOAWAY frame after the server's SETTINGS in `answer`, which must be
/// exactly those two frames.
fn goaway_code(answer: &Ending) -> u32 {
    let bytes = answer.bytes();
    assert!(
        matches!(answer, Ending::Closed(_) | Ending::Reset(_)),
        "the edge closes after answering: {answer:?}"
    );
    assert!(
        bytes.len() >= 9 + 17,
        "SETTINGS and GOAWAY expected, got {:?}",
        String::from_utf8_lossy(bytes)
    );
    assert_eq!(
        bytes[..9],
        [0, 0, 0, 0x4, 0, 0, 0, 0, 0],
        "empty SETTINGS first"
    );
    let goaway = &bytes[9..];
    assert_eq!(goaway[3], 0x7, "then GOAWAY: {bytes:?}");
    assert_eq!(goaway[9..13], [0, 0, 0, 0], "no stream was processed");
    u32::from_be_bytes([goaway[13], goaway[14], goaway[15], goaway[16]])
}

/// The count of `bulkhead_edge_refused_total` for `reason` on the HTTP listener.
async fn refused(s: &Standalone, reason: &str) -> u64 {
    let needle = format!("reason=\"{reason}\"");
    s.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("bulkhead_edge_refused_total{") && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn h2c_clients_that_never_finish_their_first_request_get_goaway_and_are_counted() {
    let s = world().await;

    // The preface, then silence: refused when the sniff deadline passes.
    let answer = exchange(&s, &preface_and_settings()).await;
    assert_eq!(goaway_code(&answer), NO_ERROR, "{}", s.log());
    assert_eq!(refused(&s, "h2_timeout").await, 1);

    // A header block larger than the edge's budget: a HEADERS frame without END_HEADERS, then
    // CONTINUATION frames past 16 KiB.
    let mut big = preface_and_settings();
    big.extend(h2_frame(0x1, 0, 1, &[0x82; 16_000]));
    big.extend(h2_frame(0x9, 0, 1, &[0x82; 2_000]));
    let answer = exchange(&s, &big).await;
    assert_eq!(goaway_code(&answer), ENHANCE_YOUR_CALM);

    // An endless chain of empty CONTINUATION frames is cut at the same budget.
    let mut chain = preface_and_settings();
    chain.extend(h2_frame(0x1, 0, 1, &[0x82]));
    while chain.len() < 64 * 1024 {
        chain.extend(h2_frame(0x9, 0, 1, &[]));
    }
    let answer = exchange(&s, &chain).await;
    assert_eq!(goaway_code(&answer), ENHANCE_YOUR_CALM);
    assert_eq!(refused(&s, "h2_too_large").await, 2);

    // A frame the client may not send before its first request.
    let mut bad = preface_and_settings();
    bad.extend(h2_frame(0x0, 0, 1, b"data first"));
    let answer = exchange(&s, &bad).await;
    assert_eq!(goaway_code(&answer), 0x1, "PROTOCOL_ERROR");
    assert_eq!(refused(&s, "h2_malformed").await, 1);

    // A complete first request for a host no tenant owns: GOAWAY, not an HTTP/1.1 404.
    let mut unknown = preface_and_settings();
    let mut block = vec![0x82, 0x86, 0x84, 0x01, 16];
    block.extend_from_slice(b"nobody.else.test");
    unknown.extend(h2_frame(0x1, 0x5, 1, &block));
    let answer = exchange(&s, &unknown).await;
    assert_eq!(goaway_code(&answer), NO_ERROR);

    // The edge still serves.
    let (status, _, body) = eventually(SETTLE, || async {
        let mut sender = h2c_connect(&s).await;
        let answer = send(&mut sender, get("web.acme.test", "/")).await.ok()?;
        (answer.0 == 200).then_some(answer)
    })
    .await
    .unwrap_or_else(|| panic!("never served; log:\n{}", s.log()));
    assert_eq!(status, 200, "{body}");
}
