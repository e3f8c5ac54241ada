//! The demo backend: an HTTP/1.1 and h2c server that says which backend answered and echoes what it
//! received (method, path, host and headers), one `key: value` per line. Used by the quickstart and
//! by the end-to-end tests.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest request body the demo backend reads.
const MAX_BODY: usize = 1024 * 1024;

/// Binds and serves a demo backend until `shutdown` is cancelled; returns once bound.
pub async fn spawn(
    listen: SocketAddr,
    name: String,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("demo backend {name} cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let name: Arc<str> = name.into();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r { Ok(a) => a, Err(_) => continue },
            };
            let name = name.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(name.clone(), addr, peer, req));
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10));
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Serves a demo backend in the foreground (the `demo-backend` subcommand).
pub async fn serve_forever(listen: SocketAddr, name: String) -> anyhow::Result<()> {
    let token = CancellationToken::new();
    let addr = spawn(listen, name.clone(), token.clone()).await?;
    tracing::info!(%addr, name, "demo backend listening");
    tokio::signal::ctrl_c().await?;
    token.cancel();
    Ok(())
}

async fn answer(
    name: Arc<str>,
    local: SocketAddr,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    let body_len = match limited.collect().await {
        Ok(b) => b.to_bytes().len(),
        Err(_) => 0,
    };
    let host = parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "backend: {name}");
    let _ = writeln!(out, "address: {local}");
    let _ = writeln!(out, "peer: {peer}");
    let _ = writeln!(out, "version: {:?}", parts.version);
    let _ = writeln!(out, "method: {}", parts.method);
    let _ = writeln!(
        out,
        "path: {}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let _ = writeln!(out, "host: {host}");
    let _ = writeln!(out, "body-bytes: {body_len}");
    for (k, v) in &parts.headers {
        let _ = writeln!(out, "header {}: {}", k, v.to_str().unwrap_or("<binary>"));
    }
    let mut resp = Response::new(Full::new(Bytes::from(out)));
    if let Ok(v) = hyper::header::HeaderValue::from_str(&name) {
        resp.headers_mut().insert("x-backend", v);
    }
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}
