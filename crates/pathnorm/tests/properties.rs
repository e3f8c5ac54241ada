//! Property tests: the normaliser agrees with RFC 3986's own algorithm (after the escaped-slash
//! policy, `\` as `/` and `;` parameters of dot segments), is idempotent under every policy, and
//! its output has none of the spellings it exists to remove.

use bulkhead_pathnorm::{normalize_path, normalize_path_with, EscapedSlashes, PathError};
use proptest::prelude::*;

/// RFC 3986 section 5.2.4, written as the RFC states it (an input buffer consumed from the left),
/// as an oracle independent of the crate's segment stack.
fn rfc_remove_dot_segments(input: &str) -> String {
    let mut input = input.to_owned();
    let mut output = String::new();
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../") {
            input = rest.to_owned();
        } else if let Some(rest) = input.strip_prefix("./") {
            input = rest.to_owned();
        } else if input.starts_with("/./") {
            input.replace_range(..3, "/");
        } else if input == "/." {
            input = "/".to_owned();
        } else if input.starts_with("/../") || input == "/.." {
            let len = if input == "/.." { 3 } else { 4 };
            input.replace_range(..len, "/");
            match output.rfind('/') {
                Some(i) => output.truncate(i),
                None => output.clear(),
            }
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input.replace_range(..end, "");
        }
    }
    output
}

/// The oracle for the whole normaliser: decode unreserved escapes (checking every escape) and, per
/// `policy`, escaped slashes; `\` as `/`; merge slashes; drop the `;` parameters of `.` and `..`
/// segments; then RFC 5.2.4.
fn oracle(path: &str, policy: EscapedSlashes) -> Result<String, PathError> {
    if path.is_empty() {
        return Ok("/".to_owned());
    }
    if path == "*" {
        return Ok(path.to_owned());
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let bytes = path.as_bytes();
    let mut decoded = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = path
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or(PathError::BadEscape(i))?;
            let v = u8::from_str_radix(hex, 16).expect("hex digits");
            if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                decoded.push(char::from(v));
            } else if (v == b'/' || v == b'\\') && policy != EscapedSlashes::KeepUnchanged {
                if policy == EscapedSlashes::Reject {
                    return Err(PathError::EscapedSlash(i));
                }
                decoded.push('/');
            } else {
                decoded.push_str(&format!("%{v:02X}"));
            }
            i += 3;
        } else {
            let c = path[i..].chars().next().expect("char boundary");
            decoded.push(if c == '\\' { '/' } else { c });
            i += c.len_utf8();
        }
    }
    let mut merged = String::new();
    for c in decoded.chars() {
        if !(c == '/' && merged.ends_with('/')) {
            merged.push(c);
        }
    }
    let segments: Vec<&str> = merged
        .split('/')
        .map(|seg| match seg.split_once(';') {
            Some((head @ ("." | ".."), _)) => head,
            _ => seg,
        })
        .collect();
    let out = rfc_remove_dot_segments(&segments.join("/"));
    Ok(if out.is_empty() { "/".to_owned() } else { out })
}

/// Paths built from the pieces that matter: separators, dots, escapes (valid, unreserved, reserved,
/// malformed) and ordinary characters.
fn path_strategy() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("%2e".to_owned()),
        Just("%2E".to_owned()),
        Just("%2f".to_owned()),
        Just("%2F".to_owned()),
        Just("%5c".to_owned()),
        Just("\\".to_owned()),
        Just(";".to_owned()),
        Just("..;".to_owned()),
        Just(".;x=1".to_owned()),
        Just("%41".to_owned()),
        Just("%c3%a9".to_owned()),
        Just("%".to_owned()),
        Just("%4".to_owned()),
        "[a-c]{1,3}",
        "%[0-9a-fA-F]{2}",
        Just("é".to_owned()),
    ];
    (any::<bool>(), proptest::collection::vec(piece, 0..16)).prop_map(|(rooted, pieces)| {
        format!("{}{}", if rooted { "/" } else { "" }, pieces.concat())
    })
}

fn any_policy() -> impl Strategy<Value = EscapedSlashes> {
    prop::sample::select(EscapedSlashes::ALL.map(|(p, _)| p).to_vec())
}

/// The output is canonical: rooted, no `//`, no dot segment (with or without `;` parameters), no
/// `\`, and every escape upper-case and of a byte that must stay escaped.
fn assert_canonical(once: &str, policy: EscapedSlashes) -> Result<(), TestCaseError> {
    if once == "*" {
        return Ok(());
    }
    prop_assert!(once.starts_with('/'));
    prop_assert!(!once.contains("//"), "{once}");
    prop_assert!(!once.contains('\\'), "{once}");
    for segment in once.split('/') {
        let head = segment.split(';').next().unwrap_or_default();
        prop_assert!(head != "." && head != "..", "{once}");
    }
    for (i, _) in once.match_indices('%') {
        let hex = &once[i + 1..i + 3];
        prop_assert_eq!(hex, hex.to_ascii_uppercase());
        let v = u8::from_str_radix(hex, 16).expect("valid escape");
        prop_assert!(
            !(v.is_ascii_alphanumeric() || b"-._~".contains(&v)),
            "{once}"
        );
        if policy != EscapedSlashes::KeepUnchanged {
            prop_assert!(v != b'/' && v != b'\\', "{once}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn agrees_with_the_rfc_algorithm(path in path_strategy(), policy in any_policy()) {
        let got = normalize_path_with(&path, policy).map(|n| n.path.into_owned());
        prop_assert_eq!(got, oracle(&path, policy), "path {:?}", path);
    }

    #[test]
    fn is_idempotent_and_leaves_no_alternative_spelling(path in path_strategy(), policy in any_policy()) {
        if let Ok(once) = normalize_path_with(&path, policy) {
            let twice = normalize_path_with(&once.path, policy).expect("canonical output is valid");
            prop_assert_eq!(&*twice.path, &*once.path);
            prop_assert!(!twice.unescaped_slashes);
            assert_canonical(&once.path, policy)?;
        }
    }

    #[test]
    fn the_default_policy_unescapes_slashes(path in path_strategy()) {
        let default = normalize_path(&path);
        let explicit = normalize_path_with(&path, EscapedSlashes::UnescapeAndRedirect).map(|n| n.path);
        prop_assert_eq!(default, explicit);
    }

    #[test]
    fn arbitrary_strings_never_panic(path in "\\PC{0,40}", policy in any_policy()) {
        let _ = normalize_path_with(&path, policy);
    }
}
