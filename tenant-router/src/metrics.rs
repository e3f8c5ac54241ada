//! Prometheus metrics shared by every router of a process. Every series carries the `tenant` label;
//! `route` and `backend` labels come from the snapshot only (never from a request), so cardinality is
//! bounded by configuration.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::fmt::Write;
use std::sync::Arc;

/// Smallest request-duration bucket, in seconds (1 ms).
const DURATION_BUCKET_START: f64 = 0.001;
/// Number of request-duration buckets (doubling from 1 ms up to about 65 s).
const DURATION_BUCKETS: u16 = 17;

/// Which listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ListenerLabel {
    /// The TLS listener.
    Https,
    /// The plain HTTP listener.
    Http,
}

/// How a connection was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ConnectionOutcome {
    /// TLS terminated and HTTP served.
    Terminated,
    /// Raw TLS forwarded.
    Passthrough,
    /// TLS terminated and the plaintext copied to a TCP backend.
    TerminatedTcp,
    /// Plain HTTP served.
    Http,
    /// No PROXY header or an invalid one.
    ProxyHeaderError,
    /// A PROXY header expected from a peer outside the trusted networks: refused unread.
    ProxyUntrusted,
    /// No ClientHello or an invalid one.
    SniffError,
    /// An SNI this tenant does not serve.
    UnknownSni,
    /// The TLS handshake failed.
    HandshakeError,
    /// The TLS handshake failed because a listener with frontend validation (`AllowValidOnly`)
    /// got no client certificate, or one that does not verify against its CA bundle.
    ClientCertificateRefused,
    /// No passthrough backend could be reached.
    UpstreamError,
    /// Refused: its source already held its share of connections.
    SourceLimit,
    /// Refused: the listener already served its most connections.
    ConnectionLimit,
}

/// Which request limit cut a request short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RequestLimit {
    /// The request body stopped arriving (408, or an aborted response).
    BodyIdle,
    /// The router already had its most HTTP/2 streams in flight (503).
    H2Streams,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct LimitLabels {
    pub(crate) tenant: Arc<str>,
    pub(crate) limit: RequestLimit,
}

/// Why a request was refused for its host before any route was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum HostRefusal {
    /// No `Host` and no URI authority (400).
    Missing,
    /// More than one `Host` field line (400, RFC 9112 section 3.2).
    Duplicate,
    /// A host that is not a valid name (400).
    Invalid,
    /// HTTP/2 `:authority` and `host` name different hosts (400, RFC 9113 section 8.3.1).
    AuthorityMismatch,
    /// A name the tenant does not own (421).
    NotOwned,
    /// A more specific name another tenant owns inside the tenant's grant (421).
    OtherTenant,
    /// A name another listener serves than the one the connection's SNI selected (421, GEP-3567).
    Misdirected,
    /// A name of the connection's listener whose client certificate validation changed since the
    /// connection's handshake (421: a new connection is validated the new way).
    ValidationChanged,
}

/// Why the router answered a request itself (see [`crate::http::refusal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RefusalReason {
    /// `CONNECT`.
    Method,
    /// A path the boundary policy refused.
    BadPath,
    /// A missing, duplicated or invalid host.
    BadHost,
    /// A host this connection may not be answered for (421).
    Misdirected,
    /// No virtual host for the name.
    NoVirtualHost,
    /// No matching route.
    NoRoute,
    /// No valid backend.
    NoBackend,
    /// No available endpoint.
    NoEndpoint,
    /// A request head that cannot be sent on.
    BadHead,
    /// A 101 for a protocol nobody asked for.
    UnrequestedUpgrade,
    /// The backend failed.
    Upstream,
    /// The backend timed out.
    UpstreamTimeout,
    /// A circuit breaker was open.
    Overflow,
    /// The client's body failed.
    ClientBody,
    /// A CORS preflight from an origin the route does not allow, or a malformed one.
    CorsPreflight,
}

/// Labels of `request_refusals_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RefusalLabels {
    pub(crate) tenant: Arc<str>,
    pub(crate) reason: RefusalReason,
}

/// Why an upstream request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum UpstreamErrorKind {
    /// Connecting failed (503).
    Connect,
    /// A deadline passed (504, or an aborted response).
    Timeout,
    /// The backend broke the exchange (502, or an aborted response).
    Protocol,
    /// The TLS handshake with a backend of a `BackendTLSPolicy` failed, or its TLS is not usable
    /// (502).
    Tls,
}

/// How a client failed its own request (never counted against an endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ClientErrorKind {
    /// The request body broke the protocol (400).
    MalformedBody,
    /// The client went away before its request body ended (logged 499).
    Gone,
    /// The client stopped sending its request body for the body idle timeout (408).
    Stalled,
}

/// Which circuit breaker refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Breaker {
    /// Too many requests in flight to the backend.
    MaxRequests,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ClientErrorLabels {
    pub(crate) tenant: Arc<str>,
    pub(crate) backend: Arc<str>,
    pub(crate) kind: ClientErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct OverflowLabels {
    pub(crate) tenant: Arc<str>,
    pub(crate) backend: Arc<str>,
    pub(crate) breaker: Breaker,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) tenant: Arc<str>,
    pub(crate) route: Arc<str>,
    pub(crate) backend: Arc<str>,
    pub(crate) code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) tenant: Arc<str>,
    pub(crate) route: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ConnectionLabels {
    pub(crate) tenant: Arc<str>,
    pub(crate) listener: ListenerLabel,
    pub(crate) outcome: ConnectionOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ListenerLabels {
    pub(crate) tenant: Arc<str>,
    pub(crate) listener: ListenerLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct HostRefusalLabels {
    pub(crate) tenant: Arc<str>,
    pub(crate) reason: HostRefusal,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct UpstreamErrorLabels {
    pub(crate) tenant: Arc<str>,
    pub(crate) backend: Arc<str>,
    pub(crate) kind: UpstreamErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct BackendLabels {
    pub(crate) tenant: Arc<str>,
    pub(crate) backend: Arc<str>,
}

/// Why a request was sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RetryReason {
    /// Nothing of the request reached the endpoint (connect failure, connection closed first).
    NotSent,
    /// The connection broke before a response head; the request was idempotent and had no body.
    ConnectionFailed,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RetryLabels {
    pub(crate) tenant: Arc<str>,
    pub(crate) backend: Arc<str>,
    pub(crate) reason: RetryReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct SnapshotLabels {
    pub(crate) tenant: Arc<str>,
    pub(crate) outcome: SnapshotOutcome,
}

/// Whether a snapshot was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SnapshotOutcome {
    /// Compiled and swapped in.
    Applied,
    /// Refused; the previous configuration keeps serving.
    Rejected,
}

/// What the boundary policy did to a request that was not in canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum HygieneAction {
    /// The path was refused (malformed escape, not absolute, escaped slash under `reject`): 400.
    PathRefused,
    /// The path held escaped slashes: 307 to the decoded path.
    PathRedirected,
    /// An `Upgrade` to a protocol that is not allowed (e.g. `h2c`) was removed.
    UpgradeDropped,
    /// A 101 answer switched to a protocol the request did not ask for: 502.
    UpgradeRefused,
    /// Client-supplied forwarding headers (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`, ...) were
    /// replaced.
    ForwardingReplaced,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct HygieneLabels {
    pub(crate) tenant: Arc<str>,
    pub(crate) action: HygieneAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct TenantLabels {
    pub(crate) tenant: Arc<str>,
}

/// Encodes unit-like enums as snake_case label values.
macro_rules! snake_case_labels {
    ($($ty:ident { $($variant:ident => $text:literal),+ $(,)? })+) => {$(
        impl $ty {
            /// The label value.
            pub(crate) fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    )+};
}

snake_case_labels! {
    RefusalReason {
        Method => "method",
        BadPath => "bad_path",
        BadHost => "bad_host",
        Misdirected => "misdirected",
        NoVirtualHost => "no_virtual_host",
        NoRoute => "no_route",
        NoBackend => "no_backend",
        NoEndpoint => "no_endpoint",
        BadHead => "bad_head",
        UnrequestedUpgrade => "unrequested_upgrade",
        Upstream => "upstream",
        UpstreamTimeout => "upstream_timeout",
        Overflow => "overflow",
        ClientBody => "client_body",
        CorsPreflight => "cors_preflight",
    }
    ListenerLabel { Https => "https", Http => "http" }
    ConnectionOutcome {
        Terminated => "terminated",
        Passthrough => "passthrough",
        TerminatedTcp => "terminated_tcp",
        Http => "http",
        ProxyHeaderError => "proxy_header_error",
        ProxyUntrusted => "proxy_untrusted",
        SniffError => "sniff_error",
        UnknownSni => "unknown_sni",
        HandshakeError => "handshake_error",
        ClientCertificateRefused => "client_certificate_refused",
        UpstreamError => "upstream_error",
        SourceLimit => "source_limit",
        ConnectionLimit => "connection_limit",
    }
    RequestLimit { BodyIdle => "body_idle", H2Streams => "h2_streams" }
    UpstreamErrorKind { Connect => "connect", Timeout => "timeout", Protocol => "protocol", Tls => "tls" }
    SnapshotOutcome { Applied => "applied", Rejected => "rejected" }
    RetryReason { NotSent => "not_sent", ConnectionFailed => "connection_failed" }
    ClientErrorKind { MalformedBody => "malformed_body", Gone => "gone", Stalled => "stalled" }
    Breaker { MaxRequests => "max_requests" }
    HygieneAction {
        PathRefused => "path_refused",
        PathRedirected => "path_redirected",
        UpgradeDropped => "upgrade_dropped",
        UpgradeRefused => "upgrade_refused",
        ForwardingReplaced => "forwarding_replaced",
    }
    HostRefusal {
        Missing => "missing",
        Duplicate => "duplicate",
        Invalid => "invalid",
        AuthorityMismatch => "authority_mismatch",
        NotOwned => "not_owned",
        OtherTenant => "other_tenant",
        Misdirected => "misdirected",
        ValidationChanged => "validation_changed",
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(
        DURATION_BUCKET_START,
        2.0,
        DURATION_BUCKETS,
    ))
}

/// One compiled route's request series, looked up in their families once rather than per request
/// (a family lookup hashes every label). They stay the family's own series: the exposition is the
/// same, and a route compiled again in a later snapshot finds the same series.
#[derive(Debug, Default)]
pub(crate) struct RouteSeries {
    /// `request_duration_seconds` and `response_bytes_total` of the route.
    route: std::sync::OnceLock<(Histogram, Counter)>,
    /// `requests_total` of the route, by backend and status: the first [`MAX_CACHED_REQUEST_SERIES`]
    /// seen (a route rarely answers more; the rest are looked up per request).
    requests: std::sync::Mutex<Vec<(Arc<str>, u16, Counter)>>,
}

/// How many `requests_total` series (backend × status) a route keeps at hand.
const MAX_CACHED_REQUEST_SERIES: usize = 16;

impl RouteSeries {
    /// The duration histogram and byte counter of the route (`labels` builds its labels, once).
    pub(crate) fn route(
        &self,
        metrics: &RouterMetrics,
        labels: impl FnOnce() -> RouteLabels,
    ) -> &(Histogram, Counter) {
        self.route.get_or_init(|| {
            let labels = labels();
            (
                metrics.request_duration.get_or_create_owned(&labels),
                metrics.response_bytes.get_or_create_owned(&labels),
            )
        })
    }

    /// Counts one request of the route answered by `backend` with `code` (`labels` builds the
    /// series' labels when it is not at hand).
    pub(crate) fn count_request(
        &self,
        metrics: &RouterMetrics,
        backend: &Arc<str>,
        code: u16,
        labels: impl FnOnce() -> RequestLabels,
    ) {
        let Ok(mut cached) = self.requests.lock() else {
            metrics.requests.get_or_create(&labels()).inc();
            return;
        };
        if let Some((_, _, counter)) = cached
            .iter()
            .find(|(b, c, _)| *c == code && (Arc::ptr_eq(b, backend) || **b == **backend))
        {
            counter.inc();
            return;
        }
        let counter = metrics.requests.get_or_create_owned(&labels());
        counter.inc();
        if cached.len() < MAX_CACHED_REQUEST_SERIES {
            cached.push((Arc::clone(backend), code, counter));
        }
    }
}

/// The router metrics of one process (shared by all its routers, told apart by the `tenant` label).
#[derive(Debug)]
pub struct RouterMetrics {
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub(crate) response_bytes: Family<RouteLabels, Counter>,
    pub(crate) connections: Family<ConnectionLabels, Counter>,
    pub(crate) open_connections: Family<ListenerLabels, Gauge>,
    pub(crate) upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub(crate) host_refusals: Family<HostRefusalLabels, Counter>,
    /// Requests the router answered itself, by reason.
    pub(crate) request_refusals: Family<RefusalLabels, Counter>,
    pub(crate) passthrough_bytes: Family<RouteLabels, Counter>,
    pub(crate) snapshots: Family<SnapshotLabels, Counter>,
    pub(crate) snapshot_version: Family<TenantLabels, Gauge>,
    pub(crate) upstream_retries: Family<RetryLabels, Counter>,
    pub(crate) outlier_ejections: Family<BackendLabels, Counter>,
    pub(crate) outlier_ejected: Family<BackendLabels, Gauge>,
    pub(crate) client_errors: Family<ClientErrorLabels, Counter>,
    pub(crate) upstream_overflow: Family<OverflowLabels, Counter>,
    pub(crate) mirrors_dropped: Family<BackendLabels, Counter>,
    pub(crate) request_hygiene: Family<HygieneLabels, Counter>,
    pub(crate) limited_requests: Family<LimitLabels, Counter>,
}

impl RouterMetrics {
    /// Creates the metrics and registers them (prefix `bulkhead_router_`).
    pub fn register(registry: &mut Registry) -> Arc<RouterMetrics> {
        let m = Self::unregistered();
        let r = registry.sub_registry_with_prefix("bulkhead_router");
        r.register(
            "requests",
            "HTTP requests answered, by route, backend and status code",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from request head to the last response byte",
            m.request_duration.clone(),
        );
        r.register(
            "response_body_bytes",
            "Response body bytes sent to clients",
            m.response_bytes.clone(),
        );
        r.register(
            "connections",
            "Client connections accepted, by outcome",
            m.connections.clone(),
        );
        r.register(
            "open_connections",
            "Client connections currently open",
            m.open_connections.clone(),
        );
        r.register(
            "upstream_errors",
            "Failed upstream exchanges, by kind",
            m.upstream_errors.clone(),
        );
        r.register(
            "request_refusals",
            "Requests the router answered itself instead of relaying a backend's response, by reason",
            m.request_refusals.clone(),
        );
        r.register(
            "host_refusals",
            "Requests refused for their host (400 or 421) before routing, by reason",
            m.host_refusals.clone(),
        );
        r.register(
            "passthrough_bytes",
            "Bytes copied in both directions on TLS passthrough and TLS-terminated TCP connections",
            m.passthrough_bytes.clone(),
        );
        r.register(
            "snapshots",
            "Snapshots received, by outcome",
            m.snapshots.clone(),
        );
        r.register(
            "snapshot_version",
            "Version of the snapshot being served",
            m.snapshot_version.clone(),
        );
        r.register(
            "upstream_retries",
            "Upstream requests sent again after a connection failure, by backend and reason",
            m.upstream_retries.clone(),
        );
        r.register(
            "outlier_ejections",
            "Endpoints ejected from load balancing after consecutive gateway failures, by backend",
            m.outlier_ejections.clone(),
        );
        r.register(
            "outlier_ejected_endpoints",
            "Endpoints currently ejected from load balancing, by backend",
            m.outlier_ejected.clone(),
        );
        r.register(
            "client_errors",
            "Requests the client failed itself (malformed body, gone mid-body), by backend and kind; never counted against an endpoint",
            m.client_errors.clone(),
        );
        r.register(
            "upstream_overflow",
            "Requests refused at once (503) by a backend's circuit breaker, by backend and breaker",
            m.upstream_overflow.clone(),
        );
        r.register(
            "mirrors_dropped",
            "Mirrored requests dropped because the router-wide bound on mirrors in flight was reached, by mirror backend",
            m.mirrors_dropped.clone(),
        );
        r.register(
            "request_hygiene",
            "Requests the boundary policy changed or refused (paths, upgrades, forwarding headers), by action",
            m.request_hygiene.clone(),
        );
        r.register(
            "limited_requests",
            "Requests cut short by a client limit (body idle timeout, HTTP/2 streams per router)",
            m.limited_requests.clone(),
        );
        Arc::new(m)
    }

    /// Metrics that no registry exports (tests, or a router whose metrics are not wanted).
    pub fn unregistered() -> RouterMetrics {
        RouterMetrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(duration_histogram),
            response_bytes: Family::default(),
            connections: Family::default(),
            open_connections: Family::default(),
            upstream_errors: Family::default(),
            host_refusals: Family::default(),
            request_refusals: Family::default(),
            passthrough_bytes: Family::default(),
            snapshots: Family::default(),
            snapshot_version: Family::default(),
            upstream_retries: Family::default(),
            outlier_ejections: Family::default(),
            outlier_ejected: Family::default(),
            client_errors: Family::default(),
            upstream_overflow: Family::default(),
            mirrors_dropped: Family::default(),
            request_hygiene: Family::default(),
            limited_requests: Family::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(route: &Arc<str>, backend: &Arc<str>, code: u16) -> RequestLabels {
        RequestLabels {
            tenant: Arc::from("acme"),
            route: Arc::clone(route),
            backend: Arc::clone(backend),
            code,
        }
    }

    #[test]
    fn a_routes_series_are_the_familys_own_past_the_cached_ones() {
        let metrics = RouterMetrics::unregistered();
        let series = RouteSeries::default();
        let route: Arc<str> = Arc::from("HTTPRoute acme/web rule 0");
        let backends: [Arc<str>; 2] = [Arc::from("acme/a:80"), Arc::from("acme/b:80")];
        // More backend × status pairs than are cached: every count still lands in its series.
        for round in 0..3u64 {
            for code in 200..220u16 {
                for backend in &backends {
                    series
                        .count_request(&metrics, backend, code, || request(&route, backend, code));
                }
            }
            for backend in &backends {
                let count = metrics
                    .requests
                    .get_or_create(&request(&route, backend, 219))
                    .get();
                assert_eq!(count, round + 1);
            }
        }
        for code in 200..220u16 {
            for backend in &backends {
                let labels = request(&route, backend, code);
                assert_eq!(
                    metrics.requests.get_or_create(&labels).get(),
                    3,
                    "{code} {backend}"
                );
            }
        }
        let labels = || RouteLabels {
            tenant: Arc::from("acme"),
            route: Arc::clone(&route),
        };
        series.route(&metrics, labels).1.inc_by(5);
        series
            .route(&metrics, || unreachable!("resolved once"))
            .1
            .inc_by(2);
        assert_eq!(metrics.response_bytes.get_or_create(&labels()).get(), 7);
    }
}
