//! Passive outlier detection, in the manner of Envoy's consecutive gateway-failure detector.
//!
//! Every endpoint of a backend counts its consecutive gateway failures (connect failures, broken
//! connections, 502/503/504 answers); a success resets the count. When the count reaches the
//! threshold the endpoint is ejected from load balancing for the base ejection time times the
//! number of times it was ejected, capped at the maximum. A backend never has more than its
//! maximum share of endpoints ejected, and always keeps one selectable. The ejection multiplier
//! decays by one for every base ejection time an endpoint spends in service.
//!
//! The state is a handful of atomics per endpoint ([`OutlierState`]); the request path takes no
//! lock. Only the decision to eject (rare) takes its backend's lock, so that two endpoints failing
//! at once cannot both slip under the ejection cap.

use crate::limits::RouterLimits;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The outlier detection settings, taken from [`RouterLimits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutlierPolicy {
    /// Consecutive failures that eject an endpoint; 0 never ejects.
    pub(crate) consecutive_failures: u32,
    /// Length of a first ejection.
    pub(crate) base_ejection_time: Duration,
    /// Longest ejection.
    pub(crate) max_ejection_time: Duration,
    /// Largest share of a backend's endpoints ejected at once, in percent.
    pub(crate) max_ejection_percent: u8,
}

impl OutlierPolicy {
    /// The policy the limits describe.
    pub(crate) fn from_limits(limits: &RouterLimits) -> Self {
        Self {
            consecutive_failures: limits.outlier_consecutive_failures,
            base_ejection_time: limits.outlier_base_ejection_time,
            max_ejection_time: limits.outlier_max_ejection_time,
            max_ejection_percent: limits.outlier_max_ejection_percent.min(100),
        }
    }

    /// How long the `n`-th ejection (counting from 1) lasts.
    pub(crate) fn ejection_time(&self, n: u32) -> Duration {
        self.base_ejection_time
            .saturating_mul(n.max(1))
            .min(self.max_ejection_time)
    }

    /// Whether one more of `total` endpoints may be ejected while `ejected` already are.
    pub(crate) fn may_eject(&self, ejected: usize, total: usize) -> bool {
        let after = ejected.saturating_add(1);
        after < total
            && after.saturating_mul(100)
                <= total.saturating_mul(usize::from(self.max_ejection_percent))
    }
}

/// What one exchange with an endpoint says about its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// A response that is not a gateway error, or a connection that opened.
    Success,
    /// A connect failure, a broken connection or a 502/503/504 answer.
    GatewayFailure,
}

impl Health {
    /// The health a response status shows: 502, 503 and 504 are gateway failures.
    pub(crate) fn of_status(status: http::StatusCode) -> Self {
        match status.as_u16() {
            502..=504 => Self::GatewayFailure,
            _ => Self::Success,
        }
    }
}

/// One endpoint's outlier bookkeeping. Times are milliseconds since the registry's epoch, plus one
/// so that 0 can mean "not ejected".
#[derive(Debug)]
pub(crate) struct OutlierState {
    epoch: Instant,
    consecutive: AtomicU32,
    ejections: AtomicU32,
    /// End of the current ejection; 0 when the endpoint is in service (or its ended ejection was
    /// swept). Non-zero counts in the ejected gauge.
    ejected_until: AtomicU64,
    /// When the endpoint last changed state (ejected, returned, multiplier decayed).
    last_change: AtomicU64,
    ejected_gauge: Gauge,
    ejections_total: Counter,
}

impl OutlierState {
    /// Fresh state (in service, no failure) reporting to the given backend series.
    pub(crate) fn new(epoch: Instant, ejected_gauge: Gauge, ejections_total: Counter) -> Self {
        Self {
            epoch,
            consecutive: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            last_change: AtomicU64::new(0),
            ejected_gauge,
            ejections_total,
        }
    }

    fn stamp(&self, now: Instant) -> u64 {
        let ms = now.saturating_duration_since(self.epoch).as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX - 1).saturating_add(1)
    }

    /// Whether the endpoint is ejected at `now`.
    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        self.is_ejected_by(|| now)
    }

    /// [`Self::is_ejected`], reading the time only for an endpoint that has been ejected: the
    /// request path asks this of every endpoint it picks, and most were never ejected.
    pub(crate) fn is_ejected_by(&self, now: impl FnOnce() -> Instant) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && self.stamp(now()) < until
    }

    /// When the current ejection ends (0 when none); orders ejected endpoints from least to most bad.
    pub(crate) fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Ordering::Relaxed)
    }

    /// Consecutive gateway failures so far.
    #[cfg(test)]
    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Ordering::Relaxed)
    }

    /// How many times the endpoint was ejected (minus the decay of healthy periods).
    #[cfg(test)]
    pub(crate) fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Records a success: the consecutive count starts again.
    pub(crate) fn record_success(&self) {
        // Read first: the common case (already 0) then writes nothing to the shared cache line.
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
    }

    /// Records a gateway failure; true when the threshold is reached and the endpoint should be
    /// ejected (if the backend's cap allows).
    pub(crate) fn record_failure(&self, policy: &OutlierPolicy) -> bool {
        let n = self
            .consecutive
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        policy.consecutive_failures > 0 && n >= policy.consecutive_failures
    }

    /// Ejects the endpoint from `now`; returns how long for.
    pub(crate) fn eject(&self, now: Instant, policy: &OutlierPolicy) -> Duration {
        let n = self
            .ejections
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let time = policy.ejection_time(n);
        let stamp = self.stamp(now);
        let ms = u64::try_from(time.as_millis()).unwrap_or(u64::MAX);
        let previous = self
            .ejected_until
            .swap(stamp.saturating_add(ms), Ordering::Relaxed);
        self.consecutive.store(0, Ordering::Relaxed);
        self.last_change.store(stamp, Ordering::Relaxed);
        if previous == 0 {
            self.ejected_gauge.inc();
        }
        self.ejections_total.inc();
        time
    }

    /// Returns the endpoint to the books as in service when its ejection has ended (true then), and
    /// lets the ejection multiplier of an endpoint in service decay.
    pub(crate) fn sweep(&self, now: Instant, policy: &OutlierPolicy) -> bool {
        let stamp = self.stamp(now);
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until != 0 {
            let ended = stamp >= until
                && self
                    .ejected_until
                    .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok();
            if ended {
                self.ejected_gauge.dec();
                self.last_change.store(stamp, Ordering::Relaxed);
            }
            return ended;
        }
        let base = u64::try_from(policy.base_ejection_time.as_millis()).unwrap_or(u64::MAX);
        let last = self.last_change.load(Ordering::Relaxed);
        if self.ejections.load(Ordering::Relaxed) > 0 && stamp.saturating_sub(last) >= base {
            let _ = self
                .ejections
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            self.last_change.store(stamp, Ordering::Relaxed);
        }
        false
    }
}

impl Drop for OutlierState {
    fn drop(&mut self) {
        // A removed endpoint no longer counts as ejected.
        if *self.ejected_until.get_mut() != 0 {
            self.ejected_gauge.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierPolicy {
        OutlierPolicy::from_limits(&RouterLimits::default())
    }

    #[test]
    fn ejection_time_grows_linearly_and_is_capped() {
        let p = policy();
        assert_eq!(p.ejection_time(1), Duration::from_secs(10));
        assert_eq!(p.ejection_time(3), Duration::from_secs(30));
        assert_eq!(p.ejection_time(30), Duration::from_secs(300));
        assert_eq!(p.ejection_time(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn cap_keeps_half_and_always_one() {
        let p = policy();
        assert!(!p.may_eject(0, 1), "a lone endpoint is never ejected");
        assert!(p.may_eject(0, 2));
        assert!(!p.may_eject(1, 2));
        assert!(p.may_eject(0, 3));
        assert!(!p.may_eject(1, 3), "2 of 3 is more than half");
        assert!(p.may_eject(4, 10));
        assert!(!p.may_eject(5, 10));
        let all = OutlierPolicy {
            max_ejection_percent: 100,
            ..p
        };
        assert!(all.may_eject(8, 10));
        assert!(!all.may_eject(9, 10), "the last endpoint stays");
    }

    #[test]
    fn threshold_success_reset_and_gauge() {
        let p = policy();
        let gauge = Gauge::default();
        let counter = Counter::default();
        let t0 = Instant::now();
        let s = OutlierState::new(t0, gauge.clone(), counter.clone());
        for _ in 0..4 {
            assert!(!s.record_failure(&p));
        }
        s.record_success();
        assert_eq!(s.consecutive_failures(), 0);
        for _ in 0..4 {
            assert!(!s.record_failure(&p));
        }
        assert!(s.record_failure(&p), "fifth consecutive failure");
        assert_eq!(s.eject(t0, &p), Duration::from_secs(10));
        assert!(s.is_ejected(t0 + Duration::from_secs(9)));
        assert!(!s.is_ejected(t0 + Duration::from_secs(10)));
        assert_eq!((gauge.get(), counter.get()), (1, 1));

        assert!(!s.sweep(t0 + Duration::from_secs(9), &p), "not over yet");
        assert!(s.sweep(t0 + Duration::from_secs(10), &p));
        assert_eq!(gauge.get(), 0);
        assert!(!s.sweep(t0 + Duration::from_secs(11), &p), "swept once");

        // The second ejection lasts twice as long.
        let t1 = t0 + Duration::from_secs(12);
        assert_eq!(s.eject(t1, &p), Duration::from_secs(20));
        assert!(s.is_ejected(t1 + Duration::from_secs(19)));
        assert_eq!((gauge.get(), counter.get()), (1, 2));
        drop(s);
        assert_eq!(
            gauge.get(),
            0,
            "a dropped ejected endpoint leaves the gauge"
        );
    }

    #[test]
    fn multiplier_decays_while_in_service() {
        let p = policy();
        let t0 = Instant::now();
        let s = OutlierState::new(t0, Gauge::default(), Counter::default());
        s.eject(t0, &p);
        s.sweep(t0 + Duration::from_secs(10), &p);
        s.eject(t0 + Duration::from_secs(10), &p);
        assert_eq!(s.ejections(), 2);
        let back = t0 + Duration::from_secs(30);
        assert!(s.sweep(back, &p));
        s.sweep(back + Duration::from_secs(5), &p);
        assert_eq!(s.ejections(), 2, "not a whole base period yet");
        s.sweep(back + Duration::from_secs(10), &p);
        assert_eq!(s.ejections(), 1);
        s.sweep(back + Duration::from_secs(20), &p);
        s.sweep(back + Duration::from_secs(30), &p);
        assert_eq!(s.ejections(), 0);
        assert_eq!(
            s.eject(back + Duration::from_secs(30), &p),
            p.base_ejection_time
        );
    }

    #[test]
    fn zero_threshold_never_ejects() {
        let p = OutlierPolicy {
            consecutive_failures: 0,
            ..policy()
        };
        let s = OutlierState::new(Instant::now(), Gauge::default(), Counter::default());
        assert!((0..100).all(|_| !s.record_failure(&p)));
    }
}
