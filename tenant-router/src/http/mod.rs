//! The HTTP request path: path normalisation (400), host checks (421), virtual host and route
//! selection (404), filters,
//! backend choice (500 / 503), forwarding with deadlines (504) and protocol upgrades.
//!
//! One function, [`serve_request`], turns every failure into a status before headers are sent; after
//! that, a failure aborts the response (see [`crate::body`]).

pub(crate) mod headers;
mod host;
mod upgrade;

use crate::balance::{CompiledBackend, EndpointState};
use crate::body::{self, ObservedBody, ProxyBody, RequestRecord};
use crate::compile::filters::{
    CompiledFilter, CompiledHeaderModifier, CompiledRedirect, CompiledRewrite, RedirectInput,
};
use crate::compile::matcher::RequestFacts;
use crate::compile::{CompiledConfig, CompiledRoute, CompiledVhost};
use crate::idle::Activity;
use crate::limits::RouterLimits;
use crate::metrics::{
    RetryLabels, RetryReason, RouterMetrics, UpstreamErrorKind, UpstreamErrorLabels,
};
use crate::otel::{Arrival, RequestSpan};
use crate::outlier::{Health, OutlierPolicy};
use crate::upstream::{UpstreamError, Upstreams};
use bulkhead_crds::snapshot::BackendProtocol;
use bulkhead_pathnorm::{normalize_path, PathError};
use http::header::{CONTENT_TYPE, HOST, LOCATION};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What every connection of one router shares (across snapshot versions).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) tenant: Arc<str>,
    pub(crate) metrics: Arc<RouterMetrics>,
    pub(crate) upstreams: Upstreams,
    pub(crate) limits: RouterLimits,
    /// Outlier detection settings (from the limits).
    pub(crate) outlier: OutlierPolicy,
    /// Cancelled when the drain timeout has passed: every remaining connection is dropped.
    pub(crate) hard_stop: CancellationToken,
    /// Background work that shutdown waits for (connections, upgraded streams).
    pub(crate) tasks: TaskTracker,
}

/// How the connection reached the HTTP layer.
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    /// Through terminated TLS; requests must be for names the certificate's pattern covers.
    Tls {
        /// The certificate the connection's SNI selected.
        certificate: Arc<str>,
    },
    /// Through the plain HTTP listener.
    Plain,
}

/// One client connection's view: the configuration it loaded when it was accepted.
#[derive(Debug)]
pub(crate) struct ConnContext {
    pub(crate) shared: Arc<Shared>,
    pub(crate) config: Arc<CompiledConfig>,
    pub(crate) entry: Entry,
    pub(crate) client: SocketAddr,
    /// The connection's requests in flight, for its idle timeout.
    pub(crate) activity: Arc<Activity>,
}

impl ConnContext {
    fn scheme(&self) -> &'static str {
        match self.entry {
            Entry::Tls { .. } => "https",
            Entry::Plain => "http",
        }
    }
}

static NONE_LABEL: &str = "-";

/// Serves one request; never fails (errors become statuses or aborted bodies).
pub(crate) async fn serve_request(
    ctx: Arc<ConnContext>,
    req: Request<Incoming>,
) -> Result<Response<ObservedBody>, Infallible> {
    let start = Instant::now();
    let none: Arc<str> = Arc::from(NONE_LABEL);
    let mut record = RequestRecord {
        metrics: Arc::clone(&ctx.shared.metrics),
        tenant: Arc::clone(&ctx.shared.tenant),
        route: Arc::clone(&none),
        backend: none,
        status: 0,
        method: req.method().clone(),
        host: raw_host(&req).unwrap_or_default(),
        path: req.uri().path().to_owned(),
        request_id: String::new(),
        start,
        _in_flight: ctx.activity.begin(),
        upstream: None,
        guard: None,
        span: None,
    };
    record.span = RequestSpan::start(
        &req,
        &Arrival {
            tenant: &ctx.shared.tenant,
            scheme: ctx.scheme(),
            client: ctx.client,
            host: &record.host,
        },
    );
    // Boxed: the routing future is ~5 KiB, and hyper moves the per-request task (which holds this
    // future) several times before and after running it; a pointer is cheaper to move.
    let routed = Box::pin(route_and_forward(&ctx, req, &mut record, start)).await;
    let (response, deadline) = match routed {
        Ok(forwarded) => forwarded,
        Err(local) => (local, None),
    };
    record.status = response.status().as_u16();
    Ok(response.map(|b| ObservedBody::new(b, deadline, record)))
}

/// The request's host as sent: the URI authority (HTTP/2 `:authority`, HTTP/1 absolute form) or `Host`.
fn raw_host<B>(req: &Request<B>) -> Option<String> {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
}

/// The request's URI with its path in canonical form (see [`bulkhead_pathnorm`]), so that routes
/// match, and the backend receives, one spelling per resource; `None` when it already is canonical.
fn canonical_uri(uri: &Uri) -> Result<Option<Uri>, PathError> {
    let Cow::Owned(path) = normalize_path(uri.path())? else {
        return Ok(None);
    };
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    // The canonical path only holds characters the original path held, so both steps succeed.
    parts.path_and_query =
        Some(PathAndQuery::try_from(path_and_query).map_err(|_| PathError::NotAbsolute)?);
    Uri::from_parts(parts)
        .map(Some)
        .map_err(|_| PathError::NotAbsolute)
}

/// A response generated by the router itself.
pub(crate) fn local_response(status: StatusCode) -> Response<ProxyBody> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    );
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// What the filters of a rule and of its chosen backend ask for.
#[derive(Default)]
struct FilterPlan<'a> {
    response_headers: Vec<&'a CompiledHeaderModifier>,
    redirect: Option<&'a CompiledRedirect>,
    rewrites: Vec<&'a CompiledRewrite>,
    mirrors: Vec<(&'a Arc<CompiledBackend>, u32)>,
}

impl<'a> FilterPlan<'a> {
    /// Applies request header edits at once (in filter order) and records the rest.
    fn take(&mut self, filters: &'a [CompiledFilter], headers: &mut http::HeaderMap) {
        for f in filters {
            match f {
                CompiledFilter::RequestHeaders(m) => m.apply(headers),
                CompiledFilter::ResponseHeaders(m) => self.response_headers.push(m),
                CompiledFilter::Redirect(r) => {
                    self.redirect.get_or_insert(r);
                }
                CompiledFilter::Rewrite(r) => self.rewrites.push(r),
                CompiledFilter::Mirror { backend, percent } => {
                    self.mirrors.push((backend, *percent))
                }
            }
        }
    }

    fn finish(&self, mut resp: Response<ProxyBody>) -> Response<ProxyBody> {
        for m in &self.response_headers {
            m.apply(resp.headers_mut());
        }
        resp
    }
}

type Forwarded = (Response<ProxyBody>, Option<Instant>);

async fn route_and_forward(
    ctx: &ConnContext,
    mut req: Request<Incoming>,
    record: &mut RequestRecord,
    start: Instant,
) -> Result<Forwarded, Response<ProxyBody>> {
    if req.method() == Method::CONNECT {
        return Err(local_response(StatusCode::METHOD_NOT_ALLOWED));
    }
    match canonical_uri(req.uri()) {
        Ok(None) => {}
        Ok(Some(uri)) => {
            uri.path().clone_into(&mut record.path);
            *req.uri_mut() = uri;
        }
        Err(error) => {
            tracing::debug!(tenant = %ctx.shared.tenant, path = %record.path, %error, "request path refused");
            return Err(local_response(StatusCode::BAD_REQUEST));
        }
    }
    let host::RequestHost {
        raw: host_value,
        name: host,
    } = host::request_host(&req).map_err(|refusal| refusal.respond(ctx, &record.host))?;
    host::authorise(ctx, &host).map_err(|refusal| refusal.respond(ctx, &host))?;
    let vhosts = match ctx.entry {
        Entry::Tls { .. } => &ctx.config.https_vhosts,
        Entry::Plain => &ctx.config.http_vhosts,
    };
    let vhost: &CompiledVhost = vhosts
        .lookup(&host)
        .ok_or_else(|| local_response(StatusCode::NOT_FOUND))?;
    let route = {
        let facts = RequestFacts {
            method: req.method(),
            path: req.uri().path(),
            query: req.uri().query(),
            headers: req.headers(),
        };
        vhost
            .routes
            .iter()
            .find(|r| r.matcher.matches(&facts))
            .ok_or_else(|| local_response(StatusCode::NOT_FOUND))?
    };
    record.route = Arc::clone(&route.label);

    let mut plan = FilterPlan::default();
    plan.take(&route.filters, req.headers_mut());
    if let Some(redirect) = plan.redirect {
        return Err(plan.finish(redirect_response(ctx, &req, &host, vhost, route, redirect)));
    }
    if route.backends.is_empty() {
        return Err(plan.finish(local_response(StatusCode::INTERNAL_SERVER_ERROR)));
    }
    let chosen = route
        .backends
        .pick()
        .ok_or_else(|| plan.finish(local_response(StatusCode::INTERNAL_SERVER_ERROR)))?;
    plan.take(&chosen.filters, req.headers_mut());
    if let Some(redirect) = plan.redirect {
        return Err(plan.finish(redirect_response(ctx, &req, &host, vhost, route, redirect)));
    }
    let backend = chosen
        .backend
        .as_ref()
        .ok_or_else(|| plan.finish(local_response(StatusCode::INTERNAL_SERVER_ERROR)))?;
    record.backend = Arc::clone(&backend.id);
    let first = backend
        .pick_endpoint()
        .ok_or_else(|| plan.finish(local_response(StatusCode::SERVICE_UNAVAILABLE)))?;

    let upgrading = req.version() == Version::HTTP_11
        && backend.protocol != BackendProtocol::H2c
        && headers::is_upgrade_request(req.headers());
    let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, incoming) = req.into_parts();
    let mut path = parts.uri.path().to_owned();
    let mut upstream_host =
        HeaderValue::from_str(&host_value).map_err(|_| local_response(StatusCode::BAD_REQUEST))?;
    for rw in &plan.rewrites {
        if let Some(h) = &rw.hostname {
            upstream_host = h.clone();
        }
        if let Some(change) = &rw.path {
            path = change.apply(&path, route.matched_prefix());
        }
    }
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    headers::strip_hop_by_hop(&mut parts.headers, upgrading);
    let original_host = HeaderValue::from_str(&host_value).ok();
    record.request_id = headers::add_forwarding(
        &mut parts.headers,
        ctx.client.ip(),
        ctx.scheme(),
        original_host.as_ref(),
    );
    if let Some(span) = &record.span {
        span.inject(&mut parts.headers);
    }
    let host_authority = upstream_host.to_str().unwrap_or_default().to_owned();
    let uri_authority = match backend.protocol {
        BackendProtocol::H2c => {
            parts.headers.remove(HOST);
            parts.version = Version::HTTP_2;
            host_authority.clone()
        }
        BackendProtocol::Http1 | BackendProtocol::Tcp => {
            parts.headers.insert(HOST, upstream_host);
            parts.version = Version::HTTP_11;
            first.addr.to_string()
        }
    };
    parts.uri = absolute_uri(&uri_authority, &path_and_query)
        .map_err(|_| plan.finish(local_response(StatusCode::BAD_REQUEST)))?;
    let mut request_body = body::boxed(incoming);
    for (mirror, percent) in &plan.mirrors {
        if *percent < 100 && rand::random_range(0..100) >= *percent {
            continue;
        }
        let (forwarded, copy) = body::tee(request_body);
        request_body = forwarded;
        mirror_request(ctx, &parts, &host_authority, copy, mirror);
    }
    let outgoing = Outgoing {
        head: parts,
        body: request_body,
        path_and_query,
    };
    let result = forward_with_retries(ctx, backend, route, first, outgoing, record, start).await;
    let (mut resp, deadline) = match result {
        Ok(forwarded) => {
            record.upstream = Some(start.elapsed());
            forwarded
        }
        Err(kind) => {
            let status = match kind {
                UpstreamErrorKind::Connect => StatusCode::SERVICE_UNAVAILABLE,
                UpstreamErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
                UpstreamErrorKind::Protocol => StatusCode::BAD_GATEWAY,
            };
            return Err(plan.finish(local_response(status)));
        }
    };
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    match client_upgrade {
        Some(client_upgrade) if switching => {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            upgrade::bridge(&ctx.shared, client_upgrade, upstream_upgrade);
        }
        _ if switching => {
            // A backend switching protocols that nobody asked for cannot be relayed.
            count_upstream_error(ctx, backend, UpstreamErrorKind::Protocol);
            return Err(plan.finish(local_response(StatusCode::BAD_GATEWAY)));
        }
        _ => {}
    }
    headers::strip_hop_by_hop(resp.headers_mut(), switching);
    let resp = resp.map(body::boxed);
    Ok((plan.finish(resp), deadline))
}

fn absolute_uri(authority: &str, path_and_query: &str) -> Result<Uri, http::Error> {
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(PathAndQuery::try_from(path_and_query)?)
        .build()
}

/// A request ready to forward but for the endpoint it goes to.
struct Outgoing {
    /// The head, with an absolute URI for the first endpoint.
    head: http::request::Parts,
    body: ProxyBody,
    /// The URI's path and query (for the URI of another endpoint).
    path_and_query: String,
}

/// Methods whose requests may be sent twice (RFC 9110 section 9.2.2).
fn is_idempotent(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

/// A copy of a request head (for a possible second attempt).
fn copy_head(head: &http::request::Parts) -> http::request::Parts {
    let (mut copy, ()) = Request::new(()).into_parts();
    copy.method = head.method.clone();
    copy.uri = head.uri.clone();
    copy.version = head.version;
    copy.headers = head.headers.clone();
    copy.extensions = head.extensions.clone();
    copy
}

/// Sends the request to `first`, and again to other endpoints (the same one only when there is no
/// other) while the failure allows it: nothing of the request reached the endpoint, or the request
/// is idempotent, has no body and its connection failed before a response head. At most
/// [`RouterLimits::max_retries`] more attempts, all within the route's request timeout; each
/// attempt has the backend request timeout. Every attempt's outcome feeds outlier detection.
/// Returns the response and the deadline its body must meet.
async fn forward_with_retries(
    ctx: &ConnContext,
    backend: &CompiledBackend,
    route: &CompiledRoute,
    first: &Arc<EndpointState>,
    outgoing: Outgoing,
    record: &mut RequestRecord,
    start: Instant,
) -> Result<(Response<Incoming>, Option<Instant>), UpstreamErrorKind> {
    let shared = &ctx.shared;
    let max_retries = shared.limits.max_retries;
    let Outgoing {
        mut head,
        mut body,
        path_and_query,
    } = outgoing;
    let idempotent = is_idempotent(&head.method);
    let bodiless = body.is_end_stream() || body.size_hint().exact() == Some(0);
    let request_deadline = route.request_timeout.map(|t| start + t);
    let mut endpoint = Arc::clone(first);
    let mut tried = Vec::new();
    let mut retries = 0;
    loop {
        let attempt_deadline = match route.backend_timeout.map(|t| Instant::now() + t) {
            Some(b) => Some(request_deadline.map_or(b, |r| r.min(b))),
            None => request_deadline,
        };
        let again = (retries < max_retries).then(|| copy_head(&head));
        let (sent_body, loan) = if again.is_some() {
            let (lent, loan) = body::lend(body);
            (lent, Some(loan))
        } else {
            (body, None)
        };
        record.guard = Some(endpoint.start());
        let result = send_with_deadline(
            &shared.upstreams,
            backend,
            &endpoint,
            Request::from_parts(head, sent_body),
            attempt_deadline,
        )
        .await;
        let error = match result {
            Ok(resp) => {
                let health = Health::of_status(resp.status());
                backend.observe(&endpoint, health, &shared.outlier, Instant::now());
                return Ok((resp, attempt_deadline));
            }
            Err(SendFailure::Timeout) => {
                count_upstream_error(ctx, backend, UpstreamErrorKind::Timeout);
                return Err(UpstreamErrorKind::Timeout);
            }
            Err(SendFailure::Upstream(error)) => error,
        };
        backend.observe(
            &endpoint,
            Health::GatewayFailure,
            &shared.outlier,
            Instant::now(),
        );
        let kind = match error {
            UpstreamError::Connect(_) => UpstreamErrorKind::Connect,
            _ => UpstreamErrorKind::Protocol,
        };
        count_upstream_error(ctx, backend, kind);
        let reason = if error.nothing_sent() {
            RetryReason::NotSent
        } else if error.connection_failed() && idempotent && bodiless {
            RetryReason::ConnectionFailed
        } else {
            return Err(kind);
        };
        let (Some(next_head), Some(loan)) = (again, loan) else {
            return Err(kind);
        };
        let Some(next_body) = loan.take_back().or_else(|| bodiless.then(body::empty)) else {
            return Err(kind);
        };
        tried.push(endpoint.addr);
        let next = backend
            .pick_endpoint_avoiding(&tried)
            .or_else(|| backend.pick_endpoint())
            .map(Arc::clone)
            .unwrap_or(endpoint);
        head = next_head;
        if backend.protocol != BackendProtocol::H2c {
            // An address and an already validated path always make a valid URI.
            head.uri = absolute_uri(&next.addr.to_string(), &path_and_query)
                .map_err(|_| UpstreamErrorKind::Protocol)?;
        }
        tracing::debug!(backend = %backend.id, from = ?tried.last(), to = %next.addr, ?reason, "retrying upstream request");
        shared
            .metrics
            .upstream_retries
            .get_or_create(&RetryLabels {
                tenant: Arc::clone(&shared.tenant),
                backend: Arc::clone(&backend.id),
                reason,
            })
            .inc();
        endpoint = next;
        body = next_body;
        retries += 1;
    }
}

/// Why one attempt got no response head.
enum SendFailure {
    /// The attempt's deadline passed.
    Timeout,
    /// The upstream exchange failed.
    Upstream(UpstreamError),
}

async fn send_with_deadline(
    upstreams: &Upstreams,
    backend: &CompiledBackend,
    endpoint: &EndpointState,
    req: Request<ProxyBody>,
    deadline: Option<Instant>,
) -> Result<Response<Incoming>, SendFailure> {
    let send = upstreams.send(backend.protocol, endpoint.addr, req);
    let result = match deadline {
        Some(d) => tokio::time::timeout_at(d.into(), send)
            .await
            .map_err(|_| SendFailure::Timeout)?,
        None => send.await,
    };
    result.map_err(|e| {
        tracing::debug!(backend = %backend.id, endpoint = %endpoint.addr, error = %e, "upstream request failed");
        SendFailure::Upstream(e)
    })
}

fn count_upstream_error(ctx: &ConnContext, backend: &CompiledBackend, kind: UpstreamErrorKind) {
    ctx.shared
        .metrics
        .upstream_errors
        .get_or_create(&UpstreamErrorLabels {
            tenant: Arc::clone(&ctx.shared.tenant),
            backend: Arc::clone(&backend.id),
            kind,
        })
        .inc();
}

fn redirect_response<B>(
    ctx: &ConnContext,
    req: &Request<B>,
    host: &str,
    vhost: &CompiledVhost,
    route: &CompiledRoute,
    redirect: &CompiledRedirect,
) -> Response<ProxyBody> {
    let location = redirect.location(&RedirectInput {
        scheme: ctx.scheme(),
        host,
        path: req.uri().path(),
        query: req.uri().query(),
        listener_port: vhost.listener_port,
        matched_prefix: route.matched_prefix(),
    });
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            let mut resp = Response::new(body::empty());
            *resp.status_mut() = redirect.status;
            resp.headers_mut().insert(LOCATION, v);
            resp
        }
        Err(_) => local_response(StatusCode::BAD_REQUEST),
    }
}

/// Sends a copy of the request (head and body) to the mirror backend; the answer is ignored.
fn mirror_request(
    ctx: &ConnContext,
    parts: &http::request::Parts,
    host: &str,
    copy: ProxyBody,
    mirror: &Arc<CompiledBackend>,
) {
    let Some(endpoint) = mirror.pick_endpoint() else {
        return;
    };
    let mut headers = parts.headers.clone();
    let (authority, version) = match mirror.protocol {
        BackendProtocol::H2c => {
            headers.remove(HOST);
            (host.to_owned(), Version::HTTP_2)
        }
        BackendProtocol::Http1 | BackendProtocol::Tcp => {
            if let Ok(v) = HeaderValue::from_str(host) {
                headers.insert(HOST, v);
            }
            (endpoint.addr.to_string(), Version::HTTP_11)
        }
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let Ok(uri) = absolute_uri(&authority, path_and_query) else {
        return;
    };
    let mut builder = Request::builder()
        .method(parts.method.clone())
        .version(version)
        .uri(uri);
    if let Some(h) = builder.headers_mut() {
        *h = headers;
    }
    let Ok(copy) = builder.body(copy) else {
        return;
    };
    let shared = Arc::clone(&ctx.shared);
    let backend = Arc::clone(mirror);
    let endpoint = Arc::clone(endpoint);
    let timeout = shared.limits.upstream_connect_timeout + shared.limits.upstream_idle_timeout;
    tokio::spawn(async move {
        let _guard = endpoint.start();
        let exchange = async {
            let sent = shared
                .upstreams
                .send(backend.protocol, endpoint.addr, copy)
                .await;
            let health = match &sent {
                Ok(resp) => Health::of_status(resp.status()),
                Err(_) => Health::GatewayFailure,
            };
            backend.observe(&endpoint, health, &shared.outlier, Instant::now());
            let resp = sent?;
            // Read and discard the answer so the pooled connection can be reused.
            let mut body = resp.into_body();
            while let Some(frame) = body.frame().await {
                if frame.is_err() {
                    break;
                }
            }
            Ok::<(), crate::upstream::UpstreamError>(())
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(backend = %backend.id, error = %e, "mirror request failed")
            }
            Err(_) => tracing::debug!(backend = %backend.id, "mirror request timed out"),
        }
    });
}
#[cfg(test)]
mod task_size {
    /// The size of the future an async function returns, without calling it.
    fn future_size<F, A, B, Fut>(_: F) -> usize
    where
        F: Fn(A, B) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// hyper spawns one task per HTTP/2 request holding this future, and moves it on the way; the
    /// routing future (about 5 KiB) is boxed so that the moves stay small.
    #[test]
    fn the_per_request_future_stays_small() {
        let size = future_size(super::serve_request);
        assert!(size <= 1024, "serve_request's future is {size} bytes");
    }
}
