//! The server's streaming response body: one task per subscriber turns the stream's latest encoded
//! snapshot into frames, with keep-alives in between.
//!
//! The first frame is the current snapshot (or a keep-alive when the stream has none yet); after that
//! each newer snapshot is sent once the previous frame was taken, so a slow reader skips intermediate
//! versions rather than queueing them (latest wins). A reader that does not take a frame within
//! [`SEND_STALL_TIMEOUT`] is disconnected. The task ends when the reader goes away or the stream is
//! removed (the response then ends and the client reconnects).

use crate::frame::KEEPALIVE_FRAME;
use crate::limits::{KEEPALIVE_INTERVAL, SEND_STALL_TIMEOUT};
use crate::stream::StreamName;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::convert::Infallible;
use std::pin::Pin;
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

/// Starts the subscriber task for `stream` and returns the body it feeds.
pub(crate) fn frame_body(
    stream: StreamName,
    subscriber: String,
    mut snapshots: watch::Receiver<Option<Bytes>>,
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
