//! The request path's boundary policy ([`crate::limits::BoundaryPolicy`]) applied where the request
//! enters routing: the path normalised once under the escaped-slash policy (400 for a path refused,
//! 307 to the decoded path under `unescape-and-redirect`), and every change or refusal counted
//! (`bulkhead_router_request_hygiene_total`) and logged.

use super::refusal::{Answer, Refusal};
use super::ConnContext;
use crate::body::{self, ProxyBody, RequestRecord};
use crate::metrics::{HygieneAction, HygieneLabels};
use bulkhead_pathnorm::{normalize_path_with, EscapedSlashes, PathError};
use http::header::LOCATION;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use std::borrow::Cow;
use std::sync::Arc;

/// The status of the redirect to a path whose escaped slashes were decoded: 307 keeps the method
/// and body, as Envoy's `UNESCAPE_AND_REDIRECT` does.
const ESCAPED_SLASH_REDIRECT: StatusCode = StatusCode::TEMPORARY_REDIRECT;

/// Counts one action of the boundary policy.
pub(crate) fn count(ctx: &ConnContext, action: HygieneAction) {
    ctx.shared
        .metrics
        .request_hygiene
        .get_or_create(&HygieneLabels {
            tenant: Arc::clone(&ctx.shared.tenant),
            action,
        })
        .inc();
}

/// Puts the request's path in canonical form (see [`bulkhead_pathnorm`]) so that routes match, and
/// the backend receives, one spelling per resource. Returns the answer to send instead of routing:
/// 400 for a path that is refused and, under [`EscapedSlashes::UnescapeAndRedirect`], 307 to the
/// decoded path (query kept) for a path that held escaped slashes.
pub(crate) fn normalize_request_path<B>(
    ctx: &ConnContext,
    req: &mut Request<B>,
    record: &mut RequestRecord,
) -> Option<Answer> {
    let policy = ctx.shared.limits.boundary.escaped_slashes;
    let refused = |error: PathError| {
        count(ctx, HygieneAction::PathRefused);
        tracing::debug!(tenant = %ctx.shared.tenant, path = record.target.path(), %error, "request path refused");
        Some(Answer::refused(Refusal::BadPath))
    };
    let normalized = match normalize_path_with(req.uri().path(), policy) {
        Ok(n) => n,
        Err(error) => return refused(error),
    };
    let Cow::Owned(path) = normalized.path else {
        return None;
    };
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    if normalized.unescaped_slashes && policy == EscapedSlashes::UnescapeAndRedirect {
        count(ctx, HygieneAction::PathRedirected);
        tracing::debug!(tenant = %ctx.shared.tenant, path = record.target.path(), location = %path_and_query, "escaped slashes: redirecting to the decoded path");
        return Some(redirect(&path_and_query));
    }
    match with_path(req.uri(), path_and_query) {
        Ok(uri) => {
            record.target.uri = uri.clone();
            *req.uri_mut() = uri;
            None
        }
        Err(error) => refused(error),
    }
}

/// A 307 to `location` (an absolute path: the canonical path never starts with `//`).
fn redirect(location: &str) -> Answer {
    match HeaderValue::from_str(location) {
        Ok(v) => {
            let mut resp: Response<ProxyBody> = Response::new(body::empty());
            *resp.status_mut() = ESCAPED_SLASH_REDIRECT;
            resp.headers_mut().insert(LOCATION, v);
            Answer::redirect(resp)
        }
        Err(_) => Answer::refused(Refusal::BadPath),
    }
}

/// `uri` with another path and query.
fn with_path(uri: &Uri, path_and_query: String) -> Result<Uri, PathError> {
    let mut parts = uri.clone().into_parts();
    // The canonical path only holds characters the original path held (or `/`), so both steps succeed.
    parts.path_and_query =
        Some(PathAndQuery::try_from(path_and_query).map_err(|_| PathError::NotAbsolute)?);
    Uri::from_parts(parts).map_err(|_| PathError::NotAbsolute)
}
