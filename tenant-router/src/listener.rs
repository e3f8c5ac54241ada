//! The two listeners of a router and what happens to one connection on each.
//!
//! * TLS listener: PROXY v2 header (client address) → ClientHello sniffed and kept → SNI lookup:
//!   passthrough (raw copy to a TLSRoute backend, TLS untouched), terminate (rustls over the replayed
//!   bytes, ALPN h2 / http/1.1, then HTTP), terminate-TCP (rustls without ALPN, then the plaintext
//!   copied to a TCPRoute / TLSRoute backend), or an `unrecognized_name` alert and close.
//! * HTTP listener: PROXY v2 header → HTTP/1.1 (or HTTP/2 prior knowledge) over the replayed bytes.
//!
//! A connection loads the configuration once, when its first bytes are read (the ClientHello, or
//! on the HTTP listener the end of the PROXY header), and keeps it to the end: a change that lands
//! while a client is still connecting applies to that client.

use crate::balance::OutstandingGuard;
use crate::body::{ObservedBody, ProxyBody};
use crate::compile::tls::ClientAuth;
use crate::compile::{CompiledPassthrough, SniTarget};
use crate::conn_streams::{ConnStreams, WithStreams};
use crate::http::{grpc, local_response};
use crate::http::{serve_request, ConnContext, Entry, Shared};
use crate::idle::Activity;
use crate::limits::MIN_H1_BUF_SIZE;
use crate::metrics::{
    ConnectionLabels, ConnectionOutcome, ListenerLabel, ListenerLabels, RouteLabels,
};
use crate::metrics::{LimitLabels, RequestLimit};
use crate::outlier::Health;
use bulkhead_hostmatch::HostPattern;
use bulkhead_proxy_io::cidr::{any_contains, Cidr};
use bulkhead_proxy_io::{
    copy_bidirectional_observed, copy_tcp_bidirectional_observed, read_proxy_header, CopyStats,
    ProxyHeader, Rewind,
};
use bulkhead_source_limit::{ConcurrencyGuard, ConcurrencyLimiter, SourceKey};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Initial capacity of the buffer that keeps the PROXY header payload and the ClientHello.
const INITIAL_SNIFF_BUFFER: usize = 4 * 1024;
/// A fatal TLS `unrecognized_name` alert record (TLS 1.2 record version, level 2, description 112).
const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];
/// The HTTP/2 connection preface (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The HTTP server settings of a router, built once from its limits.
#[derive(Debug)]
pub(crate) struct HttpServers {
    /// HTTP/1.1: ALPN `http/1.1`, or no ALPN and no HTTP/2 preface.
    h1: http1::Builder,
    /// HTTP/2: ALPN `h2`, or no ALPN and the HTTP/2 preface (see [`Self::h2`]).
    h2: H2Settings,
    /// HTTP/2 streams in flight on the whole router ([`RouterLimits::h2_max_streams_per_router`]).
    h2_streams: Arc<Semaphore>,
}

impl HttpServers {
    pub(crate) fn new(limits: &crate::RouterLimits) -> Self {
        let mut h1 = http1::Builder::new();
        // No hyper header timer: the connection's idle timer is the header read timeout (see
        // `crate::idle`), without a boxed timer per request.
        h1.header_read_timeout(None)
            .max_buf_size(limits.max_header_bytes.max(MIN_H1_BUF_SIZE))
            .max_headers(limits.max_headers)
            .keep_alive(true);
        let h2 = H2Settings {
            max_concurrent_streams: limits.h2_max_concurrent_streams,
            max_pending_accept_reset_streams: limits.h2_max_pending_accept_reset_streams,
            max_local_error_reset_streams: limits.h2_max_local_error_reset_streams,
            max_header_list_size: limits.h2_max_header_list_size,
            max_send_buf_size: limits.h2_max_send_buf_size,
            initial_stream_window: limits.h2_initial_stream_window,
            initial_connection_window: limits.h2_initial_connection_window,
            keep_alive_interval: limits.h2_keep_alive_interval,
            keep_alive_timeout: limits.h2_keep_alive_timeout,
        };
        Self {
            h1,
            h2,
            h2_streams: Arc::new(Semaphore::new(limits.h2_max_streams_per_router.max(1))),
        }
    }

    /// The HTTP/2 server of one connection, whose streams run on the connection's task (see
    /// [`conn_streams`](crate::conn_streams)).
    fn h2(&self, streams: ConnStreams) -> http2::Builder<ConnStreams> {
        let h2 = &self.h2;
        let mut builder = http2::Builder::new(streams);
        builder
            .timer(crate::timer::WorkerTimer::default())
            .max_concurrent_streams(h2.max_concurrent_streams)
            .max_pending_accept_reset_streams(h2.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(h2.max_local_error_reset_streams)
            .max_header_list_size(h2.max_header_list_size)
            .max_send_buf_size(h2.max_send_buf_size)
            .initial_stream_window_size(h2.initial_stream_window)
            .initial_connection_window_size(h2.initial_connection_window)
            .keep_alive_interval(h2.keep_alive_interval)
            .keep_alive_timeout(h2.keep_alive_timeout);
        builder
    }
}

/// The HTTP/2 settings of a router (from its limits), applied to each connection's server.
#[derive(Debug, Clone, Copy)]
struct H2Settings {
    max_concurrent_streams: u32,
    max_pending_accept_reset_streams: usize,
    max_local_error_reset_streams: usize,
    max_header_list_size: u32,
    max_send_buf_size: usize,
    initial_stream_window: u32,
    initial_connection_window: u32,
    keep_alive_interval: std::time::Duration,
    keep_alive_timeout: std::time::Duration,
}

/// The HTTP version a connection speaks, as negotiated or announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HttpVersion {
    H1,
    H2,
}

/// State shared by the accept loops of one router.
#[derive(Debug)]
pub(crate) struct ListenerState {
    pub(crate) shared: Arc<Shared>,
    pub(crate) servers: HttpServers,
    pub(crate) expect_proxy: bool,
    /// The peers allowed to send the PROXY header (see `RouterConfig::accept_proxy_from`).
    pub(crate) accept_proxy_from: Vec<Cidr>,
    /// Cancelled when shutdown starts: stop accepting, drain open connections.
    pub(crate) drain: CancellationToken,
}

/// Counts a connection as open until dropped.
#[derive(Debug)]
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

/// Counts how one connection was handled.
fn count_outcome(shared: &Shared, listener: ListenerLabel, outcome: ConnectionOutcome) {
    shared
        .metrics
        .connections
        .get_or_create(&ConnectionLabels {
            tenant: Arc::clone(&shared.tenant),
            listener,
            outcome,
        })
        .inc();
}

/// What an admitted connection holds until it, and any tunnel it became (WebSocket), has ended:
/// its place in the listener's connection limit and its source's, and the `open_connections` count.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    _open: OpenConnection,
    _permit: OwnedSemaphorePermit,
    _source: ConcurrencyGuard<SourceKey>,
}

/// The limits one listener admits connections by, shared by its accept loops on every worker.
pub(crate) struct Admission {
    /// Connections served at once ([`RouterLimits::max_connections`]).
    slots: Arc<Semaphore>,
    /// Connections accepted whose PROXY header is not read yet (at most `max_connections`, each for
    /// at most the PROXY header timeout).
    pending: Arc<Semaphore>,
    /// Connections per client source ([`RouterLimits::max_connections_per_source`]).
    sources: Arc<ConcurrencyLimiter<SourceKey>>,
}

impl Admission {
    /// Admission by `limits`.
    pub(crate) fn new(limits: &crate::RouterLimits) -> Self {
        let max = limits.max_connections.max(1);
        Self {
            slots: Arc::new(Semaphore::new(max)),
            pending: Arc::new(Semaphore::new(max)),
            sources: ConcurrencyLimiter::new(limits.max_connections_per_source.max(1)),
        }
    }

    /// Admits a connection from `client`, or says which limit refuses it (nothing waits).
    fn admit(
        &self,
        shared: &Arc<Shared>,
        listener: ListenerLabel,
        client: SocketAddr,
    ) -> Result<ConnectionSlot, ConnectionOutcome> {
        let source = self
            .sources
            .try_acquire(SourceKey::of(client.ip()))
            .ok_or(ConnectionOutcome::SourceLimit)?;
        let permit = Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| ConnectionOutcome::ConnectionLimit)?;
        Ok(ConnectionSlot {
            _open: OpenConnection::new(shared, listener),
            _permit: permit,
            _source: source,
        })
    }
}

/// Accepts connections until the drain starts; each one runs as a task of `tracker`. A connection
/// is accepted at once (only connections still sending their PROXY header are bounded before
/// `accept`), then admitted by its source and the listener's limits, or closed and counted.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    kind: ListenerLabel,
    state: Arc<ListenerState>,
    admission: Arc<Admission>,
    tracker: TaskTracker,
) {
    let name = match kind {
        ListenerLabel::Https => "https",
        ListenerLabel::Http => "http",
    };
    while let Some(accepted) =
        bulkhead_net::accept_next(&listener, &admission.pending, &state.drain, name).await
    {
        let bulkhead_net::Accepted {
            stream,
            peer,
            permit: pending,
        } = accepted;
        if state.shared.current.load().is_none() {
            continue;
        }
        // `TCP_NODELAY` comes from the listener (`bulkhead_net::bind_for_workers`).
        let state = Arc::clone(&state);
        let admission = Arc::clone(&admission);
        tracker.spawn(async move {
            // Boxed: the connection's future (TLS and HTTP state, several KiB) is then allocated
            // once and never moved, where tokio would copy it into the task and on each stage
            // change.
            let serve = Box::pin(serve_connection(
                &state, &admission, kind, stream, peer, pending,
            ));
            tokio::select! {
                outcome = serve => count_outcome(&state.shared, kind, outcome),
                // Polled when the token fires, not on each of the connection's wake-ups.
                () = bulkhead_net::when_woken(state.shared.hard_stop.cancelled()) => {}
            }
        });
    }
}

/// One accepted connection: PROXY header, admission, then the listener's protocol.
async fn serve_connection(
    state: &ListenerState,
    admission: &Admission,
    kind: ListenerLabel,
    mut stream: TcpStream,
    peer: SocketAddr,
    pending: OwnedSemaphorePermit,
) -> ConnectionOutcome {
    let mut buf = Vec::with_capacity(INITIAL_SNIFF_BUFFER);
    let client = client_address(state, &mut stream, &mut buf, peer).await;
    drop(pending);
    let client = match client {
        Ok(client) => client,
        Err(outcome) => return outcome,
    };
    let slot = match admission.admit(&state.shared, kind, client) {
        Ok(slot) => Arc::new(slot),
        Err(refused) => {
            tracing::debug!(tenant = %state.shared.tenant, %client, reason = refused.as_str(), "connection refused");
            return refused;
        }
    };
    let conn = Accepted {
        stream,
        buf,
        client,
        slot,
    };
    match kind {
        ListenerLabel::Https => serve_tls_connection(state, conn).await,
        ListenerLabel::Http => serve_plain_connection(state, conn).await,
    }
}

/// An admitted connection: what was read of it so far and what it holds.
struct Accepted {
    stream: TcpStream,
    /// Bytes read after the PROXY header.
    buf: Vec<u8>,
    client: SocketAddr,
    slot: Arc<ConnectionSlot>,
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

async fn serve_tls_connection(state: &ListenerState, conn: Accepted) -> ConnectionOutcome {
    let Accepted {
        mut stream,
        mut buf,
        client,
        slot,
    } = conn;
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
    // (Always set: connections are accepted only once a configuration is served.)
    let Some(config) = state.shared.current.load_full() else {
        return ConnectionOutcome::UnknownSni;
    };
    // The name decides the listener and the handshake; the configuration is not kept past it (a
    // connection's requests are routed by the one current when each arrives).
    let target = match hello.sni.as_deref() {
        Some(name) => config.sni.lookup(name),
        None => config.sni.get_pattern(&HostPattern::Any),
    }
    .cloned();
    match target {
        None => {
            drop(config);
            tracing::debug!(tenant = %state.shared.tenant, %client, sni = ?hello.sni, "SNI not served");
            let _ = stream.write_all(&UNRECOGNIZED_NAME_ALERT).await;
            let _ = stream.shutdown().await;
            ConnectionOutcome::UnknownSni
        }
        Some(SniTarget::Passthrough(route)) => {
            drop(config);
            passthrough(state, route, stream, buf, client).await
        }
        Some(SniTarget::Terminate {
            listener,
            client_auth,
        }) => {
            let server = match &client_auth {
                Some(auth) => Some(Arc::clone(&auth.tls)),
                None => config.tls.clone(),
            };
            drop(config);
            let conn = Accepted {
                stream,
                buf,
                client,
                slot,
            };
            terminate(state, server, conn, listener, client_auth).await
        }
        Some(SniTarget::TerminateTcp(route)) => {
            let server = config.tcp_tls.clone();
            drop(config);
            terminate_tcp(state, server, route, stream, buf, client).await
        }
    }
}

/// The rustls handshake over the replayed ClientHello, with the handshake deadline; on failure,
/// the outcome to count.
async fn handshake(
    state: &ListenerState,
    config: Option<Arc<rustls::ServerConfig>>,
    stream: TcpStream,
    buf: Vec<u8>,
    client: SocketAddr,
) -> Result<TlsStream<Rewind<TcpStream>>, ConnectionOutcome> {
    let config = config.ok_or(ConnectionOutcome::HandshakeError)?;
    let accept = TlsAcceptor::from(config).accept(Rewind::new(buf, stream));
    match tokio::time::timeout(state.shared.limits.tls_handshake_timeout, accept).await {
        Ok(Ok(tls)) => {
            ack_now(tls.get_ref().0.get_ref());
            Ok(tls)
        }
        Ok(Err(e)) if refuses_client_certificate(&e) => {
            tracing::info!(tenant = %state.shared.tenant, %client, error = %e, "TLS handshake refused: no valid client certificate");
            Err(ConnectionOutcome::ClientCertificateRefused)
        }
        Ok(Err(e)) => {
            tracing::debug!(tenant = %state.shared.tenant, %client, error = %e, "TLS handshake failed");
            Err(ConnectionOutcome::HandshakeError)
        }
        Err(_) => {
            tracing::debug!(tenant = %state.shared.tenant, %client, "TLS handshake timed out");
            Err(ConnectionOutcome::HandshakeError)
        }
    }
}

/// Whether a handshake failed on the client's certificate: none presented where one is required,
/// or one that does not verify.
fn refuses_client_certificate(e: &io::Error) -> bool {
    matches!(
        e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_))
    )
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
    server: Option<Arc<rustls::ServerConfig>>,
    route: Arc<CompiledPassthrough>,
    stream: TcpStream,
    buf: Vec<u8>,
    client: SocketAddr,
) -> ConnectionOutcome {
    let mut tls = match handshake(state, server, stream, buf, client).await {
        Ok(tls) => tls,
        Err(outcome) => return outcome,
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

/// HTTPS: the handshake (with the listener's client certificate validation, if it has one), then
/// HTTP with the verified client identity, if any.
async fn terminate(
    state: &ListenerState,
    server: Option<Arc<rustls::ServerConfig>>,
    conn: Accepted,
    listener: Arc<str>,
    client_auth: Option<Arc<ClientAuth>>,
) -> ConnectionOutcome {
    let Accepted {
        stream,
        buf,
        client,
        slot,
    } = conn;
    let tls = match handshake(state, server, stream, buf, client).await {
        Ok(tls) => tls,
        Err(outcome) => return outcome,
    };
    let client_cert = client_auth
        .as_ref()
        .and_then(|auth| auth.identity(tls.get_ref().1));
    let version = match tls.get_ref().1.alpn_protocol() {
        Some(b"h2") => Some(HttpVersion::H2),
        Some(b"http/1.1") => Some(HttpVersion::H1),
        _ => None,
    };
    let ctx = ConnContext {
        shared: Arc::clone(&state.shared),
        entry: Entry::Tls {
            listener,
            client_auth: client_auth.map(|auth| Arc::clone(&auth.terms)),
        },
        client,
        client_ip: crate::http::headers::ip_value(client.ip()),
        activity: Activity::new(),
        slot,
        client_cert,
    };
    serve_http(state, version, Rewind::new(Vec::new(), tls), ctx).await;
    ConnectionOutcome::Terminated
}

async fn serve_plain_connection(state: &ListenerState, conn: Accepted) -> ConnectionOutcome {
    let Accepted {
        stream,
        buf,
        client,
        slot,
    } = conn;
    let ctx = ConnContext {
        shared: Arc::clone(&state.shared),
        entry: Entry::Plain,
        client,
        client_ip: crate::http::headers::ip_value(client.ip()),
        activity: Activity::new(),
        slot,
        client_cert: None,
    };
    serve_http(state, None, Rewind::new(buf, stream), ctx).await;
    ConnectionOutcome::Http
}

/// Which HTTP version a connection without ALPN speaks: HTTP/2 when its first bytes are the
/// HTTP/2 preface, HTTP/1.1 otherwise. The bytes read are appended to `buf` (to be replayed);
/// `None` when the first bytes do not arrive by `deadline` or the connection ends first.
async fn sniff_version<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
    deadline: tokio::time::Instant,
) -> Option<HttpVersion> {
    let mut chunk = [0u8; 64];
    loop {
        let seen = buf.len().min(H2_PREFACE.len());
        if buf[..seen] != H2_PREFACE[..seen] {
            return Some(HttpVersion::H1);
        }
        if seen == H2_PREFACE.len() {
            return Some(HttpVersion::H2);
        }
        match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Serves HTTP on one connection in exactly the version its ALPN negotiated (or, without ALPN,
/// the version its first bytes announce, which must arrive within the header read timeout); on
/// drain, finishes in-flight requests (hyper graceful shutdown) until the hard stop.
async fn serve_http<S>(
    state: &ListenerState,
    negotiated: Option<HttpVersion>,
    mut io: Rewind<S>,
    ctx: ConnContext,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let version = match negotiated {
        Some(v) => v,
        None => {
            let deadline = tokio::time::Instant::now() + state.shared.limits.header_read_timeout;
            let (mut buf, inner) = io.into_inner();
            let mut inner = inner;
            let sniffed = sniff_version(&mut inner, &mut buf, deadline).await;
            io = Rewind::new(buf, inner);
            match sniffed {
                Some(v) => v,
                None => {
                    tracing::debug!(tenant = %state.shared.tenant, client = %ctx.client, "no HTTP bytes before the header read timeout");
                    return;
                }
            }
        }
    };
    let activity = Arc::clone(&ctx.activity);
    let ctx = Arc::new(ctx);
    let streams = (version == HttpVersion::H2).then(|| Arc::clone(&state.servers.h2_streams));
    let service = service_fn(move |req| handle(streams.clone(), Arc::clone(&ctx), req));
    let io = TokioIo::new(io);
    let limits = &state.shared.limits;
    let result = match version {
        HttpVersion::H1 => {
            let conn = state
                .servers
                .h1
                .serve_connection(io, service)
                .with_upgrades();
            let idle = Idle {
                after: limits.http_idle_timeout.min(limits.header_read_timeout),
                abandon_unused: true,
            };
            drive(state, conn, &activity, idle, |c| c.graceful_shutdown()).await
        }
        HttpVersion::H2 => {
            let streams = ConnStreams::default();
            let conn = state
                .servers
                .h2(streams.clone())
                .serve_connection(io, service);
            let conn = WithStreams::new(conn, streams);
            let idle = Idle {
                after: limits.http_idle_timeout,
                abandon_unused: false,
            };
            drive(state, conn, &activity, idle, |c| {
                c.conn().graceful_shutdown()
            })
            .await
        }
    };
    if let Err(e) = result {
        tracing::debug!(tenant = %state.shared.tenant, error = %e, "HTTP connection ended with an error");
    }
}

/// A response body that holds the request's place among the router's HTTP/2 streams.
type StreamBody = http_body_util::Either<ObservedBody, ProxyBody>;

/// One request: answered 503 at once when it is an HTTP/2 stream beyond the router's stream budget
/// (`streams`), otherwise served, holding its place in the budget until its response ends.
#[allow(clippy::manual_async_fn)] // an `async fn` would hold its arguments twice
fn handle(
    streams: Option<Arc<Semaphore>>,
    ctx: Arc<ConnContext>,
    req: hyper::Request<hyper::body::Incoming>,
) -> impl std::future::Future<Output = Result<hyper::Response<HeldBody<StreamBody>>, Infallible>> {
    // Not an `async fn`, which would keep a second copy of its arguments (see `h1_conn::exchange`).
    async move {
        let permit = match streams.map(Semaphore::try_acquire_owned) {
            Some(Err(_)) => {
                refuse_stream(&ctx);
                let resp = grpc::local_answer(
                    grpc::is_grpc(req.headers()),
                    local_response(hyper::StatusCode::SERVICE_UNAVAILABLE),
                );
                return Ok(resp.map(|b| HeldBody::new(StreamBody::Right(b), None)));
            }
            Some(Ok(p)) => Some(p),
            None => None,
        };
        let resp = serve_request(ctx, req).await?;
        Ok(resp.map(|b| HeldBody::new(StreamBody::Left(b), permit)))
    }
}

/// Counts and logs an HTTP/2 stream refused because the router has its most streams in flight.
fn refuse_stream(ctx: &ConnContext) {
    tracing::debug!(tenant = %ctx.shared.tenant, client = %ctx.client, "HTTP/2 stream refused: router stream limit");
    ctx.shared
        .metrics
        .limited_requests
        .get_or_create(&LimitLabels {
            tenant: Arc::clone(&ctx.shared.tenant),
            limit: RequestLimit::H2Streams,
        })
        .inc();
}

pin_project_lite::pin_project! {
    /// A response body that keeps a permit until the body ends or is dropped.
    pub(crate) struct HeldBody<B> {
        #[pin]
        inner: B,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl<B> HeldBody<B> {
    fn new(inner: B, permit: Option<OwnedSemaphorePermit>) -> Self {
        Self { inner, permit }
    }
}

impl<B: hyper::body::Body> hyper::body::Body for HeldBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            *this.permit = None;
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// When [`drive`] closes a connection for idleness.
struct Idle {
    /// No request in flight for this long after one ended (the first request gets the header
    /// read timeout).
    after: Duration,
    /// Whether a connection that never began a request is dropped at once instead of shut down
    /// gracefully (HTTP/1: there is nothing to finish, and a head still trickling in would
    /// otherwise get the shutdown's patience too).
    abandon_unused: bool,
}

/// Runs a connection to its end, closing it gracefully on drain or when idle (see [`Idle`]; no
/// first request within the header read timeout), until the hard stop.
/// `shut_down` asks the connection to finish its current requests and take no more.
async fn drive<C>(
    state: &ListenerState,
    conn: C,
    activity: &Activity,
    idle: Idle,
    shut_down: impl FnOnce(std::pin::Pin<&mut C>),
) -> hyper::Result<()>
where
    C: Future<Output = hyper::Result<()>>,
{
    tokio::pin!(conn);
    let limits = &state.shared.limits;
    let closing = tokio::select! {
        r = conn.as_mut() => return r,
        // Both polled only when they fire, not on each of the connection's wake-ups.
        () = bulkhead_net::when_woken(state.drain.cancelled()) => "drain",
        () = bulkhead_net::when_woken(activity.idle_for(limits.header_read_timeout, idle.after)) => "idle",
    };
    if closing == "idle" && idle.abandon_unused && !activity.has_begun() {
        tracing::debug!(tenant = %state.shared.tenant, "closing HTTP connection without a request head in time");
        return Ok(());
    }
    tracing::debug!(tenant = %state.shared.tenant, reason = closing, "closing HTTP connection gracefully");
    shut_down(conn.as_mut());
    // An idle client gets as long to acknowledge the close (HTTP/2 GOAWAY and PING) as to send a
    // request head; one that never reads is dropped then. A drain waits for the hard stop.
    let patience = async {
        match closing {
            "idle" => tokio::time::sleep(limits.header_read_timeout).await,
            _ => state.shared.hard_stop.cancelled().await,
        }
    };
    tokio::select! {
        r = conn.as_mut() => r,
        () = patience => Ok(()),
        () = state.shared.hard_stop.cancelled() => Ok(()),
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
                    bulkhead_net::clock::now,
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
            bulkhead_net::clock::now,
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
