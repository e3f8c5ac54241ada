//! Replays the fuzz seeds (`fuzz/seeds/<target>/`, regression inputs included) through the parsers:
//! none may panic, and the named valid seeds must keep parsing to what they contain.

use bulkhead_test_support::fuzz::seeds;

#[test]
fn client_hello_seeds_replay() {
    for seed in seeds("client_hello") {
        let result = bulkhead_sniff::sniff_client_hello(&seed.bytes);
        if !seed.is_regression() {
            let name = &seed.name;
            let info = result.unwrap_or_else(|e| panic!("{name}: {e}")).unwrap();
            assert_eq!(info.sni.as_deref(), Some("a.example.com"), "{name}");
            assert_eq!(info.alpn, ["h2", "http/1.1"], "{name}");
        }
    }
}

#[test]
fn http_host_seeds_replay() {
    for seed in seeds("http_host") {
        let result = bulkhead_sniff::sniff_http_host(&seed.bytes);
        if !seed.is_regression() {
            let name = &seed.name;
            let info = result.unwrap_or_else(|e| panic!("{name}: {e}")).unwrap();
            assert_eq!(info.host.to_string(), "www.example.com", "{name}");
        }
    }
}

#[test]
fn h2_host_seeds_replay() {
    for seed in seeds("h2_host") {
        let result = bulkhead_sniff::sniff_h2_host(&seed.bytes);
        if !seed.is_regression() {
            let name = &seed.name;
            let info = result.unwrap_or_else(|e| panic!("{name}: {e}")).unwrap();
            assert_eq!(info.host.to_string(), "www.example.com", "{name}");
        }
    }
}
