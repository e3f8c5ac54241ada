//! Readiness: a process is ready when every component it registered says it serves its current snapshot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// One component's readiness, set by the component (e.g. "router acme serves its current snapshot").
#[derive(Debug, Clone)]
pub struct ReadyFlag {
    name: Arc<str>,
    ready: Arc<AtomicBool>,
    detail: Arc<Mutex<String>>,
}

impl ReadyFlag {
    /// A flag that starts not ready.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            ready: Arc::new(AtomicBool::new(false)),
            detail: Arc::default(),
        }
    }

    /// Sets what `/readyz` says about the component besides ready or not (empty: nothing), e.g.
    /// a part it serves degraded.
    pub fn set_detail(&self, detail: String) {
        *self.detail.lock().unwrap_or_else(PoisonError::into_inner) = detail;
    }

    /// The component's detail (empty: none).
    pub fn detail(&self) -> String {
        self.detail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Marks the component ready or not.
    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether the component is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The component's name, as `/readyz` reports it.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The set of components whose readiness makes up the process's readiness.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    flags: Arc<Mutex<Vec<ReadyFlag>>>,
}

impl Readiness {
    /// An empty set (ready until a flag is registered and is not ready; see [`Readiness::is_ready`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates, registers and returns a new flag (not ready).
    pub fn flag(&self, name: impl Into<Arc<str>>) -> ReadyFlag {
        let f = ReadyFlag::new(name);
        self.flags
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(f.clone());
        f
    }

    /// Unregisters every flag with this name (a removed tenant, say).
    pub fn remove(&self, name: &str) {
        self.flags
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|f| f.name() != name);
    }

    /// Ready when at least one flag is registered and every registered flag is ready.
    pub fn is_ready(&self) -> bool {
        let flags = self.flags.lock().unwrap_or_else(PoisonError::into_inner);
        !flags.is_empty() && flags.iter().all(ReadyFlag::is_ready)
    }

    /// `name: detail` of every component with a detail.
    pub fn details(&self) -> Vec<String> {
        self.flags
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|f| {
                let detail = f.detail();
                (!detail.is_empty()).then(|| format!("{}: {detail}", f.name()))
            })
            .collect()
    }

    /// The names of the components that are not ready.
    pub fn not_ready(&self) -> Vec<String> {
        self.flags
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|f| !f.is_ready())
            .map(|f| f.name().to_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_flag_is_ready() {
        let r = Readiness::new();
        assert!(!r.is_ready(), "nothing registered is not ready");
        let a = r.flag("edge");
        let b = r.flag("router/acme");
        a.set(true);
        assert!(!r.is_ready());
        assert_eq!(r.not_ready(), vec!["router/acme".to_string()]);
        b.set(true);
        assert!(r.is_ready());
        r.remove("router/acme");
        assert!(r.is_ready());
        a.set_detail("degraded kinds: TCPRoute".into());
        assert!(r.is_ready(), "a detail does not change readiness");
        assert_eq!(
            r.details(),
            vec!["edge: degraded kinds: TCPRoute".to_string()]
        );
    }
}
