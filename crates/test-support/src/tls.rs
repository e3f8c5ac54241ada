//! rustls configurations for tests (ring provider, safe default protocol versions): a client
//! trusting a test CA, a server presenting a test leaf, an accept loop that completes TLS before
//! the handler runs, and a client's first flight taken out of rustls for tests that deliver it
//! their own way. Also the alert records the edge answers with.

use crate::net::serve_each;
use crate::pki::LeafCert;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The TLS alert record the edge sends for an SNI no tenant owns (fatal `unrecognized_name`).
pub const ALERT_UNRECOGNIZED_NAME: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];
/// The TLS alert record the edge sends for a ClientHello that does not parse (fatal `decode_error`).
pub const ALERT_DECODE_ERROR: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32];
/// The TLS alert record the edge sends when no router of the tenant can be reached (fatal
/// `internal_error`).
pub const ALERT_INTERNAL_ERROR: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x50];

/// A rustls client configuration trusting `roots`, presenting `identity` when given (client
/// authentication), and offering the ALPN protocols `alpn`.
fn client_config_from(
    roots: RootCertStore,
    identity: Option<&LeafCert>,
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(leaf) => {
            let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("client certificate PEM");
            let key =
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("client key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate and key match")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Every certificate of `ca_pem`, as trust roots.
fn roots_of(ca_pem: &str) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()).filter_map(Result::ok) {
        roots.add(cert).expect("add CA");
    }
    roots
}

/// A rustls client configuration trusting `roots` and offering the ALPN protocols `alpn`.
pub fn client_config_with_roots(roots: RootCertStore, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    client_config_from(roots, None, alpn)
}

/// A rustls client configuration trusting every certificate in `ca_pem` and offering `alpn`.
pub fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    client_config_from(roots_of(ca_pem), None, alpn)
}

/// A rustls client configuration trusting every certificate in `ca_pem`, presenting `identity`
/// (client authentication) and offering `alpn`.
pub fn client_config_presenting(
    ca_pem: &str,
    identity: &LeafCert,
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    client_config_from(roots_of(ca_pem), Some(identity), alpn)
}

/// A rustls server configuration presenting `leaf` (no client authentication).
pub fn server_config(leaf: &LeafCert) -> Arc<ServerConfig> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("leaf certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("leaf key PEM");
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("certificate and key match");
    Arc::new(config)
}

/// [`serve_each`] with TLS: completes a handshake with `config` on every accepted connection and
/// runs `handle` on the TLS stream; a failed handshake just ends that connection.
pub async fn serve_tls_each<F, Fut>(config: Arc<ServerConfig>, handle: F) -> SocketAddr
where
    F: Fn(TlsStream<tokio::net::TcpStream>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(config);
    serve_each(move |tcp| {
        let (acceptor, handle) = (acceptor.clone(), handle.clone());
        async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                handle(tls).await;
            }
        }
    })
    .await
}

/// A client connection to `server_name` (a DNS name sends SNI, an IP address sends none) and the
/// ClientHello records it wants to send first, taken out so a test can deliver them its own way.
pub fn first_flight(config: Arc<ClientConfig>, server_name: &str) -> (ClientConnection, Vec<u8>) {
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    let mut conn = ClientConnection::new(config, name).expect("client connection");
    let mut flight = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut flight).expect("write to a Vec");
    }
    (conn, flight)
}

/// A real ClientHello for `sni` (ALPN none, trusting nothing), as rustls writes it.
pub fn client_hello(sni: &str) -> Vec<u8> {
    first_flight(client_config_with_roots(RootCertStore::empty(), &[]), sni).1
}
