//! Loopback backends for tests: an accept loop on an ephemeral port that hands each connection to
//! a handler on its own task ([`serve_each`]), the handlers tests keep writing ([`echo`],
//! [`drain`]), an address nothing listens on ([`closed_port`]), a connected socket pair
//! ([`tcp_pair`]), a client bound to another loopback source ([`connect_from`]) and a raw request
//! whose response head is read back ([`exchange_head`]). Backends live as long as the test's runtime.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Where test backends listen: an ephemeral port on 127.0.0.1.
pub const LOOPBACK_EPHEMERAL: &str = "127.0.0.1:0";

/// Binds an ephemeral port on 127.0.0.1 and runs `handle` for every connection accepted there, each
/// on its own task, until the runtime ends. Returns the bound address.
pub async fn serve_each<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(LOOPBACK_EPHEMERAL)
        .await
        .expect("bind an ephemeral loopback port");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(accept_each(listener, handle));
    addr
}

/// Accepts connections on `listener` until accepting fails, running `handle` for each on its own
/// task (for a listener the test bound itself).
pub async fn accept_each<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(handle(stream));
    }
}

/// Copies every byte read back to the peer, then half-closes after the peer's end of stream.
pub async fn echo<S: AsyncRead + AsyncWrite>(stream: S) {
    let (mut r, mut w) = tokio::io::split(stream);
    let _ = tokio::io::copy(&mut r, &mut w).await;
    let _ = w.shutdown().await;
}

/// Reads and discards until the peer's end of stream (or an error), holding the connection open
/// meanwhile.
pub async fn drain<S: AsyncRead + Unpin>(mut stream: S) {
    let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
}

/// A backend that echoes every byte on each connection ([`echo`]).
pub async fn echo_backend() -> SocketAddr {
    serve_each(echo).await
}

/// Writes `bytes` on `stream` (raw: what a client library would not send), half-closes it when
/// `half_close`, and returns the response head that came back within `wait`, up to the blank line
/// ending it (what came before the peer closed, or nothing).
pub async fn exchange_head<S>(
    stream: &mut S,
    bytes: &[u8],
    half_close: bool,
    wait: Duration,
) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(bytes).await.expect("write the request");
    if half_close {
        stream.shutdown().await.expect("half-close");
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read_head = async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(wait, read_head).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A connected pair of TCP sockets on 127.0.0.1: (client, server).
pub async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind(LOOPBACK_EPHEMERAL)
        .await
        .expect("bind an ephemeral loopback port");
    let client = TcpStream::connect(listener.local_addr().expect("local addr"))
        .await
        .expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    (client, server)
}

/// A loopback address nothing listens on (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind(LOOPBACK_EPHEMERAL)
        .await
        .expect("bind an ephemeral loopback port");
    listener.local_addr().expect("local addr")
}

/// A connection to `addr` from the loopback address `source` (Linux routes all of 127/8 to `lo`),
/// to act as another client.
pub async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source.parse().expect("source address"), 0))
        .expect("bind a loopback source");
    socket.connect(addr).await.expect("connect")
}
