//! [`SourceKey`]: the identity a per-source limit counts by.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Bits of an IPv6 address that name one subscriber: a /64 is the usual smallest allocation, so
/// counting by full address would let one host rotate through 2^64 identities.
const V6_SOURCE_PREFIX_BITS: u32 = 64;

/// Who a connection is from, for limiting: an IPv4 address, or the /64 network of an IPv6 address.
/// An IPv4-mapped IPv6 address counts as the IPv4 address it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SourceKey {
    /// One IPv4 address.
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address (its /64 network).
    V6(u64),
}

impl SourceKey {
    /// The source key of a peer address.
    pub fn of(ip: IpAddr) -> SourceKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => SourceKey::V4(v4),
            IpAddr::V6(v6) => {
                let network = u128::from(v6) >> (128 - V6_SOURCE_PREFIX_BITS);
                // The shift leaves at most 64 significant bits.
                SourceKey::V6(u64::try_from(network).unwrap_or(u64::MAX))
            }
        }
    }
}

/// One 64-bit word per key, so the keyed hash (SipHash, see `Shards`) takes one write, not
/// three (the derived impl writes the discriminant, a length and the octets). An IPv4 key and
/// the IPv6 /64 with the same number hash alike; equality still tells them apart, and no such /64
/// is routable (its upper 32 bits are zero).
impl Hash for SourceKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(match self {
            SourceKey::V4(v4) => u64::from(u32::from(*v4)),
            SourceKey::V6(network) => *network,
        });
    }
}

impl fmt::Display for SourceKey {
    /// `203.0.113.7`, or `2001:db8:1:2::/64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceKey::V4(v4) => write!(f, "{v4}"),
            SourceKey::V6(network) => {
                let addr = Ipv6Addr::from(u128::from(*network) << (128 - V6_SOURCE_PREFIX_BITS));
                write!(f, "{addr}/{V6_SOURCE_PREFIX_BITS}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> SourceKey {
        SourceKey::of(s.parse().unwrap())
    }

    fn hash_of(key: &SourceKey) -> u64 {
        std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), key)
    }

    #[test]
    fn equal_keys_hash_alike_and_different_ones_apart() {
        let hasher = std::hash::RandomState::new();
        let h = |s: &str| std::hash::BuildHasher::hash_one(&hasher, key(s));
        assert_eq!(h("::ffff:203.0.113.7"), h("203.0.113.7"));
        assert_eq!(h("2001:db8:1:2::1"), h("2001:db8:1:2::9"));
        assert_ne!(h("203.0.113.7"), h("203.0.113.8"));
        assert_ne!(h("2001:db8:1:2::1"), h("2001:db8:1:3::1"));
        // Keyed: another hasher, another value (a 2^-64 chance of a false failure).
        assert_ne!(hash_of(&key("203.0.113.7")), h("203.0.113.7"));
    }

    #[test]
    fn ipv4_counts_by_address() {
        assert_eq!(key("203.0.113.7"), key("203.0.113.7"));
        assert_ne!(key("203.0.113.7"), key("203.0.113.8"));
        assert_eq!(key("203.0.113.7").to_string(), "203.0.113.7");
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        assert_eq!(key("::ffff:203.0.113.7"), key("203.0.113.7"));
        assert_ne!(
            key("::203.0.113.7"),
            key("203.0.113.7"),
            "compatible is not mapped"
        );
    }

    #[test]
    fn ipv6_counts_by_slash_64() {
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("2001:db8:1:2:abcd::1").to_string(), "2001:db8:1:2::/64");
    }
}
