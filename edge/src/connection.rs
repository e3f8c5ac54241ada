//! One client connection, from accept to close: read a trusted load balancer's PROXY header and
//! sniff the name (both bounded by the per-source and global sniffing limits and one deadline),
//! find the tenant in the table current once the name is known, take one of the source's slots for that tenant and
//! one of the tenant's, connect to one of its routers (another endpoint on failure, nothing sent
//! yet), write the PROXY v2 header and the sniffed bytes, then copy both ways until both sides are
//! done. Per-source limits are checked before the shared sniffing pool is touched.

use crate::balance::{pick_endpoint, Tried};
use crate::cidr::Cidr;
use crate::config::EdgeLimits;
use crate::metrics::{EdgeMetrics, GaugeGuard, ListenerLabels};
use crate::refusals::RefusalTally;
use crate::refuse::{refuse, Dialect, Refusal};
use crate::sources::SourceLimits;
use crate::table::{listener_label, EdgeTable, PortEntry, TenantEntry};
use crate::upstream_proxy::{client_addresses, looks_like_proxy_header};
use arc_swap::ArcSwap;
use bulkhead_net::clock;
use bulkhead_proxy_io::{
    copy_tcp_bidirectional_observed, encode_v2, CopyDirection, ProxyAddresses,
};
use bulkhead_snapshot::EdgePort;
use bulkhead_sniff::{read_client_hello, read_http_host, SniffError};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::timeout_at;

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The current routing table; a connection looks its name up once, as soon as it is sniffed
    /// (a change that lands while a client is still connecting applies to it).
    pub(crate) table: ArcSwap<EdgeTable>,
    pub(crate) limits: EdgeLimits,
    pub(crate) metrics: Arc<EdgeMetrics>,
    pub(crate) proxy_protocol: bool,
    /// Peers that must send a PROXY header (upstream load balancers); empty: none may.
    pub(crate) accept_proxy_from: Vec<Cidr>,
    /// Refusals since the last summary line.
    pub(crate) refusals: RefusalTally,
    /// Per-source rate and caps.
    pub(crate) sources: SourceLimits,
    /// Slots for connections still sniffing.
    pub(crate) sniff_slots: Arc<Semaphore>,
    /// Fired when the drain deadline passed: every connection ends at once.
    pub(crate) hard_stop: bulkhead_net::HardStop,
}

impl Shared {
    /// Counts a refusal in the metrics (`tenant` empty before it is known) and the log summary.
    fn count_refusal(&self, listener: &'static str, tenant: &str, reason: &'static str) {
        self.metrics.refuse(listener, tenant, reason);
        self.refusals.note(reason);
    }
}

/// Serves one accepted client connection on the listener of `port`.
pub(crate) async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    port: EdgePort,
    shared: Arc<Shared>,
) {
    let listener = listener_label(port);
    let metrics = &shared.metrics;
    let _open = GaugeGuard::new(&metrics.open_connections);
    let local = match client.local_addr() {
        Ok(addr) => bulkhead_net::canonical(addr),
        Err(e) => {
            tracing::debug!(%peer, listener, error = %e, "connection gone before it was served");
            return;
        }
    };
    // `TCP_NODELAY` comes from the listener (`bulkhead_net::bind`).

    // Per source first, so that one source over its limits takes nothing from the shared pool.
    let peer_slot = match shared.sources.admit(peer.ip()) {
        Ok(slot) => slot,
        Err(reason) => {
            shared.count_refusal(listener, "", reason);
            tracing::debug!(%peer, listener, reason, "refused: per-source limit");
            return;
        }
    };
    let Ok(sniff_slot) = shared.sniff_slots.clone().try_acquire_owned() else {
        shared.count_refusal(listener, "", "max_sniffing");
        tracing::debug!(%peer, listener, "refused: too many connections still sniffing");
        return;
    };
    let mut client = client;
    let mut sniffed = Vec::new();
    let sniffing = GaugeGuard::new(&metrics.sniffing);
    let started = clock::tokio_now();
    let timeout = shared.limits.sniff_timeout;
    let addrs = client_addresses(
        &mut client,
        &mut sniffed,
        peer,
        local,
        &shared.accept_proxy_from,
        timeout,
    )
    .await;
    let addrs = match addrs {
        Ok(addrs) => addrs,
        Err(reason) => {
            metrics.refuse(listener, "", reason);
            shared.refusals.note(reason);
            tracing::debug!(%peer, listener, reason, "refused: no valid PROXY header from a trusted load balancer");
            return;
        }
    };
    // A trusted load balancer is exempt; the client it declares is counted from here on.
    let source_slot = match peer_slot {
        Some(slot) => Some(slot),
        None => match shared.sources.admit(addrs.source.ip()) {
            Ok(slot) => slot,
            Err(reason) => {
                shared.count_refusal(listener, "", reason);
                tracing::debug!(%peer, source = %addrs.source, listener, reason, "refused: per-source limit");
                return;
            }
        },
    };
    let remaining = timeout.saturating_sub(clock::tokio_now().saturating_duration_since(started));
    let host = sniff(&mut client, &mut sniffed, port, remaining).await;
    drop(sniffing);
    drop(sniff_slot);
    drop(source_slot);
    let peer = addrs.source;
    let dialect = Dialect::of(port, &sniffed);
    let host = match host {
        Ok(host) => {
            sniff_outcome(metrics, listener, "ok");
            host
        }
        Err(e) if looks_like_proxy_header(&sniffed) => {
            sniff_outcome(metrics, listener, e.reason());
            metrics.refuse(listener, "", "untrusted_proxy_header");
            shared.refusals.note("untrusted_proxy_header");
            tracing::debug!(%peer, listener, "refused: PROXY header from a peer that is not a trusted load balancer");
            return;
        }
        Err(e) if dialect == Dialect::H2 => {
            sniff_outcome(metrics, listener, e.reason());
            let reason = h2_refusal_reason(&e);
            shared.count_refusal(listener, "", reason);
            tracing::debug!(%peer, listener, reason, error = %e, "refused: no valid first HTTP/2 request");
            if let Some(refusal) = Refusal::for_sniff_error(&e) {
                refuse(client, dialect, refusal, shared.limits.linger_timeout).await;
            }
            return;
        }
        Err(e) => {
            sniff_outcome(metrics, listener, e.reason());
            shared.refusals.note(e.reason());
            tracing::debug!(%peer, listener, reason = e.reason(), error = %e, "refused: sniffing failed");
            if let Some(refusal) = Refusal::for_sniff_error(&e) {
                refuse(client, dialect, refusal, shared.limits.linger_timeout).await;
            }
            return;
        }
    };
    let tenant = shared.table.load().lookup(host.as_deref()).cloned();
    let Some(tenant) = tenant else {
        metrics
            .unknown_hostnames
            .get_or_create(&ListenerLabels { listener })
            .inc();
        let refusal = match &host {
            Some(host) => {
                shared.refusals.note("unknown_host");
                tracing::debug!(%peer, listener, host, "refused: no tenant owns the name");
                Refusal::UnknownHost
            }
            None => {
                shared.count_refusal(listener, "", NO_CATCH_ALL);
                tracing::debug!(%peer, listener, "refused: no SNI or a request by address, and no tenant owns \"*\"");
                Refusal::NoCatchAll
            }
        };
        refuse(client, dialect, refusal, shared.limits.linger_timeout).await;
        return;
    };
    forward(client, addrs, sniffed, &tenant, port, &shared).await;
}

/// The `refused` reason of a connection that names no host (a ClientHello without SNI, a request
/// by address) when no tenant owns `*`.
const NO_CATCH_ALL: &str = "no_catch_all";

/// The `refused` reason of a cleartext HTTP/2 connection whose first request could not be read
/// (preface, frames up to the end of the first header block): a fixed label per cause.
fn h2_refusal_reason(e: &SniffError) -> &'static str {
    match e {
        SniffError::Timeout => "h2_timeout",
        SniffError::TooLarge => "h2_too_large",
        SniffError::Closed | SniffError::Io(_) => "h2_closed",
        SniffError::MissingHost | SniffError::BadHost(_) => "h2_bad_host",
        SniffError::NotTls | SniffError::NotHttp | SniffError::Malformed(_) => "h2_malformed",
    }
}

/// Reads the routing name within `timeout`: the SNI on the TLS listener, the `Host` (or, for
/// cleartext HTTP/2 with prior knowledge, the first request's `:authority`) on the HTTP
/// listener; `None` when the client named no host (a ClientHello without SNI, a request by IP
/// address), which only the tenant owning `*` serves. `buf` may already hold the stream's first
/// bytes.
async fn sniff(
    client: &mut TcpStream,
    buf: &mut Vec<u8>,
    port: EdgePort,
    timeout: Duration,
) -> Result<Option<String>, SniffError> {
    match port {
        EdgePort::Https => read_client_hello(client, buf, timeout)
            .await
            .map(|hello| hello.sni),
        EdgePort::Http => read_http_host(client, buf, timeout)
            .await
            .map(|head| head.host.name().map(str::to_owned)),
    }
}

fn sniff_outcome(metrics: &EdgeMetrics, listener: &'static str, outcome: &'static str) {
    metrics.count_sniff(listener, outcome);
}

/// Forwards a sniffed connection to one of the tenant's routers; `addrs` go in the PROXY header.
async fn forward(
    mut client: TcpStream,
    addrs: ProxyAddresses,
    sniffed: Vec<u8>,
    tenant: &TenantEntry,
    port: EdgePort,
    shared: &Shared,
) {
    let listener = listener_label(port);
    let limits = &shared.limits;
    let metrics = &shared.metrics;
    let peer = addrs.source;
    let dialect = Dialect::of(port, &sniffed);
    let refused = |reason: &'static str| {
        shared.count_refusal(listener, &tenant.name, reason);
        tracing::debug!(%peer, listener, tenant = %tenant.name, reason, "refused");
    };
    // The source's share of the tenant first: a source at its cap takes no tenant slot.
    let _source_slot = match shared.sources.forward(&tenant.name, peer.ip()) {
        Ok(slot) => slot,
        Err(reason) => {
            refused(reason);
            refuse(client, dialect, Refusal::Unavailable, limits.linger_timeout).await;
            return;
        }
    };
    let Some(_tenant_slot) = tenant.try_acquire(limits.max_connections_per_tenant) else {
        refused("tenant_limit");
        refuse(client, dialect, Refusal::Unavailable, limits.linger_timeout).await;
        return;
    };
    let entry = tenant.port(port);
    if entry.endpoints.is_empty() {
        refused("no_endpoint");
        refuse(client, dialect, Refusal::Unavailable, limits.linger_timeout).await;
        return;
    }
    let Some((mut upstream, index)) = connect(entry, limits, metrics).await else {
        refused("connect_failed");
        refuse(client, dialect, Refusal::Unavailable, limits.linger_timeout).await;
        return;
    };
    let endpoint = &entry.endpoints[index];
    let _endpoint_open = entry.open(endpoint, metrics);
    let series = entry.series(metrics);
    let _ = upstream.set_nodelay(true);

    let replayed = u64::try_from(sniffed.len()).unwrap_or(u64::MAX);
    // The bytes read while sniffing go first, after the PROXY header when there is one; without
    // one they are sent from the sniff buffer itself.
    let head = if shared.proxy_protocol {
        let mut head = encode_v2(&addrs);
        head.extend_from_slice(&sniffed);
        drop(sniffed);
        head
    } else {
        sniffed
    };

    let relay = async {
        timeout_at(
            clock::tokio_now() + limits.idle_timeout,
            upstream.write_all(&head),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "router did not read"))??;
        drop(head);
        series.bytes_to_router.inc_by(replayed);
        copy_tcp_bidirectional_observed(&mut client, &mut upstream, limits.idle_timeout, |d, n| {
            match d {
                CopyDirection::ClientToServer => series.bytes_to_router.inc_by(n),
                CopyDirection::ServerToClient => series.bytes_to_client.inc_by(n),
            };
        })
        .await
    };
    // Counted when this ends: with the relay's outcome, or `drained` when the hard stop aborts the
    // connection's task mid-relay.
    let mut closed = ClosedCount {
        entry,
        metrics,
        outcome: "drained",
    };
    closed.outcome = match relay.await {
        Ok(_) => "ok",
        Err(e) if e.kind() == io::ErrorKind::TimedOut => "idle_timeout",
        Err(e) => {
            tracing::debug!(%peer, listener, tenant = %tenant.name, endpoint = %endpoint.addr, error = %e, "forwarded connection failed");
            "error"
        }
    };
}

/// Counts a forwarded connection's end in `closed{outcome}` when dropped.
struct ClosedCount<'a> {
    entry: &'a PortEntry,
    metrics: &'a EdgeMetrics,
    outcome: &'static str,
}

impl Drop for ClosedCount<'_> {
    fn drop(&mut self) {
        self.entry.count_closed(self.outcome, self.metrics);
    }
}

/// Connects to one of the port's endpoints (power of two choices), trying up to
/// `limits.connect_attempts` distinct endpoints. Returns the stream and the endpoint's index.
async fn connect(
    entry: &PortEntry,
    limits: &EdgeLimits,
    metrics: &EdgeMetrics,
) -> Option<(TcpStream, usize)> {
    let (tenant, listener) = (&*entry.tenant, entry.listener);
    let endpoints = &entry.endpoints;
    let now = clock::now();
    let mut tried = Tried::default();
    for _ in 0..limits.connect_attempts.max(1) {
        let index = pick_endpoint(
            endpoints.len(),
            |i| endpoints[i].load(),
            |i| tried.contains(i),
            |i| endpoints[i].state.health.is_skipped(now),
            &mut rand::rng(),
        )?;
        tried.insert(index);
        let endpoint = &entry.endpoints[index];
        let started = clock::tokio_now();
        let deadline = started + limits.connect_timeout;
        match timeout_at(deadline, TcpStream::connect(endpoint.addr)).await {
            Ok(Ok(stream)) => {
                entry.series(metrics).connect_duration.observe(
                    clock::tokio_now()
                        .saturating_duration_since(started)
                        .as_secs_f64(),
                );
                endpoint.state.health.connect_succeeded();
                return Some((stream, index));
            }
            Ok(Err(e)) => {
                tracing::debug!(tenant, listener, endpoint = %endpoint.addr, error = %e, "router endpoint unreachable");
            }
            Err(_) => {
                tracing::debug!(tenant, listener, endpoint = %endpoint.addr, "connecting to router endpoint timed out");
            }
        }
        entry
            .endpoint_series(endpoint, metrics)
            .connect_errors
            .inc();
        let backoff = endpoint
            .state
            .health
            .connect_failed(clock::now(), limits, || {
                metrics
                    .endpoints_failing
                    .get_or_create_owned(&entry.tenant_labels())
            });
        tracing::debug!(tenant, listener, endpoint = %endpoint.addr, seconds = backoff.as_secs(), "router endpoint marked failing");
    }
    None
}
