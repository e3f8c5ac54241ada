//! Fuzzes the request path normaliser under every escaped-slash policy (chosen by the first byte):
//! never panics, its output is canonical (normalising it again changes nothing and decodes no
//! slash) and holds no `//`, no `\`, no `.` or `..` segment (with or without `;` parameters), and
//! no escaped slash unless the policy keeps them.
#![no_main]

use bulkhead_pathnorm::{normalize_path_with, EscapedSlashes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (policy, _) = EscapedSlashes::ALL[usize::from(selector) % EscapedSlashes::ALL.len()];
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if let Ok(once) = normalize_path_with(text, policy) {
        let twice = normalize_path_with(&once.path, policy).expect("canonical output is valid");
        assert_eq!(twice.path, once.path);
        assert!(!twice.unescaped_slashes);
        let path = &*once.path;
        if path != "*" {
            assert!(path.starts_with('/'));
            assert!(!path.contains("//") && !path.contains('\\'));
            assert!(path
                .split('/')
                .map(|s| s.split(';').next().unwrap_or_default())
                .all(|s| s != "." && s != ".."));
            if policy != EscapedSlashes::KeepUnchanged {
                assert!(!path.contains("%2F") && !path.contains("%5C"));
            }
        }
    }
});
