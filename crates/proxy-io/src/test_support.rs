//! Helpers shared by this crate's unit tests.

pub(crate) use bulkhead_test_support::net::tcp_pair;
use rand::RngCore;

/// `len` random bytes.
pub(crate) fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rng().fill_bytes(&mut v);
    v
}
