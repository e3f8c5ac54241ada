//! The snapshot stream frame decoder checks, one copy for the `frame_decoder` fuzz target (which
//! includes this file with `#[path]`, so it may use only `std` and `bulkhead_snapshot_wire`) and for
//! the seed replay in `crates/snapshot-wire/tests/fuzz_seeds.rs`.
//!
//! Input: one byte choosing the chunk size, then the stream. Never panics; any chunking gives the
//! same frames and the same error; every snapshot frame is non-empty and within [`MAX`]; and the
//! frames decoded, encoded again, are exactly the bytes they were decoded from.

use bulkhead_snapshot_wire::frame::{encode_frame, Frame, FrameDecoder, KEEPALIVE_FRAME};

/// The frame length limit the checks decode with (small, so the fuzzer reaches it).
pub const MAX: usize = 1024;

/// What a stream decoded to: the frames before the end or the first error, and whether an error
/// stopped it.
pub type Decoded = (Vec<Frame>, bool);

/// Decodes `stream` fed to the decoder in pieces of `chunk` bytes.
pub fn decode(stream: &[u8], chunk: usize) -> Decoded {
    let mut decoder = FrameDecoder::with_max_len(MAX);
    let mut frames = Vec::new();
    for piece in stream.chunks(chunk) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

/// Applies every check to one fuzz input (chunk byte, then stream) and returns what the whole
/// stream decoded to; `None` for an empty input. Panics (with `name` in the message) when a check
/// fails.
pub fn check(name: &str, data: &[u8]) -> Option<Decoded> {
    let (&chunk, stream) = data.split_first()?;
    let whole = decode(stream, stream.len().max(1));
    assert_eq!(decode(stream, usize::from(chunk).max(1)), whole, "{name}");
    let mut again = Vec::new();
    for frame in &whole.0 {
        match frame {
            Frame::KeepAlive => again.extend_from_slice(&KEEPALIVE_FRAME),
            Frame::Snapshot(payload) => {
                assert!(!payload.is_empty() && payload.len() <= MAX, "{name}");
                again.extend_from_slice(&encode_frame(payload).expect("a decoded frame encodes"));
            }
        }
    }
    assert_eq!(&stream[..again.len()], &again[..], "{name}");
    Some(whole)
}
