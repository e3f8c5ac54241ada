//! The fixtures themselves over real loopback sockets: a leaf of the test CA is served to a client
//! of that CA and refused by a client of another, the echo backend returns every byte, a closed
//! port refuses, the frame checks tell a valid stream from a corrupt one, and the two-tenant world
//! gives each tenant its own files.

use bulkhead_snapshot_wire::frame::{encode_frame, Frame, KEEPALIVE_FRAME};
use bulkhead_test_support::fuzz::{frames, seeds};
use bulkhead_test_support::manifests::TwoTenants;
use bulkhead_test_support::net::{closed_port, echo, echo_backend};
use bulkhead_test_support::pki::DemoCa;
use bulkhead_test_support::tls::{client_config, serve_tls_each, server_config};
use rustls_pki_types::ServerName;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Upper bound of any wait: only a broken fixture gets near it.
const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_leaf_is_served_to_clients_of_its_ca_and_refused_by_clients_of_another() {
    let ca = DemoCa::new("fixture CA").unwrap();
    let other = DemoCa::new("other CA").unwrap();
    let leaf = ca.issue(&["echo.test"]).unwrap();
    let addr = serve_tls_each(server_config(&leaf), echo).await;
    let name = ServerName::try_from("echo.test").unwrap();

    let trusting = TlsConnector::from(client_config(ca.cert_pem(), &[]));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio::time::timeout(PATIENCE, trusting.connect(name.clone(), tcp))
        .await
        .unwrap()
        .expect("a client of the CA completes the handshake");
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(presented, leaf.der());
    tls.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(PATIENCE, tls.read_exact(&mut back))
        .await
        .expect("the echo within the patience")
        .unwrap();
    assert_eq!(&back, b"ping");

    let stranger = TlsConnector::from(client_config(other.cert_pem(), &[]));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let refused = tokio::time::timeout(PATIENCE, stranger.connect(name, tcp))
        .await
        .unwrap();
    assert!(refused.is_err(), "a client of another CA trusts the leaf");
    assert_ne!(ca.cert_der(), other.cert_der());
}

#[tokio::test]
async fn the_echo_backend_returns_every_byte_and_a_closed_port_refuses() {
    let mut c = TcpStream::connect(echo_backend().await).await.unwrap();
    c.write_all(b"every byte").await.unwrap();
    c.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(PATIENCE, c.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, b"every byte");
    assert!(TcpStream::connect(closed_port().await).await.is_err());
}

#[test]
fn the_frame_checks_decode_a_valid_stream_and_flag_a_corrupt_one() {
    let snapshot = encode_frame(b"{\"version\":1}").unwrap();
    let mut valid = vec![3];
    valid.extend_from_slice(&snapshot);
    valid.extend_from_slice(&KEEPALIVE_FRAME);
    let (decoded, failed) = frames::check("valid", &valid).unwrap();
    assert!(!failed);
    assert_eq!(decoded.len(), 2);
    assert!(matches!(decoded[1], Frame::KeepAlive));

    // A header announcing more than the limit.
    let too_long = u32::try_from(frames::MAX + 1).unwrap().to_be_bytes();
    let corrupt = [&[1u8][..], &too_long[..]].concat();
    assert!(frames::check("corrupt", &corrupt).unwrap().1);
    assert!(frames::check("empty", &[]).is_none());
}

#[test]
fn seeds_are_read_sorted_with_regressions_named() {
    let all = seeds("frame_decoder");
    assert!(all.windows(2).all(|w| w[0].name <= w[1].name));
    assert!(all.iter().all(|s| !s.bytes.is_empty()));
    assert!(all.iter().any(|s| !s.is_regression()));
}

#[test]
fn the_two_tenant_world_gives_each_tenant_its_own_files_and_ca() {
    let web = "127.0.0.1:1".parse().unwrap();
    let world = TwoTenants::new(web, web).unwrap();
    let names: Vec<&str> = world.files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "tenants/acme.yaml",
            "acme/gw.yaml",
            "acme/web.yaml",
            "tenants/globex.yaml",
            "globex/gw.yaml",
            "globex/web.yaml"
        ]
    );
    assert!(world.files[1].1.contains("name: acme-tls"));
    assert!(world.files[4].1.contains("*.globex.test"));
    assert_ne!(world.acme_ca.cert_pem(), world.globex_ca.cert_pem());
}
