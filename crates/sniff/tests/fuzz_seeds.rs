//! Replays the fuzz seeds (`fuzz/seeds/<target>/`, regression inputs included) through the parsers:
//! none may panic, and the named valid seeds must keep parsing to what they contain.

use std::path::PathBuf;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

#[test]
fn client_hello_seeds_replay() {
    for (name, bytes) in seeds("client_hello") {
        let result = bulkhead_sniff::sniff_client_hello(&bytes);
        if !name.starts_with("regression-") {
            let info = result.unwrap_or_else(|e| panic!("{name}: {e}")).unwrap();
            assert_eq!(info.sni.as_deref(), Some("a.example.com"), "{name}");
            assert_eq!(info.alpn, ["h2", "http/1.1"], "{name}");
        }
    }
}

#[test]
fn http_host_seeds_replay() {
    for (name, bytes) in seeds("http_host") {
        let result = bulkhead_sniff::sniff_http_host(&bytes);
        if !name.starts_with("regression-") {
            let info = result.unwrap_or_else(|e| panic!("{name}: {e}")).unwrap();
            assert_eq!(info.host.to_string(), "www.example.com", "{name}");
        }
    }
}

#[test]
fn h2_host_seeds_replay() {
    for (name, bytes) in seeds("h2_host") {
        let result = bulkhead_sniff::sniff_h2_host(&bytes);
        if !name.starts_with("regression-") {
            let info = result.unwrap_or_else(|e| panic!("{name}: {e}")).unwrap();
            assert_eq!(info.host.to_string(), "www.example.com", "{name}");
        }
    }
}
