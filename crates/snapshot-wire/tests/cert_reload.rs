//! The snapshot server's certificate is re-read from its files: a renewed pair reaches new
//! handshakes, a broken one is refused and the previous pair keeps serving.

use bulkhead_snapshot_wire::{client_tls_config, watch_cert_files, CertFiles, ReloadingCert};
use bulkhead_test_support::net::drain;
use bulkhead_test_support::pki::DemoCa;
use bulkhead_test_support::tls::serve_tls_each;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const SERVER_NAME: &str = "bulkhead-operator.bulkhead-system.svc";

/// Writes a file the way the kubelet updates a mounted Secret: a new file renamed over the old.
fn replace_file(path: &Path, content: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A fresh self-signed CA.
fn ca() -> DemoCa {
    DemoCa::new("operator CA").expect("CA")
}

/// A leaf for `SERVER_NAME` signed by `ca`: (certificate PEM, key PEM, certificate DER).
fn leaf(ca: &DemoCa) -> (String, String, Vec<u8>) {
    let leaf = ca.issue(&[SERVER_NAME]).expect("leaf");
    let der = leaf.der().to_vec();
    (leaf.cert_pem, leaf.key_pem, der)
}

/// The DER of the certificate a new TLS connection to `addr` is shown.
async fn served_cert(addr: std::net::SocketAddr, ca_pem: &str) -> Vec<u8> {
    let connector =
        TlsConnector::from(client_tls_config(ca_pem.as_bytes()).expect("client config"));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from(SERVER_NAME).expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    tls.get_ref()
        .1
        .peer_certificates()
        .expect("peer certificates")[0]
        .to_vec()
}

#[tokio::test]
async fn a_renewed_certificate_reaches_new_handshakes_and_a_broken_one_is_refused() {
    let ca = ca();
    let ca_pem = ca.cert_pem().to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let files = CertFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    let (first_pem, first_key, first_der) = leaf(&ca);
    replace_file(&files.cert, first_pem.as_bytes());
    replace_file(&files.key, first_key.as_bytes());

    let cert =
        Arc::new(ReloadingCert::new(first_pem.as_bytes(), first_key.as_bytes()).expect("pair"));
    // Each connection is held open until the client goes.
    let addr = serve_tls_each(cert.server_config().expect("server config"), drain).await;
    let (loaded, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (l, r) = (Arc::clone(&loaded), Arc::clone(&refused));
    let stop = tokio_util_stop();
    tokio::spawn(watch_cert_files(
        files.clone(),
        Arc::clone(&cert),
        Duration::from_millis(20),
        move |ok| {
            if ok { &l } else { &r }.fetch_add(1, Ordering::SeqCst);
        },
        stop,
    ));

    assert_eq!(served_cert(addr, &ca_pem).await, first_der);

    // Renewal: a new pair in place of the old.
    let (second_pem, second_key, second_der) = leaf(&ca);
    replace_file(&files.key, second_key.as_bytes());
    replace_file(&files.cert, second_pem.as_bytes());
    let mut served = Vec::new();
    for _ in 0..500 {
        served = served_cert(addr, &ca_pem).await;
        if served == second_der {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        served, second_der,
        "the renewed certificate was never served"
    );
    assert!(loaded.load(Ordering::SeqCst) >= 1);

    // A certificate whose key is another one's: refused, the renewed pair keeps serving. (The
    // renewal above may already have been refused once, had the watcher looked between the two
    // file writes.)
    let before = refused.load(Ordering::SeqCst);
    let (third_pem, _, _) = leaf(&ca);
    replace_file(&files.cert, third_pem.as_bytes());
    for _ in 0..500 {
        if refused.load(Ordering::SeqCst) > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refused.load(Ordering::SeqCst) > before,
        "the mismatched pair was not refused"
    );
    assert_eq!(served_cert(addr, &ca_pem).await, second_der);
}

#[tokio::test]
async fn a_change_before_the_first_check_is_not_missed() {
    let ca = ca();
    let dir = tempfile::tempdir().expect("tempdir");
    let files = CertFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    // The caller loaded the first pair; the files were renewed before the watcher started.
    let (first_pem, first_key, _) = leaf(&ca);
    let cert =
        Arc::new(ReloadingCert::new(first_pem.as_bytes(), first_key.as_bytes()).expect("pair"));
    let (second_pem, second_key, _) = leaf(&ca);
    replace_file(&files.cert, second_pem.as_bytes());
    replace_file(&files.key, second_key.as_bytes());
    let loaded = Arc::new(AtomicUsize::new(0));
    let l = Arc::clone(&loaded);
    tokio::spawn(watch_cert_files(
        files,
        Arc::clone(&cert),
        Duration::from_millis(20),
        move |ok| {
            assert!(ok, "the renewed pair was refused");
            l.fetch_add(1, Ordering::SeqCst);
        },
        tokio_util_stop(),
    ));
    for _ in 0..500 {
        if loaded.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(loaded.load(Ordering::SeqCst), 1);
    // Already served: loading the same pair again changes nothing.
    assert_eq!(
        cert.replace(second_pem.as_bytes(), second_key.as_bytes())
            .ok(),
        Some(false)
    );
}

/// A future that never completes (the watcher runs until the test ends).
fn tokio_util_stop() -> impl std::future::Future<Output = ()> {
    std::future::pending()
}
