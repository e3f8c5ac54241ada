//! Header hygiene between client and backend: hop-by-hop headers are removed (RFC 9110 §7.6.1),
//! forwarding headers are added, a request id is assigned when the client sent none.

use http::header::{CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// `X-Forwarded-For`.
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Request-Id`.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers: those named by `Connection`, then `Connection`, `Keep-Alive`,
/// `Proxy-Connection`, `Transfer-Encoding`, `TE` (unless it is exactly `trailers`, which gRPC needs) and
/// `Upgrade` (kept, with `Connection: upgrade`, when `keep_upgrade` is set).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if keep_upgrade && name == UPGRADE {
            continue;
        }
        headers.remove(name);
    }
    headers.remove(CONNECTION);
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(TRANSFER_ENCODING);
    let te_trailers = headers
        .get_all(TE)
        .iter()
        .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_trailers {
        headers.remove(TE);
    }
    if keep_upgrade && headers.contains_key(UPGRADE) {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
}

/// Whether an HTTP/1.1 request asks to switch protocols (`Connection: upgrade` and `Upgrade`).
pub(crate) fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Adds `X-Forwarded-For` (appending the client address), `X-Forwarded-Proto`, `X-Forwarded-Host`
/// and an `X-Request-Id` when absent; returns the request id.
pub(crate) fn add_forwarding(
    headers: &mut HeaderMap,
    client: IpAddr,
    proto: &'static str,
    original_host: Option<&HeaderValue>,
) -> String {
    let prior: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let xff = if prior.is_empty() {
        client.to_string()
    } else {
        format!("{}, {client}", prior.join(", "))
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let Some(host) = original_host {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    }
    match headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()) {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => {
            let id = format!("{:032x}", rand::random::<u128>());
            if let Ok(v) = HeaderValue::from_str(&id) {
                headers.insert(X_REQUEST_ID.clone(), v);
            }
            id
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed_but_te_trailers_stays() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.contains_key(TE) && h.contains_key("x-keep"));
        let mut g = HeaderMap::new();
        g.insert(TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut g, false);
        assert!(g.is_empty());
    }

    #[test]
    fn upgrade_is_kept_when_upgrading() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade_request(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h.get(UPGRADE).map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            h.get(CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
    }

    #[test]
    fn forwarding_headers_append_and_keep_request_id() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc"));
        let host = HeaderValue::from_static("a.acme.test");
        let id = add_forwarding(
            &mut h,
            "192.0.2.7".parse().expect("ip"),
            "https",
            Some(&host),
        );
        assert_eq!(id, "abc");
        assert_eq!(
            h.get(&X_FORWARDED_FOR).map(|v| v.as_bytes()),
            Some(&b"10.0.0.1, 192.0.2.7"[..])
        );
        assert_eq!(
            h.get(&X_FORWARDED_PROTO).map(|v| v.as_bytes()),
            Some(&b"https"[..])
        );
        let mut fresh = HeaderMap::new();
        let id = add_forwarding(&mut fresh, "192.0.2.7".parse().expect("ip"), "http", None);
        assert_eq!(id.len(), 32);
        assert!(fresh.contains_key(&X_REQUEST_ID));
    }
}
