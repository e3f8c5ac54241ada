//! Replays the fuzz seeds (`fuzz/seeds/frame_decoder/`, regression inputs included) with the fuzz
//! target's checks: no panic, chunking never changes the outcome, frames re-encode to the bytes they
//! came from; the named valid seeds must decode to at least one snapshot without error.

use bulkhead_snapshot_wire::frame::{encode_frame, Frame, FrameDecoder, KEEPALIVE_FRAME};
use std::path::PathBuf;

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

#[test]
fn frame_decoder_seeds_replay() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/frame_decoder");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let data = std::fs::read(&path).unwrap();
        count += 1;
        let Some((&chunk, stream)) = data.split_first() else {
            continue;
        };
        let whole = decode(stream, stream.len().max(1));
        assert_eq!(decode(stream, usize::from(chunk).max(1)), whole, "{name}");
        let mut again = Vec::new();
        for frame in &whole.0 {
            match frame {
                Frame::KeepAlive => again.extend_from_slice(&KEEPALIVE_FRAME),
                Frame::Snapshot(payload) => {
                    again.extend_from_slice(&encode_frame(payload).unwrap())
                }
            }
        }
        assert_eq!(&stream[..again.len()], &again[..], "{name}");
        if !name.starts_with("regression-") {
            assert!(!whole.1, "{name}: valid seed fails to decode");
            assert!(
                whole.0.iter().any(|f| matches!(f, Frame::Snapshot(_))),
                "{name}"
            );
        }
    }
    assert!(count > 0, "no seeds in {}", dir.display());
}
