//! The two listeners of a router and what happens to one connection on each.
//!
//! * TLS listener: PROXY v2 header (client address) → ClientHello sniffed and kept → SNI lookup:
//!   passthrough (raw copy to a TLSRoute backend, TLS untouched), terminate (rustls over the replayed
//!   bytes, ALPN h2 / http/1.1, then HTTP), terminate-TCP (rustls without ALPN, then the plaintext
//!   copied to a TCPRoute / TLSRoute backend), or an `unrecognized_name` alert and close.
//! * HTTP listener: PROXY v2 header → HTTP/1.1 (or HTTP/2 prior knowledge) over the replayed bytes.
//!
//! A connection loads the configuration once, when it is accepted, and keeps it to the end.

use crate::balance::OutstandingGuard;
use crate::compile::{CompiledConfig, CompiledPassthrough, SniTarget};
use crate::http::{serve_request, ConnContext, Entry, Shared};
use crate::idle::Activity;
use crate::metrics::{
    ConnectionLabels, ConnectionOutcome, ListenerLabel, ListenerLabels, RouteLabels,
};
use crate::outlier::Health;
use arc_swap::ArcSwapOption;
use bulkhead_hostmatch::HostPattern;
use bulkhead_proxy_io::cidr::{any_contains, Cidr};
use bulkhead_proxy_io::{
    copy_bidirectional_observed, copy_tcp_bidirectional_observed, read_proxy_header, CopyStats,
    ProxyHeader, Rewind,
};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::counter::Counter;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// hyper refuses an HTTP/1 read buffer smaller than this.
const MIN_H1_BUF_SIZE: usize = 8 * 1024;
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Initial capacity of the buffer that keeps the PROXY header payload and the ClientHello.
const INITIAL_SNIFF_BUFFER: usize = 4 * 1024;
/// A fatal TLS `unrecognized_name` alert record (TLS 1.2 record version, level 2, description 112).
const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

/// The HTTP server settings of a router, built once from its limits.
#[derive(Debug)]
pub(crate) struct HttpServers {
    /// HTTP/1.1 or HTTP/2 by preface (plain listener, TLS without ALPN).
    auto: auto::Builder<TokioExecutor>,
    /// ALPN `http/1.1`.
    h1: auto::Builder<TokioExecutor>,
    /// ALPN `h2`.
    h2: auto::Builder<TokioExecutor>,
}

impl HttpServers {
    pub(crate) fn new(limits: &crate::RouterLimits) -> Self {
        let mut b = auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(MIN_H1_BUF_SIZE))
            .max_headers(limits.max_headers)
            .keep_alive(true);
        b.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .max_pending_accept_reset_streams(limits.h2_max_pending_accept_reset_streams)
            .max_local_error_reset_streams(limits.h2_max_local_error_reset_streams)
            .max_header_list_size(limits.h2_max_header_list_size)
            .keep_alive_interval(limits.h2_keep_alive_interval)
            .keep_alive_timeout(limits.h2_keep_alive_timeout);
        Self {
            h1: b.clone().http1_only(),
            h2: b.clone().http2_only(),
            auto: b,
        }
    }
}

/// State shared by the accept loops of one router.
#[derive(Debug)]
pub(crate) struct ListenerState {
    pub(crate) shared: Arc<Shared>,
    pub(crate) current: ArcSwapOption<CompiledConfig>,
    pub(crate) servers: HttpServers,
    pub(crate) expect_proxy: bool,
    /// The peers allowed to send the PROXY header (see `RouterConfig::accept_proxy_from`).
    pub(crate) accept_proxy_from: Vec<Cidr>,
    /// Cancelled when shutdown starts: stop accepting, drain open connections.
    pub(crate) drain: CancellationToken,
}

/// Counts a connection as open until dropped.
struct OpenConnection {
    shared: Arc<Shared>,
    listener: ListenerLabel,
}

impl OpenConnection {
    fn new(shared: &Arc<Shared>, listener: ListenerLabel) -> Self {
        shared
            .metrics
            .open_connections
            .get_or_create(&Self::labels(shared, listener))
            .inc();
        Self {
            shared: Arc::clone(shared),
            listener,
        }
    }

    fn labels(shared: &Shared, listener: ListenerLabel) -> ListenerLabels {
        ListenerLabels {
            tenant: Arc::clone(&shared.tenant),
            listener,
        }
    }

    fn outcome(&self, outcome: ConnectionOutcome) {
        self.shared
            .metrics
            .connections
            .get_or_create(&ConnectionLabels {
                tenant: Arc::clone(&self.shared.tenant),
                listener: self.listener,
                outcome,
            })
            .inc();
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.shared
            .metrics
            .open_connections
            .get_or_create(&Self::labels(&self.shared, self.listener))
            .dec();
    }
}

/// Accepts connections until the drain starts; each one runs as a task of `tracker`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    kind: ListenerLabel,
    state: Arc<ListenerState>,
    tracker: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(state.shared.limits.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => p,
            () = state.drain.cancelled() => break,
        };
        let Ok(permit) = permit else { break };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(tenant = %state.shared.tenant, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            () = state.drain.cancelled() => break,
        };
        let Some(config) = state.current.load_full() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        tracker.spawn(async move {
            let open = OpenConnection::new(&state.shared, kind);
            let serve = async {
                match kind {
                    ListenerLabel::Https => {
                        serve_tls_connection(&state, config, stream, peer).await
                    }
                    ListenerLabel::Http => {
                        serve_plain_connection(&state, config, stream, peer).await
                    }
                }
            };
            tokio::select! {
                outcome = serve => open.outcome(outcome),
                () = state.shared.hard_stop.cancelled() => {}
            }
            drop(permit);
        });
    }
}

/// Reads the PROXY header when one is expected; the client address, or the outcome to close with.
/// Only a peer in `accept_proxy_from` may declare a client: any other is refused unread, so a pod
/// that reaches the router past an unenforced NetworkPolicy cannot choose the address it is
/// blamed, logged and rate-limited as.
async fn client_address(
    state: &ListenerState,
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    peer: SocketAddr,
) -> Result<SocketAddr, ConnectionOutcome> {
    if !state.expect_proxy {
        return Ok(peer);
    }
    if !any_contains(&state.accept_proxy_from, peer.ip()) {
        tracing::debug!(tenant = %state.shared.tenant, %peer, "PROXY header from an untrusted peer refused");
        return Err(ConnectionOutcome::ProxyUntrusted);
    }
    match read_proxy_header(stream, buf, state.shared.limits.proxy_header_timeout).await {
        Ok(ProxyHeader::Proxied(addrs)) => Ok(addrs.source),
        Ok(ProxyHeader::Local) => Ok(peer),
        Err(e) => {
            tracing::debug!(tenant = %state.shared.tenant, %peer, error = %e, "bad PROXY header");
            Err(ConnectionOutcome::ProxyHeaderError)
        }
    }
}

async fn serve_tls_connection(
    state: &ListenerState,
    config: Arc<CompiledConfig>,
    mut stream: TcpStream,
    peer: SocketAddr,
) -> ConnectionOutcome {
    let mut buf = Vec::with_capacity(INITIAL_SNIFF_BUFFER);
    let client = match client_address(state, &mut stream, &mut buf, peer).await {
        Ok(client) => client,
        Err(outcome) => return outcome,
    };
    let limits = &state.shared.limits;
    let hello = match bulkhead_sniff::read_client_hello(&mut stream, &mut buf, limits.sniff_timeout)
        .await
    {
        Ok(h) => h,
        Err(e) => {
            tracing::debug!(tenant = %state.shared.tenant, %client, reason = e.reason(), "no usable ClientHello");
            return ConnectionOutcome::SniffError;
        }
    };
    let target = match hello.sni.as_deref() {
        Some(name) => config.sni.lookup(name),
        None => config.sni.get_pattern(&HostPattern::Any),
    };
    match target {
        None => {
            tracing::debug!(tenant = %state.shared.tenant, %client, sni = ?hello.sni, "SNI not served");
            let _ = stream.write_all(&UNRECOGNIZED_NAME_ALERT).await;
            let _ = stream.shutdown().await;
            ConnectionOutcome::UnknownSni
        }
        Some(SniTarget::Passthrough(route)) => {
            passthrough(state, Arc::clone(route), stream, buf, client).await
        }
        Some(SniTarget::Terminate { certificate }) => {
            let certificate = Arc::clone(certificate);
            terminate(state, config, stream, buf, client, certificate).await
        }
        Some(SniTarget::TerminateTcp(route)) => {
            let route = Arc::clone(route);
            terminate_tcp(state, &config, route, stream, buf, client).await
        }
    }
}

/// The rustls handshake over the replayed ClientHello, with the handshake deadline.
async fn handshake(
    state: &ListenerState,
    config: Option<Arc<rustls::ServerConfig>>,
    stream: TcpStream,
    buf: Vec<u8>,
    client: SocketAddr,
) -> Option<TlsStream<Rewind<TcpStream>>> {
    let accept = TlsAcceptor::from(config?).accept(Rewind::new(buf, stream));
    match tokio::time::timeout(state.shared.limits.tls_handshake_timeout, accept).await {
        Ok(Ok(tls)) => {
            ack_now(tls.get_ref().0.get_ref());
            Some(tls)
        }
        Ok(Err(e)) => {
            tracing::debug!(tenant = %state.shared.tenant, %client, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(tenant = %state.shared.tenant, %client, "TLS handshake timed out");
            None
        }
    }
}

/// Acknowledges the client's last handshake flight at once instead of after the delayed-ACK timer.
/// Without session tickets the server sends nothing after the client's Finished, so a client with
/// Nagle's algorithm on (many HTTP libraries) holds its first request until that ACK: up to 40 ms
/// on Linux. Setting `TCP_QUICKACK` flushes the pending ACK now.
fn ack_now(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::net::sockopt::set_tcp_quickack(stream, true) {
        tracing::debug!(error = %e, "TCP_QUICKACK refused");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

/// TLS terminated in front of a TCP backend: handshake (no ALPN), then the plaintext is copied to
/// a backend endpoint, both ways, with half-close and the passthrough idle deadline.
async fn terminate_tcp(
    state: &ListenerState,
    config: &CompiledConfig,
    route: Arc<CompiledPassthrough>,
    stream: TcpStream,
    buf: Vec<u8>,
    client: SocketAddr,
) -> ConnectionOutcome {
    let Some(mut tls) = handshake(state, config.tcp_tls.clone(), stream, buf, client).await else {
        return ConnectionOutcome::HandshakeError;
    };
    let Some((mut upstream, _in_flight)) = connect_l4(state, &route, client).await else {
        let _ = tls.shutdown().await;
        return ConnectionOutcome::UpstreamError;
    };
    let counter = l4_byte_counter(state, &route, 0);
    let copy = copy_bidirectional_observed(
        &mut tls,
        &mut upstream,
        state.shared.limits.passthrough_idle_timeout,
        |_, n| {
            counter.inc_by(n);
        },
    );
    finish_l4(state, &route, copy).await;
    ConnectionOutcome::TerminatedTcp
}

async fn terminate(
    state: &ListenerState,
    config: Arc<CompiledConfig>,
    stream: TcpStream,
    buf: Vec<u8>,
    client: SocketAddr,
    certificate: Arc<str>,
) -> ConnectionOutcome {
    let Some(tls) = handshake(state, config.tls.clone(), stream, buf, client).await else {
        return ConnectionOutcome::HandshakeError;
    };
    let server = match tls.get_ref().1.alpn_protocol() {
        Some(b"h2") => &state.servers.h2,
        Some(b"http/1.1") => &state.servers.h1,
        _ => &state.servers.auto,
    };
    let ctx = ConnContext {
        shared: Arc::clone(&state.shared),
        config,
        entry: Entry::Tls { certificate },
        client,
        activity: Activity::new(),
    };
    serve_http(state, server, TokioIo::new(tls), ctx).await;
    ConnectionOutcome::Terminated
}

async fn serve_plain_connection(
    state: &ListenerState,
    config: Arc<CompiledConfig>,
    mut stream: TcpStream,
    peer: SocketAddr,
) -> ConnectionOutcome {
    let mut buf = Vec::with_capacity(INITIAL_SNIFF_BUFFER);
    let client = match client_address(state, &mut stream, &mut buf, peer).await {
        Ok(client) => client,
        Err(outcome) => return outcome,
    };
    let ctx = ConnContext {
        shared: Arc::clone(&state.shared),
        config,
        entry: Entry::Plain,
        client,
        activity: Activity::new(),
    };
    serve_http(
        state,
        &state.servers.auto,
        TokioIo::new(Rewind::new(buf, stream)),
        ctx,
    )
    .await;
    ConnectionOutcome::Http
}

/// Serves HTTP on one connection; on drain, finishes in-flight requests (hyper graceful shutdown)
/// until the hard stop.
async fn serve_http<I>(
    state: &ListenerState,
    server: &auto::Builder<TokioExecutor>,
    io: I,
    ctx: ConnContext,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let activity = Arc::clone(&ctx.activity);
    let ctx = Arc::new(ctx);
    let service = service_fn(move |req| serve_request(Arc::clone(&ctx), req));
    let conn = server.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let idle_timeout = state.shared.limits.http_idle_timeout;
    let closing = tokio::select! {
        r = conn.as_mut() => Err(r),
        () = state.drain.cancelled() => Ok("drain"),
        () = activity.idle_for(idle_timeout) => Ok("idle"),
    };
    let result = match closing {
        Err(ended) => ended,
        Ok(reason) => {
            tracing::debug!(tenant = %state.shared.tenant, reason, "closing HTTP connection gracefully");
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn.as_mut() => r,
                () = state.shared.hard_stop.cancelled() => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(tenant = %state.shared.tenant, error = %e, "HTTP connection ended with an error");
    }
}

async fn passthrough(
    state: &ListenerState,
    route: Arc<CompiledPassthrough>,
    mut client_stream: TcpStream,
    buf: Vec<u8>,
    client: SocketAddr,
) -> ConnectionOutcome {
    let Some((mut upstream, _in_flight)) = connect_l4(state, &route, client).await else {
        return ConnectionOutcome::UpstreamError;
    };
    if let Err(e) = upstream.write_all(&buf).await {
        tracing::debug!(route = %route.label, error = %e, "passthrough replay failed");
        return ConnectionOutcome::UpstreamError;
    }
    let counter = l4_byte_counter(state, &route, buf.len() as u64);
    drop(buf);
    // Both sides are plain sockets: bulk flows move by splice(2) on Linux.
    let copy = copy_tcp_bidirectional_observed(
        &mut client_stream,
        &mut upstream,
        state.shared.limits.passthrough_idle_timeout,
        |_, n| {
            counter.inc_by(n);
        },
    );
    finish_l4(state, &route, copy).await;
    ConnectionOutcome::Passthrough
}

/// Connects to an endpoint of a TLSRoute's or TCPRoute's weighted backends, trying other endpoints
/// on failure (nothing has been sent yet).
async fn connect_l4(
    state: &ListenerState,
    route: &CompiledPassthrough,
    client: SocketAddr,
) -> Option<(TcpStream, OutstandingGuard)> {
    let limits = &state.shared.limits;
    let mut failed = Vec::new();
    for _ in 0..limits.passthrough_connect_attempts.max(1) {
        let Some(Some(backend)) = route.backends.pick() else {
            break;
        };
        let Some(endpoint) = backend.pick_endpoint_avoiding(&failed) else {
            continue;
        };
        match tokio::time::timeout(
            limits.upstream_connect_timeout,
            TcpStream::connect(endpoint.addr),
        )
        .await
        {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                backend.observe(
                    endpoint,
                    Health::Success,
                    &state.shared.outlier,
                    Instant::now(),
                );
                return Some((s, endpoint.start()));
            }
            Ok(Err(e)) => {
                tracing::debug!(route = %route.label, endpoint = %endpoint.addr, error = %e, "backend connect failed");
            }
            Err(_) => {
                tracing::debug!(route = %route.label, endpoint = %endpoint.addr, "backend connect timed out");
            }
        }
        backend.observe(
            endpoint,
            Health::GatewayFailure,
            &state.shared.outlier,
            Instant::now(),
        );
        failed.push(endpoint.addr);
    }
    tracing::debug!(route = %route.label, %client, "no backend reachable");
    None
}

/// The byte counter of an L4 route, advanced by the `already` bytes sent before the copy began.
fn l4_byte_counter(state: &ListenerState, route: &CompiledPassthrough, already: u64) -> Counter {
    let counter = state
        .shared
        .metrics
        .passthrough_bytes
        .get_or_create_owned(&RouteLabels {
            tenant: Arc::clone(&state.shared.tenant),
            route: Arc::clone(&route.label),
        });
    counter.inc_by(already);
    counter
}

/// Runs an L4 copy (both ways until both halves close or the idle deadline passes) to its end, or
/// until the hard stop after a drain.
async fn finish_l4(
    state: &ListenerState,
    route: &CompiledPassthrough,
    copy: impl Future<Output = io::Result<CopyStats>>,
) {
    tokio::select! {
        r = copy => if let Err(e) = r {
            tracing::debug!(route = %route.label, error = %e, "stream copy ended with an error");
        },
        () = state.shared.hard_stop.cancelled() => {}
    }
}
