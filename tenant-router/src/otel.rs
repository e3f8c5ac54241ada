//! OpenTelemetry server spans for routed requests, and W3C trace context towards backends.
//!
//! Off until the process calls [`enable_tracing`]: then the per-request cost is one atomic load and
//! `traceparent` reaches the backend untouched, like any other header. On, every request gets one
//! server span (OpenTelemetry HTTP semantic conventions plus `bulkhead.*` attributes) whose parent
//! is the request's `traceparent` / `tracestate`, read with the global text map propagator; the
//! request to the backend (and its mirrors) then carries a `traceparent` naming the router's span.
//! The span ends with the response body, so it covers streaming too.

use http::{HeaderMap, HeaderName, Method, Request, Version};
use opentelemetry::global::{self, BoxedSpan, BoxedTracer};
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use std::net::SocketAddr;
use std::sync::OnceLock;

/// Instrumentation scope name of the router's spans.
pub const TRACER_NAME: &str = "bulkhead-router";

/// The W3C `tracestate` header.
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The tracer, once tracing is on.
static TRACER: OnceLock<BoxedTracer> = OnceLock::new();

/// Turns on request spans for every router in this process. Install the global tracer provider
/// and text map propagator (`opentelemetry::global`) first: the tracer is taken from the provider
/// installed at the first call; later calls change nothing.
pub fn enable_tracing() {
    TRACER.get_or_init(|| global::tracer(TRACER_NAME));
}

/// Whether [`enable_tracing`] was called.
pub fn tracing_enabled() -> bool {
    TRACER.get().is_some()
}

/// What a request's span says about where it arrived.
pub(crate) struct Arrival<'a> {
    /// The tenant the router serves.
    pub(crate) tenant: &'a str,
    /// `http` or `https`.
    pub(crate) scheme: &'static str,
    /// The client address (from PROXY v2 when the edge sent one).
    pub(crate) client: SocketAddr,
    /// The host as sent (`:authority` or `Host`), when there was one.
    pub(crate) host: &'a str,
}

/// How a request ended, for its span.
pub(crate) struct Completion<'a> {
    /// The response status sent (0 when none was).
    pub(crate) status: u16,
    /// The route label (`-` when none matched).
    pub(crate) route: &'a str,
    /// The backend label (`-` when none was chosen).
    pub(crate) backend: &'a str,
    /// The request id sent to the backend (empty when the request was not forwarded).
    pub(crate) request_id: &'a str,
    /// Why the response body failed, if it did.
    pub(crate) failure: Option<&'static str>,
}

/// The server span of one request.
pub(crate) struct RequestSpan {
    span: BoxedSpan,
}

impl std::fmt::Debug for RequestSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSpan")
            .field("context", self.span.span_context())
            .finish()
    }
}

impl RequestSpan {
    /// Starts the span of `req` when tracing is on; `None` (at the cost of one atomic load) when off.
    pub(crate) fn start<B>(req: &Request<B>, arrival: &Arrival<'_>) -> Option<Self> {
        let tracer = TRACER.get()?;
        let parent =
            global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(req.headers())));
        let method = known_method(req.method());
        let mut attributes = Vec::with_capacity(10);
        attributes.extend([
            KeyValue::new("http.request.method", method),
            KeyValue::new("url.path", req.uri().path().to_owned()),
            KeyValue::new("url.scheme", arrival.scheme),
            KeyValue::new("network.protocol.version", protocol_version(req.version())),
            KeyValue::new("client.address", arrival.client.ip().to_string()),
            KeyValue::new("bulkhead.tenant", arrival.tenant.to_owned()),
        ]);
        if !arrival.host.is_empty() {
            let (address, port) = split_host_port(arrival.host);
            attributes.push(KeyValue::new("server.address", address.to_owned()));
            if let Some(port) = port {
                attributes.push(KeyValue::new("server.port", i64::from(port)));
            }
        }
        if let Some(agent) = req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            attributes.push(KeyValue::new("user_agent.original", agent.to_owned()));
        }
        let span = tracer
            .span_builder(method)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        Some(Self { span })
    }

    /// Writes this span's context (`traceparent`, `tracestate`) into the backend request's headers,
    /// replacing what the client sent.
    pub(crate) fn inject(&self, headers: &mut HeaderMap) {
        let cx = Context::new().with_remote_span_context(self.span.span_context().clone());
        global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(headers)));
        // The propagator writes `tracestate` even when the trace has none: send none then.
        if headers.get(&TRACESTATE).is_some_and(|v| v.is_empty()) {
            headers.remove(&TRACESTATE);
        }
    }

    /// Records how the request ended and ends the span. A 5xx status or a failed body marks the
    /// span as an error (4xx does not, for server spans).
    pub(crate) fn finish(mut self, done: &Completion<'_>) {
        if done.status != 0 {
            self.span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(done.status),
            ));
        }
        self.span
            .set_attribute(KeyValue::new("bulkhead.route", done.route.to_owned()));
        self.span
            .set_attribute(KeyValue::new("bulkhead.backend", done.backend.to_owned()));
        if !done.request_id.is_empty() {
            self.span.set_attribute(KeyValue::new(
                "bulkhead.request_id",
                done.request_id.to_owned(),
            ));
        }
        if let Some(failure) = done.failure {
            self.span
                .set_attribute(KeyValue::new("error.type", failure));
            self.span.set_status(Status::error(failure));
        } else if done.status >= 500 {
            self.span
                .set_attribute(KeyValue::new("error.type", done.status.to_string()));
            self.span.set_status(Status::error(""));
        }
        self.span.end();
    }
}

/// The method as the semantic conventions name it: a well-known method, else `_OTHER`.
fn known_method(method: &Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method.as_str())
        .unwrap_or("_OTHER")
}

/// `network.protocol.version` of an HTTP version.
fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// Splits `host[:port]` (IPv6 literals in brackets) into the host and the port, if any.
fn split_host_port(host: &str) -> (&str, Option<u16>) {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && (!name.contains(':') || name.ends_with(']')) => {
            (name, port.parse().ok())
        }
        _ => (host, None),
    };
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    (name, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_well_known_set_are_other() {
        assert_eq!(known_method(&Method::PATCH), "PATCH");
        assert_eq!(known_method(&Method::GET), "GET");
        let purge = Method::from_bytes(b"PURGE").expect("extension method");
        assert_eq!(known_method(&purge), "_OTHER");
    }

    #[test]
    fn host_and_port_are_split() {
        assert_eq!(split_host_port("a.acme.test"), ("a.acme.test", None));
        assert_eq!(
            split_host_port("a.acme.test:8443"),
            ("a.acme.test", Some(8443))
        );
        assert_eq!(split_host_port("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_host_port("[::1]"), ("::1", None));
    }

    #[test]
    fn no_span_is_started_while_tracing_is_off() {
        // Unit tests never call `enable_tracing`; the integration test `otel` does, in its own process.
        assert!(!tracing_enabled());
        let req = Request::new(());
        let arrival = Arrival {
            tenant: "acme",
            scheme: "http",
            client: SocketAddr::from(([127, 0, 0, 1], 1)),
            host: "a.acme.test",
        };
        assert!(RequestSpan::start(&req, &arrival).is_none());
    }
}
