//! Fuzzes the snapshot stream frame decoder. Input: one byte choosing the chunk size, then the
//! stream. Never panics; any chunking gives the same frames and the same error; every snapshot
//! frame is non-empty and within the limit; and the frames decoded, encoded again, are exactly the
//! bytes they were decoded from.
#![no_main]

use bulkhead_snapshot_wire::frame::{encode_frame, Frame, FrameDecoder, KEEPALIVE_FRAME};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 1024;

fn decode(stream: &[u8], chunk: usize) -> (Vec<Frame>, bool) {
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

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let whole = decode(stream, stream.len().max(1));
    assert_eq!(decode(stream, usize::from(chunk).max(1)), whole);
    let mut again = Vec::new();
    for frame in &whole.0 {
        match frame {
            Frame::KeepAlive => again.extend_from_slice(&KEEPALIVE_FRAME),
            Frame::Snapshot(payload) => {
                assert!(!payload.is_empty() && payload.len() <= MAX);
                again.extend_from_slice(&encode_frame(payload).unwrap());
            }
        }
    }
    assert_eq!(&stream[..again.len()], &again[..]);
});
