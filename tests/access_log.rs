//! The JSON access log, end to end through `bulkhead standalone --log-format json`: one line per
//! request with the tenant, route, backend and endpoint, status, durations, bytes and request id,
//! and an outcome that says whether the response ended cleanly.

mod common;

use common::*;
use std::net::SocketAddr;

/// The access lines logged so far, parsed.
fn access_lines(bh: &Standalone) -> Vec<serde_json::Value> {
    bh.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .collect()
}

/// The access line of the request with this path (normalised), waiting for it to be written.
async fn line_for(bh: &Standalone, path: &str) -> serde_json::Value {
    let found = eventually(SETTLE, || async {
        access_lines(bh).into_iter().find(|v| v["path"] == path)
    })
    .await;
    found.unwrap_or_else(|| panic!("no access line for {path}; log:\n{}", bh.log()))
}

#[tokio::test]
async fn every_request_gets_one_json_access_line() {
    let web: SocketAddr = backend("web").await;
    let files = vec![
        ("tenants/acme.yaml", tenant_yaml("acme", &["*.acme.test"])),
        ("acme/gw.yaml", gateway_yaml("acme", "*.acme.test", None)),
        (
            "acme/web.yaml",
            route_yaml("acme", "web", &["www.acme.test"], "/app", "web")
                + "---\n"
                + &service_yaml("acme", "web", web),
        ),
    ];
    let bh = Standalone::start_with_env(&files, &[("BULKHEAD_LOG_FORMAT", "json")]).await;
    let served = eventually(SETTLE, || async {
        let (status, _, _) = http_get(bh.http, "www.acme.test", "/app/warm").await.ok()?;
        (status == 200).then_some(())
    })
    .await;
    assert!(served.is_some(), "route never served; log:\n{}", bh.log());

    // A forwarded request on a keep-alive connection, one with `Connection: close`, one no route
    // serves and one whose path is refused.
    let mut conn = KeepAlive::connect(bh.http).await;
    let (status, body) = conn.get("www.acme.test", "/app/./one").await.expect("GET");
    assert_eq!(status, 200, "{body}");
    let request_id = echoed_header(&body, "x-request-id");
    let closing = http_request(
        bh.http,
        "POST",
        "www.acme.test",
        "/app/two",
        &[("connection", "close")],
    )
    .await
    .expect("POST");
    assert_eq!(closing.0, 200);
    let missing = http_request(bh.http, "GET", "www.acme.test", "/nothing", &[]).await;
    assert_eq!(missing.map(|a| a.0), Ok(404));
    let refused = http_request(bh.http, "GET", "www.acme.test", "/app/%zz", &[]).await;
    assert_eq!(refused.map(|a| a.0), Ok(400));

    let one = line_for(&bh, "/app/one").await;
    assert_eq!(one["tenant"], "acme", "{one}");
    assert_eq!(one["route"], "HTTPRoute acme/web rule 0", "{one}");
    assert_eq!(one["backend"], "acme/web:80", "{one}");
    assert_eq!(one["endpoint"], web.to_string(), "{one}");
    assert_eq!(one["status"], 200, "{one}");
    assert_eq!(one["method"], "GET", "{one}");
    assert_eq!(one["host"], "www.acme.test", "{one}");
    assert_eq!(one["bytes"], body.len() as u64, "{one}");
    assert_eq!(one["outcome"], "complete", "{one}");
    assert_eq!(
        request_id,
        [one["request_id"].as_str().expect("request id")]
    );
    let total = one["duration_ms"].as_f64().expect("duration_ms");
    let upstream = one["upstream_ms"].as_f64().expect("upstream_ms");
    assert!(upstream > 0.0 && upstream <= total, "{one}");

    let two = line_for(&bh, "/app/two").await;
    assert_eq!(
        (&two["method"], &two["status"]),
        (&"POST".into(), &200.into())
    );
    assert_eq!(two["bytes"], closing.2.len() as u64, "{two}");
    assert_eq!(two["outcome"], "complete", "{two}");

    let none = line_for(&bh, "/nothing").await;
    assert_eq!(none["status"], 404, "{none}");
    assert_eq!(none["route"], "-", "{none}");
    assert!(none.get("endpoint").is_none(), "{none}");
    assert!(none.get("upstream_ms").is_none(), "{none}");
    // The router's own answers say why and whose fault it was; relayed ones say nothing.
    assert_eq!(
        (&none["refusal"], &none["fault"]),
        (&"no_route".into(), &"client".into()),
        "{none}"
    );
    assert!(one.get("refusal").is_none(), "{one}");
    let bad = line_for(&bh, "/app/%zz").await;
    assert_eq!(bad["status"], 400, "{bad}");
    assert_eq!(bad["refusal"], "bad_path", "{bad}");
    let metrics = bh.metrics().await;
    for reason in ["no_route", "bad_path"] {
        let counted = format!(
            "bulkhead_router_request_refusals_total{{tenant=\"acme\",reason=\"{reason}\"}} 1"
        );
        assert!(metrics.contains(&counted), "{counted} in {metrics}");
    }

    // Exactly one line per request: the warm-up GETs, then the four above.
    let lines = access_lines(&bh);
    let ours: Vec<_> = lines
        .iter()
        .filter(|v| v["path"] != "/app/warm")
        .map(|v| v["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        ours,
        ["/app/one", "/app/two", "/nothing", "/app/%zz"],
        "{lines:?}"
    );
}

/// How long a raw exchange waits for the answer (never reached when bulkhead answers).
const RAW_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Writes `bytes` on a new plain connection to `addr`, half-closes it when asked, and returns the
/// response head received (empty when none came).
async fn raw_exchange(addr: SocketAddr, bytes: &[u8], half_close: bool) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    bulkhead_test_support::net::exchange_head(&mut s, bytes, half_close, RAW_ANSWER_WAIT).await
}

#[tokio::test]
async fn client_body_faults_are_logged_as_the_clients() {
    let web: SocketAddr = backend("web").await;
    let files = vec![
        ("tenants/acme.yaml", tenant_yaml("acme", &["*.acme.test"])),
        ("acme/gw.yaml", gateway_yaml("acme", "*.acme.test", None)),
        (
            "acme/web.yaml",
            route_yaml("acme", "web", &["www.acme.test"], "/app", "web")
                + "---\n"
                + &service_yaml("acme", "web", web),
        ),
    ];
    let env = [
        ("BULKHEAD_LOG_FORMAT", "json"),
        // One failure would eject the endpoint, were a client's fault held against it.
        ("BULKHEAD_ROUTER_OUTLIER_CONSECUTIVE_FAILURES", "1"),
    ];
    let bh = Standalone::start_with_env(&files, &env).await;
    let served = eventually(SETTLE, || async {
        let (status, _, _) = http_get(bh.http, "www.acme.test", "/app/warm").await.ok()?;
        (status == 200).then_some(())
    })
    .await;
    assert!(served.is_some(), "route never served; log:\n{}", bh.log());

    let malformed = b"POST /app/malformed HTTP/1.1\r\nhost: www.acme.test\r\n\
        transfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n";
    let answer = raw_exchange(bh.http, malformed, false).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    let abandoned =
        b"POST /app/abandoned HTTP/1.1\r\nhost: www.acme.test\r\ncontent-length: 100\r\n\r\nten bytes.";
    raw_exchange(bh.http, abandoned, true).await;

    let bad = line_for(&bh, "/app/malformed").await;
    assert_eq!(bad["status"], 400, "{bad}");
    assert_eq!(bad["outcome"], "client_error", "{bad}");
    assert_eq!(
        (&bad["refusal"], &bad["fault"]),
        (&"client_body".into(), &"client".into()),
        "{bad}"
    );
    let gone = line_for(&bh, "/app/abandoned").await;
    assert_eq!(gone["status"], 499, "{gone}");
    assert_eq!(gone["outcome"], "cancelled", "{gone}");
    let metrics = bh.metrics().await;
    assert!(
        metrics.contains("bulkhead_router_client_errors_total{tenant=\"acme\",backend=\"acme/web:80\",kind=\"malformed_body\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("kind=\"protocol\""),
        "no upstream protocol error: {metrics}"
    );
    let (status, _, _) = http_get(bh.http, "www.acme.test", "/app/after")
        .await
        .expect("GET");
    assert_eq!(status, 200, "the endpoint still serves");
}
