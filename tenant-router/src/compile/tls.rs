//! TLS termination: certificates parsed from the snapshot's PEM, and a rustls [`ResolvesServerCert`]
//! that picks the certificate by SNI through a [`HostTable`] (exact, longest wildcard, then `*`, which
//! also serves clients that send no SNI).

use crate::error::CompileError;
use bulkhead_crds::snapshot::Certificate;
use bulkhead_hostmatch::{normalize_host, HostPattern, HostTable};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// ALPN protocols offered on terminated TLS, in preference order.
pub(crate) const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Parses one certificate chain and key, checking that they belong together.
pub(crate) fn certified_key(
    id: &str,
    cert: &Certificate,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, CompileError> {
    let bad = |reason: String| CompileError::Certificate {
        id: id.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(bad("certificate PEM holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        .map_err(|e| bad(format!("private key PEM: {e}")))?;
    let ck = CertifiedKey::from_der(chain, key, provider).map_err(|e| bad(e.to_string()))?;
    Ok(Arc::new(ck))
}

/// Chooses the certificate by SNI.
#[derive(Debug)]
pub(crate) struct SniResolver {
    table: HostTable<Arc<CertifiedKey>>,
}

impl SniResolver {
    /// A resolver over SNI pattern → certificate.
    pub(crate) fn new(table: HostTable<Arc<CertifiedKey>>) -> Self {
        Self { table }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match hello.server_name().map(normalize_host) {
            Some(Ok(name)) => self.table.lookup(&name).cloned(),
            Some(Err(_)) => None,
            None => self.table.get_pattern(&HostPattern::Any).cloned(),
        }
    }
}

/// A rustls server configuration (ring provider, TLS 1.2 and 1.3) offering the `alpn` protocols
/// ([`ALPN_PROTOCOLS`] for HTTP; none for TLS-terminated TCP, whose clients may offer anything).
pub(crate) fn server_config(
    resolver: SniResolver,
    provider: Arc<CryptoProvider>,
    alpn: &[&[u8]],
    resumption: bool,
) -> Result<Arc<rustls::ServerConfig>, CompileError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CompileError::Certificate {
            id: "*".into(),
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    if !resumption {
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(resumption: bool) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        server_config(
            SniResolver::new(HostTable::new()),
            provider,
            &ALPN_PROTOCOLS,
            resumption,
        )
        .expect("config")
    }

    #[test]
    fn resumption_can_be_turned_off_for_full_handshake_measurements() {
        let on = config(true);
        assert!(on.send_tls13_tickets > 0);
        assert!(on.session_storage.can_cache());
        let off = config(false);
        assert_eq!(off.send_tls13_tickets, 0);
        assert!(!off.session_storage.can_cache());
    }
}
