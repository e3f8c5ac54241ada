//! [`WhenWoken`]: a future polled only after it asked to be, and [`NotingWaker`], the waker that
//! tells it (and a relay's two directions, in `bulkhead-proxy-io`) which wake-up was its own.
//!
//! A connection's task waits for its work and, beside it, for what would end it early: the
//! shutdown signal, an idle timer. `select!` polls every branch on every wake-up of the task, and
//! a branch waiting on a `CancellationToken` costs two mutex locks per poll (its tree node's and
//! its `Notify`'s), an idle timer a trip into the timer wheel. A connection is woken several times
//! per request, by its sockets, so those polls added up to about 1,000 instructions per request in
//! the router and 2,700 per connection in the edge. Wrapped in [`WhenWoken`], the inner future
//! is polled once to register, and again only when its own waker fired.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// Wraps `inner` so that it is polled only when it woke (see the module documentation).
pub fn when_woken<F: Future>(inner: F) -> WhenWoken<F> {
    WhenWoken {
        inner,
        wake: NotingWaker::new(),
    }
}

pin_project_lite::pin_project! {
    /// See [`when_woken`].
    #[derive(Debug)]
    pub struct WhenWoken<F> {
        #[pin]
        inner: F,
        wake: NotingWaker,
    }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if !this.wake.take_woken(cx.waker()) {
            return Poll::Pending;
        }
        this.inner.poll(&mut Context::from_waker(this.wake.waker()))
    }
}

/// A waker that notes each wake-up before passing it on to the task's own waker: what lets a
/// task that waits on several things at once poll only the ones that woke. Starts noted as
/// woken, so that the first poll reaches everything.
#[derive(Debug)]
pub struct NotingWaker {
    note: Arc<Note>,
    waker: Waker,
    /// The task waker `note` passes wake-ups on to, as last stored there: compared on each poll,
    /// so that storing it (a lock and a clone) happens only when it changed.
    task: Option<Waker>,
}

/// What a [`NotingWaker`] shares with the wakers it hands out.
#[derive(Debug)]
struct Note {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Note {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl NotingWaker {
    /// A noting waker, noted as woken.
    pub fn new() -> Self {
        let note = Arc::new(Note {
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Self {
            waker: Waker::from(Arc::clone(&note)),
            note,
            task: None,
        }
    }

    /// The waker to poll with: it notes the wake-up and wakes the task last registered.
    #[inline]
    pub fn waker(&self) -> &Waker {
        &self.waker
    }

    /// Registers `task` as the waker to pass wake-ups on to, then tells whether a wake-up was
    /// noted since the last call (and clears the note). Registering first means that a wake-up
    /// from now on reaches `task`, so none is lost between this check and the task's return.
    // Inlined: a relay runs it for each direction on every poll.
    #[inline(always)]
    pub fn take_woken(&mut self, task: &Waker) -> bool {
        if !self.task.as_ref().is_some_and(|t| t.will_wake(task)) {
            self.register(task);
        }
        // A load first: clearing takes a locked instruction, and most checks find nothing noted.
        // A wake-up between the load and the store is not lost: the caller polls right after.
        if !self.note.woken.load(Ordering::Acquire) {
            return false;
        }
        self.note.woken.store(false, Ordering::Release);
        true
    }

    #[cold]
    fn register(&mut self, task: &Waker) {
        *self
            .note
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(task.clone());
        self.task = Some(task.clone());
    }
}

impl Default for NotingWaker {
    fn default() -> Self {
        Self::new()
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

    /// Counts the wake-ups it receives, as a task would.
    struct CountingTask(AtomicUsize);

    impl Wake for CountingTask {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn noting_wakers_note_their_own_wake_ups_and_pass_them_on() {
        let task = Arc::new(CountingTask(AtomicUsize::new(0)));
        let task_waker = Waker::from(Arc::clone(&task));
        let (mut up, mut down) = (NotingWaker::new(), NotingWaker::new());
        // Both start noted, so the first poll reaches both.
        assert!(up.take_woken(&task_waker));
        assert!(down.take_woken(&task_waker));
        assert!(!up.take_woken(&task_waker));
        assert!(!down.take_woken(&task_waker));

        down.waker().wake_by_ref();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert!(!up.take_woken(&task_waker));
        assert!(down.take_woken(&task_waker));
        assert!(!down.take_woken(&task_waker));

        // By value on purpose: the path a waker stored and then consumed takes.
        #[allow(clippy::waker_clone_wake)]
        up.waker().clone().wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 2);
        assert!(up.take_woken(&task_waker));
        assert!(!down.take_woken(&task_waker));
    }

    #[test]
    fn wake_ups_go_to_the_task_registered_last() {
        let first = Arc::new(CountingTask(AtomicUsize::new(0)));
        let second = Arc::new(CountingTask(AtomicUsize::new(0)));
        let mut noting = NotingWaker::new();
        noting.take_woken(&Waker::from(Arc::clone(&first)));
        noting.take_woken(&Waker::from(Arc::clone(&second)));
        noting.waker().wake_by_ref();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_still_fires() {
        let sleep = when_woken(tokio::time::sleep(Duration::from_secs(30)));
        tokio::time::timeout(Duration::from_secs(60), sleep)
            .await
            .expect("the wrapped timer fired");
    }
}
