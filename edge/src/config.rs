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
/// A forwarded connection with no byte in either direction for this long is closed. Any byte resets
/// it: the edge does not parse what it forwards, so it cannot tell progress from a trickle. HTTP
/// progress deadlines (request head, body, stream idle) are the tenant router's, which closes a
/// trickling connection and so ends its relay here; what one source can hold open meanwhile is
/// bounded by [`DEFAULT_MAX_CONNECTIONS_PER_SOURCE_PER_TENANT`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Most connections still sniffing at once (slow-client defence); further ones are refused.
pub const DEFAULT_MAX_SNIFFING: usize = 4_096;
/// Most open client connections across both listeners; further clients wait in the accept backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 50_000;
/// Most open forwarded connections per tenant; further ones are refused (the bulkhead).
pub const DEFAULT_MAX_CONNECTIONS_PER_TENANT: usize = 10_000;
/// Most connections still sniffing (reading a PROXY header, ClientHello or request head) from one
/// source (an IPv4 address or an IPv6 /64); further ones are closed at once, before anything is
/// read (refusal reason `source_sniffing_limit`). A browser opens about six connections per host
/// and sends its first bytes within milliseconds, so 256 leaves room for hundreds of users behind
/// one NAT while one source can hold at most 1/16 of the [`DEFAULT_MAX_SNIFFING`] pool.
pub const DEFAULT_MAX_SNIFFING_PER_SOURCE: usize = 256;
/// New connections per second one source may open on average (token bucket refill); beyond the
/// burst, further ones are closed at once (refusal reason `source_rate_limit`). 300/s is far above
/// what users behind one NAT open (a page load is a handful of connections, kept alive) and far
/// below what a single host can churn.
pub const DEFAULT_SOURCE_CONNECT_RATE: u32 = 300;
/// New connections one source may open at once after being idle (the token bucket's size): two
/// seconds' worth of [`DEFAULT_SOURCE_CONNECT_RATE`], so a NAT's morning rush is not refused.
pub const DEFAULT_SOURCE_CONNECT_BURST: u32 = 600;
/// Most sources whose connection rate is tracked at once. A source's bucket is forgotten once it
/// is full again (the source was idle for `burst / rate` seconds). When the table is full of busy
/// sources, a new source is admitted untracked (fail-open, counted in
/// `bulkhead_edge_source_rate_untracked_total`): only a flood from more sources than this, each
/// connecting within two seconds, fills it, no per-source limit can stop such a flood, and refusing
/// untracked sources would refuse every new client. The sniffing caps still apply to it. About
/// 100 bytes per source: 6.5 MB at most.
pub const DEFAULT_SOURCE_RATE_TABLE_SIZE: usize = 65_536;
/// Most open forwarded connections from one source to one tenant; further ones are refused like a
/// full tenant (TLS alert `internal_error`, HTTP 503; refusal reason `source_tenant_limit`), so one
/// source can never take more than a tenth of [`DEFAULT_MAX_CONNECTIONS_PER_TENANT`]: a slow
/// client trickling bytes to keep connections open cannot fill a tenant's quota alone.
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE_PER_TENANT: usize = 1_000;
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
/// Pause after a failed `accept` before accepting again (shared with the router).
pub use bulkhead_net::ACCEPT_ERROR_BACKOFF;

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
    /// See [`DEFAULT_MAX_SNIFFING_PER_SOURCE`].
    pub max_sniffing_per_source: usize,
    /// See [`DEFAULT_SOURCE_CONNECT_RATE`].
    pub source_connect_rate: u32,
    /// See [`DEFAULT_SOURCE_CONNECT_BURST`].
    pub source_connect_burst: u32,
    /// See [`DEFAULT_SOURCE_RATE_TABLE_SIZE`].
    pub source_rate_table_size: usize,
    /// See [`DEFAULT_MAX_CONNECTIONS_PER_SOURCE_PER_TENANT`].
    pub max_connections_per_source_per_tenant: usize,
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
            max_sniffing_per_source: DEFAULT_MAX_SNIFFING_PER_SOURCE,
            source_connect_rate: DEFAULT_SOURCE_CONNECT_RATE,
            source_connect_burst: DEFAULT_SOURCE_CONNECT_BURST,
            source_rate_table_size: DEFAULT_SOURCE_RATE_TABLE_SIZE,
            max_connections_per_source_per_tenant: DEFAULT_MAX_CONNECTIONS_PER_SOURCE_PER_TENANT,
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
