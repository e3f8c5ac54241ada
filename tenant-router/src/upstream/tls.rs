//! TLS from the router to backends (`BackendTLSPolicy`, and the Gateway's backend client
//! certificate): one rustls client configuration per backend, compiled with the snapshot.
//!
//! * SNI is the policy's hostname; ALPN is `h2` for [`BackendProtocol::H2c`] backends (gRPC,
//!   `kubernetes.io/h2c`) and `http/1.1` for the others.
//! * The chain is verified against the policy's CA bundle or the system trust store
//!   ([`BackendTrust::System`], read once per process with `rustls-native-certs`), then the leaf
//!   must hold the policy's hostname, or, when `subjectAltNames` are given, one of them (DNS names
//!   as webpki matches them, URIs exactly) and the hostname is not used for authentication.
//! * A backend whose TLS cannot be configured (empty system store, unusable CA PEM, bad hostname)
//!   fails closed: every connection to it fails with [`UpstreamError::Tls`] (502) and the reason
//!   is logged; it never falls back to plaintext.
//!
//! Pooled connections are keyed by endpoint and [`TlsIdentity`] (a digest of everything that
//! decides how the connection was verified and what it presented), so two backends on the same
//! address with different policies never share a connection, and a plain backend never gets a TLS
//! one.

use super::UpstreamError;
use crate::compile::CertificateCache;
use bulkhead_snapshot::{BackendProtocol, BackendTls, BackendTrust, Certificate, SubjectAltName};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::client::{ClientConfig, ResolvesClientCert};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// What identifies how a pooled connection was set up: SHA-256 over the backend's TLS settings,
/// its protocol and the client certificate's content.
pub(crate) type TlsIdentity = [u8; 32];

/// A backend's compiled TLS origination.
pub(crate) struct UpstreamTls {
    /// The client configuration, or why there is none (then every connection fails closed).
    config: Result<TlsConnector, Arc<str>>,
    /// SNI (the policy's hostname).
    server_name: ServerName<'static>,
    /// Pool key part.
    pub(crate) identity: TlsIdentity,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("usable", &self.config.is_ok())
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// Compiles `tls` for a backend of `protocol`. Never fails: a configuration that cannot be
    /// built fails every connection instead (see the module doc), so one backend's policy never
    /// makes the router refuse the tenant's whole snapshot.
    pub(crate) fn compile(
        backend: &str,
        tls: &BackendTls,
        protocol: BackendProtocol,
        certificates: &BTreeMap<String, Certificate>,
        cache: &CertificateCache,
        provider: &Arc<CryptoProvider>,
    ) -> Self {
        let client = tls
            .client_certificate
            .as_ref()
            .and_then(|id| certificates.get(id).map(|c| (id, c)));
        let identity = identity(tls, protocol, client.map(|(_, c)| c));
        let server_name = ServerName::try_from(tls.hostname.clone())
            .unwrap_or_else(|_| ServerName::try_from("invalid.invalid").expect("valid name"));
        let config = client_config(tls, protocol, client, cache, provider).map_err(|reason| {
            tracing::error!(backend, reason = %reason, "backend TLS is not usable: connections to this backend fail closed");
            Arc::<str>::from(reason)
        });
        Self {
            config,
            server_name,
            identity,
        }
    }

    /// Runs the TLS handshake on `tcp`.
    pub(super) async fn handshake(
        &self,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, UpstreamError> {
        let connector = self
            .config
            .as_ref()
            .map_err(|reason| UpstreamError::Tls(reason.to_string().into()))?;
        connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| UpstreamError::Tls(Box::new(e)))
    }
}

fn identity(
    tls: &BackendTls,
    protocol: BackendProtocol,
    client: Option<&Certificate>,
) -> TlsIdentity {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&(tls, protocol)).unwrap_or_default());
    if let Some(c) = client {
        h.update(c.content_digest());
    }
    h.finalize().into()
}

fn client_config(
    tls: &BackendTls,
    protocol: BackendProtocol,
    client: Option<(&String, &Certificate)>,
    cache: &CertificateCache,
    provider: &Arc<CryptoProvider>,
) -> Result<TlsConnector, String> {
    if ServerName::try_from(tls.hostname.as_str()).is_err() {
        return Err(format!("hostname {:?} is not a valid SNI", tls.hostname));
    }
    if tls.client_certificate.is_some() && client.is_none() {
        return Err("client certificate is not in the snapshot".into());
    }
    let roots = match &tls.trust {
        BackendTrust::CaPem { ca_pem } => Arc::new(
            bulkhead_snapshot::pem::trust_anchors(ca_pem.as_bytes())
                .map_err(|e| format!("CA bundle: {e}"))?,
        ),
        BackendTrust::System => system_roots()?,
    };
    let verifier = Arc::new(BackendVerifier {
        roots,
        names: expected_names(tls)?,
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client {
        Some((id, cert)) => {
            let key = cache.get(id, cert, provider).map_err(|e| e.to_string())?;
            builder.with_client_cert_resolver(Arc::new(ClientCertificate(key)))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![match protocol {
        BackendProtocol::H2c => b"h2".to_vec(),
        BackendProtocol::Http1 | BackendProtocol::Tcp => b"http/1.1".to_vec(),
    }];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The system trust store, read once per process. An empty store (a container image without
/// CA certificates) is an error: backends trusting it fail closed.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "system trust store: a source could not be read");
            }
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::error!("system trust store is empty: backends with wellKnownCACertificates System fail closed");
                return Err("the system trust store holds no usable CA certificate".into());
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

/// A name the backend's leaf certificate must hold (at least one of the list).
#[derive(Debug)]
enum ExpectedName {
    /// A DNS name (or IP address), matched by webpki.
    Dns(ServerName<'static>),
    /// A URI SAN, compared exactly.
    Uri(String),
}

fn expected_names(tls: &BackendTls) -> Result<Vec<ExpectedName>, String> {
    if tls.subject_alt_names.is_empty() {
        let name = ServerName::try_from(tls.hostname.clone()).map_err(|e| e.to_string())?;
        return Ok(vec![ExpectedName::Dns(name)]);
    }
    tls.subject_alt_names
        .iter()
        .map(|san| match san {
            SubjectAltName::Hostname(h) => ServerName::try_from(h.clone())
                .map(ExpectedName::Dns)
                .map_err(|e| format!("subject alt name {h:?}: {e}")),
            SubjectAltName::Uri(u) => Ok(ExpectedName::Uri(u.clone())),
        })
        .collect()
}

/// Verifies the chain against `roots`, then that the leaf holds one of `names` (the SNI sent is
/// not consulted: with `subjectAltNames` the hostname must not authenticate).
#[derive(Debug)]
struct BackendVerifier {
    roots: Arc<RootCertStore>,
    names: Vec<ExpectedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for BackendVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let holds = |name: &ExpectedName| match name {
            ExpectedName::Dns(n) => verify_server_name(&cert, n).is_ok(),
            ExpectedName::Uri(u) => uri_sans(end_entity).iter().any(|s| s == u),
        };
        if self.names.iter().any(holds) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The URI subject alternative names of a DER certificate (none when it does not parse).
fn uri_sans(der: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .collect()
}

/// Presents one certificate whatever the backend asks for.
#[derive(Debug)]
struct ClientCertificate(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(sans: Vec<SubjectAltName>) -> BackendTls {
        BackendTls {
            hostname: "web.acme.test".into(),
            trust: BackendTrust::CaPem {
                ca_pem: String::new(),
            },
            subject_alt_names: sans,
            client_certificate: None,
        }
    }

    #[test]
    fn identity_differs_by_protocol_and_policy() {
        let a = identity(&policy(vec![]), BackendProtocol::Http1, None);
        let b = identity(&policy(vec![]), BackendProtocol::H2c, None);
        let c = identity(
            &policy(vec![SubjectAltName::Uri("spiffe://a".into())]),
            BackendProtocol::Http1,
            None,
        );
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, identity(&policy(vec![]), BackendProtocol::Http1, None));
    }

    #[test]
    fn an_unusable_ca_bundle_fails_closed_instead_of_refusing_the_snapshot() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = UpstreamTls::compile(
            "acme/web:443",
            &policy(vec![]),
            BackendProtocol::Http1,
            &BTreeMap::new(),
            &CertificateCache::default(),
            &provider,
        );
        assert!(tls.config.is_err());
    }
}
