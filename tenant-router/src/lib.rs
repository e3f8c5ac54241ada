//! Tier 2 of Bulkhead: the tenant router.
//!
//! One [`Router`] serves one tenant. Its TLS listener reads the PROXY v2 header the edge wrote, sniffs
//! the ClientHello again and, by SNI, either forwards the raw TLS stream to a TLSRoute backend or
//! terminates TLS (rustls, certificate chosen by SNI) and routes HTTP/1.1 and HTTP/2 requests with
//! Gateway API semantics: host ownership (421), virtual host and first matching route (404), filters,
//! weighted backends, power-of-two-choices endpoints, pooled upstream connections. Its plain HTTP
//! listener routes by `Host` the same way. Endpoints that fail consecutively are ejected from load
//! balancing for a while (passive outlier detection), and a request whose connection failed is sent
//! to another endpoint when that is safe (nothing was sent, or an idempotent request without a
//! body); see [`RouterLimits::max_retries`] and [`DEFAULT_OUTLIER_CONSECUTIVE_FAILURES`].
//!
//! Configuration arrives as [`TenantSnapshot`](bulkhead_snapshot::TenantSnapshot)s; each is
//! compiled into an immutable configuration and swapped in atomically, or refused (and acknowledged
//! with the reason) while the previous one keeps serving. A connection keeps the configuration it
//! was accepted with.
//!
//! With [`enable_tracing`] (the `bulkhead` binary calls it when `OTEL_EXPORTER_OTLP_ENDPOINT` is set),
//! every request gets an OpenTelemetry server span whose parent is the client's `traceparent`, and
//! the backend request carries a `traceparent` naming that span.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod balance;
mod body;
mod client_cert;
mod compile;
mod conn_streams;
mod error;
mod fault;
mod http;
mod idle;
mod limits;
mod listener;
mod metrics;
mod otel;
mod outlier;
mod router;
mod timer;
mod upstream;

pub use bulkhead_pathnorm::EscapedSlashes;
pub use bulkhead_snapshot::redirect::DEFAULT_REDIRECT_STATUS;
pub use bulkhead_snapshot::regex::{MAX_REGEX_LEN, MAX_REGEX_SIZE};
pub use error::{CompileError, RouterError};
pub use limits::*;
pub use metrics::RouterMetrics;
pub use otel::{enable_tracing, tracing_enabled, TRACER_NAME};
pub use router::{validate_snapshot, Router, RouterConfig};
