//! Bulk transfer through both tiers (TLSRoute passthrough): random bytes each way, client first,
//! then the backend, with sha256 equal at both ends and each side's end of stream (TLS
//! close_notify and TCP FIN) reaching the other while the opposite direction is still open.
//!
//! The size defaults to [`DEFAULT_MIB`] MiB each way; `BULKHEAD_BULK_MIB=<n>` sets another
//! (e.g. 256).

mod common;

use common::*;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// MiB sent each way unless `BULKHEAD_BULK_MIB` says otherwise.
const DEFAULT_MIB: usize = 256;
/// Bytes generated, written and hashed at a time.
const CHUNK: usize = 256 * 1024;
/// Longest wait for the TCP end of stream after TLS close_notify: a missing FIN fails the test
/// instead of hanging it.
const FIN_WAIT: Duration = Duration::from_secs(10);

fn total_bytes() -> usize {
    let mib = std::env::var("BULKHEAD_BULK_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(DEFAULT_MIB);
    mib * 1024 * 1024
}

/// What one end saw: sha256 and length of what it received and of what it sent.
#[derive(Debug, PartialEq, Eq)]
struct Tally {
    received: ([u8; 32], usize),
    sent: ([u8; 32], usize),
}

/// Writes `total` random bytes to `w`, returning their sha256.
async fn send_random<W: AsyncWrite + Unpin>(w: &mut W, total: usize) -> ([u8; 32], usize) {
    let mut hash = Sha256::new();
    let mut chunk = vec![0u8; CHUNK];
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let mut left = total;
    while left > 0 {
        let n = left.min(CHUNK);
        rng.fill_bytes(&mut chunk[..n]);
        hash.update(&chunk[..n]);
        w.write_all(&chunk[..n]).await.expect("write bulk bytes");
        left -= n;
    }
    (hash.finalize().into(), total)
}

/// Reads `r` to its end, returning the sha256 and length of what came.
async fn receive_all<R: AsyncRead + Unpin>(r: &mut R) -> ([u8; 32], usize) {
    let mut hash = Sha256::new();
    let mut chunk = vec![0u8; CHUNK];
    let mut len = 0;
    loop {
        let n = r.read(&mut chunk).await.expect("read bulk bytes");
        if n == 0 {
            break;
        }
        hash.update(&chunk[..n]);
        len += n;
    }
    (hash.finalize().into(), len)
}

/// After TLS close_notify, the raw TCP stream must also end (the FIN was propagated).
async fn assert_tcp_eof(tcp: &mut TcpStream, who: &str) {
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(FIN_WAIT, tcp.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "{who}: no TCP FIN after close_notify: {read:?}"
    );
}

/// A TLS backend that, on each connection, reads until the client's end of stream (hashing),
/// checks the TCP FIN came too, then sends `total` random bytes of its own and closes
/// (close_notify + FIN). Reports what it saw on the returned channel.
async fn hashing_backend(
    leaf: &pki::LeafCert,
    total: usize,
) -> (SocketAddr, mpsc::UnboundedReceiver<Tally>) {
    let (done, tallies) = mpsc::unbounded_channel();
    let addr = serve_tls_each(tls_server_config(leaf), move |mut tls| {
        let done = done.clone();
        async move {
            let received = receive_all(&mut tls).await;
            assert_tcp_eof(tls.get_mut().0, "backend").await;
            let sent = send_random(&mut tls, total).await;
            tls.shutdown().await.expect("backend close");
            let _ = done.send(Tally { received, sent });
        }
    })
    .await;
    (addr, tallies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_each_way_arrive_intact_with_half_close() {
    let total = total_bytes();
    let ca = pki::DemoCa::new("backend CA").unwrap();
    let leaf = ca.issue(&["bulk.acme.test"]).unwrap();
    let (backend, mut tallies) = hashing_backend(&leaf, total).await;
    let bh = Standalone::start(&[
        ("tenant.yaml", tenant_yaml("acme", &["*.acme.test"])),
        (
            "bulk.yaml",
            tls_passthrough_yaml("acme", "bulk.acme.test", "bulk", backend),
        ),
    ])
    .await;

    // The first handshake that succeeds is the connection used (the route may take a moment).
    let mut tls = eventually(SETTLE, || async {
        tls_connect(bh.https, "bulk.acme.test", ca.cert_pem(), &[])
            .await
            .ok()
    })
    .await
    .unwrap_or_else(|| panic!("passthrough handshake never succeeded\n{}", bh.log()));

    let started = Instant::now();
    let sent = send_random(&mut tls, total).await;
    // The client half-closes first: close_notify, then FIN; the backend answers only after both.
    tls.shutdown().await.expect("client close");
    let received = receive_all(&mut tls).await;
    assert_tcp_eof(tls.get_mut().0, "client").await;
    let client = Tally { received, sent };
    let elapsed = started.elapsed();
    eprintln!(
        "{} MiB each way in {elapsed:?} ({:.0} MiB/s both ways together)",
        total >> 20,
        ((2 * total) >> 20) as f64 / elapsed.as_secs_f64()
    );

    let backend = tokio::time::timeout(SETTLE, tallies.recv())
        .await
        .expect("backend finished")
        .expect("backend reported");
    assert_eq!(client.sent.1, total);
    assert_eq!(backend.sent.1, total);
    assert_eq!(
        backend.received, client.sent,
        "client to backend: bytes changed"
    );
    assert_eq!(
        client.received, backend.sent,
        "backend to client: bytes changed"
    );

    // Both ways went through the edge (and so through the tenant's router behind it).
    let metrics = bh.metrics().await;
    for direction in ["client_to_router", "router_to_client"] {
        let counted = edge_bytes(&metrics, direction);
        assert!(
            counted >= total as u64,
            "edge counted {counted} bytes {direction}\n{metrics}"
        );
    }
}

/// The edge's byte counter of tenant `acme` in `direction`, from the Prometheus text.
fn edge_bytes(metrics: &str, direction: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("bulkhead_edge_bytes_total{"))
        .filter(|l| {
            l.contains("tenant=\"acme\"") && l.contains(&format!("direction=\"{direction}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
