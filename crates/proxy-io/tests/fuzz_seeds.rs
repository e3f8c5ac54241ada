//! Replays the fuzz seeds (`fuzz/seeds/proxy_header/`, regression inputs included) through the
//! PROXY parser: none may panic, and the valid seeds must keep parsing.

use bulkhead_proxy_io::{parse_proxy_header, ProxyHeader};
use bulkhead_test_support::fuzz::seeds;

#[test]
fn proxy_header_seeds_replay() {
    for seed in seeds("proxy_header") {
        let (name, bytes) = (&seed.name, &seed.bytes);
        let result = parse_proxy_header(bytes);
        if seed.is_regression() {
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
}
