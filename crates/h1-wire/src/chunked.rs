//! The chunked transfer coding (RFC 9112 §7.1): an incremental decoder for response bodies and the
//! framing of request body chunks.

use crate::MAX_HEADERS;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Most bytes of chunk extensions over a whole body (hyper's budget): they carry nothing a proxy
/// forwards, so a backend cannot make the router read without bound through them.
pub const MAX_EXTENSION_BYTES: usize = 16 * 1024;

/// Why a chunked body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    /// A chunk size line that is not hex digits, or too large.
    #[error("invalid chunk size")]
    Size,
    /// A line not ended by CRLF where the coding requires it.
    #[error("chunk not ended by CRLF")]
    LineEnd,
    /// Chunk extensions beyond [`MAX_EXTENSION_BYTES`] over the body.
    #[error("chunk extensions longer than {MAX_EXTENSION_BYTES} bytes")]
    Extensions,
    /// The trailer section is longer than the head limit, or malformed.
    #[error("invalid or oversized trailer section")]
    Trailers,
}

/// What one [`ChunkedDecoder::decode`] step produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes (taken off the buffer).
    Data(Bytes),
    /// The trailer fields after the last chunk.
    Trailers(HeaderMap),
    /// The body has ended; bytes after it stay in the buffer.
    End,
    /// More bytes are needed.
    NeedMore,
}

/// Where the decoder is in the coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size,
    /// After the size: whitespace, then `;` extensions or the line end.
    AfterSize,
    /// Inside chunk extensions, up to CR.
    Extension,
    /// The LF ending a size line.
    SizeLf,
    /// Chunk data, this many bytes left.
    Data(u64),
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// After the last chunk: the trailer section and its empty line.
    Trailers,
    /// The body has ended.
    Done,
}

/// Decodes a chunked body from a read buffer, a step at a time.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    digits: u8,
    extension_bytes: usize,
    max_trailer_bytes: usize,
}

impl ChunkedDecoder {
    /// A decoder at the start of a body whose trailer section may be `max_trailer_bytes` long.
    pub fn new(max_trailer_bytes: usize) -> Self {
        Self {
            state: State::Size,
            size: 0,
            digits: 0,
            extension_bytes: 0,
            max_trailer_bytes,
        }
    }

    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes what `buf` holds: the next data, the trailers, the end, or a request for more.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkedError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let rest = left - take as u64;
                    self.state = if rest == 0 {
                        State::DataCr
                    } else {
                        State::Data(rest)
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                State::Trailers => return self.trailers(buf),
                _ => {
                    let Some(&byte) = buf.first() else {
                        return Ok(Decoded::NeedMore);
                    };
                    let _ = buf.split_to(1);
                    self.line_byte(byte)?;
                }
            }
        }
    }

    /// One byte of a size line or of the CRLF after data.
    fn line_byte(&mut self, byte: u8) -> Result<(), ChunkedError> {
        self.state = match (self.state, byte) {
            (State::Size, b) if b.is_ascii_hexdigit() => {
                if self.digits == 16 {
                    return Err(ChunkedError::Size);
                }
                self.digits += 1;
                let digit = (b as char).to_digit(16).unwrap_or_default();
                self.size = self.size << 4 | u64::from(digit);
                State::Size
            }
            (State::Size, _) if self.digits == 0 => return Err(ChunkedError::Size),
            (State::Size | State::AfterSize, b' ' | b'\t') => State::AfterSize,
            (State::Size | State::AfterSize, b';') => self.extension(State::Extension)?,
            (State::Size | State::AfterSize, b'\r') => State::SizeLf,
            (State::Size | State::AfterSize, _) => return Err(ChunkedError::Size),
            (State::Extension, b'\r') => State::SizeLf,
            (State::Extension, b'\n') => return Err(ChunkedError::LineEnd),
            (State::Extension, _) => self.extension(State::Extension)?,
            (State::SizeLf, b'\n') => {
                let size = std::mem::take(&mut self.size);
                self.digits = 0;
                if size == 0 {
                    State::Trailers
                } else {
                    State::Data(size)
                }
            }
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::Size,
            _ => return Err(ChunkedError::LineEnd),
        };
        Ok(())
    }

    /// Counts one byte of extensions against the budget.
    fn extension(&mut self, next: State) -> Result<State, ChunkedError> {
        self.extension_bytes += 1;
        if self.extension_bytes > MAX_EXTENSION_BYTES {
            return Err(ChunkedError::Extensions);
        }
        Ok(next)
    }

    /// The trailer section: nothing but its empty line (the usual case), or fields then it.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkedError> {
        if buf.starts_with(b"\r\n") {
            let _ = buf.split_to(2);
            self.state = State::Done;
            return Ok(Decoded::End);
        }
        if buf.len() < 2 && buf.first().is_none_or(|b| *b == b'\r') {
            return Ok(Decoded::NeedMore);
        }
        // The rare path (few backends send trailers): initialised slots are fine here.
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut fields = Vec::new();
        let len = match httparse::parse_headers(buf, &mut slots) {
            Ok(httparse::Status::Complete((len, parsed))) => {
                for h in parsed {
                    let name = HeaderName::from_bytes(h.name.as_bytes())
                        .map_err(|_| ChunkedError::Trailers)?;
                    let value =
                        HeaderValue::from_bytes(h.value).map_err(|_| ChunkedError::Trailers)?;
                    fields.push((name, value));
                }
                len
            }
            Ok(httparse::Status::Partial) if buf.len() < self.max_trailer_bytes => {
                return Ok(Decoded::NeedMore)
            }
            _ => return Err(ChunkedError::Trailers),
        };
        if len > self.max_trailer_bytes {
            return Err(ChunkedError::Trailers);
        }
        let _ = buf.split_to(len);
        self.state = State::Done;
        let mut map = HeaderMap::with_capacity(fields.len());
        for (name, value) in fields {
            map.append(name, value);
        }
        Ok(Decoded::Trailers(map))
    }
}

/// The size line of a data chunk of `len` bytes (`{hex}\r\n`), in a small buffer.
pub fn chunk_size_line(len: usize) -> ([u8; 18], usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 18];
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, slot) in out[..digits].iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - i);
        *slot = HEX[(len >> shift) & 0xf];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    (out, digits + 2)
}

/// The last chunk, with `trailers` as its trailer section, then the body's final empty line.
pub fn last_chunk(trailers: Option<&HeaderMap>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    crate::write_fields(trailers.into_iter().flatten(), out);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` one after another as the decoder asks for more; returns the data, the
    /// trailers and every byte after the end (in the buffer or not fed yet), or the error.
    /// The body's data, its trailers, and the bytes after it.
    type Run = (Vec<u8>, Option<HeaderMap>, Vec<u8>);

    fn run(pieces: &[&[u8]]) -> Result<Run, ChunkedError> {
        let mut decoder = ChunkedDecoder::new(1024);
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut trailers = None;
        let mut pieces = pieces.iter();
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(d) => data.extend_from_slice(&d),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::End => {
                    let mut rest = buf.to_vec();
                    pieces.for_each(|p| rest.extend_from_slice(p));
                    return Ok((data, trailers, rest));
                }
                Decoded::NeedMore => match pieces.next() {
                    Some(p) => buf.extend_from_slice(p),
                    None => return Err(ChunkedError::LineEnd),
                },
            }
        }
    }

    #[test]
    fn chunks_extensions_and_trailers_are_decoded() {
        let (data, trailers, rest) = run(&[
            b"5;name=value\r\nhello\r\n6 \r\n world\r\n0\r\nx-checksum: 1\r\nX-Two: 2\r\n\r\nNEXT",
        ])
        .unwrap();
        assert_eq!(data, b"hello world");
        let trailers = trailers.unwrap();
        assert_eq!(trailers["x-checksum"], "1");
        assert_eq!(trailers["x-two"], "2");
        assert_eq!(rest, b"NEXT", "bytes after the body stay");
        let (data, trailers, _) = run(&[b"A\r\n0123456789\r\n0\r\n\r\n"]).unwrap();
        assert_eq!((data.len(), trailers), (10, None));
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for (bad, want) in [
            (&b"g\r\n"[..], ChunkedError::Size),
            (b"\r\n", ChunkedError::Size),
            (b"5\nhello\r\n", ChunkedError::Size),
            (b"5\r\nhelloX\r\n", ChunkedError::LineEnd),
            (b"5\r\nhello\r\r", ChunkedError::LineEnd),
            (b"11111111111111111\r\n", ChunkedError::Size),
            (b"1;a\nb\r\n", ChunkedError::LineEnd),
            (b"0\r\nbad trailer\r\n\r\n", ChunkedError::Trailers),
        ] {
            assert_eq!(
                run(&[bad]).unwrap_err(),
                want,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_ext = [&b"1;"[..], &[b'x'; MAX_EXTENSION_BYTES][..], b"\r\n"].concat();
        assert_eq!(run(&[&long_ext]).unwrap_err(), ChunkedError::Extensions);
        let long_trailer = [&b"0\r\nx: "[..], &[b'y'; 2000][..], b"\r\n\r\n"].concat();
        assert_eq!(run(&[&long_trailer]).unwrap_err(), ChunkedError::Trailers);
    }

    #[test]
    fn size_lines_are_lower_case_hex() {
        for len in [0usize, 1, 9, 10, 15, 16, 255, 4096, 65_535, usize::MAX] {
            let (line, n) = chunk_size_line(len);
            let text = std::str::from_utf8(&line[..n]).unwrap();
            assert_eq!(text, format!("{len:x}\r\n"));
        }
        let mut out = Vec::new();
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        last_chunk(Some(&t), &mut out);
        assert_eq!(out, b"0\r\ngrpc-status: 0\r\n\r\n");
    }

    proptest::proptest! {
        /// Chunks encoded with `chunk_size_line` and `last_chunk`, cut into pieces anywhere,
        /// decode to the same bytes and trailers, and leave what follows the body untouched.
        #[test]
        fn encoded_chunks_decode_back_whatever_the_cuts(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..40), 0..6),
            with_trailer in proptest::bool::ANY,
            cuts in proptest::collection::vec(1usize..17, 1..40),
        ) {
            let mut wire = Vec::new();
            for c in &chunks {
                let (line, n) = chunk_size_line(c.len());
                wire.extend_from_slice(&line[..n]);
                wire.extend_from_slice(c);
                wire.extend_from_slice(b"\r\n");
            }
            let mut t = HeaderMap::new();
            t.insert("x-sum", HeaderValue::from_static("abc"));
            last_chunk(with_trailer.then_some(&t), &mut wire);
            wire.extend_from_slice(b"HTTP/1.1");
            let mut pieces = Vec::new();
            let mut rest = &wire[..];
            for cut in cuts.iter().cycle() {
                if rest.is_empty() { break; }
                let (a, b) = rest.split_at((*cut).min(rest.len()));
                pieces.push(a);
                rest = b;
            }
            let (data, trailers, left) = run(&pieces).unwrap();
            proptest::prop_assert_eq!(data, chunks.concat());
            proptest::prop_assert_eq!(trailers, with_trailer.then_some(t));
            proptest::prop_assert_eq!(left, b"HTTP/1.1".to_vec());
        }

        /// Any bytes never make the decoder panic, loop or yield more data than they hold.
        #[test]
        fn any_bytes_are_decoded_or_refused(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut decoder = ChunkedDecoder::new(64);
            let mut buf = BytesMut::from(&bytes[..]);
            let mut data = 0;
            for _ in 0..=bytes.len() {
                match decoder.decode(&mut buf) {
                    Ok(Decoded::Data(d)) => data += d.len(),
                    Ok(Decoded::NeedMore | Decoded::End) | Err(_) => break,
                    Ok(Decoded::Trailers(_)) => {}
                }
            }
            proptest::prop_assert!(data <= bytes.len());
        }
    }
}
