//! Request handling: route, authenticate, authorise, then stream snapshots or forward an
//! acknowledgement. Every refusal goes through [`Refusal`], which picks the status and the counter.
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/snapshots/edge`, `GET /v1/snapshots/tenants/{tenant}` | 200, a stream of frames |
//! | `POST /v1/acks` with an [`AckMessage`] | 204 |
//! | no or unknown bearer token | 401 |
//! | a stream the identity may not read or acknowledge | 403 |
//! | unknown path / wrong method / bad body / body too large | 404 / 405 / 400 / 413 |
//! | authenticator undecided, acknowledgement queue full | 503 |

use crate::ack::AckMessage;
use crate::auth::{Admission, AuthError, Authenticator};
use crate::body::frame_body;
use crate::limits::{
    ACK_BODY_TIMEOUT, AUTH_TIMEOUT, MAX_ACK_BODY, MAX_SUBSCRIBER_LEN, MAX_TOKEN_LEN,
};
use crate::shared::{Counters, Shared};
use crate::stream::{StreamName, ACKS_PATH, STREAMS_PATH};
use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::sync::mpsc::error::TrySendError;

/// Content type of a snapshot stream.
pub const FRAMES_CONTENT_TYPE: &str = "application/vnd.bulkhead.snapshot-frames";

/// Request header carrying the subscriber's name (for logs only; optional).
pub const SUBSCRIBER_HEADER: &str = "bulkhead-subscriber";

/// Response body of every answer.
pub(crate) type ResponseBody = BoxBody<Bytes, Infallible>;

enum Route {
    Stream(StreamName),
    Ack,
}

/// Why a request is refused; each maps to one status and one counter.
#[derive(Debug)]
enum Refusal {
    NotFound,
    MethodNotAllowed(&'static str),
    Unauthenticated(String),
    Forbidden,
    AuthUnavailable(String),
    BadRequest(String),
    TooLarge,
    AckQueueFull,
}

impl Refusal {
    fn into_response<A>(self, shared: &Shared<A>, peer: SocketAddr) -> Response<ResponseBody> {
        let c = &shared.counters;
        let (status, message) = match &self {
            Self::NotFound => (StatusCode::NOT_FOUND, "not found".to_owned()),
            Self::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed".to_owned(),
            ),
            Self::Unauthenticated(why) => {
                (StatusCode::UNAUTHORIZED, format!("unauthenticated: {why}"))
            }
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                "this identity may not use this stream".to_owned(),
            ),
            Self::AuthUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "authentication unavailable, retry".to_owned(),
            ),
            Self::BadRequest(why) => (StatusCode::BAD_REQUEST, why.clone()),
            Self::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {MAX_ACK_BODY} bytes"),
            ),
            Self::AckQueueFull => (
                StatusCode::SERVICE_UNAVAILABLE,
                "acknowledgements not being read, retry".to_owned(),
            ),
        };
        match &self {
            Self::NotFound | Self::MethodNotAllowed(_) | Self::BadRequest(_) | Self::TooLarge => {
                Counters::bump(&c.bad_requests)
            }
            Self::Unauthenticated(_) => Counters::bump(&c.unauthenticated),
            Self::Forbidden => Counters::bump(&c.forbidden),
            Self::AuthUnavailable(_) => Counters::bump(&c.auth_unavailable),
            Self::AckQueueFull => Counters::bump(&c.acks_dropped),
        }
        match &self {
            Self::AuthUnavailable(why) => {
                tracing::warn!(%peer, reason = %why, "snapshot request: authentication unavailable")
            }
            Self::AckQueueFull => {
                tracing::warn!(%peer, "snapshot acknowledgement refused: queue full")
            }
            other => {
                tracing::info!(%peer, refusal = ?other, status = status.as_u16(), "snapshot request refused")
            }
        }
        let mut response = text(status, message);
        if let Self::MethodNotAllowed(allow) = self {
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn text(status: StatusCode, message: String) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::from(message)).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Answers one request.
pub(crate) async fn handle<A: Authenticator>(
    shared: &Shared<A>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    match respond(shared, peer, req).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(shared, peer),
    }
}

async fn respond<A: Authenticator>(
    shared: &Shared<A>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Refusal> {
    let route = route(req.method(), req.uri().path())?;
    let admission = authenticate(&shared.auth, req.headers()).await?;
    let identity = &admission.identity;
    match route {
        Route::Stream(stream) => {
            if !identity.may_read(&stream) {
                return Err(Refusal::Forbidden);
            }
            let subscriber = subscriber_label(req.headers());
            tracing::info!(%peer, %stream, %subscriber, "snapshot stream opened");
            let body = frame_body(
                stream.clone(),
                subscriber,
                shared.watch(&stream),
                admission,
                std::sync::Arc::clone(&shared.counters.revoked),
            );
            let mut response = Response::new(body.boxed());
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(FRAMES_CONTENT_TYPE));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        Route::Ack => {
            let message = read_ack(req).await?;
            if !identity.may_read(&message.stream) {
                return Err(Refusal::Forbidden);
            }
            let (stream, ack) = message.into_ack();
            tracing::debug!(%peer, %stream, subscriber = %ack.subscriber, version = ack.version, ok = ack.outcome.is_ok(), "snapshot acknowledgement");
            match shared.acks.try_send((stream, ack)) {
                Ok(()) => {
                    Counters::bump(&shared.counters.acks);
                    let mut response = Response::new(Full::new(Bytes::new()).boxed());
                    *response.status_mut() = StatusCode::NO_CONTENT;
                    Ok(response)
                }
                Err(TrySendError::Full(_) | TrySendError::Closed(_)) => Err(Refusal::AckQueueFull),
            }
        }
    }
}

fn route(method: &Method, path: &str) -> Result<Route, Refusal> {
    if path == ACKS_PATH {
        return if method == Method::POST {
            Ok(Route::Ack)
        } else {
            Err(Refusal::MethodNotAllowed("POST"))
        };
    }
    if path.starts_with(STREAMS_PATH) {
        let stream = StreamName::from_path(path).ok_or(Refusal::NotFound)?;
        return if method == Method::GET {
            Ok(Route::Stream(stream))
        } else {
            Err(Refusal::MethodNotAllowed("GET"))
        };
    }
    Err(Refusal::NotFound)
}

async fn authenticate<A: Authenticator>(
    auth: &A,
    headers: &HeaderMap,
) -> Result<Admission, Refusal> {
    let token = bearer_token(headers)?;
    match tokio::time::timeout(AUTH_TIMEOUT, auth.admit(token)).await {
        Ok(Ok(admission)) => Ok(admission),
        Ok(Err(AuthError::Unauthenticated(why))) => Err(Refusal::Unauthenticated(why)),
        Ok(Err(AuthError::Unavailable(why))) => Err(Refusal::AuthUnavailable(why)),
        Err(_) => Err(Refusal::AuthUnavailable("authenticator timed out".into())),
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Result<&str, Refusal> {
    let unauthenticated = |why: &str| Refusal::Unauthenticated(why.to_owned());
    let value = headers
        .get(AUTHORIZATION)
        .ok_or_else(|| unauthenticated("no bearer token"))?
        .to_str()
        .map_err(|_| unauthenticated("malformed authorization header"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| unauthenticated("malformed authorization header"))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(unauthenticated("no bearer token"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(unauthenticated("token too long"));
    }
    Ok(token)
}

fn subscriber_label(headers: &HeaderMap) -> String {
    headers
        .get(SUBSCRIBER_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= MAX_SUBSCRIBER_LEN)
        .unwrap_or("-")
        .to_owned()
}

async fn read_ack(req: Request<Incoming>) -> Result<AckMessage, Refusal> {
    let body = Limited::new(req.into_body(), MAX_ACK_BODY);
    let bytes = match tokio::time::timeout(ACK_BODY_TIMEOUT, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(Refusal::TooLarge),
        Ok(Err(e)) => return Err(Refusal::BadRequest(format!("acknowledgement body: {e}"))),
        Err(_) => return Err(Refusal::BadRequest("acknowledgement body timed out".into())),
    };
    let message: AckMessage = serde_json::from_slice(&bytes)
        .map_err(|e| Refusal::BadRequest(format!("invalid acknowledgement: {e}")))?;
    message
        .validate()
        .map_err(|e| Refusal::BadRequest(format!("invalid acknowledgement: {e}")))?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_tokens_are_parsed_strictly() {
        assert_eq!(bearer_token(&headers("Bearer abc")).ok(), Some("abc"));
        assert_eq!(bearer_token(&headers("bearer  abc ")).ok(), Some("abc"));
        for bad in ["Basic abc", "Bearer", "Bearer ", "abc"] {
            assert!(bearer_token(&headers(bad)).is_err(), "{bad:?}");
        }
        assert!(bearer_token(&HeaderMap::new()).is_err());
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert!(bearer_token(&headers(&long)).is_err());
    }

    #[test]
    fn routes_are_exact() {
        assert!(matches!(
            route(&Method::GET, "/v1/snapshots/edge"),
            Ok(Route::Stream(StreamName::Edge))
        ));
        assert!(matches!(route(&Method::POST, "/v1/acks"), Ok(Route::Ack)));
        assert!(matches!(
            route(&Method::POST, "/v1/snapshots/edge"),
            Err(Refusal::MethodNotAllowed("GET"))
        ));
        assert!(matches!(
            route(&Method::GET, "/v1/acks"),
            Err(Refusal::MethodNotAllowed("POST"))
        ));
        assert!(matches!(
            route(&Method::GET, "/v1/snapshots/tenants/A"),
            Err(Refusal::NotFound)
        ));
        assert!(matches!(route(&Method::GET, "/"), Err(Refusal::NotFound)));
    }
}
