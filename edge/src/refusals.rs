//! The refusal summary: every refused connection is logged at debug level where it happens, and
//! also tallied here by reason; the edge writes one info line with the tally every
//! [`REFUSAL_SUMMARY_INTERVAL`](crate::config::REFUSAL_SUMMARY_INTERVAL) when there was any. Keys
//! are reasons from a fixed set, never hostnames, so a flood cannot grow the tally or the line.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Refusals by reason since the last [`RefusalTally::take`].
#[derive(Debug, Default)]
pub(crate) struct RefusalTally {
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl RefusalTally {
    /// Counts one refusal.
    pub(crate) fn note(&self, reason: &'static str) {
        // A poisoned lock only means another thread panicked mid-increment; the counts stay usable.
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(reason).or_default() += 1;
    }

    /// The counts so far, resetting them.
    pub(crate) fn take(&self) -> BTreeMap<&'static str, u64> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *counts)
    }

    /// Logs one info line summing up the refusals since the last call, if there were any.
    pub(crate) fn log_summary(&self) {
        let counts = self.take();
        if let Some((total, by_reason)) = summary(&counts) {
            tracing::info!(total, by_reason = %by_reason, "connections refused since the last summary");
        }
    }
}

/// The total and a `reason=count` list (reasons in order), or `None` when nothing was refused.
fn summary(counts: &BTreeMap<&'static str, u64>) -> Option<(u64, String)> {
    let total: u64 = counts.values().sum();
    (total > 0).then(|| {
        let by_reason = counts
            .iter()
            .map(|(reason, n)| format!("{reason}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        (total, by_reason)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_by_reason_and_resets() {
        let tally = RefusalTally::default();
        assert_eq!(summary(&tally.take()), None, "nothing refused, no line");
        for reason in [
            "timeout",
            "unknown_host",
            "timeout",
            "max_sniffing",
            "timeout",
        ] {
            tally.note(reason);
        }
        let counts = tally.take();
        assert_eq!(
            summary(&counts),
            Some((5, "max_sniffing=1 timeout=3 unknown_host=1".to_owned()))
        );
        assert!(tally.take().is_empty(), "take resets the tally");
    }
}
