//! Why a forwarded request got no upstream response, and who is to blame: one enum decides the
//! status the client gets, the status the access log records, and which side the fault is on
//! (only an upstream fault may count against an endpoint's health).
//!
//! | failure | client gets | logged | side |
//! |---|---|---|---|
//! | connect failed on every attempt | 503 | 503 | upstream |
//! | route or backend deadline | 504 | 504 | upstream |
//! | backend broke the exchange | 502 | 502 | upstream |
//! | circuit breaker open | 503 + `x-bulkhead-overflow` | 503 | router (load shed) |
//! | client's body malformed | 400 | 400 | client |
//! | client gone mid-body | 400 (if it still listens) | 499 | client |
//! | client's body stalled (body idle timeout) | 408 | 408 | client |

use crate::body::{ClientFault, ProxyBody};
use crate::metrics::{Breaker, ClientErrorKind, UpstreamErrorKind};
use http::{HeaderValue, Response, StatusCode};

/// The response header naming the circuit breaker that refused a request.
pub(crate) const OVERFLOW_HEADER: &str = "x-bulkhead-overflow";

/// The status nginx logs for a client that closed before its request was answered.
pub(crate) const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultSide {
    /// The client (its body, or its going away).
    Client,
    /// The backend endpoint.
    Upstream,
    /// The router shed the request to protect the backend (circuit breaker).
    Router,
    /// The tenant's configuration (a route without a valid backend).
    Configuration,
}

impl FaultSide {
    /// The access log's `fault` field.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Upstream => "upstream",
            Self::Router => "router",
            Self::Configuration => "configuration",
        }
    }
}

/// Why a forwarded request ended without an upstream response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForwardError {
    /// The backend failed (connect, deadline, broken exchange).
    Upstream(UpstreamErrorKind),
    /// A circuit breaker of the backend was open.
    Overflow(Breaker),
    /// The client's request body failed.
    Client(ClientFault),
}

impl ForwardError {
    /// The status the client is answered with.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Self::Upstream(UpstreamErrorKind::Connect) | Self::Overflow(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Upstream(UpstreamErrorKind::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            Self::Upstream(UpstreamErrorKind::Protocol | UpstreamErrorKind::Tls) => {
                StatusCode::BAD_GATEWAY
            }
            Self::Client(ClientFault::Stalled) => StatusCode::REQUEST_TIMEOUT,
            Self::Client(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The status the access log and the request counter record (499 for a client gone).
    pub(crate) fn logged_status(self) -> u16 {
        match self {
            Self::Client(ClientFault::Gone) => CLIENT_CLOSED_REQUEST,
            other => other.status().as_u16(),
        }
    }

    /// Who caused it.
    pub(crate) fn side(self) -> FaultSide {
        match self {
            Self::Upstream(_) => FaultSide::Upstream,
            Self::Overflow(_) => FaultSide::Router,
            Self::Client(_) => FaultSide::Client,
        }
    }

    /// The response for the client (a local response, with the breaker named on overflow).
    pub(crate) fn response(self) -> Response<ProxyBody> {
        let mut resp = crate::http::local_response(self.status());
        if let Self::Overflow(breaker) = self {
            resp.headers_mut()
                .insert(OVERFLOW_HEADER, HeaderValue::from_static(breaker.as_str()));
        }
        resp
    }
}

impl From<ClientFault> for ClientErrorKind {
    fn from(fault: ClientFault) -> Self {
        match fault {
            ClientFault::MalformedBody => Self::MalformedBody,
            ClientFault::Gone => Self::Gone,
            ClientFault::Stalled => Self::Stalled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_fault_is_never_a_gateway_error() {
        for fault in [ClientFault::MalformedBody, ClientFault::Gone] {
            let e = ForwardError::Client(fault);
            assert_eq!(e.side(), FaultSide::Client);
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        }
        assert_eq!(
            ForwardError::Client(ClientFault::Gone).logged_status(),
            CLIENT_CLOSED_REQUEST
        );
    }

    #[test]
    fn overflow_is_503_naming_the_breaker() {
        let resp = ForwardError::Overflow(Breaker::MaxRequests).response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[OVERFLOW_HEADER], "max_requests");
    }
}
