//! The snapshot server: the operator's end of the transport.
//!
//! The operator publishes each stream's newest snapshot ([`SnapshotServer::publish`]); the server
//! serialises it once, keeps only the newest encoded frame per stream, and streams it to every
//! connected subscriber of that stream. Acknowledgements arrive on the channel returned by
//! [`SnapshotServer::new`] as `(stream, Ack)`. [`SnapshotServer::stats`] reports connected subscribers
//! per stream and refusal counters, for metrics.
//!
//! A stream exists once it is published to or subscribed to: a router that connects before its
//! tenant's first snapshot waits on an open stream (receiving keep-alives) instead of polling.
//! [`SnapshotServer::remove_stream`] ends a stream (e.g. a tenant was offboarded): its subscribers'
//! responses end and they reconnect to an empty stream. Only authenticated identities can make a
//! stream exist, and each can name only its own, so the table is bounded by the set of identities.

use crate::auth::Authenticator;
use crate::frame::{encode_frame, FrameError};
use crate::handler;
use crate::limits::{
    ACCEPT_ERROR_PAUSE, H2_PING_INTERVAL, H2_PING_TIMEOUT, MAX_CONNECTIONS,
    MAX_STREAMS_PER_CONNECTION, SERVER_ACK_QUEUE, TLS_HANDSHAKE_TIMEOUT,
};
use crate::shared::{Counters, Shared};
use crate::stream::{StreamName, StreamNameError};
use bulkhead_snapshot::Ack;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// Acknowledgements received by the server: the (authenticated) stream and the acknowledgement.
pub type AckReceiver = mpsc::Receiver<(StreamName, Ack)>;

/// Why a snapshot could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The stream name is invalid.
    #[error(transparent)]
    Stream(#[from] StreamNameError),
    /// The snapshot could not be serialised to JSON.
    #[error("snapshot cannot be serialised: {0}")]
    Encode(#[from] serde_json::Error),
    /// The serialised snapshot does not fit in a frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Counters and gauges of a server, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connected subscribers per stream (streams that exist, including those with none).
    pub subscribers: BTreeMap<StreamName, usize>,
    /// Requests refused 401 (no, malformed or unknown token).
    pub unauthenticated: u64,
    /// Requests refused 403 (a valid identity asking for another stream).
    pub forbidden: u64,
    /// Requests answered 503 because the authenticator could not decide in time.
    pub auth_unavailable: u64,
    /// Requests refused as malformed (400, 404, 405, 413).
    pub bad_requests: u64,
    /// Acknowledgements accepted and forwarded.
    pub acks: u64,
    /// Acknowledgements answered 503 because the operator was not reading them.
    pub acks_dropped: u64,
    /// TLS handshakes that failed or timed out.
    pub tls_failures: u64,
    /// Open streams ended because their identity's guard withdrew the right to read them.
    pub revoked: u64,
}

/// The snapshot server. Cheap to clone: clones share streams, counters and the acknowledgement channel.
pub struct SnapshotServer<A: Authenticator> {
    shared: Arc<Shared<A>>,
}

impl<A: Authenticator> Clone for SnapshotServer<A> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<A: Authenticator> std::fmt::Debug for SnapshotServer<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotServer")
            .field("streams", &self.shared.streams().len())
            .finish_non_exhaustive()
    }
}

impl<A: Authenticator> SnapshotServer<A> {
    /// A server with no streams yet, and the receiver of the acknowledgements it will accept
    /// (at most [`SERVER_ACK_QUEUE`] unread; beyond that clients are told to retry).
    pub fn new(authenticator: A) -> (Self, AckReceiver) {
        let (acks, ack_rx) = mpsc::channel(SERVER_ACK_QUEUE);
        let shared = Shared {
            auth: authenticator,
            streams: Mutex::new(HashMap::new()),
            acks,
            counters: Counters::default(),
        };
        (
            Self {
                shared: Arc::new(shared),
            },
            ack_rx,
        )
    }

    /// Publishes the newest complete snapshot of `stream`: serialised to JSON once (on the calling
    /// thread), then sent to every subscriber of the stream, present and future. A subscriber that has
    /// not yet received the previous one skips it.
    pub fn publish<T: Serialize + ?Sized>(
        &self,
        stream: &StreamName,
        snapshot: &T,
    ) -> Result<(), PublishError> {
        stream.validate()?;
        let json = serde_json::to_vec(snapshot)?;
        let frame = encode_frame(&json)?;
        let mut streams = self.shared.streams();
        match streams.get(stream) {
            Some(tx) => {
                tx.send_replace(Some(frame));
            }
            None => {
                streams.insert(stream.clone(), watch::channel(Some(frame)).0);
            }
        }
        drop(streams);
        tracing::debug!(%stream, bytes = json.len(), "snapshot published");
        Ok(())
    }

    /// Ends a stream: its subscribers' responses end (they reconnect and wait on a new, empty
    /// stream) and its snapshot is forgotten. Returns whether the stream existed.
    pub fn remove_stream(&self, stream: &StreamName) -> bool {
        self.shared.streams().remove(stream).is_some()
    }

    /// Subscribers connected to `stream` now.
    pub fn subscribers(&self, stream: &StreamName) -> usize {
        self.shared
            .streams()
            .get(stream)
            .map_or(0, watch::Sender::receiver_count)
    }

    /// Current counters and per-stream subscriber counts.
    pub fn stats(&self) -> ServerStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerStats {
            subscribers: self
                .shared
                .streams()
                .iter()
                .map(|(name, tx)| (name.clone(), tx.receiver_count()))
                .collect(),
            unauthenticated: get(&c.unauthenticated),
            forbidden: get(&c.forbidden),
            auth_unavailable: get(&c.auth_unavailable),
            bad_requests: get(&c.bad_requests),
            acks: get(&c.acks),
            acks_dropped: get(&c.acks_dropped),
            tls_failures: get(&c.tls_failures),
            revoked: get(&c.revoked),
        }
    }

    /// Serves HTTP/2 over TLS on `listener` until `shutdown` completes, then closes every connection
    /// (open streams end at once; clients keep their last snapshot and reconnect with backoff).
    /// Serves at most [`MAX_CONNECTIONS`] connections at a time.
    pub async fn serve(
        &self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: impl Future<Output = ()>,
    ) {
        let acceptor = TlsAcceptor::from(tls);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            while connections.try_join_next().is_some() {}
            let slot = tokio::select! {
                () = &mut shutdown => break,
                slot = Arc::clone(&slots).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "snapshot server accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                },
            };
            let this = self.clone();
            let acceptor = acceptor.clone();
            connections.spawn(async move {
                this.connection(tcp, peer, acceptor).await;
                drop(slot);
            });
        }
        connections.shutdown().await;
        tracing::info!("snapshot server stopped");
    }

    async fn connection(&self, tcp: TcpStream, peer: SocketAddr, acceptor: TlsAcceptor) {
        let _ = tcp.set_nodelay(true);
        let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                Counters::bump(&self.shared.counters.tls_failures);
                tracing::debug!(%peer, error = %e, "snapshot server TLS handshake failed");
                return;
            }
            Err(_) => {
                Counters::bump(&self.shared.counters.tls_failures);
                tracing::debug!(%peer, "snapshot server TLS handshake timed out");
                return;
            }
        };
        let shared = Arc::clone(&self.shared);
        let service = service_fn(move |req| {
            let shared = Arc::clone(&shared);
            async move { Ok::<_, Infallible>(handler::handle(&shared, peer, req).await) }
        });
        let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .serve_connection(TokioIo::new(tls), service)
            .await;
        if let Err(e) = served {
            tracing::debug!(%peer, error = %e, "snapshot server connection ended");
        }
    }
}
