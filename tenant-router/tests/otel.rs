//! OpenTelemetry over real loopback sockets: with tracing on, a request through the router is
//! exported over OTLP/HTTP (protobuf) to a receiver as a server span, the child of the client's
//! `traceparent`, and the backend sees a `traceparent` naming the router's span.
//!
//! A test binary of its own: tracing is switched on for the whole process.

#[path = "router/support.rs"]
#[allow(dead_code)]
mod support;

use bulkhead_snapshot::{BackendProtocol, TenantSnapshot};
use bulkhead_test_support::net::serve_each;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry::global;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::runtime;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prost::Message;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const HOST: &str = "a.acme.test";
const WEB: &str = "acme/web:80";
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN_ID: &str = "b7ad6b7169203331";
/// How long the exported spans may take to reach the receiver.
const EXPORT_WAIT: Duration = Duration::from_secs(15);

/// An OTLP/HTTP receiver: keeps the spans of every `POST /v1/traces`.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&spans);
        let addr = serve_each(move |tcp| {
            let kept = Arc::clone(&kept);
            let service = service_fn(move |req: Request<Incoming>| {
                let kept = Arc::clone(&kept);
                async move { Ok::<_, Infallible>(receive(req, &kept).await) }
            });
            async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            }
        })
        .await;
        Receiver { addr, spans }
    }

    /// Polls until a span satisfying `wanted` has arrived; panics after [`EXPORT_WAIT`].
    async fn span(&self, provider: &SdkTracerProvider, wanted: impl Fn(&Span) -> bool) -> Span {
        let deadline = Instant::now() + EXPORT_WAIT;
        // The SDK's flush blocks until the processor task on this runtime has exported.
        let flushing = provider.clone();
        tokio::task::spawn_blocking(move || flushing.force_flush())
            .await
            .unwrap()
            .unwrap();
        loop {
            if let Some(span) = self.spans.lock().unwrap().iter().find(|s| wanted(s)) {
                return span.clone();
            }
            assert!(Instant::now() < deadline, "span not exported in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(req: Request<Incoming>, kept: &Mutex<Vec<Span>>) -> Response<Full<Bytes>> {
    let wrong = req.method() != "POST"
        || req.uri().path() != "/v1/traces"
        || req
            .headers()
            .get("content-type")
            .is_none_or(|v| v != "application/x-protobuf");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let mut resp = Response::new(Full::default());
    if wrong {
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    }
    let Ok(export) = ExportTraceServiceRequest::decode(body) else {
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return resp;
    };
    let mut spans = kept.lock().unwrap();
    for resource in export.resource_spans {
        for scope in resource.scope_spans {
            spans.extend(scope.spans);
        }
    }
    resp.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    resp
}

fn attribute(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone())
}

fn text(span: &Span, key: &str) -> Option<String> {
    match attribute(span, key) {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `traceparent` split into trace id and parent id.
fn traceparent(value: &str) -> (String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {value}");
    assert_eq!(parts[0], "00");
    (parts[1].to_owned(), parts[2].to_owned())
}

fn snapshot(pki: &Pki, web: &EchoBackend) -> TenantSnapshot {
    let mut s = base_snapshot(pki, 1);
    s.backends
        .insert(WEB.into(), backend(BackendProtocol::Http1, &[web.addr]));
    s.http.virtual_hosts = vec![vhost(
        HOST,
        80,
        vec![route("web", prefix("/"), vec![weighted(Some(WEB), 1)])],
    )];
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_span_is_exported_as_child_of_the_client_and_parent_of_the_backend() {
    let receiver = Receiver::start().await;
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("http://{}/v1/traces", receiver.addr))
        .build()
        .unwrap();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter, runtime::Tokio).build())
        .build();
    global::set_text_map_propagator(TraceContextPropagator::new());
    global::set_tracer_provider(provider.clone());
    assert!(!bulkhead_router::tracing_enabled());
    bulkhead_router::enable_tracing();
    assert!(bulkhead_router::tracing_enabled());

    let pki = Pki::new();
    let web = EchoBackend::start("web").await;
    let router = TestRouter::start(snapshot(&pki, &web)).await;
    let mut c = h1_plain(&router).await;

    // A client that is part of a trace: the router's span is its child.
    let req = c
        .request("GET", HOST, "/items/7")
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN_ID}-01"))
        .header("tracestate", "congo=t61rcWkgMzE")
        .header("user-agent", "otel-test")
        .body(Full::default())
        .unwrap();
    let r = read_reply(c.send(req).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = r
        .seen_header("traceparent")
        .expect("backend got traceparent");
    let (trace_id, router_span_id) = traceparent(&seen);
    assert_eq!(trace_id, TRACE_ID, "same trace towards the backend");
    assert_ne!(
        router_span_id, CLIENT_SPAN_ID,
        "the router's span is the parent"
    );
    assert_eq!(
        r.seen_header("tracestate").as_deref(),
        Some("congo=t61rcWkgMzE"),
        "the client's trace state goes on"
    );

    let span = receiver
        .span(&provider, |s| hex(&s.trace_id) == TRACE_ID)
        .await;
    assert_eq!(hex(&span.span_id), router_span_id);
    assert_eq!(hex(&span.parent_span_id), CLIENT_SPAN_ID);
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(span.name, "GET");
    assert_eq!(text(&span, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(text(&span, "url.path").as_deref(), Some("/items/7"));
    assert_eq!(text(&span, "url.scheme").as_deref(), Some("http"));
    assert_eq!(text(&span, "server.address").as_deref(), Some(HOST));
    assert_eq!(text(&span, "client.address").as_deref(), Some("192.0.2.10"));
    assert_eq!(
        text(&span, "user_agent.original").as_deref(),
        Some("otel-test")
    );
    assert_eq!(
        attribute(&span, "http.response.status_code"),
        Some(Value::IntValue(200))
    );
    assert_eq!(text(&span, "bulkhead.tenant").as_deref(), Some(TENANT));
    assert_eq!(
        text(&span, "bulkhead.route").as_deref(),
        Some("HTTPRoute acme/web rule 0")
    );
    assert_eq!(text(&span, "bulkhead.backend").as_deref(), Some(WEB));
    assert_eq!(
        text(&span, "bulkhead.request_id"),
        r.seen_header("x-request-id")
    );

    // A client outside any trace: the router's span starts one.
    let r = c.get(HOST, "/fresh").await;
    let seen = r
        .seen_header("traceparent")
        .expect("backend got traceparent");
    let (trace_id, span_id) = traceparent(&seen);
    assert_ne!(trace_id, TRACE_ID);
    assert_eq!(r.seen_header("tracestate"), None, "no empty trace state");
    let root = receiver
        .span(&provider, |s| hex(&s.trace_id) == trace_id)
        .await;
    assert_eq!(hex(&root.span_id), span_id);
    assert!(root.parent_span_id.is_empty(), "a root span");
    assert_eq!(text(&root, "url.path").as_deref(), Some("/fresh"));

    // A request the router answers itself (a host it does not serve: 421) is traced too.
    let r = c.get("other.example", "/").await;
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST);
    let local = receiver
        .span(&provider, |s| {
            attribute(s, "http.response.status_code") == Some(Value::IntValue(421))
        })
        .await;
    assert_eq!(text(&local, "bulkhead.backend").as_deref(), Some("-"));

    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .unwrap();
}
