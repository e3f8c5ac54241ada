//! Snapshot subscription: how a data-plane process receives versioned snapshots and acknowledges them.
//!
//! The contract is transport-independent: a [`Subscription`] yields the newest complete snapshot
//! (intermediate versions may be skipped: every snapshot is whole, never a patch) and sends back an
//! [`Ack`] saying whether that version is served or why it was rejected. Standalone mode connects a
//! [`Publisher`] and its subscriptions in process; the cluster transport (a TLS stream from the operator)
//! fills the same two ends, so the edge and the router never know which one they run on.
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// How many acknowledgements may wait unread before new ones are dropped (and counted in a log line).
pub const ACK_QUEUE: usize = 256;

/// A data plane's answer to one snapshot version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Who answers (e.g. `router/acme/0`, `edge/0`).
    pub subscriber: String,
    /// The version answered.
    pub version: u64,
    /// `Ok` when the version is now served; `Err(reason)` when it was refused and the previous one kept.
    pub outcome: Result<(), String>,
}

/// The publishing end of one snapshot stream (one per tenant, one for the edge).
#[derive(Debug)]
pub struct Publisher<T> {
    tx: watch::Sender<Option<Arc<T>>>,
    ack_tx: mpsc::Sender<Ack>,
}

impl<T> Publisher<T> {
    /// A new stream with no snapshot yet, and the receiver of its acknowledgements.
    pub fn new() -> (Self, mpsc::Receiver<Ack>) {
        let (tx, _) = watch::channel(None);
        let (ack_tx, ack_rx) = mpsc::channel(ACK_QUEUE);
        (Self { tx, ack_tx }, ack_rx)
    }

    /// Publishes a complete snapshot; subscribers that have not read the previous one skip it.
    pub fn publish(&self, snapshot: T) {
        self.publish_shared(Arc::new(snapshot));
    }

    /// Publishes a complete snapshot the caller also keeps.
    pub fn publish_shared(&self, snapshot: Arc<T>) {
        self.tx.send_replace(Some(snapshot));
    }

    /// The snapshot most recently published.
    pub fn current(&self) -> Option<Arc<T>> {
        self.tx.borrow().clone()
    }

    /// An in-process subscription (standalone transport).
    pub fn subscribe(&self, subscriber: impl Into<String>) -> Subscription<T> {
        let mut rx = self.tx.subscribe();
        rx.mark_changed();
        Subscription {
            subscriber: subscriber.into(),
            rx,
            ack_tx: self.ack_tx.clone(),
        }
    }

    /// Number of live subscriptions.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// The receiving end: the newest snapshot, and a way to acknowledge it.
#[derive(Debug)]
pub struct Subscription<T> {
    subscriber: String,
    rx: watch::Receiver<Option<Arc<T>>>,
    ack_tx: mpsc::Sender<Ack>,
}

impl<T> Subscription<T> {
    /// Builds a subscription from a transport's channels (used by network transports).
    pub fn from_parts(
        subscriber: impl Into<String>,
        rx: watch::Receiver<Option<Arc<T>>>,
        ack_tx: mpsc::Sender<Ack>,
    ) -> Self {
        Self {
            subscriber: subscriber.into(),
            rx,
            ack_tx,
        }
    }

    /// Waits for a snapshot newer than the last one returned. `None` when the publisher is gone.
    pub async fn next(&mut self) -> Option<Arc<T>> {
        loop {
            self.rx.changed().await.ok()?;
            if let Some(s) = self.rx.borrow_and_update().clone() {
                return Some(s);
            }
        }
    }

    /// The newest snapshot without waiting.
    pub fn latest(&self) -> Option<Arc<T>> {
        self.rx.borrow().clone()
    }

    /// Who this subscription acknowledges as.
    pub fn subscriber(&self) -> &str {
        &self.subscriber
    }

    /// Acknowledges a version: `Ok` when it is served, `Err(reason)` when it was refused.
    pub fn ack(&self, version: u64, outcome: Result<(), String>) {
        let ack = Ack {
            subscriber: self.subscriber.clone(),
            version,
            outcome,
        };
        if let Err(e) = self.ack_tx.try_send(ack) {
            tracing::warn!(subscriber = %self.subscriber, version, error = %e, "snapshot acknowledgement dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscriber_sees_newest_and_skips_intermediate_versions() {
        let (p, mut acks) = Publisher::new();
        let mut s = p.subscribe("router/t/0");
        p.publish(1u64);
        assert_eq!(*s.next().await.unwrap(), 1);
        p.publish(2);
        p.publish(3);
        assert_eq!(*s.next().await.unwrap(), 3);
        s.ack(3, Ok(()));
        let a = acks.recv().await.unwrap();
        assert_eq!(
            (a.subscriber.as_str(), a.version, a.outcome),
            ("router/t/0", 3, Ok(()))
        );
    }

    #[tokio::test]
    async fn late_subscriber_gets_the_current_snapshot_and_end_of_stream() {
        let (p, _acks) = Publisher::new();
        p.publish("v1");
        let mut s = p.subscribe("edge/0");
        assert_eq!(*s.next().await.unwrap(), "v1");
        drop(p);
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn rejection_carries_its_reason() {
        let (p, mut acks) = Publisher::<u8>::new();
        let s = p.subscribe("x");
        s.ack(7, Err("bad regex in acme/web rule 0".into()));
        assert_eq!(
            acks.recv().await.unwrap().outcome,
            Err("bad regex in acme/web rule 0".into())
        );
    }
}
