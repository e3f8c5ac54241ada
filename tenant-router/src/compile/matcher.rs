//! Request matching with Gateway API semantics: path (exact, element-wise prefix, anchored regular
//! expression), method, headers (case-insensitive names) and query parameters. Every condition of a
//! match must hold.

use crate::error::CompileError;
use bulkhead_pathnorm::hex_digit;
use bulkhead_snapshot::regex::anchored_regex;
use bulkhead_snapshot::{HttpMatch, MatchType, PathMatch, ValueMatch};
use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

/// The request facts a match looks at.
#[derive(Debug)]
pub(crate) struct RequestFacts<'a> {
    /// Request method.
    pub(crate) method: &'a Method,
    /// Path, without the query.
    pub(crate) path: &'a str,
    /// Raw query string, without `?`.
    pub(crate) query: Option<&'a str>,
    /// Request headers.
    pub(crate) headers: &'a HeaderMap,
}

/// A compiled path condition.
#[derive(Debug)]
pub(crate) enum PathCondition {
    Exact(String),
    /// The prefix without a trailing slash (`""` for `/`, which matches every path).
    Prefix(String),
    Regex(Regex),
}

impl PathCondition {
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => p == path,
            Self::Prefix(p) => prefix_matches(p, path),
            Self::Regex(re) => re.is_match(path),
        }
    }
}

/// Element-wise prefix match: `p` (no trailing slash) matches `p`, `p/` and `p/...`, never `p...`.
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[derive(Debug)]
enum ValueCondition {
    Exact(String),
    Regex(Regex),
}

impl ValueCondition {
    fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(v) => v == value,
            Self::Regex(re) => re.is_match(value),
        }
    }
}

/// A compiled [`HttpMatch`].
#[derive(Debug)]
pub(crate) struct CompiledMatch {
    pub(crate) path: Option<PathCondition>,
    method: Option<Method>,
    headers: Box<[(HeaderName, ValueCondition)]>,
    query: Box<[(String, ValueCondition)]>,
}

impl CompiledMatch {
    /// Compiles a match; `route` names the route in error messages.
    pub(crate) fn compile(m: &HttpMatch, route: &str) -> Result<Self, CompileError> {
        let path = match &m.path {
            None => None,
            Some(PathMatch::Exact(p)) => Some(PathCondition::Exact(p.clone())),
            Some(PathMatch::PathPrefix(p)) => {
                Some(PathCondition::Prefix(p.trim_end_matches('/').to_owned()))
            }
            Some(PathMatch::RegularExpression(re)) => {
                Some(PathCondition::Regex(anchored(re, route, "match.path")?))
            }
        };
        let method = match &m.method {
            None => None,
            Some(name) => {
                Some(
                    Method::from_bytes(name.as_bytes()).map_err(|e| CompileError::Route {
                        route: route.to_owned(),
                        field: "match.method".into(),
                        reason: e.to_string(),
                    })?,
                )
            }
        };
        let mut headers = Vec::with_capacity(m.headers.len());
        for (i, h) in m.headers.iter().enumerate() {
            let field = format!("match.headers[{i}]");
            let name =
                HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| CompileError::Route {
                    route: route.to_owned(),
                    field: field.clone(),
                    reason: format!("header name {:?}: {e}", h.name),
                })?;
            // Gateway API: only the first condition for a given name counts.
            if headers.iter().any(|(n, _)| *n == name) {
                continue;
            }
            headers.push((name, value_condition(h, route, &field)?));
        }
        let mut query = Vec::with_capacity(m.query_params.len());
        for (i, q) in m.query_params.iter().enumerate() {
            if query.iter().any(|(n, _)| *n == q.name) {
                continue;
            }
            let field = format!("match.queryParams[{i}]");
            query.push((q.name.clone(), value_condition(q, route, &field)?));
        }
        Ok(Self {
            path,
            method,
            headers: headers.into_boxed_slice(),
            query: query.into_boxed_slice(),
        })
    }

    /// Whether the request satisfies every condition.
    pub(crate) fn matches(&self, req: &RequestFacts<'_>) -> bool {
        if let Some(p) = &self.path {
            if !p.matches(req.path) {
                return false;
            }
        }
        if let Some(m) = &self.method {
            if m != req.method {
                return false;
            }
        }
        for (name, cond) in self.headers.iter() {
            let mut values = req.headers.get_all(name).iter();
            let Some(first) = values.next() else {
                return false;
            };
            let Ok(first) = first.to_str() else {
                return false;
            };
            let joined;
            let value = match values.next() {
                None => first,
                Some(second) => {
                    let mut s = format!("{first},{}", second.to_str().unwrap_or_default());
                    for v in values {
                        s.push(',');
                        s.push_str(v.to_str().unwrap_or_default());
                    }
                    joined = s;
                    &joined
                }
            };
            if !cond.matches(value) {
                return false;
            }
        }
        for (name, cond) in self.query.iter() {
            match query_param(req.query, name) {
                Some(v) if cond.matches(&v) => {}
                _ => return false,
            }
        }
        true
    }
}

fn value_condition(
    v: &ValueMatch,
    route: &str,
    field: &str,
) -> Result<ValueCondition, CompileError> {
    Ok(match v.kind {
        MatchType::Exact => ValueCondition::Exact(v.value.clone()),
        MatchType::RegularExpression => ValueCondition::Regex(anchored(&v.value, route, field)?),
    })
}

/// Compiles `re` so that it must match the whole input, within the snapshot contract's limits.
fn anchored(re: &str, route: &str, field: &str) -> Result<Regex, CompileError> {
    anchored_regex(re).map_err(|e| CompileError::Regex {
        route: route.to_owned(),
        field: field.to_owned(),
        pattern: re.to_owned(),
        reason: e.to_string(),
    })
}

/// The first value of query parameter `name`, percent-decoded (`+` is a space).
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2]))
            {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn facts<'a>(
        method: &'a Method,
        path: &'a str,
        query: Option<&'a str>,
        headers: &'a HeaderMap,
    ) -> RequestFacts<'a> {
        RequestFacts {
            method,
            path,
            query,
            headers,
        }
    }

    fn compile(m: HttpMatch) -> CompiledMatch {
        CompiledMatch::compile(&m, "HTTPRoute acme/web rule 0").expect("valid match")
    }

    #[test]
    fn prefix_is_element_wise() {
        let m = compile(HttpMatch {
            path: Some(PathMatch::PathPrefix("/foo/".into())),
            ..Default::default()
        });
        let h = HeaderMap::new();
        let get = Method::GET;
        for p in ["/foo", "/foo/", "/foo/bar"] {
            assert!(m.matches(&facts(&get, p, None, &h)), "{p}");
        }
        assert!(!m.matches(&facts(&get, "/foobar", None, &h)));
        let root = compile(HttpMatch {
            path: Some(PathMatch::PathPrefix("/".into())),
            ..Default::default()
        });
        assert!(root.matches(&facts(&get, "/anything", None, &h)));
    }

    #[test]
    fn regex_is_anchored_and_exact_is_exact() {
        let m = compile(HttpMatch {
            path: Some(PathMatch::RegularExpression("/v[0-9]+".into())),
            ..Default::default()
        });
        let h = HeaderMap::new();
        let get = Method::GET;
        assert!(m.matches(&facts(&get, "/v12", None, &h)));
        assert!(!m.matches(&facts(&get, "/v12/x", None, &h)));
        assert!(!m.matches(&facts(&get, "/x/v12", None, &h)));
        let e = compile(HttpMatch {
            path: Some(PathMatch::Exact("/a".into())),
            ..Default::default()
        });
        assert!(!e.matches(&facts(&get, "/a/", None, &h)));
    }

    #[test]
    fn method_headers_and_query_must_all_hold() {
        let m = compile(HttpMatch {
            method: Some("POST".into()),
            headers: vec![ValueMatch {
                kind: MatchType::Exact,
                name: "x-env".into(),
                value: "canary".into(),
            }],
            query_params: vec![ValueMatch {
                kind: MatchType::RegularExpression,
                name: "v".into(),
                value: "[0-9]+".into(),
            }],
            ..Default::default()
        });
        let mut h = HeaderMap::new();
        h.insert("X-Env", HeaderValue::from_static("canary"));
        let post = Method::POST;
        assert!(m.matches(&facts(&post, "/", Some("a=1&v=42"), &h)));
        assert!(!m.matches(&facts(&post, "/", Some("v=x"), &h)));
        assert!(!m.matches(&facts(&Method::GET, "/", Some("v=1"), &h)));
        assert!(!m.matches(&facts(&post, "/", Some("v=1"), &HeaderMap::new())));
    }

    #[test]
    fn bad_regex_names_route_and_field() {
        let err = CompiledMatch::compile(
            &HttpMatch {
                path: Some(PathMatch::RegularExpression("(".into())),
                ..Default::default()
            },
            "HTTPRoute acme/web rule 2",
        )
        .expect_err("unbalanced parenthesis");
        let msg = err.to_string();
        assert!(
            msg.contains("acme/web rule 2") && msg.contains("match.path"),
            "{msg}"
        );
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            query_param(Some("q=a%20b+c&x"), "q").as_deref(),
            Some("a b c")
        );
        assert_eq!(query_param(Some("x"), "x").as_deref(), Some(""));
        assert_eq!(query_param(Some("q=%zz%4"), "q").as_deref(), Some("%zz%4"));
        assert_eq!(query_param(None, "q"), None);
    }
}
