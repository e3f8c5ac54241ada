//! Upstream failures and protocols: connect errors (503), deadlines (504), a backend breaking
//! mid-response (the client response is aborted), HTTP/2 prior-knowledge backends, upgrades.

use crate::support::*;
use bulkhead_snapshot::{BackendProtocol, Timeouts};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Fixture {
    pki: Pki,
    router: TestRouter,
    _backends: Vec<EchoBackend>,
}

async fn fixture() -> Fixture {
    let pki = Pki::new();
    let web = EchoBackend::start("web").await;
    let grpc = EchoBackend::start("grpc").await;
    let mut s = base_snapshot(&pki, 1);
    s.backends.insert(
        "acme/web:80".into(),
        backend(BackendProtocol::Http1, &[web.addr]),
    );
    s.backends.insert(
        "acme/grpc:50051".into(),
        backend(BackendProtocol::H2c, &[grpc.addr]),
    );
    s.backends.insert(
        "acme/down:80".into(),
        backend(BackendProtocol::Http1, &[closed_port().await]),
    );
    s.backends
        .insert("acme/none:80".into(), backend(BackendProtocol::Http1, &[]));
    let mut slow = route(
        "slow",
        prefix("/slow"),
        vec![weighted(Some("acme/web:80"), 1)],
    );
    slow.timeouts = Timeouts {
        request_ms: Some(300),
        backend_request_ms: None,
    };
    s.https.virtual_hosts = vec![vhost(
        "a.acme.test",
        443,
        vec![
            slow,
            route(
                "down",
                prefix("/down"),
                vec![weighted(Some("acme/down:80"), 1)],
            ),
            route(
                "none",
                prefix("/none"),
                vec![weighted(Some("acme/none:80"), 1)],
            ),
            route(
                "grpc",
                prefix("/grpc"),
                vec![weighted(Some("acme/grpc:50051"), 1)],
            ),
            route("web", prefix("/"), vec![weighted(Some("acme/web:80"), 1)]),
        ],
    )];
    Fixture {
        router: TestRouter::start(s).await,
        pki,
        _backends: vec![web, grpc],
    }
}

#[tokio::test]
async fn unreachable_backend_is_503_and_deadline_is_504() {
    let f = fixture().await;
    let mut c = h2_tls(&f.pki, &f.router, "a.acme.test").await;
    assert_eq!(
        c.get("a.acme.test", "/down").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        c.get("a.acme.test", "/none").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        c.get("a.acme.test", "/slow").await.status,
        StatusCode::GATEWAY_TIMEOUT
    );
    assert_eq!(
        c.get("a.acme.test", "/").await.status,
        StatusCode::OK,
        "connection still usable"
    );
}

#[tokio::test]
async fn backend_failing_mid_response_aborts_the_client_response() {
    let f = fixture().await;
    for mut c in [
        h1_tls(&f.pki, &f.router, "a.acme.test").await,
        h2_tls(&f.pki, &f.router, "a.acme.test").await,
    ] {
        let req = c
            .request("GET", "a.acme.test", "/fail")
            .body(Full::<Bytes>::default())
            .unwrap();
        let resp = c.send(req).await.expect("head arrives");
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await;
        assert!(body.is_err(), "a truncated response must not end cleanly");
    }
}

#[tokio::test]
async fn h2c_backend_gets_http2_with_the_original_authority() {
    let f = fixture().await;
    for mut c in [
        h1_tls(&f.pki, &f.router, "a.acme.test").await,
        h2_tls(&f.pki, &f.router, "a.acme.test").await,
    ] {
        let req = c
            .request("POST", "a.acme.test", "/grpc/pkg.Service/Method")
            .header("te", "trailers")
            .header("content-type", "application/grpc")
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
            .unwrap();
        let r = read_reply(c.send(req).await.unwrap()).await;
        let j = r.json();
        assert_eq!(j["version"], "HTTP/2.0");
        assert_eq!(j["authority"], "a.acme.test");
        assert_eq!(j["backend"], "grpc");
        assert_eq!(j["body_len"], 5);
        assert_eq!(r.seen_header("te").as_deref(), Some("trailers"));
    }
}

#[tokio::test]
async fn websocket_upgrade_is_relayed_both_ways() {
    let f = fixture().await;
    let mut c = h1_tls(&f.pki, &f.router, "a.acme.test").await;
    let req = c
        .request("GET", "a.acme.test", "/ws")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(Full::<Bytes>::default())
        .unwrap();
    let resp = c.send(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = hyper::upgrade::on(resp).await.expect("upgraded");
    let mut io = TokioIo::new(upgraded);
    for msg in [&b"ping"[..], b"second message"] {
        io.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, msg);
    }
}
