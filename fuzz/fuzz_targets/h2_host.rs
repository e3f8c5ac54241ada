//! Fuzzes the cleartext HTTP/2 host sniffer (preface, frames, HPACK): never panics, a found host
//! is found again, identical, in exactly the bytes it claims to span, and the input is taken as
//! frames after the preface too, so the fuzzer need not find the preface itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check(data);
    check(&[&bulkhead_sniff::H2_PREFACE[..], data].concat());
});

fn check(data: &[u8]) {
    if let Ok(Some(info)) = bulkhead_sniff::sniff_h2_host(data) {
        assert!(info.head_len <= data.len());
        assert!(info.head_len <= bulkhead_sniff::MAX_HTTP_HEAD);
        let again = bulkhead_sniff::sniff_h2_host(&data[..info.head_len]);
        assert_eq!(again.ok().flatten(), Some(info));
    }
}
