//! Request heads on the wire, and how their bodies are framed.

use crate::response::content_length;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method};

/// How a request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body bytes are sent.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunks, then the last chunk (with trailers the `Trailer` field announced).
    Chunked,
}

/// Decides the framing of a request body and sets the fields that say it, as hyper's client
/// did: a body known to be empty sends nothing (and no `Transfer-Encoding`); a `Transfer-Encoding`
/// already present is made to end in `chunked` (and `Content-Length` removed); a valid
/// `Content-Length` is kept and obeyed; a body of known length gets its `Content-Length`; a body
/// of unknown length is chunked, except for `GET`, `HEAD` and `CONNECT`, which send none.
pub fn request_framing(
    method: &Method,
    headers: &mut HeaderMap,
    body_is_empty: bool,
    body_length: Option<u64>,
) -> RequestFraming {
    if body_is_empty {
        headers.remove(TRANSFER_ENCODING);
        return RequestFraming::Empty;
    }
    if let Some(te) = headers.get_all(TRANSFER_ENCODING).iter().next_back() {
        let chunked = te
            .as_bytes()
            .rsplit(|b| *b == b',')
            .next()
            .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        if !chunked {
            headers.append(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
        headers.remove(CONTENT_LENGTH);
        return RequestFraming::Chunked;
    }
    match content_length(headers) {
        Ok(Some(len)) => return RequestFraming::Length(len),
        Ok(None) => {}
        Err(_) => {
            headers.remove(CONTENT_LENGTH);
        }
    }
    match body_length {
        Some(len) => {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
            RequestFraming::Length(len)
        }
        None if [Method::GET, Method::HEAD, Method::CONNECT].contains(method) => {
            RequestFraming::Empty
        }
        None => {
            headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            RequestFraming::Chunked
        }
    }
}

/// Appends the request head to `out`: `METHOD target HTTP/1.1`, the fields as they are, then
/// `extra` (field lines already encoded, `name: value` and CRLF each), the empty line. `target` is
/// the origin form (`/path?query`) or, for `CONNECT`, the authority.
pub fn encode_request_head(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    extra: &[u8],
    out: &mut Vec<u8>,
) {
    let fields: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    out.reserve(method.as_str().len() + target.len() + 13 + fields + extra.len());
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    crate::write_fields(headers, out);
    out.extend_from_slice(extra);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(
        method: Method,
        fields: &[(&str, &str)],
        empty: bool,
        len: Option<u64>,
    ) -> (RequestFraming, HeaderMap) {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        (request_framing(&method, &mut h, empty, len), h)
    }

    #[test]
    fn framing_is_hypers() {
        let (f, h) = framing(Method::POST, &[("content-length", "0")], true, Some(0));
        assert_eq!(
            (f, h["content-length"].as_bytes()),
            (RequestFraming::Empty, &b"0"[..])
        );
        assert_eq!(
            framing(Method::GET, &[], true, None).0,
            RequestFraming::Empty
        );
        let (f, h) = framing(Method::POST, &[("content-length", "12")], false, None);
        assert_eq!((f, h.len()), (RequestFraming::Length(12), 1));
        let (f, h) = framing(Method::PUT, &[], false, Some(7));
        assert_eq!(
            (f, h["content-length"].as_bytes()),
            (RequestFraming::Length(7), &b"7"[..])
        );
        let (f, h) = framing(Method::POST, &[], false, None);
        assert_eq!(
            (f, h["transfer-encoding"].as_bytes()),
            (RequestFraming::Chunked, &b"chunked"[..])
        );
        assert_eq!(
            framing(Method::GET, &[], false, None).0,
            RequestFraming::Empty
        );
        let (f, h) = framing(
            Method::POST,
            &[("transfer-encoding", "gzip"), ("content-length", "3")],
            false,
            None,
        );
        assert_eq!(f, RequestFraming::Chunked);
        assert!(!h.contains_key("content-length"));
        assert_eq!(
            h.get_all("transfer-encoding").iter().collect::<Vec<_>>(),
            ["gzip", "chunked"]
        );
        let (f, h) = framing(Method::POST, &[("content-length", "1, 2")], false, None);
        assert_eq!(
            (f, h.get("content-length").map(|v| v.as_bytes())),
            (RequestFraming::Chunked, None)
        );
    }

    #[test]
    fn the_head_is_written_as_is() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("a.example"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        let mut out = Vec::new();
        encode_request_head(&Method::GET, "/p?q=1", &h, b"x-b: 3\r\n", &mut out);
        assert_eq!(
            out,
            b"GET /p?q=1 HTTP/1.1\r\nhost: a.example\r\nx-a: 1\r\nx-a: 2\r\nx-b: 3\r\n\r\n"
        );
    }
}
