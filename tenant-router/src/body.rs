//! Body types, and the response body wrapper that enforces the route's deadline, counts bytes and
//! writes the access log line and request metrics when the response ends (cleanly or not).
//!
//! An error from the upstream body is passed on to hyper, which aborts the client response (HTTP/1:
//! the connection closes before the last chunk; HTTP/2: the stream is reset), so a truncated upstream
//! response can never look complete to the client.

use crate::balance::{OutstandingGuard, RequestPermit};
use crate::http::headers::RequestId;
use crate::idle::IdleBody;
use crate::idle::InFlight;
use crate::metrics::{
    RequestLabels, RouteLabels, RouteSeries, RouterMetrics, UpstreamErrorKind, UpstreamErrorLabels,
};
use crate::otel::{Completion, RequestSpan};
use bytes::Bytes;
use http::Method;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;

/// A boxed error, as bodies and clients report them.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type requests and responses are forwarded with.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// An empty body.
pub(crate) fn empty() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body holding `text`.
pub(crate) fn full(text: impl Into<Bytes>) -> ProxyBody {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Boxes any body whose errors convert to [`BoxError`].
pub(crate) fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Not finished when dropped (the client went away).
    Cancelled,
    /// The last byte was sent.
    Complete,
    /// The route's deadline passed while streaming.
    Timeout,
    /// The upstream body failed.
    UpstreamError,
    /// The client's request body was malformed.
    ClientError,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Cancelled => "cancelled",
            Self::Complete => "complete",
            Self::Timeout => "timeout",
            Self::UpstreamError => "upstream_error",
            Self::ClientError => "client_error",
        }
    }
}

/// The host and path a request named, for its log line and span: the request's own shared bytes
/// (its URI and `Host` field), not copies, since the access log is usually off.
#[derive(Debug, Default)]
pub(crate) struct SentTarget {
    /// The request target (HTTP/2 `:authority` and `:path`, or the HTTP/1 request line's).
    pub(crate) uri: http::Uri,
    /// The `Host` field, when the target names no authority.
    pub(crate) host_field: Option<http::HeaderValue>,
}

impl SentTarget {
    /// What `req` names: its URI and, without an authority in it, its (first) `Host` field.
    pub(crate) fn of<B>(req: &http::Request<B>) -> Self {
        let uri = req.uri().clone();
        let host_field = match uri.authority() {
            Some(_) => None,
            None => req.headers().get(http::header::HOST).cloned(),
        };
        Self { uri, host_field }
    }

    /// The host as sent: the URI authority or the `Host` field; empty when neither is text.
    pub(crate) fn host(&self) -> &str {
        match self.uri.authority() {
            Some(authority) => authority.as_str(),
            None => self
                .host_field
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default(),
        }
    }

    /// The path.
    pub(crate) fn path(&self) -> &str {
        self.uri.path()
    }
}

/// What the access log and the metrics say about one request.
#[derive(Debug)]
pub(crate) struct RequestRecord {
    pub(crate) metrics: Arc<RouterMetrics>,
    pub(crate) tenant: Arc<str>,
    pub(crate) route: Arc<str>,
    /// The matched route's series (`None` before a route matched: looked up by label).
    pub(crate) series: Option<Arc<RouteSeries>>,
    pub(crate) backend: Arc<str>,
    pub(crate) status: u16,
    pub(crate) method: Method,
    /// The request's target as the client sent it (the path canonical once normalised).
    pub(crate) target: SentTarget,
    pub(crate) request_id: RequestId,
    pub(crate) start: Instant,
    /// Counts the request on its connection until the response ends (idle timeout).
    pub(crate) in_flight: InFlight,
    /// From the start until the upstream's response head arrived (forwarded requests only).
    pub(crate) upstream: Option<Duration>,
    /// Keeps the endpoint's in-flight count up until the response ends.
    pub(crate) guard: Option<OutstandingGuard>,
    /// The request's OpenTelemetry span (only while tracing is on).
    pub(crate) span: Option<RequestSpan>,
    /// Keeps the request counted by its backend's circuit breaker until the response ends.
    pub(crate) permit: Option<RequestPermit>,
    /// Set when the client failed its own request body (the outcome says so).
    pub(crate) client_fault: Option<ClientFault>,
    /// Why the router answered itself, and whose fault that was, when it did.
    pub(crate) refusal: Option<(crate::metrics::RefusalReason, crate::fault::FaultSide)>,
    /// Whether the line was written; a record dropped before (the request's handling was
    /// cancelled because the client went away) is logged as status 499, outcome `cancelled`.
    pub(crate) logged: bool,
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        if !self.logged {
            self.status = crate::fault::CLIENT_CLOSED_REQUEST;
            self.finish(0, Outcome::Cancelled);
        }
    }
}

impl RequestRecord {
    fn finish(&mut self, bytes: u64, outcome: Outcome) {
        self.logged = true;
        let outcome = match self.client_fault {
            Some(ClientFault::Gone) => Outcome::Cancelled,
            Some(ClientFault::MalformedBody | ClientFault::Stalled) => Outcome::ClientError,
            None => outcome,
        };
        let ended = bulkhead_net::clock::now();
        let elapsed = ended.saturating_duration_since(self.start);
        self.in_flight
            .ended_at(tokio::time::Instant::from_std(ended));
        if let Some(span) = self.span.take() {
            span.finish(&Completion {
                status: self.status,
                route: &self.route,
                backend: &self.backend,
                request_id: self.request_id.as_str(),
                failure: matches!(outcome, Outcome::Timeout | Outcome::UpstreamError)
                    .then(|| outcome.as_str()),
            });
        }
        tracing::info!(
            target: "access",
            tenant = %self.tenant,
            route = %self.route,
            backend = %self.backend,
            endpoint = self.guard.as_ref().map(|g| tracing::field::display(g.addr())),
            status = self.status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            upstream_ms = self.upstream.map(|d| d.as_secs_f64() * 1000.0),
            bytes,
            method = %self.method,
            host = self.target.host(),
            path = self.target.path(),
            request_id = %self.request_id,
            outcome = outcome.as_str(),
            refusal = self.refusal.map(|(reason, _)| reason.as_str()),
            fault = self.refusal.map(|(_, side)| side.as_str()),
        );
        let route = || RouteLabels {
            tenant: Arc::clone(&self.tenant),
            route: Arc::clone(&self.route),
        };
        let requests = || RequestLabels {
            tenant: Arc::clone(&self.tenant),
            route: Arc::clone(&self.route),
            backend: Arc::clone(&self.backend),
            code: self.status,
        };
        let seconds = elapsed.as_secs_f64();
        let metrics = &self.metrics;
        match &self.series {
            Some(series) => {
                let (duration, sent) = series.route(metrics, route);
                duration.observe(seconds);
                sent.inc_by(bytes);
                series.count_request(metrics, &self.backend, self.status, requests);
            }
            None => {
                metrics
                    .request_duration
                    .get_or_create(&route())
                    .observe(seconds);
                metrics.response_bytes.get_or_create(&route()).inc_by(bytes);
                metrics.requests.get_or_create(&requests()).inc();
            }
        }
        let kind = match outcome {
            Outcome::Timeout => Some(UpstreamErrorKind::Timeout),
            Outcome::UpstreamError => Some(UpstreamErrorKind::Protocol),
            Outcome::Cancelled | Outcome::Complete | Outcome::ClientError => None,
        };
        if let Some(kind) = kind {
            self.metrics
                .upstream_errors
                .get_or_create(&UpstreamErrorLabels {
                    tenant: Arc::clone(&self.tenant),
                    backend: Arc::clone(&self.backend),
                    kind,
                })
                .inc();
        }
    }
}

pin_project! {
    /// A response body that enforces a deadline, counts bytes and logs the request when it ends.
    pub(crate) struct ObservedBody {
        #[pin]
        inner: ProxyBody,
        #[pin]
        deadline: Option<Sleep>,
        bytes: u64,
        outcome: Outcome,
        // Boxed: the record is most of a request's state, and the future and body that hold it
        // are moved several times (and the HTTP/2 stream's future then fits a small allocation).
        record: Option<Box<RequestRecord>>,
    }

    impl PinnedDrop for ObservedBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(mut record) = this.record.take() {
                record.finish(*this.bytes, *this.outcome);
            }
        }
    }
}

impl ObservedBody {
    /// Wraps `inner`; the request is logged when the body ends or is dropped.
    pub(crate) fn new(
        inner: ProxyBody,
        deadline: Option<Instant>,
        record: Box<RequestRecord>,
    ) -> Self {
        let outcome = if inner.is_end_stream() {
            Outcome::Complete
        } else {
            Outcome::Cancelled
        };
        Self {
            inner,
            deadline: deadline.map(|d| tokio::time::sleep_until(d.into())),
            bytes: 0,
            outcome,
            record: Some(record),
        }
    }
}

impl std::fmt::Debug for ObservedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedBody")
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// The error a response body ends with when the route's deadline passes mid-stream.
#[derive(Debug, thiserror::Error)]
#[error("route deadline passed while streaming the response")]
pub(crate) struct DeadlineExceeded;

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if *this.outcome != Outcome::Cancelled {
            return Poll::Ready(None);
        }
        if let Some(deadline) = this.deadline.as_mut().as_pin_mut() {
            if deadline.poll(cx).is_ready() {
                *this.outcome = Outcome::Timeout;
                return Poll::Ready(Some(Err(Box::new(DeadlineExceeded))));
            }
        }
        match ready!(this.inner.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
                // A body of known length is not polled again after its last byte: it ended here.
                if this.inner.is_end_stream() {
                    *this.outcome = Outcome::Complete;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                *this.outcome = Outcome::UpstreamError;
                Poll::Ready(Some(Err(e)))
            }
            None => {
                *this.outcome = Outcome::Complete;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.outcome != Outcome::Cancelled || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How a client's request body failed; the failure is the client's, never the endpoint's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientFault {
    /// The body broke the protocol (an invalid chunk, an HTTP/2 stream error of the client's making).
    MalformedBody,
    /// The client went away before its body ended (closed or reset the connection or stream).
    Gone,
    /// The client stopped sending its body: no byte for the body idle timeout
    /// ([`crate::RouterLimits::body_idle_timeout`]).
    Stalled,
}

impl ClientFault {
    /// What an error from the client's body says: invalid data or an HTTP/2 protocol error the
    /// router detected is a malformed body; anything else (an early end of file, a reset) means the
    /// client went away.
    fn of(error: &hyper::Error) -> Self {
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(err) = current {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::{InvalidData, InvalidInput};
                if matches!(io.kind(), InvalidData | InvalidInput) {
                    return Self::MalformedBody;
                }
            }
            if let Some(h2) = err.downcast_ref::<h2::Error>() {
                let protocol = h2.reason() == Some(h2::Reason::PROTOCOL_ERROR);
                if protocol && !h2.is_remote() {
                    return Self::MalformedBody;
                }
            }
            current = err.source();
        }
        Self::Gone
    }

    fn code(self) -> u8 {
        match self {
            Self::MalformedBody => 1,
            Self::Gone => 2,
            Self::Stalled => 3,
        }
    }
}

/// Records whether the client's request body failed, shared by the body (which sets it) and the
/// request path (which reads it when an upstream exchange failed, to blame the right side).
#[derive(Debug, Clone)]
pub(crate) struct ClientBodyWatch(Option<Arc<std::sync::atomic::AtomicU8>>);

impl ClientBodyWatch {
    /// A watch for a body that can fail.
    pub(crate) fn new() -> Self {
        Self(Some(Arc::default()))
    }

    /// The watch of a request without a body: it never reports a fault.
    pub(crate) fn none() -> Self {
        Self(None)
    }

    /// How the client's body failed, if it did (never, for a request without a body).
    pub(crate) fn fault(&self) -> Option<ClientFault> {
        match self.0.as_ref()?.load(std::sync::atomic::Ordering::Acquire) {
            1 => Some(ClientFault::MalformedBody),
            2 => Some(ClientFault::Gone),
            3 => Some(ClientFault::Stalled),
            _ => None,
        }
    }

    /// Records how the body failed.
    pub(crate) fn set(&self, fault: ClientFault) {
        if let Some(code) = &self.0 {
            code.store(fault.code(), std::sync::atomic::Ordering::Release);
        }
    }
}

pin_project! {
    /// The client's request body, recording in a [`ClientBodyWatch`] how it failed (before the
    /// error reaches the upstream client, so an upstream failure it causes is blamed on the client).
    struct ClientBody {
        #[pin]
        inner: hyper::body::Incoming,
        watch: ClientBodyWatch,
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match ready!(this.inner.poll_frame(cx)) {
            Some(Err(e)) => {
                this.watch.set(ClientFault::of(&e));
                Poll::Ready(Some(Err(Box::new(e))))
            }
            other => Poll::Ready(other.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps the client's request body: the body to forward (ended with an error when no byte arrives
/// for `idle_timeout` while it is read, see [`IdleBody`]), and the watch that says whether (and
/// how) it failed.
pub(crate) fn client_body(
    incoming: hyper::body::Incoming,
    idle_timeout: std::time::Duration,
) -> (ProxyBody, ClientBodyWatch) {
    if incoming.is_end_stream() {
        // Nothing to read, so nothing can fail or stall: no watch, no idle timer.
        return (empty(), ClientBodyWatch::none());
    }
    let watch = ClientBodyWatch::new();
    let body = ClientBody {
        inner: incoming,
        watch: watch.clone(),
    };
    let body = IdleBody::new(body, idle_timeout, watch.clone());
    (body.boxed_unsync(), watch)
}

/// Frames a mirror copy may lag behind the forwarded request before the copy is abandoned.
pub const MIRROR_BODY_BUFFER_FRAMES: usize = 64;

pin_project! {
    /// The forwarded request body, copying each data frame to a mirror.
    struct TeeBody {
        #[pin]
        inner: ProxyBody,
        copy: Option<tokio::sync::mpsc::Sender<Bytes>>,
        aborted: Arc<std::sync::atomic::AtomicBool>,
    }
}

impl Body for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let (Some(copy), Some(data)) = (this.copy.as_ref(), f.data_ref()) {
                    if copy.try_send(data.clone()).is_err() {
                        // The mirror is too slow (or gone): its copy ends as an error, never short.
                        this.aborted
                            .store(true, std::sync::atomic::Ordering::Release);
                        *this.copy = None;
                    }
                }
            }
            Some(Err(_)) => {
                this.aborted
                    .store(true, std::sync::atomic::Ordering::Release);
                *this.copy = None;
            }
            None => *this.copy = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The mirror's copy of a request body.
struct MirrorBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    aborted: Arc<std::sync::atomic::AtomicBool>,
}

/// Why a mirrored body ended early.
#[derive(Debug, thiserror::Error)]
#[error("mirrored request body abandoned (mirror too slow or client body failed)")]
pub(crate) struct MirrorAbandoned;

impl Body for MirrorBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match ready!(self.rx.poll_recv(cx)) {
            Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            None if self.aborted.load(std::sync::atomic::Ordering::Acquire) => {
                Poll::Ready(Some(Err(Box::new(MirrorAbandoned))))
            }
            None => Poll::Ready(None),
        }
    }
}

/// Splits a request body into the forwarded body and a bounded copy for a mirror. The forwarded
/// body never waits for the mirror: a copy that falls [`MIRROR_BODY_BUFFER_FRAMES`] behind ends with
/// an error (so the mirror never sees a silently truncated body).
pub(crate) fn tee(body: ProxyBody) -> (ProxyBody, ProxyBody, MirrorCopyState) {
    let (tx, rx) = tokio::sync::mpsc::channel(MIRROR_BODY_BUFFER_FRAMES);
    let aborted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let main = TeeBody {
        inner: body,
        copy: Some(tx),
        aborted: Arc::clone(&aborted),
    };
    (
        main.boxed_unsync(),
        MirrorBody {
            rx,
            aborted: Arc::clone(&aborted),
        }
        .boxed_unsync(),
        MirrorCopyState(aborted),
    )
}

/// Says whether a mirror's copy of a request body was abandoned (the client's body failed, or the
/// mirror fell behind): a mirror exchange that then fails is not the mirror endpoint's fault.
#[derive(Debug, Clone)]
pub(crate) struct MirrorCopyState(Arc<std::sync::atomic::AtomicBool>);

impl MirrorCopyState {
    /// Whether the copy ended early.
    pub(crate) fn abandoned(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// A request body lent to one upstream attempt, and taken back when that attempt failed without
/// reading any of it (so the request can be sent elsewhere, body and all).
///
/// The body stays in a shared slot until the upstream client first polls it; its size hint and
/// end-of-stream flag are answered from a copy taken beforehand, so that framing decisions (which
/// hyper makes before it polls) do not move it.
pub(crate) struct LentBody {
    slot: Arc<std::sync::Mutex<Option<ProxyBody>>>,
    taken: Option<ProxyBody>,
    hint: SizeHint,
    end: bool,
}

/// The lender's side of a [`LentBody`].
pub(crate) struct BodyLoan {
    slot: Arc<std::sync::Mutex<Option<ProxyBody>>>,
}

/// Why a lent body yields an error: it was taken back while the failed attempt still held it.
#[derive(Debug, thiserror::Error)]
#[error("request body was taken back for another attempt")]
pub(crate) struct BodyTakenBack;

/// Lends `body` to one attempt: the body to send, and the loan to [`BodyLoan::take_back`] it.
pub(crate) fn lend(body: ProxyBody) -> (ProxyBody, BodyLoan) {
    let hint = body.size_hint();
    let end = body.is_end_stream();
    let slot = Arc::new(std::sync::Mutex::new(Some(body)));
    let lent = LentBody {
        slot: Arc::clone(&slot),
        taken: None,
        hint,
        end,
    };
    (lent.boxed_unsync(), BodyLoan { slot })
}

impl BodyLoan {
    /// The body, if the attempt never started reading it.
    pub(crate) fn take_back(self) -> Option<ProxyBody> {
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

impl Body for LentBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.taken.is_none() {
            this.taken = this
                .slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if this.taken.is_none() {
                return Poll::Ready(Some(Err(Box::new(BodyTakenBack))));
            }
        }
        match this.taken.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(Some(Err(Box::new(BodyTakenBack)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.taken {
            Some(body) => body.is_end_stream(),
            None => self.end,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.taken {
            Some(body) => body.size_hint(),
            None => self.hint,
        }
    }
}

#[cfg(test)]
mod lend_tests {
    use super::*;

    #[tokio::test]
    async fn an_unread_body_comes_back_whole() {
        let (lent, loan) = lend(full("hello"));
        assert_eq!(lent.size_hint().exact(), Some(5));
        drop(lent);
        let back = loan.take_back().expect("never read");
        let bytes = back.collect().await.map(|c| c.to_bytes()).ok();
        assert_eq!(bytes.as_deref(), Some(&b"hello"[..]));
    }

    #[tokio::test]
    async fn a_read_body_stays_with_the_attempt() {
        let (lent, loan) = lend(full("hello"));
        let bytes = lent.collect().await.map(|c| c.to_bytes()).ok();
        assert_eq!(bytes.as_deref(), Some(&b"hello"[..]));
        assert!(loan.take_back().is_none());
    }

    #[tokio::test]
    async fn taking_back_first_makes_the_attempt_fail() {
        let (lent, loan) = lend(full("hello"));
        assert!(loan.take_back().is_some());
        assert!(lent.collect().await.is_err(), "never a silently empty body");
    }
}
