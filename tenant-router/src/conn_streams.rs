//! The HTTP/2 streams of one client connection, run on that connection's own task.
//!
//! hyper hands every HTTP/2 stream it accepts (and the pipe of an upgraded stream) to an executor.
//! A tokio task per stream costs an aligned allocation, a trip through the scheduler per wake-up,
//! and a second task poll to write out what the stream queued on the connection. [`ConnStreams`]
//! collects the streams instead, and [`WithStreams`] polls them in the connection's task, ahead of
//! the connection itself: a response is written by the same poll that produced it. A connection's
//! streams share one core, as in nginx's and HAProxy's worker models; other connections do not
//! wait for them. A stream that panics is dropped alone, as a panicking task would be.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;

/// A stream's future, boxed so that the streams of every kind share one set.
type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor hyper's HTTP/2 server gets for one connection: it queues each stream for the
/// connection's [`WithStreams`]. Clones share the queue.
#[derive(Clone, Default)]
pub(crate) struct ConnStreams(Arc<Mutex<Spawned>>);

impl std::fmt::Debug for ConnStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnStreams")
    }
}

/// Streams handed over and not yet taken by the connection's task, and that task's waker.
#[derive(Default)]
struct Spawned {
    futures: Vec<StreamFuture>,
    waker: Option<Waker>,
}

impl ConnStreams {
    fn spawned(&self) -> std::sync::MutexGuard<'_, Spawned> {
        // Nothing panics while holding the lock; a poisoned queue is still a valid one.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the streams handed over so far into `running`, and keeps `waker` for later ones.
    fn take_into(&self, running: &mut FuturesUnordered<StreamFuture>, waker: &Waker) -> bool {
        let mut spawned = self.spawned();
        if !spawned.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            spawned.waker = Some(waker.clone());
        }
        let any = !spawned.futures.is_empty();
        running.extend(spawned.futures.drain(..));
        any
    }
}

impl<F> hyper::rt::Executor<F> for ConnStreams
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        let isolated = AssertUnwindSafe(stream).catch_unwind().map(|outcome| {
            if outcome.is_err() {
                tracing::error!("an HTTP/2 stream panicked; its connection goes on");
            }
        });
        let waker = {
            let mut spawned = self.spawned();
            spawned.futures.push(Box::pin(isolated));
            spawned.waker.take()
        };
        // Streams are handed over while the connection's task polls, which takes them at the end
        // of that poll; a wake-up matters only for a hand-over from elsewhere.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection future polled together with the streams it hands to its [`ConnStreams`].
    /// Ends when the connection does; streams still running then are dropped (their client is
    /// gone, and each drop is logged by its request).
    pub(crate) struct WithStreams<C> {
        #[pin]
        conn: C,
        spawned: ConnStreams,
        running: FuturesUnordered<StreamFuture>,
    }
}

impl<C> WithStreams<C> {
    /// `conn`, whose server was given `spawned` as its executor.
    pub(crate) fn new(conn: C, spawned: ConnStreams) -> Self {
        Self {
            conn,
            spawned,
            running: FuturesUnordered::new(),
        }
    }

    /// The connection itself (for a graceful shutdown).
    pub(crate) fn conn(self: Pin<&mut Self>) -> Pin<&mut C> {
        self.project().conn
    }
}

/// Polls `running` until every stream waits (or yields after a full round, as the set does).
fn poll_streams(running: &mut FuturesUnordered<StreamFuture>, cx: &mut Context<'_>) {
    while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {}
}

impl<C: Future> Future for WithStreams<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = self.project();
        // Streams first: what they queue on the connection is written by its poll below.
        poll_streams(this.running, cx);
        if let Poll::Ready(done) = this.conn.poll(cx) {
            return Poll::Ready(done);
        }
        // Streams the connection accepted just now start in this same poll (and so do streams
        // those hand over in turn).
        while this.spawned.take_into(this.running, cx.waker()) {
            poll_streams(this.running, cx);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::oneshot;

    /// Spawns a connection that hands `streams` to its executor on its first poll and ends when
    /// the returned sender fires: its executor, that sender and its task.
    fn spawn_connection(
        streams: Vec<StreamFuture>,
    ) -> (
        ConnStreams,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let exec = ConnStreams::default();
        let (done_tx, done_rx) = oneshot::channel();
        let handing = exec.clone();
        let conn = async move {
            for s in streams {
                handing.execute(s);
            }
            let _ = done_rx.await;
        };
        let task = tokio::spawn(WithStreams::new(conn, exec.clone()));
        (exec, done_tx, task)
    }

    #[tokio::test]
    async fn streams_run_on_the_connection_task_until_each_completes() {
        let finished = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let streams: Vec<StreamFuture> = (0..3)
            .map(|_| {
                let finished = Arc::clone(&finished);
                let mut release = release_rx.clone();
                Box::pin(async move {
                    let _ = release.wait_for(|r| *r).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                }) as StreamFuture
            })
            .collect();
        let (_, done_tx, task) = spawn_connection(streams);
        tokio::task::yield_now().await;
        assert_eq!(
            finished.load(Ordering::SeqCst),
            0,
            "streams wait for their release"
        );
        release_tx.send(true).unwrap();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            finished.load(Ordering::SeqCst),
            3,
            "every stream was woken and finished"
        );
        assert!(!task.is_finished(), "the connection outlives its streams");
        done_tx.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_stream_handed_over_from_another_task_wakes_the_connection() {
        let (exec, done_tx, conn) = spawn_connection(Vec::new());
        tokio::task::yield_now().await;
        let (ran_tx, ran_rx) = oneshot::channel();
        exec.execute(async move {
            let _ = ran_tx.send(());
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), ran_rx)
            .await
            .expect("the late stream ran")
            .unwrap();
        done_tx.send(()).unwrap();
        conn.await.unwrap();
    }

    #[tokio::test]
    async fn a_panicking_stream_ends_alone() {
        let (tx, rx) = oneshot::channel();
        let streams: Vec<StreamFuture> = vec![
            Box::pin(async { panic!("a stream's bug") }),
            Box::pin(async move {
                tokio::task::yield_now().await;
                let _ = tx.send(());
            }),
        ];
        let (_, done_tx, conn) = spawn_connection(streams);
        tokio::time::timeout(std::time::Duration::from_secs(5), rx)
            .await
            .expect("the other stream finished")
            .unwrap();
        assert!(!conn.is_finished(), "the connection survived the panic");
        done_tx.send(()).unwrap();
        conn.await.expect("the connection ended normally");
    }

    #[tokio::test]
    async fn streams_still_running_when_the_connection_ends_are_dropped() {
        struct Dropped(Arc<AtomicUsize>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicUsize::new(0));
        let guard = Dropped(Arc::clone(&dropped));
        let streams: Vec<StreamFuture> = vec![Box::pin(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        })];
        let (_, done_tx, conn) = spawn_connection(streams);
        tokio::task::yield_now().await;
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        done_tx.send(()).unwrap();
        conn.await.unwrap();
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }
}
