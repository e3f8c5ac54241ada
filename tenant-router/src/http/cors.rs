//! CORS (Gateway API `HTTPCORSFilter`) as a tower layer around the rest of the request path.
//!
//! Route selection puts the matched rule's policy in the request's extensions ([`RouteCors`]);
//! [`CorsLayer`] reads it, so the layer itself is the same for every route. A request without the
//! extension (a route without a CORS filter) passes through untouched.
//!
//! | request | answer |
//! |---|---|
//! | preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`), origin allowed | 204 from the router, never the backend: `Access-Control-Allow-Origin`, `-Allow-Methods`, `-Allow-Headers`, `-Expose-Headers`, `-Max-Age`, `-Allow-Credentials` as configured |
//! | preflight, origin not allowed, malformed or longer than [`RouterLimits::cors_max_origin_bytes`], or more request headers than [`RouterLimits::cors_max_request_headers`] | 403 without CORS headers (`cors_preflight` refusal: counted and logged) |
//! | any other request with an allowed `Origin` | forwarded; `Access-Control-Allow-Origin`, `-Allow-Credentials` and `-Expose-Headers` added to the answer (the backend's or the router's own) |
//! | any other request | forwarded untouched but for `Vary: Origin` |
//!
//! With `allowCredentials`, `*` is never sent: the request's `Origin`, `Access-Control-Request-Method`
//! and `Access-Control-Request-Headers` are echoed instead (and, for `exposeHeaders: ["*"]`, the
//! names of the response's headers). Every answer of a CORS route carries `Vary: Origin` unless it
//! allows any origin with a literal `*`.
//!
//! [`RouterLimits::cors_max_origin_bytes`]: crate::limits::RouterLimits::cors_max_origin_bytes
//! [`RouterLimits::cors_max_request_headers`]: crate::limits::RouterLimits::cors_max_request_headers

use super::refusal::{Answer, Refusal};
use crate::body;
use bulkhead_snapshot::cors::{Origin, OriginPattern, WILDCARD};
use bulkhead_snapshot::Cors;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// What a policy allows of methods, request headers or exposed response headers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    /// The field is empty: the header is not sent.
    Unset,
    /// `*`.
    Any,
    /// The configured names, joined with `, `.
    List(HeaderValue),
}

impl Allowed {
    fn compile(list: &[String]) -> Result<Self, String> {
        if list.is_empty() {
            return Ok(Self::Unset);
        }
        if list.iter().any(|v| v == WILDCARD) {
            return Ok(Self::Any);
        }
        HeaderValue::from_str(&list.join(", "))
            .map(Self::List)
            .map_err(|e| e.to_string())
    }

    /// The header value to send: the list, `*`, or with credentials the request's own `echo`.
    fn value(&self, credentials: bool, echo: Option<&HeaderValue>) -> Option<HeaderValue> {
        match self {
            Self::Unset => None,
            Self::List(v) => Some(v.clone()),
            Self::Any if credentials => echo.cloned(),
            Self::Any => Some(HeaderValue::from_static(WILDCARD)),
        }
    }
}

/// One rule's CORS policy, compiled from a snapshot's [`Cors`] filter.
#[derive(Debug)]
pub(crate) struct CompiledCors {
    origins: Vec<OriginPattern>,
    credentials: bool,
    methods: Allowed,
    headers: Allowed,
    expose: Allowed,
    max_age: HeaderValue,
}

impl CompiledCors {
    /// Compiles `cors` (refused as the snapshot contract refuses it: [`Cors::check`]).
    pub(crate) fn compile(cors: &Cors) -> Result<Self, String> {
        cors.check()?;
        let origins = cors
            .allow_origins
            .iter()
            .map(|o| OriginPattern::parse(o))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            origins,
            credentials: cors.allow_credentials,
            methods: Allowed::compile(&cors.allow_methods)?,
            headers: Allowed::compile(&cors.allow_headers)?,
            expose: Allowed::compile(&cors.expose_headers)?,
            max_age: HeaderValue::from(cors.max_age),
        })
    }

    /// Whether the literal `*` is the answer for every origin (then nothing varies by origin).
    fn star_origin(&self) -> bool {
        !self.credentials && self.origins.first() == Some(&OriginPattern::Any)
    }

    /// The `Access-Control-Allow-Origin` value for `origin`, or `None` when it is not allowed.
    fn allow_origin(&self, origin: &HeaderValue, max_bytes: usize) -> Option<HeaderValue> {
        if origin.len() > max_bytes {
            return None;
        }
        if self.star_origin() {
            return Some(HeaderValue::from_static(WILDCARD));
        }
        let any = self.origins.first() == Some(&OriginPattern::Any);
        let text = origin.to_str().ok()?;
        let allowed = any || Origin::parse(text).is_some_and(|o| self.matches(&o));
        allowed.then(|| origin.clone())
    }

    fn matches(&self, origin: &Origin<'_>) -> bool {
        self.origins.iter().any(|p| p.matches(origin))
    }
}

/// The matched rule's CORS policy, carried in the request's extensions to [`CorsLayer`].
#[derive(Debug, Clone)]
pub(crate) struct RouteCors(pub(crate) Arc<CompiledCors>);

/// The limits the layer applies (from [`crate::limits::RouterLimits`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CorsLimits {
    /// Longest `Origin` read, in bytes.
    pub(crate) max_origin_bytes: usize,
    /// Most names in a preflight's `Access-Control-Request-Headers`.
    pub(crate) max_request_headers: usize,
}

/// The tower layer: answers preflights and decorates answers by the policy in [`RouteCors`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct CorsLayer {
    limits: CorsLimits,
}

impl CorsLayer {
    /// A layer with these limits.
    pub(crate) fn new(limits: CorsLimits) -> Self {
        Self { limits }
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = CorsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CorsService {
            inner,
            limits: self.limits,
        }
    }
}

/// The service [`CorsLayer`] builds around `S`.
#[derive(Debug, Clone)]
pub(crate) struct CorsService<S> {
    inner: S,
    limits: CorsLimits,
}

/// What to add to the answer of a request that is not a preflight.
#[derive(Debug)]
pub(crate) struct Decoration {
    policy: Arc<CompiledCors>,
    /// `Access-Control-Allow-Origin`, when the origin is allowed.
    allow_origin: Option<HeaderValue>,
}

impl Decoration {
    fn apply(&self, headers: &mut HeaderMap) {
        let policy = &self.policy;
        if !policy.star_origin() {
            headers.append(VARY, HeaderValue::from_static("Origin"));
        }
        let Some(origin) = &self.allow_origin else {
            return;
        };
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if policy.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        let expose = match (&policy.expose, policy.credentials) {
            (Allowed::Any, true) => response_header_names(headers),
            (expose, credentials) => expose.value(credentials, None),
        };
        if let Some(v) = expose {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
    }
}

/// The names of `headers` joined with `, ` (what `exposeHeaders: ["*"]` means with credentials).
fn response_header_names(headers: &HeaderMap) -> Option<HeaderValue> {
    let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
    if names.is_empty() {
        return None;
    }
    HeaderValue::from_str(&names.join(", ")).ok()
}

/// How the layer handles one request.
enum Verdict {
    /// A preflight, answered here.
    Answer(Answer),
    /// Forwarded, then decorated.
    Forward(Decoration),
}

/// Whether `req` is a CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
fn is_preflight<B>(req: &Request<B>) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(ORIGIN)
        && req.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// The number of comma-separated names in the request's `Access-Control-Request-Headers` lines.
fn requested_header_count(headers: &HeaderMap) -> usize {
    headers
        .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .map(|v| v.as_bytes().split(|b| *b == b',').count())
        .sum()
}

impl CorsLimits {
    fn verdict<B>(&self, policy: Arc<CompiledCors>, req: &Request<B>) -> Verdict {
        let headers = req.headers();
        let allow_origin = headers
            .get(ORIGIN)
            .and_then(|o| policy.allow_origin(o, self.max_origin_bytes));
        if !is_preflight(req) {
            return Verdict::Forward(Decoration {
                policy,
                allow_origin,
            });
        }
        let too_many = requested_header_count(headers) > self.max_request_headers;
        match allow_origin {
            Some(origin) if !too_many => Verdict::Answer(preflight(&policy, origin, headers)),
            _ => {
                tracing::debug!(
                    origin = ?headers.get(ORIGIN),
                    too_many,
                    "CORS preflight refused"
                );
                let mut answer = Answer::refused(Refusal::CorsPreflight);
                if !policy.star_origin() {
                    answer
                        .response
                        .headers_mut()
                        .append(VARY, HeaderValue::from_static("Origin"));
                }
                Verdict::Answer(answer)
            }
        }
    }
}

/// The router's 204 answer to an allowed preflight.
fn preflight(policy: &CompiledCors, origin: HeaderValue, request: &HeaderMap) -> Answer {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if policy.credentials {
        h.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    let credentials = policy.credentials;
    let method = request.get(ACCESS_CONTROL_REQUEST_METHOD);
    if let Some(v) = policy.methods.value(credentials, method) {
        h.insert(ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    let asked = joined(request, ACCESS_CONTROL_REQUEST_HEADERS);
    if let Some(v) = policy.headers.value(credentials, asked.as_ref()) {
        h.insert(ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if let Some(v) = policy.expose.value(credentials, None) {
        h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
    h.insert(ACCESS_CONTROL_MAX_AGE, policy.max_age.clone());
    if !policy.star_origin() {
        h.append(VARY, HeaderValue::from_static("Origin"));
    }
    Answer::local(resp)
}

/// Every line of header `name` joined with `, ` (`None` when absent).
fn joined(headers: &HeaderMap, name: http::header::HeaderName) -> Option<HeaderValue> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    let mut out = first.as_bytes().to_vec();
    for line in lines {
        out.extend_from_slice(b", ");
        out.extend_from_slice(line.as_bytes());
    }
    HeaderValue::from_bytes(&out).ok()
}

impl<S, B, RB, D> Service<Request<B>> for CorsService<S>
where
    S: Service<Request<B>, Response = (Response<RB>, D), Error = Answer>,
{
    type Response = (Response<RB>, D);
    type Error = Answer;
    type Future = CorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(RouteCors(policy)) = req.extensions().get::<RouteCors>().cloned() else {
            return CorsFuture::Forward {
                inner: self.inner.call(req),
                decoration: None,
            };
        };
        match self.limits.verdict(policy, &req) {
            Verdict::Answer(answer) => CorsFuture::Answered {
                answer: Some(answer),
            },
            Verdict::Forward(decoration) => CorsFuture::Forward {
                inner: self.inner.call(req),
                decoration: Some(decoration),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`CorsService`]: the inner service's, decorated, or the router's own answer.
    #[project = CorsFutureProj]
    pub(crate) enum CorsFuture<F> {
        /// Waiting for the inner service.
        Forward {
            #[pin]
            inner: F,
            decoration: Option<Decoration>,
        },
        /// A preflight's answer, ready.
        Answered {
            answer: Option<Answer>,
        },
    }
}

impl<F, RB, D> Future for CorsFuture<F>
where
    F: Future<Output = Result<(Response<RB>, D), Answer>>,
{
    type Output = Result<(Response<RB>, D), Answer>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CorsFutureProj::Forward { inner, decoration } => {
                let mut out = std::task::ready!(inner.poll(cx));
                if let Some(d) = decoration {
                    match &mut out {
                        Ok((resp, _)) => d.apply(resp.headers_mut()),
                        Err(answer) => d.apply(answer.response.headers_mut()),
                    }
                }
                Poll::Ready(out)
            }
            // Polled again after it returned: stays pending (a caller bug, never a panic).
            CorsFutureProj::Answered { answer } => match answer.take() {
                Some(a) => Poll::Ready(Err(a)),
                None => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(
        origins: &[&str],
        credentials: bool,
        methods: &[&str],
        headers: &[&str],
    ) -> Arc<CompiledCors> {
        let strings = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
        Arc::new(
            CompiledCors::compile(&Cors {
                allow_origins: strings(origins),
                allow_credentials: credentials,
                allow_methods: strings(methods),
                allow_headers: strings(headers),
                expose_headers: vec!["x-header-3".into()],
                max_age: 3600,
            })
            .expect("compiles"),
        )
    }

    const LIMITS: CorsLimits = CorsLimits {
        max_origin_bytes: 64,
        max_request_headers: 3,
    };

    fn request(method: Method, headers: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::new(());
        *req.method_mut() = method;
        for (n, v) in headers {
            req.headers_mut().append(
                http::header::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        req
    }

    fn answer(verdict: Verdict) -> Response<crate::body::ProxyBody> {
        match verdict {
            Verdict::Answer(a) => *a.response,
            Verdict::Forward(_) => panic!("forwarded"),
        }
    }

    fn header(resp: &Response<crate::body::ProxyBody>, name: &str) -> Option<String> {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_owned())
    }

    #[test]
    fn an_allowed_preflight_is_answered_204_with_the_policy() {
        let p = policy(&["https://*.bar.com"], true, &["GET", "PUT"], &["x-a"]);
        let req = request(
            Method::OPTIONS,
            &[
                ("origin", "https://a.bar.com"),
                ("access-control-request-method", "PUT"),
            ],
        );
        let resp = answer(LIMITS.verdict(p, &req));
        assert_eq!(resp.status(), 204);
        assert_eq!(
            header(&resp, "access-control-allow-origin").as_deref(),
            Some("https://a.bar.com")
        );
        assert_eq!(
            header(&resp, "access-control-allow-methods").as_deref(),
            Some("GET, PUT")
        );
        assert_eq!(
            header(&resp, "access-control-allow-headers").as_deref(),
            Some("x-a")
        );
        assert_eq!(
            header(&resp, "access-control-max-age").as_deref(),
            Some("3600")
        );
        assert_eq!(
            header(&resp, "access-control-allow-credentials").as_deref(),
            Some("true")
        );
        assert_eq!(header(&resp, "vary").as_deref(), Some("Origin"));
    }

    #[test]
    fn wildcards_are_echoed_with_credentials_and_literal_without() {
        let asks = [
            ("origin", "https://x.test:8443"),
            ("access-control-request-method", "PATCH"),
            ("access-control-request-headers", "x-a, x-b"),
        ];
        let with = answer(LIMITS.verdict(
            policy(&["*"], true, &["*"], &["*"]),
            &request(Method::OPTIONS, &asks),
        ));
        assert_eq!(
            header(&with, "access-control-allow-origin").as_deref(),
            Some("https://x.test:8443")
        );
        assert_eq!(
            header(&with, "access-control-allow-methods").as_deref(),
            Some("PATCH")
        );
        assert_eq!(
            header(&with, "access-control-allow-headers").as_deref(),
            Some("x-a, x-b")
        );
        let without = answer(LIMITS.verdict(
            policy(&["*"], false, &["*"], &["*"]),
            &request(Method::OPTIONS, &asks),
        ));
        assert_eq!(
            header(&without, "access-control-allow-origin").as_deref(),
            Some("*")
        );
        assert_eq!(
            header(&without, "access-control-allow-methods").as_deref(),
            Some("*")
        );
        assert_eq!(
            header(&without, "access-control-allow-headers").as_deref(),
            Some("*")
        );
        assert_eq!(header(&without, "access-control-allow-credentials"), None);
        assert_eq!(header(&without, "vary"), None);
    }

    #[test]
    fn refused_preflights_get_403_without_cors_headers() {
        let p = policy(&["https://www.foo.com"], false, &[], &[]);
        let long = format!("https://{}.foo.com", "a".repeat(60));
        for origin in ["https://foobar.com", "null", long.as_str()] {
            let req = request(
                Method::OPTIONS,
                &[("origin", origin), ("access-control-request-method", "GET")],
            );
            let resp = answer(LIMITS.verdict(Arc::clone(&p), &req));
            assert_eq!(resp.status(), 403, "{origin}");
            assert_eq!(
                header(&resp, "access-control-allow-origin"),
                None,
                "{origin}"
            );
        }
        let many = request(
            Method::OPTIONS,
            &[
                ("origin", "https://www.foo.com"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "a, b"),
                ("access-control-request-headers", "c, d"),
            ],
        );
        assert_eq!(answer(LIMITS.verdict(p, &many)).status(), 403);
    }

    #[test]
    fn other_requests_are_forwarded_and_decorated_only_when_allowed() {
        let p = policy(&["https://www.foo.com"], false, &[], &[]);
        for (origin, allowed) in [("https://www.foo.com", true), ("https://evil.test", false)] {
            let req = request(Method::GET, &[("origin", origin)]);
            let Verdict::Forward(d) = LIMITS.verdict(Arc::clone(&p), &req) else {
                panic!("answered");
            };
            let mut h = HeaderMap::new();
            d.apply(&mut h);
            assert_eq!(
                h.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN),
                allowed,
                "{origin}"
            );
            assert_eq!(
                h.contains_key(ACCESS_CONTROL_EXPOSE_HEADERS),
                allowed,
                "{origin}"
            );
            assert_eq!(h.get(VARY).map(|v| v.as_bytes()), Some(&b"Origin"[..]));
        }
        // An OPTIONS without Access-Control-Request-Method is no preflight: forwarded.
        let req = request(Method::OPTIONS, &[("origin", "https://www.foo.com")]);
        assert!(matches!(LIMITS.verdict(p, &req), Verdict::Forward(_)));
    }
}
