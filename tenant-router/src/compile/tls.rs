//! TLS termination: certificates parsed from the snapshot's PEM, and a rustls [`ResolvesServerCert`]
//! that picks the certificate by SNI through a [`HostTable`] (exact, longest wildcard, then `*`, which
//! also serves clients that send no SNI).
//!
//! A listener with frontend validation ([`ClientValidation`]) gets its own server configuration
//! ([`ClientAuth`]), chosen by the same SNI before the handshake: it asks for the client's
//! certificate and verifies it against the listener's CA bundle with webpki. `AllowValidOnly`
//! fails the handshake without a certificate that verifies; `AllowInsecureFallback` completes it
//! anyway, and only a certificate that verifies (checked again after the handshake) gives the
//! connection an identity ([`crate::client_cert`]).

use crate::error::CompileError;
use bulkhead_hostmatch::{normalize_host, HostPattern, HostTable};
use bulkhead_snapshot::{Certificate, ClientValidation, ClientValidationMode};
use http::HeaderValue;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConnection, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
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

    /// Whether it holds no certificate.
    pub(crate) fn is_empty(&self) -> bool {
        self.table.is_empty()
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
/// ([`ALPN_PROTOCOLS`] for HTTP; none for TLS-terminated TCP, whose clients may offer anything),
/// asking for client certificates when `client_verifier` is set.
pub(crate) fn server_config(
    resolver: Arc<SniResolver>,
    provider: Arc<CryptoProvider>,
    alpn: &[&[u8]],
    resumption: bool,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<Arc<rustls::ServerConfig>, CompileError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CompileError::Certificate {
            id: "*".into(),
            reason: e.to_string(),
        })?;
    let builder = match client_verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    if !resumption {
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(Arc::new(config))
}

/// The client certificate validation of one HTTPS listener, compiled.
#[derive(Debug)]
pub(crate) struct ClientAuth {
    /// The server configuration its connections are handshaken with.
    pub(crate) tls: Arc<rustls::ServerConfig>,
    /// The strict verifier, to check again after an `AllowInsecureFallback` handshake.
    verifier: Arc<dyn ClientCertVerifier>,
    mode: ClientValidationMode,
    /// What it was compiled from: a connection keeps it, and its requests are misdirected once
    /// the listener's validation differs ([`crate::http`]'s host checks).
    pub(crate) terms: Arc<ClientValidation>,
}

impl ClientAuth {
    /// Compiles the validation of listener `listener`, sharing the SNI `resolver` of the router's
    /// HTTPS configuration.
    pub(crate) fn new(
        listener: &str,
        validation: &ClientValidation,
        resolver: Arc<SniResolver>,
        provider: &Arc<CryptoProvider>,
        resumption: bool,
    ) -> Result<Self, CompileError> {
        let invalid = |reason: String| CompileError::ClientValidation {
            listener: listener.to_owned(),
            reason,
        };
        let roots = bulkhead_snapshot::pem::trust_anchors(validation.ca_pem.as_bytes())
            .map_err(|e| invalid(e.to_string()))?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
                .build()
                .map_err(|e| invalid(e.to_string()))?;
        let offered: Arc<dyn ClientCertVerifier> = match validation.mode {
            ClientValidationMode::AllowValidOnly => Arc::clone(&verifier),
            ClientValidationMode::AllowInsecureFallback => Arc::new(InsecureFallback {
                strict: Arc::clone(&verifier),
            }),
        };
        let tls = server_config(
            resolver,
            Arc::clone(provider),
            &ALPN_PROTOCOLS,
            resumption,
            Some(offered),
        )?;
        Ok(Self {
            tls,
            verifier,
            mode: validation.mode,
            terms: Arc::new(validation.clone()),
        })
    }

    /// The identity header value of a handshaken connection: `Some` only when the client
    /// presented a certificate that verifies against the listener's CA bundle.
    pub(crate) fn identity(&self, conn: &ServerConnection) -> Option<HeaderValue> {
        let (leaf, intermediates) = conn.peer_certificates()?.split_first()?;
        if self.mode == ClientValidationMode::AllowInsecureFallback
            && self
                .verifier
                .verify_client_cert(leaf, intermediates, UnixTime::now())
                .is_err()
        {
            return None;
        }
        crate::client_cert::identity(leaf)
    }
}

/// `AllowInsecureFallback`: asks for a certificate, never requires one, and completes the
/// handshake whatever the chain; the signature proving the client holds the key is still checked.
/// The chain is verified again after the handshake ([`ClientAuth::identity`]) to decide whether
/// the connection has an identity.
#[derive(Debug)]
struct InsecureFallback {
    strict: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for InsecureFallback {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.strict.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.strict.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.strict.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.strict.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(resumption: bool) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        server_config(
            Arc::new(SniResolver::new(HostTable::new())),
            provider,
            &ALPN_PROTOCOLS,
            resumption,
            None,
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
