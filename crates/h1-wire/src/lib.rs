//! HTTP/1.1 between the router and its backends, without I/O (see the README): [`request`] encodes
//! request heads and frames bodies, [`response`] parses and frames response heads, [`chunked`]
//! decodes chunked bodies.

pub mod chunked;
mod field_name;
pub mod request;
pub mod response;

pub use chunked::{ChunkedDecoder, ChunkedError, Decoded};
pub use request::{encode_request_head, request_framing, RequestFraming};
pub use response::{parse_response, BodyFraming, ResponseError, ResponseHead, ResponseLimits};

/// Most header fields in a response head (and its chunked trailers) this crate parses.
pub const MAX_HEADERS: usize = 100;

/// Appends `name: value\r\n` for each field (a head's or a trailer section's field lines).
fn write_fields<'a>(
    fields: impl IntoIterator<Item = (&'a http::HeaderName, &'a http::HeaderValue)>,
    out: &mut Vec<u8>,
) {
    for (name, value) in fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}
