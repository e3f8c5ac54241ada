//! Why the router answered a request itself: one enum decides the status the client gets, the
//! status the access log records, who is to blame, the reason logged and counted
//! (`bulkhead_router_request_refusals_total{reason}`) and, for a gRPC request, the gRPC status.
//!
//! | refusal | status | side | reason | gRPC |
//! |---|---|---|---|---|
//! | `CONNECT` | 405 | client | `method` | – |
//! | path refused by the boundary policy | 400 | client | `bad_path` | INTERNAL |
//! | host missing, duplicated, invalid, `:authority` ≠ `host` | 400 | client | `bad_host` | INTERNAL |
//! | host not this tenant's, another tenant's, another listener's | 421 | client | `misdirected` | – (HTTP: the client retries on a new connection) |
//! | no virtual host for the name on this listener | 404 | client | `no_virtual_host` | UNIMPLEMENTED |
//! | no route of the virtual host matches | 404 | client | `no_route` | UNIMPLEMENTED |
//! | the route has no valid backend | 500 | configuration | `no_backend` | UNAVAILABLE |
//! | no endpoint of the backend is available | 503 | upstream | `no_endpoint` | UNAVAILABLE |
//! | the request head cannot be sent on | 400 | client | `bad_head` | INTERNAL |
//! | the backend switched to a protocol nobody asked for | 502 | upstream | `unrequested_upgrade` | UNAVAILABLE |
//! | CORS preflight refused: origin not allowed, malformed or too long, too many request headers | 403 | client | `cors_preflight` | – |
//! | forwarding failed: see [`ForwardError`] | 502 / 503 / 504 / 400 / 408 | upstream / router / client | `upstream`, `upstream_timeout`, `overflow`, `client_body` | UNAVAILABLE / INTERNAL |

use super::grpc;
use super::local_response;
use crate::body::ProxyBody;
use crate::fault::{FaultSide, ForwardError};
use crate::metrics::{HostRefusal, RefusalReason, UpstreamErrorKind};
use http::{Response, StatusCode};

/// Why the router answered a request itself instead of relaying a backend's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `CONNECT` is not proxied.
    Method,
    /// The path was refused by the boundary policy.
    BadPath,
    /// The host check refused the request (see [`super::host`]).
    Host(HostRefusal),
    /// No virtual host serves the name on this listener.
    NoVirtualHost,
    /// No route of the virtual host matches the request.
    NoRoute,
    /// The route (or the backend the weights chose) has no valid backend.
    NoBackend,
    /// No endpoint of the backend is available.
    NoEndpoint,
    /// The request head cannot be sent on (a `Host` or URI that does not encode).
    BadHead,
    /// The backend answered 101 for a protocol the client did not ask for.
    UnrequestedUpgrade,
    /// A CORS preflight the route's policy refuses (see [`super::cors`]).
    CorsPreflight,
    /// Forwarding failed.
    Forward(ForwardError),
}

impl Refusal {
    /// The status the client gets.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Self::Method => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadPath | Self::BadHead => StatusCode::BAD_REQUEST,
            Self::Host(h) => h.status(),
            Self::NoVirtualHost | Self::NoRoute => StatusCode::NOT_FOUND,
            Self::NoBackend => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            Self::UnrequestedUpgrade => StatusCode::BAD_GATEWAY,
            Self::CorsPreflight => StatusCode::FORBIDDEN,
            Self::Forward(e) => e.status(),
        }
    }

    /// Who caused it.
    pub(crate) fn side(self) -> FaultSide {
        match self {
            // Not the client's doing: the listener changed under its connection.
            Self::Host(HostRefusal::ValidationChanged) => FaultSide::Configuration,
            Self::Method
            | Self::BadPath
            | Self::Host(_)
            | Self::NoVirtualHost
            | Self::NoRoute
            | Self::BadHead
            | Self::CorsPreflight => FaultSide::Client,
            Self::NoBackend => FaultSide::Configuration,
            Self::NoEndpoint | Self::UnrequestedUpgrade => FaultSide::Upstream,
            Self::Forward(e) => e.side(),
        }
    }

    /// The reason logged and counted.
    pub(crate) fn reason(self) -> RefusalReason {
        match self {
            Self::Method => RefusalReason::Method,
            Self::BadPath => RefusalReason::BadPath,
            Self::Host(h) if h.status() == StatusCode::MISDIRECTED_REQUEST => {
                RefusalReason::Misdirected
            }
            Self::Host(_) => RefusalReason::BadHost,
            Self::NoVirtualHost => RefusalReason::NoVirtualHost,
            Self::NoRoute => RefusalReason::NoRoute,
            Self::NoBackend => RefusalReason::NoBackend,
            Self::NoEndpoint => RefusalReason::NoEndpoint,
            Self::BadHead => RefusalReason::BadHead,
            Self::UnrequestedUpgrade => RefusalReason::UnrequestedUpgrade,
            Self::CorsPreflight => RefusalReason::CorsPreflight,
            Self::Forward(ForwardError::Upstream(UpstreamErrorKind::Timeout)) => {
                RefusalReason::UpstreamTimeout
            }
            Self::Forward(ForwardError::Upstream(_)) => RefusalReason::Upstream,
            Self::Forward(ForwardError::Overflow(_)) => RefusalReason::Overflow,
            Self::Forward(ForwardError::Client(_)) => RefusalReason::ClientBody,
        }
    }

    /// The gRPC status and message a gRPC client gets instead, if any.
    pub(crate) fn grpc(self) -> Option<(u16, &'static str)> {
        grpc::grpc_status(self.status())
    }

    /// The HTTP response (before response header filters and the gRPC translation).
    pub(crate) fn response(self) -> Response<ProxyBody> {
        match self {
            Self::Forward(e) => e.response(),
            other => local_response(other.status()),
        }
    }
}

impl From<ForwardError> for Refusal {
    fn from(e: ForwardError) -> Self {
        Self::Forward(e)
    }
}

/// The router's own answer to a request: a refusal, or a redirect (a filter's, or to a path's
/// canonical spelling). Response header filters apply to both.
pub(crate) struct Answer {
    /// The response to send (boxed: the error path stays small for the request path's `Result`s).
    pub(crate) response: Box<Response<ProxyBody>>,
    /// Why, when it is a refusal.
    pub(crate) refusal: Option<Refusal>,
}

impl Answer {
    /// A refusal's answer.
    pub(crate) fn refused(refusal: Refusal) -> Self {
        Self {
            response: Box::new(refusal.response()),
            refusal: Some(refusal),
        }
    }

    /// A redirect.
    pub(crate) fn redirect(response: Response<ProxyBody>) -> Self {
        Self::local(response)
    }

    /// Any other answer of the router's own that is not a refusal (a CORS preflight's).
    pub(crate) fn local(response: Response<ProxyBody>) -> Self {
        Self {
            response: Box::new(response),
            refusal: None,
        }
    }
}

impl From<Refusal> for Answer {
    fn from(refusal: Refusal) -> Self {
        Self::refused(refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::ClientFault;
    use crate::metrics::Breaker;

    #[test]
    fn every_refusal_has_one_status_side_and_reason() {
        let table = [
            (Refusal::Method, 405, FaultSide::Client, "method"),
            (Refusal::BadPath, 400, FaultSide::Client, "bad_path"),
            (
                Refusal::Host(HostRefusal::Duplicate),
                400,
                FaultSide::Client,
                "bad_host",
            ),
            (
                Refusal::Host(HostRefusal::OtherTenant),
                421,
                FaultSide::Client,
                "misdirected",
            ),
            (
                Refusal::Host(HostRefusal::ValidationChanged),
                421,
                FaultSide::Configuration,
                "misdirected",
            ),
            (
                Refusal::NoVirtualHost,
                404,
                FaultSide::Client,
                "no_virtual_host",
            ),
            (Refusal::NoRoute, 404, FaultSide::Client, "no_route"),
            (
                Refusal::NoBackend,
                500,
                FaultSide::Configuration,
                "no_backend",
            ),
            (Refusal::NoEndpoint, 503, FaultSide::Upstream, "no_endpoint"),
            (Refusal::BadHead, 400, FaultSide::Client, "bad_head"),
            (
                Refusal::CorsPreflight,
                403,
                FaultSide::Client,
                "cors_preflight",
            ),
            (
                Refusal::UnrequestedUpgrade,
                502,
                FaultSide::Upstream,
                "unrequested_upgrade",
            ),
            (
                Refusal::Forward(ForwardError::Upstream(UpstreamErrorKind::Timeout)),
                504,
                FaultSide::Upstream,
                "upstream_timeout",
            ),
            (
                Refusal::Forward(ForwardError::Upstream(UpstreamErrorKind::Connect)),
                503,
                FaultSide::Upstream,
                "upstream",
            ),
            (
                Refusal::Forward(ForwardError::Overflow(Breaker::MaxRequests)),
                503,
                FaultSide::Router,
                "overflow",
            ),
            (
                Refusal::Forward(ForwardError::Client(ClientFault::Stalled)),
                408,
                FaultSide::Client,
                "client_body",
            ),
        ];
        for (refusal, status, side, reason) in table {
            assert_eq!(refusal.status().as_u16(), status, "{refusal:?}");
            assert_eq!(refusal.side(), side, "{refusal:?}");
            assert_eq!(refusal.reason().as_str(), reason, "{refusal:?}");
            assert_eq!(refusal.response().status().as_u16(), status, "{refusal:?}");
        }
    }

    #[test]
    fn grpc_clients_get_grpc_statuses_but_421_stays_http() {
        assert_eq!(Refusal::NoBackend.grpc().map(|g| g.0), Some(14));
        assert_eq!(Refusal::NoRoute.grpc().map(|g| g.0), Some(12));
        assert_eq!(Refusal::BadPath.grpc().map(|g| g.0), Some(13));
        assert_eq!(Refusal::Host(HostRefusal::Misdirected).grpc(), None);
    }
}
