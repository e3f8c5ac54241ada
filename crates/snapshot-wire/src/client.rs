//! The data plane's end: [`subscribe`] returns a [`Subscription`] fed from the snapshot server.
//!
//! A driver task connects, reads frames, publishes each new snapshot into the subscription (decoding
//! off the async worker threads), and posts the subscription's acknowledgements back. The
//! subscription is a hand-off ([`bulkhead_snapshot::handoff`]): a snapshot leaves the transport when
//! the data plane takes it, so the process holds what the data plane compiled, not the snapshot
//! too; repeats are recognised by the payload's SHA-256, not by keeping the payload. On any failure
//! (refused connection, 401, idle stream, corrupt frame, server restart) the data plane keeps
//! serving what it applied last, and the driver waits with exponential backoff and jitter
//! ([`BACKOFF_INITIAL`] to [`BACKOFF_MAX`]) and connects again; the server then sends its current
//! snapshot first. A snapshot byte-identical to the last
//! one received is not published again. A snapshot that cannot be decoded is not published; when
//! its `version` can be read it is acknowledged as refused, with the decoding error as the reason.
//!
//! When `bootstrap_path` names a readable snapshot file, it is published before [`subscribe`]
//! returns, so a router started while the operator is down serves it at once. The driver ends when
//! the [`Subscription`] is dropped.
//!
//! [`BACKOFF_INITIAL`]: crate::limits::BACKOFF_INITIAL
//! [`BACKOFF_MAX`]: crate::limits::BACKOFF_MAX

use crate::ack::AckMessage;
use crate::backoff::Backoff;
use crate::bootstrap::read_bootstrap;
use crate::frame::{Frame, FrameDecoder};
use crate::limits::{MAX_PENDING_ACKS, MAX_SUBSCRIBER_LEN, READ_IDLE_TIMEOUT};
use crate::session::{AckDelivery, Connection, SessionError, Settings};
use crate::stream::{StreamName, StreamNameError};
use crate::tls::{client_tls_config, TlsError};
use bulkhead_snapshot::{handoff, Ack, Handoff, Subscription, ACK_QUEUE};
use bytes::Bytes;
use http::header::HeaderValue;
use http_body_util::BodyExt;
use rustls_pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// Where and how a data-plane process reaches the snapshot server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of the snapshot service, resolved again on every connection attempt.
    pub addr: String,
    /// The name the server certificate must be valid for (also the HTTP authority).
    pub server_name: String,
    /// PEM bundle of the CA certificates trusted to sign the server certificate.
    pub ca_pem: Vec<u8>,
    /// The file `ca_pem` came from, if any: read again before a connection attempt whenever it
    /// changed (a rotated CA), so a restart is not needed. An unreadable or invalid version is
    /// logged and the CAs trusted so far stay.
    pub ca_path: Option<PathBuf>,
    /// File holding the bearer token (a projected service-account token); read again for every
    /// request, because the kubelet rotates it.
    pub token_path: PathBuf,
    /// This process's name in acknowledgements (e.g. `router/acme/<pod>`), at most 253 bytes.
    pub subscriber: String,
    /// A snapshot file (JSON or YAML) served until the server's first snapshot arrives.
    pub bootstrap_path: Option<PathBuf>,
}

/// A configuration that cannot work (reported by [`subscribe`]; never retried).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA bundle is unusable.
    #[error("snapshot client TLS: {0}")]
    Tls(#[from] TlsError),
    /// The server name is not a DNS name or IP address.
    #[error("invalid snapshot server name {0:?}")]
    ServerName(String),
    /// The stream name is invalid.
    #[error(transparent)]
    Stream(#[from] StreamNameError),
    /// The subscriber name is empty, too long or not a valid header value.
    #[error("invalid subscriber name {0:?}")]
    Subscriber(String),
}

/// What the driver is doing, for readiness and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStatus {
    /// A stream is open and has delivered at least one frame.
    pub connected: bool,
    /// The snapshot served came from the bootstrap file (none from the server yet).
    pub serving_bootstrap: bool,
    /// Snapshot frames received from the server (published, unchanged or undecodable).
    pub received: u64,
    /// Snapshots received from the server and published (a byte-identical repeat is not).
    pub snapshots: u64,
    /// Snapshots received that could not be decoded.
    pub rejected: u64,
    /// Connection attempts that failed and open streams that were lost.
    pub failures: u64,
    /// The last failure, for logs and status pages.
    pub last_error: Option<String>,
}

/// Handle on a subscription's driver task. Dropping it does not stop the task: dropping the
/// [`Subscription`] does (or [`abort`](Self::abort)).
#[derive(Debug)]
pub struct ClientDriver {
    task: JoinHandle<()>,
    status: watch::Receiver<LinkStatus>,
}

impl ClientDriver {
    /// The driver's status, updated as it changes.
    pub fn status(&self) -> watch::Receiver<LinkStatus> {
        self.status.clone()
    }

    /// Stops the driver now (the subscription then sees end of stream).
    pub fn abort(&self) {
        self.task.abort();
    }

    /// The driver task.
    pub fn into_task(self) -> JoinHandle<()> {
        self.task
    }
}

/// Subscribes to `stream` on the snapshot server described by `config`. See the module docs.
pub async fn subscribe<T>(
    config: ClientConfig,
    stream: StreamName,
) -> Result<(Subscription<T>, ClientDriver), ClientError>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    stream.validate()?;
    let subscriber = HeaderValue::from_str(&config.subscriber)
        .ok()
        .filter(|_| !config.subscriber.is_empty() && config.subscriber.len() <= MAX_SUBSCRIBER_LEN)
        .ok_or_else(|| ClientError::Subscriber(config.subscriber.clone()))?;
    let server_name = ServerName::try_from(config.server_name.clone())
        .map_err(|_| ClientError::ServerName(config.server_name.clone()))?;
    let authority = match &server_name {
        ServerName::IpAddress(ip) if std::net::IpAddr::from(*ip).is_ipv6() => {
            format!("[{}]", config.server_name)
        }
        _ => config.server_name.clone(),
    };
    let settings = Settings {
        addr: config.addr,
        server_name,
        authority,
        connector: TlsConnector::from(client_tls_config(&config.ca_pem)?),
        ca_path: config.ca_path,
        ca_stamp: None,
        token_path: config.token_path,
        subscriber,
    };

    let (ack_tx, acks) = mpsc::channel(ACK_QUEUE);
    let (snapshots, subscription) = handoff(config.subscriber.clone(), ack_tx);
    let mut initial = LinkStatus::default();
    if let Some(path) = &config.bootstrap_path {
        match read_bootstrap::<T>(path).await {
            Ok(snapshot) => {
                tracing::info!(%stream, path = %path.display(), "serving bootstrap snapshot");
                snapshots.put(Arc::new(snapshot));
                initial.serving_bootstrap = true;
            }
            Err(e) if e.is_not_found() => {
                tracing::info!(%stream, path = %path.display(), "no bootstrap snapshot")
            }
            Err(e) => tracing::warn!(%stream, error = %e, "bootstrap snapshot ignored"),
        }
    }
    let (status, status_rx) = watch::channel(initial);
    let link = Link {
        settings,
        stream,
        subscriber: config.subscriber,
        snapshots,
        acks,
        pending: VecDeque::new(),
        last_payload: None,
        status,
    };
    // Boxed before it is spawned: the link's future is kilobytes, and each move through `spawn`
    // would take as much of the caller's stack (the main thread's, whose pages stay resident).
    let task = tokio::spawn(Box::pin(link.run()));
    Ok((
        subscription,
        ClientDriver {
            task,
            status: status_rx,
        },
    ))
}

/// The driver's state, kept across connections.
struct Link<T> {
    settings: Settings,
    stream: StreamName,
    subscriber: String,
    snapshots: Handoff<T>,
    acks: mpsc::Receiver<Ack>,
    pending: VecDeque<Ack>,
    /// SHA-256 of the last payload received, to recognise a byte-identical repeat without keeping
    /// the payload (2 MB for a router with 5,000 routes).
    last_payload: Option<[u8; 32]>,
    status: watch::Sender<LinkStatus>,
}

/// What became of one received payload.
enum Received {
    /// Byte-identical to the previous one: not decoded again.
    Unchanged,
    /// Decoded and handed to the data plane.
    Handed([u8; 32]),
    /// Not a snapshot of this stream's type; the previous one keeps serving.
    Undecodable {
        digest: [u8; 32],
        version: Option<u64>,
        reason: String,
    },
}

impl<T: DeserializeOwned + Send + Sync + 'static> Link<T> {
    async fn run(mut self) {
        let watcher = self.snapshots.clone();
        let mut backoff = Backoff::default();
        loop {
            self.settings.refresh_ca(&self.stream).await;
            let result = tokio::select! {
                () = watcher.closed() => break,
                result = self.session(&mut backoff) => result,
            };
            let Err(e) = result else { break };
            let delay = backoff.next_delay();
            tracing::warn!(stream = %self.stream, error = %e, retry_in = ?delay, "snapshot stream unavailable; serving the last snapshot");
            self.status.send_modify(|s| {
                s.connected = false;
                s.failures += 1;
                s.last_error = Some(e.to_string());
            });
            if !self.pause(delay).await {
                break;
            }
        }
        tracing::debug!(stream = %self.stream, "snapshot subscription closed");
    }

    /// One connection: returns `Ok` when the subscription was dropped, the failure otherwise.
    async fn session(&mut self, backoff: &mut Backoff) -> Result<(), SessionError> {
        let mut conn = Connection::open(&self.settings).await?;
        let mut body = conn.open_stream(&self.settings, &self.stream).await?;
        let mut decoder = FrameDecoder::new();
        let mut healthy = false;
        loop {
            self.flush_acks(&mut conn).await?;
            tokio::select! {
                frame = tokio::time::timeout(READ_IDLE_TIMEOUT, body.frame()) => {
                    let data = match frame {
                        Err(_) => return Err(SessionError::Idle),
                        Ok(None) => return Err(SessionError::Ended),
                        Ok(Some(Err(e))) => return Err(e.into()),
                        Ok(Some(Ok(frame))) => match frame.into_data() {
                            Ok(data) => data,
                            Err(_) => continue,
                        },
                    };
                    decoder.push(&data);
                    while let Some(frame) = decoder.next_frame()? {
                        if !healthy {
                            healthy = true;
                            backoff.reset();
                            self.status.send_modify(|s| s.connected = true);
                            tracing::info!(stream = %self.stream, addr = %self.settings.addr, "snapshot stream connected");
                        }
                        if let Frame::Snapshot(payload) = frame {
                            self.on_snapshot(payload).await;
                        }
                    }
                }
                ack = self.acks.recv() => match ack {
                    Some(ack) => self.queue_ack(ack),
                    None => return Ok(()),
                },
            }
        }
    }

    async fn on_snapshot(&mut self, payload: Bytes) {
        self.status.send_modify(|s| s.received += 1);
        // Hashing, decoding (milliseconds for thousands of routes) and the hand-off happen on a
        // blocking thread: the data plane's applier is woken from there, not after another trip
        // through this task's run queue.
        let last = self.last_payload;
        let snapshots = self.snapshots.clone();
        let status = self.status.clone();
        let received = tokio::task::spawn_blocking(move || {
            let digest: [u8; 32] = Sha256::digest(&payload).into();
            if last == Some(digest) {
                return Received::Unchanged;
            }
            match decode::<T>(&payload) {
                Ok(snapshot) => {
                    // Counted first: whoever sees the snapshot sees it counted.
                    status.send_modify(|s| {
                        s.snapshots += 1;
                        s.serving_bootstrap = false;
                    });
                    snapshots.put(Arc::new(snapshot));
                    Received::Handed(digest)
                }
                Err((version, reason)) => Received::Undecodable {
                    digest,
                    version,
                    reason,
                },
            }
        })
        .await
        .unwrap_or_else(|e| Received::Undecodable {
            digest: [0; 32],
            version: None,
            reason: format!("decoder task failed: {e}"),
        });
        match received {
            Received::Unchanged => {
                tracing::debug!(stream = %self.stream, "snapshot unchanged since the last one");
            }
            Received::Handed(digest) => self.last_payload = Some(digest),
            Received::Undecodable {
                digest,
                version,
                reason,
            } => {
                self.last_payload = Some(digest);
                tracing::error!(stream = %self.stream, ?version, %reason, "snapshot cannot be decoded; keeping the last one");
                self.status.send_modify(|s| s.rejected += 1);
                if let Some(version) = version {
                    self.queue_ack(Ack {
                        subscriber: self.subscriber.clone(),
                        version,
                        outcome: Err(format!("snapshot cannot be decoded: {reason}")),
                    });
                }
            }
        }
    }

    fn queue_ack(&mut self, ack: Ack) {
        self.pending.push_back(ack);
        if self.pending.len() > MAX_PENDING_ACKS {
            if let Some(old) = self.pending.pop_front() {
                tracing::warn!(stream = %self.stream, version = old.version, "undelivered acknowledgement dropped");
            }
        }
    }

    /// Posts pending acknowledgements in order. One the server cannot take now (5xx) stays first in
    /// line and is tried again at the next event of the stream (a frame, at least every keep-alive
    /// interval, or a new acknowledgement), without dropping the stream.
    async fn flush_acks(&mut self, conn: &mut Connection) -> Result<(), SessionError> {
        while let Some(ack) = self.pending.front() {
            let message = AckMessage::from_ack(self.stream.clone(), ack);
            match conn.post_ack(&self.settings, &message).await? {
                AckDelivery::Delivered => {
                    tracing::debug!(stream = %self.stream, version = message.version, ok = message.ok, "acknowledgement delivered")
                }
                AckDelivery::Refused(status) => {
                    tracing::warn!(stream = %self.stream, version = message.version, %status, "acknowledgement refused by the server; dropped")
                }
                AckDelivery::Retry(status) => {
                    tracing::debug!(stream = %self.stream, version = message.version, %status, "acknowledgement not taken; retried with the next frame");
                    return Ok(());
                }
            }
            self.pending.pop_front();
        }
        Ok(())
    }

    /// Waits `delay`, keeping acknowledgements that arrive meanwhile; `false` when the subscription
    /// was dropped.
    async fn pause(&mut self, delay: std::time::Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                ack = self.acks.recv() => match ack {
                    Some(ack) => self.queue_ack(ack),
                    None => return false,
                },
            }
        }
    }
}

/// Decodes a snapshot; on failure, the version if the payload has a readable one, and the reason.
fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, (Option<u64>, String)> {
    #[derive(Deserialize)]
    struct VersionOnly {
        version: Option<u64>,
    }
    serde_json::from_slice(payload).map_err(|e| {
        let version = serde_json::from_slice::<VersionOnly>(payload)
            .ok()
            .and_then(|v| v.version);
        (version, e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Snap {
        version: u64,
        name: String,
    }

    #[test]
    fn undecodable_snapshot_reports_its_version_when_readable() {
        assert_eq!(
            decode::<Snap>(br#"{"version":3,"name":"a"}"#),
            Ok(Snap {
                version: 3,
                name: "a".into()
            })
        );
        let (version, reason) = decode::<Snap>(br#"{"version":4,"name":7}"#).unwrap_err();
        assert_eq!(version, Some(4));
        assert!(reason.contains("invalid type"), "{reason}");
        assert_eq!(decode::<Snap>(b"\xff garbage").unwrap_err().0, None);
    }
}
