//! The snapshot server's certificate, re-read when its files change.
//!
//! In a cluster the certificate comes from a mounted Secret that cert-manager (or an admin)
//! renews in place; the kubelet swaps the files under the running pod. [`ReloadingCert`] serves
//! the current pair to each new TLS handshake, and [`watch_cert_files`] checks the files' metadata
//! every interval and swaps in a changed pair once it parses and its key matches the certificate.
//! A pair that does not is logged and skipped: the previous one keeps serving. Open connections
//! keep the certificate they were accepted with.

use crate::tls::{TlsError, ALPN_H2};
use rustls::crypto::ring::default_provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// How often [`watch_cert_files`] looks at the files by default.
pub const DEFAULT_CERT_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// The server certificate every new handshake gets; replaceable while the server runs.
#[derive(Debug)]
pub struct ReloadingCert {
    /// The pair served, and a digest of the PEM text it came from.
    current: RwLock<(Arc<CertifiedKey>, u64)>,
}

impl ReloadingCert {
    /// Parses a PEM certificate chain (leaf first) and its PEM private key.
    ///
    /// # Errors
    /// [`TlsError`] when either does not parse or the key does not belong to the certificate.
    pub fn new(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        Ok(Self {
            current: RwLock::new((
                Arc::new(certified_key(cert_chain_pem, key_pem)?),
                digest(cert_chain_pem, key_pem),
            )),
        })
    }

    /// Serves this pair to the handshakes from now on; `Ok(false)` when it is the pair already
    /// served (same PEM text).
    ///
    /// # Errors
    /// As [`ReloadingCert::new`]; the current pair is kept.
    pub fn replace(&self, cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<bool, TlsError> {
        let digest = digest(cert_chain_pem, key_pem);
        if self.read().1 == digest {
            return Ok(false);
        }
        let key = Arc::new(certified_key(cert_chain_pem, key_pem)?);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (key, digest);
        Ok(true)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, (Arc<CertifiedKey>, u64)> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A server TLS configuration (ALPN `h2`) whose certificate is this one's current pair.
    ///
    /// # Errors
    /// When rustls refuses the protocol versions (never with the ring provider).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.read().0))
    }
}

fn digest(cert_chain_pem: &[u8], key_pem: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    cert_chain_pem.hash(&mut hasher);
    key_pem.hash(&mut hasher);
    hasher.finish()
}

fn certified_key(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    Ok(bulkhead_snapshot::pem::certified_key(
        cert_chain_pem,
        key_pem,
        &default_provider(),
    )?)
}

/// The server's TLS configuration from a PEM certificate chain (leaf first) and its PEM private key
/// (a [`ReloadingCert`] that is never replaced).
///
/// # Errors
/// [`TlsError`] when either does not parse or the key does not belong to the certificate.
pub fn server_tls_config(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, TlsError> {
    Arc::new(ReloadingCert::new(cert_chain_pem, key_pem)?).server_config()
}

/// The certificate and key files of a [`ReloadingCert`].
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// What identifies a version of a file: modification time, length and inode (symbolic links,
/// as in a mounted Secret, are followed); `None` when it cannot be read.
pub type Stamp = Option<(SystemTime, u64, u64)>;

/// The current [`Stamp`] of `path`.
pub async fn stamp(path: &Path) -> Stamp {
    stamp_of(&tokio::fs::metadata(path).await.ok()?)
}

/// The current [`Stamp`] of `path`, read on the calling thread (blocking: not for a runtime's
/// workers).
pub fn stamp_now(path: &Path) -> Stamp {
    stamp_of(&std::fs::metadata(path).ok()?)
}

fn stamp_of(meta: &std::fs::Metadata) -> Stamp {
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let ino = 0;
    Some((meta.modified().ok()?, meta.len(), ino))
}

/// Reads `paths` every `every` whenever one of them changed (by [`Stamp`]) and hands their
/// contents to `on_change`, in order, until `stop` completes. The first check reads them whatever
/// their metadata, so a change made while the caller was loading them is not missed; `on_change`
/// must treat contents it already has as no change. A file that cannot be read is logged and
/// skipped until it changes again.
pub async fn watch_files(
    paths: Vec<PathBuf>,
    every: Duration,
    mut on_change: impl FnMut(Vec<Vec<u8>>) + Send,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    // Unknown until the first check reads the files.
    let mut seen: Option<Vec<Stamp>> = None;
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(every) => {}
        }
        let mut now = Vec::with_capacity(paths.len());
        for path in &paths {
            now.push(stamp(path).await);
        }
        if seen.as_ref() == Some(&now) {
            continue;
        }
        seen = Some(now);
        let mut contents = Vec::with_capacity(paths.len());
        for path in &paths {
            match tokio::fs::read(path).await {
                Ok(bytes) => contents.push(bytes),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "watched file unreadable; keeping what was loaded");
                    break;
                }
            }
        }
        if contents.len() == paths.len() {
            on_change(contents);
        }
    }
}

/// Checks `files` every `every` and loads a changed pair into `cert`, until `stop` completes
/// (see [`watch_files`]). Each change is logged; `on_reload` is told whether a changed pair was
/// taken (`true`) or refused (`false`), for metrics.
pub async fn watch_cert_files(
    files: CertFiles,
    cert: Arc<ReloadingCert>,
    every: Duration,
    on_reload: impl Fn(bool) + Send,
    stop: impl Future<Output = ()>,
) {
    let label = files.cert.display().to_string();
    watch_files(
        vec![files.cert, files.key],
        every,
        move |contents| match cert.replace(&contents[0], &contents[1]) {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(cert = %label, "snapshot server certificate reloaded");
                on_reload(true);
            }
            Err(e) => {
                tracing::warn!(cert = %label, error = %e, "changed snapshot server certificate refused; the previous one keeps serving");
                on_reload(false);
            }
        },
        stop,
    )
    .await;
}
