//! The server's streaming response body: one task per subscriber turns the stream's latest encoded
//! snapshot into frames, with keep-alives in between.
//!
//! The first frame is the current snapshot (or a keep-alive when the stream has none yet); after that
//! each newer snapshot is sent once the previous frame was taken, so a slow reader skips intermediate
//! versions rather than queueing them (latest wins). A reader that does not take a frame within
//! [`SEND_STALL_TIMEOUT`] is disconnected. The task ends when the reader goes away, the stream is
//! removed, or the admission's [`StreamGuard`](crate::auth::StreamGuard), asked before every
//! frame, withdraws the right to read (counted in `revoked`, logged); the response then ends and
//! the client reconnects.

use crate::auth::Admission;
use crate::frame::KEEPALIVE_FRAME;
use crate::limits::{KEEPALIVE_INTERVAL, SEND_STALL_TIMEOUT};
use crate::stream::StreamName;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, watch};

/// Frames waiting for the connection: one, so the next frame is chosen as late as possible.
const BODY_QUEUE: usize = 1;

/// A response body fed by a subscriber task.
#[derive(Debug)]
pub(crate) struct FrameBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for FrameBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|frame| frame.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Starts the subscriber task for `stream`, read by `admission`, and returns the body it feeds;
/// `revoked` counts streams ended by the admission's guard.
pub(crate) fn frame_body(
    stream: StreamName,
    subscriber: String,
    mut snapshots: watch::Receiver<Option<Bytes>>,
    admission: Admission,
    revoked: Arc<AtomicU64>,
) -> FrameBody {
    let (tx, rx) = mpsc::channel(BODY_QUEUE);
    snapshots.mark_changed();
    tokio::spawn(async move {
        let mut keepalive = tokio::time::interval_at(
            tokio::time::Instant::now() + KEEPALIVE_INTERVAL,
            KEEPALIVE_INTERVAL,
        );
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = loop {
            let frame = tokio::select! {
                changed = snapshots.changed() => match changed {
                    Ok(()) => snapshots
                        .borrow_and_update()
                        .clone()
                        .unwrap_or_else(|| Bytes::from_static(&KEEPALIVE_FRAME)),
                    Err(_) => break "stream removed",
                },
                _ = keepalive.tick() => Bytes::from_static(&KEEPALIVE_FRAME),
                () = tx.closed() => break "subscriber gone",
            };
            if !admission.still_allowed() {
                revoked.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%stream, %subscriber, identity = ?admission.identity, "snapshot stream closed: its identity may no longer read it");
                break "no longer allowed";
            }
            match tokio::time::timeout(SEND_STALL_TIMEOUT, tx.send(frame)).await {
                Ok(Ok(())) => keepalive.reset(),
                Ok(Err(_)) => break "subscriber gone",
                Err(_) => break "subscriber stalled",
            }
        };
        tracing::debug!(%stream, %subscriber, end, "snapshot stream closed");
    });
    FrameBody { rx }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Identity, StreamGuard};
    use http_body_util::BodyExt;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    /// Upper bound of any wait: only a broken implementation gets near it.
    const PATIENCE: Duration = Duration::from_secs(30);

    struct Switch(Arc<AtomicBool>);

    impl StreamGuard for Switch {
        fn still_allowed(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }

    async fn next_frame(body: &mut FrameBody) -> Option<Bytes> {
        let frame = tokio::time::timeout(PATIENCE, body.frame())
            .await
            .expect("a frame or the end of the body");
        frame.map(|f| f.expect("infallible").into_data().expect("data frame"))
    }

    #[tokio::test]
    async fn a_withdrawn_guard_ends_the_stream_before_the_next_snapshot_is_sent() {
        let (tx, rx) = watch::channel(Some(Bytes::from_static(b"snapshot of team-a")));
        let allowed = Arc::new(AtomicBool::new(true));
        let admission = Admission {
            identity: Identity::Tenant("acme".into()),
            guard: Some(Arc::new(Switch(Arc::clone(&allowed)))),
        };
        let revoked = Arc::new(AtomicU64::new(0));
        let stream = StreamName::tenant("acme").expect("valid");
        let mut body = frame_body(stream, "router".into(), rx, admission, Arc::clone(&revoked));
        assert_eq!(
            next_frame(&mut body).await.as_deref(),
            Some(&b"snapshot of team-a"[..])
        );
        // The tenant moved: the guard says no before the new namespace's snapshot is published.
        allowed.store(false, Ordering::SeqCst);
        tx.send_replace(Some(Bytes::from_static(b"snapshot of team-b")));
        assert_eq!(next_frame(&mut body).await, None, "the stream ends unsent");
        assert_eq!(revoked.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_unguarded_stream_receives_every_snapshot() {
        let (tx, rx) = watch::channel(Some(Bytes::from_static(b"v1")));
        let admission = Admission::from(Identity::Edge);
        let revoked = Arc::new(AtomicU64::new(0));
        let mut body = frame_body(StreamName::Edge, "edge".into(), rx, admission, revoked);
        assert_eq!(next_frame(&mut body).await.as_deref(), Some(&b"v1"[..]));
        tx.send_replace(Some(Bytes::from_static(b"v2")));
        assert_eq!(next_frame(&mut body).await.as_deref(), Some(&b"v2"[..]));
    }
}
