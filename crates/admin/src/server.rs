//! The admin HTTP server.

use crate::ready::Readiness;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a client may take to send its request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Produces the `/status` document on demand.
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// What the admin endpoints report.
#[derive(Clone)]
pub struct AdminState {
    /// Readiness of the process's components.
    pub readiness: Readiness,
    /// The metrics registry, complete before the server starts.
    pub registry: Arc<Registry>,
    /// The `/status` document, when the process has one (standalone mode).
    pub status: Option<StatusFn>,
}

/// Errors of the admin server.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A bound admin server.
pub struct AdminServer {
    listener: TcpListener,
    state: AdminState,
}

impl AdminServer {
    /// Binds the admin listener.
    pub async fn bind(addr: SocketAddr, state: AdminState) -> Result<Self, AdminError> {
        let listener = bulkhead_net::bind(addr)
            .await
            .map_err(|source| AdminError::Bind { addr, source })?;
        Ok(Self { listener, state })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let state = Arc::new(self.state);
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(&state, &req)) }
                });
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .max_buf_size(MAX_HEAD_BYTES);
                if let Err(e) = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %e, "admin connection ended with an error");
                }
            });
        }
    }
}

fn handle(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let details: String = state
                .readiness
                .details()
                .iter()
                .map(|d| format!("{d}\n"))
                .collect();
            if state.readiness.is_ready() {
                text(StatusCode::OK, format!("ready\n{details}"))
            } else {
                let waiting = state.readiness.not_ready();
                let body = if waiting.is_empty() {
                    "not ready: no component registered\n".to_string()
                } else {
                    format!("not ready: {}\n{details}", waiting.join(", "))
                };
                text(StatusCode::SERVICE_UNAVAILABLE, body)
            }
        }
        "/metrics" => {
            let mut out = String::new();
            match prometheus_client::encoding::text::encode(&mut out, &state.registry) {
                Ok(()) => with_type(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    out,
                ),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
        "/status" => match &state.status {
            Some(f) => {
                let doc = f();
                let body = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into());
                with_type(StatusCode::OK, "application/json", body + "\n")
            }
            None => text(StatusCode::NOT_FOUND, "no status in this mode\n".into()),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", body)
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn endpoints_report_readiness_metrics_and_status() {
        let readiness = Readiness::new();
        let flag = readiness.flag("router/acme");
        let mut registry = Registry::default();
        let c = prometheus_client::metrics::counter::Counter::<u64>::default();
        registry.register("demo_events", "Demo events", c.clone());
        c.inc();
        let state = AdminState {
            readiness,
            registry: Arc::new(registry),
            status: Some(Arc::new(|| serde_json::json!({"items": []}))),
        };
        let server = AdminServer::bind("127.0.0.1:0".parse().unwrap(), state)
            .await
            .unwrap();
        let addr = server.local_addr();
        let token = CancellationToken::new();
        tokio::spawn(server.run(token.clone()));

        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        let r = get(addr, "/readyz").await;
        assert!(
            r.starts_with("HTTP/1.1 503") && r.contains("router/acme"),
            "{r}"
        );
        flag.set(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        flag.set_detail("degraded kinds: TCPRoute (403)".into());
        let r = get(addr, "/readyz").await;
        assert!(
            r.starts_with("HTTP/1.1 200")
                && r.contains("router/acme: degraded kinds: TCPRoute (403)"),
            "{r}"
        );
        let m = get(addr, "/metrics").await;
        assert!(m.contains("demo_events_total 1"), "{m}");
        assert!(get(addr, "/status").await.contains("\"items\""));
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        token.cancel();
    }
}
