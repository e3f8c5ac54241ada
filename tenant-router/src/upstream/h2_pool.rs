//! HTTP/2 prior knowledge upstreams: one multiplexed connection per endpoint.

use super::tls::UpstreamTls;
use super::{connect_stream, PoolKey, UpstreamError};
use crate::body::ProxyBody;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// One multiplexed connection per pool key (configured endpoints; foldhash, looked up per request).
pub(super) type SenderMap =
    HashMap<PoolKey, http2::SendRequest<ProxyBody>, foldhash::fast::RandomState>;

/// One HTTP/2 connection per endpoint and TLS identity, re-established when it closes.
#[derive(Debug)]
pub(super) struct H2Pool {
    pub(super) connect_timeout: Duration,
    pub(super) keep_alive_interval: Duration,
    pub(super) keep_alive_timeout: Duration,
    pub(super) senders: Mutex<SenderMap>,
}

impl H2Pool {
    #[allow(clippy::manual_async_fn)] // an `async fn` would hold its arguments twice
    pub(super) fn send<'a>(
        &'a self,
        endpoint: SocketAddr,
        tls: Option<&'a Arc<UpstreamTls>>,
        mut req: Request<ProxyBody>,
    ) -> impl Future<Output = Result<Response<Incoming>, UpstreamError>> + use<'a> {
        // Not an `async fn`, which would keep a second copy of its arguments (see `h1_conn::exchange`).
        async move {
            let key = PoolKey {
                endpoint,
                tls: tls.map(|t| t.identity),
            };
            if tls.is_some() {
                https_scheme(&mut req);
            }
            let cached = self
                .senders
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
                .filter(|s| !s.is_closed())
                .cloned();
            let mut sender = match cached {
                Some(s) => s,
                // Boxed: connecting is the rare path (see `h1_pool::send`).
                None => Box::pin(self.connect(key, tls)).await?,
            };
            sender
                .ready()
                .await
                .map_err(|e| UpstreamError::Connect(Box::new(e)))?;
            sender.try_send_request(req).await.map_err(|mut e| {
                if e.take_message().is_some() {
                    UpstreamError::Unsent(Box::new(e.into_error()))
                } else {
                    UpstreamError::from_sent(e.into_error())
                }
            })
        }
    }

    async fn connect(
        &self,
        key: PoolKey,
        tls: Option<&Arc<UpstreamTls>>,
    ) -> Result<http2::SendRequest<ProxyBody>, UpstreamError> {
        let endpoint = key.endpoint;
        let stream = connect_stream(endpoint, tls, self.connect_timeout).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(crate::timer::WorkerTimer::default())
            .keep_alive_interval(self.keep_alive_interval)
            .keep_alive_timeout(self.keep_alive_timeout)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Connect(Box::new(e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%endpoint, error = %e, "h2 upstream connection ended");
            }
        });
        self.senders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, sender.clone());
        Ok(sender)
    }
}

impl H2Pool {
    /// Drops the connections to endpoints not in `live`.
    pub(super) fn retain(&self, live: &HashSet<SocketAddr>) {
        self.senders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|key, _| live.contains(&key.endpoint));
    }
}

/// Sets the `:scheme` of a request to a TLS backend to `https`.
fn https_scheme(req: &mut Request<ProxyBody>) {
    let mut parts = req.uri().clone().into_parts();
    if parts.authority.is_none() {
        return;
    }
    parts.scheme = Some(http::uri::Scheme::HTTPS);
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}
