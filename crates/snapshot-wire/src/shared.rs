//! The state one snapshot server shares between its accept loop ([`crate::server`]) and its request
//! handler ([`crate::handler`]): the authenticator, the streams' newest frames, the
//! acknowledgement channel and the counters. Both depend on this module, never on each other.

use crate::stream::StreamName;
use bulkhead_snapshot::Ack;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::{mpsc, watch};

/// Counters of a server's refusals and acknowledgements (read into `ServerStats`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) unauthenticated: AtomicU64,
    pub(crate) forbidden: AtomicU64,
    pub(crate) auth_unavailable: AtomicU64,
    pub(crate) bad_requests: AtomicU64,
    pub(crate) acks: AtomicU64,
    pub(crate) acks_dropped: AtomicU64,
    pub(crate) tls_failures: AtomicU64,
    pub(crate) revoked: Arc<AtomicU64>,
}

impl Counters {
    /// Adds one to `counter`.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the accept loop and the handler share.
pub(crate) struct Shared<A> {
    pub(crate) auth: A,
    pub(crate) streams: Mutex<HashMap<StreamName, watch::Sender<Option<Bytes>>>>,
    pub(crate) acks: mpsc::Sender<(StreamName, Ack)>,
    pub(crate) counters: Counters,
}

impl<A> Shared<A> {
    pub(crate) fn streams(
        &self,
    ) -> MutexGuard<'_, HashMap<StreamName, watch::Sender<Option<Bytes>>>> {
        // The map stays consistent whatever panicked while holding it: every operation is one call.
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A receiver of the stream's newest encoded frame, creating the stream when needed.
    pub(crate) fn watch(&self, stream: &StreamName) -> watch::Receiver<Option<Bytes>> {
        self.streams()
            .entry(stream.clone())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }
}
