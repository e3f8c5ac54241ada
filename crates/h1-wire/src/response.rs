//! Response heads: parsed from the start of a read buffer, framed as RFC 9112 §6.3 says.

use crate::field_name::field_name;
use crate::MAX_HEADERS;
use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use std::mem::MaybeUninit;

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: the answer to `HEAD`, 1xx, 204 and 304.
    Empty,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Everything until the backend closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// The status code.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The header fields, their values sharing the read buffer's bytes. `Content-Length` is
    /// removed when `Transfer-Encoding` overrides it, and a `Connection` field that says no more
    /// than `keep-alive` or `close` is taken into [`keep_alive`](Self::keep_alive) and not kept
    /// (it is hop-by-hop: a proxy would strip it, at the cost of a pass over the fields).
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: BodyFraming,
    /// Whether the connection may carry another exchange once the body has been read.
    pub keep_alive: bool,
    /// The reason phrase, when it is not the status code's canonical one (shared bytes).
    pub reason: Option<Bytes>,
}

impl ResponseHead {
    /// An interim response (1xx but 101), which a client skips.
    pub fn is_interim(&self) -> bool {
        self.status.is_informational() && self.status != StatusCode::SWITCHING_PROTOCOLS
    }
}

/// What a response head may be.
#[derive(Debug, Clone, Copy)]
pub struct ResponseLimits {
    /// Most bytes of a head (status line, fields, empty line).
    pub max_head_bytes: usize,
    /// Most header fields (at most [`MAX_HEADERS`]).
    pub max_headers: usize,
}

/// Why a response head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// The head is longer than the limit.
    #[error("response head longer than {0} bytes")]
    TooLarge(usize),
    /// The head has more fields than the limit.
    #[error("response head has more than {0} header fields")]
    TooManyHeaders(usize),
    /// Not an HTTP/1.x response head.
    #[error("malformed response head: {0}")]
    Malformed(httparse::Error),
    /// A field name or value no HTTP field may have.
    #[error("invalid response header field")]
    InvalidField,
    /// `Content-Length` is not a number, or its values differ.
    #[error("invalid or conflicting Content-Length")]
    ContentLength,
    /// `Transfer-Encoding` in an HTTP/1.0 response, which cannot use it.
    #[error("Transfer-Encoding in an HTTP/1.0 response")]
    TransferEncodingInHttp10,
}

/// Parses the response head at the start of `buf`, sent in answer to a `method` request. On
/// success the head's bytes are taken off `buf` (what follows, the body, stays); `Ok(None)` when
/// the head is not complete yet (and within the limits).
pub fn parse_response(
    buf: &mut BytesMut,
    method: &Method,
    limits: &ResponseLimits,
) -> Result<Option<ResponseHead>, ResponseError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let max_headers = limits.max_headers.min(MAX_HEADERS);
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    // Where each field's name and value lie in the head: start and end of each, as offsets.
    let mut fields = [[0u32; 4]; MAX_HEADERS];
    let (len, code, minor, count, reason) = {
        let mut parsed = httparse::Response::new(&mut []);
        let status = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut parsed, buf, &mut slots[..max_headers])
            .map_err(|e| match e {
                httparse::Error::TooManyHeaders => ResponseError::TooManyHeaders(max_headers),
                other => ResponseError::Malformed(other),
            })?;
        let httparse::Status::Complete(len) = status else {
            if buf.len() >= limits.max_head_bytes {
                return Err(ResponseError::TooLarge(limits.max_head_bytes));
            }
            return Ok(None);
        };
        if len > limits.max_head_bytes || u32::try_from(len).is_err() {
            return Err(ResponseError::TooLarge(limits.max_head_bytes));
        }
        let base = buf.as_ptr() as usize;
        // Within the head, so below `len`, which fits in a `u32`.
        let at = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
        for (slot, h) in fields.iter_mut().zip(parsed.headers.iter()) {
            let (name, value) = (h.name.as_bytes(), h.value);
            *slot = [
                at(name),
                at(name) + name.len() as u32,
                at(value),
                at(value) + value.len() as u32,
            ];
        }
        let code = parsed.code.unwrap_or_default();
        // A reason phrase of its own (not the canonical one, not empty) is kept, as hyper's client
        // kept it, so an HTTP/1.1 client sees the backend's.
        let reason = parsed
            .reason
            .filter(|r| {
                !r.is_empty()
                    && StatusCode::from_u16(code)
                        .ok()
                        .and_then(|s| s.canonical_reason())
                        != Some(*r)
            })
            .map(|r| {
                let start = at(r.as_bytes());
                [start, start + r.len() as u32]
            });
        (
            len,
            code,
            parsed.version.unwrap_or_default(),
            parsed.headers.len(),
            reason,
        )
    };
    let status = StatusCode::from_u16(code)
        .map_err(|_| ResponseError::Malformed(httparse::Error::Status))?;
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    let mut facts = Facts::default();
    for [name_start, name_end, value_start, value_end] in &fields[..count] {
        let name = field_name(&head[*name_start as usize..*name_end as usize])
            .map_err(|_| ResponseError::InvalidField)?;
        let value =
            HeaderValue::from_maybe_shared(head.slice(*value_start as usize..*value_end as usize))
                .map_err(|_| ResponseError::InvalidField)?;
        if facts.note(&name, &value) {
            headers.append(name, value);
        }
    }
    let (framing, keep_alive) = framing(status, version, method, &facts, &mut headers)?;
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive: keep_alive && facts.persists(version),
        reason: reason.map(|[start, end]| head.slice(start as usize..end as usize)),
    }))
}

/// What the framing fields of a head said, noted while the fields are read (no lookups after).
#[derive(Default)]
struct Facts {
    /// `Transfer-Encoding` present, and whether its last coding is `chunked`.
    transfer_encoding: Option<bool>,
    /// The `Content-Length` every value stated.
    length: Option<u64>,
    /// A `Content-Length` value was invalid or stated another length.
    bad_length: bool,
    /// `Connection` tokens: `close`, `keep-alive`.
    close: bool,
    keep_alive: bool,
}

impl Facts {
    /// Notes a field; whether to keep it (all but a `Connection` of persistence tokens alone).
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) -> bool {
        if *name == CONTENT_LENGTH {
            self.bad_length |= add_length(&mut self.length, value).is_err();
        } else if *name == TRANSFER_ENCODING {
            self.transfer_encoding = Some(last_coding_is_chunked(value));
        } else if *name == CONNECTION {
            let mut only_persistence = true;
            for token in value.as_bytes().split(|b| *b == b',') {
                let token = token.trim_ascii();
                let close = token.eq_ignore_ascii_case(b"close");
                let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                self.close |= close;
                self.keep_alive |= keep_alive;
                only_persistence &= close || keep_alive;
            }
            return !only_persistence;
        }
        true
    }

    /// Whether `Connection` lets the connection persist: HTTP/1.1 unless `close`, HTTP/1.0 only
    /// with `keep-alive`.
    fn persists(&self, version: Version) -> bool {
        if version == Version::HTTP_10 {
            self.keep_alive && !self.close
        } else {
            !self.close
        }
    }
}

/// The body framing (RFC 9112 §6.3) and whether it lets the connection be reused.
fn framing(
    status: StatusCode,
    version: Version,
    method: &Method,
    facts: &Facts,
    headers: &mut HeaderMap,
) -> Result<(BodyFraming, bool), ResponseError> {
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || *method == Method::HEAD
    {
        return Ok((BodyFraming::Empty, true));
    }
    if let Some(chunked) = facts.transfer_encoding {
        if version == Version::HTTP_10 {
            return Err(ResponseError::TransferEncodingInHttp10);
        }
        // Transfer-Encoding overrides Content-Length, which must not reach the client beside a
        // body framed otherwise; a message that had both is not trusted with a second exchange.
        let both = headers.remove(CONTENT_LENGTH).is_some();
        return Ok(if chunked {
            (BodyFraming::Chunked, !both)
        } else {
            (BodyFraming::UntilClose, false)
        });
    }
    if facts.bad_length {
        return Err(ResponseError::ContentLength);
    }
    match facts.length {
        Some(len) => Ok((BodyFraming::Length(len), true)),
        None => Ok((BodyFraming::UntilClose, false)),
    }
}

/// The one length every `Content-Length` value states, `None` without the field.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ResponseError> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        add_length(&mut length, value)?;
    }
    Ok(length)
}

/// Adds one `Content-Length` field value (a comma list of the same number) to `length`.
fn add_length(length: &mut Option<u64>, value: &HeaderValue) -> Result<(), ResponseError> {
    for part in value.as_bytes().split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(ResponseError::ContentLength);
        }
        let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        match *length {
            Some(seen) if seen != n => return Err(ResponseError::ContentLength),
            _ => *length = Some(n),
        }
    }
    Ok(())
}

/// Whether the last transfer coding a `Transfer-Encoding` value names is `chunked`.
fn last_coding_is_chunked(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .rsplit(|b| *b == b',')
        .next()
        .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ResponseLimits = ResponseLimits {
        max_head_bytes: 1024,
        max_headers: 10,
    };

    fn parse(bytes: &[u8], method: &Method) -> Result<Option<ResponseHead>, ResponseError> {
        parse_response(&mut BytesMut::from(bytes), method, &LIMITS)
    }

    fn head(bytes: &[u8]) -> ResponseHead {
        parse(bytes, &Method::GET).unwrap().unwrap()
    }

    #[test]
    fn a_plain_response_is_parsed_and_its_body_left_in_the_buffer() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello"[..],
        );
        let head = parse_response(&mut buf, &Method::GET, &LIMITS)
            .unwrap()
            .unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.framing, BodyFraming::Length(5));
        assert!(head.keep_alive);
        let values: Vec<_> = head.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn an_incomplete_head_waits_and_a_long_one_is_refused() {
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Le", &Method::GET)
            .unwrap()
            .is_none());
        let long = [&b"HTTP/1.1 200 OK\r\nx: "[..], &[b'a'; 1100][..]].concat();
        assert_eq!(
            parse(&long, &Method::GET).unwrap_err(),
            ResponseError::TooLarge(1024)
        );
        let many: String = (0..11).map(|i| format!("x{i}: 1\r\n")).collect();
        let many = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert_eq!(
            parse(many.as_bytes(), &Method::GET).unwrap_err(),
            ResponseError::TooManyHeaders(10)
        );
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(
            head(b"HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n").framing,
            BodyFraming::Empty
        );
        assert_eq!(
            head(b"HTTP/1.1 304 Not Modified\r\n\r\n").framing,
            BodyFraming::Empty
        );
        assert_eq!(
            head(b"HTTP/1.1 100 Continue\r\n\r\n").framing,
            BodyFraming::Empty
        );
        assert!(head(b"HTTP/1.1 103 Early Hints\r\n\r\n").is_interim());
        assert!(!head(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").is_interim());
        let to_head = parse(
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n",
            &Method::HEAD,
        )
        .unwrap()
        .unwrap();
        assert_eq!(to_head.framing, BodyFraming::Empty);
        let chunked = head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n");
        assert_eq!(chunked.framing, BodyFraming::Chunked);
        assert!(chunked.keep_alive);
        let both =
            head(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(both.framing, BodyFraming::Chunked);
        assert!(
            !both.headers.contains_key(CONTENT_LENGTH),
            "Content-Length never reaches the client beside chunked"
        );
        assert!(!both.keep_alive);
        let gzip = head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n");
        assert_eq!(
            (gzip.framing, gzip.keep_alive),
            (BodyFraming::UntilClose, false)
        );
        let none = head(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(
            (none.framing, none.keep_alive),
            (BodyFraming::UntilClose, false)
        );
        assert_eq!(
            parse(
                b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                &Method::GET
            )
            .unwrap_err(),
            ResponseError::TransferEncodingInHttp10
        );
    }

    #[test]
    fn content_length_must_be_one_number() {
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\ncontent-length: 7\r\n\r\n").framing,
            BodyFraming::Length(7)
        );
        for bad in ["+7", "7 8", "0x7", "", "7,8", "99999999999999999999", "-1"] {
            let bytes = format!("HTTP/1.1 200 OK\r\ncontent-length: {bad}\r\n\r\n");
            assert_eq!(
                parse(bytes.as_bytes(), &Method::GET).unwrap_err(),
                ResponseError::ContentLength,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn only_a_reason_phrase_of_its_own_is_kept() {
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").reason,
            None
        );
        assert_eq!(
            head(b"HTTP/1.1 200 \r\ncontent-length: 0\r\n\r\n").reason,
            None
        );
        let own = head(b"HTTP/1.1 200 All Good\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(own.reason.as_deref(), Some(&b"All Good"[..]));
    }

    #[test]
    fn connection_tokens_decide_reuse() {
        assert!(
            !head(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: Keep-Alive, CLOSE\r\n\r\n")
                .keep_alive
        );
        assert!(!head(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(
            head(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n")
                .keep_alive
        );
    }

    #[test]
    fn a_connection_field_of_persistence_tokens_alone_is_not_kept() {
        let kept = |field: &[u8]| {
            let mut bytes = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n".to_vec();
            bytes.extend_from_slice(field);
            bytes.extend_from_slice(b"\r\nx-other: 1\r\n\r\n");
            let head = head(&bytes);
            assert_eq!(head.headers["x-other"], "1");
            head.headers
                .get_all(CONNECTION)
                .iter()
                .map(|v| v.to_str().unwrap_or_default().to_owned())
                .collect::<Vec<_>>()
        };
        assert!(kept(b"Connection: keep-alive").is_empty());
        assert!(kept(b"connection: Keep-Alive , CLOSE").is_empty());
        // Anything else stays for the hop-by-hop stripping that reads it (fields it names, an
        // upgrade).
        assert_eq!(
            kept(b"connection: keep-alive, x-other"),
            ["keep-alive, x-other"]
        );
        assert_eq!(kept(b"connection: upgrade"), ["upgrade"]);
        assert_eq!(kept(b"connection:"), [""]);
        let two = kept(b"connection: close\r\nconnection: x-trace");
        assert_eq!(two, ["x-trace"]);
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [
            &b"HTTP/1.1 2000 OK\r\n\r\n"[..],
            b"HTTP/2 200\r\n\r\n",
            b"hello\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad, &Method::GET), Err(ResponseError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest::proptest! {
        /// Any bytes, split anywhere: never a panic, and the answer does not depend on where the
        /// bytes were split (an incomplete prefix waits, then the whole gives the same result).
        #[test]
        fn parsing_does_not_depend_on_the_split(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300), split in 0usize..300) {
            let whole = parse(&bytes, &Method::GET);
            let split = split.min(bytes.len());
            match parse(&bytes[..split], &Method::GET) {
                Ok(None) => {}
                Ok(Some(head)) => {
                    let again = whole.as_ref().ok().and_then(Option::as_ref);
                    proptest::prop_assert!(again.is_some_and(|h| h.status == head.status && h.headers == head.headers));
                }
                Err(e) => proptest::prop_assert!(whole.as_ref().is_err() || split < bytes.len(), "{e}"),
            }
        }
    }
}
