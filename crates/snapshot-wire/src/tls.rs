//! TLS configuration of both ends: rustls with the ring provider, ALPN `h2`, certificates from PEM
//! (parsed by the snapshot contract's [`bulkhead_snapshot::pem`]). The server's configuration is
//! built in [`crate::cert_reload`], which serves a certificate that can be replaced.

use bulkhead_snapshot::pem::{certificate_chain, PemError};
use rustls::crypto::ring::default_provider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use std::sync::Arc;

/// The only application protocol spoken: HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

/// Why a TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The PEM input holds no certificate.
    #[error("no certificate found in the PEM input")]
    NoCertificate,
    /// The PEM input holds no usable private key.
    #[error("no private key found in the PEM input: {0}")]
    NoPrivateKey(String),
    /// A PEM section could not be read.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// The private key does not belong to the certificate, or its type cannot sign.
    #[error("certificate and key do not form a usable certificate: {0}")]
    KeyMismatch(String),
    /// rustls refused the certificates or key.
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
}

impl From<PemError> for TlsError {
    fn from(e: PemError) -> Self {
        match e {
            PemError::Chain(reason) => Self::Pem(reason),
            PemError::NoCertificate => Self::NoCertificate,
            PemError::Key(reason) => Self::NoPrivateKey(reason),
            PemError::Mismatch(reason) => Self::KeyMismatch(reason),
        }
    }
}

/// A client TLS configuration trusting exactly the CA certificates in `ca_pem`.
pub fn client_tls_config(ca_pem: &[u8]) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = ca_roots(ca_pem)?;
    let mut config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The trust store of exactly the CA certificates in `ca_pem` (at least one).
pub fn ca_roots(ca_pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca_pem)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    Ok(certificate_chain(pem)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert_reload::server_tls_config;

    #[test]
    fn empty_or_garbage_pem_is_a_typed_error() {
        assert!(matches!(
            client_tls_config(b""),
            Err(TlsError::NoCertificate)
        ));
        assert!(matches!(
            client_tls_config(b"not pem"),
            Err(TlsError::NoCertificate)
        ));
        let cert = rcgen::generate_simple_self_signed(vec!["x.test".into()]).unwrap();
        let pem = cert.cert.pem();
        assert!(client_tls_config(pem.as_bytes()).is_ok());
        assert!(matches!(
            server_tls_config(pem.as_bytes(), b""),
            Err(TlsError::NoPrivateKey(_))
        ));
        let key = cert.signing_key.serialize_pem();
        assert!(server_tls_config(pem.as_bytes(), key.as_bytes()).is_ok());
    }
}
