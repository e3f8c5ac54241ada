//! A PEM certificate chain and private key to a rustls [`CertifiedKey`]: at least one certificate,
//! a private key the crypto provider can sign with, and a key that belongs to the leaf. The
//! translator checks a Secret with it before publishing, the router loads a snapshot's
//! certificates with it, and the snapshot server loads its own certificate with it.
//!
//! Also a PEM CA bundle to the trust anchors of a rustls [`RootCertStore`] ([`trust_anchors`]):
//! the translator checks a CA ConfigMap with it, the router builds its client-certificate
//! verifiers with it.

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PEM chain and key do not make a usable certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// A PEM section of the chain could not be read.
    #[error("certificate PEM: {0}")]
    Chain(String),
    /// The chain holds no `CERTIFICATE` block.
    #[error("certificate PEM holds no certificate")]
    NoCertificate,
    /// The key holds no usable `PRIVATE KEY` block.
    #[error("private key PEM: {0}")]
    Key(String),
    /// rustls refused the pair (unsupported key type, or the key does not belong to the leaf).
    #[error("certificate and key do not form a usable certificate: {0}")]
    Mismatch(String),
}

/// The trust anchors of a PEM CA bundle (every certificate of it, at least one).
///
/// # Errors
/// [`PemError::NoCertificate`], or [`PemError::Chain`] for a PEM section that cannot be read or a
/// certificate webpki cannot read as a trust anchor.
pub fn trust_anchors(pem: &[u8]) -> Result<RootCertStore, PemError> {
    let mut roots = RootCertStore::empty();
    for (index, der) in certificate_chain(pem)?.into_iter().enumerate() {
        roots.add(der).map_err(|e| {
            PemError::Chain(format!("certificate {index} cannot be a trust anchor: {e}"))
        })?;
    }
    Ok(roots)
}

/// The certificates of a PEM chain, in order (at least one).
///
/// # Errors
/// [`PemError::Chain`] or [`PemError::NoCertificate`].
pub fn certificate_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Chain(e.to_string()))?;
    if chain.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(chain)
}

/// Parses a PEM chain (leaf first) and its PEM private key, checking that they belong together.
///
/// # Errors
/// [`PemError`] saying which part is unusable.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, PemError> {
    let chain = certificate_chain(cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| PemError::Key(e.to_string()))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| PemError::Mismatch(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_unusable_part_is_named() {
        let provider = rustls::crypto::ring::default_provider();
        let a = rcgen::generate_simple_self_signed(vec!["a.test".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.test".into()]).unwrap();
        let (cert, key) = (a.cert.pem(), a.signing_key.serialize_pem());
        assert!(certified_key(cert.as_bytes(), key.as_bytes(), &provider).is_ok());
        let err = |c: &str, k: &str| certified_key(c.as_bytes(), k.as_bytes(), &provider).err();
        assert_eq!(err("", &key), Some(PemError::NoCertificate));
        assert!(matches!(err(&cert, ""), Some(PemError::Key(_))));
        let other_key = b.signing_key.serialize_pem();
        assert!(matches!(
            err(&cert, &other_key),
            Some(PemError::Mismatch(_))
        ));
    }

    #[test]
    fn a_ca_bundle_needs_certificates_that_parse() {
        let a = rcgen::generate_simple_self_signed(vec!["ca-a.test".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["ca-b.test".into()]).unwrap();
        let bundle = format!("{}{}", a.cert.pem(), b.cert.pem());
        assert_eq!(trust_anchors(bundle.as_bytes()).map(|r| r.len()), Ok(2));
        assert_eq!(
            trust_anchors(b"not a certificate").err(),
            Some(PemError::NoCertificate)
        );
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            trust_anchors(garbage.as_bytes()),
            Err(PemError::Chain(e)) if e.starts_with("certificate 0 cannot be a trust anchor")
        ));
    }
}
