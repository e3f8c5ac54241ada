//! Fuzzes the ClientHello sniffer: never panics, and a found ClientHello is found again, identical,
//! in exactly the bytes it claims to span.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(info)) = bulkhead_sniff::sniff_client_hello(data) {
        assert!(info.hello_len <= data.len());
        assert!(info.hello_len <= bulkhead_sniff::MAX_CLIENT_HELLO);
        let again = bulkhead_sniff::sniff_client_hello(&data[..info.hello_len]);
        assert_eq!(again.ok().flatten(), Some(info));
    }
});
