//! [`WhenWoken`]: a future polled only after it asked to be.
//!
//! A connection's task waits for its work and, beside it, for what would end it early: the
//! shutdown signal, an idle timer. `select!` polls every branch on every wake-up of the task, and
//! a branch waiting on a `CancellationToken` costs two mutex locks per poll (its tree node's and
//! its `Notify`'s), an idle timer a trip into the timer wheel. A connection is woken several times
//! per request, by its sockets, so those polls added up to about 1,000 instructions per request in
//! the router and 2,700 per connection in the edge. Wrapped in [`WhenWoken`], the inner future
//! is polled once to register, and again only when its own waker fired.

use futures::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Wraps `inner` so that it is polled only when it woke (see the module documentation).
pub fn when_woken<F: Future>(inner: F) -> WhenWoken<F> {
    WhenWoken {
        inner,
        relay: Arc::new(Relay::default()),
        started: false,
    }
}

pin_project_lite::pin_project! {
    /// See [`when_woken`].
    #[derive(Debug)]
    pub struct WhenWoken<F> {
        #[pin]
        inner: F,
        relay: Arc<Relay>,
        started: bool,
    }
}

/// The waker the inner future holds: it notes the wake-up and passes it to the task's own waker.
#[derive(Debug, Default)]
struct Relay {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // The task's waker first: a wake-up from now on reaches it, so none is lost between the
        // check below and the return.
        this.relay.task.register(cx.waker());
        if *this.started && !this.relay.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        *this.started = true;
        let waker = Waker::from(Arc::clone(this.relay));
        this.inner.poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    /// A future that counts its polls and is ready after waking itself `wakes_left` times.
    struct Counted {
        polls: Arc<AtomicUsize>,
        wakes_left: usize,
    }

    impl Future for Counted {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.wakes_left == 0 {
                return Poll::Ready(());
            }
            self.wakes_left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn noop() -> Context<'static> {
        Context::from_waker(futures::task::noop_waker_ref())
    }

    #[test]
    fn the_inner_future_is_polled_once_then_only_when_it_woke() {
        let polls = Arc::new(AtomicUsize::new(0));
        let pending = std::future::pending::<()>();
        let mut quiet = Box::pin(when_woken(pending));
        let mut cx = noop();
        for _ in 0..5 {
            assert!(quiet.as_mut().poll(&mut cx).is_pending());
        }
        // A future that wakes itself each poll is polled once per poll of the wrapper.
        let mut chatty = Box::pin(when_woken(Counted {
            polls: Arc::clone(&polls),
            wakes_left: 3,
        }));
        for _ in 0..3 {
            assert!(chatty.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 3);
        assert!(chatty.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn polls_without_a_wake_up_do_not_reach_the_inner_future() {
        let polls = Arc::new(AtomicUsize::new(0));
        /// Pending until polled twice, without ever waking: a wrapped one is polled once.
        struct NeverWakes(Arc<AtomicUsize>);
        impl Future for NeverWakes {
            type Output = ();
            fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
                if self.0.fetch_add(1, Ordering::SeqCst) >= 1 {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
        }
        let mut quiet = Box::pin(when_woken(NeverWakes(Arc::clone(&polls))));
        let mut cx = noop();
        for _ in 0..10 {
            assert!(quiet.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_cancellation_reaches_a_task_busy_with_other_wake_ups() {
        let token = CancellationToken::new();
        let cancelled = when_woken(token.clone().cancelled_owned());
        let busy = async {
            // Wakes its task over and over, as a connection's sockets do.
            loop {
                tokio::task::yield_now().await;
            }
        };
        let task = tokio::spawn(async move {
            tokio::select! {
                () = cancelled => "cancelled",
                () = busy => "busy",
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        token.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the task saw the cancellation")
            .expect("no panic");
        assert_eq!(outcome, "cancelled");
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_still_fires() {
        let sleep = when_woken(tokio::time::sleep(Duration::from_secs(30)));
        tokio::time::timeout(Duration::from_secs(60), sleep)
            .await
            .expect("the wrapped timer fired");
    }
}
