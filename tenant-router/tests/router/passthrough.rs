//! TLS passthrough: the raw stream reaches the TLSRoute backend byte for byte.

use crate::support::*;
use bulkhead_crds::snapshot::{BackendProtocol, PassthroughRoute, RouteRef};
use rustls_pki_types::ServerName;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The bytes a real rustls client sends first for `sni`.
fn client_hello(pki: &Pki, sni: &str) -> Vec<u8> {
    let mut conn = rustls::ClientConnection::new(
        pki.client_config(&[b"h2"]),
        ServerName::try_from(sni.to_owned()).unwrap(),
    )
    .unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

#[tokio::test]
async fn passthrough_bytes_are_identical_and_exact_sni_beats_wildcard_terminate() {
    let pki = Pki::new();
    let tcp_backend = hashing_tcp_backend().await;
    let mut s = base_snapshot(&pki, 1);
    s.backends.insert(
        "acme/db:5432".into(),
        backend(BackendProtocol::Tcp, &[closed_port().await, tcp_backend]),
    );
    s.https.passthrough = vec![PassthroughRoute {
        hostname: "pass.acme.test".into(),
        route: RouteRef {
            kind: "TLSRoute".into(),
            namespace: TENANT.into(),
            name: "db".into(),
            rule: 0,
        },
        backends: vec![weighted(Some("acme/db:5432"), 1)],
    }];
    let router = TestRouter::start(s).await;

    for _ in 0..3 {
        let mut sent = client_hello(&pki, "pass.acme.test");
        let payload: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        sent.extend_from_slice(&payload);
        let (mut rd, mut wr) = proxied_tcp(router.https).await.into_split();
        let to_send = sent.clone();
        let writer = tokio::spawn(async move {
            wr.write_all(&to_send).await.unwrap();
            wr.shutdown().await.unwrap();
        });
        let mut answer = String::new();
        rd.read_to_string(&mut answer).await.unwrap();
        writer.await.unwrap();
        assert_eq!(
            answer,
            hex::encode(sha2::Sha256::digest(&sent)),
            "backend got exactly the client's bytes"
        );
    }
}
