//! Request path normalisation, done once before routing.
//!
//! Route matching and the upstream request must see the same path, and that path must have one
//! spelling per resource: otherwise `/public/../admin` matches a `/public` prefix while the backend
//! serves `/admin`. [`normalize_path_with`] decodes escaped unreserved characters, treats `\` as `/`,
//! handles escaped slashes (`%2F`, `%5C`) as the [`EscapedSlashes`] policy says, merges repeated
//! slashes and removes dot segments (RFC 3986 sections 2.3, 6.2.2 and 5.2.4), counting a segment
//! whose part before its first `;` is `.` or `..` (`..;jsessionid=1`) as that dot segment. Escapes
//! of any other byte are kept (with upper-case hex): they are data, not structure.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is neither origin-form (starting with `/`) nor the asterisk form `*`.
    #[error("the request path does not start with '/'")]
    NotAbsolute,
    /// A `%` at this byte offset is not followed by two hexadecimal digits.
    #[error("invalid percent-escape at byte {0} of the request path")]
    BadEscape(usize),
    /// An escaped slash or backslash (`%2F`, `%5C`) at this byte offset, refused by
    /// [`EscapedSlashes::Reject`].
    #[error("escaped slash at byte {0} of the request path")]
    EscapedSlash(usize),
}

/// What the normaliser does with `%2F` and `%5C` (an escaped `/` or `\`) in a path, after Envoy's
/// `path_with_escaped_slashes_action`. Backends differ on whether these separate segments, so a
/// path holding them has no one meaning that a prefix rule could be checked against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum EscapedSlashes {
    /// Kept encoded, as data. Only safe when no backend decodes them into separators: a backend
    /// that does can resolve `/public/..%2Fadmin` outside the prefix the route matched.
    KeepUnchanged,
    /// The request is refused ([`PathError::EscapedSlash`]; the router answers 400).
    Reject,
    /// Decoded to `/` before matching; the router answers with a redirect to the decoded path, so
    /// the client sees (and a cache keys on) the path that was routed. Envoy Gateway's default.
    #[default]
    UnescapeAndRedirect,
    /// Decoded to `/` before matching; the request is routed and forwarded with the decoded path.
    UnescapeAndForward,
}

impl EscapedSlashes {
    /// Every policy with its name (as [`FromStr`] and [`fmt::Display`] spell it).
    pub const ALL: [(EscapedSlashes, &'static str); 4] = [
        (Self::KeepUnchanged, "keep-unchanged"),
        (Self::Reject, "reject"),
        (Self::UnescapeAndRedirect, "unescape-and-redirect"),
        (Self::UnescapeAndForward, "unescape-and-forward"),
    ];

    /// The policy's name.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(p, _)| *p == self)
            .map_or("", |(_, name)| name)
    }

    fn unescapes(self) -> bool {
        matches!(self, Self::UnescapeAndRedirect | Self::UnescapeAndForward)
    }
}

impl fmt::Display for EscapedSlashes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown [`EscapedSlashes`] name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown escaped-slash policy {0:?} (keep-unchanged, reject, unescape-and-redirect, unescape-and-forward)")]
pub struct UnknownPolicy(pub String);

impl FromStr for EscapedSlashes {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(s))
            .map(|(p, _)| *p)
            .ok_or_else(|| UnknownPolicy(s.to_owned()))
    }
}

/// A canonical path and whether escaped slashes were decoded to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized<'a> {
    /// The canonical path; borrowed when the input already was canonical.
    pub path: Cow<'a, str>,
    /// True when a `%2F` or `%5C` was decoded (under an unescaping policy): the client spelled the
    /// path differently from what is routed, and [`EscapedSlashes::UnescapeAndRedirect`] asks for a
    /// redirect to `path`.
    pub unescaped_slashes: bool,
}

/// [`normalize_path_with`] under the default policy ([`EscapedSlashes::UnescapeAndRedirect`]).
///
/// # Errors
/// As [`normalize_path_with`].
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    normalize_path_with(path, EscapedSlashes::default()).map(|n| n.path)
}

/// Returns the canonical form of a request path: escaped unreserved characters decoded, escaped
/// slashes handled per `escaped`, `\` turned into `/`, other escapes in upper-case hex, runs of `/`
/// merged, dot segments (`.`, `..`, and either followed by `;` parameters) removed. Borrowed when the
/// path is already canonical. An empty path (an absolute-form target without one) becomes `/`.
///
/// # Errors
/// [`PathError`] when the path does not start with `/` (and is not `*`), holds a malformed
/// percent-escape, or holds an escaped slash under [`EscapedSlashes::Reject`].
pub fn normalize_path_with(
    path: &str,
    escaped: EscapedSlashes,
) -> Result<Normalized<'_>, PathError> {
    let borrowed = |path| Normalized {
        path: Cow::Borrowed(path),
        unescaped_slashes: false,
    };
    match path.as_bytes().first() {
        None => {
            return Ok(Normalized {
                path: Cow::Owned("/".to_owned()),
                unescaped_slashes: false,
            })
        }
        Some(b'/') => {}
        Some(b'*') if path.len() == 1 => return Ok(borrowed(path)),
        Some(_) => return Err(PathError::NotAbsolute),
    }
    if is_canonical(path.as_bytes()) {
        return Ok(borrowed(path));
    }
    let (decoded, unescaped_slashes) = decode(path, escaped)?;
    Ok(Normalized {
        path: Cow::Owned(remove_dot_segments(&decoded)),
        unescaped_slashes,
    })
}

/// True when the path holds no `%`, no `\`, no `//` and no dot segment (the common case).
fn is_canonical(path: &[u8]) -> bool {
    let mut i = 0;
    while i < path.len() {
        match path[i] {
            b'%' | b'\\' => return false,
            b'/' => match &path[i + 1..] {
                [b'/', ..]
                | [b'.']
                | [b'.', b'/' | b';', ..]
                | [b'.', b'.']
                | [b'.', b'.', b'/' | b';', ..] => return false,
                _ => {}
            },
            _ => {}
        }
        i += 1;
    }
    true
}

/// Checks every escape, decodes those of unreserved characters (and of slashes when `escaped`
/// unescapes), upper-cases the hex of the rest and turns `\` into `/`. Also returns whether an
/// escaped slash was decoded.
fn decode(path: &str, escaped: EscapedSlashes) -> Result<(String, bool), PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut unescaped_slashes = false;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                out.push_str(&path[copied..i]);
                out.push('/');
                i += 1;
                copied = i;
                continue;
            }
            b'%' => {}
            _ => {
                i += 1;
                continue;
            }
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).and_then(|b| hex_digit(*b)),
            bytes.get(i + 2).and_then(|b| hex_digit(*b)),
        ) else {
            return Err(PathError::BadEscape(i));
        };
        out.push_str(&path[copied..i]);
        let value = hi << 4 | lo;
        if is_unreserved(value) {
            out.push(char::from(value));
        } else if matches!(value, b'/' | b'\\') && escaped != EscapedSlashes::KeepUnchanged {
            if !escaped.unescapes() {
                return Err(PathError::EscapedSlash(i));
            }
            out.push('/');
            unescaped_slashes = true;
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(hi)]));
            out.push(char::from(HEX_UPPER[usize::from(lo)]));
        }
        i += 3;
        copied = i;
    }
    out.push_str(&path[copied..]);
    Ok((out, unescaped_slashes))
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// The value of one hexadecimal digit (either case), as in a percent-escape.
pub fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 section 2.3: `ALPHA / DIGIT / "-" / "." / "_" / "~"`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Merges runs of `/` and resolves `.` and `..` segments (with or without `;` parameters) of a path
/// that starts with `/`. A path whose last segment is empty, `.` or `..` keeps a trailing slash, as
/// in RFC 3986.
fn remove_dot_segments(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    // Byte offset in `out` where each kept segment's leading '/' sits.
    let mut starts: Vec<usize> = Vec::new();
    let mut trailing_slash = false;
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match dot_segment(segment) {
            "" | "." => trailing_slash = last,
            ".." => {
                if let Some(start) = starts.pop() {
                    out.truncate(start);
                }
                trailing_slash = last;
            }
            _ => {
                starts.push(out.len());
                out.push('/');
                out.push_str(segment);
                trailing_slash = false;
            }
        }
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

/// The segment as the dot-segment rule sees it: `.` or `..` when its part before the first `;` is
/// one of them (Tomcat and Jetty read `..;x` as `..`, so it must never pass as a name), else itself.
fn dot_segment(segment: &str) -> &str {
    match segment.split_once(';') {
        Some((head @ ("." | ".."), _)) => head,
        _ => segment,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> String {
        normalize_path(p).expect("valid path").into_owned()
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "/a.b/c..d/.e/..f",
            "/x?",
            "*",
            "/a/b.",
            "/..a",
            "/a;x/..b;y",
        ] {
            assert!(
                matches!(normalize_path(p), Ok(Cow::Borrowed(q)) if q == p),
                "{p}"
            );
        }
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(norm("/public/../admin"), "/admin");
        assert_eq!(norm("/a/./b"), "/a/b");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/a/b/."), "/a/b/");
        assert_eq!(norm("/.."), "/");
        assert_eq!(norm("/../../x"), "/x");
        assert_eq!(norm("/a/b/c/./../../g"), "/a/g");
        assert_eq!(norm("/mid/content=5/../6"), "/mid/6");
    }

    #[test]
    fn slashes_are_merged() {
        assert_eq!(norm("//admin"), "/admin");
        assert_eq!(norm("/a///b//"), "/a/b/");
        assert_eq!(norm("//"), "/");
        assert_eq!(norm("//../a"), "/a");
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        assert_eq!(norm("/%61dmin"), "/admin");
        assert_eq!(norm("/a/%2e%2E/b"), "/b");
        assert_eq!(norm("/%7e%2d%5F"), "/~-_");
        assert_eq!(norm("/a/%c3%a9%3b"), "/a/%C3%A9%3B");
        assert_eq!(norm("/%25"), "/%25");
        assert_eq!(norm("/%252F"), "/%252F");
    }

    fn with(p: &str, policy: EscapedSlashes) -> Result<(String, bool), PathError> {
        normalize_path_with(p, policy).map(|n| (n.path.into_owned(), n.unescaped_slashes))
    }

    #[test]
    fn escaped_slashes_follow_the_policy() {
        use EscapedSlashes::*;
        let bypass = "/public/..%2Fadmin";
        assert_eq!(
            with(bypass, UnescapeAndRedirect),
            Ok(("/admin".into(), true))
        );
        assert_eq!(
            with(bypass, UnescapeAndForward),
            Ok(("/admin".into(), true))
        );
        assert_eq!(with(bypass, Reject), Err(PathError::EscapedSlash(10)));
        assert_eq!(
            with("/public/..%2fadmin", KeepUnchanged),
            Ok(("/public/..%2Fadmin".into(), false))
        );
        assert_eq!(
            with("/a%5cb", UnescapeAndForward),
            Ok(("/a/b".into(), true))
        );
        assert_eq!(with("/a%5cb", KeepUnchanged), Ok(("/a%5Cb".into(), false)));
        assert_eq!(with("/a/%2e%2E/b", Reject), Ok(("/b".into(), false)));
        assert_eq!(with("/a/b", Reject), Ok(("/a/b".into(), false)));
    }

    #[test]
    fn policies_are_named_both_ways() {
        for (policy, name) in EscapedSlashes::ALL {
            assert_eq!(name.parse::<EscapedSlashes>(), Ok(policy));
            assert_eq!(policy.to_string(), name);
        }
        assert!("unescape".parse::<EscapedSlashes>().is_err());
    }

    #[test]
    fn backslashes_are_separators_under_every_policy() {
        for (policy, _) in EscapedSlashes::ALL {
            assert_eq!(
                with("/public/..\\admin", policy),
                Ok(("/admin".into(), false))
            );
            assert_eq!(with("\\a", policy), Err(PathError::NotAbsolute));
        }
        assert_eq!(norm("/a\\\\b\\"), "/a/b/");
    }

    #[test]
    fn dot_segments_with_parameters_are_dot_segments() {
        assert_eq!(norm("/public/..;/admin"), "/admin");
        assert_eq!(norm("/public/..;jsessionid=1/admin"), "/admin");
        assert_eq!(norm("/a/.;x/b"), "/a/b");
        assert_eq!(norm("/a/b/..;"), "/a/");
        assert_eq!(norm("/a;x/b;y"), "/a;x/b;y");
        assert_eq!(norm("/a/...;x/b"), "/a/...;x/b");
    }

    #[test]
    fn malformed_escapes_and_relative_paths_are_refused() {
        assert_eq!(normalize_path("/a%"), Err(PathError::BadEscape(2)));
        assert_eq!(normalize_path("/a%4"), Err(PathError::BadEscape(2)));
        assert_eq!(normalize_path("/%g0"), Err(PathError::BadEscape(1)));
        assert_eq!(normalize_path("/ok/%zz"), Err(PathError::BadEscape(4)));
        assert_eq!(normalize_path("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("**"), Err(PathError::NotAbsolute));
        assert_eq!(norm(""), "/");
    }
}
