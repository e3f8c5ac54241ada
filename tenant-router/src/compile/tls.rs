//! TLS termination: certificates parsed from the snapshot's PEM, and a rustls [`ResolvesServerCert`]
//! that picks the certificate by SNI through a [`HostTable`] (exact, longest wildcard, then `*`, which
//! also serves clients that send no SNI).

use crate::error::CompileError;
use bulkhead_hostmatch::{normalize_host, HostPattern, HostTable};
use bulkhead_snapshot::Certificate;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// ALPN protocols offered on terminated TLS, in preference order.
pub(crate) const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Parses one certificate chain and key with the snapshot contract's
/// [`bulkhead_snapshot::pem::certified_key`], checking that they belong together.
pub(crate) fn certified_key(
    id: &str,
    cert: &Certificate,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, CompileError> {
    bulkhead_snapshot::pem::certified_key(
        cert.cert_pem.as_bytes(),
        cert.key_pem.as_bytes(),
        provider,
    )
    .map(Arc::new)
    .map_err(|e| CompileError::Certificate {
        id: id.to_owned(),
        reason: e.to_string(),
    })
}

/// Parsed certificates by content (SHA-256 of chain and key), shared by every live configuration.
/// Each snapshot carries all of a tenant's certificates, so without it every route change would
/// parse every key again (1,000 certificates: about 35 ms); with it only new or renewed ones are.
#[derive(Debug, Default)]
pub(crate) struct CertificateCache {
    keys: Mutex<HashMap<[u8; 32], Weak<CertifiedKey>>>,
    /// Pairs parsed so far (for tests).
    #[cfg(test)]
    parsed: std::sync::atomic::AtomicUsize,
}

impl CertificateCache {
    /// The parsed `cert`: the one a live configuration already holds for the same chain and key,
    /// else parsed now (see [`certified_key`]).
    pub(crate) fn get(
        &self,
        id: &str,
        cert: &Certificate,
        provider: &CryptoProvider,
    ) -> Result<Arc<CertifiedKey>, CompileError> {
        let digest = cert.content_digest();
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = keys.get(&digest).and_then(Weak::upgrade) {
            return Ok(key);
        }
        let key = certified_key(id, cert, provider)?;
        #[cfg(test)]
        self.parsed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        keys.insert(digest, Arc::downgrade(&key));
        Ok(key)
    }

    /// Forgets certificates no configuration uses any more.
    pub(crate) fn prune(&self) {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, k| k.strong_count() > 0);
    }

    /// Number of pairs parsed so far (for tests).
    #[cfg(test)]
    pub(crate) fn parsed(&self) -> usize {
        self.parsed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Number of certificates held (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
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

    fn self_signed(name: &str) -> Certificate {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("rcgen");
        Certificate {
            cert_pem: c.cert.pem(),
            key_pem: c.signing_key.serialize_pem(),
        }
    }

    #[test]
    fn the_cache_parses_each_chain_and_key_once_while_a_configuration_holds_it() {
        let provider = rustls::crypto::ring::default_provider();
        let cache = CertificateCache::default();
        let a = self_signed("a.test");
        let first = cache.get("acme/a", &a, &provider).expect("parsed");
        let again = cache
            .get("acme/other-id", &a.clone(), &provider)
            .expect("cached");
        assert!(Arc::ptr_eq(&first, &again), "same content, same parsed key");

        // A renewed certificate under the same id is parsed anew.
        let renewed = self_signed("a.test");
        let fresh = cache.get("acme/a", &renewed, &provider).expect("parsed");
        assert!(!Arc::ptr_eq(&first, &fresh));
        assert_eq!(cache.len(), 2);

        drop((first, again));
        cache.prune();
        assert_eq!(cache.len(), 1, "only the renewed one is still held");
        drop(fresh);
        cache.prune();
        assert_eq!(cache.len(), 0);

        let bad = Certificate {
            cert_pem: a.cert_pem.clone(),
            key_pem: renewed.key_pem.clone(),
        };
        assert!(
            cache.get("acme/bad", &bad, &provider).is_err(),
            "mismatched key refused"
        );
        assert_eq!(cache.len(), 0, "nothing cached for a refused pair");
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
