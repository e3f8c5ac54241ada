//! The timer hyper's HTTP/2 connections keep time with: tokio's timers, and the worker's clock
//! ([`bulkhead_net::clock`]) for the time, which hyper reads for each frame it receives to
//! schedule keep-alive pings.

use hyper::rt::{Sleep, Timer};
use hyper_util::rt::TokioTimer;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// tokio's timer for hyper, reading the time from the worker's clock.
#[derive(Debug, Clone, Default)]
pub(crate) struct WorkerTimer(TokioTimer);

impl Timer for WorkerTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.0.sleep(duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        self.0.sleep_until(deadline)
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        self.0.reset(sleep, new_deadline);
    }

    fn now(&self) -> Instant {
        bulkhead_net::clock::tokio_now().into_std()
    }
}
