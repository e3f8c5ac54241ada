//! gRPC statuses for the router's own answers. A gRPC client reads any HTTP status but 200 as a
//! transport failure (`UNKNOWN` or `UNAVAILABLE`, whatever the cause), so a request that speaks
//! gRPC (`content-type: application/grpc` or `application/grpc+<codec>`; gRPC-Web excluded) gets
//! its local answer as a trailers-only response: HTTP 200, `content-type: application/grpc`, and
//! `grpc-status` / `grpc-message` in the one HEADERS frame, which ends the stream.
//!
//! | router answer | gRPC status | why |
//! |---|---|---|
//! | 500 (every backend of the rule invalid) | 14 `UNAVAILABLE` | GRPCRoute spec: invalid backends MUST answer `UNAVAILABLE` |
//! | 502, 503 (no endpoint, overflow, upstream failure), 504 | 14 `UNAVAILABLE` | gRPC's HTTP-to-gRPC status mapping |
//! | 404 (no route) | 12 `UNIMPLEMENTED` | gRPC's HTTP-to-gRPC status mapping (no such method here) |
//! | 400 (malformed request, broken body) | 13 `INTERNAL` | gRPC's HTTP-to-gRPC status mapping |
//!
//! Other answers (421 and redirects) stay HTTP: a 421 tells an HTTP/2 client to retry on another
//! connection, which a gRPC status would hide. Metrics and access logs keep the HTTP status.

use crate::body::{self, ProxyBody};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Response, StatusCode};

/// `grpc-status` of a call the router could not send to any backend.
const UNAVAILABLE: u16 = 14;
/// `grpc-status` of a call no route serves.
const UNIMPLEMENTED: u16 = 12;
/// `grpc-status` of a call the router could not read.
const INTERNAL: u16 = 13;

/// Whether a request speaks gRPC (not gRPC-Web, whose status travels in the body).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    let Some(value) = headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes) else {
        return false;
    };
    value
        .get(..GRPC.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(GRPC))
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// The gRPC status and message for a local answer with `status`, if it has one.
pub(crate) fn grpc_status(status: StatusCode) -> Option<(u16, &'static str)> {
    Some(match status {
        StatusCode::INTERNAL_SERVER_ERROR => (UNAVAILABLE, "no valid backend for this route"),
        StatusCode::SERVICE_UNAVAILABLE => (UNAVAILABLE, "the service is unavailable"),
        StatusCode::BAD_GATEWAY => (UNAVAILABLE, "the backend failed"),
        StatusCode::GATEWAY_TIMEOUT => (UNAVAILABLE, "the backend timed out"),
        StatusCode::NOT_FOUND => (UNIMPLEMENTED, "no route for this method"),
        StatusCode::BAD_REQUEST => (INTERNAL, "malformed request"),
        _ => return None,
    })
}

/// `resp`, a local answer, as a gRPC client should get it: trailers-only when the request spoke
/// gRPC and the status has a gRPC equivalent (see the module table), else unchanged. Headers
/// already set (a response header filter's) are kept.
pub(crate) fn local_answer(grpc: bool, resp: Response<ProxyBody>) -> Response<ProxyBody> {
    match grpc.then(|| grpc_status(resp.status())).flatten() {
        Some(status) => trailers_only(resp, status),
        None => resp,
    }
}

/// `resp` as a trailers-only gRPC response with `(code, message)`, keeping the headers already set.
pub(crate) fn trailers_only(
    resp: Response<ProxyBody>,
    (code, message): (u16, &'static str),
) -> Response<ProxyBody> {
    let (mut parts, _) = resp.into_parts();
    parts.status = StatusCode::OK;
    let headers = &mut parts.headers;
    headers.remove(http::header::CONTENT_LENGTH);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(code));
    // Printable ASCII without `%`: no percent-encoding needed.
    headers.insert("grpc-message", HeaderValue::from_static(message));
    Response::from_parts(parts, body::empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::local_response;
    use http_body::Body;

    fn with_type(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_str(value).expect("value"));
        h
    }

    #[test]
    fn grpc_is_told_by_content_type_and_grpc_web_is_not_grpc() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC",
        ] {
            assert!(is_grpc(&with_type(yes)), "{yes}");
        }
        for no in [
            "application/grpc-web",
            "application/grpcx",
            "application/json",
            "text/plain",
        ] {
            assert!(!is_grpc(&with_type(no)), "{no}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn invalid_backends_answer_unavailable_trailers_only() {
        let resp = local_answer(true, local_response(StatusCode::INTERNAL_SERVER_ERROR));
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "14");
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/grpc");
        assert!(
            resp.body().is_end_stream(),
            "the HEADERS frame ends the stream"
        );
        assert_eq!(
            local_answer(true, local_response(StatusCode::NOT_FOUND)).headers()["grpc-status"],
            "12"
        );
    }

    #[test]
    fn http_clients_and_misdirected_requests_keep_their_http_status() {
        let resp = local_answer(false, local_response(StatusCode::INTERNAL_SERVER_ERROR));
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let resp = local_answer(true, local_response(StatusCode::MISDIRECTED_REQUEST));
        assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);
        assert!(resp.headers().get("grpc-status").is_none());
    }
}
