//! Gateway API HTTPRoute filters, compiled (header names and values validated once) and applied:
//! header modifiers, redirects (with the Gateway API port rules), URL rewrites, mirrors and CORS
//! (applied by [`crate::http::cors`]).

use crate::balance::CompiledBackend;
use crate::error::CompileError;
use crate::http::cors::CompiledCors;
use bulkhead_hostmatch::normalize_host;
use bulkhead_snapshot::redirect::{effective_redirect_status, REDIRECT_STATUS_CODES};
use bulkhead_snapshot::SnapshotError;
use bulkhead_snapshot::{HeaderModifier, HttpFilter, PathModifier, Redirect, UrlRewrite};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A compiled filter.
#[derive(Debug)]
pub(crate) enum CompiledFilter {
    RequestHeaders(CompiledHeaderModifier),
    ResponseHeaders(CompiledHeaderModifier),
    Redirect(CompiledRedirect),
    Rewrite(CompiledRewrite),
    Mirror {
        backend: Arc<CompiledBackend>,
        percent: u32,
    },
    Cors(Arc<CompiledCors>),
}

/// Set / add / remove header edits with validated names and values.
#[derive(Debug, Default)]
pub(crate) struct CompiledHeaderModifier {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl CompiledHeaderModifier {
    /// Applies the edits: set (replacing), then add (appending), then remove.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
        for n in &self.remove {
            headers.remove(n);
        }
    }
}

/// A path change.
#[derive(Debug, Clone)]
pub(crate) enum PathChange {
    Full(String),
    /// Replaces the route's matched prefix (the prefix without trailing slash is known from the match).
    Prefix(String),
}

/// A compiled redirect.
#[derive(Debug)]
pub(crate) struct CompiledRedirect {
    pub(crate) scheme: Option<String>,
    pub(crate) hostname: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) path: Option<PathChange>,
    pub(crate) status: StatusCode,
}

/// A compiled URL rewrite.
#[derive(Debug)]
pub(crate) struct CompiledRewrite {
    pub(crate) hostname: Option<HeaderValue>,
    pub(crate) path: Option<PathChange>,
}

/// The well-known port of a scheme.
pub(crate) fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
    }
}

/// Inputs of a redirect that come from the request and its virtual host.
#[derive(Debug)]
pub(crate) struct RedirectInput<'a> {
    /// `http` or `https`: the listener's scheme.
    pub(crate) scheme: &'a str,
    /// The request's normalised host (port removed).
    pub(crate) host: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    /// The Gateway listener's port (not the router's real listen port).
    pub(crate) listener_port: u16,
    /// The matched path prefix (no trailing slash), for `ReplacePrefixMatch`.
    pub(crate) matched_prefix: Option<&'a str>,
}

impl CompiledRedirect {
    /// The `Location` value, following the Gateway API rules: without an explicit port, a redirect
    /// that sets a scheme uses that scheme's well-known port and one that does not uses the
    /// listener's port; a port that is the scheme's default is left out.
    pub(crate) fn location(&self, input: &RedirectInput<'_>) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(input.scheme);
        let host = self.hostname.as_deref().unwrap_or(input.host);
        let port = match (self.port, &self.scheme) {
            (Some(p), _) => p,
            (None, Some(s)) => default_port(s),
            (None, None) => input.listener_port,
        };
        let path = match &self.path {
            None => input.path.to_owned(),
            Some(change) => change.apply(input.path, input.matched_prefix),
        };
        let mut out = format!("{scheme}://{host}");
        if port != default_port(scheme) {
            out.push(':');
            out.push_str(&port.to_string());
        }
        out.push_str(&path);
        if let Some(q) = input.query {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

impl PathChange {
    /// The new path for `path`, given the matched prefix (no trailing slash).
    pub(crate) fn apply(&self, path: &str, matched_prefix: Option<&str>) -> String {
        match self {
            Self::Full(p) => p.clone(),
            Self::Prefix(replacement) => {
                replace_prefix(path, matched_prefix.unwrap_or(""), replacement)
            }
        }
    }
}

/// Replaces the element-wise `prefix` (no trailing slash) of `path` by `replacement`.
pub(crate) fn replace_prefix(path: &str, prefix: &str, replacement: &str) -> String {
    let rest = path.strip_prefix(prefix).unwrap_or(path);
    let mut out = String::with_capacity(replacement.len() + rest.len());
    out.push_str(replacement.trim_end_matches('/'));
    out.push_str(rest);
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    out
}

/// Compiles the filters of a rule or of one of its backends.
pub(crate) fn compile_filters(
    filters: &[HttpFilter],
    route: &str,
    field: &str,
    has_prefix_match: bool,
    backends: &BTreeMap<String, Arc<CompiledBackend>>,
) -> Result<Vec<CompiledFilter>, CompileError> {
    let mut out = Vec::with_capacity(filters.len());
    for (i, f) in filters.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let err = |reason: String| CompileError::Route {
            route: route.to_owned(),
            field: field.clone(),
            reason,
        };
        out.push(match f {
            HttpFilter::RequestHeaderModifier(m) => {
                CompiledFilter::RequestHeaders(header_modifier(m).map_err(err)?)
            }
            HttpFilter::ResponseHeaderModifier(m) => {
                CompiledFilter::ResponseHeaders(header_modifier(m).map_err(err)?)
            }
            HttpFilter::RequestRedirect(r) => {
                CompiledFilter::Redirect(redirect(r, has_prefix_match).map_err(err)?)
            }
            HttpFilter::UrlRewrite(r) => {
                CompiledFilter::Rewrite(rewrite(r, has_prefix_match).map_err(err)?)
            }
            HttpFilter::RequestMirror(m) => {
                let backend = backends.get(&m.backend).ok_or_else(|| {
                    CompileError::from(SnapshotError::DanglingBackend {
                        route: route.to_owned(),
                        id: m.backend.clone(),
                    })
                })?;
                CompiledFilter::Mirror {
                    backend: Arc::clone(backend),
                    percent: m.percent.min(100),
                }
            }
            HttpFilter::Cors(c) => {
                CompiledFilter::Cors(Arc::new(CompiledCors::compile(c).map_err(err)?))
            }
        });
    }
    Ok(out)
}

fn header_pair((name, value): &(String, String)) -> Result<(HeaderName, HeaderValue), String> {
    let n = HeaderName::from_bytes(name.as_bytes())
        .map_err(|e| format!("header name {name:?}: {e}"))?;
    let v = HeaderValue::from_str(value).map_err(|e| format!("header {name:?} value: {e}"))?;
    Ok((n, v))
}

fn header_modifier(m: &HeaderModifier) -> Result<CompiledHeaderModifier, String> {
    Ok(CompiledHeaderModifier {
        set: m.set.iter().map(header_pair).collect::<Result<_, _>>()?,
        add: m.add.iter().map(header_pair).collect::<Result<_, _>>()?,
        remove: m
            .remove
            .iter()
            .map(|n| {
                HeaderName::from_bytes(n.as_bytes()).map_err(|e| format!("header name {n:?}: {e}"))
            })
            .collect::<Result<_, _>>()?,
    })
}

fn path_change(p: &PathModifier, has_prefix_match: bool) -> Result<PathChange, String> {
    let check = |v: &str| {
        if v.starts_with('/')
            && !v.contains(['?', '#', ' '])
            && !v.bytes().any(|b| b.is_ascii_control())
        {
            Ok(())
        } else {
            Err(format!(
                "path {v:?} must start with '/' and hold no query, fragment or space"
            ))
        }
    };
    match p {
        PathModifier::ReplaceFullPath(v) => {
            check(v)?;
            Ok(PathChange::Full(v.clone()))
        }
        PathModifier::ReplacePrefixMatch(v) => {
            check(v)?;
            if !has_prefix_match {
                return Err("ReplacePrefixMatch needs a PathPrefix match".into());
            }
            Ok(PathChange::Prefix(v.clone()))
        }
    }
}

fn redirect(r: &Redirect, has_prefix_match: bool) -> Result<CompiledRedirect, String> {
    let scheme = match r.scheme.as_deref() {
        None => None,
        Some(s @ ("http" | "https")) => Some(s.to_owned()),
        Some(other) => return Err(format!("scheme {other:?} is neither http nor https")),
    };
    let hostname = r
        .hostname
        .as_deref()
        .map(|h| normalize_host(h).map_err(|e| format!("hostname {h:?}: {e}")))
        .transpose()?;
    let status = effective_redirect_status(r.status_code)
        .ok_or_else(|| {
            format!(
                "status code {} is not a redirect status (one of {REDIRECT_STATUS_CODES:?})",
                r.status_code
            )
        })
        .and_then(|c| StatusCode::from_u16(c).map_err(|e| e.to_string()))?;
    if r.port == Some(0) {
        return Err("port 0".into());
    }
    Ok(CompiledRedirect {
        scheme,
        hostname,
        port: r.port,
        path: r
            .path
            .as_ref()
            .map(|p| path_change(p, has_prefix_match))
            .transpose()?,
        status,
    })
}

fn rewrite(r: &UrlRewrite, has_prefix_match: bool) -> Result<CompiledRewrite, String> {
    let hostname = r
        .hostname
        .as_deref()
        .map(|h| {
            let n = normalize_host(h).map_err(|e| format!("hostname {h:?}: {e}"))?;
            HeaderValue::from_str(&n).map_err(|e| e.to_string())
        })
        .transpose()?;
    Ok(CompiledRewrite {
        hostname,
        path: r
            .path
            .as_ref()
            .map(|p| path_change(p, has_prefix_match))
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(scheme: &'a str, listener_port: u16) -> RedirectInput<'a> {
        RedirectInput {
            scheme,
            host: "a.acme.test",
            path: "/old/x",
            query: Some("q=1"),
            listener_port,
            matched_prefix: Some("/old"),
        }
    }

    fn redir(scheme: Option<&str>, port: Option<u16>) -> CompiledRedirect {
        CompiledRedirect {
            scheme: scheme.map(str::to_owned),
            hostname: None,
            port,
            path: None,
            status: StatusCode::FOUND,
        }
    }

    #[test]
    fn redirect_to_https_uses_443_and_omits_it() {
        assert_eq!(
            redir(Some("https"), None).location(&input("http", 80)),
            "https://a.acme.test/old/x?q=1"
        );
        // The scheme's well-known port wins over the listener's port when a scheme is set.
        assert_eq!(
            redir(Some("https"), None).location(&input("http", 8080)),
            "https://a.acme.test/old/x?q=1"
        );
    }

    #[test]
    fn redirect_without_scheme_uses_listener_port_unless_default() {
        assert_eq!(
            redir(None, None).location(&input("http", 80)),
            "http://a.acme.test/old/x?q=1"
        );
        assert_eq!(
            redir(None, None).location(&input("http", 8080)),
            "http://a.acme.test:8080/old/x?q=1"
        );
        assert_eq!(
            redir(None, None).location(&input("https", 443)),
            "https://a.acme.test/old/x?q=1"
        );
        assert_eq!(
            redir(None, Some(8443)).location(&input("https", 443)),
            "https://a.acme.test:8443/old/x?q=1"
        );
        assert_eq!(
            redir(Some("http"), Some(80)).location(&input("https", 443)),
            "http://a.acme.test/old/x?q=1"
        );
    }

    #[test]
    fn redirect_path_modifiers() {
        let mut r = redir(None, None);
        r.path = Some(PathChange::Prefix("/new".into()));
        r.hostname = Some("b.acme.test".into());
        assert_eq!(
            r.location(&input("http", 80)),
            "http://b.acme.test/new/x?q=1"
        );
        r.path = Some(PathChange::Full("/".into()));
        assert_eq!(r.location(&input("http", 80)), "http://b.acme.test/?q=1");
    }

    #[test]
    fn prefix_replacement_keeps_one_slash() {
        assert_eq!(replace_prefix("/foo/bar", "/foo", "/baz"), "/baz/bar");
        assert_eq!(replace_prefix("/foo/bar", "/foo", "/"), "/bar");
        assert_eq!(replace_prefix("/foo", "/foo", "/"), "/");
        assert_eq!(replace_prefix("/foo/", "/foo", "/baz/"), "/baz/");
        assert_eq!(replace_prefix("/foo", "/foo", "/baz"), "/baz");
        assert_eq!(replace_prefix("/x", "", "/api"), "/api/x");
    }

    #[test]
    fn header_modifier_sets_adds_and_removes() {
        let m = header_modifier(&HeaderModifier {
            set: vec![("x-set".into(), "1".into())],
            add: vec![("x-add".into(), "2".into())],
            remove: vec!["x-gone".into()],
        })
        .expect("valid");
        let mut h = HeaderMap::new();
        h.insert("x-set", HeaderValue::from_static("old"));
        h.insert("x-add", HeaderValue::from_static("1"));
        h.insert("x-gone", HeaderValue::from_static("x"));
        m.apply(&mut h);
        assert_eq!(h.get("x-set").map(|v| v.as_bytes()), Some(&b"1"[..]));
        assert_eq!(h.get_all("x-add").iter().count(), 2);
        assert!(!h.contains_key("x-gone"));
    }

    #[test]
    fn invalid_filters_are_refused() {
        assert!(header_modifier(&HeaderModifier {
            set: vec![("bad name".into(), "v".into())],
            ..Default::default()
        })
        .is_err());
        assert!(redirect(
            &Redirect {
                scheme: Some("ftp".into()),
                ..Default::default()
            },
            true
        )
        .is_err());
        assert!(redirect(
            &Redirect {
                status_code: 200,
                ..Default::default()
            },
            true
        )
        .is_err());
        let prefix = Redirect {
            path: Some(PathModifier::ReplacePrefixMatch("/x".into())),
            status_code: 301,
            ..Default::default()
        };
        assert!(redirect(&prefix, false).is_err());
        assert!(redirect(&prefix, true).is_ok());
    }
}
