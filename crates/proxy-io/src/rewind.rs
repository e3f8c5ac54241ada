//! [`Rewind`]: replaying bytes already read (sniffed) before reading on from the stream, so that a
//! TLS or HTTP library sees the connection from its first byte.

use pin_project_lite::pin_project;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pin_project! {
    /// A stream that first yields `prefix`, then reads from `inner`; writes go to `inner` untouched.
    /// It is `Unpin` when `S` is.
    #[derive(Debug)]
    pub struct Rewind<S> {
        prefix: Vec<u8>,
        pos: usize,
        #[pin]
        inner: S,
    }
}

impl<S> Rewind<S> {
    /// Wraps `inner`, replaying `prefix` first.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }

    /// The prefix bytes not read yet, and the inner stream.
    pub fn into_inner(self) -> (Vec<u8>, S) {
        let mut prefix = self.prefix;
        prefix.drain(..self.pos);
        (prefix, self.inner)
    }

    /// The inner stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner stream, mutably (reading from it directly skips the unread prefix).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if *this.pos < this.prefix.len() {
            let n = (this.prefix.len() - *this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[*this.pos..*this.pos + n]);
            *this.pos += n;
            if *this.pos == this.prefix.len() {
                // Release the replayed bytes; the rest of the connection reads straight through.
                *this.prefix = Vec::new();
                *this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn prefix_then_inner_then_writes_pass_through() {
        let (mut peer, inner) = tokio::io::duplex(64);
        peer.write_all(b" world").await.unwrap();
        let mut s = Rewind::new(b"hello".to_vec(), inner);
        let mut small = [0u8; 3];
        s.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"hel");
        let mut rest = [0u8; 8];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"lo world");
        s.write_all(b"back").await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"back", "shutdown forwards to the inner stream");
    }

    #[tokio::test]
    async fn into_inner_returns_the_unread_prefix() {
        let (_peer, inner) = tokio::io::duplex(64);
        let mut s = Rewind::new(b"abcdef".to_vec(), inner);
        let mut two = [0u8; 2];
        s.read_exact(&mut two).await.unwrap();
        let (rest, _inner) = s.into_inner();
        assert_eq!(rest, b"cdef");
    }

    #[test]
    fn rewind_is_unpin_for_unpin_streams() {
        fn assert_unpin<T: Unpin>() {}
        assert_unpin::<Rewind<tokio::net::TcpStream>>();
    }
}
