//! The HTTP/1.x request head: request line and headers parsed with `httparse`, for the `Host`.
//!
//! Rules (RFC 9112 §3.2): exactly one `Host` header; an absolute-form target (`http://name/path`)
//! names the host too, and when both are present they must name the same host (a disagreement is a
//! request-smuggling smell and is refused). HTTP/1.1 requires `Host`; HTTP/1.0 may rely on an
//! absolute-form target. The head must end within [`MAX_HTTP_HEAD`] bytes with at most
//! [`MAX_HTTP_HEADERS`] headers.

use crate::{SniffError, MAX_HTTP_HEAD};
use bulkhead_hostmatch::Host;

/// Most header fields in a request head (as hyper's default).
pub const MAX_HTTP_HEADERS: usize = 100;
/// Most empty lines (CR or LF bytes) tolerated before the request line (RFC 9112 §2.2 asks for at
/// least one CRLF).
const MAX_LEADING_NEWLINE_BYTES: usize = 4;

/// What a request head says about where the client wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpHostInfo {
    /// The host named by the request, normalised (port stripped): a name, or an IP address for a
    /// request by address.
    pub host: Host,
    /// Length of the request head, final empty line included; for HTTP/2, of everything up to
    /// the end of the first header block (preface included).
    pub head_len: usize,
    /// The protocol the connection speaks.
    pub protocol: HttpProtocol,
}

/// The protocol of a plain HTTP connection, as its first bytes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpProtocol {
    /// HTTP/1.x: a request head.
    Http1,
    /// Cleartext HTTP/2 with prior knowledge: the client preface, then frames (RFC 9113 §3.3).
    Http2PriorKnowledge,
}

/// Parses the request head at the start of `buf`.
///
/// `Ok(None)` means more bytes are needed; an error is final whatever follows. Looks at no more
/// than [`MAX_HTTP_HEAD`] bytes.
pub fn sniff_http_host(buf: &[u8]) -> Result<Option<HttpHostInfo>, SniffError> {
    let window = &buf[..buf.len().min(MAX_HTTP_HEAD)];
    check_request_start(window)?;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HTTP_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HTTP_HEAD => {
            return Err(SniffError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(SniffError::TooLarge),
        Err(e) => return Err(SniffError::Malformed(format!("request head: {e}"))),
    };
    let mut host_header = None;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("host") {
            if host_header.is_some() {
                return Err(SniffError::malformed("duplicate Host header"));
            }
            host_header = Some(header.value);
        }
    }
    let target_host = absolute_form_host(request.path.unwrap_or_default())?;
    let is_http11 = request.version == Some(1);
    let host = match (target_host, host_header) {
        (Some(target), Some(header)) => {
            let target = Host::parse(target).map_err(SniffError::BadHost)?;
            if target != normalize_value(header)? {
                return Err(SniffError::malformed(
                    "Host header and request target name different hosts",
                ));
            }
            target
        }
        (Some(_), None) if is_http11 => return Err(SniffError::MissingHost),
        (Some(target), None) => Host::parse(target).map_err(SniffError::BadHost)?,
        (None, Some(header)) => normalize_value(header)?,
        (None, None) => return Err(SniffError::MissingHost),
    };
    Ok(Some(HttpHostInfo {
        host,
        head_len,
        protocol: HttpProtocol::Http1,
    }))
}

/// Refuses early what cannot become a request line: the first byte after at most a few empty lines
/// must be a token character (the method).
pub(crate) fn check_request_start(buf: &[u8]) -> Result<(), SniffError> {
    let leading = buf
        .iter()
        .take(MAX_LEADING_NEWLINE_BYTES + 1)
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if leading > MAX_LEADING_NEWLINE_BYTES {
        return Err(SniffError::NotHttp);
    }
    match buf.get(leading) {
        Some(&b) if !is_tchar(b) => Err(SniffError::NotHttp),
        _ => Ok(()),
    }
}

/// Whether an end of head (an empty line) appears in `buf` at or after `from` (minus the few bytes
/// an empty line may straddle).
pub(crate) fn has_empty_line_after(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(2);
    let tail = &buf[start.min(buf.len())..];
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The host of an absolute-form request target (`http://host[:port]/...`), `None` for other forms.
fn absolute_form_host(target: &str) -> Result<Option<&str>, SniffError> {
    if target.starts_with('/') {
        return Ok(None);
    }
    let Some((scheme, rest)) = target.split_once("://") else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(SniffError::malformed(
            "request target has an unknown scheme",
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(SniffError::malformed(
            "request target carries user information",
        ));
    }
    if authority.is_empty() {
        return Err(SniffError::MissingHost);
    }
    Ok(Some(authority))
}

/// Normalises a `Host` header (or HTTP/2 `:authority`) value; an empty value names no host.
pub(crate) fn normalize_value(value: &[u8]) -> Result<Host, SniffError> {
    let value = std::str::from_utf8(value)
        .map_err(|_| SniffError::malformed("Host header is not ASCII"))?
        .trim_matches([' ', '\t']);
    if value.is_empty() {
        return Err(SniffError::MissingHost);
    }
    Host::parse(value).map_err(SniffError::BadHost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn host(buf: &[u8]) -> Result<Option<HttpHostInfo>, SniffError> {
        sniff_http_host(buf)
    }

    fn name(n: &str) -> Host {
        Host::Name(n.to_owned())
    }

    #[test]
    fn host_header_is_normalised_and_head_length_reported() {
        let req = b"GET /x HTTP/1.1\r\nHost: WWW.Example.com:8080\r\nAccept: */*\r\n\r\nbody";
        let info = host(req).unwrap().unwrap();
        assert_eq!(info.host, name("www.example.com"));
        assert_eq!(info.head_len, req.len() - 4);
    }

    #[test]
    fn incomplete_head_needs_more_bytes() {
        let req = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n";
        for end in 0..req.len() {
            assert!(host(&req[..end]).unwrap().is_none(), "prefix of {end}");
        }
    }

    #[test]
    fn missing_host_is_refused() {
        assert!(matches!(
            host(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"),
            Err(SniffError::MissingHost)
        ));
        assert!(matches!(
            host(b"GET / HTTP/1.0\r\n\r\n"),
            Err(SniffError::MissingHost)
        ));
        assert!(matches!(
            host(b"GET / HTTP/1.1\r\nHost:\r\n\r\n"),
            Err(SniffError::MissingHost)
        ));
    }

    #[test]
    fn duplicate_host_headers_are_malformed() {
        assert!(matches!(
            host(b"GET / HTTP/1.1\r\nHost: a.example\r\nhost: b.example\r\n\r\n"),
            Err(SniffError::Malformed(_))
        ));
    }

    #[test]
    fn absolute_form_target_names_the_host() {
        let info = host(b"GET http://A.example:81/p?q HTTP/1.1\r\nHost: a.example\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(info.host, name("a.example"));
        let info = host(b"GET http://a.example/ HTTP/1.0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(info.host, name("a.example"));
    }

    #[test]
    fn absolute_form_target_disagreeing_with_host_is_malformed() {
        assert!(matches!(
            host(b"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n"),
            Err(SniffError::Malformed(_))
        ));
        assert!(matches!(
            host(b"GET http://u@a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n"),
            Err(SniffError::Malformed(_))
        ));
    }

    #[test]
    fn http11_absolute_form_without_host_is_refused() {
        assert!(matches!(
            host(b"GET http://a.example/ HTTP/1.1\r\n\r\n"),
            Err(SniffError::MissingHost)
        ));
    }

    #[test]
    fn invalid_host_is_bad_host() {
        for bad in ["a b.example", "[::1", "10.0.1", "a..example", "[::1]:x"] {
            let req = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
            assert!(
                matches!(
                    host(req.as_bytes()),
                    Err(SniffError::BadHost(_) | SniffError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_address_is_a_host_with_or_without_port() {
        for (raw, ip) in [
            ("127.0.0.1", "127.0.0.1"),
            ("127.0.0.1:8080", "127.0.0.1"),
            ("[::1]", "::1"),
            ("[::1]:8080", "::1"),
        ] {
            let req = format!("GET / HTTP/1.1\r\nHost: {raw}\r\n\r\n");
            let info = host(req.as_bytes()).unwrap().unwrap();
            assert_eq!(info.host, Host::Address(ip.parse().unwrap()), "{raw}");
        }
        let info = host(b"GET http://[::1]:81/ HTTP/1.1\r\nHost: [::1]:81\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(info.host, Host::Address("::1".parse().unwrap()));
    }

    #[test]
    fn tls_bytes_are_not_http() {
        assert!(matches!(
            host(&[0x16, 0x03, 0x01]),
            Err(SniffError::NotHttp)
        ));
        assert!(matches!(host(b"\r\n\r\n\r\n"), Err(SniffError::NotHttp)));
    }

    #[test]
    fn one_leading_empty_line_is_tolerated() {
        let info = host(b"\r\nGET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(info.host, name("a.example"));
    }

    #[test]
    fn head_beyond_the_limit_is_too_large() {
        let mut req = b"GET / HTTP/1.1\r\nHost: a.example\r\nX: ".to_vec();
        req.resize(MAX_HTTP_HEAD + 10, b'a');
        assert!(matches!(host(&req), Err(SniffError::TooLarge)));
    }

    #[test]
    fn too_many_headers_is_too_large() {
        let mut req = b"GET / HTTP/1.1\r\nHost: a.example\r\n".to_vec();
        for i in 0..=MAX_HTTP_HEADERS {
            req.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        assert!(matches!(host(&req), Err(SniffError::TooLarge)));
    }

    #[test]
    fn http2_preface_is_malformed() {
        assert!(matches!(
            host(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Err(SniffError::Malformed(_))
        ));
    }

    #[test]
    fn empty_line_detection_spans_reads() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(!has_empty_line_after(&req[..req.len() - 1], 0));
        assert!(has_empty_line_after(req, req.len() - 1));
        assert!(has_empty_line_after(b"a\n\n", 3));
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_host(
            name in "[a-z][a-z0-9]{0,10}(\\.[a-z][a-z0-9]{0,10}){0,3}",
            extra in proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,12}", "[ -~]{0,40}"), 0..10),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut req = String::from("GET /p HTTP/1.1\r\n");
            for (k, v) in &extra {
                if !k.eq_ignore_ascii_case("host") {
                    req.push_str(&format!("{k}: {}\r\n", v.trim()));
                }
            }
            req.push_str(&format!("Host: {name}\r\n\r\n"));
            let bytes = req.as_bytes();
            let at = cut.index(bytes.len());
            prop_assert!(host(&bytes[..at]).unwrap().is_none());
            let info = host(bytes).unwrap().unwrap();
            prop_assert_eq!(info.host, Host::Name(name));
            prop_assert_eq!(info.head_len, bytes.len());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = host(&bytes);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "[ -~\r\n]{0,2000}") {
            let _ = host(text.as_bytes());
        }
    }
}
