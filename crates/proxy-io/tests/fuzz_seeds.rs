//! Replays the fuzz seeds (`fuzz/seeds/proxy_header/`, regression inputs included) through the
//! PROXY parser: none may panic, and the valid seeds must keep parsing.

use bulkhead_proxy_io::{parse_proxy_header, ProxyHeader};
use std::path::PathBuf;

#[test]
fn proxy_header_seeds_replay() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/proxy_header");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let result = parse_proxy_header(&bytes);
        count += 1;
        if name.starts_with("regression-") {
            continue;
        }
        let (header, len) = result.unwrap_or_else(|e| panic!("{name}: {e}")).unwrap();
        assert!(len <= bytes.len(), "{name}");
        if name.contains("unknown") {
            assert_eq!(header, ProxyHeader::Local, "{name}");
        } else {
            assert!(matches!(header, ProxyHeader::Proxied(_)), "{name}");
        }
    }
    assert!(count > 0, "no seeds in {}", dir.display());
}
