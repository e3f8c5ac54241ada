//! The PROXY header of an upstream load balancer. A peer inside
//! [`EdgeConfig::accept_proxy_from`](crate::EdgeConfig::accept_proxy_from) must start with a PROXY
//! v1 or v2 header, and the client it declares is the one the edge forwards; any other peer is
//! its own client, and a PROXY header from it is refused (see [`looks_like_proxy_header`]).

use crate::cidr::{any_contains, Cidr};
use bulkhead_proxy_io::{read_proxy_header, ProxyAddresses, ProxyError, ProxyHeader};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncRead;

/// The PROXY v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The start of a PROXY v1 line.
const V1_PREFIX: &[u8; 6] = b"PROXY ";

/// Who the connection is for: from the PROXY header when `peer` is a trusted load balancer,
/// otherwise the socket's own addresses. Bytes read after the header stay in `buf`. On failure,
/// the refusal reason (a fixed label).
pub(crate) async fn client_addresses<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    peer: SocketAddr,
    local: SocketAddr,
    trusted: &[Cidr],
    timeout: Duration,
) -> Result<ProxyAddresses, &'static str> {
    let own = ProxyAddresses {
        source: peer,
        destination: local,
    };
    if !any_contains(trusted, peer.ip()) {
        return Ok(own);
    }
    match read_proxy_header(r, buf, timeout).await {
        Ok(ProxyHeader::Proxied(declared)) => Ok(declared),
        // A health check of the load balancer itself, or an address family it cannot express.
        Ok(ProxyHeader::Local) => Ok(own),
        Err(ProxyError::Malformed(_)) if !starts_like_proxy_header(buf) => {
            Err("proxy_header_missing")
        }
        Err(ProxyError::Malformed(_)) => Err("proxy_header_malformed"),
        Err(ProxyError::Timeout) => Err("proxy_header_timeout"),
        Err(ProxyError::Closed) => Err("closed"),
        Err(ProxyError::Io(_)) => Err("io"),
    }
}

/// Whether `buf` is a prefix of, or starts with, a PROXY v1 or v2 signature.
fn starts_like_proxy_header(buf: &[u8]) -> bool {
    let prefix_of = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        n > 0 && buf[..n] == sig[..n]
    };
    prefix_of(V2_SIGNATURE) || prefix_of(V1_PREFIX)
}

/// Whether a connection's first bytes are a PROXY header (used to tell why sniffing an untrusted
/// peer failed).
pub(crate) fn looks_like_proxy_header(buf: &[u8]) -> bool {
    buf.starts_with(V2_SIGNATURE) || buf.starts_with(V1_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_proxy_io::encode_v2;
    use tokio::io::AsyncWriteExt;

    const WAIT: Duration = Duration::from_secs(10);

    fn addrs(source: &str, destination: &str) -> ProxyAddresses {
        ProxyAddresses {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        }
    }

    async fn run(
        input: &[u8],
        peer: &str,
        trusted: &[&str],
    ) -> (Result<ProxyAddresses, &'static str>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(input).await.unwrap();
        drop(client);
        let trusted: Vec<Cidr> = trusted.iter().map(|c| c.parse().unwrap()).collect();
        let mut buf = Vec::new();
        let got = client_addresses(
            &mut server,
            &mut buf,
            peer.parse().unwrap(),
            "127.0.0.1:443".parse().unwrap(),
            &trusted,
            WAIT,
        )
        .await;
        (got, buf)
    }

    #[tokio::test]
    async fn untrusted_peers_are_their_own_client_and_nothing_is_read() {
        let (got, buf) = run(b"\x16\x03\x01", "192.0.2.9:5000", &["10.0.0.0/8"]).await;
        assert_eq!(got, Ok(addrs("192.0.2.9:5000", "127.0.0.1:443")));
        assert!(buf.is_empty());
    }

    #[tokio::test]
    async fn trusted_peers_declare_the_client_in_v1_or_v2() {
        let declared = addrs("203.0.113.7:40000", "198.51.100.1:443");
        let mut v2 = encode_v2(&declared);
        v2.extend_from_slice(b"\x16\x03\x01rest");
        let (got, buf) = run(&v2, "10.1.1.1:6000", &["10.0.0.0/8"]).await;
        assert_eq!(got, Ok(declared));
        assert_eq!(buf, b"\x16\x03\x01rest", "bytes after the header are kept");

        let v1 = b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 443\r\nGET / HTTP/1.1\r\n";
        let (got, buf) = run(v1, "10.1.1.1:6000", &["10.0.0.0/8"]).await;
        assert_eq!(got, Ok(declared));
        assert_eq!(buf, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn trusted_peers_without_a_valid_header_are_refused() {
        let (got, _) = run(b"\x16\x03\x01\x00\x05", "10.1.1.1:6000", &["10.0.0.0/8"]).await;
        assert_eq!(got, Err("proxy_header_missing"));
        let (got, _) = run(b"PROXY TCP9 x\r\n", "10.1.1.1:6000", &["10.0.0.0/8"]).await;
        assert_eq!(got, Err("proxy_header_malformed"));
        let (got, _) = run(b"PROXY TCP4 ", "10.1.1.1:6000", &["10.0.0.0/8"]).await;
        assert_eq!(got, Err("closed"));
    }

    #[tokio::test]
    async fn a_local_command_keeps_the_socket_addresses() {
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        let (got, _) = run(&local, "10.1.1.1:6000", &["10.0.0.0/8"]).await;
        assert_eq!(got, Ok(addrs("10.1.1.1:6000", "127.0.0.1:443")));
    }

    #[test]
    fn proxy_headers_are_recognised() {
        assert!(looks_like_proxy_header(b"PROXY TCP4 1.2.3.4"));
        assert!(looks_like_proxy_header(&encode_v2(&addrs(
            "1.2.3.4:1",
            "5.6.7.8:2"
        ))));
        assert!(!looks_like_proxy_header(b"\x16\x03\x01"));
        assert!(!looks_like_proxy_header(b"GET / HTTP/1.1"));
        assert!(starts_like_proxy_header(b"PRO"));
        assert!(starts_like_proxy_header(b"\r\n\r\n"));
        assert!(!starts_like_proxy_header(b""));
        assert!(!starts_like_proxy_header(b"\x16"));
    }
}
