//! One HTTP/1.1 exchange with a backend, run in the request's own task (no connection task, no
//! channel between the two): the request head and body are written, the response head is read
//! and parsed ([`bulkhead_h1_wire`]), and the response body ([`H1Body`]) reads the rest, writing
//! what is left of the request body as it goes (a backend may answer before it has read it all).
//! The connection goes back to its pool when both bodies have ended cleanly and the backend
//! allows it; in any other case it is closed.

use super::{MaybeTls, UpstreamError};
use crate::body::{BoxError, ProxyBody};
use bulkhead_h1_wire::{
    chunked, encode_request_head, parse_response, request_framing, BodyFraming, ChunkedDecoder,
    Decoded, RequestFraming, ResponseHead, ResponseLimits,
};
use bytes::{Buf, Bytes, BytesMut};
use http::header::TRAILER;
use http::{HeaderMap, HeaderName, Method, Request};
use http_body::{Body, Frame, SizeHint};
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::AsyncWrite;
use tokio_util::io::poll_read_buf;

/// The first read size of a connection, and the least it shrinks back to.
const MIN_READ: usize = 8 * 1024;
/// The largest read a connection grows to while a body keeps filling its reads (also bounded by
/// the pool's `max_buf_size`: what one stream of a client that does not read may hold).
const MAX_READ: usize = 256 * 1024;

/// A backend connection and what has been read from it but not consumed.
pub(super) struct H1Conn {
    pub(super) io: MaybeTls,
    buf: BytesMut,
    /// Where request heads are encoded, kept between exchanges.
    head: Vec<u8>,
    /// The next read's size: doubled while reads come back full, halved when they come back
    /// small (hyper's adaptive read strategy), at most `max_read`.
    next_read: usize,
    max_read: usize,
}

impl H1Conn {
    /// A connection nothing has been read from yet, whose reads grow to at most `max_read`
    /// bytes.
    pub(super) fn new(io: MaybeTls, max_read: usize) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            head: Vec::new(),
            next_read: MIN_READ,
            max_read: max_read.clamp(MIN_READ, MAX_READ),
        }
    }

    /// Whether an idle connection can carry a request: nothing unread, and no close, reset or
    /// stray byte from the backend since its last exchange. Never waits.
    pub(super) fn is_reusable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.make_room();
        matches!(
            poll_read_buf(Pin::new(&mut self.io), &mut cx, &mut self.buf),
            Poll::Pending
        )
    }

    /// Makes an idle connection small: a large read buffer from a big body is not kept.
    pub(super) fn shrink(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > MIN_READ {
            self.buf = BytesMut::new();
        }
        if self.head.capacity() > MIN_READ {
            self.head = Vec::new();
        }
        self.next_read = MIN_READ;
    }

    /// Room in the buffer for the next read.
    fn make_room(&mut self) {
        if self.buf.capacity() - self.buf.len() < self.next_read {
            self.buf.reserve(self.next_read);
        }
    }

    /// Reads more into the buffer; `Ok(0)` when the backend closed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.make_room();
        let room = self.buf.capacity() - self.buf.len();
        let n = ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf))?;
        if n == room {
            self.next_read = (self.next_read * 2).min(self.max_read);
        } else if n < self.next_read / 4 {
            self.next_read = (self.next_read / 2).max(MIN_READ);
        }
        Poll::Ready(Ok(n))
    }

    /// The connection as the two ends of a switched protocol use it: the bytes already read past
    /// the 101 head first, then the stream.
    pub(super) fn into_upgraded(self) -> super::Upgraded {
        bulkhead_proxy_io::Rewind::new(self.buf.to_vec(), self.io)
    }
}

/// A request being written: its head, then its body in the framing the head announced.
pub(super) struct Sending {
    /// The head (framing fields set), encoded into the connection's head buffer when first
    /// written there.
    parts: http::request::Parts,
    /// Field lines written after the head's own (the router's forwarding fields).
    extra: Bytes,
    /// How much of the encoded head is written; `None` until it is encoded on this connection.
    head_written: Option<usize>,
    /// Body bytes to write before the next frame is taken.
    pending: Bytes,
    /// The body, until it has ended (none for a request sent without one).
    body: Option<ProxyBody>,
    framing: RequestFraming,
    /// Body bytes still due under `Content-Length`.
    left: u64,
    /// Trailer fields the `Trailer` header announced (chunked bodies only forward those).
    trailer_names: Vec<HeaderName>,
    /// Whether any byte reached the connection.
    wrote_any: bool,
    flushed: bool,
}

/// Why writing a request failed.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("writing to the backend failed: {0}")]
    Io(#[from] io::Error),
    #[error("request body failed: {0}")]
    Body(BoxError),
    #[error("request body length differs from its Content-Length")]
    Length,
}

impl Sending {
    /// Decides `req`'s body framing and sets the fields that say it; `extra` are field lines to
    /// write after the head's own. Returns the method too (it decides the response's framing).
    pub(super) fn new(req: Request<ProxyBody>, extra: Bytes) -> (Self, Method) {
        let (mut parts, body) = req.into_parts();
        let empty = body.is_end_stream();
        let framing = request_framing(
            &parts.method,
            &mut parts.headers,
            empty,
            body.size_hint().exact(),
        );
        let trailer_names = match framing {
            RequestFraming::Chunked => announced_trailers(&parts.headers),
            _ => Vec::new(),
        };
        let method = parts.method.clone();
        let sending = Self {
            parts,
            extra,
            head_written: None,
            pending: Bytes::new(),
            body: (framing != RequestFraming::Empty).then_some(body),
            framing,
            left: match framing {
                RequestFraming::Length(n) => n,
                _ => 0,
            },
            trailer_names,
            wrote_any: false,
            flushed: true,
        };
        (sending, method)
    }

    /// Writes the head from `buf`, encoding it there first (origin-form target; the authority
    /// for `CONNECT`).
    fn poll_head(
        &mut self,
        io: &mut MaybeTls,
        buf: &mut Vec<u8>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendError>> {
        let mut written = match self.head_written {
            Some(n) => n,
            None => {
                let parts = &self.parts;
                let target = if parts.method == Method::CONNECT {
                    parts.uri.authority().map_or("", |a| a.as_str())
                } else {
                    parts.uri.path_and_query().map_or("/", |p| p.as_str())
                };
                buf.clear();
                encode_request_head(&parts.method, target, &parts.headers, &self.extra, buf);
                0
            }
        };
        while written < buf.len() {
            self.head_written = Some(written);
            let n = ready!(Pin::new(&mut *io).poll_write(cx, &buf[written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
            }
            written += n;
            self.wrote_any = true;
            self.flushed = false;
        }
        self.head_written = Some(written);
        Poll::Ready(Ok(()))
    }

    /// Writes what can be written now; ready once the whole request is written and flushed.
    fn poll_send(
        &mut self,
        conn: &mut H1Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendError>> {
        let io = &mut conn.io;
        if self.head_written.is_none_or(|n| n < conn.head.len()) {
            ready!(self.poll_head(io, &mut conn.head, cx))?;
        }
        loop {
            while !self.pending.is_empty() {
                let n = ready!(Pin::new(&mut *io).poll_write(cx, &self.pending))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                }
                self.pending.advance(n);
                self.wrote_any = true;
                self.flushed = false;
            }
            let Some(body) = self.body.as_mut() else {
                if !self.flushed {
                    ready!(Pin::new(&mut *io).poll_flush(cx))?;
                    self.flushed = true;
                }
                return Poll::Ready(Ok(()));
            };
            match Pin::new(body).poll_frame(cx) {
                Poll::Pending => {
                    // What was written must leave (a TLS stream buffers) while the client's
                    // next bytes are awaited.
                    if !self.flushed {
                        if let Poll::Ready(r) = Pin::new(&mut *io).poll_flush(cx) {
                            r?;
                            self.flushed = true;
                        }
                    }
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    self.body = None;
                    self.pending = self.last(None)?;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(SendError::Body(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    self.pending = match frame.into_data() {
                        Ok(data) => self.data(data)?,
                        Err(frame) => {
                            self.body = None;
                            self.last(frame.into_trailers().ok().as_ref())?
                        }
                    };
                }
            }
        }
    }

    /// The bytes of one data frame in the body's framing.
    fn data(&mut self, data: Bytes) -> Result<Bytes, SendError> {
        match self.framing {
            RequestFraming::Length(_) => {
                self.left = self
                    .left
                    .checked_sub(data.len() as u64)
                    .ok_or(SendError::Length)?;
                Ok(data)
            }
            RequestFraming::Chunked if data.is_empty() => Ok(Bytes::new()),
            RequestFraming::Chunked => {
                let (line, n) = chunked::chunk_size_line(data.len());
                let mut out = Vec::with_capacity(n + data.len() + 2);
                out.extend_from_slice(&line[..n]);
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
                Ok(out.into())
            }
            RequestFraming::Empty => Ok(Bytes::new()),
        }
    }

    /// What ends the body: the last chunk (with the announced trailers), or nothing.
    fn last(&mut self, trailers: Option<&HeaderMap>) -> Result<Bytes, SendError> {
        match self.framing {
            RequestFraming::Chunked => {
                let mut kept = HeaderMap::new();
                for (name, value) in trailers.into_iter().flatten() {
                    if self.trailer_names.contains(name) {
                        kept.append(name.clone(), value.clone());
                    }
                }
                let mut out = Vec::new();
                chunked::last_chunk(Some(&kept), &mut out);
                Ok(out.into())
            }
            RequestFraming::Length(_) if self.left > 0 => Err(SendError::Length),
            _ => Ok(Bytes::new()),
        }
    }
}

/// The field names a `Trailer` header announces.
fn announced_trailers(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(TRAILER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
}

/// An exchange that failed before a response head. The request comes back either way: the
/// retry of an idempotent request whose connection failed needs no copy of its head.
pub(super) enum Failed {
    /// Not one byte of the request reached the connection (boxed: the rare path).
    Unwritten(Box<Sending>, BoxError),
    /// Anything else: the request (or part of it) was written.
    Other(UpstreamError, Box<Sending>),
}

impl Sending {
    /// The request's head, as it was to be sent (framing fields set), and the field lines after
    /// it, for another attempt.
    pub(super) fn into_head(self) -> (http::request::Parts, Bytes) {
        (self.parts, self.extra)
    }
}

/// Writes the request on `conn` and reads the response head (skipping interim 1xx answers).
/// Returns the head, the connection and what is left of the request to write.
#[allow(clippy::manual_async_fn)] // an `async fn` would hold its arguments twice
pub(super) fn exchange<'a>(
    mut conn: H1Conn,
    mut sending: Sending,
    method: &'a Method,
    limits: &'a ResponseLimits,
) -> impl Future<Output = Result<(ResponseHead, H1Conn, Option<Box<Sending>>), Failed>> + use<'a> {
    // Not an `async fn`: that keeps a copy of its arguments beside the ones it uses, which doubles
    // this future, and every future above it holds it.
    async move {
        // The request stays here until the answer's head (not dropped once written): a failure
        // before it hands the head back.
        let mut written = false;
        let head = poll_fn(|cx| {
            if !written {
                match sending.poll_send(&mut conn, cx) {
                    Poll::Ready(Ok(())) => written = true,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            loop {
                match parse_response(&mut conn.buf, method, limits) {
                    Ok(Some(head)) if head.is_interim() => continue,
                    Ok(Some(head)) => return Poll::Ready(Ok(Ok(head))),
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Ok(Err(UpstreamError::Protocol(Box::new(e))))),
                }
                match ready!(conn.poll_fill(cx)) {
                    Ok(0) => {
                        let closed = io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "backend closed the connection before a response head",
                        );
                        return Poll::Ready(Err(SendError::Io(closed)));
                    }
                    Ok(_) => {}
                    Err(e) => return Poll::Ready(Err(SendError::Io(e))),
                }
            }
        })
        .await;
        match head {
            // Boxed: a body still being written is rare, and the response moves several times.
            Ok(Ok(head)) => Ok((head, conn, (!written).then(|| Box::new(sending)))),
            Ok(Err(e)) => Err(Failed::Other(e, Box::new(sending))),
            Err(e) if !sending.wrote_any && matches!(e, SendError::Io(_)) => {
                // Encoded again on the next connection.
                sending.head_written = None;
                Err(Failed::Unwritten(Box::new(sending), Box::new(e)))
            }
            Err(e) => {
                let error = match e {
                    SendError::Io(e) => UpstreamError::Broken(Box::new(e)),
                    other => UpstreamError::Protocol(Box::new(other)),
                };
                Err(Failed::Other(error, Box::new(sending)))
            }
        }
    }
}

/// How much of the response body is left to read.
enum Reading {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Ended,
}

/// Where a connection goes back to once its exchange has ended cleanly: its pool, under its key.
pub(super) struct Home {
    pub(super) pool: std::sync::Arc<super::h1_pool::H1Pool>,
    pub(super) key: super::PoolKey,
}

/// A backend's HTTP/1.1 response body, read from the connection as the client takes it; it also
/// writes the rest of the request body, if any.
pub(crate) struct H1Body {
    conn: Option<H1Conn>,
    reading: Reading,
    sending: Option<Box<Sending>>,
    keep_alive: bool,
    home: Option<Home>,
}

impl H1Body {
    /// The body of `head`, read from `conn`, which goes back `home` when it is reusable.
    pub(super) fn new(
        head: &ResponseHead,
        conn: H1Conn,
        sending: Option<Box<Sending>>,
        max_trailer_bytes: usize,
        home: Home,
    ) -> Self {
        let reading = match head.framing {
            BodyFraming::Empty | BodyFraming::Length(0) => Reading::Ended,
            BodyFraming::Length(n) => Reading::Length(n),
            BodyFraming::Chunked => Reading::Chunked(ChunkedDecoder::new(max_trailer_bytes)),
            BodyFraming::UntilClose => Reading::UntilClose,
        };
        let mut body = Self {
            conn: Some(conn),
            reading,
            sending,
            keep_alive: head.keep_alive,
            home: Some(home),
        };
        if matches!(body.reading, Reading::Ended) {
            body.finish();
        }
        body
    }

    /// The body has been read: the connection goes back when the request was written whole,
    /// nothing follows the response and the backend keeps the connection open.
    fn finish(&mut self) {
        self.reading = Reading::Ended;
        let Some(conn) = self.conn.take() else { return };
        if self.keep_alive && self.sending.is_none() && conn.buf.is_empty() {
            if let Some(home) = self.home.take() {
                home.pool.put(home.key, conn);
            }
        }
    }

    /// Fails the body; the connection is closed.
    fn fail(&mut self, e: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.reading = Reading::Ended;
        Poll::Ready(Some(Err(e.into())))
    }

    /// A data frame of the next `n` buffered bytes (the caller checked there are).
    fn take(conn: &mut H1Conn, n: usize) -> Frame<Bytes> {
        Frame::data(conn.buf.split_to(n).freeze())
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if let Some(s) = this.sending.as_mut() {
                match s.poll_send(conn, cx) {
                    Poll::Ready(Ok(())) => this.sending = None,
                    Poll::Ready(Err(e)) => return this.fail(e),
                    Poll::Pending => {}
                }
            }
            let buffered = conn.buf.len();
            match &mut this.reading {
                Reading::Ended => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Reading::Length(left) if buffered > 0 => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buffered);
                    *left -= n as u64;
                    let frame = Self::take(conn, n);
                    if *left == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Reading::UntilClose if buffered > 0 => {
                    return Poll::Ready(Some(Ok(Self::take(conn, buffered))));
                }
                Reading::Chunked(decoder) => match decoder.decode(&mut conn.buf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(t)) => return Poll::Ready(Some(Ok(Frame::trailers(t)))),
                    Ok(Decoded::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => return this.fail(e),
                },
                Reading::Length(_) | Reading::UntilClose => {}
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(this.reading, Reading::UntilClose) => {
                    this.keep_alive = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return this.fail(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "backend closed the connection inside the response body",
                    ))
                }
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.reading, Reading::Ended)
    }

    fn size_hint(&self) -> SizeHint {
        match self.reading {
            Reading::Length(n) => SizeHint::with_exact(n),
            Reading::Ended => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
