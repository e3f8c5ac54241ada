//! Load balancing: a weighted random choice among a rule's backends, then power-of-two-choices on
//! outstanding requests among the chosen backend's endpoints.
//!
//! Endpoint load counters ([`EndpointState`]) outlive snapshot swaps: an [`EndpointRegistry`] hands the
//! same counter to every configuration that names the same address, so a swap never forgets the load.

use bulkhead_crds::snapshot::BackendProtocol;
use rand::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// One backend endpoint and the number of requests in flight to it.
#[derive(Debug)]
pub(crate) struct EndpointState {
    /// The endpoint's address.
    pub(crate) addr: SocketAddr,
    outstanding: AtomicUsize,
}

impl EndpointState {
    /// Requests in flight.
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Counts one more request in flight until the guard is dropped.
    pub(crate) fn start(self: &Arc<Self>) -> OutstandingGuard {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        OutstandingGuard(Arc::clone(self))
    }
}

/// Decrements an endpoint's in-flight count when dropped.
#[derive(Debug)]
pub(crate) struct OutstandingGuard(Arc<EndpointState>);

impl Drop for OutstandingGuard {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Hands out one shared [`EndpointState`] per address, for as long as any configuration uses it.
#[derive(Debug, Default)]
pub(crate) struct EndpointRegistry {
    states: Mutex<HashMap<SocketAddr, Weak<EndpointState>>>,
}

impl EndpointRegistry {
    /// The state for `addr`, shared with every live configuration that names it.
    pub(crate) fn get(&self, addr: SocketAddr) -> Arc<EndpointState> {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = states.get(&addr).and_then(Weak::upgrade) {
            return state;
        }
        let state = Arc::new(EndpointState {
            addr,
            outstanding: AtomicUsize::new(0),
        });
        states.insert(addr, Arc::downgrade(&state));
        state
    }

    /// Forgets addresses no configuration uses any more.
    pub(crate) fn prune(&self) {
        self.states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, w| w.strong_count() > 0);
    }
}

/// A backend (Service port) compiled from the snapshot.
#[derive(Debug)]
pub(crate) struct CompiledBackend {
    /// The backend id (`namespace/service:port`), used as a metrics label.
    pub(crate) id: Arc<str>,
    /// How to speak to it.
    pub(crate) protocol: BackendProtocol,
    /// Its endpoints (possibly none: then 503).
    pub(crate) endpoints: Vec<Arc<EndpointState>>,
}

impl CompiledBackend {
    /// Power of two choices: the less loaded of two random endpoints.
    pub(crate) fn pick_endpoint(&self) -> Option<&Arc<EndpointState>> {
        pick_p2c(&self.endpoints, &mut rand::rng())
    }

    /// Like [`CompiledBackend::pick_endpoint`], but never one of `avoid` (endpoints that already failed).
    pub(crate) fn pick_endpoint_avoiding(
        &self,
        avoid: &[SocketAddr],
    ) -> Option<&Arc<EndpointState>> {
        match self.pick_endpoint() {
            Some(e) if !avoid.contains(&e.addr) => Some(e),
            _ => self.endpoints.iter().find(|e| !avoid.contains(&e.addr)),
        }
    }
}

fn pick_p2c<'a, R: Rng>(
    endpoints: &'a [Arc<EndpointState>],
    rng: &mut R,
) -> Option<&'a Arc<EndpointState>> {
    match endpoints.len() {
        0 => None,
        1 => endpoints.first(),
        n => {
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (ea, eb) = (&endpoints[a], &endpoints[b]);
            Some(if eb.outstanding() < ea.outstanding() {
                eb
            } else {
                ea
            })
        }
    }
}

/// A set of weighted choices (a rule's backends). Weight 0 is never chosen.
#[derive(Debug)]
pub(crate) struct Weighted<T> {
    entries: Vec<(u32, T)>,
    total: u64,
}

impl<T> Weighted<T> {
    /// Builds the set.
    pub(crate) fn new(entries: Vec<(u32, T)>) -> Self {
        let total = entries.iter().map(|(w, _)| u64::from(*w)).sum();
        Self { entries, total }
    }

    /// Whether the set has no entry at all (as opposed to entries that all weigh 0).
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A random entry, with probability proportional to its weight; `None` when every weight is 0.
    pub(crate) fn pick(&self) -> Option<&T> {
        self.pick_with(&mut rand::rng())
    }

    fn pick_with<R: Rng>(&self, rng: &mut R) -> Option<&T> {
        if self.total == 0 {
            return None;
        }
        let mut ticket = rng.random_range(0..self.total);
        for (weight, value) in &self.entries {
            let w = u64::from(*weight);
            if ticket < w {
                return Some(value);
            }
            ticket -= w;
        }
        None
    }

    /// Every entry.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn weight_zero_is_never_chosen_and_all_zero_is_none() {
        let w = Weighted::new(vec![(0, "a"), (5, "b")]);
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            assert_eq!(w.pick_with(&mut rng), Some(&"b"));
        }
        let none = Weighted::new(vec![(0, "a")]);
        assert_eq!(none.pick_with(&mut rng), None);
        assert!(!none.is_empty());
    }

    #[test]
    fn weights_are_respected_in_proportion() {
        let w = Weighted::new(vec![(1, 0usize), (3, 1usize)]);
        let mut rng = StdRng::seed_from_u64(1);
        let mut counts = [0u32; 2];
        for _ in 0..4000 {
            counts[*w.pick_with(&mut rng).expect("non-zero total")] += 1;
        }
        assert!((800..1200).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn p2c_prefers_the_less_loaded_endpoint() {
        let reg = EndpointRegistry::default();
        let busy = reg.get(addr(1));
        let idle = reg.get(addr(2));
        let _g: Vec<_> = (0..5).map(|_| busy.start()).collect();
        let eps = vec![busy.clone(), idle.clone()];
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..100 {
            assert_eq!(pick_p2c(&eps, &mut rng).map(|e| e.addr), Some(addr(2)));
        }
        drop(_g);
        assert_eq!(busy.outstanding(), 0);
    }

    #[test]
    fn registry_shares_state_while_alive_and_prunes_after() {
        let reg = EndpointRegistry::default();
        let a = reg.get(addr(9));
        let _g = a.start();
        assert_eq!(
            reg.get(addr(9)).outstanding(),
            1,
            "same counter for the same address"
        );
        drop(_g);
        drop(a);
        reg.prune();
        assert!(reg.states.lock().map(|m| m.is_empty()).unwrap_or(false));
    }
}
