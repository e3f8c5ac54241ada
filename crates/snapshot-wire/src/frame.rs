//! Frames on a snapshot stream: a 4-byte big-endian payload length, then the payload.
//!
//! A payload is one complete snapshot as JSON (never a patch). A frame of length 0 is a keep-alive:
//! the server sends one when it has had nothing to send for [`KEEPALIVE_INTERVAL`], so a client
//! notices a dead stream within [`READ_IDLE_TIMEOUT`]. A header announcing more than the decoder's
//! maximum (by default [`MAX_FRAME_LEN`]) is an error as soon as the header is read, before any of
//! the payload is buffered; after an error the decoder keeps failing and the stream must be dropped.
//!
//! [`KEEPALIVE_INTERVAL`]: crate::limits::KEEPALIVE_INTERVAL
//! [`READ_IDLE_TIMEOUT`]: crate::limits::READ_IDLE_TIMEOUT

use crate::limits::{FRAME_HEADER_LEN, MAX_FRAME_LEN};
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The encoded keep-alive frame.
pub const KEEPALIVE_FRAME: [u8; FRAME_HEADER_LEN] = [0; FRAME_HEADER_LEN];

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A keep-alive (length 0): the stream is alive, nothing changed.
    KeepAlive,
    /// A complete snapshot (JSON, not empty).
    Snapshot(Bytes),
}

/// Why a frame cannot be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The payload is larger than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced (or attempted) payload length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// An empty payload cannot be sent as a snapshot: it would read as a keep-alive.
    #[error("an empty snapshot payload cannot be framed")]
    Empty,
}

/// Encodes one snapshot payload as a frame (header and payload in one buffer).
pub fn encode_frame(payload: &[u8]) -> Result<Bytes, FrameError> {
    if payload.is_empty() {
        return Err(FrameError::Empty);
    }
    let len = checked_len(payload.len())?;
    let mut out = BytesMut::with_capacity(FRAME_HEADER_LEN + payload.len());
    out.put_u32(len);
    out.put_slice(payload);
    Ok(out.freeze())
}

fn checked_len(len: usize) -> Result<u32, FrameError> {
    let too_large = FrameError::TooLarge {
        len,
        max: MAX_FRAME_LEN,
    };
    if len > MAX_FRAME_LEN {
        return Err(too_large);
    }
    u32::try_from(len).map_err(|_| too_large)
}

/// Incremental frame decoder: bytes go in as they arrive, in chunks of any size, frames come out.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_len: usize,
    failed: Option<FrameError>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder accepting payloads up to [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max_len(MAX_FRAME_LEN)
    }

    /// A decoder accepting payloads up to `max_len` bytes.
    pub fn with_max_len(max_len: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_len,
            failed: None,
        }
    }

    /// Appends received bytes (ignored once the decoder has failed).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed, or the error that ends the stream.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let Some(header) = self.buf.get(..FRAME_HEADER_LEN) else {
            return Ok(None);
        };
        let mut len_bytes = [0u8; FRAME_HEADER_LEN];
        len_bytes.copy_from_slice(header);
        let announced = u32::from_be_bytes(len_bytes);
        let len = usize::try_from(announced).unwrap_or(usize::MAX);
        if len > self.max_len {
            let e = FrameError::TooLarge {
                len,
                max: self.max_len,
            };
            self.failed = Some(e.clone());
            self.buf = BytesMut::new();
            return Err(e);
        }
        if self.buf.len() - FRAME_HEADER_LEN < len {
            return Ok(None);
        }
        self.buf.advance(FRAME_HEADER_LEN);
        if len == 0 {
            return Ok(Some(Frame::KeepAlive));
        }
        Ok(Some(Frame::Snapshot(self.buf.split_to(len).freeze())))
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_chunked(
        stream: &[u8],
        chunk: usize,
        max_len: usize,
    ) -> (Vec<Frame>, Option<FrameError>) {
        let mut decoder = FrameDecoder::with_max_len(max_len);
        let mut frames = Vec::new();
        for piece in stream.chunks(chunk.max(1)) {
            decoder.push(piece);
            loop {
                match decoder.next_frame() {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break,
                    Err(e) => return (frames, Some(e)),
                }
            }
        }
        (frames, None)
    }

    fn encode_all(payloads: &[Vec<u8>]) -> (Vec<u8>, Vec<Frame>) {
        let mut wire = Vec::new();
        let mut frames = Vec::new();
        for p in payloads {
            if p.is_empty() {
                wire.extend_from_slice(&KEEPALIVE_FRAME);
                frames.push(Frame::KeepAlive);
            } else {
                wire.extend_from_slice(&encode_frame(p).unwrap());
                frames.push(Frame::Snapshot(Bytes::copy_from_slice(p)));
            }
        }
        (wire, frames)
    }

    #[test]
    fn snapshot_and_keepalive_round_trip() {
        let (wire, frames) = encode_all(&[b"{\"version\":1}".to_vec(), vec![], b"{}".to_vec()]);
        assert_eq!(&wire[..4], &[0, 0, 0, 13]);
        assert_eq!(
            decode_chunked(&wire, usize::MAX, MAX_FRAME_LEN),
            (frames, None)
        );
    }

    #[test]
    fn oversized_header_is_rejected_before_its_payload_arrives() {
        let mut decoder = FrameDecoder::with_max_len(16);
        decoder.push(&17u32.to_be_bytes());
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLarge { len: 17, max: 16 })
        );
        decoder.push(&[b'x'; 17]);
        assert_eq!(decoder.buffered(), 0);
        assert!(
            decoder.next_frame().is_err(),
            "a failed decoder stays failed"
        );
    }

    #[test]
    fn default_limit_is_64_mib_and_encoder_refuses_more() {
        let mut decoder = FrameDecoder::new();
        decoder.push(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decoder.next_frame(),
            Err(FrameError::TooLarge {
                max: MAX_FRAME_LEN,
                ..
            })
        ));
        assert_eq!(
            checked_len(MAX_FRAME_LEN + 1),
            Err(FrameError::TooLarge {
                len: MAX_FRAME_LEN + 1,
                max: MAX_FRAME_LEN
            })
        );
        assert_eq!(encode_frame(b""), Err(FrameError::Empty));
    }

    #[test]
    fn partial_frame_waits_for_more_bytes() {
        let wire = encode_frame(b"abc").unwrap();
        let mut decoder = FrameDecoder::new();
        decoder.push(&wire[..5]);
        assert_eq!(decoder.next_frame(), Ok(None));
        decoder.push(&wire[5..]);
        assert_eq!(
            decoder.next_frame(),
            Ok(Some(Frame::Snapshot(Bytes::from_static(b"abc"))))
        );
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(decoder.buffered(), 0);
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_frames(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..12),
            chunk in 1usize..64,
        ) {
            let (wire, frames) = encode_all(&payloads);
            prop_assert_eq!(decode_chunked(&wire, chunk, 300), (frames.clone(), None));
            prop_assert_eq!(decode_chunked(&wire, usize::MAX, 300), (frames, None));
        }

        #[test]
        fn garbage_never_panics_and_chunking_does_not_change_the_outcome(
            garbage in proptest::collection::vec(any::<u8>(), 0..2048),
            chunk in 1usize..97,
        ) {
            let whole = decode_chunked(&garbage, usize::MAX, 1024);
            prop_assert_eq!(decode_chunked(&garbage, chunk, 1024), whole.clone());
            for f in &whole.0 {
                if let Frame::Snapshot(p) = f {
                    prop_assert!(!p.is_empty() && p.len() <= 1024);
                }
            }
        }

        #[test]
        fn frame_over_the_limit_is_rejected_whatever_the_chunking(
            len in 65usize..4096,
            chunk in 1usize..32,
        ) {
            let payload = vec![b'a'; len];
            let (wire, _) = encode_all(&[b"{}".to_vec(), payload]);
            let (frames, err) = decode_chunked(&wire, chunk, 64);
            prop_assert_eq!(frames, vec![Frame::Snapshot(Bytes::from_static(b"{}"))]);
            prop_assert_eq!(err, Some(FrameError::TooLarge { len, max: 64 }));
        }
    }
}
