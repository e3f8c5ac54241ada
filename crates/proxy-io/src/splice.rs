//! Zero-copy relaying between two TCP sockets on Linux. Each direction starts as a buffered
//! [`Pump`](crate::copy::Pump); once a read fills its largest buffer (a bulk flow: a download, an
//! upload, a passthrough TLS stream carrying either), it moves on to `splice(2)` through a pipe of
//! its own, so the bytes go socket → pipe → socket inside the kernel without being copied into user
//! space and back. Short and interactive flows never pay for the pipe (two descriptors).
//!
//! The pipe is only filled when it is empty, so `EAGAIN` from the splice into it can only mean
//! that the socket has nothing to read (an empty pipe always has room), and readiness stays exact.
//! Each pipe asks for [`PIPE_SIZE`] (256 KiB) of capacity.

use crate::copy::{poll_half_close, relay, CopyDirection, CopyStats, Flow, Pump, Turn, Wakes};
use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Capacity asked for each direction's pipe, and the most bytes asked for by one splice into it.
/// Measured with the load harness (scenario E, 1 MiB downloads): against the default 64 KiB pipe
/// it halves the splice calls per byte, which is what made spliced bulk flows faster than copied
/// ones rather than only cheaper. Above the per-user pipe memory limit the kernel refuses the
/// size and the pipe keeps its default; splicing works the same, in smaller steps.
const PIPE_SIZE: usize = 256 * 1024;

/// [`copy_bidirectional_observed`](crate::copy_bidirectional_observed) for two TCP sockets: the
/// same guarantees (exact bytes, half-close per direction, one idle deadline, every write
/// reported), with bulk flows moved by `splice(2)` instead of through user-space buffers.
pub async fn copy_tcp_bidirectional_observed<F>(
    a: &mut TcpStream,
    b: &mut TcpStream,
    idle: Duration,
    observe: F,
) -> Result<CopyStats, io::Error>
where
    F: FnMut(CopyDirection, u64),
{
    relay(
        a,
        b,
        &mut Hybrid::new(),
        &mut Hybrid::new(),
        idle,
        Wakes::Split,
        observe,
    )
    .await
}

/// One direction: buffered at first, spliced once it proved to be a bulk flow.
enum Hybrid {
    Buffered(Pump),
    Spliced(SplicePump),
}

impl Hybrid {
    fn new() -> Self {
        Self::Buffered(Pump::new(true))
    }
}

impl Flow<TcpStream, TcpStream> for Hybrid {
    fn written(&self) -> u64 {
        match self {
            Self::Buffered(pump) => Flow::<TcpStream, TcpStream>::written(pump),
            Self::Spliced(pump) => pump.written,
        }
    }

    fn poll_flow(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut TcpStream>,
        mut writer: Pin<&mut TcpStream>,
        turn: &mut Turn<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            match self {
                Self::Buffered(pump) => {
                    let poll = pump.poll_flow(cx, reader.as_mut(), writer.as_mut(), turn);
                    if !pump.handed_off() {
                        return poll;
                    }
                    let written = Flow::<TcpStream, TcpStream>::written(pump);
                    match SplicePump::new(written) {
                        Ok(spliced) => *self = Self::Spliced(spliced),
                        Err(e) => {
                            // Out of descriptors or pipe memory: carry on buffered, for good.
                            tracing::debug!(error = %e, "no pipe for splicing, copying through user space");
                            let mut pump = Pump::new(false);
                            pump.set_written(written);
                            *self = Self::Buffered(pump);
                        }
                    }
                }
                Self::Spliced(pump) => return pump.poll_flow(cx, reader, writer, turn),
            }
        }
    }
}

/// A direction moved by `splice(2)`: socket → pipe, then pipe → socket, repeated.
struct SplicePump {
    pipe_read: OwnedFd,
    pipe_write: OwnedFd,
    /// Bytes spliced into the pipe and not yet out of it.
    in_pipe: usize,
    read_done: bool,
    done: bool,
    written: u64,
}

impl SplicePump {
    fn new(written: u64) -> io::Result<Self> {
        let (pipe_read, pipe_write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        if let Err(e) = fcntl_setpipe_size(&pipe_write, PIPE_SIZE) {
            tracing::debug!(error = %e, "pipe keeps its default capacity");
        }
        Ok(Self {
            pipe_read,
            pipe_write,
            in_pipe: 0,
            read_done: false,
            done: false,
            written,
        })
    }

    fn poll_flow(
        &mut self,
        cx: &mut Context<'_>,
        reader: Pin<&mut TcpStream>,
        mut writer: Pin<&mut TcpStream>,
        turn: &mut Turn<'_>,
    ) -> Poll<io::Result<()>> {
        const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.in_pipe == 0 && !self.read_done {
                ready!(reader.poll_read_ready(cx))?;
                let spliced = reader.try_io(Interest::READABLE, || {
                    splice(&*reader, None, &self.pipe_write, None, PIPE_SIZE, FLAGS)
                        .map_err(io::Error::from)
                });
                match spliced {
                    Ok(0) => self.read_done = true,
                    Ok(n) => {
                        self.in_pipe = n;
                        turn.active = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            while self.in_pipe > 0 {
                ready!(writer.poll_write_ready(cx))?;
                let spliced = writer.try_io(Interest::WRITABLE, || {
                    splice(&self.pipe_read, None, &*writer, None, self.in_pipe, FLAGS)
                        .map_err(io::Error::from)
                });
                match spliced {
                    Ok(0) => {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            "the peer accepted no bytes",
                        )))
                    }
                    Ok(n) => {
                        self.in_pipe -= n;
                        self.written += u64::try_from(n).unwrap_or(u64::MAX);
                        turn.active = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if self.read_done {
                ready!(poll_half_close(cx, writer.as_mut()))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{random, tcp_pair};
    use sha2::{Digest, Sha256};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const IDLE: Duration = Duration::from_secs(30);

    /// What one relay moved, and how each direction ended up being moved.
    struct Relayed {
        stats: CopyStats,
        observed: CopyStats,
        up_spliced: bool,
        down_spliced: bool,
    }

    /// client ⇄ [proxy_a | hybrid relay | proxy_b] ⇄ server on 127.0.0.1. The client writes `up`
    /// then half-closes; the server first reads all of it, then writes `down` and closes (the
    /// order of a request and its response). Returns what each end received.
    async fn exchange(up: Vec<u8>, down: Vec<u8>) -> (Vec<u8>, Vec<u8>, Relayed) {
        let (mut client, mut proxy_a) = tcp_pair().await;
        let (mut proxy_b, mut server) = tcp_pair().await;
        let relay_task = tokio::spawn(async move {
            let mut a_to_b = Hybrid::new();
            let mut b_to_a = Hybrid::new();
            let mut observed = CopyStats::default();
            let stats = relay(
                &mut proxy_a,
                &mut proxy_b,
                &mut a_to_b,
                &mut b_to_a,
                IDLE,
                Wakes::Split,
                |d, n| match d {
                    CopyDirection::ClientToServer => observed.client_to_server += n,
                    CopyDirection::ServerToClient => observed.server_to_client += n,
                },
            )
            .await
            .unwrap();
            Relayed {
                stats,
                observed,
                up_spliced: matches!(a_to_b, Hybrid::Spliced(_)),
                down_spliced: matches!(b_to_a, Hybrid::Spliced(_)),
            }
        });
        let server_task = tokio::spawn(async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            server.write_all(&down).await.unwrap();
            server.shutdown().await.unwrap();
            got
        });
        client.write_all(&up).await.unwrap();
        client.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        let at_server = server_task.await.unwrap();
        (at_server, back, relay_task.await.unwrap())
    }

    #[tokio::test]
    async fn bulk_flows_are_spliced_and_arrive_unaltered_after_each_half_close() {
        let up = random(8 * 1024 * 1024 + 3);
        let down = random(16 * 1024 * 1024 + 11);
        let (at_server, at_client, relayed) = exchange(up.clone(), down.clone()).await;
        assert_eq!(Sha256::digest(&at_server), Sha256::digest(&up));
        assert_eq!(Sha256::digest(&at_client), Sha256::digest(&down));
        assert_eq!(relayed.stats.client_to_server, up.len() as u64);
        assert_eq!(relayed.stats.server_to_client, down.len() as u64);
        assert_eq!(relayed.stats, relayed.observed, "every write was reported");
        assert!(relayed.up_spliced && relayed.down_spliced);
    }

    #[tokio::test]
    async fn short_flows_stay_buffered() {
        let up = random(3000);
        let down = random(20_000);
        let (at_server, at_client, relayed) = exchange(up.clone(), down.clone()).await;
        assert_eq!(at_server, up);
        assert_eq!(at_client, down);
        assert!(!relayed.up_spliced && !relayed.down_spliced);
        assert_eq!(relayed.stats, relayed.observed);
    }

    #[tokio::test]
    async fn both_directions_at_once_through_splice() {
        let (client, mut proxy_a) = tcp_pair().await;
        let (mut proxy_b, server) = tcp_pair().await;
        let relay_task = tokio::spawn(async move {
            copy_tcp_bidirectional_observed(&mut proxy_a, &mut proxy_b, IDLE, |_, _| {}).await
        });
        let up = random(6 * 1024 * 1024 + 1);
        let down = random(5 * 1024 * 1024 + 7);
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let (up2, down2) = (up.clone(), down.clone());
        let writers = tokio::spawn(async move {
            let a = async {
                cw.write_all(&up2).await.unwrap();
                cw.shutdown().await.unwrap();
            };
            let b = async {
                sw.write_all(&down2).await.unwrap();
                sw.shutdown().await.unwrap();
            };
            tokio::join!(a, b);
        });
        let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
        let (a, b) = tokio::join!(sr.read_to_end(&mut got_up), cr.read_to_end(&mut got_down));
        a.unwrap();
        b.unwrap();
        writers.await.unwrap();
        assert_eq!(Sha256::digest(&got_up), Sha256::digest(&up));
        assert_eq!(Sha256::digest(&got_down), Sha256::digest(&down));
        let stats = relay_task.await.unwrap().unwrap();
        assert_eq!(stats.client_to_server, up.len() as u64);
        assert_eq!(stats.server_to_client, down.len() as u64);
    }

    #[tokio::test]
    async fn a_reset_peer_ends_a_spliced_relay_with_an_error() {
        let (mut client, mut proxy_a) = tcp_pair().await;
        let (mut proxy_b, server) = tcp_pair().await;
        let relay_task = tokio::spawn(async move {
            copy_tcp_bidirectional_observed(&mut proxy_a, &mut proxy_b, IDLE, |_, _| {}).await
        });
        // The server reads nothing and goes away with unread data: the kernel answers with RST.
        let writer = tokio::spawn(async move {
            let chunk = random(1024 * 1024);
            for _ in 0..64 {
                if client.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            client
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.set_zero_linger().unwrap();
        drop(server);
        let result = tokio::time::timeout(Duration::from_secs(20), relay_task)
            .await
            .expect("the relay ended")
            .unwrap();
        assert!(
            result.is_err(),
            "a reset is an error, not a clean end: {result:?}"
        );
        drop(writer);
    }
}
