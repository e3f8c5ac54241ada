//! The first request of a cleartext HTTP/2 connection with prior knowledge (RFC 9113 §3.3), for
//! its host: the 24-byte client preface, a SETTINGS frame, then any frames a client may send
//! before its first request, up to the end of the first HEADERS block (CONTINUATION frames
//! included). The block is decoded by `loona-hpack` with a fresh decoder (the dynamic table is
//! empty at the start of a connection, and may grow to at most [`H2_HEADER_TABLE_SIZE`]).
//!
//! Rules:
//! * everything up to the end of the first header block, preface included, fits in
//!   [`MAX_HTTP_HEAD`] bytes (the budget of an HTTP/1 request head), or it is [`SniffError::TooLarge`];
//! * no frame is larger than [`H2_MAX_FRAME_PAYLOAD`] (the server has not raised it yet);
//! * the first frame is a SETTINGS frame; SETTINGS, PING, WINDOW_UPDATE (connection), PRIORITY and
//!   frames of unknown types (ignored, RFC 9113 §5.5) may come before the first HEADERS; DATA,
//!   RST_STREAM, PUSH_PROMISE, GOAWAY and a stray CONTINUATION are malformed there;
//! * the HEADERS frame is on an odd, non-zero stream; its PADDED and PRIORITY flags are parsed
//!   (padding longer than the payload is malformed); until END_HEADERS, only CONTINUATION frames of
//!   the same stream may follow;
//! * the host is `:authority`, or the `host` field when there is none; both once at most, and
//!   when both are present they must name the same host. It is normalised as an HTTP/1 `Host`.

use crate::http::normalize_value;
use crate::{HttpHostInfo, HttpProtocol, SniffError, MAX_HTTP_HEAD};
use bulkhead_hostmatch::Host;
use std::borrow::Cow;
use std::ops::Range;

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Largest frame payload a client may send before the server's SETTINGS raise it (RFC 9113 §4.2).
pub const H2_MAX_FRAME_PAYLOAD: usize = 16_384;
/// Largest HPACK dynamic table the first header block may build: the initial
/// SETTINGS_HEADER_TABLE_SIZE (RFC 9113 §6.5.2); a size update beyond it is malformed.
pub const H2_HEADER_TABLE_SIZE: usize = 4_096;

/// Bytes of a frame header: length (24 bits), type, flags, stream identifier (31 bits).
const FRAME_HEADER_LEN: usize = 9;
/// Fewest preface bytes that make a connection count as HTTP/2 (`PRI`).
const MIN_PREFACE_HINT: usize = 3;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// Whether `buf` holds the HTTP/2 preface or at least its first bytes (`PRI`), so the connection
/// is answered in HTTP/2 rather than HTTP/1.
pub fn looks_like_h2_preface(buf: &[u8]) -> bool {
    buf.len() >= MIN_PREFACE_HINT && is_preface_prefix(buf)
}

/// Whether `buf` agrees with the preface as far as both go (an empty `buf` does).
pub(crate) fn is_preface_prefix(buf: &[u8]) -> bool {
    let seen = buf.len().min(H2_PREFACE.len());
    buf[..seen] == H2_PREFACE[..seen]
}

/// Parses the start of a cleartext HTTP/2 connection in `buf` up to the end of its first header
/// block, for the host of the first request.
///
/// `Ok(None)` means more bytes are needed; an error is final whatever follows. Looks at no more
/// than [`MAX_HTTP_HEAD`] bytes; `head_len` is the length of everything up to the end of the block.
pub fn sniff_h2_host(buf: &[u8]) -> Result<Option<HttpHostInfo>, SniffError> {
    match first_header_block(buf)? {
        Progress::Need(_) => Ok(None),
        Progress::Block { fragments, len } => {
            let block: Vec<u8> = fragments
                .into_iter()
                .flat_map(|r| buf[r].iter().copied())
                .collect();
            let host = decode_host(&block)?;
            Ok(Some(HttpHostInfo {
                host,
                head_len: len,
                protocol: HttpProtocol::Http2PriorKnowledge,
            }))
        }
    }
}

/// How far the frames in a buffer go.
#[derive(Debug)]
pub(crate) enum Progress {
    /// The buffer must hold at least this many bytes before anything new can be learnt.
    Need(usize),
    /// The first header block is complete: its fragments, and where it ends.
    Block {
        /// Where the block's fragments lie in the buffer, in order (padding excluded).
        fragments: Vec<Range<usize>>,
        /// Length of everything up to the end of the block's last frame, preface included.
        len: usize,
    },
}

/// One frame's header.
#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHeader {
    fn parse(b: &[u8; FRAME_HEADER_LEN]) -> Self {
        Self {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }
}

/// Walks the frames after the preface to the end of the first header block.
pub(crate) fn first_header_block(buf: &[u8]) -> Result<Progress, SniffError> {
    if !is_preface_prefix(buf) {
        return Err(SniffError::malformed("not the HTTP/2 client preface"));
    }
    let window = &buf[..buf.len().min(MAX_HTTP_HEAD)];
    let mut pos = H2_PREFACE.len();
    let mut saw_settings = false;
    let mut open: Option<(u32, Vec<Range<usize>>)> = None;
    loop {
        let Some(header) = window.get(pos..pos + FRAME_HEADER_LEN) else {
            return need(pos + FRAME_HEADER_LEN);
        };
        let mut raw = [0u8; FRAME_HEADER_LEN];
        raw.copy_from_slice(header);
        let frame = FrameHeader::parse(&raw);
        if frame.len > H2_MAX_FRAME_PAYLOAD {
            return Err(SniffError::malformed(
                "HTTP/2 frame larger than SETTINGS_MAX_FRAME_SIZE",
            ));
        }
        let start = pos + FRAME_HEADER_LEN;
        let end = start + frame.len;
        if end > MAX_HTTP_HEAD {
            return Err(SniffError::TooLarge);
        }
        let Some(payload) = window.get(start..end) else {
            return need(end);
        };
        if let Some((stream, fragments)) = open.as_mut() {
            if frame.kind != CONTINUATION || frame.stream != *stream {
                return Err(SniffError::malformed(
                    "HTTP/2 header block interrupted by another frame",
                ));
            }
            fragments.push(start..end);
            if frame.flags & FLAG_END_HEADERS != 0 {
                let fragments = std::mem::take(fragments);
                return Ok(Progress::Block {
                    fragments,
                    len: end,
                });
            }
        } else if !saw_settings && frame.kind != SETTINGS {
            return Err(SniffError::malformed(
                "HTTP/2 preface not followed by SETTINGS",
            ));
        } else if frame.kind == HEADERS {
            let fragment = headers_fragment(&frame, payload)?;
            let fragment = start + fragment.start..start + fragment.end;
            if frame.flags & FLAG_END_HEADERS != 0 {
                return Ok(Progress::Block {
                    fragments: vec![fragment],
                    len: end,
                });
            }
            open = Some((frame.stream, vec![fragment]));
        } else {
            check_control_frame(&frame)?;
            saw_settings = true;
        }
        pos = end;
    }
}

/// `Need(n)`, or [`SniffError::TooLarge`] when `n` is beyond the budget.
fn need(n: usize) -> Result<Progress, SniffError> {
    if n > MAX_HTTP_HEAD {
        Err(SniffError::TooLarge)
    } else {
        Ok(Progress::Need(n))
    }
}

/// Checks a frame other than HEADERS that may come before the first request.
fn check_control_frame(frame: &FrameHeader) -> Result<(), SniffError> {
    let ok = match frame.kind {
        SETTINGS if frame.flags & FLAG_ACK != 0 => frame.stream == 0 && frame.len == 0,
        SETTINGS => frame.stream == 0 && frame.len.is_multiple_of(6),
        PING => frame.stream == 0 && frame.len == 8,
        WINDOW_UPDATE => frame.stream == 0 && frame.len == 4,
        PRIORITY => frame.stream != 0 && frame.len == 5,
        DATA | RST_STREAM | PUSH_PROMISE | GOAWAY | CONTINUATION => false,
        // Frames of unknown types are ignored (RFC 9113 §5.5), e.g. PRIORITY_UPDATE.
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(SniffError::malformed(format!(
            "HTTP/2 frame of type {:#x} not allowed before the first request",
            frame.kind
        )))
    }
}

/// The header block fragment of a HEADERS frame, as a range of its payload (padding and priority
/// fields parsed off).
fn headers_fragment(frame: &FrameHeader, payload: &[u8]) -> Result<Range<usize>, SniffError> {
    if frame.stream == 0 || frame.stream.is_multiple_of(2) {
        return Err(SniffError::malformed(
            "HTTP/2 request on a stream a client may not open",
        ));
    }
    let mut start = 0;
    let mut pad = 0;
    if frame.flags & FLAG_PADDED != 0 {
        pad = usize::from(*payload.first().ok_or_else(too_short)?);
        start = 1;
    }
    if frame.flags & FLAG_PRIORITY != 0 {
        let field = payload.get(start..start + 5).ok_or_else(too_short)?;
        let dependency = u32::from_be_bytes([field[0], field[1], field[2], field[3]]) & 0x7fff_ffff;
        if dependency == frame.stream {
            return Err(SniffError::malformed("HTTP/2 stream depends on itself"));
        }
        start += 5;
    }
    let end = payload
        .len()
        .checked_sub(pad)
        .filter(|&end| end >= start)
        .ok_or_else(too_short)?;
    Ok(start..end)
}

fn too_short() -> SniffError {
    SniffError::malformed("HTTP/2 HEADERS frame too short for its padding or priority")
}

/// The host named by a complete header block.
fn decode_host(block: &[u8]) -> Result<Host, SniffError> {
    let mut decoder = loona_hpack::Decoder::new();
    decoder.set_max_allowed_table_size(H2_HEADER_TABLE_SIZE);
    let mut authority: Option<Vec<u8>> = None;
    let mut host: Option<Vec<u8>> = None;
    let mut duplicate = false;
    decoder
        .decode_with_cb(block, |name: Cow<[u8]>, value: Cow<[u8]>| {
            let slot = match &*name {
                b":authority" => &mut authority,
                b"host" => &mut host,
                _ => return,
            };
            duplicate |= slot.is_some();
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        })
        .map_err(|e| SniffError::Malformed(format!("HPACK: {e}")))?;
    if duplicate {
        return Err(SniffError::malformed(
            "HTTP/2 request with two :authority or host fields",
        ));
    }
    match (authority, host) {
        (Some(authority), Some(host)) => {
            let authority = normalize_value(&authority)?;
            if authority != normalize_value(&host)? {
                return Err(SniffError::malformed(
                    "HTTP/2 :authority and host name different hosts",
                ));
            }
            Ok(authority)
        }
        (Some(value), None) | (None, Some(value)) => normalize_value(&value),
        (None, None) => Err(SniffError::MissingHost),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A frame with the given header fields and payload.
    pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut out = vec![len[1], len[2], len[3], kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// An HPACK block for the given fields (huffman-free literal encoding by `loona-hpack`).
    pub(crate) fn block(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut encoder = loona_hpack::Encoder::new();
        encoder.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    /// Preface, SETTINGS, WINDOW_UPDATE, then one HEADERS frame with `fields`.
    pub(crate) fn request(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = H2_PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
        out.extend(frame(WINDOW_UPDATE, 0, 0, &[0, 0x0f, 0, 1]));
        out.extend(frame(HEADERS, FLAG_END_HEADERS, 1, &block(fields)));
        out
    }

    fn get(authority: &str) -> Vec<(String, String)> {
        [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", authority),
            (":path", "/"),
        ]
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .to_vec()
    }

    fn fields(v: &[(String, String)]) -> Vec<(&str, &str)> {
        v.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
    }

    fn host_of(buf: &[u8]) -> Result<Option<Host>, SniffError> {
        sniff_h2_host(buf).map(|o| o.map(|i| i.host))
    }

    #[test]
    fn authority_is_normalised_and_length_reported() {
        let req = request(&fields(&get("GRPC.Example.test.:8080")));
        let info = sniff_h2_host(&[&req[..], b"more"].concat())
            .unwrap()
            .unwrap();
        assert_eq!(info.host, Host::Name("grpc.example.test".into()));
        assert_eq!(info.head_len, req.len());
        assert_eq!(info.protocol, HttpProtocol::Http2PriorKnowledge);
    }

    #[test]
    fn every_prefix_needs_more_bytes() {
        let req = request(&fields(&get("a.example")));
        for end in 0..req.len() {
            assert!(host_of(&req[..end]).unwrap().is_none(), "prefix of {end}");
        }
    }

    #[test]
    fn host_field_stands_in_for_a_missing_authority() {
        let req = request(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            ("host", "b.example:80"),
        ]);
        assert_eq!(host_of(&req).unwrap(), Some(Host::Name("b.example".into())));
        let req = request(&[(":method", "GET"), (":path", "/")]);
        assert!(matches!(host_of(&req), Err(SniffError::MissingHost)));
    }

    #[test]
    fn authority_and_host_disagreeing_is_malformed() {
        let mut f = get("a.example");
        f.push(("host".into(), "b.example".into()));
        assert!(matches!(
            host_of(&request(&fields(&f))),
            Err(SniffError::Malformed(_))
        ));
        let mut f = get("a.example");
        f.push((":authority".into(), "a.example".into()));
        assert!(matches!(
            host_of(&request(&fields(&f))),
            Err(SniffError::Malformed(_))
        ));
    }

    #[test]
    fn an_address_authority_is_a_request_by_address() {
        let req = request(&fields(&get("[::1]:8080")));
        assert_eq!(
            host_of(&req).unwrap(),
            Some(Host::Address("::1".parse().unwrap()))
        );
    }

    #[test]
    fn padding_priority_and_continuation_are_parsed() {
        let block = block(&fields(&get("c.example")));
        let (a, b) = block.split_at(block.len() / 2);
        let mut payload = vec![3u8];
        payload.extend_from_slice(&[0x80, 0, 0, 0, 16]);
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0, 0, 0]);
        let mut req = H2_PREFACE.to_vec();
        req.extend(frame(SETTINGS, 0, 0, &[]));
        req.extend(frame(0x10, 0, 0, b"unknown type, ignored"));
        req.extend(frame(PRIORITY, 0, 3, &[0, 0, 0, 0, 7]));
        req.extend(frame(HEADERS, FLAG_PADDED | FLAG_PRIORITY, 1, &payload));
        req.extend(frame(CONTINUATION, 0, 1, &[]));
        req.extend(frame(CONTINUATION, FLAG_END_HEADERS, 1, b));
        let info = sniff_h2_host(&req).unwrap().unwrap();
        assert_eq!(info.host, Host::Name("c.example".into()));
        assert_eq!(info.head_len, req.len());
    }

    #[test]
    fn padding_longer_than_the_frame_is_malformed() {
        let mut req = H2_PREFACE.to_vec();
        req.extend(frame(SETTINGS, 0, 0, &[]));
        req.extend(frame(
            HEADERS,
            FLAG_PADDED | FLAG_END_HEADERS,
            1,
            &[9, 0x82],
        ));
        assert!(matches!(host_of(&req), Err(SniffError::Malformed(_))));
    }

    #[test]
    fn frames_out_of_order_are_malformed() {
        let headers = frame(
            HEADERS,
            FLAG_END_HEADERS,
            1,
            &block(&fields(&get("a.example"))),
        );
        let cases: Vec<Vec<Vec<u8>>> = vec![
            vec![headers.clone()],
            vec![frame(SETTINGS, 0, 0, &[]), frame(DATA, 0, 1, b"x")],
            vec![frame(SETTINGS, 0, 0, &[]), frame(CONTINUATION, 4, 1, &[])],
            vec![frame(SETTINGS, 0, 0, &[1])],
            vec![
                frame(SETTINGS, 0, 0, &[]),
                frame(WINDOW_UPDATE, 0, 1, &[0; 4]),
            ],
            vec![
                frame(SETTINGS, 0, 0, &[]),
                frame(HEADERS, 0, 1, &[0x82]),
                frame(PING, 0, 0, &[0; 8]),
            ],
            vec![
                frame(SETTINGS, 0, 0, &[]),
                frame(HEADERS, 0, 1, &[0x82]),
                frame(CONTINUATION, 4, 3, &[]),
            ],
            vec![frame(SETTINGS, 0, 0, &[]), frame(HEADERS, 4, 2, &[0x82])],
            vec![frame(SETTINGS, 0, 0, &[]), frame(HEADERS, 4, 1, &[0xff])],
        ];
        for (i, frames) in cases.into_iter().enumerate() {
            let mut req = H2_PREFACE.to_vec();
            req.extend(frames.concat());
            assert!(
                matches!(host_of(&req), Err(SniffError::Malformed(_))),
                "case {i}: {:?}",
                host_of(&req)
            );
        }
    }

    #[test]
    fn oversized_frames_and_blocks_are_refused_early() {
        let mut req = H2_PREFACE.to_vec();
        req.extend(frame(SETTINGS, 0, 0, &[]));
        let mut big = frame(HEADERS, 0, 1, &[]);
        big[..3].copy_from_slice(&[0, 0x40, 1]);
        assert!(matches!(
            host_of(&[&req[..], &big[..]].concat()),
            Err(SniffError::Malformed(_))
        ));
        req.extend(frame(HEADERS, 0, 1, &vec![0x82; 8000]));
        let mut cont = frame(CONTINUATION, 0, 1, &[]);
        cont[..3].copy_from_slice(&[0, 0x40, 0]);
        assert!(matches!(
            host_of(&[&req[..], &cont[..]].concat()),
            Err(SniffError::TooLarge)
        ));
    }

    #[test]
    fn endless_empty_continuations_are_too_large() {
        let mut req = H2_PREFACE.to_vec();
        req.extend(frame(SETTINGS, 0, 0, &[]));
        req.extend(frame(HEADERS, 0, 1, &[0x82]));
        while req.len() <= MAX_HTTP_HEAD {
            req.extend(frame(CONTINUATION, 0, 1, &[]));
        }
        assert!(matches!(host_of(&req), Err(SniffError::TooLarge)));
    }

    #[test]
    fn table_size_update_beyond_the_initial_setting_is_malformed() {
        // Dynamic table size update to 8192 (0x3f 0xe1 0x3f), then :method GET.
        let mut req = H2_PREFACE.to_vec();
        req.extend(frame(SETTINGS, 0, 0, &[]));
        req.extend(frame(HEADERS, 4, 1, &[0x3f, 0xe1, 0x3f, 0x82]));
        assert!(matches!(host_of(&req), Err(SniffError::Malformed(_))));
    }

    #[test]
    fn http1_bytes_are_not_the_preface() {
        assert!(!looks_like_h2_preface(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_h2_preface(b"PR"));
        assert!(looks_like_h2_preface(b"PRI"));
        assert!(looks_like_h2_preface(H2_PREFACE));
        assert!(matches!(
            host_of(b"GET / HTTP/1.1\r\n"),
            Err(SniffError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_host(
            name in "[a-z][a-z0-9]{0,10}(\\.[a-z][a-z0-9]{0,10}){0,3}",
            extra in proptest::collection::vec(("[a-z][a-z0-9-]{0,12}", "[ -~]{0,40}"), 0..10),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut f = get(&name);
            for (k, v) in &extra {
                if k != "host" {
                    f.push((k.clone(), v.clone()));
                }
            }
            let req = request(&fields(&f));
            let at = cut.index(req.len());
            prop_assert!(host_of(&req[..at]).unwrap().is_none());
            let info = sniff_h2_host(&req).unwrap().unwrap();
            prop_assert_eq!(info.host, Host::Name(name));
            prop_assert_eq!(info.head_len, req.len());
        }

        #[test]
        fn arbitrary_frames_after_the_preface_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        ) {
            let _ = sniff_h2_host(&[&H2_PREFACE[..], &bytes[..]].concat());
        }

        #[test]
        fn arbitrary_header_blocks_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..4096),
            flags in any::<u8>(),
        ) {
            let mut req = H2_PREFACE.to_vec();
            req.extend(frame(SETTINGS, 0, 0, &[]));
            req.extend(frame(HEADERS, flags, 1, &bytes));
            let _ = sniff_h2_host(&req);
        }
    }
}
