//! Reconnect delays: exponential from [`BACKOFF_INITIAL`] to [`BACKOFF_MAX`], each drawn uniformly
//! from the upper half of its step ("equal jitter") so a fleet of routers that lost the operator
//! together does not reconnect in lockstep.

use crate::limits::{BACKOFF_INITIAL, BACKOFF_MAX};
use std::time::Duration;

/// Doublings after which the step is at its cap anyway (keeps the shift in range).
const MAX_DOUBLINGS: u32 = 16;

/// The reconnect delay sequence of one client.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The step (upper bound) of the next delay.
    fn step(&self) -> Duration {
        BACKOFF_INITIAL
            .saturating_mul(1u32 << self.attempt.min(MAX_DOUBLINGS))
            .min(BACKOFF_MAX)
    }

    /// The next delay, in `[step / 2, step]`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = u64::try_from(self.step().as_millis()).unwrap_or(u64::MAX);
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_millis(rand::random_range(step / 2..=step))
    }

    /// Back to the shortest delay, after a connection that worked.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_within_jitter_up_to_the_cap_and_reset() {
        let mut b = Backoff::default();
        for attempt in 0..40u32 {
            let step = BACKOFF_INITIAL
                .saturating_mul(2u32.saturating_pow(attempt.min(MAX_DOUBLINGS)))
                .min(BACKOFF_MAX);
            let d = b.next_delay();
            assert!(
                d >= step / 2 && d <= step,
                "attempt {attempt}: {d:?} not in [{:?}, {step:?}]",
                step / 2
            );
        }
        assert_eq!(b.step(), BACKOFF_MAX);
        b.reset();
        assert!(b.next_delay() <= BACKOFF_INITIAL);
    }
}
