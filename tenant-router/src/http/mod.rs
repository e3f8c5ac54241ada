//! The HTTP request path: path normalisation (400), host checks (421), virtual host and route
//! selection (404), filters,
//! backend choice (500 / 503), forwarding with deadlines (504) and protocol upgrades.
//!
//! One function, [`serve_request`], turns every failure into a status before headers are sent; after
//! that, a failure aborts the response (see [`crate::body`]). After route selection a request whose
//! rule has a layer to apply goes through tower layers (today [`cors::CorsLayer`], which reads the
//! matched rule's policy from the request's extensions) to the forwarding phases, the innermost
//! service ([`Forward`]); any other request goes to the forwarding phases directly.

mod boundary;
pub(crate) mod cors;
pub(crate) mod grpc;
pub(crate) mod headers;
mod host;
pub(crate) mod refusal;
mod upgrade;

use crate::balance::{CompiledBackend, EndpointState, RequestPermit};
use crate::body::{
    self, ClientBodyWatch, ClientFault, ObservedBody, ProxyBody, RequestRecord, SentTarget,
};
use crate::compile::filters::{
    CompiledFilter, CompiledHeaderModifier, CompiledRedirect, CompiledRewrite, RedirectInput,
};
use crate::compile::matcher::RequestFacts;
use crate::compile::{CompiledConfig, CompiledRoute, CompiledVhost};
use crate::fault::{FaultSide, ForwardError};
use crate::idle::Activity;
use crate::limits::RouterLimits;
use crate::metrics::{
    BackendLabels, Breaker, ClientErrorLabels, HygieneAction, LimitLabels, OverflowLabels,
    RefusalLabels, RequestLimit, RetryLabels, RetryReason, RouterMetrics, UpstreamErrorKind,
    UpstreamErrorLabels,
};
use crate::otel::{Arrival, RequestSpan};
use crate::outlier::{Health, OutlierPolicy};
use crate::upstream::{
    returns_unanswered_head, UpstreamBody, UpstreamError, UpstreamUpgrade, Upstreams,
};
use arc_swap::ArcSwapOption;
use bulkhead_snapshot::{BackendProtocol, ClientValidation};
use http::header::{CONTENT_TYPE, HOST, LOCATION};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use refusal::{Answer, Refusal};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_layer::Layer;
use tower_service::Service;

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
    /// Background work that shutdown waits for (connections, upgraded streams, mirrors).
    pub(crate) tasks: TaskTracker,
    /// Permits for mirrored requests in flight ([`RouterLimits::max_mirrors_in_flight`]).
    pub(crate) mirror_slots: Arc<tokio::sync::Semaphore>,
    /// The configuration being served: taken by each new connection (its listener and TLS terms)
    /// and by each request (its routing), so that a change reaches open connections' next requests.
    pub(crate) current: ArcSwapOption<CompiledConfig>,
}

/// How the connection reached the HTTP layer.
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    /// Through terminated TLS; requests must be for names the SNI's listener serves (GEP-3567).
    Tls {
        /// The Gateway listener the connection's SNI selected (`namespace/gateway/listener`).
        listener: Arc<str>,
        /// The client certificate validation the handshake was made under (`None`: none asked).
        client_auth: Option<Arc<ClientValidation>>,
    },
    /// Through the plain HTTP listener.
    Plain,
}

/// One client connection's view. It holds no configuration: each request is routed by the one
/// current when it arrives ([`Shared::current`]); what the connection fixed at its handshake (the
/// listener, the client certificate validation) is checked against it ([`host::authorise`]).
#[derive(Debug)]
pub(crate) struct ConnContext {
    pub(crate) shared: Arc<Shared>,
    pub(crate) entry: Entry,
    pub(crate) client: SocketAddr,
    /// The client's address as a header value (`X-Forwarded-For`, `X-Real-IP`), made once.
    pub(crate) client_ip: HeaderValue,
    /// The connection's requests in flight, for its idle timeout.
    pub(crate) activity: Arc<Activity>,
    /// The connection's place in the connection limits; an upgraded tunnel keeps it.
    pub(crate) slot: Arc<crate::listener::ConnectionSlot>,
    /// The verified client certificate's identity (`X-Forwarded-Client-Cert`), set on each
    /// request before its route is selected ([`crate::client_cert`]).
    pub(crate) client_cert: Option<http::HeaderValue>,
}

impl ConnContext {
    fn scheme(&self) -> &'static str {
        match self.entry {
            Entry::Tls { .. } => "https",
            Entry::Plain => "http",
        }
    }
}

/// The route and backend label of a request that got neither: one shared string, not one per request.
static NONE_LABEL: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("-"));

/// Serves one request; never fails (errors become statuses or aborted bodies).
#[allow(clippy::manual_async_fn)] // an `async fn` would hold its arguments twice
pub(crate) fn serve_request(
    ctx: Arc<ConnContext>,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Response<ObservedBody>, Infallible>> {
    // Not an `async fn`, which would keep a second copy of its arguments (see `h1_conn::exchange`).
    async move {
        let start = bulkhead_net::clock::now();
        let none: Arc<str> = Arc::clone(&NONE_LABEL);
        let mut record = Box::new(RequestRecord {
            metrics: Arc::clone(&ctx.shared.metrics),
            tenant: Arc::clone(&ctx.shared.tenant),
            route: Arc::clone(&none),
            series: None,
            backend: none,
            status: 0,
            method: req.method().clone(),
            target: SentTarget::of(&req),
            request_id: headers::RequestId::None,
            start,
            in_flight: ctx.activity.begin(),
            upstream: None,
            guard: None,
            span: None,
            permit: None,
            client_fault: None,
            refusal: None,
            logged: false,
        });
        record.span = RequestSpan::start(
            &req,
            &Arrival {
                tenant: &ctx.shared.tenant,
                scheme: ctx.scheme(),
                client: ctx.client,
                host: record.target.host(),
            },
        );
        let grpc = grpc::is_grpc(req.headers());
        // Boxed: the routing future is about 3.6 KB (the forwarding phases run inside it unless
        // a layer applies), and hyper moves the per-request task (which holds this future) several
        // times before and after running it, and keeps an HTTP/1.1 connection's in a box of that
        // size for the connection's life; a pointer is cheaper to move and to keep.
        // Written into its box once: `Box::pin(future)` would copy the whole future twice.
        let routed = Box::into_pin(Box::write(
            Box::new_uninit(),
            route_and_forward(&ctx, req, &mut record, start),
        ))
        .await;
        let (mut response, deadline, refusal) = match routed {
            Ok((forwarded, deadline)) => (forwarded, deadline, None),
            Err(answer) => (*answer.response, None, answer.refusal),
        };
        if let Some(refusal) = refusal {
            if let Refusal::Forward(ForwardError::Client(fault)) = refusal {
                record.client_fault = Some(fault);
            }
            record.refusal = Some((refusal.reason(), refusal.side()));
            ctx.shared
                .metrics
                .request_refusals
                .get_or_create(&RefusalLabels {
                    tenant: Arc::clone(&ctx.shared.tenant),
                    reason: refusal.reason(),
                })
                .inc();
            // The HTTP status stays in metrics and logs; a gRPC client gets the gRPC one.
            if let (true, Some(status)) = (grpc, refusal.grpc()) {
                response = grpc::trailers_only(response, status);
            }
        }
        record.status = match record.client_fault {
            Some(fault) => ForwardError::Client(fault).logged_status(),
            None => response.status().as_u16(),
        };
        Ok(response.map(|b| ObservedBody::new(b, deadline, record)))
    }
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
                // Applied by the CORS layer, from the request's extensions.
                CompiledFilter::Cors(_) => {}
            }
        }
    }

    fn finish(&self, mut resp: Response<ProxyBody>) -> Response<ProxyBody> {
        for m in &self.response_headers {
            m.apply(resp.headers_mut());
        }
        resp
    }

    /// A refusal's answer, with the response header filters planned so far.
    fn refuse(&self, refusal: Refusal) -> Answer {
        let mut answer = Answer::refused(refusal);
        *answer.response = self.finish(std::mem::take(&mut *answer.response));
        answer
    }

    /// A redirect filter's answer, with the response header filters planned so far.
    fn redirect(&self, response: Response<ProxyBody>) -> Answer {
        Answer::redirect(self.finish(response))
    }
}

type Forwarded = (Response<ProxyBody>, Option<Instant>);

/// Routes one request: [`normalise`], [`authorise_host`] and [`select_route`], then hands it to
/// [`forward_routed`], through the layers (CORS, with the matched rule's policy in the request's
/// extensions) around [`Forward`] when the rule has one.
/// Every way out other than a backend's response is an [`Answer`].
#[allow(clippy::manual_async_fn)] // an `async fn` would hold its arguments twice
fn route_and_forward<'a>(
    ctx: &'a ConnContext,
    mut req: Request<Incoming>,
    record: &'a mut RequestRecord,
    start: Instant,
) -> impl Future<Output = Result<Forwarded, Answer>> + use<'a> {
    // Not an `async fn`, which would keep a second copy of its arguments (see `h1_conn::exchange`).
    async move {
        normalise(ctx, &mut req, record)?;
        // The configuration current now, kept until the response head: a change reaches an open
        // connection's next request, and one in flight finishes on what it started with (its
        // body needs none of it).
        // (Always set: connections are accepted only once a configuration is served.)
        let config = ctx
            .shared
            .current
            .load_full()
            .ok_or(Refusal::NoVirtualHost)?;
        let host = authorise_host(ctx, &config, &req, record)?;
        let (vhost, route) = {
            let facts = RequestFacts {
                method: req.method(),
                path: req.uri().path(),
                query: req.uri().query(),
                headers: req.headers(),
            };
            select_route(&config, &ctx.entry, &host.host, &facts)?
        };
        record.route = Arc::clone(&route.label);
        record.series = Some(Arc::clone(route.series.get_or_init(Arc::default)));
        let policy = route.filters.iter().find_map(|f| match f {
            CompiledFilter::Cors(c) => Some(Arc::clone(c)),
            _ => None,
        });
        let routed = Routed {
            ctx,
            host,
            vhost,
            route,
            record,
            start,
        };
        let Some(policy) = policy else {
            // No layer applies to this rule: the forwarding phases run here, without a tower
            // stack around them and the boxed future its services need.
            return forward_routed(routed, req).await;
        };
        req.extensions_mut().insert(cors::RouteCors(policy));
        let limits = &ctx.shared.limits;
        let layers = cors::CorsLayer::new(cors::CorsLimits {
            max_origin_bytes: limits.cors_max_origin_bytes,
            max_request_headers: limits.cors_max_request_headers,
        });
        layers.layer(Forward(Some(routed))).call(req).await
    }
}

/// What route selection found, for the forwarding phases.
struct Routed<'a> {
    ctx: &'a ConnContext,
    host: host::RequestHost,
    vhost: &'a CompiledVhost,
    route: &'a CompiledRoute,
    record: &'a mut RequestRecord,
    start: Instant,
}

/// The innermost service of the request path: [`forward_routed`] for the one request it was built
/// for (a service per request, since it borrows the request's record).
struct Forward<'a>(Option<Routed<'a>>);

type ForwardFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Forwarded, Answer>> + Send + 'a>>;

impl<'a> tower_service::Service<Request<Incoming>> for Forward<'a> {
    type Response = Forwarded;
    type Error = Answer;
    type Future = ForwardFuture<'a>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Answer>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        match self.0.take() {
            Some(routed) => Box::pin(forward_routed(routed, req)),
            // Built for one request; a second call is a bug in the layers, answered as one.
            None => Box::pin(std::future::ready(Err(Answer::refused(Refusal::NoBackend)))),
        }
    }
}

/// Forwards one routed request through its phases: [`plan_filters`], [`pick_endpoint`],
/// [`build_request`] and [`forward_with_retries`].
#[allow(clippy::manual_async_fn)] // an `async fn` would hold its arguments twice
fn forward_routed(
    routed: Routed<'_>,
    mut req: Request<Incoming>,
) -> impl Future<Output = Result<Forwarded, Answer>> + use<'_> {
    // Not an `async fn`, which would keep a second copy of its arguments (see `h1_conn::exchange`).
    async move {
        let Routed {
            ctx,
            host,
            vhost,
            route,
            record,
            start,
        } = routed;
        // Hop-by-hop headers go before any filter runs, so `Connection` cannot remove what a filter sets.
        let upgrade = headers::requested_upgrade(
            req.headers(),
            &ctx.shared.limits.boundary.upgrade_protocols,
        );
        headers::strip_hop_by_hop(req.headers_mut(), false);
        let (plan, backend) = plan_filters(ctx, &mut req, &host, vhost, route)?;
        record.backend = Arc::clone(&backend.id);
        let first = pick_endpoint(ctx, backend, record).map_err(|r| plan.refuse(r))?;

        let upgrading = match upgrade {
            headers::UpgradeAsk::Allowed(protocols)
                if req.version() == Version::HTTP_11
                    && backend.protocol != BackendProtocol::H2c =>
            {
                Some(protocols)
            }
            headers::UpgradeAsk::Refused => {
                boundary::count(ctx, HygieneAction::UpgradeDropped);
                tracing::debug!(tenant = %ctx.shared.tenant, "upgrade to a protocol that is not allowed removed");
                None
            }
            _ => None,
        };
        let client_upgrade = upgrading.is_some().then(|| hyper::upgrade::on(&mut req));
        let (parts, incoming) = req.into_parts();
        // Taken apart at once: only the mirror authority is needed later, not the whole value.
        let BuiltRequest {
            head: mut parts,
            host_authority,
            request_id,
            extra,
            mirror_fields,
        } = build_request(ctx, parts, &host.raw, vhost, route, backend, &plan)
            .map_err(|r| plan.refuse(r))?;
        if let Some(protocols) = &upgrading {
            headers::restore_upgrade(&mut parts.headers, protocols.clone());
        }
        record.request_id = request_id;
        if let Some(span) = &record.span {
            span.inject(&mut parts.headers);
        }
        let idle = ctx.shared.limits.body_idle_timeout;
        let (mut request_body, watch) = body::client_body(incoming, idle);
        for (mirror, percent) in &plan.mirrors {
            if *percent < 100 && rand::random_range(0..100) >= *percent {
                continue;
            }
            let Some(slot) = mirror_slot(ctx, mirror) else {
                continue;
            };
            let (forwarded, copy, state) = body::tee(request_body);
            request_body = forwarded;
            let copy = MirrorCopy {
                body: copy,
                state,
                slot,
            };
            let authority = host_authority.as_ref().and_then(|v| v.to_str().ok());
            let head = MirroredHead {
                parts: &parts,
                host: authority.unwrap_or_default(),
                fields: mirror_fields.as_ref(),
            };
            mirror_request(ctx, &head, copy, mirror);
        }
        drop(mirror_fields);
        let outgoing = Outgoing {
            head: parts,
            extra,
            body: request_body,
        };
        let result =
            forward_with_retries(ctx, backend, route, &first, outgoing, &watch, record, start)
                .await;
        let (mut resp, deadline) = match result {
            Ok(forwarded) => {
                record.upstream = Some(bulkhead_net::clock::now().saturating_duration_since(start));
                forwarded
            }
            Err(error) => return Err(plan.refuse(error.into())),
        };
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        match (client_upgrade, &upgrading) {
            (Some(client_upgrade), Some(asked))
                if switching && headers::upgrade_accepted(resp.headers(), asked) =>
            {
                let upstream = resp
                    .extensions_mut()
                    .remove::<UpstreamUpgrade>()
                    .and_then(|u| u.take());
                let Some(upstream) = upstream else {
                    count_upstream_error(ctx, backend, UpstreamErrorKind::Protocol);
                    return Err(plan.refuse(Refusal::UnrequestedUpgrade));
                };
                let slot = Arc::clone(&ctx.slot);
                upgrade::bridge(&ctx.shared, slot, client_upgrade, upstream);
            }
            _ if switching => {
                // A backend switching to a protocol nobody asked for (h2c, say) is never relayed.
                count_upstream_error(ctx, backend, UpstreamErrorKind::Protocol);
                boundary::count(ctx, HygieneAction::UpgradeRefused);
                return Err(plan.refuse(Refusal::UnrequestedUpgrade));
            }
            _ => {}
        }
        headers::strip_hop_by_hop(resp.headers_mut(), switching);
        Ok((plan.finish(resp), deadline))
    }
}

/// Phase 1: the method and the path's canonical spelling (see [`boundary`]).
fn normalise<B>(
    ctx: &ConnContext,
    req: &mut Request<B>,
    record: &mut RequestRecord,
) -> Result<(), Answer> {
    if req.method() == Method::CONNECT {
        return Err(Refusal::Method.into());
    }
    crate::client_cert::set_identity(req.headers_mut(), ctx.client_cert.as_ref());
    match boundary::normalize_request_path(ctx, req, record) {
        Some(answer) => Err(answer),
        None => Ok(()),
    }
}

/// Phase 2: the request's host, and whether this connection may be answered for it (see [`host`]).
fn authorise_host<B>(
    ctx: &ConnContext,
    config: &CompiledConfig,
    req: &Request<B>,
    record: &RequestRecord,
) -> Result<host::RequestHost, Refusal> {
    let host =
        host::request_host(req).map_err(|refusal| refusal.refuse(ctx, record.target.host()))?;
    host::authorise(ctx, config, &host.host)
        .map_err(|refusal| refusal.refuse(ctx, &host.name()))?;
    Ok(host)
}

/// Phase 3: the virtual host serving `host` on the connection's listener, and its first route
/// matching the request. Pure: no sockets, no side effects.
pub(crate) fn select_route<'c>(
    config: &'c CompiledConfig,
    entry: &Entry,
    host: &bulkhead_hostmatch::Host,
    facts: &RequestFacts<'_>,
) -> Result<(&'c CompiledVhost, &'c CompiledRoute), Refusal> {
    let vhosts = match entry {
        Entry::Tls { .. } => &config.https_vhosts,
        Entry::Plain => &config.http_vhosts,
    };
    let vhost = vhosts.lookup_host(host).ok_or(Refusal::NoVirtualHost)?;
    let route = vhost
        .routes
        .iter()
        .find(|r| r.matcher.matches(facts))
        .ok_or(Refusal::NoRoute)?;
    Ok((vhost, route))
}

/// Phase 4: the route's filters (request header edits applied at once), the backend the weights
/// pick and its filters; a redirect filter answers here.
fn plan_filters<'c>(
    ctx: &ConnContext,
    req: &mut Request<Incoming>,
    host: &host::RequestHost,
    vhost: &CompiledVhost,
    route: &'c CompiledRoute,
) -> Result<(FilterPlan<'c>, &'c Arc<CompiledBackend>), Answer> {
    let mut plan = FilterPlan::default();
    plan.take(&route.filters, req.headers_mut());
    if let Some(redirect) = plan.redirect {
        return Err(plan.redirect(redirect_response(ctx, req, host, vhost, route, redirect)));
    }
    if route.backends.is_empty() {
        return Err(plan.refuse(Refusal::NoBackend));
    }
    let chosen = route
        .backends
        .pick()
        .ok_or_else(|| plan.refuse(Refusal::NoBackend))?;
    plan.take(&chosen.filters, req.headers_mut());
    if let Some(redirect) = plan.redirect {
        return Err(plan.redirect(redirect_response(ctx, req, host, vhost, route, redirect)));
    }
    let backend = chosen
        .backend
        .as_ref()
        .ok_or_else(|| plan.refuse(Refusal::NoBackend))?;
    Ok((plan, backend))
}

/// Phase 5: admission through the backend's circuit breaker, then an endpoint.
fn pick_endpoint(
    ctx: &ConnContext,
    backend: &CompiledBackend,
    record: &mut RequestRecord,
) -> Result<Arc<EndpointState>, Refusal> {
    record.permit = Some(admit(ctx, backend)?);
    backend
        .pick_endpoint()
        .map(Arc::clone)
        .ok_or(Refusal::NoEndpoint)
}

/// The head of the request to send, and what retries and mirrors need of it.
struct BuiltRequest {
    head: http::request::Parts,
    /// The authority the backend gets (`Host` or `:authority`), kept for mirrors (only when the
    /// plan has some).
    host_authority: Option<HeaderValue>,
    request_id: headers::RequestId,
    /// Field lines an HTTP/1.1 backend gets after the head's own: the forwarding fields (an HTTP/2
    /// backend's are in the head).
    extra: bytes::Bytes,
    /// The forwarding fields for mirrors, when they are not in the head (only when the plan has
    /// mirrors).
    mirror_fields: Option<headers::ForwardingFields>,
}

/// Phase 6: the upstream request head: rewrites, forwarding headers, `Host` or `:authority`, the
/// protocol version and the URI (the same for every endpoint of `backend`).
fn build_request(
    ctx: &ConnContext,
    mut parts: http::request::Parts,
    host_value: &HeaderValue,
    vhost: &CompiledVhost,
    route: &CompiledRoute,
    backend: &CompiledBackend,
    plan: &FilterPlan<'_>,
) -> Result<BuiltRequest, Refusal> {
    let mut upstream_host = host_value.clone();
    let mut path: Option<String> = None;
    for rw in &plan.rewrites {
        if let Some(h) = &rw.hostname {
            upstream_host = h.clone();
        }
        if let Some(change) = &rw.path {
            let current = path.as_deref().unwrap_or(parts.uri.path());
            path = Some(change.apply(current, route.matched_prefix()));
        }
    }
    // Without a path rewrite the client's (normalised) path and query go on as they are: the
    // same shared bytes, no copy.
    let path_and_query = match path {
        None => parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        Some(path) => {
            let joined = match parts.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            PathAndQuery::try_from(joined).map_err(|_| Refusal::BadHead)?
        }
    };
    let (fields, request_id, replaced) = headers::forwarding(
        &mut parts.headers,
        &headers::Forwarding {
            client: ctx.client.ip(),
            client_value: &ctx.client_ip,
            proto: ctx.scheme(),
            host: Some(host_value),
            port: &headers::port_value(vhost.listener_port),
            trusted_hops: ctx.shared.limits.boundary.xff_trusted_hops,
        },
    );
    if replaced > 0 {
        boundary::count(ctx, HygieneAction::ForwardingReplaced);
        tracing::debug!(tenant = %ctx.shared.tenant, replaced, "client-supplied forwarding headers replaced");
    }
    let mirrored = !plan.mirrors.is_empty();
    let host_authority = mirrored.then(|| upstream_host.clone());
    let mut extra = bytes::Bytes::new();
    let mut mirror_fields = None;
    // The URI does not depend on the endpoint, so a retry to another one reuses it: HTTP/1 sends
    // the origin form (the endpoint is the connection's), HTTP/2 the `:authority` of the host.
    parts.uri = match backend.protocol {
        BackendProtocol::H2c => {
            fields.insert_into(&mut parts.headers);
            parts.headers.remove(HOST);
            parts.version = Version::HTTP_2;
            let authority = upstream_host.to_str().map_err(|_| Refusal::BadHead)?;
            absolute_uri(authority, path_and_query).map_err(|_| Refusal::BadHead)?
        }
        BackendProtocol::Http1 | BackendProtocol::Tcp => {
            // An HTTP/1 request's one `Host` (a second was refused) is replaced where it stands.
            // An HTTP/2 request's map has none and is full as decoded: `Host` goes on the wire
            // with the forwarding fields instead of growing (and rehashing) the map.
            let host_line = match parts.headers.get_mut(HOST) {
                Some(host) => {
                    *host = upstream_host;
                    None
                }
                None => Some(upstream_host),
            };
            headers::join_cookies(&mut parts.headers);
            parts.version = Version::HTTP_11;
            extra = fields.encode(host_line.as_ref());
            mirror_fields = mirrored.then_some(fields);
            origin_uri(path_and_query)
        }
    };
    Ok(BuiltRequest {
        head: parts,
        host_authority,
        request_id,
        extra,
        mirror_fields,
    })
}

/// `http://authority/path`.
fn absolute_uri(authority: &str, path_and_query: PathAndQuery) -> Result<Uri, http::Error> {
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
}

/// The origin form `/path?query` that HTTP/1.1 sends to an endpoint it is connected to.
fn origin_uri(path_and_query: PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).unwrap_or_default()
}

/// A request ready to forward but for the endpoint it goes to.
struct Outgoing {
    /// The head; its URI serves every endpoint of the backend.
    head: http::request::Parts,
    /// Field lines written after the head's own ([`BuiltRequest::extra`]).
    extra: bytes::Bytes,
    body: ProxyBody,
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
/// attempt has the backend request timeout. Every attempt's outcome feeds outlier detection, except
/// a failure the client's own body caused (`watch`): that one is the client's, is never retried and
/// never counts against the endpoint. Returns the response and the deadline its body must meet.
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_async_fn)] // an `async fn` would hold its arguments twice
fn forward_with_retries<'a>(
    ctx: &'a ConnContext,
    backend: &'a CompiledBackend,
    route: &'a CompiledRoute,
    first: &'a Arc<EndpointState>,
    mut outgoing: Outgoing,
    watch: &'a ClientBodyWatch,
    record: &'a mut RequestRecord,
    start: Instant,
) -> impl Future<Output = Result<(Response<UpstreamBody>, Option<Instant>), ForwardError>> + use<'a>
{
    // Not an `async fn`, which would keep a second copy of its arguments (see `h1_conn::exchange`).
    async move {
        let shared = &ctx.shared;
        let max_retries = shared.limits.max_retries;
        // `outgoing`'s fields are used in place (moved out per attempt, put back for the next): a
        // copy in locals would be a second slot in this future, which every attempt is awaited in.
        let idempotent = is_idempotent(&outgoing.head.method);
        let body = &outgoing.body;
        let bodiless = body.is_end_stream() || body.size_hint().exact() == Some(0);
        let request_deadline = route.request_timeout.map(|t| start + t);
        let mut endpoint = Arc::clone(first);
        let mut tried = Vec::new();
        let mut retries = 0;
        loop {
            let attempt_deadline = match route
                .backend_timeout
                .map(|t| bulkhead_net::clock::now() + t)
            {
                Some(b) => Some(request_deadline.map_or(b, |r| r.min(b))),
                None => request_deadline,
            };
            let may_retry = retries < max_retries;
            // The head for another attempt: an HTTP/1.1 exchange hands back the head it got no
            // answer to; for the others a copy is made now.
            let copy = (may_retry && !returns_unanswered_head(backend.protocol))
                .then(|| (copy_head(&outgoing.head), outgoing.extra.clone()));
            let mut unanswered = None;
            // A body to take back for another attempt; an empty one is made anew instead.
            let (sent_body, loan) = if may_retry && !bodiless {
                let (lent, loan) = body::lend(outgoing.body);
                (lent, Some(loan))
            } else {
                (outgoing.body, None)
            };
            record.guard = Some(endpoint.start());
            // Built in the call: a `let` binding would keep a second slot for the exchange's future
            // in this one, though moved out (its storage lasts to the end of the scope).
            let result = with_deadline(
                shared.upstreams.send(
                    backend.protocol,
                    backend.tls.as_ref(),
                    endpoint.addr,
                    Request::from_parts(outgoing.head, sent_body),
                    std::mem::take(&mut outgoing.extra),
                    &mut unanswered,
                ),
                attempt_deadline,
            )
            .await;
            let error = match result {
                Ok(resp) => {
                    let health = Health::of_status(resp.status());
                    backend.observe(&endpoint, health, &shared.outlier, bulkhead_net::clock::now);
                    return Ok((resp, attempt_deadline));
                }
                Err(SendFailure::Timeout) => {
                    count_upstream_error(ctx, backend, UpstreamErrorKind::Timeout);
                    return Err(ForwardError::Upstream(UpstreamErrorKind::Timeout));
                }
                Err(SendFailure::Upstream(error)) => {
                    tracing::debug!(backend = %backend.id, endpoint = %endpoint.addr, %error, "upstream request failed");
                    error
                }
            };
            let failure = blame(ctx, backend, &endpoint, &error, watch);
            if !matches!(failure, ForwardError::Upstream(_)) {
                return Err(failure);
            }
            let reason = if error.nothing_sent() {
                RetryReason::NotSent
            } else if error.connection_failed() && idempotent && bodiless {
                RetryReason::ConnectionFailed
            } else {
                return Err(failure);
            };
            let Some((next_head, next_extra)) = copy.or(unanswered).filter(|_| may_retry) else {
                return Err(failure);
            };
            let Some(next_body) = loan
                .and_then(body::BodyLoan::take_back)
                .or_else(|| bodiless.then(body::empty))
            else {
                return Err(failure);
            };
            tried.push(endpoint.addr);
            let next = backend
                .pick_endpoint_avoiding(&tried)
                .or_else(|| backend.pick_endpoint())
                .map(Arc::clone)
                .unwrap_or(endpoint);
            outgoing.head = next_head;
            outgoing.extra = next_extra;
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
            outgoing.body = next_body;
            retries += 1;
        }
    }
}

/// Decides who a failed attempt is blamed on and books it: a failure the client's body caused is
/// counted as a client error and never touches the endpoint's health; any other is an upstream
/// error and a gateway failure of the endpoint (outlier detection).
fn blame(
    ctx: &ConnContext,
    backend: &CompiledBackend,
    endpoint: &EndpointState,
    error: &UpstreamError,
    watch: &ClientBodyWatch,
) -> ForwardError {
    let failure = match watch.fault() {
        Some(fault) => ForwardError::Client(fault),
        None => ForwardError::Upstream(match error {
            UpstreamError::Connect(_) => UpstreamErrorKind::Connect,
            UpstreamError::Tls(_) => UpstreamErrorKind::Tls,
            _ => UpstreamErrorKind::Protocol,
        }),
    };
    match failure {
        ForwardError::Client(fault) => {
            tracing::debug!(tenant = %ctx.shared.tenant, backend = %backend.id, ?fault, %error, "request failed by the client's body");
            ctx.shared
                .metrics
                .client_errors
                .get_or_create(&ClientErrorLabels {
                    tenant: Arc::clone(&ctx.shared.tenant),
                    backend: Arc::clone(&backend.id),
                    kind: fault.into(),
                })
                .inc();
            if fault == ClientFault::Stalled {
                ctx.shared
                    .metrics
                    .limited_requests
                    .get_or_create(&LimitLabels {
                        tenant: Arc::clone(&ctx.shared.tenant),
                        limit: RequestLimit::BodyIdle,
                    })
                    .inc();
            }
        }
        ForwardError::Upstream(kind) => count_upstream_error(ctx, backend, kind),
        ForwardError::Overflow(_) => {}
    }
    if failure.side() == FaultSide::Upstream {
        backend.observe(
            endpoint,
            Health::GatewayFailure,
            &ctx.shared.outlier,
            bulkhead_net::clock::now,
        );
    }
    failure
}

/// Admits a request to `backend` through its circuit breaker, or refuses it (503 at once, counted,
/// never against an endpoint).
fn admit(ctx: &ConnContext, backend: &CompiledBackend) -> Result<RequestPermit, ForwardError> {
    let max = ctx.shared.limits.max_requests_per_backend;
    backend.load.try_admit(max).ok_or_else(|| {
        let breaker = Breaker::MaxRequests;
        tracing::debug!(tenant = %ctx.shared.tenant, backend = %backend.id, max, "circuit breaker open: request refused");
        ctx.shared
            .metrics
            .upstream_overflow
            .get_or_create(&OverflowLabels {
                tenant: Arc::clone(&ctx.shared.tenant),
                backend: Arc::clone(&backend.id),
                breaker,
            })
            .inc();
        ForwardError::Overflow(breaker)
    })
}

/// Why one attempt got no response head.
enum SendFailure {
    /// The attempt's deadline passed.
    Timeout,
    /// The upstream exchange failed.
    Upstream(UpstreamError),
}

/// The upstream exchange `send`, bounded by `deadline` when there is one. Not an `async fn`, so that
/// the request is held once, by `send`.
fn with_deadline<F>(send: F, deadline: Option<Instant>) -> Deadline<F> {
    Deadline {
        send,
        timer: deadline.map(|d| tokio::time::sleep_until(d.into())),
    }
}

pin_project_lite::pin_project! {
    /// See [`with_deadline`].
    struct Deadline<F> {
        #[pin]
        send: F,
        #[pin]
        timer: Option<tokio::time::Sleep>,
    }
}

impl<F, T> std::future::Future for Deadline<F>
where
    F: std::future::Future<Output = Result<T, UpstreamError>>,
{
    type Output = Result<T, SendFailure>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        // The exchange first: a response that is ready wins over a deadline that is too.
        if let std::task::Poll::Ready(result) = this.send.poll(cx) {
            return std::task::Poll::Ready(result.map_err(SendFailure::Upstream));
        }
        match this.timer.as_pin_mut().map(|t| t.poll(cx)) {
            Some(std::task::Poll::Ready(())) => std::task::Poll::Ready(Err(SendFailure::Timeout)),
            _ => std::task::Poll::Pending,
        }
    }
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
    host: &host::RequestHost,
    vhost: &CompiledVhost,
    route: &CompiledRoute,
    redirect: &CompiledRedirect,
) -> Response<ProxyBody> {
    let name = host.name();
    let location = redirect.location(&RedirectInput {
        scheme: ctx.scheme(),
        host: &name,
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

/// A mirror's copy of the request body, with its place among the mirrors in flight.
struct MirrorCopy {
    body: ProxyBody,
    state: body::MirrorCopyState,
    slot: tokio::sync::OwnedSemaphorePermit,
}

/// A place for one more mirrored request, or `None` (the mirror is dropped and counted) when
/// [`RouterLimits::max_mirrors_in_flight`] are in flight already.
fn mirror_slot(
    ctx: &ConnContext,
    mirror: &CompiledBackend,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let slot = Arc::clone(&ctx.shared.mirror_slots)
        .try_acquire_owned()
        .ok();
    if slot.is_none() {
        tracing::debug!(tenant = %ctx.shared.tenant, backend = %mirror.id, "mirrors in flight at their bound: mirror dropped");
        ctx.shared
            .metrics
            .mirrors_dropped
            .get_or_create(&BackendLabels {
                tenant: Arc::clone(&ctx.shared.tenant),
                backend: Arc::clone(&mirror.id),
            })
            .inc();
    }
    slot
}

/// What a mirrored request is made from: the forwarded head.
#[derive(Clone, Copy)]
struct MirroredHead<'a> {
    parts: &'a http::request::Parts,
    /// The authority the backend gets.
    host: &'a str,
    /// The forwarding fields, when they are not in `parts` (an HTTP/1.1 backend's).
    fields: Option<&'a headers::ForwardingFields>,
}

/// The mirrored request for `mirror`'s endpoint `endpoint`: the forwarded head, re-addressed.
fn mirror_head(
    head: &MirroredHead<'_>,
    mirror: &CompiledBackend,
    endpoint: SocketAddr,
) -> Option<http::request::Builder> {
    let MirroredHead {
        parts,
        host,
        fields,
    } = *head;
    let mut headers = parts.headers.clone();
    if let Some(fields) = fields {
        fields.insert_into(&mut headers);
    }
    let (authority, version) = match mirror.protocol {
        BackendProtocol::H2c => {
            headers.remove(HOST);
            (host.to_owned(), Version::HTTP_2)
        }
        BackendProtocol::Http1 | BackendProtocol::Tcp => {
            if let Ok(v) = HeaderValue::from_str(host) {
                headers.insert(HOST, v);
            }
            (endpoint.to_string(), Version::HTTP_11)
        }
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let uri = absolute_uri(&authority, path_and_query).ok()?;
    let mut builder = Request::builder()
        .method(parts.method.clone())
        .version(version)
        .uri(uri);
    if let Some(h) = builder.headers_mut() {
        *h = headers;
    }
    Some(builder)
}

/// Sends a copy of the request (head and body) to the mirror backend; the answer is ignored. The
/// exchange runs as a task of the router's tracker (drain waits for it; the hard stop cancels it)
/// and holds its mirror slot until it ends. A failure while the copy was abandoned (the client's
/// body failed, or the mirror fell behind) is not held against the mirror endpoint.
fn mirror_request(
    ctx: &ConnContext,
    head: &MirroredHead<'_>,
    copy: MirrorCopy,
    mirror: &Arc<CompiledBackend>,
) {
    let Some(endpoint) = mirror.pick_endpoint() else {
        return;
    };
    let Some(Ok(req)) = mirror_head(head, mirror, endpoint.addr).map(|b| b.body(copy.body)) else {
        return;
    };
    let MirrorCopy { state, slot, .. } = copy;
    let shared = Arc::clone(&ctx.shared);
    let backend = Arc::clone(mirror);
    let endpoint = Arc::clone(endpoint);
    let timeout = shared.limits.upstream_connect_timeout + shared.limits.upstream_idle_timeout;
    let stop = shared.hard_stop.clone();
    ctx.shared.tasks.spawn(async move {
        let _slot = slot;
        let _guard = endpoint.start();
        let exchange = async {
            let sent = shared
                .upstreams
                .send(
                    backend.protocol,
                    backend.tls.as_ref(),
                    endpoint.addr,
                    req,
                    bytes::Bytes::new(),
                    &mut None,
                )
                .await;
            let health = match &sent {
                Ok(resp) => Some(Health::of_status(resp.status())),
                Err(_) if state.abandoned() => None,
                Err(_) => Some(Health::GatewayFailure),
            };
            if let Some(health) = health {
                backend.observe(&endpoint, health, &shared.outlier, bulkhead_net::clock::now);
            }
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
        tokio::select! {
            ended = tokio::time::timeout(timeout, exchange) => match ended {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(backend = %backend.id, error = %e, "mirror request failed"),
                Err(_) => tracing::debug!(backend = %backend.id, "mirror request timed out"),
            },
            () = stop.cancelled() => {}
        }
    });
}
#[cfg(test)]
mod deadline {
    use super::*;
    use std::time::Duration;

    fn broken() -> UpstreamError {
        UpstreamError::Broken("reset".into())
    }

    #[tokio::test(start_paused = true)]
    async fn a_ready_response_wins_over_a_passed_deadline() {
        let passed = Instant::now() - Duration::from_secs(1);
        let ready = std::future::ready(Ok::<_, UpstreamError>(7));
        assert!(matches!(with_deadline(ready, Some(passed)).await, Ok(7)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_exchange_ends_at_the_deadline() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let waiting = std::future::pending::<Result<(), UpstreamError>>();
        let result = with_deadline(waiting, Some(deadline)).await;
        assert!(matches!(result, Err(SendFailure::Timeout)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_exchange_that_fails_in_time_keeps_its_error() {
        let within = Some(Instant::now() + Duration::from_secs(5));
        for deadline in [None, within] {
            let result = with_deadline(std::future::ready(Err::<(), _>(broken())), deadline).await;
            assert!(matches!(
                result,
                Err(SendFailure::Upstream(UpstreamError::Broken(_)))
            ));
        }
    }
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

    /// hyper allocates one future per HTTP/2 request holding this one, and moves it on the way;
    /// the routing future (about 5 KiB) and the request's record are boxed so that the moves stay
    /// small and the stream's whole future (about 970 bytes) stays within the allocator's
    /// per-thread cache (glibc: up to 1,032 bytes), not its slower path for larger blocks.
    #[test]
    fn the_per_request_future_stays_small() {
        let size = future_size(super::serve_request);
        assert!(size <= 640, "serve_request's future is {size} bytes");
    }
}

/// Route selection without sockets: a snapshot compiled as the router compiles it, and requests as
/// facts.
#[cfg(test)]
mod selection {
    use super::*;
    use crate::balance::EndpointRegistry;
    use crate::compile::{compile, CertificateCache};
    use bulkhead_hostmatch::Host;
    use bulkhead_snapshot::TenantSnapshot;
    use http::HeaderMap;

    fn config() -> CompiledConfig {
        let snapshot: TenantSnapshot = serde_json::from_value(serde_json::json!({
            "tenant": "acme", "namespace": "acme", "version": 1,
            "hostnames": ["*.acme.test"],
            "https": {},
            "http": {"virtual_hosts": [
                {"hostname": "www.acme.test", "listener_port": 80, "routes": [
                    {"route": {"kind": "HTTPRoute", "namespace": "acme", "name": "api", "rule": 0},
                     "match": {"path": {"type": "PathPrefix", "value": "/api"}, "method": "POST"},
                     "backends": [{"backend": "acme/api:80", "weight": 1}]},
                    {"route": {"kind": "HTTPRoute", "namespace": "acme", "name": "web", "rule": 0},
                     "match": {"path": {"type": "PathPrefix", "value": "/"}},
                     "backends": [{"backend": "acme/web:80", "weight": 1}]}
                ]}
            ]},
            "backends": {
                "acme/api:80": {"endpoints": ["127.0.0.1:1"]},
                "acme/web:80": {"endpoints": ["127.0.0.1:2"]}
            }
        }))
        .expect("snapshot");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        compile(
            &snapshot,
            "acme",
            &provider,
            &EndpointRegistry::default(),
            &CertificateCache::default(),
            true,
        )
        .expect("compiles")
    }

    fn select(
        config: &CompiledConfig,
        entry: &Entry,
        host: &str,
        method: Method,
        path: &str,
    ) -> Result<String, Refusal> {
        let headers = HeaderMap::new();
        let facts = RequestFacts {
            method: &method,
            path,
            query: None,
            headers: &headers,
        };
        let host = Host::parse(host).expect("host");
        select_route(config, entry, &host, &facts).map(|(_, r)| r.label.to_string())
    }

    #[test]
    fn the_first_matching_route_of_the_host_wins() {
        let c = config();
        let api = select(&c, &Entry::Plain, "www.acme.test", Method::POST, "/api/x");
        assert_eq!(api.as_deref(), Ok("HTTPRoute acme/api rule 0"));
        let web = select(&c, &Entry::Plain, "www.acme.test", Method::GET, "/api/x");
        assert_eq!(web.as_deref(), Ok("HTTPRoute acme/web rule 0"));
    }

    #[test]
    fn a_name_without_virtual_host_and_a_listener_without_it_are_refused() {
        let c = config();
        assert_eq!(
            select(&c, &Entry::Plain, "api.acme.test", Method::GET, "/"),
            Err(Refusal::NoVirtualHost)
        );
        let tls = Entry::Tls {
            listener: Arc::from("acme/gw/https"),
            client_auth: None,
        };
        assert_eq!(
            select(&c, &tls, "www.acme.test", Method::GET, "/"),
            Err(Refusal::NoVirtualHost),
            "the HTTP listener's virtual host is not served over TLS"
        );
    }
}
