//! A data plane's snapshot applier, on a thread of its own.
//!
//! Compiling a snapshot is synchronous work that grows with the configuration (about 12 ms for a
//! router with 5,000 routes). On a runtime worker it would stall every connection queued on that
//! worker for as long, at each route change; and under load a freshly published snapshot would
//! wait in the worker's run queue behind those connections before being applied. [`spawn`] runs
//! the apply loop on a dedicated thread instead: a publisher's wake-up reaches it directly, the
//! compile runs beside the connections, and what it produces is swapped in (an atomic pointer
//! store) from that thread.
use crate::subscription::Subscription;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, DropGuard};

/// The thread applying one subscription's snapshots (see [`spawn`]).
#[derive(Debug)]
pub struct Applier {
    stopped: Option<oneshot::Receiver<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Stops the thread if the data plane's task is dropped without a shutdown.
    _stop: DropGuard,
}

/// Runs `apply` for each snapshot `subscription` yields, in order, on a new thread named `name`,
/// until `stop` is cancelled or the stream ends (logged). `apply` gets the snapshot (it is its
/// last holder when the transport is a hand-off) and the subscription to acknowledge it on. The
/// thread is in the current runtime's context, so `apply` may spawn tasks onto it.
///
/// After each `apply`, what the process freed goes back to the system
/// ([`bulkhead_alloc::release_free_memory`]): a snapshot dropped once compiled is megabytes for
/// thousands of routes, and the allocator would otherwise keep it (0.8 ms for 5,000 routes, on
/// this thread).
///
/// # Errors
/// The thread could not be created.
///
/// # Panics
/// Outside a Tokio runtime.
pub fn spawn<T, F>(
    name: &str,
    mut subscription: Subscription<T>,
    stop: &CancellationToken,
    mut apply: F,
) -> std::io::Result<Applier>
where
    T: Send + Sync + 'static,
    F: FnMut(Arc<T>, &Subscription<T>) + Send + 'static,
{
    let runtime = tokio::runtime::Handle::current();
    let stop = stop.child_token();
    let (stopped_tx, stopped) = oneshot::channel();
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            // Dropped last, when the loop has ended (or `apply` panicked): wakes `stopped()`.
            let _stopped = stopped_tx;
            // `block_on` enters the runtime's context: `apply` may spawn tasks.
            runtime.block_on(async {
                loop {
                    let next = tokio::select! {
                        biased;
                        () = thread_stop.cancelled() => return,
                        next = subscription.next() => next,
                    };
                    let Some(snapshot) = next else {
                        tracing::warn!(
                            subscriber = subscription.subscriber(),
                            "snapshot stream ended; the last configuration keeps serving"
                        );
                        return;
                    };
                    apply(snapshot, &subscription);
                    bulkhead_alloc::release_free_memory();
                }
            });
        })?;
    Ok(Applier {
        stopped: Some(stopped),
        thread: Some(thread),
        _stop: stop.drop_guard(),
    })
}

impl Applier {
    /// Resolves once the thread has stopped (at once if it already had): the stream ended, or
    /// the `stop` token given to [`spawn`] was cancelled (an `apply` in progress finishes first).
    ///
    /// # Panics
    /// Re-raises a panic of `apply`, as a task's would be.
    pub async fn stopped(&mut self) {
        let Some(rx) = self.stopped.as_mut() else {
            return;
        };
        // The thread's end drops the sender, whether it returned or unwound.
        let _ = rx.await;
        self.stopped = None;
        if let Some(thread) = self.thread.take() {
            // The sender is the thread's last value: it has ended or is about to.
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscription::{handoff, Publisher};
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn applies_on_its_own_thread_and_stops_when_told() {
        let (publisher, mut acks) = Publisher::new();
        let stop = CancellationToken::new();
        let runtime_thread = std::thread::current().id();
        let mut applier = spawn(
            "test-applier",
            publisher.subscribe("router/t/0"),
            &stop,
            move |snapshot: Arc<u64>, subscription| {
                assert_ne!(std::thread::current().id(), runtime_thread);
                assert_eq!(std::thread::current().name(), Some("test-applier"));
                // In the runtime's context: tasks can be spawned from here.
                drop(tokio::spawn(async {}));
                subscription.ack(*snapshot, Ok(()));
            },
        )
        .unwrap();
        publisher.publish(1);
        let ack = tokio::time::timeout(WAIT, acks.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((ack.version, ack.outcome), (1, Ok(())));
        stop.cancel();
        tokio::time::timeout(WAIT, applier.stopped())
            .await
            .expect("the thread stops on cancellation");
        // Once stopped, it says so at once.
        tokio::time::timeout(WAIT, applier.stopped()).await.unwrap();
    }

    #[tokio::test]
    async fn stops_when_the_stream_ends_and_when_dropped() {
        let (tx, _acks) = tokio::sync::mpsc::channel(1);
        let (sender, subscription) = handoff::<u64>("edge/0", tx);
        let mut applier = spawn("a", subscription, &CancellationToken::new(), |_, _| {}).unwrap();
        drop(sender);
        tokio::time::timeout(WAIT, applier.stopped())
            .await
            .expect("the end of the stream stops the thread");

        // Dropping the applier (its data plane's task went away) stops the thread too: the
        // subscription it holds is released, which the publisher sees.
        let (tx, _acks) = tokio::sync::mpsc::channel(1);
        let (sender, subscription) = handoff::<u64>("edge/0", tx);
        let applier = spawn("b", subscription, &CancellationToken::new(), |_, _| {}).unwrap();
        drop(applier);
        tokio::time::timeout(WAIT, sender.closed())
            .await
            .expect("the thread let go of the subscription");
    }

    #[tokio::test]
    async fn a_panic_in_apply_reaches_the_caller() {
        let (publisher, _acks) = Publisher::new();
        let mut applier = spawn(
            "c",
            publisher.subscribe("x"),
            &CancellationToken::new(),
            |_: Arc<u8>, _| panic!("compile bug"),
        )
        .unwrap();
        publisher.publish(1);
        let caught = tokio::spawn(async move { applier.stopped().await })
            .await
            .expect_err("the panic is re-raised");
        assert!(caught.is_panic());
    }
}
