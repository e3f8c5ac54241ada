//! TLS to backends (`Backend::tls`, from a BackendTLSPolicy): connection reuse per endpoint and
//! TLS identity, SNI, and the client certificate the router presents, against a rustls backend
//! that counts its handshakes and answers with what it saw.

use crate::support::*;
use bulkhead_snapshot::{BackendProtocol, BackendTls, BackendTrust, Certificate, TenantSnapshot};
use bulkhead_test_support::pki::{DemoCa, LeafCert};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const HOST: &str = "a.acme.test";

/// A TLS backend counting completed handshakes; answers `sni=<name> client=<yes|no>`.
struct TlsBackend {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
}

impl TlsBackend {
    async fn start(leaf: &LeafCert, client_ca: Option<&DemoCa>) -> TlsBackend {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.cert_der()).unwrap();
                let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .unwrap();
                builder.with_client_cert_verifier(v)
            }
            None => builder.with_no_client_auth(),
        };
        let config = Arc::new(builder.with_single_cert(certs, key).unwrap());
        let acceptor = TlsAcceptor::from(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&handshakes);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, count) = (acceptor.clone(), Arc::clone(&count));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    let conn = tls.get_ref().1;
                    let seen = format!(
                        "sni={} client={}",
                        conn.server_name().unwrap_or("-"),
                        if conn.peer_certificates().is_some() {
                            "yes"
                        } else {
                            "no"
                        }
                    );
                    let service = service_fn(move |_req: Request<Incoming>| {
                        let body = Bytes::from(seen.clone());
                        async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsBackend { addr, handshakes }
    }

    fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

fn tls_to(hostname: &str, ca: &DemoCa, client: Option<&str>) -> BackendTls {
    BackendTls {
        hostname: hostname.into(),
        trust: BackendTrust::CaPem {
            ca_pem: ca.cert_pem().to_owned(),
        },
        subject_alt_names: vec![],
        client_certificate: client.map(str::to_owned),
    }
}

/// Routes `/one` to backend `acme/one:443` and `/two` to `acme/two:443`, both at `endpoint`.
fn snapshot(endpoint: SocketAddr, one: BackendTls, two: Option<BackendTls>) -> TenantSnapshot {
    let pki = Pki::new();
    let mut s = base_snapshot(&pki, 1);
    let mut b1 = backend(BackendProtocol::Http1, &[endpoint]);
    b1.tls = Some(one);
    let mut b2 = backend(BackendProtocol::Http1, &[endpoint]);
    b2.tls = two;
    s.backends.insert("acme/one:443".into(), b1);
    s.backends.insert("acme/two:443".into(), b2);
    s.http.virtual_hosts = vec![vhost(
        HOST,
        80,
        vec![
            route(
                "one",
                prefix("/one"),
                vec![weighted(Some("acme/one:443"), 1)],
            ),
            route(
                "two",
                prefix("/two"),
                vec![weighted(Some("acme/two:443"), 1)],
            ),
        ],
    )];
    s
}

#[tokio::test]
async fn sequential_requests_share_one_tls_connection_with_the_policy_sni() {
    let ca = DemoCa::new("backend CA").unwrap();
    let web = TlsBackend::start(&ca.issue(&["web.backend.test"]).unwrap(), None).await;
    let s = snapshot(web.addr, tls_to("web.backend.test", &ca, None), None);
    let router = TestRouter::start(s).await;
    let mut c = h1_plain(&router).await;
    for i in 0..10 {
        let r = c.get(HOST, "/one").await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {:?}", r.body);
        assert_eq!(r.body, "sni=web.backend.test client=no");
    }
    assert_eq!(
        web.handshakes(),
        1,
        "one pooled TLS connection serves every request"
    );
}

#[tokio::test]
async fn backends_with_other_tls_settings_on_one_endpoint_never_share_a_connection() {
    let ca = DemoCa::new("backend CA").unwrap();
    let leaf = ca.issue(&["one.backend.test", "two.backend.test"]).unwrap();
    let web = TlsBackend::start(&leaf, None).await;
    let s = snapshot(
        web.addr,
        tls_to("one.backend.test", &ca, None),
        Some(tls_to("two.backend.test", &ca, None)),
    );
    let router = TestRouter::start(s).await;
    let mut c = h1_plain(&router).await;
    for _ in 0..3 {
        assert_eq!(
            c.get(HOST, "/one").await.body,
            "sni=one.backend.test client=no"
        );
        assert_eq!(
            c.get(HOST, "/two").await.body,
            "sni=two.backend.test client=no"
        );
    }
    assert_eq!(
        web.handshakes(),
        2,
        "one connection per TLS identity, each reused"
    );
}

#[tokio::test]
async fn a_plaintext_backend_never_gets_a_pooled_tls_connection() {
    let ca = DemoCa::new("backend CA").unwrap();
    let web = TlsBackend::start(&ca.issue(&["one.backend.test"]).unwrap(), None).await;
    let s = snapshot(web.addr, tls_to("one.backend.test", &ca, None), None);
    let router = TestRouter::start(s).await;
    let mut c = h1_plain(&router).await;
    assert_eq!(c.get(HOST, "/one").await.status, StatusCode::OK);
    // `two` has no TLS: its plaintext request must not ride the idle TLS connection (the TLS
    // backend cannot read plaintext: a 502-class answer, not `sni=...`).
    let r = c.get(HOST, "/two").await;
    assert!(r.status.is_server_error(), "{} {:?}", r.status, r.body);
}

#[tokio::test]
async fn the_router_presents_the_client_certificate_the_snapshot_names() {
    let ca = DemoCa::new("backend CA").unwrap();
    let client_ca = DemoCa::new("gateway client CA").unwrap();
    let web = TlsBackend::start(&ca.issue(&["web.backend.test"]).unwrap(), Some(&client_ca)).await;
    let mut s = snapshot(
        web.addr,
        tls_to("web.backend.test", &ca, Some("acme/gateway-client")),
        Some(tls_to("web.backend.test", &ca, None)),
    );
    let client = client_ca.issue(&["gateway.acme.test"]).unwrap();
    s.certificates.insert(
        "acme/gateway-client".into(),
        Certificate {
            cert_pem: client.cert_pem,
            key_pem: client.key_pem,
        },
    );
    let router = TestRouter::start(s).await;
    let mut c = h1_plain(&router).await;
    let r = c.get(HOST, "/one").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body, "sni=web.backend.test client=yes");
    // Without a client certificate the backend refuses the handshake: 502, never plaintext.
    let r = c.get(HOST, "/two").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{:?}", r.body);
}
