//! Replays the fuzz seeds (`fuzz/seeds/frame_decoder/`, regression inputs included) with the fuzz
//! target's checks (`bulkhead_test_support::fuzz::frames`, the one copy both use): no panic,
//! chunking never changes the outcome, frames re-encode to the bytes they came from; the named
//! valid seeds must decode to at least one snapshot without error.

use bulkhead_snapshot_wire::frame::Frame;
use bulkhead_test_support::fuzz::{frames, seeds};

#[test]
fn frame_decoder_seeds_replay() {
    for seed in seeds("frame_decoder") {
        let Some((decoded, failed)) = frames::check(&seed.name, &seed.bytes) else {
            continue;
        };
        if !seed.is_regression() {
            let name = &seed.name;
            assert!(!failed, "{name}: valid seed fails to decode");
            assert!(
                decoded.iter().any(|f| matches!(f, Frame::Snapshot(_))),
                "{name}"
            );
        }
    }
}
