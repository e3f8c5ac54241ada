//! CORS (Gateway API `HTTPCORSFilter`): which values a [`Cors`] filter may carry and how a request's
//! `Origin` is matched against its `allow_origins`. The translator refuses a filter that
//! [`Cors::check`] refuses, and the router refuses a snapshot that carries one, so both sides read
//! origins the same way.
//!
//! Origin patterns (the field docs of `HTTPCORSFilter.allowOrigins`):
//!
//! | pattern | matches |
//! |---|---|
//! | `*` | every origin |
//! | `https://www.foo.com` | that scheme and host, port 443 (the scheme's default) written or not |
//! | `https://*.bar.com` | any host ending in `.bar.com`, any number of labels (`a.b.bar.com`), port 443 |
//! | `http://*:8080` | any host over `http` on port 8080 |
//!
//! Schemes are `http` and `https`; host and scheme compare case-insensitively.

use crate::schema::Cors;

/// Most entries of `allow_origins`, `allow_headers` and `expose_headers` (the CRD's `MaxItems`).
pub const MAX_CORS_LIST: usize = 64;
/// Most entries of `allow_methods` (the CRD's `MaxItems`).
pub const MAX_CORS_METHODS: usize = 9;
/// `Access-Control-Max-Age` when the route gives none, in seconds (the CRD's default).
pub const DEFAULT_CORS_MAX_AGE: u32 = 5;
/// The value that stands for "any" in origins, methods and headers.
pub const WILDCARD: &str = "*";

/// The host part of an origin pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`: any host.
    Any,
    /// `*.bar.com`: hosts ending in this suffix (kept with its leading dot, lower case).
    Suffix(String),
    /// One host name (lower case).
    Exact(String),
}

/// A parsed `allow_origins` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// `*`: every origin.
    Any,
    /// `scheme://host[:port]`, the port made explicit.
    Origin {
        /// `true` for `https`, `false` for `http`.
        https: bool,
        /// The host part.
        host: HostPattern,
        /// The port (the scheme's default when the pattern gives none).
        port: u16,
    },
}

/// A request's `Origin`, parsed (`scheme://host[:port]`, the port made explicit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    /// `true` for `https`, `false` for `http`.
    pub https: bool,
    /// The host as sent.
    pub host: &'a str,
    /// The port (the scheme's default when the origin gives none).
    pub port: u16,
}

fn default_port(https: bool) -> u16 {
    if https {
        443
    } else {
        80
    }
}

/// Splits `scheme://rest` (scheme `http` or `https`, any case) into `(https, rest)`.
fn split_scheme(value: &str) -> Option<(bool, &str)> {
    let (scheme, rest) = value.split_once("://")?;
    if scheme.eq_ignore_ascii_case("https") {
        Some((true, rest))
    } else if scheme.eq_ignore_ascii_case("http") {
        Some((false, rest))
    } else {
        None
    }
}

/// Splits `host[:port]` into the host and the port (the scheme's default when absent).
fn split_port(rest: &str, https: bool) -> Option<(&str, u16)> {
    match rest.rsplit_once(':') {
        Some((host, port)) => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
            Some((host, port))
        }
        None => Some((rest, default_port(https))),
    }
}

/// Whether `host` is a DNS name or IPv4 address as an origin carries it: labels of letters,
/// digits, `-` and `_`, separated by single dots.
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl<'a> Origin<'a> {
    /// Parses a serialized origin (`https://a.example`, `http://a.example:8080`); `None` for
    /// anything else (`null`, a path, another scheme, a bad port).
    pub fn parse(value: &'a str) -> Option<Self> {
        let (https, rest) = split_scheme(value)?;
        let (host, port) = split_port(rest, https)?;
        is_host(host).then_some(Self { https, host, port })
    }
}

impl OriginPattern {
    /// Parses an `allow_origins` entry.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value == WILDCARD {
            return Ok(Self::Any);
        }
        let bad = || {
            format!(
                "origin {value:?} is not \"*\" or scheme://host[:port] with scheme http or https"
            )
        };
        let (https, rest) = split_scheme(value).ok_or_else(bad)?;
        let (host, port) = split_port(rest, https).ok_or_else(bad)?;
        let host = host.to_ascii_lowercase();
        let host = if host == WILDCARD {
            HostPattern::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if !is_host(suffix) {
                return Err(bad());
            }
            HostPattern::Suffix(format!(".{suffix}"))
        } else if is_host(&host) {
            HostPattern::Exact(host)
        } else {
            return Err(bad());
        };
        Ok(Self::Origin { https, host, port })
    }

    /// Whether `origin` is allowed by this pattern.
    pub fn matches(&self, origin: &Origin<'_>) -> bool {
        match self {
            Self::Any => true,
            Self::Origin { https, host, port } => {
                *https == origin.https && *port == origin.port && host.matches(origin.host)
            }
        }
    }
}

impl HostPattern {
    /// Whether `host` (any case) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(name) => host.eq_ignore_ascii_case(name),
            Self::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
            }
        }
    }
}

/// Whether `value` is an RFC 9110 token (a method or a header name).
pub fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Refuses `*` next to other entries (the CRD's rule for origins and methods).
fn wildcard_alone(field: &str, list: &[String]) -> Result<(), String> {
    if list.len() > 1 && list.iter().any(|v| v == WILDCARD) {
        return Err(format!(
            "{field}: \"*\" cannot be combined with other values"
        ));
    }
    Ok(())
}

fn at_most(field: &str, list: &[String], max: usize) -> Result<(), String> {
    if list.len() > max {
        return Err(format!("{field}: {} entries, at most {max}", list.len()));
    }
    Ok(())
}

fn tokens(field: &str, list: &[String]) -> Result<(), String> {
    match list.iter().find(|v| !is_token(v)) {
        Some(v) => Err(format!("{field}: {v:?} is not a valid name")),
        None => Ok(()),
    }
}

impl Cors {
    /// Checks every field: origin patterns parse, methods and header names are tokens, lists stay
    /// within the CRD's sizes, `*` is alone among origins and among methods, `max_age` is at least 1.
    ///
    /// # Errors
    /// The first problem, naming its field.
    pub fn check(&self) -> Result<(), String> {
        at_most("allowOrigins", &self.allow_origins, MAX_CORS_LIST)?;
        wildcard_alone("allowOrigins", &self.allow_origins)?;
        for o in &self.allow_origins {
            OriginPattern::parse(o).map_err(|e| format!("allowOrigins: {e}"))?;
        }
        at_most("allowMethods", &self.allow_methods, MAX_CORS_METHODS)?;
        wildcard_alone("allowMethods", &self.allow_methods)?;
        tokens("allowMethods", &self.allow_methods)?;
        at_most("allowHeaders", &self.allow_headers, MAX_CORS_LIST)?;
        tokens("allowHeaders", &self.allow_headers)?;
        at_most("exposeHeaders", &self.expose_headers, MAX_CORS_LIST)?;
        tokens("exposeHeaders", &self.expose_headers)?;
        if self.max_age == 0 {
            return Err("maxAge: must be at least 1 second".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn allowed(pattern: &str, origin: &str) -> bool {
        let p = OriginPattern::parse(pattern).expect("pattern");
        Origin::parse(origin).is_some_and(|o| p.matches(&o))
    }

    #[test]
    fn exact_origins_match_scheme_host_and_default_port() {
        assert!(allowed("https://www.foo.com", "https://www.foo.com"));
        assert!(allowed("https://www.foo.com", "https://WWW.Foo.com:443"));
        assert!(allowed("HTTPS://www.foo.com:443", "https://www.foo.com"));
        assert!(!allowed("https://www.foo.com", "http://www.foo.com"));
        assert!(!allowed("https://www.foo.com", "https://www.foo.com:8443"));
        assert!(!allowed("https://www.foo.com", "https://foo.com"));
        assert!(allowed("http://a.test:8080", "http://a.test:8080"));
        assert!(!allowed("http://a.test:8080", "http://a.test"));
    }

    #[test]
    fn a_wildcard_host_takes_any_number_of_labels_but_not_the_bare_suffix() {
        assert!(allowed("https://*.bar.com", "https://www.bar.com"));
        assert!(allowed("https://*.bar.com", "https://xpto.www.bar.com"));
        assert!(!allowed("https://*.bar.com", "https://bar.com"));
        assert!(!allowed("https://*.bar.com", "https://foobar.com"));
        assert!(!allowed("https://*.bar.com", "https://www.bar.com:8443"));
        assert!(allowed("http://*:8080", "http://any.host:8080"));
        assert!(!allowed("http://*:8080", "http://any.host"));
    }

    #[test]
    fn the_lone_wildcard_matches_every_origin() {
        assert!(allowed("*", "https://foobar.com:12345"));
        assert!(allowed("*", "http://a"));
    }

    #[test]
    fn malformed_origins_never_match() {
        for origin in [
            "null",
            "https://",
            "https://a.test/path",
            "ftp://a.test",
            "https://a.test:0",
            "https://a.test:99999",
            "https://a..test",
            "https://a.test:",
            "https//a.test",
            "https://a test",
        ] {
            assert_eq!(Origin::parse(origin), None, "{origin}");
        }
    }

    #[test]
    fn invalid_patterns_and_lists_are_refused() {
        for p in [
            "",
            "www.foo.com",
            "ftp://a",
            "https://a/b",
            "https://*a.com",
            "https://a.*.com",
        ] {
            assert!(OriginPattern::parse(p).is_err(), "{p}");
        }
        let mut c = Cors {
            allow_origins: vec!["*".into(), "https://a.test".into()],
            ..Cors::default()
        };
        assert!(c.check().is_err());
        c.allow_origins = vec!["https://a.test".into()];
        assert_eq!(c.check(), Ok(()));
        c.allow_methods = vec!["GET".into(), "*".into()];
        assert!(c.check().is_err());
        c.allow_methods = vec!["GE T".into()];
        assert!(c.check().is_err());
        c.allow_methods = vec![];
        c.allow_headers = vec!["x-a".into(); MAX_CORS_LIST + 1];
        assert!(c.check().is_err());
        c.allow_headers = vec![];
        c.max_age = 0;
        assert!(c.check().is_err());
    }

    proptest! {
        /// A host under the wildcard's suffix matches with any case and any default-port spelling;
        /// the suffix alone never does.
        #[test]
        fn wildcard_suffix_matching(
            labels in proptest::collection::vec("[a-z0-9]{1,8}", 1..4),
            upper in any::<bool>(),
            explicit_port in any::<bool>(),
        ) {
            let pattern = OriginPattern::parse("https://*.bar.com").expect("pattern");
            let mut host = format!("{}.bar.com", labels.join("."));
            if upper {
                host = host.to_ascii_uppercase();
            }
            let origin = if explicit_port {
                format!("https://{host}:443")
            } else {
                format!("https://{host}")
            };
            let parsed = Origin::parse(&origin).expect("origin");
            prop_assert!(pattern.matches(&parsed));
            let bare = Origin::parse("https://bar.com").expect("origin");
            prop_assert!(!pattern.matches(&bare));
        }

        /// An exact pattern matches exactly itself (up to case) and nothing that differs in
        /// scheme, host or port.
        #[test]
        fn exact_matching_is_exact(
            host in "[a-z]{1,8}\\.[a-z]{2,4}",
            other in "[a-z]{1,8}\\.[a-z]{2,4}",
            port in 1u16..,
            https in any::<bool>(),
        ) {
            let scheme = if https { "https" } else { "http" };
            let pattern = OriginPattern::parse(&format!("{scheme}://{host}:{port}")).expect("pattern");
            let same = format!("{scheme}://{host}:{port}");
            prop_assert!(pattern.matches(&Origin::parse(&same).expect("origin")));
            let other_scheme = if https { "http" } else { "https" };
            let flipped = format!("{other_scheme}://{host}:{port}");
            prop_assert!(!pattern.matches(&Origin::parse(&flipped).expect("origin")));
            if other != host {
                let moved = format!("{scheme}://{other}:{port}");
                prop_assert!(!pattern.matches(&Origin::parse(&moved).expect("origin")));
            }
        }

        /// Parsing never panics, whatever the bytes.
        #[test]
        fn parsing_any_string_is_total(s in "\\PC{0,40}") {
            let _ = Origin::parse(&s);
            let _ = OriginPattern::parse(&s);
        }
    }
}
