//! TLS passthrough (TLSRoute): the client's TLS stream reaches the backend untouched, through the edge
//! and the tenant router, and the backend's answer comes back byte for byte.

mod common;

use common::*;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn tls_route_passthrough_delivers_the_clients_bytes_unchanged() {
    let ca = pki::DemoCa::new("backend CA").unwrap();
    let leaf = ca.issue(&["secure.acme.test"]).unwrap();
    // A TLS echo server with its own certificate (the router never holds its key).
    let backend = serve_tls_each(tls_server_config(&leaf), echo).await;
    let bh = Standalone::start(&[
        ("tenant.yaml", tenant_yaml("acme", &["*.acme.test"])),
        (
            "tls.yaml",
            tls_passthrough_yaml("acme", "secure.acme.test", "secure", backend),
        ),
    ])
    .await;

    // The handshake succeeds against the backend's own CA: the backend terminated TLS, not Bulkhead.
    let mut tls = tls_connect(bh.https, "secure.acme.test", ca.cert_pem(), &[])
        .await
        .unwrap_or_else(|e| panic!("passthrough handshake: {e}\n{}", bh.log()));

    let mut payload = vec![0u8; 4 * 1024 * 1024];
    rand::rng().fill_bytes(&mut payload);
    let sent = Sha256::digest(&payload);
    let (mut r, mut w) = tokio::io::split(&mut tls);
    let writer = async {
        w.write_all(&payload).await.unwrap();
        w.flush().await.unwrap();
    };
    let reader = async {
        let mut got = vec![0u8; payload.len()];
        r.read_exact(&mut got).await.map(|_| got)
    };
    let ((), got) = tokio::join!(writer, reader);
    let got = got.expect("echo comes back");
    assert_eq!(Sha256::digest(&got), sent, "bytes changed on the way");
}
