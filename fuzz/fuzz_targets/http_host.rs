//! Fuzzes the HTTP Host sniffer: never panics, and a found head is found again, identical, in
//! exactly the bytes it claims to span.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(info)) = bulkhead_sniff::sniff_http_host(data) {
        assert!(info.head_len <= data.len());
        assert!(info.head_len <= bulkhead_sniff::MAX_HTTP_HEAD);
        let again = bulkhead_sniff::sniff_http_host(&data[..info.head_len]);
        assert_eq!(again.ok().flatten(), Some(info));
    }
});
