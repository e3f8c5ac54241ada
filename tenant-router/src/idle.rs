//! Idle detection for client HTTP connections.
//!
//! Each connection counts its requests in flight here; [`Activity::idle_for`] resolves once none
//! has been in flight for the idle timeout, and the listener then shuts the connection down
//! (gracefully: HTTP/2 GOAWAY). A connection that has not started a request yet is idle after a
//! shorter timeout (the header read timeout), so that an HTTP/2 client that sends the preface but
//! no request holds its connection no longer than an HTTP/1 client that sends nothing.
//!
//! This is also the HTTP/1 header read timeout: a request begins when its head is complete, so an
//! HTTP/1 connection idle for the header read timeout (from its start or from its last response's
//! end) is one whose next head did not arrive in time, however slowly its bytes trickle in. One
//! timer per connection, re-armed only when it fires, does what hyper's own header timer did with a
//! boxed timer per request.
//!
//! A request body must keep arriving too: [`IdleBody`] ends a body that yields no frame for the
//! body idle timeout while the router waits for it, and records [`ClientFault::Stalled`] in its
//! [`ClientBodyWatch`], so the request is answered 408 (when no response was sent yet) and blamed on
//! the client, never on the backend.

use crate::body::{ClientBodyWatch, ClientFault};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Requests in flight on one connection and when the last one ended.
#[derive(Debug)]
pub(crate) struct Activity {
    /// The connection's start; times below are milliseconds since it.
    epoch: Instant,
    in_flight: AtomicUsize,
    last_end_ms: AtomicU64,
    /// Requests begun on the connection so far.
    begun: AtomicU64,
}

impl Activity {
    /// A connection with no request yet: idle since now.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
            begun: AtomicU64::new(0),
        })
    }

    /// Counts a request as in flight until the guard is dropped (when its response has ended).
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.begun.fetch_add(1, Ordering::AcqRel);
        InFlight {
            activity: Arc::clone(self),
            ended: None,
        }
    }

    /// Whether any request has begun on the connection.
    pub(crate) fn has_begun(&self) -> bool {
        self.begun.load(Ordering::Acquire) > 0
    }

    /// When the connection became idle and how many requests it had begun by then, or `None`
    /// while a request is in flight.
    fn idle_since(&self) -> Option<(Instant, u64)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let begun = self.begun.load(Ordering::Acquire);
        let ms = self.last_end_ms.load(Ordering::Acquire);
        Some((self.epoch + Duration::from_millis(ms), begun))
    }

    /// Resolves once no request has been in flight for `timeout`, or, before the first request,
    /// once the connection has been open for `first` without one.
    pub(crate) async fn idle_for(&self, first: Duration, timeout: Duration) {
        loop {
            match self.idle_since() {
                Some((since, begun)) => {
                    let limit = if begun == 0 { first } else { timeout };
                    tokio::time::sleep_until(since + limit).await;
                    if self.idle_since() == Some((since, begun)) {
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
pub(crate) struct InFlight {
    activity: Arc<Activity>,
    /// When the request ended, if its owner already read the clock for it.
    ended: Option<Instant>,
}

impl InFlight {
    /// Records that the request ended at `at` (read for its duration), so dropping the guard
    /// does not read the clock again.
    pub(crate) fn ended_at(&mut self, at: Instant) {
        self.ended = Some(at);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.activity;
        let ended = self.ended.unwrap_or_else(bulkhead_net::clock::tokio_now);
        let ms = ended.saturating_duration_since(activity.epoch).as_millis();
        let ms = u64::try_from(ms).unwrap_or(u64::MAX);
        activity.last_end_ms.fetch_max(ms, Ordering::AcqRel);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The error a request body ends with when the client stopped sending it.
#[derive(Debug, thiserror::Error)]
#[error("client sent no request body bytes for {0:?}")]
pub(crate) struct BodyIdleTimeout(pub(crate) Duration);

pin_project! {
    /// A request body that fails with [`BodyIdleTimeout`] when, while polled, no frame arrives for
    /// `timeout`. The clock runs only while the reader waits, so a backend that reads slowly never
    /// makes the client look idle.
    pub(crate) struct IdleBody<B> {
        #[pin]
        inner: B,
        #[pin]
        timer: Option<Sleep>,
        timeout: Duration,
        watch: ClientBodyWatch,
    }
}

impl<B> IdleBody<B> {
    /// Wraps `inner`; `watch` records [`ClientFault::Stalled`] when the timeout ends it.
    pub(crate) fn new(inner: B, timeout: Duration, watch: ClientBodyWatch) -> Self {
        Self {
            inner,
            timer: None,
            timeout,
            watch,
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body,
    B::Error: Into<crate::body::BoxError>,
{
    type Data = B::Data;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            this.timer.set(None);
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.timer.is_none() {
            this.timer.set(Some(tokio::time::sleep(*this.timeout)));
        }
        if let Some(timer) = this.timer.as_mut().as_pin_mut() {
            if timer.poll(cx).is_ready() {
                this.watch.set(ClientFault::Stalled);
                return Poll::Ready(Some(Err(Box::new(BodyIdleTimeout(*this.timeout)))));
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
            tokio::time::timeout(Duration::from_secs(25), activity.idle_for(timeout, timeout))
                .await;
        assert!(waited.is_err(), "idle while a request was in flight");
        tokio::time::advance(Duration::from_secs(5)).await;
        let ended = Instant::now();
        drop(request);
        activity.idle_for(Duration::from_secs(1), timeout).await;
        let idle = ended.elapsed();
        assert!(
            idle >= timeout && idle < timeout + Duration::from_secs(1),
            "{idle:?}"
        );
    }

    /// A body that yields one frame after each of `gaps`, then ends.
    struct Gaps(Vec<Duration>, Option<Pin<Box<Sleep>>>);

    impl Body for Gaps {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<bytes::Bytes>, Self::Error>>> {
            let Some(gap) = self.0.first().copied() else {
                return Poll::Ready(None);
            };
            let sleep = self
                .1
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(gap)));
            std::task::ready!(sleep.as_mut().poll(cx));
            self.1 = None;
            self.0.remove(0);
            Poll::Ready(Some(Ok(Frame::data(bytes::Bytes::from_static(b"x")))))
        }
    }

    async fn read_all(body: impl Body<Error = crate::body::BoxError>) -> Result<usize, String> {
        let mut body = std::pin::pin!(body);
        let mut frames = 0;
        while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            frame.map_err(|e| e.to_string())?;
            frames += 1;
        }
        Ok(frames)
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_steady_body_is_never_cut() {
        let watch = ClientBodyWatch::new();
        let gaps = vec![Duration::from_secs(9); 20];
        let body = IdleBody::new(Gaps(gaps, None), Duration::from_secs(10), watch.clone());
        assert_eq!(read_all(body).await, Ok(20));
        assert_eq!(watch.fault(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_ends_with_an_error_and_is_the_clients_fault() {
        let watch = ClientBodyWatch::new();
        let gaps = vec![Duration::from_secs(1), Duration::from_secs(60)];
        let body = IdleBody::new(Gaps(gaps, None), Duration::from_secs(10), watch.clone());
        assert!(read_all(body).await.is_err());
        assert_eq!(watch.fault(), Some(ClientFault::Stalled));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_request_is_idle_after_the_first_timeout() {
        let start = Instant::now();
        let activity = Activity::new();
        activity
            .idle_for(Duration::from_secs(3), Duration::from_secs(60))
            .await;
        assert!(start.elapsed() >= Duration::from_secs(3));
        assert!(start.elapsed() < Duration::from_secs(4));
    }
}
