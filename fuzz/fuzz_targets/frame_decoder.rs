//! Fuzzes the snapshot stream frame decoder with the checks of
//! `crates/test-support/src/fuzz/frames.rs` (the one copy, shared with the seed replay in
//! `crates/snapshot-wire/tests/fuzz_seeds.rs`). Input: one byte choosing the chunk size, then the
//! stream. Never panics; any chunking gives the same frames and the same error; every snapshot
//! frame is non-empty and within the limit; and the frames decoded, encoded again, are exactly the
//! bytes they were decoded from.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/test-support/src/fuzz/frames.rs"]
mod frames;

fuzz_target!(|data: &[u8]| {
    frames::check("fuzz input", data);
});
