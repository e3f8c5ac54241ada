//! The byte pump between a client and a server: both directions at once, exact (no byte altered,
//! dropped or reordered), half-close propagated per direction (EOF read on one side → FIN written to
//! the other, while the other direction keeps flowing), and an idle deadline over both directions.
//!
//! Memory: one buffer per direction, [`COPY_BUFFER_SIZE`] at first (small, because most
//! forwarded connections sit idle: WebSockets, keep-alive, gRPC streams), doubling up to
//! [`MAX_COPY_BUFFER_SIZE`] while reads keep filling it (a bulk flow reaches 64 KiB reads after
//! six full reads).

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Bytes buffered per direction at first.
pub const COPY_BUFFER_SIZE: usize = 1024;
/// Largest buffer one direction grows to: a read that fills the buffer doubles it, up to this size,
/// so bulk transfers make few large syscalls while idle and interactive connections stay small.
pub const MAX_COPY_BUFFER_SIZE: usize = 64 * 1024;

/// Bytes moved in each direction. `a` is the client side, `b` the server side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Bytes read from `a` and written to `b`.
    pub client_to_server: u64,
    /// Bytes read from `b` and written to `a`.
    pub server_to_client: u64,
}

/// A direction of the copy, as reported to an observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyDirection {
    /// From `a` (client) to `b` (server).
    ClientToServer,
    /// From `b` (server) to `a` (client).
    ServerToClient,
}

/// Copies both ways between `a` (client) and `b` (server) until both directions ended. When a read
/// returns EOF, the other side's write half is shut down (FIN) and the other direction keeps
/// copying. Fails with [`io::ErrorKind::TimedOut`] when no byte moves either way for `idle`, and
/// with the first I/O error of either direction.
pub async fn copy_bidirectional<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Duration,
) -> Result<CopyStats, io::Error>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    copy_bidirectional_observed(a, b, idle, |_, _| {}).await
}

/// [`copy_bidirectional`] that also reports every write as it happens (`observe(direction, bytes)`),
/// so that byte counters of long-lived connections move while they are open.
pub async fn copy_bidirectional_observed<A, B, F>(
    a: &mut A,
    b: &mut B,
    idle: Duration,
    mut observe: F,
) -> Result<CopyStats, io::Error>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(CopyDirection, u64),
{
    let mut a_to_b = Pump::new();
    let mut b_to_a = Pump::new();
    let mut last_activity = Instant::now();
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);

    poll_fn(|cx| {
        let mut active = false;
        let before = a_to_b.written;
        let up = a_to_b.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b), &mut active)?;
        if a_to_b.written > before {
            observe(CopyDirection::ClientToServer, a_to_b.written - before);
        }
        let before = b_to_a.written;
        let down = b_to_a.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a), &mut active)?;
        if b_to_a.written > before {
            observe(CopyDirection::ServerToClient, b_to_a.written - before);
        }
        if up.is_ready() && down.is_ready() {
            return Poll::Ready(Ok(CopyStats {
                client_to_server: a_to_b.written,
                server_to_client: b_to_a.written,
            }));
        }
        if active {
            last_activity = Instant::now();
        }
        // The timer is only moved when it fires, not on every chunk.
        while idle_timer.as_mut().poll(cx).is_ready() {
            let deadline = last_activity + idle;
            if deadline <= Instant::now() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no byte moved in either direction within the idle timeout",
                )));
            }
            idle_timer.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await
}

/// One direction: read into the buffer, write it all out, repeat; on EOF flush and shut down the
/// writer.
struct Pump {
    buf: Box<[u8]>,
    pos: usize,
    cap: usize,
    read_done: bool,
    need_flush: bool,
    done: bool,
    written: u64,
}

impl Pump {
    fn new() -> Self {
        Self {
            buf: vec![0; COPY_BUFFER_SIZE].into_boxed_slice(),
            pos: 0,
            cap: 0,
            read_done: false,
            need_flush: false,
            done: false,
            written: 0,
        }
    }

    /// Ready(Ok) once the reader hit EOF, everything was written and the writer was shut down.
    /// Sets `active` when a byte was read or written.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
        active: &mut bool,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.pos == self.cap && !self.read_done {
                if self.cap == self.buf.len() && self.buf.len() < MAX_COPY_BUFFER_SIZE {
                    // The last read filled the buffer: this is a bulk flow, read more per call.
                    self.buf = vec![0; self.buf.len() * 2].into_boxed_slice();
                }
                self.pos = 0;
                self.cap = 0;
                let mut read_buf = ReadBuf::new(&mut self.buf);
                match reader.as_mut().poll_read(cx, &mut read_buf) {
                    Poll::Ready(Ok(())) => {
                        let n = read_buf.filled().len();
                        if n == 0 {
                            self.read_done = true;
                        } else {
                            self.cap = n;
                            *active = true;
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Nothing more to read for now: push out what a buffered writer holds.
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.pos < self.cap {
                let n = ready!(writer
                    .as_mut()
                    .poll_write(cx, &self.buf[self.pos..self.cap]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the peer accepted no bytes",
                    )));
                }
                self.pos += n;
                self.written += u64::try_from(n).unwrap_or(u64::MAX);
                self.need_flush = true;
                *active = true;
            }
            if self.read_done {
                ready!(writer.as_mut().poll_flush(cx))?;
                match ready!(writer.as_mut().poll_shutdown(cx)) {
                    // The peer already went away entirely: its half is closed either way.
                    Err(e) if e.kind() != io::ErrorKind::NotConnected => {
                        return Poll::Ready(Err(e))
                    }
                    _ => {}
                }
                self.done = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;
    use sha2::{Digest, Sha256};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const IDLE: Duration = Duration::from_secs(30);

    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    /// client ⇄ [proxy_a | copy | proxy_b] ⇄ server, all real sockets on 127.0.0.1.
    async fn relay() -> (
        TcpStream,
        TcpStream,
        tokio::task::JoinHandle<io::Result<CopyStats>>,
    ) {
        let (client, mut proxy_a) = tcp_pair().await;
        let (mut proxy_b, server) = tcp_pair().await;
        let task =
            tokio::spawn(async move { copy_bidirectional(&mut proxy_a, &mut proxy_b, IDLE).await });
        (client, server, task)
    }

    fn random(len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        rand::rng().fill_bytes(&mut v);
        v
    }

    fn digest(b: &[u8]) -> Vec<u8> {
        Sha256::digest(b).to_vec()
    }

    #[tokio::test]
    async fn random_payloads_both_ways_at_once_arrive_unaltered() {
        let (client, server, task) = relay().await;
        let up = Arc::new(random(3 * 1024 * 1024 + 17));
        let down = Arc::new(random(2 * 1024 * 1024 + 5));
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let up2 = up.clone();
        let down2 = down.clone();
        let cw_task = tokio::spawn(async move {
            cw.write_all(&up2).await.unwrap();
            cw.shutdown().await.unwrap();
        });
        let sw_task = tokio::spawn(async move {
            sw.write_all(&down2).await.unwrap();
            sw.shutdown().await.unwrap();
        });
        let mut got_up = Vec::new();
        let mut got_down = Vec::new();
        let (a, b) = tokio::join!(sr.read_to_end(&mut got_up), cr.read_to_end(&mut got_down));
        a.unwrap();
        b.unwrap();
        cw_task.await.unwrap();
        sw_task.await.unwrap();
        assert_eq!(digest(&got_up), digest(&up));
        assert_eq!(digest(&got_down), digest(&down));
        let stats = task.await.unwrap().unwrap();
        assert_eq!(
            stats,
            CopyStats {
                client_to_server: up.len() as u64,
                server_to_client: down.len() as u64
            }
        );
    }

    #[tokio::test]
    async fn client_half_closes_first_then_server_answers() {
        let (mut client, mut server, task) = relay().await;
        let request = random(200_000);
        client.write_all(&request).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(
            digest(&got),
            digest(&request),
            "server saw the FIN after all bytes"
        );
        // The other direction still flows after the half-close.
        let response = random(300_000);
        server.write_all(&response).await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(digest(&back), digest(&response));
        let stats = task.await.unwrap().unwrap();
        assert_eq!(
            (stats.client_to_server, stats.server_to_client),
            (200_000, 300_000)
        );
    }

    #[tokio::test]
    async fn server_half_closes_first_then_client_keeps_sending() {
        let (mut client, mut server, task) = relay().await;
        let banner = random(50_000);
        server.write_all(&banner).await.unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(digest(&got), digest(&banner));
        let upload = random(400_000);
        client.write_all(&upload).await.unwrap();
        client.shutdown().await.unwrap();
        let mut up = Vec::new();
        server.read_to_end(&mut up).await.unwrap();
        assert_eq!(digest(&up), digest(&upload));
        let stats = task.await.unwrap().unwrap();
        assert_eq!(
            (stats.client_to_server, stats.server_to_client),
            (400_000, 50_000)
        );
    }

    #[tokio::test]
    async fn idle_connection_times_out_over_tcp() {
        let (client, mut proxy_a) = tcp_pair().await;
        let (mut proxy_b, server) = tcp_pair().await;
        let err = copy_bidirectional(&mut proxy_a, &mut proxy_b, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop((client, server));
    }

    #[tokio::test(start_paused = true)]
    async fn trickling_traffic_keeps_the_connection_alive_past_the_idle_timeout() {
        let (mut client, mut proxy_a) = tokio::io::duplex(1024);
        let (mut proxy_b, mut server) = tokio::io::duplex(1024);
        let idle = Duration::from_secs(10);
        let task =
            tokio::spawn(async move { copy_bidirectional(&mut proxy_a, &mut proxy_b, idle).await });
        for i in 0..10u8 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client.write_all(&[i]).await.unwrap();
            let mut one = [0u8; 1];
            server.read_exact(&mut one).await.unwrap();
            assert_eq!(one[0], i);
        }
        client.shutdown().await.unwrap();
        server.shutdown().await.unwrap();
        let stats = task.await.unwrap().unwrap();
        assert_eq!(stats.client_to_server, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn half_closed_but_silent_connection_times_out() {
        let (mut client, mut proxy_a) = tokio::io::duplex(1024);
        let (mut proxy_b, _server) = tokio::io::duplex(1024);
        client.shutdown().await.unwrap();
        let err = copy_bidirectional(&mut proxy_a, &mut proxy_b, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn observer_sees_every_byte() {
        let (mut client, mut proxy_a) = tokio::io::duplex(1024);
        let (mut proxy_b, mut server) = tokio::io::duplex(1024);
        let task = tokio::spawn(async move {
            let mut seen = CopyStats::default();
            let stats =
                copy_bidirectional_observed(&mut proxy_a, &mut proxy_b, IDLE, |d, n| match d {
                    CopyDirection::ClientToServer => seen.client_to_server += n,
                    CopyDirection::ServerToClient => seen.server_to_client += n,
                })
                .await
                .unwrap();
            (stats, seen)
        });
        let payload = random(100_000);
        let p2 = payload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&p2).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        server.write_all(b"ok").await.unwrap();
        server.shutdown().await.unwrap();
        let mut client = writer.await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(got, payload);
        assert_eq!(back, b"ok");
        let (stats, seen) = task.await.unwrap();
        assert_eq!(stats, seen);
        assert_eq!(stats.client_to_server, 100_000);
    }
}
