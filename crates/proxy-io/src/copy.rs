//! The byte pump between a client and a server: both directions at once, exact (no byte altered,
//! dropped or reordered), half-close propagated per direction (EOF read on one side → FIN written to
//! the other, while the other direction keeps flowing), and an idle deadline over both directions.
//!
//! Memory: reads land in a per-thread scratch buffer of [`MAX_COPY_BUFFER_SIZE`] and are written
//! out at once; a direction only holds the bytes its writer has not taken yet, so idle forwarded
//! connections (WebSockets, keep-alive, gRPC streams), the common case, hold no copy buffer.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use bulkhead_net::NotingWaker;

/// Most bytes one read takes (the size of each thread's scratch buffer), and most bytes one
/// direction holds while its writer is blocked.
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
    observe: F,
) -> Result<CopyStats, io::Error>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(CopyDirection, u64),
{
    relay(
        a,
        b,
        &mut Pump::new(false),
        &mut Pump::new(false),
        idle,
        Wakes::Shared,
        observe,
    )
    .await
}

/// One direction of a relay: moves bytes from `reader` to `writer` until EOF, then shuts the writer
/// down.
pub(crate) trait Flow<R: ?Sized, W: ?Sized> {
    /// Ready(Ok) once the reader hit EOF, everything was written and the writer was shut down.
    /// Sets `turn.active` when a byte was read or written.
    fn poll_flow(
        &mut self,
        cx: &mut Context<'_>,
        reader: Pin<&mut R>,
        writer: Pin<&mut W>,
        turn: &mut Turn<'_>,
    ) -> Poll<io::Result<()>>;

    /// Bytes written so far.
    fn written(&self) -> u64;
}

/// What one poll of a relay lends both its directions.
pub(crate) struct Turn<'s> {
    /// Where reads land before they are written: the thread's [`SCRATCH`], borrowed once per
    /// poll of the relay rather than once per direction.
    pub(crate) scratch: &'s mut [u8],
    /// Set when a byte was read or written.
    pub(crate) active: bool,
}

/// How a relay's directions are woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wakes {
    /// Both directions poll with the task's waker, and every poll moves both.
    Shared,
    /// Each direction polls with a [`NotingWaker`] of its own and moves only when that one was
    /// woken, so a wake-up for one socket does not also cost a read attempt on the other (during
    /// a TLS handshake or a keep-alive exchange, every other poll). Only for I/O types that keep
    /// their read and write wakers apart, as tokio's `TcpStream` does: with one slot for both, a
    /// wake-up would reach only the direction that registered last.
    Split,
}

/// Runs both directions of a relay with one idle deadline over both, reporting writes to
/// `observe`.
pub(crate) async fn relay<A, B, U, D, F>(
    a: &mut A,
    b: &mut B,
    a_to_b: &mut U,
    b_to_a: &mut D,
    idle: Duration,
    wakes: Wakes,
    mut observe: F,
) -> Result<CopyStats, io::Error>
where
    A: Unpin,
    B: Unpin,
    U: Flow<A, B>,
    D: Flow<B, A>,
    F: FnMut(CopyDirection, u64),
{
    let mut last_activity = bulkhead_net::clock::tokio_now();
    let idle_timer = tokio::time::sleep_until(last_activity + idle);
    tokio::pin!(idle_timer);
    // The waker the idle timer was last polled with. Polling it again with the same waker only
    // registers what it holds already, so it is polled when it fired or the waker changed, not
    // on every chunk (a `Sleep` poll costs more than the rest of a small relay step).
    let mut timer_waker: Option<Waker> = None;
    let mut split = (wakes == Wakes::Split).then(|| [NotingWaker::new(), NotingWaker::new()]);
    let (mut up_done, mut down_done) = (false, false);

    poll_fn(|cx| {
        let [up_wake, down_wake] = split
            .as_mut()
            .map_or([None, None], |[u, d]| [Some(u), Some(d)]);
        let (a, b) = (&mut *a, &mut *b);
        let active = with_scratch(|scratch| {
            let turn = &mut Turn {
                scratch,
                active: false,
            };
            let up = CopyDirection::ClientToServer;
            up_done = up.poll(a_to_b, up_done, up_wake, cx, a, b, turn, &mut observe)?;
            let down = CopyDirection::ServerToClient;
            down_done = down.poll(b_to_a, down_done, down_wake, cx, b, a, turn, &mut observe)?;
            Ok::<_, io::Error>(turn.active)
        })?;
        if up_done && down_done {
            return Poll::Ready(Ok(CopyStats {
                client_to_server: a_to_b.written(),
                server_to_client: b_to_a.written(),
            }));
        }
        if active {
            last_activity = bulkhead_net::clock::tokio_now();
        }
        let registered = timer_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if registered && !idle_timer.is_elapsed() {
            return Poll::Pending;
        }
        // The timer is only moved when it fires, not on every chunk.
        while idle_timer.as_mut().poll(cx).is_ready() {
            let deadline = last_activity + idle;
            // A fresh reading here: one lagging behind would re-arm the fired timer in the past.
            if deadline <= Instant::now() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no byte moved in either direction within the idle timeout",
                )));
            }
            idle_timer.as_mut().reset(deadline);
        }
        timer_waker = Some(cx.waker().clone());
        Poll::Pending
    })
    .await
}

impl CopyDirection {
    /// Polls `flow` unless it is `done` or, with split wakes (`wake`), was not woken since it was
    /// last polled; reports what it wrote to `observe`. Returns whether the flow is done.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn poll<R: Unpin, W: Unpin, Fl: Flow<R, W>>(
        self,
        flow: &mut Fl,
        done: bool,
        wake: Option<&mut NotingWaker>,
        cx: &Context<'_>,
        reader: &mut R,
        writer: &mut W,
        turn: &mut Turn<'_>,
        observe: &mut impl FnMut(CopyDirection, u64),
    ) -> io::Result<bool> {
        if done {
            return Ok(true);
        }
        let waker = match wake {
            None => cx.waker(),
            Some(noting) => {
                if !noting.take_woken(cx.waker()) {
                    return Ok(false);
                }
                noting.waker()
            }
        };
        let before = flow.written();
        let polled = flow.poll_flow(
            &mut Context::from_waker(waker),
            Pin::new(reader),
            Pin::new(writer),
            turn,
        )?;
        if flow.written() > before {
            observe(self, flow.written() - before);
        }
        Ok(polled.is_ready())
    }
}

/// Shuts the writer's half down (FIN) after its reader's EOF; a peer already gone entirely counts
/// as closed.
pub(crate) fn poll_half_close<W: AsyncWrite + ?Sized>(
    cx: &mut Context<'_>,
    writer: Pin<&mut W>,
) -> Poll<io::Result<()>> {
    match ready!(writer.poll_shutdown(cx)) {
        Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
        _ => Poll::Ready(Ok(())),
    }
}

/// One direction: read into the thread's scratch buffer and write it out at once; only bytes the
/// writer did not take yet are kept, in a buffer of their own that is freed once written. An open
/// connection that is not moving bytes (the usual state of a WebSocket, a keep-alive connection or
/// a gRPC stream) thus holds no copy buffer at all, while every read can take up to
/// [`MAX_COPY_BUFFER_SIZE`] bytes (a whole TLS handshake flight in one system call). On EOF the
/// writer is flushed and shut down.
pub(crate) struct Pump {
    /// Read but not yet written, from `pos` on.
    pending: Vec<u8>,
    pos: usize,
    read_done: bool,
    need_flush: bool,
    done: bool,
    written: u64,
    /// A read filled the whole scratch buffer: a bulk flow.
    bulk: bool,
    /// Stop, with [`Pump::handed_off`] set, instead of reading again once the flow proved to be a
    /// bulk flow: the caller moves it to a cheaper mechanism.
    handoff_bulk: bool,
    handed_off: bool,
}

std::thread_local! {
    /// Where each read lands before it is written; one per thread, since a pump never holds it
    /// across a suspension point.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; MAX_COPY_BUFFER_SIZE].into_boxed_slice());
}

/// Runs `f` with this thread's [`SCRATCH`] buffer.
fn with_scratch<T>(f: impl FnOnce(&mut [u8]) -> T) -> T {
    SCRATCH.with(|cell| {
        let (mut borrowed, mut own);
        let scratch: &mut [u8] = match cell.try_borrow_mut() {
            Ok(b) => {
                borrowed = b;
                &mut borrowed
            }
            // Not reached (a relay never polls another relay), but never a panic either.
            Err(_) => {
                own = vec![0; MAX_COPY_BUFFER_SIZE];
                &mut own
            }
        };
        f(scratch)
    })
}

/// What one read-and-write step left to do.
enum Step {
    /// Read again.
    Again,
    /// The writer took part of the read; the rest waits in `pending`.
    Blocked,
}

impl Pump {
    pub(crate) fn new(handoff_bulk: bool) -> Self {
        Self {
            pending: Vec::new(),
            pos: 0,
            read_done: false,
            need_flush: false,
            done: false,
            written: 0,
            bulk: false,
            handoff_bulk,
            handed_off: false,
        }
    }

    /// Whether the pump stopped because the flow is a bulk flow (see `handoff_bulk`); nothing is
    /// pending then, and [`Pump::written`] counts everything it moved.
    pub(crate) fn handed_off(&self) -> bool {
        self.handed_off
    }

    /// Carries over the bytes an earlier stage of the same direction wrote.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn set_written(&mut self, written: u64) {
        self.written = written;
    }

    /// Bytes held for a writer that has not taken them yet.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.pending.capacity()
    }

    /// Reads once into `scratch` and writes what was read until the writer blocks.
    fn read_and_write<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut Pin<&mut R>,
        writer: &mut Pin<&mut W>,
        turn: &mut Turn<'_>,
    ) -> Poll<io::Result<Step>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        let scratch = &mut *turn.scratch;
        let mut read_buf = ReadBuf::new(scratch);
        match reader.as_mut().poll_read(cx, &mut read_buf) {
            Poll::Ready(Ok(())) => {}
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
        let n = read_buf.filled().len();
        if n == 0 {
            self.read_done = true;
            return Poll::Ready(Ok(Step::Again));
        }
        turn.active = true;
        self.bulk |= n == scratch.len();
        let mut off = 0;
        while off < n {
            match writer.as_mut().poll_write(cx, &scratch[off..n]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the peer accepted no bytes",
                    )))
                }
                Poll::Ready(Ok(k)) => {
                    off += k;
                    self.written += u64::try_from(k).unwrap_or(u64::MAX);
                    self.need_flush = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.pending = scratch[off..n].to_vec();
                    self.pos = 0;
                    return Poll::Ready(Ok(Step::Blocked));
                }
            }
        }
        Poll::Ready(Ok(Step::Again))
    }
}

impl<R, W> Flow<R, W> for Pump
where
    R: AsyncRead + ?Sized,
    W: AsyncWrite + ?Sized,
{
    fn written(&self) -> u64 {
        self.written
    }

    fn poll_flow(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
        turn: &mut Turn<'_>,
    ) -> Poll<io::Result<()>> {
        if self.done || self.handed_off {
            return Poll::Ready(Ok(()));
        }
        loop {
            while self.pos < self.pending.len() {
                let n = ready!(writer.as_mut().poll_write(cx, &self.pending[self.pos..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the peer accepted no bytes",
                    )));
                }
                self.pos += n;
                self.written += u64::try_from(n).unwrap_or(u64::MAX);
                self.need_flush = true;
                turn.active = true;
            }
            if self.pos > 0 {
                // All written: give the memory back.
                self.pending = Vec::new();
                self.pos = 0;
            }
            if self.read_done {
                ready!(writer.as_mut().poll_flush(cx))?;
                ready!(poll_half_close(cx, writer.as_mut()))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            if self.handoff_bulk && self.bulk {
                if self.need_flush {
                    ready!(writer.as_mut().poll_flush(cx))?;
                    self.need_flush = false;
                }
                self.handed_off = true;
                return Poll::Ready(Ok(()));
            }
            let step = self.read_and_write(cx, &mut reader, &mut writer, turn);
            match ready!(step)? {
                Step::Again => {}
                // The writer registered for wake-up; the pending bytes go first next time.
                Step::Blocked => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{random, tcp_pair};
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const IDLE: Duration = Duration::from_secs(30);

    /// Both ways of waking a relay; every relay test runs in each.
    const MODES: [Wakes; 2] = [Wakes::Shared, Wakes::Split];

    /// The buffered relay between `a` and `b`, woken as `wakes` says.
    async fn copy_in<A, B>(
        wakes: Wakes,
        a: &mut A,
        b: &mut B,
        idle: Duration,
    ) -> io::Result<CopyStats>
    where
        A: AsyncRead + AsyncWrite + Unpin,
        B: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut up, mut down) = (Pump::new(false), Pump::new(false));
        relay(a, b, &mut up, &mut down, idle, wakes, |_, _| {}).await
    }

    /// client ⇄ [proxy_a | copy | proxy_b] ⇄ server, all real sockets on 127.0.0.1.
    async fn relay_in(
        wakes: Wakes,
    ) -> (
        TcpStream,
        TcpStream,
        tokio::task::JoinHandle<io::Result<CopyStats>>,
    ) {
        let (client, mut proxy_a) = tcp_pair().await;
        let (mut proxy_b, server) = tcp_pair().await;
        let task =
            tokio::spawn(async move { copy_in(wakes, &mut proxy_a, &mut proxy_b, IDLE).await });
        (client, server, task)
    }

    fn digest(b: &[u8]) -> Vec<u8> {
        Sha256::digest(b).to_vec()
    }

    #[tokio::test]
    async fn random_payloads_both_ways_at_once_arrive_unaltered() {
        for wakes in MODES {
            let (client, server, task) = relay_in(wakes).await;
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
    }

    /// Writes `len` random bytes from `from` and shuts its write half down; checks that `to`
    /// reads exactly those bytes, then EOF.
    async fn send_then_close(from: &mut TcpStream, to: &mut TcpStream, len: usize) {
        let sent = random(len);
        from.write_all(&sent).await.unwrap();
        from.shutdown().await.unwrap();
        let mut got = Vec::new();
        to.read_to_end(&mut got).await.unwrap();
        assert_eq!(digest(&got), digest(&sent), "all bytes, then the FIN");
    }

    #[tokio::test]
    async fn client_half_closes_first_then_server_answers() {
        for wakes in MODES {
            let (mut client, mut server, task) = relay_in(wakes).await;
            send_then_close(&mut client, &mut server, 200_000).await;
            // The other direction still flows after the half-close.
            send_then_close(&mut server, &mut client, 300_000).await;
            let stats = task.await.unwrap().unwrap();
            assert_eq!(
                (stats.client_to_server, stats.server_to_client),
                (200_000, 300_000)
            );
        }
    }

    #[tokio::test]
    async fn server_half_closes_first_then_client_keeps_sending() {
        for wakes in MODES {
            let (mut client, mut server, task) = relay_in(wakes).await;
            send_then_close(&mut server, &mut client, 50_000).await;
            send_then_close(&mut client, &mut server, 400_000).await;
            let stats = task.await.unwrap().unwrap();
            assert_eq!(
                (stats.client_to_server, stats.server_to_client),
                (400_000, 50_000)
            );
        }
    }

    #[tokio::test]
    async fn idle_connection_times_out_over_tcp() {
        for wakes in MODES {
            let (client, mut proxy_a) = tcp_pair().await;
            let (mut proxy_b, server) = tcp_pair().await;
            let err = copy_in(
                wakes,
                &mut proxy_a,
                &mut proxy_b,
                Duration::from_millis(200),
            )
            .await
            .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
            drop((client, server));
        }
    }

    /// A relay woken as `wakes` between in-memory ends, through which the client sends `count`
    /// single bytes, one every `gap`, each checked at the server. Returns the client, the server
    /// and the relay's task.
    async fn trickle(
        wakes: Wakes,
        idle: Duration,
        count: u8,
        gap: Duration,
    ) -> (
        tokio::io::DuplexStream,
        tokio::io::DuplexStream,
        tokio::task::JoinHandle<io::Result<CopyStats>>,
    ) {
        let (mut client, mut proxy_a) = tokio::io::duplex(1024);
        let (mut proxy_b, mut server) = tokio::io::duplex(1024);
        let task =
            tokio::spawn(async move { copy_in(wakes, &mut proxy_a, &mut proxy_b, idle).await });
        for i in 0..count {
            tokio::time::sleep(gap).await;
            client.write_all(&[i]).await.unwrap();
            let mut one = [0u8; 1];
            server.read_exact(&mut one).await.unwrap();
            assert_eq!(one[0], i);
        }
        (client, server, task)
    }

    #[tokio::test(start_paused = true)]
    async fn trickling_traffic_keeps_the_connection_alive_past_the_idle_timeout() {
        for wakes in MODES {
            let idle = Duration::from_secs(10);
            let (mut client, mut server, task) =
                trickle(wakes, idle, 10, Duration::from_secs(6)).await;
            client.shutdown().await.unwrap();
            server.shutdown().await.unwrap();
            let stats = task.await.unwrap().unwrap();
            assert_eq!(stats.client_to_server, 10);
        }
    }

    /// The idle timer fires while bytes still trickle (and is moved on), then the flow stops: the
    /// relay ends one idle timeout after the last byte, not before and not much after.
    #[tokio::test(start_paused = true)]
    async fn silence_after_trickling_times_out_one_idle_period_after_the_last_byte() {
        for wakes in MODES {
            let idle = Duration::from_secs(10);
            let (client, server, task) = trickle(wakes, idle, 5, Duration::from_secs(7)).await;
            let last_byte = Instant::now();
            let ended = tokio::time::timeout(idle * 3, task).await;
            let err = ended
                .expect("the relay outlived three idle timeouts")
                .unwrap()
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
            let silent = last_byte.elapsed();
            assert!(
                silent >= idle && silent < idle + Duration::from_secs(1),
                "{silent:?}"
            );
            drop((client, server));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn half_closed_but_silent_connection_times_out() {
        for wakes in MODES {
            let (mut client, mut proxy_a) = tokio::io::duplex(1024);
            let (mut proxy_b, _server) = tokio::io::duplex(1024);
            client.shutdown().await.unwrap();
            let err = copy_in(wakes, &mut proxy_a, &mut proxy_b, Duration::from_secs(10))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        }
    }

    #[tokio::test]
    async fn a_blocked_writer_holds_only_the_bytes_it_did_not_take_until_they_are_written() {
        let (mut source, mut reader) = tokio::io::duplex(64 * 1024);
        let (mut writer, mut sink) = tokio::io::duplex(4096);
        let data = random(10_000);
        source.write_all(&data).await.unwrap();
        let mut pump = Pump::new(false);
        fn poll(
            pump: &mut Pump,
            reader: &mut tokio::io::DuplexStream,
            writer: &mut tokio::io::DuplexStream,
        ) -> Poll<io::Result<()>> {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let turn = &mut Turn {
                scratch: &mut vec![0; MAX_COPY_BUFFER_SIZE],
                active: false,
            };
            Flow::poll_flow(pump, &mut cx, Pin::new(reader), Pin::new(writer), turn)
        }
        assert!(poll(&mut pump, &mut reader, &mut writer).is_pending());
        assert_eq!(
            pump.held(),
            10_000 - 4096,
            "only what the writer did not take"
        );
        assert_eq!(pump.written, 4096);
        let mut got = vec![0; 4096];
        sink.read_exact(&mut got).await.unwrap();
        assert!(poll(&mut pump, &mut reader, &mut writer).is_pending());
        assert_eq!(pump.written, 8192);
        let mut rest = vec![0; 4096];
        sink.read_exact(&mut rest).await.unwrap();
        got.extend_from_slice(&rest);
        assert!(poll(&mut pump, &mut reader, &mut writer).is_pending());
        assert_eq!(pump.held(), 0, "written out: the memory is given back");
        assert_eq!(pump.written, 10_000);
        let mut tail = vec![0; 10_000 - 8192];
        sink.read_exact(&mut tail).await.unwrap();
        got.extend_from_slice(&tail);
        assert_eq!(got, data);
    }

    /// Counts the reads attempted on a stream.
    struct CountingReads<S> {
        inner: S,
        reads: Arc<AtomicUsize>,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for CountingReads<S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for CountingReads<S> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// The server answers 50 times while the client stays silent: with split wakes the client's
    /// socket is read when the relay starts and at its EOF, not on each of the server's writes.
    #[tokio::test]
    async fn split_wakes_leave_the_quiet_direction_alone() {
        for wakes in MODES {
            let (mut client, proxy_a) = tokio::io::duplex(1024);
            let (mut proxy_b, mut server) = tokio::io::duplex(1024);
            let reads = Arc::new(AtomicUsize::new(0));
            let mut proxy_a = CountingReads {
                inner: proxy_a,
                reads: Arc::clone(&reads),
            };
            let task =
                tokio::spawn(async move { copy_in(wakes, &mut proxy_a, &mut proxy_b, IDLE).await });
            for i in 0..50u8 {
                server.write_all(&[i]).await.unwrap();
                let mut one = [0u8; 1];
                client.read_exact(&mut one).await.unwrap();
                assert_eq!(one[0], i);
            }
            client.shutdown().await.unwrap();
            server.shutdown().await.unwrap();
            let stats = task.await.unwrap().unwrap();
            assert_eq!((stats.client_to_server, stats.server_to_client), (0, 50));
            let reads = reads.load(Ordering::Relaxed);
            match wakes {
                Wakes::Split => assert!(reads <= 4, "{reads} reads of the quiet client"),
                Wakes::Shared => assert!(reads > 50, "{reads} reads of the quiet client"),
            }
        }
    }

    /// Request and answer in turn, 300 times over TCP: each wake-up lands on the direction that
    /// has the bytes, and none is lost.
    #[tokio::test]
    async fn alternating_exchanges_are_all_relayed() {
        for wakes in MODES {
            let (mut client, mut server, task) = relay_in(wakes).await;
            for i in 0..300u16 {
                let ask = i.to_be_bytes();
                client.write_all(&ask).await.unwrap();
                let mut got = [0u8; 2];
                server.read_exact(&mut got).await.unwrap();
                assert_eq!(got, ask);
                let answer = [got[1], got[0], 7];
                server.write_all(&answer).await.unwrap();
                let mut back = [0u8; 3];
                tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut back))
                    .await
                    .expect("an answer was not relayed")
                    .unwrap();
                assert_eq!(back, answer);
            }
            client.shutdown().await.unwrap();
            server.shutdown().await.unwrap();
            let stats = task.await.unwrap().unwrap();
            assert_eq!((stats.client_to_server, stats.server_to_client), (600, 900));
        }
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
