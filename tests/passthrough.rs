//! TLS passthrough (TLSRoute): the client's TLS stream reaches the backend untouched, through the edge
//! and the tenant router, and the backend's answer comes back byte for byte.

mod common;

use common::*;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TLS echo server with its own certificate (the router never holds its key).
async fn tls_echo_backend(leaf: &pki::LeafCert) -> SocketAddr {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let (mut r, mut w) = tokio::io::split(tls);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

fn tls_route_yaml(backend: SocketAddr) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  namespace: acme\n  name: gw\nspec:\n  gatewayClassName: bulkhead\n  listeners:\n  - name: tls\n    protocol: TLS\n    port: 443\n    hostname: \"secure.acme.test\"\n    tls:\n      mode: Passthrough\n---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\nmetadata:\n  namespace: acme\n  name: secure\nspec:\n  parentRefs:\n  - name: gw\n  hostnames: [\"secure.acme.test\"]\n  rules:\n  - backendRefs:\n    - name: secure\n      port: 443\n---\napiVersion: v1\nkind: Service\nmetadata:\n  namespace: acme\n  name: secure\nspec:\n  ports:\n  - name: tls\n    port: 443\n    targetPort: 8443\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  namespace: acme\n  name: secure-1\n  labels:\n    kubernetes.io/service-name: secure\naddressType: IPv4\nports:\n- name: tls\n  port: {}\nendpoints:\n- addresses: [\"127.0.0.1\"]\n",
        backend.port()
    )
}

#[tokio::test]
async fn tls_route_passthrough_delivers_the_clients_bytes_unchanged() {
    let ca = pki::DemoCa::new("backend CA").unwrap();
    let leaf = ca.issue(&["secure.acme.test"]).unwrap();
    let backend = tls_echo_backend(&leaf).await;
    let bh = Standalone::start(&[
        ("tenant.yaml", tenant_yaml("acme", &["*.acme.test"])),
        ("tls.yaml", tls_route_yaml(backend)),
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
