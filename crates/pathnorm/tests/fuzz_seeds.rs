//! Replays the fuzz seeds (`fuzz/seeds/path/`, regression inputs included) through the normaliser:
//! none may panic, and the named valid seeds must normalise to `/admin/`.

use bulkhead_test_support::fuzz::seeds;

#[test]
fn path_seeds_replay() {
    for seed in seeds("path") {
        let text = String::from_utf8_lossy(&seed.bytes);
        let result = bulkhead_pathnorm::normalize_path(&text);
        if !seed.is_regression() {
            assert_eq!(result.as_deref(), Ok("/admin/"), "{}", seed.name);
        }
    }
}
