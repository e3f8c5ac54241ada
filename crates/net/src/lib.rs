//! Listener binding shared by every Bulkhead process: dual-stack by default, and one address form
//! per client (see the crate README).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clock;
mod stop;
mod when_woken;
pub mod workers;

pub use stop::{HardStop, StopGroup};
pub use when_woken::{when_woken, NotingWaker, WhenWoken};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_util::sync::CancellationToken;

/// Pending connections the kernel queues per listener before `accept` (tokio's default).
pub const LISTEN_BACKLOG: i32 = 1024;

/// The unspecified IPv6 address on `port`: what every listener binds by default (dual-stack).
pub const fn dual_stack(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), port)
}

/// Binds a listener on `addr` (`SO_REUSEADDR`, backlog [`LISTEN_BACKLOG`]). `[::]:PORT` accepts
/// IPv4 clients too (`IPV6_V6ONLY` off); where the host has no IPv6 at all it falls back to
/// `0.0.0.0:PORT`, with a warning. Any other address binds exactly as given. The listener has
/// `TCP_NODELAY`, which every accepted connection inherits (Linux and the BSDs copy it), so no
/// accept loop sets it again: one system call less per connection.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    bind_with(addr, false)
}

/// [`bind`] for a listener that every worker accepts from
/// ([`workers::spawn_accept_loops`]): on a thread that is one of several workers, the socket
/// takes `SO_REUSEPORT`, so that each other worker binds a socket of its own beside it and the
/// kernel spreads the connections over them. Otherwise exactly [`bind`].
pub async fn bind_for_workers(addr: SocketAddr) -> io::Result<TcpListener> {
    bind_with(addr, workers::shared_listeners())
}

fn bind_with(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    match bind_std(addr, reuse_port) {
        Err(e) if is_unspecified_v6(addr) && ipv6_unavailable(&e) => {
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port());
            tracing::warn!(%addr, fallback = %v4, error = %e, "IPv6 is not available; listening on IPv4 only");
            TcpListener::from_std(bind_std(v4, reuse_port)?)
        }
        other => TcpListener::from_std(other?),
    }
}

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) turned into the IPv4 address.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Pause after a failed `accept` (for example out of file descriptors) before accepting again, so
/// a lasting failure does not spin a core.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// A connection taken by [`accept_next`].
#[derive(Debug)]
pub struct Accepted {
    /// The connection.
    pub stream: TcpStream,
    /// The peer's address, [`canonical`].
    pub peer: SocketAddr,
    /// The permit of the listener's slots the connection holds.
    pub permit: OwnedSemaphorePermit,
}

/// The accept step of every listener loop (the edge's and the router's): waits for a permit of
/// `slots` (connections beyond them wait in the kernel's backlog), then for a connection on
/// `listener`. `None` once `stop` is cancelled or `slots` closed. A failed `accept` is logged
/// (with `listener` as the listener's name) and retried after [`ACCEPT_ERROR_BACKOFF`].
///
/// The thread that accepts serves the connection, so from its first connection on it keeps the
/// small blocks it frees for the next requests ([`bulkhead_alloc::cache`]); what it did before
/// (start-up, with its one-off allocations) is not kept.
pub async fn accept_next(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    stop: &CancellationToken,
    name: &str,
) -> Option<Accepted> {
    // Once stopped, nothing more is accepted, even with a connection already waiting.
    if stop.is_cancelled() {
        return None;
    }
    // Under load a slot is free and a connection waits: taken without creating (and registering)
    // the futures that wait for them and for `stop`, which cost more than the accept itself.
    let permit = match Arc::clone(slots).try_acquire_owned() {
        Ok(permit) => permit,
        Err(TryAcquireError::Closed) => return None,
        Err(TryAcquireError::NoPermits) => tokio::select! {
            biased;
            () = stop.cancelled() => return None,
            permit = Arc::clone(slots).acquire_owned() => permit.ok()?,
        },
    };
    // One poll, never a wait: a connection already queued, or the listener registered for the next.
    let mut ready = poll_fn(|cx| Poll::Ready(listener.poll_accept(cx))).await;
    loop {
        let accepted = match ready {
            Poll::Ready(accepted) => accepted,
            Poll::Pending => tokio::select! {
                biased;
                () = stop.cancelled() => return None,
                accepted = listener.accept() => accepted,
            },
        };
        match accepted {
            Ok((stream, peer)) => {
                bulkhead_alloc::cache::enable();
                return Some(Accepted {
                    stream,
                    peer: canonical(peer),
                    permit,
                });
            }
            Err(e) => {
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                ready = Poll::Pending;
            }
        }
    }
}

fn is_unspecified_v6(addr: SocketAddr) -> bool {
    matches!(addr.ip(), IpAddr::V6(ip) if ip.is_unspecified())
}

/// Errors that mean "this host has no IPv6", as opposed to a port in use or a permission problem.
fn ipv6_unavailable(e: &io::Error) -> bool {
    const EAFNOSUPPORT: i32 = 97;
    const EADDRNOTAVAIL: i32 = 99;
    matches!(e.raw_os_error(), Some(EAFNOSUPPORT | EADDRNOTAVAIL))
        || e.kind() == io::ErrorKind::AddrNotAvailable
}

fn bind_std(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if is_unspecified_v6(addr) {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    // Inherited by accepted connections: small flights (TLS handshakes, request heads) go out at
    // once.
    socket.set_tcp_nodelay(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Whether this host can use IPv6 loopback (CI machines might not).
    fn has_ipv6_loopback() -> bool {
        std::net::TcpListener::bind("[::1]:0").is_ok()
    }

    #[tokio::test]
    async fn accept_next_holds_a_slot_per_connection_and_stops_when_told() {
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let slots = Arc::new(Semaphore::new(1));
        let stop = CancellationToken::new();
        let _client = TcpStream::connect(addr).await.expect("connect");
        let first = accept_next(&listener, &slots, &stop, "test")
            .await
            .expect("accepted");
        assert_eq!(first.peer.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(
            slots.available_permits(),
            0,
            "the connection holds the slot"
        );
        let _second = TcpStream::connect(addr).await.expect("connect");
        let waiting = accept_next(&listener, &slots, &stop, "test");
        stop.cancel();
        assert!(waiting.await.is_none(), "no slot, then stopped");
        drop(first);
        assert!(accept_next(&listener, &slots, &stop, "test")
            .await
            .is_none());
    }

    #[tokio::test]
    async fn accepted_connections_inherit_nodelay_from_the_listener() {
        for reuse_port in [false, true] {
            let listener =
                bind_with("127.0.0.1:0".parse().expect("addr"), reuse_port).expect("bind");
            let _client = TcpStream::connect(listener.local_addr().expect("addr"))
                .await
                .expect("connect");
            let (server, _) = listener.accept().await.expect("accept");
            assert!(
                server.nodelay().expect("nodelay"),
                "an accepted connection has TCP_NODELAY (reuse_port {reuse_port})"
            );
        }
    }

    async fn round_trip(listener: &TcpListener, to: SocketAddr) -> SocketAddr {
        let mut client = TcpStream::connect(to).await.expect("connect");
        let (mut server, peer) = listener.accept().await.expect("accept");
        client.write_all(b"x").await.expect("write");
        let mut b = [0u8; 1];
        server.read_exact(&mut b).await.expect("read");
        canonical(peer)
    }

    #[tokio::test]
    async fn the_dual_stack_default_accepts_ipv4_and_ipv6_clients_on_one_socket() {
        if !has_ipv6_loopback() {
            eprintln!("skipped: no IPv6 loopback on this host");
            return;
        }
        let listener = bind(dual_stack(0)).await.expect("bind [::]:0");
        let port = listener.local_addr().expect("local").port();
        let v4 = round_trip(&listener, SocketAddr::from(([127, 0, 0, 1], port))).await;
        assert_eq!(v4.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST), "seen as {v4}");
        let v6 = round_trip(&listener, format!("[::1]:{port}").parse().expect("addr")).await;
        assert_eq!(v6.ip(), "::1".parse::<IpAddr>().expect("ip"));
    }

    #[tokio::test]
    async fn an_explicit_ipv4_address_binds_ipv4_only() {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local");
        assert!(addr.is_ipv4());
        let peer = round_trip(&listener, addr).await;
        assert_eq!(peer.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn mapped_addresses_become_ipv4_and_others_stay() {
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:443".parse().expect("addr");
        assert_eq!(canonical(mapped), SocketAddr::from(([192, 0, 2, 7], 443)));
        let v6: SocketAddr = "[2001:db8::1]:443".parse().expect("addr");
        assert_eq!(canonical(v6), v6);
        let v4: SocketAddr = "192.0.2.7:80".parse().expect("addr");
        assert_eq!(canonical(v4), v4);
    }

    #[tokio::test]
    async fn a_port_in_use_is_an_error_not_a_silent_fallback() {
        let first = bind(dual_stack(0)).await.expect("bind");
        let port = first.local_addr().expect("local").port();
        assert!(bind(dual_stack(port)).await.is_err());
    }
}
