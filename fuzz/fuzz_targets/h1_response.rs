//! Fuzzes the backend response parsing of `bulkhead_h1_wire` (heads, framing, chunked bodies) with
//! the checks of `crates/h1-wire/fuzz_check.rs` (the one copy, shared with the seed replay in
//! `crates/h1-wire/tests/fuzz_seeds.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/h1-wire/fuzz_check.rs"]
mod fuzz_check;

fuzz_target!(|data: &[u8]| {
    let _ = fuzz_check::check("fuzz input", data);
});
