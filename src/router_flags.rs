//! Command-line overrides of a tenant router's limits ([`RouterLimits`]), shared by
//! `bulkhead router` and `bulkhead standalone`. Every flag is optional (the default is the
//! constant named in its help) and can also be set through the environment variable shown.

use bulkhead_router::RouterLimits;
use std::time::Duration;

/// Router limits that may be overridden at start.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RouterLimitArgs {
    /// Most connections per router listener, tunnels included (DEFAULT_MAX_CONNECTIONS: 10000).
    #[arg(long, env = "BULKHEAD_ROUTER_MAX_CONNECTIONS")]
    pub router_max_connections: Option<usize>,
    /// Most connections per client source, an IPv4 address or IPv6 /64, per router listener
    /// (DEFAULT_MAX_CONNECTIONS_PER_SOURCE: 1000).
    #[arg(long, env = "BULKHEAD_ROUTER_MAX_CONNECTIONS_PER_SOURCE")]
    pub router_max_connections_per_source: Option<usize>,
    /// Milliseconds a client may take for a request head, or for its first bytes or first HTTP/2
    /// request after the handshake (DEFAULT_HEADER_READ_TIMEOUT: 10 s).
    #[arg(long, env = "BULKHEAD_ROUTER_HEADER_READ_TIMEOUT_MS")]
    pub router_header_read_timeout_ms: Option<u64>,
    /// Milliseconds an HTTP connection may stay without a request (DEFAULT_HTTP_IDLE_TIMEOUT: 120 s).
    #[arg(long, env = "BULKHEAD_ROUTER_HTTP_IDLE_TIMEOUT_MS")]
    pub router_http_idle_timeout_ms: Option<u64>,
    /// Milliseconds a request body may send nothing while the router waits for it
    /// (DEFAULT_BODY_IDLE_TIMEOUT: 30 s).
    #[arg(long, env = "BULKHEAD_ROUTER_BODY_IDLE_TIMEOUT_MS")]
    pub router_body_idle_timeout_ms: Option<u64>,
    /// Most concurrent HTTP/2 streams per client connection (DEFAULT_H2_MAX_CONCURRENT_STREAMS: 100).
    #[arg(long, env = "BULKHEAD_ROUTER_H2_MAX_CONCURRENT_STREAMS")]
    pub router_h2_max_concurrent_streams: Option<u32>,
    /// Most HTTP/2 streams in flight on the whole router (DEFAULT_H2_MAX_STREAMS_PER_ROUTER: 512).
    #[arg(long, env = "BULKHEAD_ROUTER_H2_MAX_STREAMS")]
    pub router_h2_max_streams: Option<usize>,
    /// Bytes of response data buffered per HTTP/2 stream (DEFAULT_H2_MAX_SEND_BUF_SIZE: 64 KiB).
    #[arg(long, env = "BULKHEAD_ROUTER_H2_MAX_SEND_BUF_SIZE")]
    pub router_h2_max_send_buf_size: Option<usize>,
    /// HTTP/2 stream flow-control window granted to clients (DEFAULT_H2_INITIAL_STREAM_WINDOW:
    /// 256 KiB).
    #[arg(long, env = "BULKHEAD_ROUTER_H2_STREAM_WINDOW")]
    pub router_h2_stream_window: Option<u32>,
    /// HTTP/2 connection flow-control window granted to clients
    /// (DEFAULT_H2_INITIAL_CONNECTION_WINDOW: 1 MiB).
    #[arg(long, env = "BULKHEAD_ROUTER_H2_CONNECTION_WINDOW")]
    pub router_h2_connection_window: Option<u32>,
    /// Circuit breaker: most requests in flight to one backend; more are answered 503 at once
    /// (DEFAULT_MAX_REQUESTS_PER_BACKEND: 1024).
    #[arg(long, env = "BULKHEAD_ROUTER_MAX_REQUESTS_PER_BACKEND")]
    pub router_max_requests_per_backend: Option<usize>,
    /// Most mirrored requests in flight per router; further mirrors are dropped and counted
    /// (DEFAULT_MAX_MIRRORS_IN_FLIGHT: 256).
    #[arg(long, env = "BULKHEAD_ROUTER_MAX_MIRRORS_IN_FLIGHT")]
    pub router_max_mirrors_in_flight: Option<usize>,
    /// Consecutive gateway failures that eject an endpoint from load balancing, 0 for never
    /// (DEFAULT_OUTLIER_CONSECUTIVE_FAILURES: 5).
    #[arg(long, env = "BULKHEAD_ROUTER_OUTLIER_CONSECUTIVE_FAILURES")]
    pub router_outlier_consecutive_failures: Option<u32>,
    /// Bytes one HTTP/1.1 upstream connection may read ahead: its response head and what is read
    /// of a body a client has not taken yet (DEFAULT_UPSTREAM_MAX_BUF_SIZE: 64 KiB).
    #[arg(long, env = "BULKHEAD_ROUTER_UPSTREAM_MAX_BUF_SIZE")]
    pub router_upstream_max_buf_size: Option<usize>,
    /// Longest `Origin` a CORS route reads, in bytes; a preflight with a longer one is refused 403
    /// (DEFAULT_CORS_MAX_ORIGIN_BYTES: 1024).
    #[arg(long, env = "BULKHEAD_ROUTER_CORS_MAX_ORIGIN_BYTES")]
    pub router_cors_max_origin_bytes: Option<u16>,
    /// Most header names a CORS preflight may ask for; a preflight asking for more is refused 403
    /// (DEFAULT_CORS_MAX_REQUEST_HEADERS: 64).
    #[arg(long, env = "BULKHEAD_ROUTER_CORS_MAX_REQUEST_HEADERS")]
    pub router_cors_max_request_headers: Option<u16>,
    /// The boundary policy (paths, forwarding headers, upgrades).
    #[command(flatten)]
    pub boundary: crate::boundary_flags::BoundaryArgs,
}

impl RouterLimitArgs {
    /// The default limits with the given overrides.
    pub fn limits(&self) -> RouterLimits {
        let mut l = RouterLimits::default();
        let ms = Duration::from_millis;
        set(&mut l.max_connections, self.router_max_connections);
        set(
            &mut l.max_connections_per_source,
            self.router_max_connections_per_source,
        );
        set(
            &mut l.header_read_timeout,
            self.router_header_read_timeout_ms.map(ms),
        );
        set(
            &mut l.http_idle_timeout,
            self.router_http_idle_timeout_ms.map(ms),
        );
        set(
            &mut l.body_idle_timeout,
            self.router_body_idle_timeout_ms.map(ms),
        );
        set(
            &mut l.h2_max_concurrent_streams,
            self.router_h2_max_concurrent_streams,
        );
        set(&mut l.h2_max_streams_per_router, self.router_h2_max_streams);
        set(
            &mut l.h2_max_send_buf_size,
            self.router_h2_max_send_buf_size,
        );
        set(
            &mut l.h2_initial_stream_window,
            self.router_h2_stream_window,
        );
        set(
            &mut l.h2_initial_connection_window,
            self.router_h2_connection_window,
        );
        set(
            &mut l.max_requests_per_backend,
            self.router_max_requests_per_backend,
        );
        set(
            &mut l.max_mirrors_in_flight,
            self.router_max_mirrors_in_flight,
        );
        set(
            &mut l.outlier_consecutive_failures,
            self.router_outlier_consecutive_failures,
        );
        set(
            &mut l.upstream_max_buf_size,
            self.router_upstream_max_buf_size,
        );
        // u16 on the command line (at most 65535): the flags stay small in the clap enums.
        set(
            &mut l.cors_max_origin_bytes,
            self.router_cors_max_origin_bytes.map(usize::from),
        );
        set(
            &mut l.cors_max_request_headers,
            self.router_cors_max_request_headers.map(usize::from),
        );
        l.boundary = self.boundary.policy();
        l
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}
