//! The checks of the `h1_response` fuzz target, one copy for the target (which includes this file
//! with `#[path]`, so it may use only `std`, `bytes`, `http` and `bulkhead_h1_wire`) and for the
//! seed replay in `tests/fuzz_seeds.rs`.
//!
//! Input: one byte (bit 0: the request was `HEAD`; the rest: the size of the pieces the bytes
//! arrive in, 1 to 128), then a backend's bytes. Never panics; the head parses to the same result
//! whether the bytes arrive at once or in pieces; `Content-Length` never survives beside chunked;
//! a chunked body yields no more data than the bytes after the head.

use bulkhead_h1_wire::{
    parse_response, BodyFraming, ChunkedDecoder, Decoded, ResponseHead, ResponseLimits,
};
use bytes::BytesMut;
use http::Method;

/// The head limits the checks parse with (small, so the fuzzer reaches them).
pub const LIMITS: ResponseLimits = ResponseLimits {
    max_head_bytes: 512,
    max_headers: 16,
};

/// What a head parsed to, comparable across feeds.
type Outcome = Option<Result<(u16, String, BodyFraming, bool), ()>>;

/// Parses the final (non-interim) head of `bytes` fed in pieces of `piece`; returns the outcome
/// and the bytes left after the head.
fn feed(bytes: &[u8], piece: usize, method: &Method) -> (Outcome, BytesMut) {
    let mut buf = BytesMut::new();
    let mut rest = bytes.chunks(piece);
    loop {
        match parse_response(&mut buf, method, &LIMITS) {
            Ok(Some(head)) if head.is_interim() => continue,
            Ok(Some(head)) => return (Some(Ok(summary(&head))), buf),
            Err(_) => return (Some(Err(())), buf),
            Ok(None) => match rest.next() {
                Some(p) => buf.extend_from_slice(p),
                None => return (None, buf),
            },
        }
    }
}

fn summary(head: &ResponseHead) -> (u16, String, BodyFraming, bool) {
    if head.framing == BodyFraming::Chunked {
        assert!(!head.headers.contains_key(http::header::CONTENT_LENGTH));
    }
    (
        head.status.as_u16(),
        format!("{:?}", head.headers),
        head.framing,
        head.keep_alive,
    )
}

/// Runs every check on one input; returns the head's outcome.
pub fn check(label: &str, data: &[u8]) -> Outcome {
    let (&selector, bytes) = data.split_first()?;
    let method = if selector & 1 == 1 {
        Method::HEAD
    } else {
        Method::GET
    };
    let piece = usize::from(selector >> 1) + 1;
    let (whole, _) = feed(bytes, bytes.len().max(1), &method);
    let (pieces, mut rest) = feed(bytes, piece, &method);
    match (&whole, &pieces) {
        (Some(Ok(a)), Some(Ok(b))) => assert_eq!(a, b, "{label}: the feed changed the head"),
        (Some(Ok(_)), other) | (other, Some(Ok(_))) => {
            assert!(other.is_none() || other == &Some(Err(())), "{label}");
        }
        _ => {}
    }
    if let Some(Ok((_, _, BodyFraming::Chunked, _))) = pieces {
        let after = rest.len();
        let mut decoder = ChunkedDecoder::new(LIMITS.max_head_bytes);
        let mut data = 0;
        for _ in 0..=after {
            match decoder.decode(&mut rest) {
                Ok(Decoded::Data(d)) => data += d.len(),
                Ok(Decoded::Trailers(_)) => {}
                Ok(Decoded::End | Decoded::NeedMore) | Err(_) => break,
            }
        }
        assert!(data <= after, "{label}: more body than bytes");
    }
    pieces
}
