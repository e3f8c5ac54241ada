//! Load balancing: a weighted random choice among a rule's backends, then power-of-two-choices on
//! outstanding requests among the chosen backend's endpoints that are not ejected (see
//! [`crate::outlier`]).
//!
//! Endpoint state ([`EndpointState`]: load counter and outlier bookkeeping) outlives snapshot swaps:
//! an [`EndpointRegistry`] hands the same state to every configuration that names the same backend
//! and address, so a swap forgets neither the load nor an ejection; an endpoint no configuration
//! names any more is dropped with its state.

use crate::metrics::{BackendLabels, RouterMetrics};
use crate::outlier::{Health, OutlierPolicy, OutlierState};
use bulkhead_snapshot::BackendProtocol;
use rand::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Instant;

/// One backend endpoint: the number of requests in flight to it and its outlier state.
#[derive(Debug)]
pub(crate) struct EndpointState {
    /// The endpoint's address.
    pub(crate) addr: SocketAddr,
    outstanding: AtomicUsize,
    /// Consecutive failures and ejection.
    pub(crate) outlier: OutlierState,
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

impl OutstandingGuard {
    /// The address of the endpoint this request went to.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.0.addr
    }
}

impl Drop for OutstandingGuard {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Requests in flight to one backend, across its endpoints and across configurations: the state of
/// its circuit breaker (see [`crate::limits::DEFAULT_MAX_REQUESTS_PER_BACKEND`]).
#[derive(Debug, Default)]
pub(crate) struct BackendLoad {
    requests: AtomicUsize,
}

impl BackendLoad {
    /// A permit for one more request, unless `max` are in flight already.
    pub(crate) fn try_admit(self: &Arc<Self>, max: usize) -> Option<RequestPermit> {
        self.requests
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(RequestPermit(Arc::clone(self)))
    }

    /// Requests in flight.
    #[cfg(test)]
    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }
}

/// One request admitted by its backend's circuit breaker; it leaves the count when dropped.
#[derive(Debug)]
pub(crate) struct RequestPermit(Arc<BackendLoad>);

impl Drop for RequestPermit {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

type EndpointKey = (Arc<str>, SocketAddr);

/// Hands out one shared [`EndpointState`] per backend and address, for as long as any
/// configuration uses it.
#[derive(Debug)]
pub(crate) struct EndpointRegistry {
    tenant: Arc<str>,
    metrics: Arc<RouterMetrics>,
    epoch: Instant,
    states: Mutex<HashMap<EndpointKey, Weak<EndpointState>>>,
    loads: Mutex<HashMap<Arc<str>, Weak<BackendLoad>>>,
}

impl EndpointRegistry {
    /// An empty registry whose endpoints report to `metrics` under `tenant`.
    pub(crate) fn new(tenant: Arc<str>, metrics: Arc<RouterMetrics>) -> Self {
        Self {
            tenant,
            metrics,
            epoch: Instant::now(),
            states: Mutex::new(HashMap::new()),
            loads: Mutex::new(HashMap::new()),
        }
    }

    /// The circuit breaker state of `backend`, shared with every live configuration that names it
    /// (a configuration swap forgets no request in flight).
    pub(crate) fn load(&self, backend: &Arc<str>) -> Arc<BackendLoad> {
        let mut loads = self.loads.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(load) = loads.get(backend).and_then(Weak::upgrade) {
            return load;
        }
        let load = Arc::new(BackendLoad::default());
        loads.insert(Arc::clone(backend), Arc::downgrade(&load));
        load
    }

    /// The state for `addr` of `backend`, shared with every live configuration that names it.
    pub(crate) fn get(&self, backend: &Arc<str>, addr: SocketAddr) -> Arc<EndpointState> {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (Arc::clone(backend), addr);
        if let Some(state) = states.get(&key).and_then(Weak::upgrade) {
            return state;
        }
        let labels = BackendLabels {
            tenant: Arc::clone(&self.tenant),
            backend: Arc::clone(backend),
        };
        let state = Arc::new(EndpointState {
            addr,
            outstanding: AtomicUsize::new(0),
            outlier: OutlierState::new(
                self.epoch,
                self.metrics.outlier_ejected.get_or_create_owned(&labels),
                self.metrics.outlier_ejections.get_or_create_owned(&labels),
            ),
        });
        states.insert(key, Arc::downgrade(&state));
        state
    }

    /// Forgets endpoints no configuration uses any more.
    pub(crate) fn prune(&self) {
        self.states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, w| w.strong_count() > 0);
        self.loads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, w| w.strong_count() > 0);
    }

    /// Lifts ended ejections from the books and lets healthy endpoints' ejection multipliers decay;
    /// returns how many endpoints came back.
    pub(crate) fn sweep(&self, now: Instant, policy: &OutlierPolicy) -> usize {
        let live: Vec<Arc<EndpointState>> = self
            .states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        live.iter()
            .filter(|e| e.outlier.sweep(now, policy))
            .inspect(|e| tracing::info!(tenant = %self.tenant, endpoint = %e.addr, "endpoint back in load balancing"))
            .count()
    }
}

#[cfg(test)]
impl Default for EndpointRegistry {
    fn default() -> Self {
        Self::new(Arc::from("test"), Arc::new(RouterMetrics::unregistered()))
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
    /// Requests in flight, for the circuit breaker (shared across configurations).
    pub(crate) load: Arc<BackendLoad>,
    /// TLS origination (`BackendTLSPolicy`); `None`: plaintext.
    pub(crate) tls: Option<Arc<crate::upstream::tls::UpstreamTls>>,
    /// Held while deciding an ejection, so that concurrent ejections respect the cap.
    ejecting: Mutex<()>,
}

impl CompiledBackend {
    /// A backend with the given endpoints.
    pub(crate) fn new(
        id: Arc<str>,
        protocol: BackendProtocol,
        endpoints: Vec<Arc<EndpointState>>,
        load: Arc<BackendLoad>,
    ) -> Self {
        Self {
            id,
            protocol,
            endpoints,
            load,
            tls: None,
            ejecting: Mutex::new(()),
        }
    }

    /// The backend with TLS origination.
    pub(crate) fn with_tls(mut self, tls: Option<Arc<crate::upstream::tls::UpstreamTls>>) -> Self {
        self.tls = tls;
        self
    }

    /// Power of two choices among endpoints in service: the less loaded of two random ones (when
    /// every endpoint is ejected, the one whose ejection ends first).
    pub(crate) fn pick_endpoint(&self) -> Option<&Arc<EndpointState>> {
        self.pick_endpoint_avoiding(&[])
    }

    /// Like [`CompiledBackend::pick_endpoint`], but never one of `avoid` (endpoints that already
    /// failed); `None` when every endpoint is to be avoided.
    pub(crate) fn pick_endpoint_avoiding(
        &self,
        avoid: &[SocketAddr],
    ) -> Option<&Arc<EndpointState>> {
        pick(&self.endpoints, avoid, Instant::now, &mut rand::rng())
    }

    /// Records what an exchange with `endpoint` (one of this backend's) showed, ejecting it when
    /// its consecutive failures reach the threshold and the backend's cap allows.
    /// `now` is read only for a failure that may eject (a success needs no time).
    pub(crate) fn observe(
        &self,
        endpoint: &EndpointState,
        health: Health,
        policy: &OutlierPolicy,
        now: impl FnOnce() -> Instant,
    ) {
        let outlier = &endpoint.outlier;
        match health {
            Health::Success => outlier.record_success(),
            Health::GatewayFailure => {
                if !outlier.record_failure(policy) {
                    return;
                }
                let now = now();
                if outlier.is_ejected(now) {
                    return;
                }
                let _deciding = self.ejecting.lock().unwrap_or_else(PoisonError::into_inner);
                let ejected = self
                    .endpoints
                    .iter()
                    .filter(|e| e.outlier.is_ejected(now))
                    .count();
                if policy.may_eject(ejected, self.endpoints.len()) {
                    let time = outlier.eject(now, policy);
                    tracing::info!(backend = %self.id, endpoint = %endpoint.addr, seconds = time.as_secs(), "endpoint ejected after consecutive failures");
                }
            }
        }
    }
}

/// Two distinct random indices below `n` (at least 2).
fn two_indices<R: Rng>(n: usize, rng: &mut R) -> (usize, usize) {
    let a = rng.random_range(0..n);
    let mut b = rng.random_range(0..n - 1);
    if b >= a {
        b += 1;
    }
    (a, b)
}

/// The less loaded of two endpoints (the first on a tie).
fn less_loaded<'a>(a: &'a Arc<EndpointState>, b: &'a Arc<EndpointState>) -> &'a Arc<EndpointState> {
    if b.outstanding() < a.outstanding() {
        b
    } else {
        a
    }
}

/// P2C among the endpoints not avoided and not ejected at `now`; when none is left, the
/// least-bad avoidable one: not avoided, ejection ending first.
fn pick<'a, R: Rng>(
    endpoints: &'a [Arc<EndpointState>],
    avoid: &[SocketAddr],
    now: impl Fn() -> Instant,
    rng: &mut R,
) -> Option<&'a Arc<EndpointState>> {
    // The clock is read only for an endpoint that has been ejected (see `is_ejected_by`).
    let usable = |e: &EndpointState| !avoid.contains(&e.addr) && !e.outlier.is_ejected_by(&now);
    // Fast path: two random endpoints, without allocating, when at least one is usable.
    match endpoints.len() {
        0 => return None,
        1 => {
            if usable(&endpoints[0]) {
                return endpoints.first();
            }
        }
        n => {
            let (a, b) = two_indices(n, rng);
            let (ea, eb) = (&endpoints[a], &endpoints[b]);
            match (usable(ea), usable(eb)) {
                (true, true) => return Some(less_loaded(ea, eb)),
                (true, false) => return Some(ea),
                (false, true) => return Some(eb),
                (false, false) => {}
            }
        }
    }
    let candidates: Vec<&Arc<EndpointState>> = endpoints.iter().filter(|e| usable(e)).collect();
    match candidates.len() {
        0 => endpoints
            .iter()
            .filter(|e| !avoid.contains(&e.addr))
            .min_by_key(|e| (e.outlier.ejected_until(), e.outstanding())),
        1 => candidates.first().copied(),
        n => {
            let (a, b) = two_indices(n, rng);
            Some(less_loaded(candidates[a], candidates[b]))
        }
    }
}

/// A set of weighted choices (a rule's backends). Weight 0 is never chosen.
#[derive(Debug)]
pub(crate) struct Weighted<T> {
    /// Boxed so that a configuration keeps no spare capacity (a rule usually has one backend).
    entries: Box<[(u32, T)]>,
    total: u64,
}

impl<T> Weighted<T> {
    /// Builds the set.
    pub(crate) fn new(entries: Vec<(u32, T)>) -> Self {
        let total = entries.iter().map(|(w, _)| u64::from(*w)).sum();
        Self {
            entries: entries.into_boxed_slice(),
            total,
        }
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
        for (weight, value) in self.entries.iter() {
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
    fn circuit_breaker_admits_up_to_its_maximum_and_frees_on_drop() {
        let reg = EndpointRegistry::default();
        let id: Arc<str> = Arc::from("acme/web:80");
        let load = reg.load(&id);
        let first = load.try_admit(2).expect("first");
        let _second = load.try_admit(2).expect("second");
        assert!(load.try_admit(2).is_none(), "the third overflows");
        assert!(
            Arc::ptr_eq(&reg.load(&id), &load),
            "every configuration shares it"
        );
        drop(first);
        assert!(
            load.try_admit(2).is_some(),
            "a finished request frees a slot"
        );
        assert_eq!(load.requests(), 1);
    }

    fn backend_with(reg: &EndpointRegistry, ports: &[u16]) -> CompiledBackend {
        let id: Arc<str> = Arc::from("acme/web:80");
        let endpoints = ports.iter().map(|p| reg.get(&id, addr(*p))).collect();
        CompiledBackend::new(id, BackendProtocol::Http1, endpoints, Arc::default())
    }

    fn policy() -> OutlierPolicy {
        OutlierPolicy::from_limits(&crate::limits::RouterLimits::default())
    }

    /// Reports `n` gateway failures of endpoint `i` at `now`.
    fn fail(b: &CompiledBackend, i: usize, n: u32, now: Instant) {
        for _ in 0..n {
            b.observe(&b.endpoints[i], Health::GatewayFailure, &policy(), || now);
        }
    }

    #[test]
    fn p2c_prefers_the_less_loaded_endpoint() {
        let reg = EndpointRegistry::default();
        let b = backend_with(&reg, &[1, 2]);
        let (busy, idle) = (&b.endpoints[0], &b.endpoints[1]);
        let _g: Vec<_> = (0..5).map(|_| busy.start()).collect();
        let mut rng = StdRng::seed_from_u64(3);
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(
                pick(&b.endpoints, &[], || now, &mut rng).map(|e| e.addr),
                Some(idle.addr)
            );
        }
        drop(_g);
        assert_eq!(busy.outstanding(), 0);
    }

    #[test]
    fn registry_shares_state_while_alive_and_prunes_after() {
        let reg = EndpointRegistry::default();
        let web: Arc<str> = Arc::from("acme/web:80");
        let a = reg.get(&web, addr(9));
        let _g = a.start();
        assert_eq!(
            reg.get(&web, addr(9)).outstanding(),
            1,
            "same counter for the same backend and address"
        );
        let other = reg.get(&Arc::from("acme/other:80"), addr(9));
        assert_eq!(other.outstanding(), 0, "another backend has its own state");
        drop(other);
        drop(_g);
        drop(a);
        reg.prune();
        assert!(reg.states.lock().map(|m| m.is_empty()).unwrap_or(false));
    }

    #[test]
    fn failing_endpoint_is_ejected_and_skipped() {
        let reg = EndpointRegistry::default();
        let b = backend_with(&reg, &[1, 2, 3, 4]);
        let now = Instant::now();
        fail(&b, 0, 4, now);
        b.observe(&b.endpoints[0], Health::Success, &policy(), || now);
        fail(&b, 0, 4, now);
        assert!(
            !b.endpoints[0].outlier.is_ejected(now),
            "a success reset the count"
        );
        fail(&b, 0, 1, now);
        assert!(b.endpoints[0].outlier.is_ejected(now));
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..200 {
            let e = pick(&b.endpoints, &[], || now, &mut rng).map(|e| e.addr);
            assert_ne!(e, Some(addr(1)), "ejected endpoint chosen");
        }
        let later = now + policy().base_ejection_time;
        let seen: std::collections::HashSet<_> = (0..200)
            .filter_map(|_| pick(&b.endpoints, &[], || later, &mut rng).map(|e| e.addr))
            .collect();
        assert!(seen.contains(&addr(1)), "back once the ejection ended");
    }

    #[test]
    fn cap_keeps_half_of_the_endpoints_and_never_the_last() {
        let reg = EndpointRegistry::default();
        let now = Instant::now();
        let b = backend_with(&reg, &[1, 2, 3, 4]);
        for i in 0..4 {
            fail(&b, i, 5, now);
        }
        let ejected = b
            .endpoints
            .iter()
            .filter(|e| e.outlier.is_ejected(now))
            .count();
        assert_eq!(ejected, 2);
        let lone = backend_with(&EndpointRegistry::default(), &[7]);
        fail(&lone, 0, 50, now);
        assert!(!lone.endpoints[0].outlier.is_ejected(now));
        assert_eq!(lone.pick_endpoint().map(|e| e.addr), Some(addr(7)));
    }

    #[test]
    fn all_ejected_falls_back_to_the_ejection_ending_first() {
        let reg = EndpointRegistry::default();
        let now = Instant::now();
        let b = backend_with(&reg, &[1, 2, 3]);
        let p = policy();
        // Ejected directly (as if by a larger backend of an earlier snapshot): 20 s, then 10 s.
        b.endpoints[0].outlier.eject(now, &p);
        b.endpoints[0].outlier.sweep(now + p.base_ejection_time, &p);
        b.endpoints[0].outlier.eject(now, &p);
        b.endpoints[1].outlier.eject(now, &p);
        let mut rng = StdRng::seed_from_u64(9);
        let avoid = [addr(3)];
        for _ in 0..50 {
            let e = pick(&b.endpoints, &avoid, || now, &mut rng).map(|e| e.addr);
            assert_eq!(e, Some(addr(2)), "least bad of the ejected ones");
        }
        assert!(pick(&b.endpoints, &[addr(1), addr(2), addr(3)], || now, &mut rng).is_none());
    }

    #[test]
    fn ejection_survives_a_new_configuration_and_removal_clears_the_gauge() {
        let metrics = Arc::new(RouterMetrics::unregistered());
        let reg = EndpointRegistry::new(Arc::from("acme"), Arc::clone(&metrics));
        let now = Instant::now();
        let old = backend_with(&reg, &[1, 2]);
        fail(&old, 0, 5, now);
        let labels = BackendLabels {
            tenant: Arc::from("acme"),
            backend: Arc::from("acme/web:80"),
        };
        let gauge = metrics.outlier_ejected.get_or_create_owned(&labels);
        assert_eq!(gauge.get(), 1);
        let kept = backend_with(&reg, &[1, 3]);
        drop(old);
        reg.prune();
        assert!(
            kept.endpoints[0].outlier.is_ejected(now),
            "same backend and address"
        );
        assert_eq!(gauge.get(), 1);
        let gone = backend_with(&reg, &[3]);
        drop(kept);
        reg.prune();
        assert_eq!(gauge.get(), 0, "the ejected endpoint was removed");
        assert!(!gone.endpoints[0].outlier.is_ejected(now));
        assert_eq!(
            metrics.outlier_ejections.get_or_create_owned(&labels).get(),
            1
        );
    }

    #[test]
    fn sweep_returns_ended_ejections() {
        let reg = EndpointRegistry::default();
        let now = Instant::now();
        let b = backend_with(&reg, &[1, 2]);
        fail(&b, 1, 5, now);
        assert_eq!(reg.sweep(now, &policy()), 0);
        assert_eq!(reg.sweep(now + policy().base_ejection_time, &policy()), 1);
        assert_eq!(reg.sweep(now + policy().base_ejection_time, &policy()), 0);
    }
}
