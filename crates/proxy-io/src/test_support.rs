//! Helpers shared by this crate's unit tests.

use rand::RngCore;
use tokio::net::{TcpListener, TcpStream};

/// A connected pair of TCP sockets on 127.0.0.1.
pub(crate) async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

/// `len` random bytes.
pub(crate) fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rng().fill_bytes(&mut v);
    v
}
