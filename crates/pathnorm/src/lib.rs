//! Request path normalisation, done once before routing.
//!
//! Route matching and the upstream request must see the same path, and that path must have one
//! spelling per resource: otherwise `/public/../admin` matches a `/public` prefix while the backend
//! serves `/admin`. [`normalize_path`] decodes escaped unreserved characters, merges repeated
//! slashes and removes dot segments (RFC 3986 sections 2.3, 6.2.2 and 5.2.4). Escapes of any other
//! byte, `%2F` included, are kept (with upper-case hex): they are data, not structure.
#![forbid(unsafe_code)]

use std::borrow::Cow;

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is neither origin-form (starting with `/`) nor the asterisk form `*`.
    #[error("the request path does not start with '/'")]
    NotAbsolute,
    /// A `%` at this byte offset is not followed by two hexadecimal digits.
    #[error("invalid percent-escape at byte {0} of the request path")]
    BadEscape(usize),
}

/// Returns the canonical form of a request path: escaped unreserved characters decoded, other
/// escapes in upper-case hex, runs of `/` merged, `.` and `..` segments removed. Borrowed when the
/// path is already canonical. An empty path (an absolute-form target without one) becomes `/`.
///
/// # Errors
/// [`PathError`] when the path does not start with `/` (and is not `*`) or holds a malformed
/// percent-escape.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    match path.as_bytes().first() {
        None => return Ok(Cow::Owned("/".to_owned())),
        Some(b'/') => {}
        Some(b'*') if path.len() == 1 => return Ok(Cow::Borrowed(path)),
        Some(_) => return Err(PathError::NotAbsolute),
    }
    if is_canonical(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

/// True when the path holds no `%`, no `//` and no `.` or `..` segment (the common case).
fn is_canonical(path: &[u8]) -> bool {
    let mut i = 0;
    while i < path.len() {
        match path[i] {
            b'%' => return false,
            b'/' => match &path[i + 1..] {
                [b'/', ..] | [b'.'] | [b'.', b'/', ..] | [b'.', b'.'] | [b'.', b'.', b'/', ..] => {
                    return false
                }
                _ => {}
            },
            _ => {}
        }
        i += 1;
    }
    true
}

/// Checks every escape, decodes those of unreserved characters and upper-cases the hex of the rest.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
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
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(hi)]));
            out.push(char::from(HEX_UPPER[usize::from(lo)]));
        }
        i += 3;
        copied = i;
    }
    out.push_str(&path[copied..]);
    Ok(out)
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

/// Merges runs of `/` and resolves `.` and `..` segments of a path that starts with `/`. A path
/// whose last segment is empty, `.` or `..` keeps a trailing slash, as in RFC 3986.
fn remove_dot_segments(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    // Byte offset in `out` where each kept segment's leading '/' sits.
    let mut starts: Vec<usize> = Vec::new();
    let mut trailing_slash = false;
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
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
        assert_eq!(norm("/a%2fb"), "/a%2Fb");
        assert_eq!(norm("/a%5cb/%c3%a9"), "/a%5Cb/%C3%A9");
        assert_eq!(norm("/%2F..%2F"), "/%2F..%2F");
        assert_eq!(norm("/%25"), "/%25");
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
