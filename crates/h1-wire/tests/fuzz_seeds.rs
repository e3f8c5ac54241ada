//! Replays the fuzz seeds (`fuzz/seeds/h1_response/`, regression inputs included) with the fuzz
//! target's checks (`fuzz_check.rs`, the one copy both use); the valid seeds must parse to a head.

#[path = "../fuzz_check.rs"]
mod fuzz_check;

use bulkhead_test_support::fuzz::seeds;

#[test]
fn h1_response_seeds_replay() {
    let mut seen = 0;
    for seed in seeds("h1_response") {
        let outcome = fuzz_check::check(&seed.name, &seed.bytes);
        if !seed.is_regression() {
            assert!(
                matches!(outcome, Some(Ok(_))),
                "{}: valid seed does not parse: {outcome:?}",
                seed.name
            );
        }
        seen += 1;
    }
    assert!(seen > 0, "no seeds found");
}
