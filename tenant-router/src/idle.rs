//! Idle detection for client HTTP connections.
//!
//! hyper closes an HTTP/1 keep-alive connection that sends no new request within the header read
//! timeout, but an HTTP/2 connection answering pings stays open forever without a stream. Each
//! connection counts its requests in flight here; [`Activity::idle_for`] resolves once none has
//! been in flight for the idle timeout, and the listener then shuts the connection down gracefully
//! (HTTP/2 GOAWAY).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Requests in flight on one connection and when the last one ended.
#[derive(Debug)]
pub(crate) struct Activity {
    /// The connection's start; times below are milliseconds since it.
    epoch: Instant,
    in_flight: AtomicUsize,
    last_end_ms: AtomicU64,
}

impl Activity {
    /// A connection with no request yet: idle since now.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
        })
    }

    /// Counts a request as in flight until the guard is dropped (when its response has ended).
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    /// When the connection became idle, or `None` while a request is in flight.
    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = self.last_end_ms.load(Ordering::Acquire);
        Some(self.epoch + Duration::from_millis(ms))
    }

    /// Resolves once no request has been in flight for `timeout`.
    pub(crate) async fn idle_for(&self, timeout: Duration) {
        loop {
            match self.idle_since() {
                Some(since) => {
                    tokio::time::sleep_until(since + timeout).await;
                    if self.idle_since() == Some(since) {
                        return;
                    }
                }
                None => tokio::time::sleep(timeout).await,
            }
        }
    }
}

/// One request in flight; see [`Activity::begin`].
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_end_ms.fetch_max(ms, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_after_the_last_request_ends_plus_the_timeout() {
        let activity = Activity::new();
        let timeout = Duration::from_secs(10);
        let request = activity.begin();
        // A request in flight longer than the timeout keeps the connection busy.
        let waited =
            tokio::time::timeout(Duration::from_secs(25), activity.idle_for(timeout)).await;
        assert!(waited.is_err(), "idle while a request was in flight");
        tokio::time::advance(Duration::from_secs(5)).await;
        let ended = Instant::now();
        drop(request);
        activity.idle_for(timeout).await;
        let idle = ended.elapsed();
        assert!(
            idle >= timeout && idle < timeout + Duration::from_secs(1),
            "{idle:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_is_idle_from_its_start() {
        let start = Instant::now();
        let activity = Activity::new();
        activity.idle_for(Duration::from_secs(3)).await;
        assert!(start.elapsed() >= Duration::from_secs(3));
        assert!(start.elapsed() < Duration::from_secs(4));
    }
}
