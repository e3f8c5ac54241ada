//! Compiling one route's rules: matches (paths, methods, headers, query parameters, gRPC methods),
//! filters, timeouts and backends. A value the data plane could not serve (an invalid regular
//! expression, header name, path or duration, an unsupported filter) makes the whole route invalid
//! (`Accepted=False`, reason `UnsupportedValue`, naming the field) and it is skipped; unresolved
//! backend references only mark that backend invalid (`backend: None`, answered with 500).

use super::model::{
    BackendRefModel, CorsModel, FilterModel, GrpcMatchModel, HeaderModifierModel, HttpMatchModel,
    PathModifierModel, RouteModel, RuleMatches, TimeoutsModel, ValueMatchModel,
};
use super::refs::{resolve_backend, BackendSource, Problem, INVALID_BACKEND_TLS};
use super::world::{RouteKind, World};
use crate::conditions::REASON_UNSUPPORTED_VALUE;
use bulkhead_crds::snapshot::{
    Backend, Cors, HeaderModifier, HttpFilter, HttpMatch, MatchType, Mirror, PathMatch,
    PathModifier, Redirect, Timeouts, UrlRewrite, ValueMatch, WeightedBackend,
};
use bulkhead_hostmatch::{normalize_host, HostPattern};
use bulkhead_snapshot::redirect::is_redirect_status;
use bulkhead_snapshot::regex::{anchored_regex, RegexError};
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

pub use bulkhead_snapshot::regex::{MAX_REGEX_LEN, MAX_REGEX_SIZE};
/// Largest backend weight (the Gateway API maximum).
pub const MAX_WEIGHT: i32 = 1_000_000;
pub use bulkhead_snapshot::redirect::DEFAULT_REDIRECT_STATUS;

/// One rule, compiled.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    pub(crate) index: usize,
    /// One per match (a rule without matches has one match-everything entry).
    pub(crate) matches: Vec<HttpMatch>,
    pub(crate) filters: Vec<HttpFilter>,
    pub(crate) backends: Vec<WeightedBackend>,
    pub(crate) timeouts: Timeouts,
}

/// One route, compiled.
#[derive(Debug, Clone, Default)]
pub(crate) struct CompiledRoute {
    /// The route's hostnames, parsed (empty: none given).
    pub(crate) hostnames: Vec<(usize, HostPattern)>,
    /// HTTPRoute / GRPCRoute rules.
    pub(crate) rules: Vec<CompiledRule>,
    /// TLSRoute / TCPRoute backends (every rule's, in order).
    pub(crate) l4_backends: Vec<WeightedBackend>,
    /// Resolved backends by id.
    pub(crate) backends: BTreeMap<String, Backend>,
    /// `Some` when the route cannot be served at all.
    pub(crate) invalid: Option<Problem>,
    /// Unresolved references.
    pub(crate) unresolved: Vec<Problem>,
    /// Services (namespace, name) of the references that resolved, resolved or refused for their
    /// `BackendTLSPolicy` (the policies' ancestors).
    pub(crate) services: BTreeSet<(String, String)>,
}

/// Compiles a route.
pub(crate) fn compile(world: &World<'_>, route: &RouteModel<'_>) -> CompiledRoute {
    let mut out = CompiledRoute::default();
    let mut c = Compiler {
        world,
        route,
        unresolved: Vec::new(),
        backends: BTreeMap::new(),
        services: BTreeSet::new(),
    };
    let result = c.route(&mut out);
    out.unresolved = c.unresolved;
    out.backends = c.backends;
    out.services = c.services;
    if let Err(p) = result {
        out.invalid = Some(p);
        out.rules.clear();
        out.l4_backends.clear();
    }
    out
}

struct Compiler<'w, 'a, 'r> {
    world: &'w World<'a>,
    route: &'r RouteModel<'r>,
    unresolved: Vec<Problem>,
    backends: BTreeMap<String, Backend>,
    services: BTreeSet<(String, String)>,
}

fn unsupported(message: String) -> Problem {
    Problem::new(REASON_UNSUPPORTED_VALUE, message)
}

impl Compiler<'_, '_, '_> {
    fn route(&mut self, out: &mut CompiledRoute) -> Result<(), Problem> {
        for (i, raw) in self.route.hostnames.iter().enumerate() {
            let p = HostPattern::parse(raw)
                .map_err(|e| unsupported(format!("spec.hostnames[{i}] {raw:?}: {e}")))?;
            out.hostnames.push((i, p));
        }
        for (ri, rule) in self.route.rules.iter().enumerate() {
            let field = format!("spec.rules[{ri}]");
            match &rule.matches {
                RuleMatches::None => {
                    for (bi, b) in rule.backend_refs.iter().enumerate() {
                        let wb = self.backend(b, &format!("{field}.backendRefs[{bi}]"), true)?;
                        out.l4_backends.push(wb);
                    }
                }
                RuleMatches::Http(ms) => {
                    let matches = http_matches(ms, &field)?;
                    out.rules.push(self.rule(ri, matches, rule, &field)?);
                }
                RuleMatches::Grpc(ms) => {
                    let matches = grpc_matches(ms, &field)?;
                    out.rules.push(self.rule(ri, matches, rule, &field)?);
                }
            }
        }
        Ok(())
    }

    fn rule(
        &mut self,
        index: usize,
        matches: Vec<HttpMatch>,
        rule: &super::model::RuleModel,
        field: &str,
    ) -> Result<CompiledRule, Problem> {
        let all_prefix = matches
            .iter()
            .all(|m| matches!(m.path, Some(PathMatch::PathPrefix(_))));
        let filters = self.filters(&rule.filters, &format!("{field}.filters"), all_prefix)?;
        let mut backends = Vec::new();
        for (bi, b) in rule.backend_refs.iter().enumerate() {
            let bfield = format!("{field}.backendRefs[{bi}]");
            let mut wb = self.backend(b, &bfield, all_prefix)?;
            wb.filters = self.filters(&b.filters, &format!("{bfield}.filters"), all_prefix)?;
            if wb.filters.iter().any(|f| matches!(f, HttpFilter::Cors(_))) {
                return Err(unsupported(format!(
                    "{bfield}.filters: CORS applies to a whole rule, not to one backend"
                )));
            }
            backends.push(wb);
        }
        let timeouts = timeouts(rule.timeouts.as_ref(), field)?;
        Ok(CompiledRule {
            index,
            matches,
            filters,
            backends,
            timeouts,
        })
    }

    /// A weighted backend; an unresolved reference becomes `backend: None`.
    fn backend(
        &mut self,
        b: &BackendRefModel,
        field: &str,
        _all_prefix: bool,
    ) -> Result<WeightedBackend, Problem> {
        let weight = b.weight.unwrap_or(1);
        if !(0..=MAX_WEIGHT).contains(&weight) {
            return Err(unsupported(format!(
                "{field}.weight: {weight} is outside 0..={MAX_WEIGHT}"
            )));
        }
        let backend = self.resolve(b, field);
        Ok(WeightedBackend {
            backend,
            weight: weight.unsigned_abs(),
            filters: Vec::new(),
        })
    }

    fn resolve(&mut self, b: &BackendRefModel, field: &str) -> Option<String> {
        let source = BackendSource {
            kind: self.route.kind,
            namespace: self.route.namespace,
            field: field.to_owned(),
        };
        let service = || {
            let ns = b.namespace.as_deref().unwrap_or(self.route.namespace);
            (ns.to_owned(), b.name.clone())
        };
        match resolve_backend(self.world, &source, b) {
            Ok((id, backend)) => {
                self.backends.insert(id.clone(), backend);
                self.services.insert(service());
                Some(id)
            }
            // Not the route's fault: the policy's status says why; the share is answered 500.
            Err(p) if p.reason == INVALID_BACKEND_TLS => {
                self.services.insert(service());
                None
            }
            Err(p) => {
                self.unresolved.push(p);
                None
            }
        }
    }

    fn filters(
        &mut self,
        list: &[FilterModel],
        field: &str,
        all_prefix: bool,
    ) -> Result<Vec<HttpFilter>, Problem> {
        let mut out = Vec::new();
        let mut redirect_or_rewrite = None;
        for (fi, f) in list.iter().enumerate() {
            let field = format!("{field}[{fi}]");
            let missing = |what: &str| {
                unsupported(format!("{field}.{what} is required for type {}", f.type_))
            };
            match f.type_.as_str() {
                "RequestHeaderModifier" => {
                    let m = f
                        .request_header_modifier
                        .as_ref()
                        .ok_or_else(|| missing("requestHeaderModifier"))?;
                    out.push(HttpFilter::RequestHeaderModifier(header_modifier(
                        m,
                        &format!("{field}.requestHeaderModifier"),
                    )?));
                }
                "ResponseHeaderModifier" => {
                    let m = f
                        .response_header_modifier
                        .as_ref()
                        .ok_or_else(|| missing("responseHeaderModifier"))?;
                    out.push(HttpFilter::ResponseHeaderModifier(header_modifier(
                        m,
                        &format!("{field}.responseHeaderModifier"),
                    )?));
                }
                "RequestRedirect" | "URLRewrite" => {
                    if let Some(other) = redirect_or_rewrite.replace(f.type_.as_str()) {
                        return Err(unsupported(format!(
                            "{field}: {} cannot be combined with {other} in the same filter list",
                            f.type_
                        )));
                    }
                    if f.type_ == "RequestRedirect" {
                        let r = f
                            .request_redirect
                            .as_ref()
                            .ok_or_else(|| missing("requestRedirect"))?;
                        out.push(HttpFilter::RequestRedirect(redirect(
                            r,
                            &format!("{field}.requestRedirect"),
                            all_prefix,
                        )?));
                    } else {
                        let r = f
                            .url_rewrite
                            .as_ref()
                            .ok_or_else(|| missing("urlRewrite"))?;
                        let ffield = format!("{field}.urlRewrite");
                        let hostname = r
                            .hostname
                            .as_deref()
                            .map(|h| exact_hostname(h, &format!("{ffield}.hostname")))
                            .transpose()?;
                        let path = r
                            .path
                            .as_ref()
                            .map(|p| path_modifier(p, &format!("{ffield}.path"), all_prefix))
                            .transpose()?;
                        out.push(HttpFilter::UrlRewrite(UrlRewrite { hostname, path }));
                    }
                }
                "RequestMirror" => {
                    let m = f
                        .request_mirror
                        .as_ref()
                        .ok_or_else(|| missing("requestMirror"))?;
                    let mfield = format!("{field}.requestMirror");
                    let percent = mirror_percent(m.percent, m.fraction.as_ref(), &mfield)?;
                    if let Some(backend) =
                        self.resolve(&m.backend_ref, &format!("{mfield}.backendRef"))
                    {
                        out.push(HttpFilter::RequestMirror(Mirror { backend, percent }));
                    }
                }
                "CORS" if self.route.kind == RouteKind::Http => {
                    let c = f.cors.as_ref().ok_or_else(|| missing("cors"))?;
                    out.push(HttpFilter::Cors(cors(c, &format!("{field}.cors"))?));
                }
                other => {
                    return Err(unsupported(format!(
                        "{field}.type: filter type {other} is not supported"
                    )))
                }
            }
        }
        Ok(out)
    }
}

/// An `HTTPCORSFilter`, checked with the rules the router applies ([`Cors::check`]).
fn cors(c: &CorsModel, field: &str) -> Result<Cors, Problem> {
    let max_age = match c.max_age {
        None => bulkhead_snapshot::cors::DEFAULT_CORS_MAX_AGE,
        Some(s) => u32::try_from(s).ok().filter(|s| *s >= 1).ok_or_else(|| {
            unsupported(format!(
                "{field}.maxAge: {s} is not a number of seconds >= 1"
            ))
        })?,
    };
    let out = Cors {
        allow_origins: c.allow_origins.clone(),
        allow_credentials: c.allow_credentials.unwrap_or(false),
        allow_methods: c.allow_methods.clone(),
        allow_headers: c.allow_headers.clone(),
        expose_headers: c.expose_headers.clone(),
        max_age,
    };
    out.check()
        .map_err(|reason| unsupported(format!("{field}.{reason}")))?;
    Ok(out)
}

fn mirror_percent(
    percent: Option<i64>,
    fraction: Option<&super::model::FractionModel>,
    field: &str,
) -> Result<u32, Problem> {
    let p = match (percent, fraction) {
        (Some(p), _) => p,
        (None, Some(f)) => {
            let d = f.denominator.unwrap_or(100);
            if d <= 0 || f.numerator < 0 || f.numerator > d {
                return Err(unsupported(format!(
                    "{field}.fraction: {}/{d} is not a fraction between 0 and 1",
                    f.numerator
                )));
            }
            f.numerator * 100 / d
        }
        (None, None) => 100,
    };
    u32::try_from(p)
        .ok()
        .filter(|p| *p <= 100)
        .ok_or_else(|| unsupported(format!("{field}.percent: {p} is outside 0..=100")))
}

fn header_modifier(m: &HeaderModifierModel, field: &str) -> Result<HeaderModifier, Problem> {
    let pair =
        |kind: &str, i: usize, nv: &super::model::NameValue| -> Result<(String, String), Problem> {
            let name = header_name(&nv.name, &format!("{field}.{kind}[{i}].name"))?;
            http::HeaderValue::from_str(&nv.value).map_err(|e| {
                unsupported(format!("{field}.{kind}[{i}].value {:?}: {e}", nv.value))
            })?;
            Ok((name, nv.value.clone()))
        };
    Ok(HeaderModifier {
        set: m
            .set
            .iter()
            .enumerate()
            .map(|(i, nv)| pair("set", i, nv))
            .collect::<Result<_, _>>()?,
        add: m
            .add
            .iter()
            .enumerate()
            .map(|(i, nv)| pair("add", i, nv))
            .collect::<Result<_, _>>()?,
        remove: m
            .remove
            .iter()
            .enumerate()
            .map(|(i, n)| header_name(n, &format!("{field}.remove[{i}]")))
            .collect::<Result<_, _>>()?,
    })
}

/// A valid HTTP header name, lower-cased.
fn header_name(raw: &str, field: &str) -> Result<String, Problem> {
    http::HeaderName::from_bytes(raw.as_bytes())
        .map(|n| n.as_str().to_owned())
        .map_err(|e| unsupported(format!("{field} {raw:?}: {e}")))
}

fn exact_hostname(raw: &str, field: &str) -> Result<String, Problem> {
    normalize_host(raw).map_err(|e| unsupported(format!("{field} {raw:?}: {e}")))
}

fn redirect(
    r: &super::model::RedirectModel,
    field: &str,
    all_prefix: bool,
) -> Result<Redirect, Problem> {
    let scheme = match r.scheme.as_deref() {
        None => None,
        Some(s @ ("http" | "https")) => Some(s.to_owned()),
        Some(other) => {
            return Err(unsupported(format!(
                "{field}.scheme: {other:?} is neither http nor https"
            )))
        }
    };
    let hostname = r
        .hostname
        .as_deref()
        .map(|h| exact_hostname(h, &format!("{field}.hostname")))
        .transpose()?;
    let port = r
        .port
        .map(|p| {
            u16::try_from(p)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| unsupported(format!("{field}.port: {p} is not a valid port")))
        })
        .transpose()?;
    let status_code = match r.status_code {
        None => DEFAULT_REDIRECT_STATUS,
        Some(c) => u16::try_from(c)
            .ok()
            .filter(|c| is_redirect_status(*c))
            .ok_or_else(|| {
                unsupported(format!("{field}.statusCode: {c} is not a redirect status"))
            })?,
    };
    let path = r
        .path
        .as_ref()
        .map(|p| path_modifier(p, &format!("{field}.path"), all_prefix))
        .transpose()?;
    Ok(Redirect {
        scheme,
        hostname,
        port,
        path,
        status_code,
    })
}

fn path_modifier(
    p: &PathModifierModel,
    field: &str,
    all_prefix: bool,
) -> Result<PathModifier, Problem> {
    match p.type_.as_str() {
        "ReplaceFullPath" => {
            let v = p.replace_full_path.as_deref().ok_or_else(|| {
                unsupported(format!(
                    "{field}.replaceFullPath is required for type ReplaceFullPath"
                ))
            })?;
            check_path(v, &format!("{field}.replaceFullPath"))?;
            Ok(PathModifier::ReplaceFullPath(v.to_owned()))
        }
        "ReplacePrefixMatch" => {
            let v = p.replace_prefix_match.as_deref().ok_or_else(|| {
                unsupported(format!(
                    "{field}.replacePrefixMatch is required for type ReplacePrefixMatch"
                ))
            })?;
            check_path(v, &format!("{field}.replacePrefixMatch"))?;
            if !all_prefix {
                return Err(unsupported(format!(
                    "{field}: ReplacePrefixMatch needs every match of the rule to be a PathPrefix match"
                )));
            }
            Ok(PathModifier::ReplacePrefixMatch(v.to_owned()))
        }
        other => Err(unsupported(format!(
            "{field}.type: {other:?} is not supported"
        ))),
    }
}

/// A path must start with `/` and hold no query, fragment, whitespace or control character.
fn check_path(v: &str, field: &str) -> Result<(), Problem> {
    let ok = v.starts_with('/')
        && !v.contains(['?', '#'])
        && !v.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(unsupported(format!(
            "{field} {v:?} must start with '/' and hold no query, fragment or whitespace"
        )))
    }
}

/// Validates a regular expression with the tenant router's own compiler
/// ([`anchored_regex`]: anchored, length- and size-limited).
fn check_regex(re: &str, field: &str) -> Result<(), Problem> {
    anchored_regex(re).map(drop).map_err(|e| match e {
        RegexError::TooLong => unsupported(format!(
            "{field}: regular expression longer than {MAX_REGEX_LEN} characters"
        )),
        RegexError::Invalid(e) => {
            let first = e.lines().last().unwrap_or_default().trim().to_owned();
            unsupported(format!(
                "{field} {re:?} is not a valid regular expression: {first}"
            ))
        }
    })
}

fn value_matches(
    list: &[ValueMatchModel],
    field: &str,
    headers: bool,
) -> Result<Vec<ValueMatch>, Problem> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let name = if headers {
            header_name(&m.name, &format!("{f}.name"))?
        } else if m.name.is_empty() {
            return Err(unsupported(format!("{f}.name must not be empty")));
        } else {
            m.name.clone()
        };
        let kind = match m.type_.as_deref().unwrap_or("Exact") {
            "Exact" => MatchType::Exact,
            "RegularExpression" => {
                check_regex(&m.value, &format!("{f}.value"))?;
                MatchType::RegularExpression
            }
            other => return Err(unsupported(format!("{f}.type: {other:?} is not supported"))),
        };
        // The Gateway API: only the first entry with an equivalent name counts.
        if seen.insert(name.clone()) {
            out.push(ValueMatch {
                kind,
                name,
                value: m.value.clone(),
            });
        }
    }
    Ok(out)
}

fn http_matches(list: &[HttpMatchModel], field: &str) -> Result<Vec<HttpMatch>, Problem> {
    if list.is_empty() {
        return Ok(vec![HttpMatch {
            path: Some(PathMatch::PathPrefix("/".into())),
            ..Default::default()
        }]);
    }
    list.iter()
        .enumerate()
        .map(|(j, m)| {
            let f = format!("{field}.matches[{j}]");
            let (type_, value) = match &m.path {
                None => ("PathPrefix", "/"),
                Some(p) => (
                    p.type_.as_deref().unwrap_or("PathPrefix"),
                    p.value.as_deref().unwrap_or("/"),
                ),
            };
            let vfield = format!("{f}.path.value");
            let path = match type_ {
                "Exact" => {
                    check_path(value, &vfield)?;
                    PathMatch::Exact(value.to_owned())
                }
                "PathPrefix" => {
                    check_path(value, &vfield)?;
                    PathMatch::PathPrefix(value.to_owned())
                }
                "RegularExpression" => {
                    check_regex(value, &vfield)?;
                    PathMatch::RegularExpression(value.to_owned())
                }
                other => {
                    return Err(unsupported(format!(
                        "{f}.path.type: {other:?} is not supported"
                    )))
                }
            };
            Ok(HttpMatch {
                path: Some(path),
                method: m.method.as_ref().map(|s| s.to_ascii_uppercase()),
                headers: value_matches(&m.headers, &format!("{f}.headers"), true)?,
                query_params: value_matches(&m.query_params, &format!("{f}.queryParams"), false)?,
            })
        })
        .collect()
}

fn grpc_matches(list: &[GrpcMatchModel], field: &str) -> Result<Vec<HttpMatch>, Problem> {
    if list.is_empty() {
        return Ok(vec![HttpMatch::default()]);
    }
    list.iter()
        .enumerate()
        .map(|(j, m)| {
            let f = format!("{field}.matches[{j}]");
            let path = match &m.method {
                None => None,
                Some(method) => grpc_path(method, &format!("{f}.method"))?,
            };
            Ok(HttpMatch {
                path,
                method: None,
                headers: value_matches(&m.headers, &format!("{f}.headers"), true)?,
                query_params: Vec::new(),
            })
        })
        .collect()
}

/// A gRPC method match as a path match on `/<service>/<method>`.
fn grpc_path(m: &super::model::GrpcMethodModel, field: &str) -> Result<Option<PathMatch>, Problem> {
    let service = m.service.as_deref().filter(|s| !s.is_empty());
    let method = m.method.as_deref().filter(|s| !s.is_empty());
    match m.type_.as_deref().unwrap_or("Exact") {
        "Exact" => {
            for (name, v) in [("service", service), ("method", method)] {
                if let Some(v) = v {
                    if v.contains('/') || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                        return Err(unsupported(format!(
                            "{field}.{name} {v:?} is not a valid gRPC name"
                        )));
                    }
                }
            }
            Ok(match (service, method) {
                (Some(s), Some(m)) => Some(PathMatch::Exact(format!("/{s}/{m}"))),
                (Some(s), None) => Some(PathMatch::PathPrefix(format!("/{s}"))),
                (None, Some(m)) => Some(PathMatch::RegularExpression(format!(
                    "/[^/]+/{}",
                    regex::escape(m)
                ))),
                (None, None) => None,
            })
        }
        "RegularExpression" => {
            if let Some(s) = service {
                check_regex(s, &format!("{field}.service"))?;
            }
            if let Some(m) = method {
                check_regex(m, &format!("{field}.method"))?;
            }
            let re = format!(
                "/(?:{})/(?:{})",
                service.unwrap_or("[^/]+"),
                method.unwrap_or("[^/]+")
            );
            check_regex(&re, field)?;
            Ok(Some(PathMatch::RegularExpression(re)))
        }
        other => Err(unsupported(format!(
            "{field}.type: {other:?} is not supported"
        ))),
    }
}

fn timeouts(t: Option<&TimeoutsModel>, field: &str) -> Result<Timeouts, Problem> {
    let Some(t) = t else {
        return Ok(Timeouts::default());
    };
    let parse = |v: Option<&str>, name: &str| -> Result<Option<u64>, Problem> {
        let Some(v) = v else {
            return Ok(None);
        };
        let d = gateway_api::Duration::from_str(v)
            .map_err(|e| unsupported(format!("{field}.timeouts.{name} {v:?}: {e}")))?;
        // Zero disables the timeout.
        Ok((!d.is_zero()).then(|| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    };
    let request_ms = parse(t.request.as_deref(), "request")?;
    let backend_request_ms = parse(t.backend_request.as_deref(), "backendRequest")?;
    if let (Some(r), Some(b)) = (request_ms, backend_request_ms) {
        if b > r {
            return Err(unsupported(format!(
                "{field}.timeouts.backendRequest must not be longer than timeouts.request"
            )));
        }
    }
    Ok(Timeouts {
        request_ms,
        backend_request_ms,
    })
}

/// A match's place in Gateway API precedence (smaller first; see [`precedence`]): path kind, path
/// length (longer first), no method, header count and query parameter count (more first).
pub(crate) type MatchPrecedence = (
    u8,
    std::cmp::Reverse<usize>,
    bool,
    std::cmp::Reverse<usize>,
    std::cmp::Reverse<usize>,
);

/// Sort key of a route entry inside a virtual host, by Gateway API precedence (smaller first):
/// Exact path, then RegularExpression, then PathPrefix, then no path condition (longer values first
/// within each; the regular expression's place is implementation-specific and follows Envoy
/// Gateway, so that a `PathPrefix: /` fallback does not shadow every regular expression); then a
/// method match; then more header matches; then more query parameter matches. GRPCRoutes keep
/// regular expressions after prefixes: their method-only matches are regular expressions and the
/// GRPCRoute rules rank a matching service above a matching method. Ties are broken by the caller
/// (oldest route, namespace/name, rule order, match order).
pub(crate) fn precedence(m: &HttpMatch, kind: RouteKind) -> MatchPrecedence {
    let (rank, len) = match &m.path {
        Some(PathMatch::Exact(v)) => (0, v.len()),
        Some(PathMatch::RegularExpression(v)) if kind == RouteKind::Http => (1, v.len()),
        Some(PathMatch::PathPrefix(v)) => (2, v.trim_end_matches('/').len()),
        Some(PathMatch::RegularExpression(v)) => (3, v.len()),
        None => (4, 0),
    };
    (
        rank,
        std::cmp::Reverse(len),
        m.method.is_none(),
        std::cmp::Reverse(m.headers.len()),
        std::cmp::Reverse(m.query_params.len()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_beats_regex_and_regex_beats_prefix_in_http_routes() {
        let m = |p: PathMatch| HttpMatch {
            path: Some(p),
            ..Default::default()
        };
        let p = |p: PathMatch| precedence(&m(p), RouteKind::Http);
        let exact = p(PathMatch::Exact("/a".into()));
        let regex = p(PathMatch::RegularExpression("/a/.*/c/d/e".into()));
        let long_prefix = p(PathMatch::PathPrefix("/a/b/c".into()));
        let short_prefix = p(PathMatch::PathPrefix("/a".into()));
        let catch_all = p(PathMatch::PathPrefix("/".into()));
        assert!(exact < regex);
        assert!(
            regex < long_prefix,
            "a regular expression must not hide behind a prefix"
        );
        assert!(long_prefix < short_prefix);
        assert!(short_prefix < catch_all);
        assert!(catch_all < precedence(&HttpMatch::default(), RouteKind::Http));
    }

    #[test]
    fn grpc_service_prefix_beats_method_only_regex() {
        let m = |p: PathMatch| HttpMatch {
            path: Some(p),
            ..Default::default()
        };
        let service = precedence(&m(PathMatch::PathPrefix("/svc".into())), RouteKind::Grpc);
        let method = precedence(
            &m(PathMatch::RegularExpression("/[^/]+/Say".into())),
            RouteKind::Grpc,
        );
        assert!(service < method);
    }

    #[test]
    fn trailing_slash_of_a_prefix_does_not_count() {
        let m = |v: &str| HttpMatch {
            path: Some(PathMatch::PathPrefix(v.into())),
            method: Some("GET".into()),
            ..Default::default()
        };
        let a = precedence(&m("/foo/"), RouteKind::Http);
        let b = precedence(&m("/foo"), RouteKind::Http);
        assert_eq!(a, b);
    }

    #[test]
    fn method_then_headers_then_query_break_path_ties() {
        let base = HttpMatch {
            path: Some(PathMatch::PathPrefix("/x".into())),
            ..Default::default()
        };
        let with_method = HttpMatch {
            method: Some("GET".into()),
            ..base.clone()
        };
        let header = ValueMatch {
            kind: MatchType::Exact,
            name: "a".into(),
            value: "b".into(),
        };
        let with_headers = HttpMatch {
            headers: vec![header.clone(), header.clone()],
            ..base.clone()
        };
        let with_query = HttpMatch {
            query_params: vec![header],
            ..base.clone()
        };
        let p = |m: &HttpMatch| precedence(m, RouteKind::Http);
        assert!(p(&with_method) < p(&with_headers));
        assert!(p(&with_headers) < p(&with_query));
        assert!(p(&with_query) < p(&base));
    }

    #[test]
    fn regex_validation_matches_the_router() {
        assert!(check_regex("/api/v[0-9]+", "f").is_ok());
        let err = check_regex("/api/(unclosed", "spec.rules[0].matches[0].path.value").unwrap_err();
        assert_eq!(err.reason, REASON_UNSUPPORTED_VALUE);
        assert!(
            err.message.contains("spec.rules[0].matches[0].path.value"),
            "{}",
            err.message
        );
        assert!(check_regex(&"a".repeat(MAX_REGEX_LEN + 1), "f").is_err());
    }

    #[test]
    fn durations_follow_gep_2257() {
        let t = TimeoutsModel {
            request: Some("1m30s".into()),
            backend_request: Some("500ms".into()),
        };
        let got = timeouts(Some(&t), "spec.rules[0]").unwrap();
        assert_eq!(got.request_ms, Some(90_000));
        assert_eq!(got.backend_request_ms, Some(500));
        let zero = TimeoutsModel {
            request: Some("0s".into()),
            backend_request: None,
        };
        assert_eq!(timeouts(Some(&zero), "f").unwrap().request_ms, None);
        let bad = TimeoutsModel {
            request: Some("ten seconds".into()),
            backend_request: None,
        };
        assert!(timeouts(Some(&bad), "f").is_err());
    }

    #[test]
    fn mirror_fraction_becomes_a_percentage() {
        let f = super::super::model::FractionModel {
            numerator: 1,
            denominator: Some(4),
        };
        assert_eq!(mirror_percent(None, Some(&f), "f").unwrap(), 25);
        assert_eq!(mirror_percent(None, None, "f").unwrap(), 100);
        assert!(mirror_percent(Some(101), None, "f").is_err());
    }
}
