//! HTTP/1.1 protocol upgrades (WebSocket): once the backend answered 101, the client's and the
//! backend's connections are joined and bytes are copied both ways until either side closes or the
//! idle deadline passes. The tunnel keeps its client connection's slot (connection limits and the
//! `open_connections` gauge) until it ends.

use super::Shared;
use crate::listener::ConnectionSlot;
use crate::upstream::Upgraded;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::Arc;

/// Joins the two upgraded connections in a background task that shutdown drains like a connection;
/// the task holds `slot` until the tunnel ends.
pub(crate) fn bridge(
    shared: &Shared,
    slot: Arc<ConnectionSlot>,
    client: OnUpgrade,
    mut upstream: Upgraded,
) {
    let idle = shared.limits.upgrade_idle_timeout;
    let stop = shared.hard_stop.clone();
    shared.tasks.spawn(async move {
        let _slot = slot;
        let client = match client.await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "protocol upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        tokio::select! {
            result = bulkhead_proxy_io::copy_bidirectional(&mut client, &mut upstream, idle) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "upgraded connection ended with an error");
                }
            }
            () = stop.cancelled() => {}
        }
    });
}
