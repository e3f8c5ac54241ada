//! The edge's configuration: where it listens, and every limit and timeout in one reviewed place.

use crate::cidr::Cidr;
use std::net::SocketAddr;
use std::time::Duration;

/// Default TLS listener: all interfaces, IPv6 and IPv4 (dual-stack, see [`bulkhead_net::bind`]),
/// port 8443 (a non-root port; a Service maps 443 to it).
pub const DEFAULT_HTTPS_LISTEN: SocketAddr = bulkhead_net::dual_stack(8443);
/// Default plain HTTP listener: all interfaces, dual-stack, port 8080 (a Service maps 80 to it).
pub const DEFAULT_HTTP_LISTEN: SocketAddr = bulkhead_net::dual_stack(8080);
/// How long a client may take to send its whole ClientHello or request head.
pub const DEFAULT_SNIFF_TIMEOUT: Duration = bulkhead_sniff::DEFAULT_SNIFF_TIMEOUT;
/// How long connecting to one router endpoint may take before the next one is tried.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A forwarded connection with no byte in either direction for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Most connections still sniffing at once (slow-client defence); further ones are refused.
pub const DEFAULT_MAX_SNIFFING: usize = 4_096;
/// Most open client connections across both listeners; further clients wait in the accept backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 50_000;
/// Most open forwarded connections per tenant; further ones are refused (the bulkhead).
pub const DEFAULT_MAX_CONNECTIONS_PER_TENANT: usize = 10_000;
/// How long open connections may finish after shutdown was requested, before they are cut.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How many router endpoints a connection tries before it is refused (nothing is sent before).
pub const DEFAULT_CONNECT_ATTEMPTS: usize = 3;
/// How long a router endpoint whose connect failed is skipped (while another endpoint of the tenant
/// is not): the first time; each further consecutive failure doubles it.
pub const DEFAULT_FAILING_MARK_BASE: Duration = Duration::from_secs(5);
/// The longest a failing router endpoint is skipped, however often it failed.
pub const DEFAULT_FAILING_MARK_MAX: Duration = Duration::from_secs(60);
/// After a refusal, how long the client's unread bytes are drained so the answer is not lost to a
/// TCP reset.
pub const DEFAULT_LINGER_TIMEOUT: Duration = Duration::from_secs(1);
/// After a refusal, most client bytes drained before closing.
pub const LINGER_MAX_BYTES: usize = 64 * 1024;
/// How often refusals are summed up in one info log line (only when there were any).
pub const REFUSAL_SUMMARY_INTERVAL: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors) before accepting again.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Limits and timeouts of the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeLimits {
    /// See [`DEFAULT_SNIFF_TIMEOUT`].
    pub sniff_timeout: Duration,
    /// See [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// See [`DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`DEFAULT_MAX_SNIFFING`].
    pub max_sniffing: usize,
    /// See [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`DEFAULT_MAX_CONNECTIONS_PER_TENANT`].
    pub max_connections_per_tenant: usize,
    /// See [`DEFAULT_DRAIN_TIMEOUT`].
    pub drain_timeout: Duration,
    /// See [`DEFAULT_CONNECT_ATTEMPTS`].
    pub connect_attempts: usize,
    /// See [`DEFAULT_LINGER_TIMEOUT`].
    pub linger_timeout: Duration,
    /// See [`DEFAULT_FAILING_MARK_BASE`].
    pub failing_mark_base: Duration,
    /// See [`DEFAULT_FAILING_MARK_MAX`].
    pub failing_mark_max: Duration,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            sniff_timeout: DEFAULT_SNIFF_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_sniffing: DEFAULT_MAX_SNIFFING,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_tenant: DEFAULT_MAX_CONNECTIONS_PER_TENANT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            connect_attempts: DEFAULT_CONNECT_ATTEMPTS,
            linger_timeout: DEFAULT_LINGER_TIMEOUT,
            failing_mark_base: DEFAULT_FAILING_MARK_BASE,
            failing_mark_max: DEFAULT_FAILING_MARK_MAX,
        }
    }
}

/// Where the edge listens and how it forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    /// The TLS listener (routed by SNI). Port 0 picks a free port.
    pub https_listen: SocketAddr,
    /// The plain HTTP listener (routed by `Host`). Port 0 picks a free port.
    pub http_listen: SocketAddr,
    /// Limits and timeouts.
    pub limits: EdgeLimits,
    /// Whether to send a PROXY v2 header to routers (default true; off only for plain TLS backends,
    /// e.g. in benchmarks).
    pub proxy_protocol: bool,
    /// Peers (upstream load balancers) that must start each connection with a PROXY v1 or v2
    /// header; the client address it declares is the one forwarded to routers. Empty (the
    /// default): no peer may send one. A peer in these networks without a valid header, and a
    /// peer outside them with one, is refused.
    pub accept_proxy_from: Vec<Cidr>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            https_listen: DEFAULT_HTTPS_LISTEN,
            http_listen: DEFAULT_HTTP_LISTEN,
            limits: EdgeLimits::default(),
            proxy_protocol: true,
            accept_proxy_from: Vec::new(),
        }
    }
}
