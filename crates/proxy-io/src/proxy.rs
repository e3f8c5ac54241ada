//! The PROXY protocol (HAProxy, v1 text and v2 binary): how the edge tells a tenant router who the
//! client is. The edge writes v2 ([`encode_v2`]); the router reads v1 or v2 ([`read_proxy_header`]).
//!
//! Limits: a v2 header (addresses and TLVs) of at most [`MAX_PROXY_HEADER`] bytes, a v1 line of at
//! most 107 bytes (the specification's maximum). TLVs are accepted and ignored.

use ppp::v2::{Addresses, Builder, Command, IPv4, IPv6, Protocol};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest PROXY header accepted: the v2 fixed part, addresses and TLVs (a v1 line is at most 107).
pub const MAX_PROXY_HEADER: usize = 536;
/// The specification's maximum v1 line, `PROXY ... \r\n` included.
const MAX_V1_LINE: usize = 107;
/// The v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/protocol, length.
const V2_FIXED_LEN: usize = 16;
/// Version 2, command PROXY.
const V2_PROXY_COMMAND: u8 = 0x21;
/// The v1 line prefix.
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// Most bytes asked of the peer in one read while looking for the header.
const READ_CHUNK: u64 = 4096;

/// The client and the address it connected to, as a PROXY header carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyAddresses {
    /// The original client (the peer of the edge).
    pub source: SocketAddr,
    /// The address the client connected to (the edge's listener).
    pub destination: SocketAddr,
}

/// A decoded PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The connection was relayed for this client.
    Proxied(ProxyAddresses),
    /// A LOCAL command (health check from the proxy itself) or an UNKNOWN / unspecified / UNIX
    /// family: use the connection's own addresses.
    Local,
}

/// Why no PROXY header could be read.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The bytes are not a valid PROXY header (or it exceeds [`MAX_PROXY_HEADER`]).
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    /// The header was not complete before the deadline.
    #[error("timed out waiting for the PROXY header")]
    Timeout,
    /// The peer closed the connection before the header was complete.
    #[error("peer closed the connection before sending a complete PROXY header")]
    Closed,
    /// Reading failed.
    #[error("i/o error while reading the PROXY header: {0}")]
    Io(#[from] io::Error),
}

impl ProxyError {
    /// A short, stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Timeout => "timeout",
            Self::Closed => "closed",
            Self::Io(_) => "io",
        }
    }
}

/// Encodes a PROXY v2 header with the PROXY command over TCP. When the two addresses are of
/// different families, both are written as IPv6 (IPv4-mapped), since one header has one family.
pub fn encode_v2(addrs: &ProxyAddresses) -> Vec<u8> {
    let addresses = match (addrs.source, addrs.destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            Addresses::IPv4(IPv4::new(*s.ip(), *d.ip(), s.port(), d.port()))
        }
        (s, d) => Addresses::IPv6(IPv6::new(to_v6(s.ip()), to_v6(d.ip()), s.port(), d.port())),
    };
    Builder::with_addresses(V2_PROXY_COMMAND, Protocol::Stream, addresses)
        .build()
        .expect("an address block of at most 36 bytes always fits the 16-bit length")
}

fn to_v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Parses one PROXY v1 or v2 header at the start of `buf`: `Ok(None)` while more bytes are needed,
/// otherwise the header and its length in bytes. An error is final whatever follows.
pub fn parse_proxy_header(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    match buf.first() {
        None => Ok(None),
        Some(&b) if b == V2_SIGNATURE[0] => parse_v2(buf),
        Some(&b) if b == V1_PREFIX[0] => parse_v1(buf),
        Some(_) => Err(malformed(
            "the connection does not start with a PROXY header",
        )),
    }
}

fn malformed(msg: impl Into<String>) -> ProxyError {
    ProxyError::Malformed(msg.into())
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let seen = buf.len().min(V2_SIGNATURE.len());
    if buf[..seen] != V2_SIGNATURE[..seen] {
        return Err(malformed("bad v2 signature"));
    }
    let Some(fixed) = buf.get(..V2_FIXED_LEN) else {
        return Ok(None);
    };
    let total = V2_FIXED_LEN + usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if total > MAX_PROXY_HEADER {
        return Err(malformed(format!(
            "v2 header of {total} bytes exceeds {MAX_PROXY_HEADER}"
        )));
    }
    let Some(bytes) = buf.get(..total) else {
        return Ok(None);
    };
    let header = ppp::v2::Header::try_from(bytes).map_err(|e| malformed(e.to_string()))?;
    let proxied = match (header.command, header.addresses) {
        (Command::Local, _) => ProxyHeader::Local,
        (Command::Proxy, _) if header.protocol == Protocol::Datagram => {
            return Err(malformed("v2 header announces a datagram connection"))
        }
        (Command::Proxy, Addresses::IPv4(a)) => ProxyHeader::Proxied(ProxyAddresses {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        }),
        (Command::Proxy, Addresses::IPv6(a)) => ProxyHeader::Proxied(ProxyAddresses {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        }),
        (Command::Proxy, Addresses::Unspecified | Addresses::Unix(_)) => ProxyHeader::Local,
    };
    Ok(Some((proxied, total)))
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let seen = buf.len().min(V1_PREFIX.len());
    if buf[..seen] != V1_PREFIX[..seen] {
        return Err(malformed("bad v1 prefix"));
    }
    let window = &buf[..buf.len().min(MAX_V1_LINE)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_V1_LINE {
            Err(malformed("v1 line longer than 107 bytes"))
        } else {
            Ok(None)
        };
    };
    let line = &buf[..=newline];
    if !line.ends_with(b"\r\n") || line[..line.len() - 2].contains(&b'\r') {
        return Err(malformed("v1 line does not end with a single CRLF"));
    }
    let header = ppp::v1::Header::try_from(line).map_err(|e| malformed(e.to_string()))?;
    let proxied = match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => ProxyHeader::Proxied(ProxyAddresses {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        }),
        ppp::v1::Addresses::Tcp6(a) => ProxyHeader::Proxied(ProxyAddresses {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        }),
        ppp::v1::Addresses::Unknown => ProxyHeader::Local,
    };
    Ok(Some((proxied, line.len())))
}

/// Reads one PROXY v1 or v2 header from `r` into `buf` (appending; `buf` may already hold the first
/// bytes of the stream) and removes exactly the header bytes from the front of `buf`, leaving any
/// payload bytes that followed. Fails with [`ProxyError::Timeout`] after `timeout`. Cancel-safe with
/// respect to `buf`: it always holds exactly the bytes received and not yet consumed.
pub async fn read_proxy_header<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Result<ProxyHeader, ProxyError> {
    let read = async {
        loop {
            if let Some((header, len)) = parse_proxy_header(buf)? {
                buf.drain(..len);
                return Ok(header);
            }
            buf.reserve(4096);
            if (&mut *r).take(READ_CHUNK).read_buf(buf).await? == 0 {
                return Err(ProxyError::Closed);
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ProxyError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use tokio::io::AsyncWriteExt;

    fn addrs(source: &str, destination: &str) -> ProxyAddresses {
        ProxyAddresses {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        }
    }

    #[test]
    fn v2_round_trips_ipv4_and_ipv6() {
        for a in [
            addrs("192.0.2.1:51000", "10.0.0.1:443"),
            addrs("[2001:db8::1]:51000", "[2001:db8::2]:80"),
        ] {
            let bytes = encode_v2(&a);
            assert!(bytes.starts_with(V2_SIGNATURE));
            let (h, n) = parse_proxy_header(&bytes).unwrap().unwrap();
            assert_eq!(h, ProxyHeader::Proxied(a));
            assert_eq!(n, bytes.len());
        }
    }

    #[test]
    fn v2_ipv4_header_is_the_specified_28_bytes() {
        let bytes = encode_v2(&addrs("127.0.0.1:80", "127.0.0.2:443"));
        let mut expected = V2_SIGNATURE.to_vec();
        expected.extend_from_slice(&[0x21, 0x11, 0, 12, 127, 0, 0, 1, 127, 0, 0, 2, 0, 80, 1, 187]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn mixed_families_are_written_as_mapped_ipv6() {
        let bytes = encode_v2(&addrs("192.0.2.1:1", "[::1]:2"));
        let (h, _) = parse_proxy_header(&bytes).unwrap().unwrap();
        assert_eq!(
            h,
            ProxyHeader::Proxied(ProxyAddresses {
                source: SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped(), 1)),
                destination: "[::1]:2".parse().unwrap(),
            })
        );
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let line = b"PROXY TCP4 192.0.2.1 10.0.0.1 51000 443\r\nGET";
        let (h, n) = parse_proxy_header(line).unwrap().unwrap();
        assert_eq!(
            h,
            ProxyHeader::Proxied(addrs("192.0.2.1:51000", "10.0.0.1:443"))
        );
        assert_eq!(&line[n..], b"GET");
        let line = b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n";
        let (h, _) = parse_proxy_header(line).unwrap().unwrap();
        assert_eq!(h, ProxyHeader::Proxied(addrs("[2001:db8::1]:1", "[::1]:2")));
        let (h, n) = parse_proxy_header(b"PROXY UNKNOWN\r\nx").unwrap().unwrap();
        assert_eq!((h, n), (ProxyHeader::Local, 15));
    }

    #[test]
    fn v2_local_command_and_unspecified_family_are_local() {
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(
            parse_proxy_header(&local).unwrap(),
            Some((ProxyHeader::Local, 16))
        );
        let mut unspec = V2_SIGNATURE.to_vec();
        unspec.extend_from_slice(&[0x21, 0x00, 0, 0]);
        assert_eq!(
            parse_proxy_header(&unspec).unwrap(),
            Some((ProxyHeader::Local, 16))
        );
    }

    #[test]
    fn v2_tlvs_are_skipped() {
        let mut bytes = encode_v2(&addrs("192.0.2.1:1", "10.0.0.1:2"));
        bytes[15] += 7;
        bytes.extend_from_slice(&[0x04, 0x00, 0x04, 1, 2, 3, 4]); // PP2_TYPE_NOOP
        bytes.extend_from_slice(b"payload");
        let (h, n) = parse_proxy_header(&bytes).unwrap().unwrap();
        assert!(matches!(h, ProxyHeader::Proxied(_)));
        assert_eq!(&bytes[n..], b"payload");
    }

    #[test]
    fn oversized_v2_and_v1_are_malformed() {
        let mut big = V2_SIGNATURE.to_vec();
        big.extend_from_slice(&[0x21, 0x11, 0x02, 0x10]);
        assert!(matches!(
            parse_proxy_header(&big),
            Err(ProxyError::Malformed(_))
        ));
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(120, b'1');
        assert!(matches!(
            parse_proxy_header(&long),
            Err(ProxyError::Malformed(_))
        ));
    }

    #[test]
    fn missing_header_is_malformed_at_once() {
        assert!(matches!(
            parse_proxy_header(&[0x16, 0x03, 0x01]),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            parse_proxy_header(b"GET / HTTP/1.1\r\n"),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            parse_proxy_header(b"PROXZ"),
            Err(ProxyError::Malformed(_))
        ));
    }

    #[test]
    fn datagram_is_malformed() {
        let mut bytes = encode_v2(&addrs("192.0.2.1:1", "10.0.0.1:2"));
        bytes[13] = 0x12;
        assert!(matches!(
            parse_proxy_header(&bytes),
            Err(ProxyError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn read_removes_exactly_the_header_over_tcp() {
        let (mut client, mut server) = crate::test_support::tcp_pair().await;
        let a = addrs("192.0.2.7:4242", "10.0.0.1:443");
        let mut bytes = encode_v2(&a);
        bytes.extend_from_slice(b"\x16\x03\x01hello");
        for chunk in bytes.chunks(5) {
            client.write_all(chunk).await.unwrap();
        }
        let mut buf = Vec::new();
        let h = read_proxy_header(&mut server, &mut buf, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(h, ProxyHeader::Proxied(a));
        let mut rest = buf.clone();
        while rest.len() < 8 {
            let mut more = [0u8; 16];
            let n = server.read(&mut more).await.unwrap();
            rest.extend_from_slice(&more[..n]);
        }
        assert_eq!(rest, b"\x16\x03\x01hello");
    }

    #[tokio::test]
    async fn closed_before_the_header_is_closed() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"PROXY TCP4 ").await.unwrap();
        drop(client);
        let mut buf = Vec::new();
        let err = read_proxy_header(&mut server, &mut buf, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::Closed), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn silent_peer_times_out() {
        let (_client, mut server) = tokio::io::duplex(64);
        let mut buf = Vec::new();
        let err = read_proxy_header(&mut server, &mut buf, Duration::from_secs(3))
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::Timeout), "{err:?}");
    }

    fn socket_pair() -> impl Strategy<Value = ProxyAddresses> {
        let v4 = (
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<[u8; 4]>(),
            any::<u16>(),
        )
            .prop_map(|(s, sp, d, dp)| ProxyAddresses {
                source: SocketAddr::from((Ipv4Addr::from(s), sp)),
                destination: SocketAddr::from((Ipv4Addr::from(d), dp)),
            });
        let v6 = (
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<[u8; 16]>(),
            any::<u16>(),
        )
            .prop_map(|(s, sp, d, dp)| ProxyAddresses {
                source: SocketAddr::from((Ipv6Addr::from(s), sp)),
                destination: SocketAddr::from((Ipv6Addr::from(d), dp)),
            });
        prop_oneof![v4, v6]
    }

    fn v1_line(a: &ProxyAddresses) -> String {
        let family = if a.source.is_ipv4() { "TCP4" } else { "TCP6" };
        format!(
            "PROXY {family} {} {} {} {}\r\n",
            a.source.ip(),
            a.destination.ip(),
            a.source.port(),
            a.destination.port()
        )
    }

    proptest! {
        #[test]
        fn encode_then_parse_round_trips(a in socket_pair(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = encode_v2(&a);
            let len = bytes.len();
            bytes.extend_from_slice(&payload);
            prop_assert_eq!(parse_proxy_header(&bytes).unwrap(), Some((ProxyHeader::Proxied(a), len)));
        }

        #[test]
        fn any_prefix_of_a_v2_header_needs_more(a in socket_pair(), cut in any::<prop::sample::Index>()) {
            let bytes = encode_v2(&a);
            let at = cut.index(bytes.len());
            prop_assert!(parse_proxy_header(&bytes[..at]).unwrap().is_none());
        }

        #[test]
        fn any_prefix_of_a_v1_line_needs_more_and_the_whole_parses(
            a in socket_pair(),
            cut in any::<prop::sample::Index>(),
        ) {
            let line = v1_line(&a);
            let bytes = line.as_bytes();
            let at = cut.index(bytes.len());
            prop_assert!(parse_proxy_header(&bytes[..at]).unwrap().is_none());
            prop_assert_eq!(
                parse_proxy_header(bytes).unwrap(),
                Some((ProxyHeader::Proxied(a), bytes.len()))
            );
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = parse_proxy_header(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_the_v2_signature_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut input = V2_SIGNATURE.to_vec();
            input.extend_from_slice(&bytes);
            let _ = parse_proxy_header(&input);
        }

        #[test]
        fn arbitrary_v1_text_never_panics(text in "PROXY [ -~\r\n]{0,120}") {
            let _ = parse_proxy_header(text.as_bytes());
        }
    }
}
