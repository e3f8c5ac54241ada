//! Bootstrap snapshots: the file a data-plane process serves until the operator answers.
//!
//! In a cluster the operator keeps each tenant's last snapshot in a ConfigMap mounted into its
//! routers; a router restarted while the operator is down serves it instead of nothing. The file is
//! JSON (as [`write_bootstrap`] writes it) or YAML (a document starting with anything but `{`), at
//! most [`MAX_BOOTSTRAP_LEN`] bytes. Writes are atomic: a temporary file in the same directory,
//! flushed to disk, then renamed over the target, so a reader never sees half a snapshot.

use crate::limits::MAX_BOOTSTRAP_LEN;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a bootstrap file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The file could not be read or written.
    #[error("bootstrap file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_BOOTSTRAP_LEN`].
    #[error("bootstrap file {path} is {len} bytes, more than the limit of {MAX_BOOTSTRAP_LEN}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The content is not a snapshot of the expected type.
    #[error("bootstrap file {path} is not a valid snapshot: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The JSON or YAML error.
        reason: String,
    },
    /// The snapshot could not be serialised.
    #[error("snapshot cannot be serialised: {0}")]
    Encode(#[from] serde_json::Error),
    /// The blocking file task failed.
    #[error("bootstrap file task failed: {0}")]
    Task(String),
}

impl BootstrapError {
    /// Whether the file simply does not exist (a first start, not a fault).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Reads and parses a bootstrap snapshot (JSON or YAML), off the async runtime's worker threads.
pub async fn read_bootstrap<T: DeserializeOwned + Send + 'static>(
    path: &Path,
) -> Result<T, BootstrapError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || read_blocking(&path))
        .await
        .map_err(|e| BootstrapError::Task(e.to_string()))?
}

fn read_blocking<T: DeserializeOwned>(path: &Path) -> Result<T, BootstrapError> {
    let io = |source| BootstrapError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_BOOTSTRAP_LEN as u64 {
        return Err(BootstrapError::TooLarge {
            path: path.to_path_buf(),
            len,
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    parse(&bytes).map_err(|reason| BootstrapError::Invalid {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parses JSON when the document starts with `{`, YAML otherwise.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let json = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if json {
        serde_json::from_slice(bytes).map_err(|e| format!("JSON: {e}"))
    } else {
        serde_yaml::from_slice(bytes).map_err(|e| format!("YAML: {e}"))
    }
}

/// Writes `snapshot` as JSON to `path` atomically (temporary file, fsync, rename), off the async
/// runtime's worker threads. The directory must exist.
pub async fn write_bootstrap<T: Serialize + ?Sized>(
    path: &Path,
    snapshot: &T,
) -> Result<(), BootstrapError> {
    let json = serde_json::to_vec(snapshot)?;
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || write_blocking(&path, &json))
        .await
        .map_err(|e| BootstrapError::Task(e.to_string()))?
}

fn write_blocking(path: &Path, bytes: &[u8]) -> Result<(), BootstrapError> {
    let io = |source| BootstrapError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".bootstrap-")
        .tempfile_in(dir)
        .map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    // Make the rename itself durable; not every filesystem supports syncing a directory.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn written_snapshot_reads_back_and_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.json");
        let mut m = BTreeMap::from([("version".to_string(), 1u64)]);
        write_bootstrap(&path, &m).await.unwrap();
        m.insert("version".into(), 2);
        write_bootstrap(&path, &m).await.unwrap();
        let back: BTreeMap<String, u64> = read_bootstrap(&path).await.unwrap();
        assert_eq!(back, m);
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }

    #[tokio::test]
    async fn yaml_is_accepted_and_errors_are_typed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.yaml");
        std::fs::write(&path, "version: 3\n").unwrap();
        let back: BTreeMap<String, u64> = read_bootstrap(&path).await.unwrap();
        assert_eq!(back["version"], 3);

        std::fs::write(&path, "{ not json").unwrap();
        let err = read_bootstrap::<BTreeMap<String, u64>>(&path)
            .await
            .unwrap_err();
        assert!(matches!(err, BootstrapError::Invalid { .. }), "{err}");

        let missing = read_bootstrap::<BTreeMap<String, u64>>(&dir.path().join("nope"))
            .await
            .unwrap_err();
        assert!(missing.is_not_found());
    }
}
