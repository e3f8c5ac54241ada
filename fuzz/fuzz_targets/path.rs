//! Fuzzes the request path normaliser: never panics, its output is canonical (normalising it again
//! changes nothing) and holds no `//`, `.` or `..` segment.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(once) = bulkhead_pathnorm::normalize_path(text) {
        let twice = bulkhead_pathnorm::normalize_path(&once).expect("canonical output is valid");
        assert_eq!(twice, once);
        if once != "*" {
            assert!(once.starts_with('/'));
            assert!(!once.contains("//"));
            assert!(once.split('/').all(|s| s != "." && s != ".."));
        }
    }
});
