//! The time as a worker last read it: nginx's and HAProxy's cached clock, for timestamps that need
//! no more precision than the work between two reads.
//!
//! A clock read costs about 22 ns on a virtual machine's TSC clock source (BENCHMARKS.md), and a
//! proxied request took seven of them for durations, pool idle times and deadlines. A worker
//! runtime ([`crate::workers::runtimes`]) calls [`refresh`] each time it wakes from waiting for
//! events; [`now`] then returns that reading, and reads the clock again after
//! [`READS_PER_REFRESH`] uses, so a worker that never waits (under sustained load) moves its clock
//! by reads, never lagging more than the work of a few requests. Threads that are not workers
//! (tests, the control plane, a router's own runtime in `standalone`) never refreshed, so they read
//! the clock on every call, as before.
//!
//! Not for deciding whether a timer that fired is due: compare with a fresh
//! `Instant::now()` there, or a lagging reading would re-arm the timer in the past forever.

use std::cell::Cell;
use std::time::Instant;

/// How many times [`now`] returns one reading before it reads the clock again.
pub const READS_PER_REFRESH: u8 = 8;

thread_local! {
    /// The last reading and how many more uses it may serve; `None` until [`refresh`] is called.
    static CACHED: Cell<Option<(Instant, u8)>> = const { Cell::new(None) };
}

/// Reads the clock for this thread's [`now`]: called by a worker runtime each time it wakes.
pub fn refresh() {
    CACHED.with(|c| c.set(Some((Instant::now(), READS_PER_REFRESH))));
}

/// The time: the worker's last reading (see the module docs), or a fresh one on a thread that is
/// not a worker. Never earlier than a value it returned before on the same thread.
#[inline]
pub fn now() -> Instant {
    CACHED.with(use_reading).unwrap_or_else(Instant::now)
}

/// [`now`] as tokio's `Instant`; on a thread that is not a worker, `tokio::time::Instant::now()`
/// (which follows a paused test clock).
#[inline]
pub fn tokio_now() -> tokio::time::Instant {
    CACHED
        .with(use_reading)
        .map_or_else(tokio::time::Instant::now, tokio::time::Instant::from_std)
}

/// One use of the thread's reading (read afresh once it served its calls); `None` on a thread
/// that never refreshed.
#[inline]
fn use_reading(cached: &Cell<Option<(Instant, u8)>>) -> Option<Instant> {
    match cached.get()? {
        (at, left) if left > 0 => {
            cached.set(Some((at, left - 1)));
            Some(at)
        }
        _ => {
            let at = Instant::now();
            cached.set(Some((at, READS_PER_REFRESH)));
            Some(at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn without_refresh_every_call_reads_the_clock() {
        let first = now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(now() - first >= Duration::from_millis(2));
    }

    #[test]
    fn a_refreshed_reading_serves_a_bounded_number_of_calls_then_moves_on() {
        std::thread::spawn(|| {
            refresh();
            let first = now();
            std::thread::sleep(Duration::from_millis(2));
            for _ in 1..READS_PER_REFRESH {
                assert_eq!(now(), first, "within one refresh the reading is shared");
            }
            let next = now();
            assert!(
                next - first >= Duration::from_millis(2),
                "{:?}",
                next - first
            );
            // A refresh moves it at once, and never back.
            std::thread::sleep(Duration::from_millis(2));
            refresh();
            let refreshed = now();
            assert!(refreshed - next >= Duration::from_millis(2));
            assert_eq!(tokio_now().into_std(), refreshed);
        })
        .join()
        .expect("the clock thread");
    }

    #[tokio::test(start_paused = true)]
    async fn off_a_worker_the_tokio_reading_follows_a_paused_clock() {
        let before = tokio_now();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(tokio_now() - before >= Duration::from_secs(30));
    }

    #[test]
    fn a_worker_runtime_refreshes_when_it_wakes() {
        let rt = crate::workers::runtimes(1)
            .expect("a runtime")
            .pop()
            .expect("one");
        std::thread::spawn(move || {
            rt.block_on(async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let woke = now();
                std::thread::sleep(Duration::from_millis(3));
                // Still the reading taken on waking: a fresh one would be 3 ms later.
                assert_eq!(now(), woke);
                tokio::time::sleep(Duration::from_millis(5)).await;
                assert!(now() - woke >= Duration::from_millis(8));
            });
        })
        .join()
        .expect("the worker thread");
    }
}
