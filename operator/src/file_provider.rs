//! Standalone mode's object source: a directory of YAML manifests, loaded recursively and watched.
//!
//! Every `*.yaml` / `*.yml` file under the directory (subdirectories included, names starting with
//! `.` skipped, symbolic links followed, at most [`MAX_DIR_DEPTH`] levels, files up to
//! [`MAX_FILE_SIZE`]) is parsed with [`parse_documents`](crate::objects::parse_documents). Changes are
//! picked up through `notify` and debounced; the directory is then rescanned, but only files whose
//! bytes changed are parsed again. Each change that alters something is published on a
//! `tokio::sync::watch` channel as a new [`LoadedState`] with a higher `generation`.
//!
//! Keep-last-good, per file: a file that is not valid YAML (or cannot be read) keeps the objects of
//! its last good version, and the error is reported; an object that is valid YAML but not a valid
//! object is reported and skipped, the rest of the file is used; a deleted file drops its objects.
//! When two documents define the same kind/namespace/name, the first (in path order) wins and the
//! other is reported. A file that suddenly reads empty is looked at again one debounce period later
//! before its objects are dropped, since writers that truncate and then write are common.
//!
//! Everything runs on a dedicated thread (`bulkhead-manifests`) and notify's own thread: the async
//! runtime is never blocked, and no runtime is needed at all.

use crate::objects::{parse_documents_positioned, LoadError, Object, ObjectKey, ObjectSet};
use notify::{EventKind, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A debounce that suits editors and `kubectl`-style tools writing several files.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);
/// Largest manifest file read; larger files are reported and skipped.
pub const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;
/// Deepest subdirectory level scanned.
pub const MAX_DIR_DEPTH: usize = 16;
/// Under a constant stream of changes, reload at least every this many debounce periods.
pub const MAX_DEBOUNCE_PERIODS: u32 = 10;
/// How often the watcher thread checks whether every receiver is gone.
const CLOSED_POLL: Duration = Duration::from_millis(500);

/// What the manifest directory holds right now.
#[derive(Debug, Clone, Default)]
pub struct LoadedState {
    /// Increases with every published change (1 for the initial load).
    pub generation: u64,
    /// Every valid object.
    pub objects: ObjectSet,
    /// Everything that was reported and skipped (or kept from a previous version).
    pub errors: Vec<LoadError>,
}

/// Why the provider could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The path is not a directory.
    #[error("{}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// The directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The directory could not be watched.
    #[error("watching {}: {source}", path.display())]
    Watch {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: notify::Error,
    },
    /// The blocking task of [`FileProvider::start_async`] failed.
    #[error("file provider start-up task failed: {0}")]
    Task(String),
}

/// The file provider.
#[derive(Debug)]
pub struct FileProvider;

impl FileProvider {
    /// Loads `dir` recursively, then watches it and reloads on change (debounced by `debounce`).
    /// The initial load happens on the calling thread (blocking file I/O): from async code, use
    /// [`FileProvider::start_async`]. The watcher stops when every receiver is dropped.
    pub fn start(
        dir: PathBuf,
        debounce: Duration,
    ) -> Result<watch::Receiver<Arc<LoadedState>>, ProviderError> {
        let meta = std::fs::metadata(&dir).map_err(|source| ProviderError::Io {
            path: dir.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(ProviderError::NotADirectory(dir));
        }
        let (events_tx, events_rx) = mpsc::channel::<()>();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                Ok(event) if is_change(&event.kind) => {
                    // The receiver is gone only when the provider thread stopped.
                    let _ = events_tx.send(());
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "manifest watcher error"),
            })
            .map_err(|source| ProviderError::Watch {
                path: dir.clone(),
                source,
            })?;
        watcher
            .watch(&dir, RecursiveMode::Recursive)
            .map_err(|source| ProviderError::Watch {
                path: dir.clone(),
                source,
            })?;

        let mut loader = Loader::new(dir.clone());
        let first = loader.reload(true).unwrap_or_default();
        log_state(&first);
        let (tx, rx) = watch::channel(Arc::new(first));
        std::thread::Builder::new()
            .name("bulkhead-manifests".into())
            .spawn(move || watch_loop(watcher, events_rx, loader, tx, debounce))
            .map_err(|source| ProviderError::Io { path: dir, source })?;
        Ok(rx)
    }

    /// [`FileProvider::start`] on a blocking thread, for async callers.
    pub async fn start_async(
        dir: PathBuf,
        debounce: Duration,
    ) -> Result<watch::Receiver<Arc<LoadedState>>, ProviderError> {
        tokio::task::spawn_blocking(move || Self::start(dir, debounce))
            .await
            .map_err(|e| ProviderError::Task(e.to_string()))?
    }

    /// Loads `dir` once, without watching: the objects and the errors.
    pub fn load_once(dir: &Path) -> Result<LoadedState, ProviderError> {
        let meta = std::fs::metadata(dir).map_err(|source| ProviderError::Io {
            path: dir.to_owned(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(ProviderError::NotADirectory(dir.to_owned()));
        }
        Ok(Loader::new(dir.to_owned()).reload(true).unwrap_or_default())
    }
}

/// Whether a notify event may mean a manifest changed (opening or reading a file does not).
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(notify::event::AccessKind::Close(notify::event::AccessMode::Write)) => {
            true
        }
        EventKind::Access(_) => false,
        _ => true,
    }
}

fn watch_loop(
    watcher: notify::RecommendedWatcher,
    events: mpsc::Receiver<()>,
    mut loader: Loader,
    tx: watch::Sender<Arc<LoadedState>>,
    debounce: Duration,
) {
    // Keeps the watcher alive as long as this thread runs.
    let _watcher = watcher;
    let mut recheck = false;
    loop {
        if !recheck {
            match events.recv_timeout(CLOSED_POLL) {
                Ok(()) => {}
                Err(RecvTimeoutError::Timeout) => {
                    if tx.is_closed() {
                        return;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let first = Instant::now();
        let limit = debounce.saturating_mul(MAX_DEBOUNCE_PERIODS);
        loop {
            match events.recv_timeout(debounce) {
                Ok(()) if first.elapsed() < limit => continue,
                Ok(()) | Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        if let Some(state) = loader.reload(false) {
            log_state(&state);
            if tx.send(Arc::new(state)).is_err() {
                return;
            }
        }
        recheck = loader.needs_recheck();
    }
}

fn log_state(state: &LoadedState) {
    tracing::info!(
        generation = state.generation,
        objects = state.objects.len(),
        errors = state.errors.len(),
        "manifests loaded"
    );
    for e in &state.errors {
        tracing::warn!("{e}");
    }
}

/// One file's last load.
#[derive(Clone)]
struct FileEntry {
    digest: [u8; 32],
    objects: Vec<(usize, Object)>,
    errors: Vec<LoadError>,
}

/// Reads the directory, remembering each file's last load.
pub(crate) struct Loader {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileEntry>,
    walk_errors: Vec<LoadError>,
    generation: u64,
    /// Files that were just found empty after holding objects: probably truncated by a writer
    /// that has not written yet, so they keep their objects until the next look.
    suspect_empty: BTreeSet<PathBuf>,
}

impl Loader {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            files: BTreeMap::new(),
            walk_errors: Vec::new(),
            generation: 0,
            suspect_empty: BTreeSet::new(),
        }
    }

    /// Whether a file must be looked at again after a debounce period even without an event.
    pub(crate) fn needs_recheck(&self) -> bool {
        !self.suspect_empty.is_empty()
    }

    /// Rescans; returns the new state when something changed (always when `force`).
    pub(crate) fn reload(&mut self, force: bool) -> Option<LoadedState> {
        let mut paths = Vec::new();
        let mut walk_errors = Vec::new();
        if let Err(e) = std::fs::read_dir(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "manifest directory unreadable; keeping the last configuration");
            return None;
        }
        scan(&self.dir, 0, &mut paths, &mut walk_errors);
        paths.sort();

        let mut changed = self.walk_errors != walk_errors;
        let mut files = BTreeMap::new();
        let mut suspect_empty = BTreeSet::new();
        for path in paths {
            let old = self.files.get(&path);
            let just_emptied = old.is_some_and(|o| !o.objects.is_empty())
                && std::fs::metadata(&path).is_ok_and(|m| m.len() == 0);
            if just_emptied && !self.suspect_empty.contains(&path) {
                if let Some(o) = old {
                    files.insert(path.clone(), o.clone());
                }
                suspect_empty.insert(path);
                continue;
            }
            let entry = load_file(&path, old);
            if old.is_none_or(|o| o.digest != entry.digest) {
                changed = true;
            }
            files.insert(path, entry);
        }
        if self.files.keys().any(|k| !files.contains_key(k)) {
            changed = true;
        }
        self.suspect_empty = suspect_empty;
        if !changed && !force {
            return None;
        }
        self.files = files;
        self.walk_errors = walk_errors;
        self.generation += 1;
        Some(self.state())
    }

    fn state(&self) -> LoadedState {
        let mut errors = self.walk_errors.clone();
        let mut seen: BTreeMap<ObjectKey, (PathBuf, usize)> = BTreeMap::new();
        let mut objects = Vec::new();
        for (path, entry) in &self.files {
            errors.extend(entry.errors.iter().cloned());
            for (doc, object) in &entry.objects {
                let key = object.key();
                if let Some((first_file, first_doc)) = seen.get(&key) {
                    errors.push(LoadError {
                        file: path.clone(),
                        document: *doc,
                        kind: Some(key.kind.as_str().to_owned()),
                        name: Some(if key.namespace.is_empty() {
                            key.name.clone()
                        } else {
                            format!("{}/{}", key.namespace, key.name)
                        }),
                        field: None,
                        message: format!(
                            "duplicate object: already defined in {} document {first_doc} (that one is used)",
                            first_file.display()
                        ),
                        syntax: false,
                    });
                    continue;
                }
                seen.insert(key, (path.clone(), *doc));
                objects.push(object.clone());
            }
        }
        LoadedState {
            generation: self.generation,
            objects: ObjectSet::from_objects(objects),
            errors,
        }
    }
}

/// Loads one file; on an unreadable file or a YAML syntax error, keeps `old`'s objects.
fn load_file(path: &Path, old: Option<&FileEntry>) -> FileEntry {
    let bytes = match read_limited(path) {
        Ok(b) => b,
        Err(message) => {
            let digest = Sha256::digest(message.as_bytes()).into();
            return kept(path, old, digest, vec![file_error(path, message)]);
        }
    };
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    if let Some(o) = old.filter(|o| o.digest == digest) {
        return o.clone();
    }
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(_) => {
            return kept(
                path,
                old,
                digest,
                vec![file_error(path, "not UTF-8 text".into())],
            )
        }
    };
    let (objects, errors) = parse_documents_positioned(path, &text);
    if errors.iter().any(|e| e.syntax) {
        if let Some(o) = old {
            let errors = errors
                .into_iter()
                .map(|mut e| {
                    if e.syntax {
                        e.message
                            .push_str(" (the file's previous objects are kept)");
                    }
                    e
                })
                .collect();
            return FileEntry {
                digest,
                objects: o.objects.clone(),
                errors,
            };
        }
    }
    FileEntry {
        digest,
        objects,
        errors,
    }
}

fn kept(
    path: &Path,
    old: Option<&FileEntry>,
    digest: [u8; 32],
    mut errors: Vec<LoadError>,
) -> FileEntry {
    if old.is_some() {
        for e in &mut errors {
            e.message
                .push_str(" (the file's previous objects are kept)");
        }
    }
    tracing::debug!(file = %path.display(), "keeping last good objects");
    FileEntry {
        digest,
        objects: old.map(|o| o.objects.clone()).unwrap_or_default(),
        errors,
    }
}

fn file_error(path: &Path, message: String) -> LoadError {
    LoadError {
        file: path.to_owned(),
        document: 0,
        kind: None,
        name: None,
        field: None,
        message,
        syntax: true,
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_FILE_SIZE {
        return Err(format!("file is larger than {MAX_FILE_SIZE} bytes"));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

/// Collects manifest files under `dir`.
fn scan(dir: &Path, depth: usize, out: &mut Vec<PathBuf>, errors: &mut Vec<LoadError>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(file_error(dir, format!("cannot read directory: {e}")));
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follows symbolic links (ConfigMap volumes are made of them).
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if depth + 1 >= MAX_DIR_DEPTH {
                errors.push(file_error(
                    &path,
                    format!("deeper than {MAX_DIR_DEPTH} levels; skipped"),
                ));
            } else {
                scan(&path, depth + 1, out, errors);
            }
        } else if meta.is_file() && is_manifest(&name) {
            out.push(path);
        }
    }
}

fn is_manifest(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const TENANT: &str = "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata:\n  name: acme\nspec:\n  namespace: acme\n  hostnames: [\"*.acme.test\"]\n";

    fn route(name: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {name}\n  namespace: acme\nspec:\n  parentRefs: [{{name: web}}]\n"
        )
    }

    fn names(state: &LoadedState) -> Vec<String> {
        state
            .objects
            .http_routes
            .iter()
            .map(|r| r.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn initial_load_reads_nested_yaml_and_skips_hidden_and_other_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("tenant.yaml"), TENANT).unwrap();
        fs::create_dir_all(dir.path().join("routes/deeper")).unwrap();
        fs::write(dir.path().join("routes/deeper/a.yml"), route("a")).unwrap();
        fs::write(dir.path().join(".hidden.yaml"), route("hidden")).unwrap();
        fs::write(dir.path().join("notes.txt"), route("txt")).unwrap();
        let state = FileProvider::load_once(dir.path()).unwrap();
        assert_eq!(state.generation, 1);
        assert_eq!(state.objects.tenants.len(), 1);
        assert_eq!(names(&state), vec!["a"]);
        assert!(state.errors.is_empty(), "{:?}", state.errors);
    }

    #[test]
    fn broken_yaml_keeps_the_files_last_good_objects_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.yaml");
        fs::write(&file, format!("{}---\n{}", route("a"), route("b"))).unwrap();
        let mut loader = Loader::new(dir.path().to_owned());
        let first = loader.reload(true).unwrap();
        assert_eq!(names(&first), vec!["a", "b"]);

        fs::write(&file, "kind: HTTPRoute\n  metadata: [unclosed\n").unwrap();
        let second = loader.reload(false).expect("a change is published");
        assert_eq!(names(&second), vec!["a", "b"], "last good objects kept");
        assert_eq!(second.errors.len(), 1);
        assert!(second.errors[0].syntax);
        assert!(
            second.errors[0].to_string().contains("routes.yaml"),
            "{}",
            second.errors[0]
        );
        assert!(second.errors[0]
            .message
            .contains("previous objects are kept"));

        assert!(loader.reload(false).is_none(), "nothing changed since");

        fs::write(&file, route("c")).unwrap();
        let third = loader.reload(false).unwrap();
        assert_eq!(names(&third), vec!["c"]);
        assert!(third.errors.is_empty());
        assert_eq!(third.generation, 3);
    }

    #[test]
    fn broken_new_file_contributes_nothing_but_the_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("bad.yaml"), "a: [1, 2\n").unwrap();
        let state = FileProvider::load_once(dir.path()).unwrap();
        assert!(state.objects.is_empty());
        assert_eq!(state.errors.len(), 1);
    }

    #[test]
    fn invalid_object_is_skipped_and_the_rest_of_the_file_used() {
        let dir = tempfile::tempdir().unwrap();
        let bad = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: web, namespace: acme}\nspec:\n  gatewayClassName: bulkhead\n  listeners:\n  - name: http\n    protocol: HTTP\n    port: eighty\n";
        fs::write(
            dir.path().join("all.yaml"),
            format!("{}---\n{bad}---\n{}", route("a"), route("b")),
        )
        .unwrap();
        let state = FileProvider::load_once(dir.path()).unwrap();
        assert_eq!(names(&state), vec!["a", "b"]);
        assert!(state.objects.gateways.is_empty());
        assert_eq!(state.errors.len(), 1);
        let e = &state.errors[0];
        assert_eq!(e.document, 2);
        assert_eq!(e.kind.as_deref(), Some("Gateway"));
        assert_eq!(e.name.as_deref(), Some("acme/web"));
        assert_eq!(e.field.as_deref(), Some("spec.listeners[0].port"));
    }

    #[test]
    fn duplicates_across_files_keep_the_first_and_report_the_other() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.yaml"), route("same")).unwrap();
        fs::write(dir.path().join("b.yaml"), route("same")).unwrap();
        let state = FileProvider::load_once(dir.path()).unwrap();
        assert_eq!(names(&state), vec!["same"]);
        assert_eq!(state.errors.len(), 1);
        assert!(state.errors[0].file.ends_with("b.yaml"));
        assert!(state.errors[0].message.contains("duplicate"));
    }

    #[test]
    fn a_file_found_empty_keeps_its_objects_until_the_next_look() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.yaml");
        fs::write(&file, route("a")).unwrap();
        let mut loader = Loader::new(dir.path().to_owned());
        loader.reload(true).unwrap();

        fs::write(&file, "").unwrap();
        assert!(
            loader.reload(false).is_none(),
            "a truncated file is not trusted at once"
        );
        assert!(loader.needs_recheck());

        let emptied = loader.reload(false).expect("still empty: taken as meant");
        assert!(names(&emptied).is_empty());
        assert!(!loader.needs_recheck());
    }

    #[test]
    fn start_rejects_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(
            FileProvider::start(missing, DEFAULT_DEBOUNCE),
            Err(ProviderError::Io { .. })
        ));
        let file = dir.path().join("f.yaml");
        fs::write(&file, "").unwrap();
        assert!(matches!(
            FileProvider::start(file, DEFAULT_DEBOUNCE),
            Err(ProviderError::NotADirectory(_))
        ));
    }

    /// Waits (bounded) until the published state satisfies `pred`.
    async fn wait_for(
        rx: &mut watch::Receiver<Arc<LoadedState>>,
        pred: impl Fn(&LoadedState) -> bool,
    ) -> Arc<LoadedState> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let current = rx.borrow_and_update().clone();
            if pred(&current) {
                return current;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => panic!("provider stopped"),
                Err(_) => panic!("no matching state published; last: {:?}", names(&current)),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watcher_publishes_edits_additions_and_deletions() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("tenant.yaml"), TENANT).unwrap();
        fs::write(dir.path().join("a.yaml"), route("a")).unwrap();
        let mut rx = FileProvider::start_async(dir.path().to_owned(), Duration::from_millis(20))
            .await
            .unwrap();
        let first = rx.borrow_and_update().clone();
        assert_eq!(first.generation, 1);
        assert_eq!(names(&first), vec!["a"]);

        fs::write(dir.path().join("a.yaml"), route("a2")).unwrap();
        let s = wait_for(&mut rx, |s| names(s) == vec!["a2"]).await;
        assert!(s.generation > 1);

        fs::create_dir_all(dir.path().join("team/nested")).unwrap();
        fs::write(dir.path().join("team/nested/b.yaml"), route("b")).unwrap();
        wait_for(&mut rx, |s| names(s) == vec!["a2", "b"]).await;

        fs::write(
            dir.path().join("a.yaml"),
            "kind: HTTPRoute\nmetadata: [unclosed\n",
        )
        .unwrap();
        let s = wait_for(&mut rx, |s| !s.errors.is_empty()).await;
        assert_eq!(
            names(&s),
            vec!["a2", "b"],
            "broken file keeps its last good objects"
        );

        fs::remove_file(dir.path().join("a.yaml")).unwrap();
        let s = wait_for(&mut rx, |s| names(s) == vec!["b"]).await;
        assert!(s.errors.is_empty(), "the deleted file's error went with it");
        assert_eq!(s.objects.tenants.len(), 1);
    }
}
