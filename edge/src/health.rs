//! Passive marking of failing router endpoints: a connect failure marks an endpoint as failing for a
//! backoff (the base time, doubling with each consecutive failure up to the maximum), during which
//! it is skipped while an unmarked endpoint of the same tenant exists; a successful connect clears
//! the mark. A mark whose backoff ended stays on the books (the gauge) until the next attempt
//! decides: success clears it, failure renews it for twice as long.
//!
//! The state is atomics per endpoint; it is shared across snapshot swaps (see
//! [`crate::table::SharedCounters`]) and dropped with the endpoint. The gauge series of a tenant
//! and listener is created at its first mark, so a fleet of healthy tenants costs no series.

use crate::config::EdgeLimits;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{LazyLock, OnceLock};
use std::time::{Duration, Instant};

/// The origin of every endpoint's mark times: a little before the first use, so that an instant
/// taken just before it still counts from it exactly.
static EPOCH: LazyLock<Instant> = LazyLock::new(|| {
    let now = Instant::now();
    now.checked_sub(Duration::from_secs(60)).unwrap_or(now)
});

/// One router endpoint's failure mark. Times are milliseconds since [`EPOCH`], plus one so that 0
/// means "not marked".
#[derive(Debug, Default)]
pub(crate) struct EndpointHealth {
    /// Consecutive connect failures.
    failures: AtomicU32,
    /// End of the skip period of the current mark; 0 when not marked.
    marked_until: AtomicU64,
    /// Counts marked endpoints of the endpoint's tenant and listener; set at the first mark.
    marked_gauge: OnceLock<Gauge>,
}

impl EndpointHealth {
    fn stamp(&self, now: Instant) -> u64 {
        let ms = now.saturating_duration_since(*EPOCH).as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX - 1).saturating_add(1)
    }

    /// Whether the endpoint is to be skipped at `now` (marked, backoff not over).
    pub(crate) fn is_skipped(&self, now: Instant) -> bool {
        let until = self.marked_until.load(Ordering::Relaxed);
        until != 0 && self.stamp(now) < until
    }

    /// Records a failed connect at `now`; returns how long the endpoint is skipped. `gauge` gives
    /// the series counting marked endpoints of its tenant and listener (asked for once).
    pub(crate) fn connect_failed(
        &self,
        now: Instant,
        limits: &EdgeLimits,
        gauge: impl FnOnce() -> Gauge,
    ) -> Duration {
        let n = self.failures.fetch_add(1, Ordering::Relaxed);
        let backoff = backoff(n, limits.failing_mark_base, limits.failing_mark_max);
        let ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
        let until = self.stamp(now).saturating_add(ms);
        let gauge = self.marked_gauge.get_or_init(gauge);
        if self.marked_until.swap(until, Ordering::Relaxed) == 0 {
            gauge.inc();
        }
        backoff
    }

    /// Records a successful connect: the mark and the failure count are cleared.
    pub(crate) fn connect_succeeded(&self) {
        // Read first: the common case (not marked) then writes nothing to the shared cache line.
        if self.marked_until.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.failures.store(0, Ordering::Relaxed);
        if self.marked_until.swap(0, Ordering::Relaxed) != 0 {
            if let Some(gauge) = self.marked_gauge.get() {
                gauge.dec();
            }
        }
    }
}

impl Drop for EndpointHealth {
    fn drop(&mut self) {
        // An endpoint that left the configuration no longer counts as failing.
        if *self.marked_until.get_mut() != 0 {
            if let Some(gauge) = self.marked_gauge.get() {
                gauge.dec();
            }
        }
    }
}

/// The skip period after `previous` earlier consecutive failures: `base` doubled that many times,
/// capped at `max`.
fn backoff(previous: u32, base: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(previous).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let limits = EdgeLimits::default();
        let (base, max) = (limits.failing_mark_base, limits.failing_mark_max);
        let secs: Vec<u64> = (0..6).map(|n| backoff(n, base, max).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 60, 60]);
        assert_eq!(backoff(u32::MAX, base, max), max);
    }

    #[test]
    fn failure_marks_success_clears_and_the_gauge_follows() {
        let limits = EdgeLimits::default();
        let gauge = Gauge::default();
        let h = EndpointHealth::default();
        let asked = std::cell::Cell::new(0);
        let series = || {
            asked.set(asked.get() + 1);
            gauge.clone()
        };
        let t0 = Instant::now();
        assert!(!h.is_skipped(t0));
        assert_eq!(
            h.connect_failed(t0, &limits, series),
            Duration::from_secs(5)
        );
        assert!(h.is_skipped(t0 + Duration::from_secs(4)));
        assert!(!h.is_skipped(t0 + Duration::from_secs(5)), "backoff over");
        assert_eq!(
            gauge.get(),
            1,
            "still marked until the next attempt decides"
        );
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(
            h.connect_failed(t1, &limits, series),
            Duration::from_secs(10)
        );
        assert_eq!(asked.get(), 1, "the series is looked up once");
        assert!(h.is_skipped(t1 + Duration::from_secs(9)));
        assert_eq!(gauge.get(), 1);
        h.connect_succeeded();
        assert!(!h.is_skipped(t1));
        assert_eq!(gauge.get(), 0);
        assert_eq!(
            h.connect_failed(t1, &limits, series),
            Duration::from_secs(5),
            "success reset the backoff"
        );
        drop(h);
        assert_eq!(gauge.get(), 0, "a dropped marked endpoint leaves the gauge");
    }
}
