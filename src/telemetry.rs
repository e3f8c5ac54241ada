//! Logging and tracing set-up. Logs: `tracing` to standard error, filtered by `RUST_LOG` (default
//! `info`). Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set, the tenant routers' request spans are exported over OTLP/HTTP (protobuf) by a batch span
//! processor on the async runtime, with the W3C trace context propagator; the service name is
//! `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`), else `bulkhead`. The
//! other standard `OTEL_*` variables (headers, timeout, sampler, batch sizes) apply as the
//! OpenTelemetry SDK reads them. Unset, nothing of OpenTelemetry is initialised.

use crate::otlp_client::OtlpClient;
use anyhow::Context;
use opentelemetry::global;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::runtime;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// Environment variables any one of which turns on trace export (the OTLP exporter reads them),
/// the one that wins first.
const OTLP_ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The service name when the environment names none.
const DEFAULT_SERVICE_NAME: &str = "bulkhead";

/// The prefix of the service name the SDK falls back to when the environment names none.
const UNKNOWN_SERVICE: &str = "unknown_service";

/// Log line format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// OpenTelemetry trace export, running; [`Tracing::shutdown`] flushes it.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
}

/// Starts OTLP trace export and turns on the routers' request spans when an OTLP endpoint variable
/// is set; `Ok(None)`, with nothing initialised, when none is. Must run inside the tokio runtime
/// (the batch span processor is a task on it).
pub fn init_tracing() -> anyhow::Result<Option<Tracing>> {
    let get = |name: &str| std::env::var(name).ok();
    if !otlp_configured(get) {
        return Ok(None);
    }
    if let Some(reason) = unsupported_otlp_setting(get) {
        tracing::error!(%reason, "OpenTelemetry trace export is off: the OTLP settings ask for what this build cannot do");
        return Ok(None);
    }
    let client = match otlp_client(get) {
        Ok(client) => client,
        Err(error) => {
            // Tracing is not worth a data plane that does not start.
            tracing::error!(error = %format!("{error:#}"), "OpenTelemetry trace export is off");
            return Ok(None);
        }
    };
    let provider = tracer_provider(None, client).context("cannot set up OTLP trace export")?;
    global::set_text_map_propagator(TraceContextPropagator::new());
    global::set_tracer_provider(provider.clone());
    bulkhead_router::enable_tracing();
    tracing::info!("exporting OpenTelemetry traces over OTLP/HTTP");
    Ok(Some(Tracing { provider }))
}

impl Tracing {
    /// Exports the spans still buffered, then stops the exporter.
    pub async fn shutdown(self) {
        let provider = self.provider;
        // The SDK blocks until the processor task (on this runtime) has exported: off the runtime.
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "OpenTelemetry trace export did not flush"),
            Err(error) => tracing::warn!(%error, "OpenTelemetry shutdown task failed"),
        }
    }
}

/// Whether any OTLP endpoint variable is set to something non-empty (`get` reads one).
fn otlp_configured(get: impl Fn(&str) -> Option<String>) -> bool {
    first_set(&get, OTLP_ENDPOINT_VARS).is_some()
}

/// Why the OTLP settings cannot be honoured, if they cannot: export is OTLP/HTTP protobuf, over
/// plain HTTP or over HTTPS with the CA bundle `OTEL_EXPORTER_OTLP_CERTIFICATE` names, so an
/// `https://` endpoint without one, or a protocol other than `http/protobuf`, would fail on every
/// export. The traces-specific variables win over the general ones, as in the OpenTelemetry
/// specification.
fn unsupported_otlp_setting(get: impl Fn(&str) -> Option<String>) -> Option<String> {
    let first = |names| first_set(&get, names);
    if let Some((name, endpoint)) = first(OTLP_ENDPOINT_VARS) {
        let endpoint_lower = endpoint.trim().to_ascii_lowercase();
        let https = endpoint_lower.starts_with("https://");
        if !https && !endpoint_lower.starts_with("http://") {
            return Some(format!(
                "{name}={endpoint:?}: only http:// and https:// endpoints are supported"
            ));
        }
        if https && first(OTLP_CERTIFICATE_VARS).is_none() {
            return Some(format!(
                "{name}={endpoint:?}: an https:// endpoint needs OTEL_EXPORTER_OTLP_CERTIFICATE \
                 (the CA bundle that signs the collector's certificate)"
            ));
        }
    }
    if let Some((name, protocol)) = first([
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]) {
        if protocol.trim() != "http/protobuf" {
            return Some(format!(
                "{name}={protocol:?}: only http/protobuf is supported"
            ));
        }
    }
    None
}

/// The first of `names` set to something non-empty, with its value (`get` reads one).
fn first_set(
    get: &impl Fn(&str) -> Option<String>,
    names: [&'static str; 2],
) -> Option<(&'static str, String)> {
    names
        .into_iter()
        .find_map(|n| get(n).filter(|v| !v.trim().is_empty()).map(|v| (n, v)))
}

/// Variables naming the CA bundle of an https:// collector, the one that wins first.
const OTLP_CERTIFICATE_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
];

/// Export deadline when `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT` sets none (the specification's 10 s).
const DEFAULT_OTLP_TIMEOUT: Duration = Duration::from_secs(10);

/// The export client the environment describes: its CA bundle (read now) and timeout.
fn otlp_client(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<OtlpClient> {
    let first = |names| first_set(&get, names).map(|(_, value)| value);
    let ca = match first(OTLP_CERTIFICATE_VARS) {
        Some(path) => Some(
            std::fs::read(path.trim())
                .with_context(|| format!("cannot read the OTLP CA bundle {path}"))?,
        ),
        None => None,
    };
    let timeout = first([
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ])
    .and_then(|ms| ms.trim().parse().ok())
    .map_or(DEFAULT_OTLP_TIMEOUT, Duration::from_millis);
    OtlpClient::new(ca.as_deref(), timeout).context("invalid OTLP CA bundle")
}

/// The tracer provider: OTLP/HTTP protobuf export to `endpoint` (the full URL of the traces
/// path) or, when `None`, to the endpoint the standard variables name; a batch span processor on
/// the tokio runtime; the resource the environment describes, named `bulkhead` by default.
fn tracer_provider(
    endpoint: Option<&str>,
    client: OtlpClient,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let mut exporter = SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary);
    if let Some(endpoint) = endpoint {
        exporter = exporter.with_endpoint(endpoint);
    }
    let processor = BatchSpanProcessor::builder(exporter.build()?, runtime::Tokio).build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource())
        .build())
}

/// The resource from the environment (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`), with the
/// service name `bulkhead` when they name none.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with(UNKNOWN_SERVICE));
    if named {
        detected
    } else {
        Resource::builder()
            .with_service_name(DEFAULT_SERVICE_NAME)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_test_support::net::serve_each;
    use bulkhead_test_support::pki::DemoCa;
    use bulkhead_test_support::tls::server_config;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use opentelemetry::trace::{Span, Tracer, TracerProvider};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message;
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    type Kept = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

    /// Starts an OTLP/HTTP receiver on loopback that keeps every decoded `POST /v1/traces`; over
    /// TLS with `tls` (then its URL names `localhost`).
    async fn receiver_with(tls: Option<Arc<rustls::ServerConfig>>) -> (String, Kept) {
        let https = tls.is_some();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let kept = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::clone(&kept);
        let addr = serve_each(move |tcp| {
            let store = Arc::clone(&store);
            let service = service_fn(move |req: hyper::Request<Incoming>| {
                let store = Arc::clone(&store);
                async move {
                    let path_ok = req.method() == "POST" && req.uri().path() == "/v1/traces";
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let mut resp = hyper::Response::new(Full::<Bytes>::default());
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(export) if path_ok => store.lock().unwrap().push(export),
                        _ => *resp.status_mut() = hyper::StatusCode::BAD_REQUEST,
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            let acceptor = acceptor.clone();
            async move {
                let http = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            let _ = http.serve_connection(TokioIo::new(tls), service).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                    }
                }
            }
        })
        .await;
        let url = if https {
            format!("https://localhost:{}/v1/traces", addr.port())
        } else {
            format!("http://{addr}/v1/traces")
        };
        (url, kept)
    }

    async fn receiver() -> (String, Kept) {
        receiver_with(None).await
    }

    /// Whether a span named `name` was exported.
    fn exported(kept: &Kept, name: &str) -> bool {
        kept.lock()
            .unwrap()
            .iter()
            .flat_map(|e| &e.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .any(|s| s.name == name)
    }

    #[tokio::test]
    async fn spans_reach_an_https_collector_that_the_configured_ca_signs() {
        let ca = DemoCa::new("collector CA").unwrap();
        let leaf = ca.issue(&["localhost"]).unwrap();
        let (url, kept) = receiver_with(Some(server_config(&leaf))).await;

        let trusted = OtlpClient::new(Some(ca.cert_pem().as_bytes()), DEFAULT_OTLP_TIMEOUT);
        let provider = tracer_provider(Some(&url), trusted.unwrap()).unwrap();
        let mut span = provider.tracer("test").start("over-tls");
        span.end();
        Tracing { provider }.shutdown().await;
        assert!(exported(&kept, "over-tls"), "span not received over TLS");

        // A CA that did not sign the collector's certificate: nothing arrives.
        let other = DemoCa::new("other CA").unwrap();
        let untrusted = OtlpClient::new(Some(other.cert_pem().as_bytes()), DEFAULT_OTLP_TIMEOUT);
        let provider = tracer_provider(Some(&url), untrusted.unwrap()).unwrap();
        let mut span = provider.tracer("test").start("untrusted");
        span.end();
        Tracing { provider }.shutdown().await;
        assert!(
            !exported(&kept, "untrusted"),
            "exported to a collector the CA does not vouch for"
        );
    }

    /// On a current-thread runtime (what `BULKHEAD_WORKERS=1` runs), the harder case for a flush.
    #[tokio::test]
    async fn spans_are_exported_as_otlp_protobuf_and_flushed_on_shutdown() {
        let (url, kept) = receiver().await;
        let client = OtlpClient::new(None, DEFAULT_OTLP_TIMEOUT).unwrap();
        let provider = tracer_provider(Some(&url), client).unwrap();
        let mut span = provider.tracer("test").start("flushed-span");
        span.end();
        // The batch interval is seconds away: only the shutdown flush can have exported it.
        Tracing { provider }.shutdown().await;
        let exports = kept.lock().unwrap();
        let resource = exports
            .iter()
            .flat_map(|e| &e.resource_spans)
            .find(|r| {
                r.scope_spans
                    .iter()
                    .flat_map(|s| &s.spans)
                    .any(|s| s.name == "flushed-span")
            })
            .expect("span exported on shutdown");
        let service = resource
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.clone());
        let expected = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
        assert_eq!(service, Some(Value::StringValue(expected)));
    }

    #[test]
    fn settings_export_cannot_honour_are_named() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(
            unsupported_otlp_setting(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])),
            None
        );
        let https =
            unsupported_otlp_setting(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318")]))
                .expect("https refused");
        assert!(https.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{https}");
        // The traces-specific endpoint wins over the general one.
        assert_eq!(
            unsupported_otlp_setting(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://c:4318/v1/traces"
                ),
            ])),
            None
        );
        assert_eq!(
            unsupported_otlp_setting(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/otel/ca.crt"),
            ])),
            None
        );
        let grpc = unsupported_otlp_setting(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]))
        .expect("grpc refused");
        assert!(grpc.contains("grpc"), "{grpc}");
        assert_eq!(
            unsupported_otlp_setting(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ])),
            None
        );
    }

    #[test]
    fn export_is_on_only_with_an_endpoint() {
        assert!(!otlp_configured(|_| None));
        assert!(!otlp_configured(|_| Some("  ".into())));
        assert!(otlp_configured(|name| {
            (name == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://collector:4318".into())
        }));
        assert!(otlp_configured(|name| {
            (name == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .then(|| "http://collector:4318/v1/traces".into())
        }));
    }
}
