//! Every limit and timeout of a tenant router, in one reviewed place.
//!
//! The defaults are named constants so that a reader can see them without running the code; the
//! embedding binary may override any field of [`RouterLimits`].

use bulkhead_pathnorm::EscapedSlashes;
use bulkhead_proxy_io::cidr::{networks, Cidr, PRIVATE_NETWORKS};
use std::net::IpAddr;
use std::time::Duration;

/// The networks a router accepts PROXY headers from unless told otherwise
/// (`bulkhead router --accept-proxy-from`): the private address space
/// ([`bulkhead_proxy_io::cidr::PRIVATE_NETWORKS`]) that a cluster's pod and node networks are drawn
/// from. The edge connects to router pods directly (the EndpointSlice addresses of the
/// `bulkhead-router` Service) from its pod address, or its node address on the host network. The
/// pod CIDR cannot be known here, so this default only shuts out public and loopback addresses;
/// narrow it to the edge's pod (or node) CIDR where the CNI does not enforce the routers'
/// NetworkPolicy. A connection from any other peer is refused before a byte is read.
pub const DEFAULT_ACCEPT_PROXY_FROM: [(IpAddr, u8); 5] = PRIVATE_NETWORKS;

/// [`DEFAULT_ACCEPT_PROXY_FROM`] as networks.
pub fn default_accept_proxy_from() -> Vec<Cidr> {
    networks(&DEFAULT_ACCEPT_PROXY_FROM)
}

/// How long a connection may take to send its PROXY v2 header.
pub const DEFAULT_PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a TLS handshake may take once the ClientHello was read.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an HTTP/1 connection may go without a complete request head, counted from its start
/// (after the TLS handshake) or from the end of its last response: a head trickling in, or none
/// at all on a kept-alive connection, is cut off then. Also how long a new connection may take to
/// send its first bytes, and an HTTP/2 connection its first request.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest HTTP/1 read buffer (bounds the request head), 64 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most header fields in one HTTP/1 request.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Most concurrent HTTP/2 streams per client connection.
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Most HTTP/2 streams reset by the client before they were accepted (rapid-reset defence).
pub const DEFAULT_H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Most HTTP/2 streams the router may reset because of client errors before closing the connection.
pub const DEFAULT_H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 256;
/// Largest decoded HTTP/2 header list, 64 KiB.
pub const DEFAULT_H2_MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;
/// Interval of HTTP/2 keep-alive pings to idle clients.
pub const DEFAULT_H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keep-alive ping may stay unanswered before the connection is closed.
pub const DEFAULT_H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// An HTTP connection with no request in flight for this long is closed gracefully (HTTP/2: GOAWAY,
/// then close). HTTP/1 keep-alive connections are closed sooner, by the header read timeout.
pub const DEFAULT_HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long connecting to a backend endpoint may take (then 503, or the next endpoint for passthrough).
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle pooled upstream connection is kept.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Most idle pooled HTTP/1 connections per backend endpoint and worker (each worker thread keeps a
/// pool of its own, see `bulkhead_net::workers`).
pub const DEFAULT_UPSTREAM_MAX_IDLE_PER_ENDPOINT: usize = 128;
/// hyper refuses an HTTP/1 server read buffer smaller than this; also the least an upstream
/// connection's is.
pub(crate) const MIN_H1_BUF_SIZE: usize = 8 * 1024;
/// Largest read buffer of one HTTP/1.1 upstream connection, 64 KiB: it bounds a backend's response
/// head (and chunked trailers), and the largest single read of a response body, which is read only
/// as the client takes it (hyper's client read ahead about 400 KiB, which a flood of non-reading
/// HTTP/2 streams multiplied). A response head larger than this is a 502.
pub const DEFAULT_UPSTREAM_MAX_BUF_SIZE: usize = 64 * 1024;
/// A passthrough (raw TLS) connection with no byte in either direction for this long is closed.
pub const DEFAULT_PASSTHROUGH_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// An upgraded (WebSocket) connection with no byte in either direction for this long is closed.
pub const DEFAULT_UPGRADE_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long open connections may finish their work after shutdown was requested.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Most client connections served at once per listener (upgraded tunnels included). A connection
/// beyond it is accepted, its PROXY header read, then closed at once and counted
/// (`outcome="connection_limit"`), so that waiting clients never queue behind slow ones.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Most connections one client source (the PROXY header's source: an IPv4 address or an IPv6 /64)
/// may hold at once per listener; further ones are closed at once and counted
/// (`outcome="source_limit"`), so that one source cannot take every connection slot.
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: usize = 1_000;
/// A request body that receives no byte for this long while the router waits for it ends: 408 when
/// no response was sent yet, otherwise the response is aborted (HTTP/1 close, HTTP/2 reset). Bytes
/// must keep arriving; a slow but steady body is never cut.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest amount of response data HTTP/2 buffers per stream for a client that does not read,
/// 64 KiB (hyper's default is 400 KiB).
pub const DEFAULT_H2_MAX_SEND_BUF_SIZE: usize = 64 * 1024;
/// HTTP/2 flow-control window the router grants each client stream (request body bytes it may
/// buffer before the backend reads them), 256 KiB.
pub const DEFAULT_H2_INITIAL_STREAM_WINDOW: u32 = 256 * 1024;
/// HTTP/2 flow-control window the router grants each client connection, 1 MiB.
pub const DEFAULT_H2_INITIAL_CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Most HTTP/2 streams in flight on the whole router (all connections and listeners); a stream
/// beyond it is answered 503 at once and counted (`bulkhead_router_limited_requests_total`). A
/// stream whose client does not read holds at most the send buffer above plus the upstream
/// connection's read buffer (hyper's, up to about 400 KiB): 512 × about 464 KiB ≈ 232 MiB in the
/// worst case, measured in `tests/h2_floods.rs` and `bench/isolation/router_h2_flood.py`.
pub const DEFAULT_H2_MAX_STREAMS_PER_ROUTER: usize = 512;
/// How many endpoints a passthrough connection tries before giving up (nothing is sent before).
pub const DEFAULT_PASSTHROUGH_CONNECT_ATTEMPTS: usize = 3;
/// How many times an HTTP request may be sent again, to another endpoint when there is one, after
/// its connection failed (see [`RouterLimits::max_retries`]).
pub const DEFAULT_MAX_RETRIES: usize = 2;
/// Consecutive gateway failures (connect failures, broken connections, 502/503/504 answers) after
/// which an endpoint is ejected from load balancing; 0 turns outlier detection off.
pub const DEFAULT_OUTLIER_CONSECUTIVE_FAILURES: u32 = 5;
/// How long the first ejection of an endpoint lasts; the n-th lasts n times as long.
pub const DEFAULT_OUTLIER_BASE_EJECTION_TIME: Duration = Duration::from_secs(10);
/// The longest an ejection lasts, however often the endpoint was ejected before.
pub const DEFAULT_OUTLIER_MAX_EJECTION_TIME: Duration = Duration::from_secs(300);
/// The largest share of a backend's endpoints that may be ejected at once, in percent (at least one
/// endpoint always stays selectable).
pub const DEFAULT_OUTLIER_MAX_EJECTION_PERCENT: u8 = 50;
/// Circuit breaker: most requests in flight to one backend (all its endpoints, until each response
/// ends), as Envoy's `max_requests`. A request beyond it is answered 503 at once with
/// `x-bulkhead-overflow: max_requests`, counted in `bulkhead_router_upstream_overflow_total`, and
/// never counted against an endpoint's health.
pub const DEFAULT_MAX_REQUESTS_PER_BACKEND: usize = 1024;
/// Most mirrored requests in flight at once, router-wide. A mirror beyond it is dropped (never the
/// forwarded request) and counted in `bulkhead_router_mirrors_dropped_total`.
pub const DEFAULT_MAX_MIRRORS_IN_FLIGHT: usize = 256;
/// Longest `Origin` header a CORS route reads, in bytes. A longer one matches no allowed origin:
/// a preflight is refused (403, `bulkhead_router_request_refusals_total{reason="cors_preflight"}`),
/// any other request is forwarded without CORS headers.
pub const DEFAULT_CORS_MAX_ORIGIN_BYTES: usize = 1024;
/// Most header names a CORS preflight's `Access-Control-Request-Headers` may list. A preflight
/// asking for more is refused (403, counted as above) instead of echoing them all.
pub const DEFAULT_CORS_MAX_REQUEST_HEADERS: usize = 64;
/// How often ended ejections are lifted from the books (the ejected-endpoints gauge) and the
/// ejection multiplier of healthy endpoints decays. Selection itself needs no sweep: an ejection
/// ends at its deadline.
pub const OUTLIER_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Limits and timeouts of one tenant router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterLimits {
    /// See [`DEFAULT_PROXY_HEADER_TIMEOUT`].
    pub proxy_header_timeout: Duration,
    /// How long reading the ClientHello may take (default [`bulkhead_sniff::DEFAULT_SNIFF_TIMEOUT`]).
    pub sniff_timeout: Duration,
    /// See [`DEFAULT_TLS_HANDSHAKE_TIMEOUT`].
    pub tls_handshake_timeout: Duration,
    /// See [`DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`DEFAULT_MAX_HEADER_BYTES`] (hyper needs at least 8 KiB).
    pub max_header_bytes: usize,
    /// See [`DEFAULT_MAX_HEADERS`].
    pub max_headers: usize,
    /// See [`DEFAULT_H2_MAX_CONCURRENT_STREAMS`].
    pub h2_max_concurrent_streams: u32,
    /// See [`DEFAULT_H2_MAX_PENDING_ACCEPT_RESET_STREAMS`].
    pub h2_max_pending_accept_reset_streams: usize,
    /// See [`DEFAULT_H2_MAX_LOCAL_ERROR_RESET_STREAMS`].
    pub h2_max_local_error_reset_streams: usize,
    /// See [`DEFAULT_H2_MAX_HEADER_LIST_SIZE`].
    pub h2_max_header_list_size: u32,
    /// See [`DEFAULT_H2_KEEP_ALIVE_INTERVAL`].
    pub h2_keep_alive_interval: Duration,
    /// See [`DEFAULT_H2_KEEP_ALIVE_TIMEOUT`].
    pub h2_keep_alive_timeout: Duration,
    /// See [`DEFAULT_HTTP_IDLE_TIMEOUT`].
    pub http_idle_timeout: Duration,
    /// See [`DEFAULT_UPSTREAM_CONNECT_TIMEOUT`].
    pub upstream_connect_timeout: Duration,
    /// See [`DEFAULT_UPSTREAM_IDLE_TIMEOUT`].
    pub upstream_idle_timeout: Duration,
    /// See [`DEFAULT_UPSTREAM_MAX_IDLE_PER_ENDPOINT`].
    pub upstream_max_idle_per_endpoint: usize,
    /// See [`DEFAULT_UPSTREAM_MAX_BUF_SIZE`] (at least 8 KiB, hyper's minimum).
    pub upstream_max_buf_size: usize,
    /// See [`DEFAULT_PASSTHROUGH_IDLE_TIMEOUT`].
    pub passthrough_idle_timeout: Duration,
    /// See [`DEFAULT_UPGRADE_IDLE_TIMEOUT`].
    pub upgrade_idle_timeout: Duration,
    /// See [`DEFAULT_DRAIN_TIMEOUT`].
    pub drain_timeout: Duration,
    /// See [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`DEFAULT_MAX_CONNECTIONS_PER_SOURCE`].
    pub max_connections_per_source: usize,
    /// See [`DEFAULT_BODY_IDLE_TIMEOUT`].
    pub body_idle_timeout: Duration,
    /// See [`DEFAULT_H2_MAX_SEND_BUF_SIZE`].
    pub h2_max_send_buf_size: usize,
    /// See [`DEFAULT_H2_INITIAL_STREAM_WINDOW`].
    pub h2_initial_stream_window: u32,
    /// See [`DEFAULT_H2_INITIAL_CONNECTION_WINDOW`].
    pub h2_initial_connection_window: u32,
    /// See [`DEFAULT_H2_MAX_STREAMS_PER_ROUTER`].
    pub h2_max_streams_per_router: usize,
    /// See [`DEFAULT_PASSTHROUGH_CONNECT_ATTEMPTS`].
    pub passthrough_connect_attempts: usize,
    /// See [`DEFAULT_MAX_RETRIES`]. A request is retried only when nothing of it reached the
    /// endpoint (any method), or when it is idempotent, has no body and its connection failed
    /// before a response head arrived; never after a response head, and always within the route's
    /// request timeout. 0 turns retries off.
    pub max_retries: usize,
    /// See [`DEFAULT_OUTLIER_CONSECUTIVE_FAILURES`].
    pub outlier_consecutive_failures: u32,
    /// See [`DEFAULT_OUTLIER_BASE_EJECTION_TIME`].
    pub outlier_base_ejection_time: Duration,
    /// See [`DEFAULT_OUTLIER_MAX_EJECTION_TIME`].
    pub outlier_max_ejection_time: Duration,
    /// See [`DEFAULT_OUTLIER_MAX_EJECTION_PERCENT`] (values above 100 count as 100).
    pub outlier_max_ejection_percent: u8,
    /// See [`DEFAULT_MAX_REQUESTS_PER_BACKEND`].
    pub max_requests_per_backend: usize,
    /// See [`DEFAULT_MAX_MIRRORS_IN_FLIGHT`] (0 drops every mirror).
    pub max_mirrors_in_flight: usize,
    /// See [`DEFAULT_CORS_MAX_ORIGIN_BYTES`].
    pub cors_max_origin_bytes: usize,
    /// See [`DEFAULT_CORS_MAX_REQUEST_HEADERS`].
    pub cors_max_request_headers: usize,
    /// What of a request's path and headers reaches backends.
    pub boundary: BoundaryPolicy,
}

impl Default for RouterLimits {
    fn default() -> Self {
        Self {
            proxy_header_timeout: DEFAULT_PROXY_HEADER_TIMEOUT,
            sniff_timeout: bulkhead_sniff::DEFAULT_SNIFF_TIMEOUT,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            h2_max_pending_accept_reset_streams: DEFAULT_H2_MAX_PENDING_ACCEPT_RESET_STREAMS,
            h2_max_local_error_reset_streams: DEFAULT_H2_MAX_LOCAL_ERROR_RESET_STREAMS,
            h2_max_header_list_size: DEFAULT_H2_MAX_HEADER_LIST_SIZE,
            h2_keep_alive_interval: DEFAULT_H2_KEEP_ALIVE_INTERVAL,
            h2_keep_alive_timeout: DEFAULT_H2_KEEP_ALIVE_TIMEOUT,
            http_idle_timeout: DEFAULT_HTTP_IDLE_TIMEOUT,
            upstream_connect_timeout: DEFAULT_UPSTREAM_CONNECT_TIMEOUT,
            upstream_idle_timeout: DEFAULT_UPSTREAM_IDLE_TIMEOUT,
            upstream_max_idle_per_endpoint: DEFAULT_UPSTREAM_MAX_IDLE_PER_ENDPOINT,
            upstream_max_buf_size: DEFAULT_UPSTREAM_MAX_BUF_SIZE,
            passthrough_idle_timeout: DEFAULT_PASSTHROUGH_IDLE_TIMEOUT,
            upgrade_idle_timeout: DEFAULT_UPGRADE_IDLE_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_source: DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            h2_max_send_buf_size: DEFAULT_H2_MAX_SEND_BUF_SIZE,
            h2_initial_stream_window: DEFAULT_H2_INITIAL_STREAM_WINDOW,
            h2_initial_connection_window: DEFAULT_H2_INITIAL_CONNECTION_WINDOW,
            h2_max_streams_per_router: DEFAULT_H2_MAX_STREAMS_PER_ROUTER,
            passthrough_connect_attempts: DEFAULT_PASSTHROUGH_CONNECT_ATTEMPTS,
            max_retries: DEFAULT_MAX_RETRIES,
            outlier_consecutive_failures: DEFAULT_OUTLIER_CONSECUTIVE_FAILURES,
            outlier_base_ejection_time: DEFAULT_OUTLIER_BASE_EJECTION_TIME,
            outlier_max_ejection_time: DEFAULT_OUTLIER_MAX_EJECTION_TIME,
            outlier_max_ejection_percent: DEFAULT_OUTLIER_MAX_EJECTION_PERCENT,
            max_requests_per_backend: DEFAULT_MAX_REQUESTS_PER_BACKEND,
            max_mirrors_in_flight: DEFAULT_MAX_MIRRORS_IN_FLIGHT,
            cors_max_origin_bytes: DEFAULT_CORS_MAX_ORIGIN_BYTES,
            cors_max_request_headers: DEFAULT_CORS_MAX_REQUEST_HEADERS,
            boundary: BoundaryPolicy::default(),
        }
    }
}

/// What the router does with `%2F` / `%5C` in request paths: decode them to `/`, route on the
/// decoded path and answer 307 with it as `Location` (Envoy Gateway's default).
pub const DEFAULT_ESCAPED_SLASHES: EscapedSlashes = EscapedSlashes::UnescapeAndRedirect;
/// How many proxies in front of the router are trusted to append to `X-Forwarded-For`: 0 means
/// the router is the first trusted hop, so every client-supplied forwarding header is replaced.
pub const DEFAULT_XFF_TRUSTED_HOPS: usize = 0;
/// The `Upgrade` protocols a request may switch to (compared case-insensitively, version ignored);
/// any other token is removed from the request, which is forwarded without it. `h2c` is never
/// allowed: a backend speaking HTTP/2 on the upgraded connection would be reached past every route.
pub const DEFAULT_UPGRADE_PROTOCOLS: &[&str] = &["websocket"];
/// The upgrade protocol that can never be allowed (HTTP/2 over cleartext, RFC 7540 section 3.2).
pub const FORBIDDEN_UPGRADE_PROTOCOL: &str = "h2c";

/// Protocol hygiene at the boundary: how request paths are normalised and which forwarding and
/// upgrade headers of a client reach backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundaryPolicy {
    /// See [`DEFAULT_ESCAPED_SLASHES`].
    pub escaped_slashes: EscapedSlashes,
    /// See [`DEFAULT_XFF_TRUSTED_HOPS`]: the last this many `X-Forwarded-For` entries a client sent
    /// are kept (the rest, and every other forwarding header it sent, are removed).
    pub xff_trusted_hops: usize,
    /// See [`DEFAULT_UPGRADE_PROTOCOLS`]; lower case, never [`FORBIDDEN_UPGRADE_PROTOCOL`].
    pub upgrade_protocols: Vec<String>,
}

impl Default for BoundaryPolicy {
    fn default() -> Self {
        Self {
            escaped_slashes: DEFAULT_ESCAPED_SLASHES,
            xff_trusted_hops: DEFAULT_XFF_TRUSTED_HOPS,
            upgrade_protocols: DEFAULT_UPGRADE_PROTOCOLS
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
        }
    }
}
