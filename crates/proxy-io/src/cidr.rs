//! [`Cidr`]: an IPv4 or IPv6 network (`10.0.0.0/8`, `2001:db8::/32`, or a bare address for one
//! host), to say which peers are trusted load balancers allowed to send a PROXY header.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The private address space cluster pod and node networks are drawn from: RFC 1918
/// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, RFC 6598 `100.64.0.0/10` and IPv6 unique local
/// `fc00::/7`. Public and loopback addresses are outside it.
pub const PRIVATE_NETWORKS: [(IpAddr, u8); 5] = [
    (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8),
    (IpAddr::V4(Ipv4Addr::new(172, 16, 0, 0)), 12),
    (IpAddr::V4(Ipv4Addr::new(192, 168, 0, 0)), 16),
    (IpAddr::V4(Ipv4Addr::new(100, 64, 0, 0)), 10),
    (IpAddr::V6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0)), 7),
];

/// `networks` (address, prefix length) as [`Cidr`]s.
pub fn networks(networks: &[(IpAddr, u8)]) -> Vec<Cidr> {
    networks
        .iter()
        .filter_map(|(addr, prefix)| Cidr::new(*addr, *prefix))
        .collect()
}

/// Bits in an IPv4 address.
const V4_BITS: u8 = 32;
/// Bits in an IPv6 address.
const V6_BITS: u8 = 128;

/// Why a network could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The part before `/` is not an IP address.
    #[error("{0:?} is not an IP address")]
    Address(String),
    /// The prefix length is not a number or exceeds the family's bits.
    #[error("{0:?} is not a valid prefix length for this address family")]
    Prefix(String),
}

/// An IP network: the addresses sharing the first `prefix` bits of `addr`. Host bits of `addr`
/// are cleared when parsed or built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network of `addr` with a `prefix`-bit mask, or `None` when `prefix` exceeds the
    /// family's bits.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let bits = family_bits(addr);
        (prefix <= bits).then(|| Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// The network address (host bits cleared).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a peer
    /// of a dual-stack listener appears) is treated as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        family_bits(ip) == family_bits(self.addr) && mask(ip, self.prefix) == self.addr
    }
}

/// Whether any of `networks` contains `ip`.
pub fn any_contains(networks: &[Cidr], ip: IpAddr) -> bool {
    networks.iter().any(|n| n.contains(ip))
}

fn family_bits(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => V4_BITS,
        IpAddr::V6(_) => V6_BITS,
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let keep = u32::MAX
                .checked_shl(u32::from(V4_BITS - prefix))
                .unwrap_or(0);
            IpAddr::V4((u32::from(v4) & keep).into())
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX
                .checked_shl(u32::from(V6_BITS - prefix))
                .unwrap_or(0);
            IpAddr::V6((u128::from(v6) & keep).into())
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Parses `ADDR/PREFIX`, or a bare `ADDR` (a single host). An IPv4-mapped IPv6 network is kept
    /// as written (it only matches peers whose canonical address is IPv6).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::Address(addr.to_owned()))?;
        let prefix = match prefix {
            None => family_bits(addr),
            Some(p) => p.parse().map_err(|_| CidrError::Prefix(p.to_owned()))?,
        };
        Cidr::new(addr, prefix).ok_or_else(|| CidrError::Prefix(prefix.to_string()))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_networks_and_clears_host_bits() {
        let n: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert_eq!(n.prefix(), 8);
        let n: Cidr = "2001:db8::1/32".parse().unwrap();
        assert_eq!(n.to_string(), "2001:db8::/32");
        assert_eq!(
            "192.0.2.7".parse::<Cidr>().unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().unwrap().to_string(),
            "0.0.0.0/0"
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::Prefix(_))
        ));
        assert!(matches!(
            "::/129".parse::<Cidr>(),
            Err(CidrError::Prefix(_))
        ));
        assert!(matches!(
            "10.0.0.0/x".parse::<Cidr>(),
            Err(CidrError::Prefix(_))
        ));
        assert!(matches!(
            "10.0.0/8".parse::<Cidr>(),
            Err(CidrError::Address(_))
        ));
        assert!(matches!("".parse::<Cidr>(), Err(CidrError::Address(_))));
    }

    #[test]
    fn contains_exactly_the_network() {
        let n: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains(ip("10.0.0.0")));
        assert!(n.contains(ip("10.255.255.255")));
        assert!(!n.contains(ip("11.0.0.0")));
        assert!(!n.contains(ip("9.255.255.255")));
        let n: Cidr = "192.0.2.128/25".parse().unwrap();
        assert!(n.contains(ip("192.0.2.200")));
        assert!(!n.contains(ip("192.0.2.127")));
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert!(host.contains(ip("127.0.0.1")));
        assert!(!host.contains(ip("127.0.0.2")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        assert!(!all.contains(ip("2001:db8::1")), "families never mix");
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
    }

    #[test]
    fn private_networks_hold_pod_addresses_and_no_public_or_loopback_one() {
        let private = networks(&PRIVATE_NETWORKS);
        assert_eq!(private.len(), PRIVATE_NETWORKS.len());
        for inside in [
            "10.244.1.7",
            "172.31.0.1",
            "192.168.5.5",
            "100.64.0.9",
            "fd00::1",
        ] {
            assert!(any_contains(&private, ip(inside)), "{inside}");
        }
        for outside in [
            "127.0.0.1",
            "203.0.113.9",
            "172.32.0.1",
            "::1",
            "2001:db8::1",
        ] {
            assert!(!any_contains(&private, ip(outside)), "{outside}");
        }
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_networks() {
        let n: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains(ip("::ffff:10.1.2.3")));
        assert!(!n.contains(ip("::ffff:11.1.2.3")));
        assert!(any_contains(&[n, "::1".parse().unwrap()], ip("::1")));
        assert!(!any_contains(&[], ip("::1")));
    }
}
