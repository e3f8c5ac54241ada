//! HTTP/2 floods through `bulkhead standalone`: a client that opens every flow-control window and
//! never reads cannot make a tenant router buffer without bound. The router buffers at most
//! `--router-h2-max-send-buf-size` per stream and runs at most `--router-h2-max-streams` streams,
//! so its memory stays below a bound derived from those limits, however many streams are asked.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Size of each response of the bulk backend.
const RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Hostile connections, each opening `STREAMS_PER_CONNECTION` streams.
const CONNECTIONS: usize = 8;
/// Streams per hostile connection (the router's default per-connection maximum).
const STREAMS_PER_CONNECTION: u32 = 100;
/// The router-wide stream budget the test sets.
const ROUTER_STREAMS: usize = 100;
/// How much the process may grow under the flood: the budget, 100 streams × (64 KiB of send
/// buffer + about 400 KiB of upstream read buffer) ≈ 45 MiB, with a margin. Without the bounds
/// the process grew by 1.1 GiB.
const MAX_GROWTH_KIB: u64 = 96 * 1024;

/// A backend that answers every HTTP/1.1 request with `RESPONSE_BYTES` as fast as it is read.
async fn bulk_backend() -> SocketAddr {
    let body = std::sync::Arc::new(vec![b'x'; RESPONSE_BYTES]);
    serve_each(move |mut s| {
        let body = std::sync::Arc::clone(&body);
        async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let Ok(n) = s.read(&mut buf).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                head.extend_from_slice(&buf[..n]);
                while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    head.drain(..end + 4);
                    let answer =
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {RESPONSE_BYTES}\r\n\r\n");
                    if s.write_all(answer.as_bytes()).await.is_err()
                        || s.write_all(&body).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
    })
    .await
}

/// Preface, windows opened to the maximum, then `streams` GET requests for `/big`; nothing is read.
fn flood_bytes(authority: &str, streams: u32) -> Vec<u8> {
    const MAX_WINDOW: u32 = 0x7fff_ffff;
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let mut settings = vec![0x00, 0x04];
    settings.extend_from_slice(&MAX_WINDOW.to_be_bytes());
    out.extend(h2_frame(0x4, 0, 0, &settings));
    out.extend(h2_frame(0x8, 0, 0, &(MAX_WINDOW - 65_535).to_be_bytes()));
    // HPACK: :method GET, :scheme https (static table), :path /big and :authority as literals.
    let mut block = vec![0x82, 0x87, 0x04, 4];
    block.extend_from_slice(b"/big");
    block.push(0x01);
    block.push(u8::try_from(authority.len()).unwrap());
    block.extend_from_slice(authority.as_bytes());
    for i in 0..streams {
        out.extend(h2_frame(0x1, 0x5, 1 + 2 * i, &block));
    }
    out
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn non_reading_http2_clients_cannot_grow_the_router_without_bound() {
    let ca = pki::DemoCa::new("acme CA").unwrap();
    let leaf = ca.issue(&["*.acme.test"]).unwrap();
    let big = bulk_backend().await;
    let router_streams = ROUTER_STREAMS.to_string();
    let bh = Standalone::start_with_env(
        &[
            ("tenant.yaml", tenant_yaml("acme", &["*.acme.test"])),
            (
                "gw.yaml",
                gateway_yaml("acme", "*.acme.test", Some("acme-tls"))
                    + "---\n"
                    + &pki::tls_secret_yaml("acme", "acme-tls", &leaf),
            ),
            (
                "big.yaml",
                route_yaml("acme", "big", &["www.acme.test"], "/", "big")
                    + "---\n"
                    + &service_yaml("acme", "big", big),
            ),
        ],
        &[("BULKHEAD_ROUTER_H2_MAX_STREAMS", router_streams.as_str())],
    )
    .await;
    let served = eventually(SETTLE, || async {
        let (status, _, _) = https_get(bh.https, "www.acme.test", "/small", ca.cert_pem())
            .await
            .ok()?;
        (status == 200).then_some(())
    })
    .await;
    assert!(served.is_some(), "never served\n{}", bh.log());
    let before = rss_kib(bh.pid());

    let mut hostile = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut tls = tls_connect(bh.https, "www.acme.test", ca.cert_pem(), &[b"h2"])
            .await
            .expect("TLS");
        tls.write_all(&flood_bytes("www.acme.test", STREAMS_PER_CONNECTION))
            .await
            .unwrap();
        tls.flush().await.unwrap();
        hostile.push(tls);
    }
    // Let the router fill every buffer it is willing to fill, and keep the largest size seen.
    let mut peak = before;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak = peak.max(rss_kib(bh.pid()));
    }
    let growth = peak.saturating_sub(before);
    assert!(
        growth < MAX_GROWTH_KIB,
        "router process grew by {growth} KiB (from {before} KiB) under {CONNECTIONS}×{STREAMS_PER_CONNECTION} non-reading streams"
    );
    drop(hostile);
}
