//! TLS passthrough: the raw stream reaches the TLSRoute backend byte for byte.

use crate::support::*;
use bulkhead_snapshot::{BackendProtocol, PassthroughRoute, RouteRef, TlsTerminateTcp};
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

#[tokio::test]
async fn terminate_tcp_decrypts_and_copies_plaintext_to_the_backend() {
    let pki = Pki::new();
    let tcp_backend = hashing_tcp_backend().await;
    let mut s = base_snapshot(&pki, 1);
    s.backends.insert(
        "acme/db:5432/tcp".into(),
        backend(BackendProtocol::Tcp, &[closed_port().await, tcp_backend]),
    );
    // An exact SNI for TCP next to the `*.acme.test` HTTPS certificate: the exact name wins.
    s.https.terminate_tcp = vec![TlsTerminateTcp {
        hostname: "db.acme.test".into(),
        certificate: "acme/wild".into(),
        listener: listener_ref(5433),
        route: RouteRef {
            kind: "TCPRoute".into(),
            namespace: TENANT.into(),
            name: "db".into(),
            rule: 0,
        },
        backends: vec![weighted(Some("acme/db:5432/tcp"), 1)],
    }];
    let router = TestRouter::start(s).await;

    for _ in 0..3 {
        // A client offering an ALPN protocol the router does not know still gets a handshake.
        let tls = tls_connect(&pki, router.https, "db.acme.test", &[b"postgresql"])
            .await
            .expect("TLS handshake");
        assert_eq!(
            peer_leaf(&tls),
            pki.wildcard.der,
            "the listener's certificate"
        );
        assert_eq!(tls.get_ref().1.alpn_protocol(), None, "no ALPN on TCP");
        let payload: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let (mut rd, mut wr) = tokio::io::split(tls);
        let to_send = payload.clone();
        let writer = tokio::spawn(async move {
            wr.write_all(&to_send).await.unwrap();
            wr.shutdown().await.unwrap();
        });
        let mut answer = String::new();
        rd.read_to_string(&mut answer).await.unwrap();
        writer.await.unwrap();
        assert_eq!(
            answer,
            hex::encode(sha2::Sha256::digest(&payload)),
            "the backend got exactly the decrypted bytes"
        );
    }
    // HTTPS on the wildcard certificate is still served next to it (no virtual host: 404).
    let mut client = h1_tls(&pki, &router, "b.acme.test").await;
    assert_eq!(
        client.get("b.acme.test", "/").await.status,
        http::StatusCode::NOT_FOUND
    );
    assert!(router.metrics_text().contains("outcome=\"terminated_tcp\""));
}
