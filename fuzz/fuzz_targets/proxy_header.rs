//! Fuzzes the PROXY v1/v2 parser: never panics, a header never exceeds the limit, and a parsed
//! header parses again, identical, from exactly its own bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((header, len))) = bulkhead_proxy_io::parse_proxy_header(data) {
        assert!(len <= data.len());
        assert!(len <= bulkhead_proxy_io::MAX_PROXY_HEADER);
        let again = bulkhead_proxy_io::parse_proxy_header(&data[..len]);
        assert_eq!(again.ok().flatten(), Some((header, len)));
    }
});
