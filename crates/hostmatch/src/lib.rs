//! Hostnames, the one way every tier reads them.
//!
//! The operator, the edge and the tenant router must never disagree on which tenant owns a name, so
//! normalisation ([`normalize_host`]), pattern parsing ([`HostPattern`]), pattern intersection
//! ([`intersect`]) and lookup ([`HostTable`]) live here and nowhere else.
//!
//! Semantics follow the Gateway API: `*.example.com` matches `a.example.com` and `a.b.example.com`
//! but not `example.com`; `*` (or an empty hostname) matches any name; a lookup prefers an exact name,
//! then the longest matching wildcard, then `*`. Lookups cost O(number of labels) whatever the table size.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest hostname accepted (RFC 1035: 253 characters in text form).
pub const MAX_HOSTNAME_LEN: usize = 253;
/// Longest label accepted (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;

/// Why a hostname or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The name was empty after stripping the port and trailing dot.
    #[error("hostname is empty")]
    Empty,
    /// The name is longer than [`MAX_HOSTNAME_LEN`].
    #[error("hostname is longer than {MAX_HOSTNAME_LEN} characters")]
    TooLong,
    /// A label is empty or longer than [`MAX_LABEL_LEN`].
    #[error("hostname has an empty label or one longer than {MAX_LABEL_LEN} characters")]
    BadLabel,
    /// A character outside `[a-z0-9-]` (and `_`, tolerated in the wild) appeared.
    #[error("hostname contains the invalid character {0:?}")]
    BadChar(char),
    /// A `*` appeared somewhere other than as the whole first label.
    #[error("a wildcard is only allowed as the whole first label (\"*.example.com\")")]
    BadWildcard,
    /// An IP address was given where a DNS name is required.
    #[error("an IP address is not a hostname")]
    IpAddress,
    /// The port after `:` is not a number.
    #[error("the port in the host is not a number")]
    BadPort,
}

/// Normalises a hostname received from a peer (SNI, `Host`, `:authority`) or a manifest:
/// strips an optional `:port` (and IPv6 brackets are refused as not a DNS name), strips one trailing
/// dot, lowercases ASCII and validates the labels. The result is what every table is keyed by.
pub fn normalize_host(raw: &str) -> Result<String, HostError> {
    let name = strip_port(raw)?;
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    if name.len() > MAX_HOSTNAME_LEN {
        return Err(HostError::TooLong);
    }
    // Nearly every name a peer sends: one pass over the bytes, one copy. Anything else takes the
    // label-by-label path, which says what is wrong.
    if is_plain_name(name) {
        return Ok(name.to_ascii_lowercase());
    }
    normalize_labels(name)
}

/// Whether `name` is a valid name as it is, but for ASCII case: labels of 1 to [`MAX_LABEL_LEN`]
/// bytes of `[A-Za-z0-9_-]`, not all digits (an IPv4 address). [`normalize_labels`] accepts exactly
/// these (and lowercases them alike); it also names the error of every other input. Every name a
/// peer sends passes here, so each byte costs one table load and one comparison or two.
fn is_plain_name(name: &str) -> bool {
    let mut label = 0usize;
    let mut letters = false;
    for &b in name.as_bytes() {
        match BYTE_CLASS[usize::from(b)] {
            LETTER => {
                letters = true;
                label += 1;
            }
            DIGIT => label += 1,
            DOT if label > 0 && label <= MAX_LABEL_LEN => label = 0,
            _ => return false,
        }
    }
    label > 0 && label <= MAX_LABEL_LEN && letters
}

/// [`BYTE_CLASS`] values: not allowed in a name, a label separator, a digit, any other name byte
/// (`[A-Za-z_-]`).
const OTHER: u8 = 0;
const DOT: u8 = 1;
const DIGIT: u8 = 2;
const LETTER: u8 = 3;

/// The class of every byte, for [`is_plain_name`].
static BYTE_CLASS: [u8; 256] = {
    let mut classes = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        classes[b] = match b as u8 {
            b'.' => DOT,
            b'0'..=b'9' => DIGIT,
            b'a'..=b'z' | b'A'..=b'Z' | b'-' | b'_' => LETTER,
            _ => OTHER,
        };
        b += 1;
    }
    classes
};

/// [`normalize_host`] after the port, the trailing dot and the length are handled: label by label.
fn normalize_labels(name: &str) -> Result<String, HostError> {
    let mut out = String::with_capacity(name.len());
    for label in name.split('.') {
        validate_label(label)?;
        if !out.is_empty() {
            out.push('.');
        }
        for c in label.chars() {
            out.push(c.to_ascii_lowercase());
        }
    }
    if out
        .split('.')
        .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(HostError::IpAddress);
    }
    Ok(out)
}

/// A host a peer named (`Host`, `:authority`, SNI), normalised: a DNS name, or an IP address (a
/// request "by address", as clients of a load balancer's IP and the Gateway API conformance suite
/// send them). Only the `*` pattern matches an address ([`HostTable::lookup_host`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A normalised DNS name (see [`normalize_host`]).
    Name(String),
    /// An IP address literal, port and brackets stripped.
    Address(IpAddr),
}

impl Host {
    /// Parses a `Host` or `:authority` value: a name as [`normalize_host`] reads it, or an IPv4
    /// address (`192.0.2.1`, `192.0.2.1:8080`) or bracketed IPv6 address (`[2001:db8::1]`,
    /// `[::1]:8080`). Anything else that looks numeric is [`HostError::IpAddress`].
    pub fn parse(raw: &str) -> Result<Self, HostError> {
        match normalize_host(raw) {
            Ok(name) => Ok(Self::Name(name)),
            Err(HostError::IpAddress) => parse_address(raw)
                .map(Self::Address)
                .ok_or(HostError::IpAddress),
            Err(e) => Err(e),
        }
    }

    /// The DNS name, `None` for an address.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Name(n) => Some(n),
            Self::Address(_) => None,
        }
    }
}

/// As it is written in a URL: the name, an IPv4 address, or an IPv6 address in brackets.
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Address(IpAddr::V4(a)) => write!(f, "{a}"),
            Self::Address(IpAddr::V6(a)) => write!(f, "[{a}]"),
        }
    }
}

/// The IP address of `192.0.2.1[:port]` or `[2001:db8::1][:port]`.
fn parse_address(raw: &str) -> Option<IpAddr> {
    if let Some(rest) = raw.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = match after.strip_prefix(':') {
            None => after.is_empty(),
            Some(port) => is_port(port),
        };
        return port_ok
            .then(|| inside.parse::<Ipv6Addr>().ok())
            .flatten()
            .map(IpAddr::V6);
    }
    strip_port(raw)
        .ok()?
        .parse::<Ipv4Addr>()
        .ok()
        .map(IpAddr::V4)
}

fn is_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

fn strip_port(raw: &str) -> Result<&str, HostError> {
    if raw.starts_with('[') {
        return Err(HostError::IpAddress);
    }
    match raw.rsplit_once(':') {
        Some((host, port)) => {
            if !is_port(port) {
                return Err(HostError::BadPort);
            }
            Ok(host)
        }
        None => Ok(raw),
    }
}

fn validate_label(label: &str) -> Result<(), HostError> {
    if label.is_empty() || label.len() > MAX_LABEL_LEN {
        return Err(HostError::BadLabel);
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(if c == '*' {
            HostError::BadWildcard
        } else {
            HostError::BadChar(c)
        });
    }
    Ok(())
}

/// A Gateway API hostname pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// `*` or no hostname: matches every name.
    Any,
    /// A fully qualified name, normalised.
    Exact(String),
    /// `*.suffix`: holds the normalised suffix without `*.` (e.g. `example.com`).
    Wildcard(String),
}

impl HostPattern {
    /// Parses `*`, `*.suffix` or an exact name (manifest input); an empty string means [`HostPattern::Any`].
    pub fn parse(raw: &str) -> Result<Self, HostError> {
        let raw = raw.trim();
        if raw.is_empty() || raw == "*" {
            return Ok(Self::Any);
        }
        if let Some(suffix) = raw.strip_prefix("*.") {
            return Ok(Self::Wildcard(normalize_pattern_name(suffix)?));
        }
        Ok(Self::Exact(normalize_pattern_name(raw)?))
    }

    /// Whether a normalised hostname matches this pattern.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(name) => name == host,
            Self::Wildcard(suffix) => {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix.as_str())
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
        }
    }

    /// Whether every name this pattern matches is also matched by `other`.
    pub fn is_subset_of(&self, other: &HostPattern) -> bool {
        match (self, other) {
            (_, Self::Any) => true,
            (Self::Any, _) => false,
            (Self::Exact(a), p) => p.matches(a),
            (Self::Wildcard(_), Self::Exact(_)) => false,
            (Self::Wildcard(a), Self::Wildcard(b)) => {
                a == b || Self::Wildcard(b.clone()).matches(a)
            }
        }
    }

    /// Specificity for precedence: exact names first, then longer wildcards, then `*`.
    /// Larger is more specific.
    pub fn specificity(&self) -> (u8, usize) {
        match self {
            Self::Any => (0, 0),
            Self::Wildcard(s) => (1, s.len()),
            Self::Exact(s) => (2, s.len()),
        }
    }
}

fn normalize_pattern_name(raw: &str) -> Result<String, HostError> {
    if raw.contains(':') {
        return Err(HostError::BadChar(':'));
    }
    normalize_host(raw)
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Exact(n) => f.write_str(n),
            Self::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

impl std::str::FromStr for HostPattern {
    type Err = HostError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The intersection of two patterns (a listener hostname and a route hostname, say), as the Gateway
/// API defines it: the more specific of the two when one contains the other, else `None`.
pub fn intersect(a: &HostPattern, b: &HostPattern) -> Option<HostPattern> {
    if a.is_subset_of(b) {
        Some(a.clone())
    } else if b.is_subset_of(a) {
        Some(b.clone())
    } else {
        None
    }
}

/// A table from hostname patterns to values with Gateway API precedence: exact, then the longest
/// wildcard suffix, then `*`. A lookup walks the labels of the name (at most 127), never the table.
///
/// Keys come from configuration and a peer's name is only looked up, so a peer cannot lengthen a
/// probe chain: the maps use foldhash (seeded at random per process), several times cheaper per
/// lookup than SipHash, which hashed every request's host twice.
#[derive(Debug, Clone)]
pub struct HostTable<T> {
    exact: HashMap<String, T, foldhash::fast::RandomState>,
    wildcard: HashMap<String, T, foldhash::fast::RandomState>,
    any: Option<T>,
}

impl<T> Default for HostTable<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::default(),
            wildcard: HashMap::default(),
            any: None,
        }
    }
}

impl<T> HostTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts a pattern; returns the value it replaces, if the same pattern was already present.
    pub fn insert(&mut self, pattern: HostPattern, value: T) -> Option<T> {
        match pattern {
            HostPattern::Any => self.any.replace(value),
            HostPattern::Exact(n) => self.exact.insert(n, value),
            HostPattern::Wildcard(s) => self.wildcard.insert(s, value),
        }
    }

    /// Whether exactly this pattern is present (not whether it would match).
    pub fn contains_pattern(&self, pattern: &HostPattern) -> bool {
        self.get_pattern(pattern).is_some()
    }

    /// The value stored for exactly this pattern.
    pub fn get_pattern(&self, pattern: &HostPattern) -> Option<&T> {
        match pattern {
            HostPattern::Any => self.any.as_ref(),
            HostPattern::Exact(n) => self.exact.get(n),
            HostPattern::Wildcard(s) => self.wildcard.get(s),
        }
    }

    /// Looks up a normalised hostname: exact, then the longest wildcard, then `*`.
    pub fn lookup(&self, host: &str) -> Option<&T> {
        self.lookup_with_pattern(host).map(|(_, v)| v)
    }

    /// Looks up a request's host: a name as [`HostTable::lookup`] does; an address finds only `*`.
    pub fn lookup_host(&self, host: &Host) -> Option<&T> {
        self.lookup_host_with_pattern(host).map(|(_, v)| v)
    }

    /// Like [`HostTable::lookup_host`], also telling which kind of entry matched.
    pub fn lookup_host_with_pattern(&self, host: &Host) -> Option<(MatchKind, &T)> {
        match host {
            Host::Name(name) => self.lookup_with_pattern(name),
            Host::Address(_) => self.any.as_ref().map(|v| (MatchKind::Any, v)),
        }
    }

    /// Like [`HostTable::lookup`], also telling which kind of entry matched.
    pub fn lookup_with_pattern(&self, host: &str) -> Option<(MatchKind, &T)> {
        if let Some(v) = self.exact.get(host) {
            return Some((MatchKind::Exact, v));
        }
        if !self.wildcard.is_empty() {
            let mut rest = host;
            while let Some((_, suffix)) = rest.split_once('.') {
                if let Some(v) = self.wildcard.get(suffix) {
                    return Some((MatchKind::Wildcard, v));
                }
                rest = suffix;
            }
        }
        self.any.as_ref().map(|v| (MatchKind::Any, v))
    }

    /// Number of patterns in the table.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len() + usize::from(self.any.is_some())
    }

    /// Whether the table holds no pattern.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every (pattern, value) pair, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (HostPattern, &T)> {
        self.exact
            .iter()
            .map(|(k, v)| (HostPattern::Exact(k.clone()), v))
            .chain(
                self.wildcard
                    .iter()
                    .map(|(k, v)| (HostPattern::Wildcard(k.clone()), v)),
            )
            .chain(self.any.iter().map(|v| (HostPattern::Any, v)))
    }
}

impl<T> FromIterator<(HostPattern, T)> for HostTable<T> {
    fn from_iter<I: IntoIterator<Item = (HostPattern, T)>>(iter: I) -> Self {
        let mut t = Self::new();
        for (p, v) in iter {
            t.insert(p, v);
        }
        t
    }
}

/// Which kind of table entry answered a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// An exact name.
    Exact,
    /// A `*.suffix` pattern.
    Wildcard,
    /// The `*` catch-all.
    Any,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> HostPattern {
        HostPattern::parse(s).expect("valid pattern")
    }

    #[test]
    fn normalize_strips_port_trailing_dot_and_case() {
        assert_eq!(
            normalize_host("WWW.Example.COM.:8443").unwrap(),
            "www.example.com"
        );
        assert_eq!(normalize_host("a.b").unwrap(), "a.b");
    }

    #[test]
    fn normalize_refuses_garbage() {
        assert_eq!(normalize_host(""), Err(HostError::Empty));
        assert_eq!(normalize_host(":80"), Err(HostError::Empty));
        assert_eq!(normalize_host("a..b"), Err(HostError::BadLabel));
        assert_eq!(normalize_host("a b"), Err(HostError::BadChar(' ')));
        assert_eq!(normalize_host("a:x"), Err(HostError::BadPort));
        assert_eq!(normalize_host("*.a.com"), Err(HostError::BadWildcard));
        assert_eq!(normalize_host("127.0.0.1"), Err(HostError::IpAddress));
        assert_eq!(normalize_host("[::1]:80"), Err(HostError::IpAddress));
        assert_eq!(normalize_host(&"a".repeat(64)), Err(HostError::BadLabel));
    }

    #[test]
    fn addresses_parse_with_or_without_port_and_only_star_matches_them() {
        let v4 = |s: &str| Host::parse(s).map(|h| h.to_string());
        assert_eq!(v4("127.0.0.1").as_deref(), Ok("127.0.0.1"));
        assert_eq!(v4("127.0.0.1:8080").as_deref(), Ok("127.0.0.1"));
        assert_eq!(v4("[::1]").as_deref(), Ok("[::1]"));
        assert_eq!(v4("[0:0::1]:8080").as_deref(), Ok("[::1]"));
        assert_eq!(
            Host::parse("WWW.Example.com:80"),
            Ok(Host::Name("www.example.com".into()))
        );
        for bad in [
            "[::1",
            "[::1]x",
            "[::1]:",
            "[::1]:123456",
            "[a.b]",
            "1.2",
            "::1",
            "1.2.3.4:x",
        ] {
            assert!(Host::parse(bad).is_err(), "{bad}");
        }
        let t: HostTable<u32> = [(p("*.example.com"), 1), (p("127.0.0.1.example.com"), 2)]
            .into_iter()
            .collect();
        let addr = Host::parse("127.0.0.1").unwrap();
        assert_eq!(addr.name(), None);
        assert_eq!(
            t.lookup_host(&addr),
            None,
            "no `*`: an address finds nothing"
        );
        let t: HostTable<u32> = [(p("*"), 0), (p("*.0.0.1.example"), 1)]
            .into_iter()
            .collect();
        assert_eq!(
            t.lookup_host_with_pattern(&addr).map(|(k, v)| (k, *v)),
            Some((MatchKind::Any, 0))
        );
    }

    #[test]
    fn wildcard_matches_one_or_more_labels_but_not_the_apex() {
        let w = p("*.example.com");
        assert!(w.matches("a.example.com"));
        assert!(w.matches("a.b.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("aexample.com"));
        assert!(p("*").matches("anything.at.all"));
    }

    #[test]
    fn wildcard_in_the_middle_is_refused() {
        assert_eq!(HostPattern::parse("a.*.com"), Err(HostError::BadWildcard));
        assert_eq!(HostPattern::parse("*a.com"), Err(HostError::BadWildcard));
    }

    #[test]
    fn intersection_keeps_the_more_specific_pattern() {
        assert_eq!(
            intersect(&p("*.example.com"), &p("a.example.com")),
            Some(p("a.example.com"))
        );
        assert_eq!(intersect(&p("*"), &p("*.x.com")), Some(p("*.x.com")));
        assert_eq!(
            intersect(&p("*.example.com"), &p("*.a.example.com")),
            Some(p("*.a.example.com"))
        );
        assert_eq!(intersect(&p("a.example.com"), &p("b.example.com")), None);
        assert_eq!(intersect(&p("*.example.com"), &p("example.com")), None);
    }

    #[test]
    fn table_prefers_exact_then_longest_wildcard_then_any() {
        let t: HostTable<u32> = [
            (p("*"), 0),
            (p("*.example.com"), 1),
            (p("*.a.example.com"), 2),
            (p("x.a.example.com"), 3),
        ]
        .into_iter()
        .collect();
        assert_eq!(t.lookup("x.a.example.com"), Some(&3));
        assert_eq!(t.lookup("y.a.example.com"), Some(&2));
        assert_eq!(t.lookup("a.example.com"), Some(&1));
        assert_eq!(t.lookup("example.com"), Some(&0));
        assert_eq!(
            t.lookup_with_pattern("other.org").map(|x| x.0),
            Some(MatchKind::Any)
        );
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn empty_table_finds_nothing() {
        let t: HostTable<u32> = HostTable::new();
        assert!(t.lookup("a.b").is_none());
        assert!(t.is_empty());
    }

    #[test]
    fn label_length_is_checked_for_every_label_and_the_whole_name() {
        let max = "a".repeat(MAX_LABEL_LEN);
        let over = "a".repeat(MAX_LABEL_LEN + 1);
        for ok in [
            max.clone(),
            format!("{max}.b"),
            format!("b.{max}"),
            format!("1.{max}"),
        ] {
            assert!(is_plain_name(&ok), "{ok}");
            assert_eq!(normalize_host(&ok), Ok(ok.clone()));
        }
        for bad in [
            over.clone(),
            format!("{over}.b"),
            format!("b.{over}"),
            ".a".into(),
            "a..b".into(),
        ] {
            assert!(!is_plain_name(&bad), "{bad}");
            assert_eq!(normalize_host(&bad), Err(HostError::BadLabel), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn the_fast_path_agrees_with_the_label_by_label_one(
            name in "[a-zA-Z0-9_.*-]{0,70}|[0-9.]{1,12}|\\PC{0,8}|\\.?([a-zA-Z0-9_-]{0,66}\\.){0,3}[a-zA-Z0-9_-]{0,66}\\.?",
        ) {
            if is_plain_name(&name) {
                prop_assert_eq!(normalize_labels(&name), Ok(name.to_ascii_lowercase()));
            } else if !name.is_empty() {
                prop_assert!(normalize_labels(&name).is_err(), "{name:?}");
            }
        }

        #[test]
        fn table_lookup_agrees_with_linear_scan(
            labels in proptest::collection::vec("[a-c]{1,2}", 1..5),
            pats in proptest::collection::vec((any::<bool>(), proptest::collection::vec("[a-c]{1,2}", 1..4)), 0..12),
        ) {
            let host = labels.join(".");
            let patterns: Vec<HostPattern> = pats.iter().map(|(wild, ls)| {
                let n = ls.join(".");
                if *wild { HostPattern::Wildcard(n) } else { HostPattern::Exact(n) }
            }).collect();
            let table: HostTable<usize> = patterns.iter().cloned().enumerate().map(|(i, p)| (p, i)).collect();
            let best = table.lookup(&host).map(|i| patterns[*i].clone());
            let linear = patterns.iter().filter(|p| p.matches(&host)).max_by_key(|p| p.specificity()).cloned();
            prop_assert_eq!(best.map(|b| b.specificity()), linear.map(|l| l.specificity()));
        }

        #[test]
        fn normalize_is_idempotent(s in "[A-Za-z0-9.-]{0,40}(:[0-9]{1,5})?") {
            if let Ok(n) = normalize_host(&s) {
                prop_assert_eq!(normalize_host(&n), Ok(n.clone()));
            }
        }
    }
}
