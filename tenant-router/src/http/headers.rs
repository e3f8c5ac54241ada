//! Header hygiene between client and backend, in the order the request path applies it:
//!
//! 1. [`requested_upgrade`] reads which allowed protocols the client asks to switch to (only
//!    `websocket` by default; `h2c` never), then [`strip_hop_by_hop`] removes every hop-by-hop
//!    header (RFC 9110 §7.6.1, `HTTP2-Settings` included), before any route filter runs, so a
//!    client's `Connection` header cannot remove what a filter sets.
//! 2. Route filters edit headers.
//! 3. [`restore_upgrade`] puts back an allowed upgrade; [`forwarding`] replaces every
//!    client-supplied forwarding header (dash or underscore spelling) with the router's own and
//!    assigns a request id; [`join_cookies`] folds HTTP/2 cookie crumbs into one line for HTTP/1.1
//!    backends (RFC 9113 §8.2.3).
//! 4. A 101 answer is relayed only for a protocol the request asked for ([`upgrade_accepted`]).

use http::header::{CONNECTION, COOKIE, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// `X-Forwarded-For`.
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Port`.
pub(crate) static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
/// `X-Real-IP`.
pub(crate) static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// `X-Request-Id`.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Headers that carry a client address, scheme, host or port as some proxy saw them. A client's
/// copies (in either `-` or `_` spelling, which some servers read alike) never reach a backend;
/// the router sets the first five itself.
const FORWARDING_HEADERS: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "forwarded",
    "x-client-ip",
    "true-client-ip",
];

/// Removes hop-by-hop headers: those named by `Connection`, then `Connection`, `Keep-Alive`,
/// `Proxy-Connection`, `Transfer-Encoding`, `HTTP2-Settings`, `TE` (unless it is exactly
/// `trailers`, which gRPC needs) and `Upgrade` (kept, with `Connection: upgrade`, when
/// `keep_upgrade` is set: a 101 answer).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the fields says which are present and what `Connection` names; a second
    // (`retain`) drops them by the hash the map already holds. Most messages carry none, or only
    // `Connection: keep-alive`, and a lookup per name is what this saves.
    let mut present = 0u8;
    let mut te_trailers = true;
    let mut te_named = false;
    // `Connection` values naming fields beyond the fixed set (rare): matched again below.
    let mut naming: Vec<HeaderValue> = Vec::new();
    for (name, value) in headers.iter() {
        let bit = hop_by_hop_bit(name);
        present |= bit;
        if bit == HOP_TE {
            te_trailers &= value.as_bytes().eq_ignore_ascii_case(b"trailers");
        } else if bit == HOP_CONNECTION {
            let mut names_other = false;
            for token in value_tokens(value) {
                match token_hop_bit(token) {
                    HOP_TE => te_named = true,
                    0 => names_other = true,
                    // Removed (or, `Upgrade` on a 101, kept) by name in any case.
                    _ => {}
                }
            }
            if names_other {
                naming.push(value.clone());
            }
        }
    }
    if present == 0 {
        return;
    }
    let keep_te = te_trailers && !te_named;
    let keep_upgrade = keep_upgrade && present & HOP_UPGRADE != 0;
    headers.retain(|name, _| match hop_by_hop_bit(name) {
        HOP_TE => keep_te,
        HOP_UPGRADE => keep_upgrade,
        0 => !naming
            .iter()
            .flat_map(value_tokens)
            .any(|t| token_hop_bit(t) == 0 && t.eq_ignore_ascii_case(name.as_str())),
        _ => false,
    });
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

const HOP_CONNECTION: u8 = 1;
const HOP_TE: u8 = 2;
const HOP_UPGRADE: u8 = 4;
const HOP_TRANSFER_ENCODING: u8 = 8;
const HOP_KEEP_ALIVE: u8 = 16;
const HOP_PROXY_CONNECTION: u8 = 32;
const HOP_HTTP2_SETTINGS: u8 = 64;

/// Every hop-by-hop field name and its bit.
static HOP_BY_HOP: [(&HeaderName, u8); 7] = [
    (&CONNECTION, HOP_CONNECTION),
    (&TE, HOP_TE),
    (&UPGRADE, HOP_UPGRADE),
    (&TRANSFER_ENCODING, HOP_TRANSFER_ENCODING),
    (&KEEP_ALIVE, HOP_KEEP_ALIVE),
    (&PROXY_CONNECTION, HOP_PROXY_CONNECTION),
    (&HTTP2_SETTINGS, HOP_HTTP2_SETTINGS),
];

/// The bit of the hop-by-hop field `name`, else 0. Every name of every message passes through
/// here twice: names the `http` crate knows compare by their index (no bytes are read), the
/// others by their bytes.
fn hop_by_hop_bit(name: &HeaderName) -> u8 {
    HOP_BY_HOP
        .iter()
        .find(|(hop, _)| name == *hop)
        .map_or(0, |(_, bit)| *bit)
}

/// [`hop_by_hop_bit`] of a `Connection` token, in any case; its length decides first which one
/// name to compare.
fn token_hop_bit(name: &str) -> u8 {
    let (hop, bit) = match name.len() {
        2 => (&TE, HOP_TE),
        7 => (&UPGRADE, HOP_UPGRADE),
        10 if name.as_bytes()[0].eq_ignore_ascii_case(&b'k') => (&KEEP_ALIVE, HOP_KEEP_ALIVE),
        10 => (&CONNECTION, HOP_CONNECTION),
        14 => (&HTTP2_SETTINGS, HOP_HTTP2_SETTINGS),
        16 => (&PROXY_CONNECTION, HOP_PROXY_CONNECTION),
        17 => (&TRANSFER_ENCODING, HOP_TRANSFER_ENCODING),
        _ => return 0,
    };
    if name.eq_ignore_ascii_case(hop.as_str()) {
        bit
    } else {
        0
    }
}

/// The comma-separated, trimmed, non-empty tokens of one header value that is text.
fn value_tokens(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .to_str()
        .ok()
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The comma-separated tokens of every `Connection` header, trimmed.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    comma_tokens(headers, &CONNECTION)
}

/// The comma-separated, trimmed, non-empty tokens of every `name` header that is text.
fn comma_tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// What a request asks for in its `Upgrade` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UpgradeAsk {
    /// No protocol upgrade (no `Upgrade`, or no `Connection: upgrade`).
    None,
    /// The allowed protocols asked for, as the `Upgrade` value to forward.
    Allowed(HeaderValue),
    /// Only protocols that are not allowed (e.g. `h2c`): the request goes on without `Upgrade`.
    Refused,
}

/// Reads the protocols an HTTP/1.1 request asks to switch to (`Connection: upgrade` and
/// `Upgrade`), keeping those whose name (before any `/version`) is in `allowed`, case-insensitively.
pub(crate) fn requested_upgrade(headers: &HeaderMap, allowed: &[String]) -> UpgradeAsk {
    let asks = headers.contains_key(UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"));
    if !asks {
        return UpgradeAsk::None;
    }
    let kept: Vec<&str> = comma_tokens(headers, &UPGRADE)
        .filter(|t| {
            allowed
                .iter()
                .any(|a| a.eq_ignore_ascii_case(protocol_name(t)))
        })
        .collect();
    match HeaderValue::from_str(&kept.join(", ")) {
        Ok(v) if !kept.is_empty() => UpgradeAsk::Allowed(v),
        _ => UpgradeAsk::Refused,
    }
}

/// The protocol name of an `Upgrade` token (`name/version`).
fn protocol_name(token: &str) -> &str {
    token.split_once('/').map_or(token, |(name, _)| name).trim()
}

/// Puts an allowed upgrade back on a request whose hop-by-hop headers were stripped.
pub(crate) fn restore_upgrade(headers: &mut HeaderMap, protocols: HeaderValue) {
    headers.insert(UPGRADE, protocols);
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Whether a 101 answer switches to protocols the request asked for (each of its `Upgrade` tokens
/// names one of `requested`); a 101 without `Upgrade` switches to nothing known and is refused.
pub(crate) fn upgrade_accepted(response: &HeaderMap, requested: &HeaderValue) -> bool {
    let asked: Vec<&str> = requested
        .to_str()
        .unwrap_or_default()
        .split(',')
        .map(|t| protocol_name(t.trim()))
        .collect();
    let mut answered = comma_tokens(response, &UPGRADE).peekable();
    answered.peek().is_some()
        && answered.all(|t| {
            asked
                .iter()
                .any(|a| a.eq_ignore_ascii_case(protocol_name(t)))
        })
}

/// What the router vouches for about the client, for [`add_forwarding`].
pub(crate) struct Forwarding<'a> {
    /// The client address (from the PROXY header, or the TCP peer).
    pub(crate) client: IpAddr,
    /// The same address as a header value, made once per connection ([`ip_value`]).
    pub(crate) client_value: &'a HeaderValue,
    /// `http` or `https`: how the request reached the router.
    pub(crate) proto: &'static str,
    /// The request's host as the client sent it.
    pub(crate) host: Option<&'a HeaderValue>,
    /// The port of the Gateway listener the request arrived on ([`port_value`]).
    pub(crate) port: &'a HeaderValue,
    /// How many client-supplied `X-Forwarded-For` entries to keep (the last ones).
    pub(crate) trusted_hops: usize,
}

/// The forwarding fields the router sets on a request ([`forwarding`]). They are kept apart from
/// the request's own fields: an HTTP/1.1 request writes them straight into its head
/// ([`ForwardingFields::encode`]) rather than growing its header map by six fields, which costs a
/// reallocation of the map and a hashed insert each.
#[derive(Debug, Clone)]
pub(crate) struct ForwardingFields {
    xff: Option<HeaderValue>,
    real_ip: Option<HeaderValue>,
    proto: &'static str,
    port: HeaderValue,
    host: Option<HeaderValue>,
    /// The id the router made, when the client sent none it could use.
    request_id: Option<[u8; 32]>,
}

impl ForwardingFields {
    /// Calls `field` with each field's line prefix (`name: `) and value, in the order they are
    /// written. (The prefixes spell the names of [`X_FORWARDED_FOR`] and the others, which a test
    /// checks against [`ForwardingFields::insert_into`].)
    #[inline(always)]
    fn each(&self, mut field: impl FnMut(&'static [u8], &[u8])) {
        if let Some(v) = &self.xff {
            field(b"x-forwarded-for: ", v.as_bytes());
        }
        if let Some(v) = &self.real_ip {
            field(b"x-real-ip: ", v.as_bytes());
        }
        field(b"x-forwarded-proto: ", self.proto.as_bytes());
        field(b"x-forwarded-port: ", self.port.as_bytes());
        if let Some(v) = &self.host {
            field(b"x-forwarded-host: ", v.as_bytes());
        }
        if let Some(id) = &self.request_id {
            field(b"x-request-id: ", id);
        }
    }

    /// Sets the fields in `headers` (an HTTP/2 request, a mirrored copy).
    pub(crate) fn insert_into(&self, headers: &mut HeaderMap) {
        // Room for these and the upstream `Host`, in one step: a parsed head's map is full, and
        // growing it one insert at a time rehashes it more than once.
        let _ = headers.try_reserve(FORWARDING_ADDED + 1);
        if let Some(xff) = &self.xff {
            headers.insert(X_FORWARDED_FOR.clone(), xff.clone());
        }
        if let Some(real_ip) = &self.real_ip {
            headers.insert(X_REAL_IP.clone(), real_ip.clone());
        }
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(self.proto),
        );
        headers.insert(X_FORWARDED_PORT.clone(), self.port.clone());
        if let Some(host) = &self.host {
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        }
        if let Some(id) = self.request_id {
            // Owned bytes shared from the start: the retry copy of the head clones this value,
            // and a clone of a plain copy would allocate again.
            if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id)) {
                headers.insert(X_REQUEST_ID.clone(), v);
            }
        }
    }

    /// The fields as HTTP/1.1 field lines (`name: value` and CRLF each), written after the
    /// request's own fields; `host` first when given (a request whose map has no `Host`).
    pub(crate) fn encode(&self, host: Option<&HeaderValue>) -> bytes::Bytes {
        const HOST_PREFIX: &[u8] = b"host: ";
        // Sized exactly: `Bytes` takes a full vector as it is, where a vector with spare room
        // costs it an allocation of its own.
        let mut len = host.map_or(0, |h| HOST_PREFIX.len() + h.len() + 2);
        self.each(|prefix, value| len += prefix.len() + value.len() + 2);
        let mut out = Vec::with_capacity(len);
        if let Some(host) = host {
            out.extend_from_slice(HOST_PREFIX);
            out.extend_from_slice(host.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.each(|prefix, value| {
            out.extend_from_slice(prefix);
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        });
        out.into()
    }
}

/// Removes every forwarding header the client sent ([`FORWARDING_HEADERS`], either spelling) and
/// works out the router's own ([`ForwardingFields`]): `X-Forwarded-For` (the last `trusted_hops`
/// entries the client sent, then the client address), `X-Forwarded-Proto`, `-Host`, `-Port` and
/// `X-Real-IP` (the first `X-Forwarded-For` entry: the client, or the address the outermost
/// trusted proxy saw), and an `X-Request-Id` when the client sent no usable one (see
/// [`request_id`]; unusable ones are removed). Returns the fields, the request id and how many client-supplied forwarding fields were
/// dropped (`X-Forwarded-For` fields not counted when hops are trusted).
pub(crate) fn forwarding(
    headers: &mut HeaderMap,
    f: &Forwarding<'_>,
) -> (ForwardingFields, RequestId, usize) {
    let (dropped, xff, real_ip) = if f.trusted_hops == 0 {
        // The common case: the client alone, in a value shared by the connection's requests.
        (
            remove_forwarding(headers),
            Some(f.client_value.clone()),
            Some(f.client_value.clone()),
        )
    } else {
        let client_xff: Vec<String> = comma_tokens(headers, &X_FORWARDED_FOR)
            .map(str::to_owned)
            .collect();
        let kept = client_xff.len().min(f.trusted_hops);
        let trusted_fields = headers.get_all(&X_FORWARDED_FOR).iter().count();
        let dropped = remove_forwarding(headers).saturating_sub(trusted_fields);
        let mut chain: Vec<String> = client_xff[client_xff.len() - kept..].to_vec();
        chain.push(f.client.to_string());
        let xff = HeaderValue::from_str(&chain.join(", ")).ok();
        (dropped, xff, HeaderValue::from_str(&chain[0]).ok())
    };
    let (request_id, generated) = request_id(headers);
    let fields = ForwardingFields {
        xff,
        real_ip,
        proto: f.proto,
        port: f.port.clone(),
        host: f.host.cloned(),
        request_id: generated,
    };
    (fields, request_id, dropped)
}

/// How many fields [`add_forwarding`] may add.
const FORWARDING_ADDED: usize = 6;

/// An address as a header value, in bytes shared from the start, so its clones (one per request of
/// the connection) allocate nothing.
pub(crate) fn ip_value(ip: IpAddr) -> HeaderValue {
    use std::io::Write as _;
    // The longest IPv6 text form is 45 bytes.
    let mut buf = [0u8; 48];
    let mut out = &mut buf[..];
    let written = write!(out, "{ip}").map(|()| 48 - out.len()).unwrap_or(0);
    let mut text = buf.to_vec();
    text.truncate(written);
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// A listener port as a header value (`X-Forwarded-Port`): without an allocation for the ports a
/// Gateway listens on nearly always.
pub(crate) fn port_value(port: u16) -> HeaderValue {
    match port {
        80 => HeaderValue::from_static("80"),
        443 => HeaderValue::from_static("443"),
        8080 => HeaderValue::from_static("8080"),
        8443 => HeaderValue::from_static("8443"),
        other => HeaderValue::from(other),
    }
}

/// Removes every [`FORWARDING_HEADERS`] field, in `-` or `_` spelling; returns how many there were.
fn remove_forwarding(headers: &mut HeaderMap) -> usize {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| {
            FORWARDING_HEADERS
                .iter()
                .any(|f| dash_spelling_eq(n.as_str(), f))
        })
        .cloned()
        .collect();
    names
        .iter()
        .map(|n| match headers.entry(n) {
            http::header::Entry::Occupied(e) => e.remove_entry_mult().1.count(),
            http::header::Entry::Vacant(_) => 0,
        })
        .sum()
}

/// A request's id for logs and traces: the client's `X-Request-Id`, or the one the router made.
#[derive(Debug, Clone, Default)]
pub(crate) enum RequestId {
    /// Not assigned yet (the request was answered before it was forwarded).
    #[default]
    None,
    /// The client's own, non-empty and text.
    Client(HeaderValue),
    /// Made by the router: 128 random bits in lower-case hex.
    Generated([u8; 32]),
}

impl RequestId {
    /// The id as text; empty for [`RequestId::None`].
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Self::None => "",
            Self::Client(v) => v.to_str().unwrap_or_default(),
            Self::Generated(hex) => std::str::from_utf8(hex).unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the field name `name` is `canonical` (lower case, with dashes) in either spelling: some
/// servers read `_` as `-`, so `x_forwarded_for` must be treated as `x-forwarded-for`. Compares
/// in place, without a copy per header.
pub(crate) fn dash_spelling_eq(name: &str, canonical: &str) -> bool {
    name.len() == canonical.len()
        && name
            .bytes()
            .zip(canonical.bytes())
            .all(|(n, c)| n == c || (n == b'_' && c == b'-'))
}

/// The client's `X-Request-Id` (`None` beside it) when it sent one field, not empty, in text; or
/// a new random one, also returned as bytes to set (the client's fields are then removed).
fn request_id(headers: &mut HeaderMap) -> (RequestId, Option<[u8; 32]>) {
    let mut ids = headers.get_all(&X_REQUEST_ID).iter();
    match (ids.next(), ids.next()) {
        // One id per request: what the router logs is what the backend reads.
        (Some(id), None) if !id.is_empty() && id.to_str().is_ok() => {
            (RequestId::Client(id.clone()), None)
        }
        (present, _) => {
            if present.is_some() {
                headers.remove(&X_REQUEST_ID);
            }
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let n = rand::random::<u128>();
            let mut hex = [0u8; 32];
            for (i, digit) in hex.iter_mut().enumerate() {
                *digit = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
            }
            (RequestId::Generated(hex), Some(hex))
        }
    }
}

/// Joins several `Cookie` fields into one, separated by `; ` (RFC 9113 §8.2.3: HTTP/2 clients may
/// split cookies into crumbs; an HTTP/1.1 backend expects one line).
pub(crate) fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(COOKIE).iter().nth(1).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for crumb in headers.get_all(COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(crumb.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`forwarding`], with the fields set in `headers` (as an HTTP/2 request has them).
    fn add_forwarding(headers: &mut HeaderMap, f: &Forwarding<'_>) -> (RequestId, usize) {
        let (fields, id, dropped) = super::forwarding(headers, f);
        fields.insert_into(headers);
        (id, dropped)
    }

    #[test]
    fn encoded_fields_are_the_inserted_ones_in_order() {
        for hops in [0, 2] {
            let mut h = spoofed();
            h.remove(&X_REQUEST_ID);
            let host = HeaderValue::from_static("shop.example");
            let mut f: Forwarding<'_> = forwarding(hops);
            f.host = Some(&host);
            let (fields, id, _) = super::forwarding(&mut h, &f);
            let mut inserted = HeaderMap::new();
            fields.insert_into(&mut inserted);
            let lines: Vec<u8> = inserted
                .iter()
                .flat_map(|(n, v)| [n.as_str().as_bytes(), b": ", v.as_bytes(), b"\r\n"].concat())
                .collect();
            assert_eq!(
                String::from_utf8_lossy(&fields.encode(None)),
                String::from_utf8_lossy(&lines)
            );
            // A request without `Host` in its map (HTTP/2) gets it first, on the wire.
            let upstream = HeaderValue::from_static("backend.internal:8080");
            assert_eq!(
                String::from_utf8_lossy(&fields.encode(Some(&upstream))),
                format!(
                    "host: backend.internal:8080\r\n{}",
                    String::from_utf8_lossy(&lines)
                )
            );
            assert_eq!(inserted.len(), 6, "{inserted:?}");
            assert_eq!(value(&inserted, "x-request-id"), [id.as_str()]);
        }
    }

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
    fn each_hop_by_hop_name_has_its_bit_in_any_case_and_no_other_name_has_one() {
        for (name, bit) in [
            ("connection", HOP_CONNECTION),
            ("Keep-Alive", HOP_KEEP_ALIVE),
            ("TE", HOP_TE),
            ("upgrade", HOP_UPGRADE),
            ("Transfer-Encoding", HOP_TRANSFER_ENCODING),
            ("PROXY-CONNECTION", HOP_PROXY_CONNECTION),
            ("http2-settings", HOP_HTTP2_SETTINGS),
        ] {
            assert_eq!(token_hop_bit(name), bit, "{name}");
            let parsed = HeaderName::from_bytes(name.as_bytes()).expect("name");
            assert_eq!(hop_by_hop_bit(&parsed), bit, "{name}");
        }
        // Same lengths (and first letters) as hop-by-hop names.
        for name in [
            "tk",
            "upgradf",
            "keep-alivf",
            "connectiom",
            "content-md",
            "http2-settinga",
            "proxy-connectioo",
            "transfer-encodinf",
            "set-cookie",
            "content-length",
            "x",
        ] {
            assert_eq!(token_hop_bit(name), 0, "{name}");
            let parsed = HeaderName::from_bytes(name.as_bytes()).expect("name");
            assert_eq!(hop_by_hop_bit(&parsed), 0, "{name}");
        }
        assert_eq!(token_hop_bit(""), 0);
    }

    /// Field names for the property below: hop-by-hop ones, ordinary ones and ones that only a
    /// `Connection` token can make hop-by-hop.
    const NAMES: [&str; 12] = [
        "connection",
        "te",
        "upgrade",
        "transfer-encoding",
        "keep-alive",
        "proxy-connection",
        "http2-settings",
        "x-one",
        "x-two",
        "close",
        "accept",
        "cookie",
    ];

    /// What [`strip_hop_by_hop`] must leave, said plainly: every field but the hop-by-hop ones
    /// and those a `Connection` token names (any case), `TE: trailers` kept, `Upgrade` kept with
    /// `Connection: upgrade` on a 101.
    fn stripped_model(fields: &[(usize, &str)], keep_upgrade: bool) -> Vec<(String, String)> {
        let tokens: Vec<String> = fields
            .iter()
            .filter(|(n, _)| NAMES[*n] == "connection")
            .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
            .filter(|t| !t.is_empty())
            .collect();
        let te_trailers = fields
            .iter()
            .filter(|(n, _)| NAMES[*n] == "te")
            .all(|(_, v)| v.eq_ignore_ascii_case("trailers"));
        let kept = |name: &str| match name {
            "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding"
            | "http2-settings" => false,
            "upgrade" if keep_upgrade => true,
            "upgrade" => false,
            "te" if !te_trailers => false,
            other => !tokens.iter().any(|t| t == other),
        };
        let mut out: Vec<(String, String)> = fields
            .iter()
            .map(|(n, v)| (NAMES[*n].to_owned(), (*v).to_owned()))
            .filter(|(n, _)| kept(n))
            .collect();
        if keep_upgrade && out.iter().any(|(n, _)| n == "upgrade") {
            out.push(("connection".into(), "upgrade".into()));
        }
        out.sort();
        out
    }

    proptest::proptest! {
        #[test]
        fn stripping_matches_the_plain_model(
            fields in proptest::collection::vec(
                (0..NAMES.len(), proptest::sample::select(vec![
                    "1", "trailers", "Trailers", "gzip", "close", "keep-alive", "Keep-Alive, X-One",
                    " ,x-two ,, Upgrade", "x-one,CLOSE", "te", "accept, cookie", "websocket",
                ])),
                0..10,
            ),
            keep_upgrade in proptest::bool::ANY,
        ) {
            let mut map = HeaderMap::new();
            for (n, v) in &fields {
                map.append(NAMES[*n], HeaderValue::from_str(v).unwrap());
            }
            strip_hop_by_hop(&mut map, keep_upgrade);
            let mut got: Vec<(String, String)> = map
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                .collect();
            got.sort();
            proptest::prop_assert_eq!(got, stripped_model(&fields, keep_upgrade));
        }
    }

    /// A client head's fields as HTTP/1.1 field lines, the router's own after them as an HTTP/1.1
    /// backend gets them (`extra`), sorted.
    fn wire_fields(map: &HeaderMap, extra: &[u8]) -> Vec<(String, String)> {
        let mut head = Vec::new();
        bulkhead_h1_wire::encode_request_head(&http::Method::GET, "/", map, extra, &mut head);
        let mut fields: Vec<(String, String)> = String::from_utf8_lossy(&head)
            .split("\r\n")
            .skip(1)
            .filter(|line| !line.is_empty())
            .map(|line| {
                let (name, value) = line.split_once(": ").expect("a field line");
                (name.to_owned(), value.to_owned())
            })
            .collect();
        fields.sort();
        fields
    }

    proptest::proptest! {
        /// Whatever forwarding fields a client sends, in any spelling, an HTTP/1.1 backend gets
        /// exactly the router's (one of each), and the same fields an HTTP/2 backend would get in
        /// its map.
        #[test]
        fn the_wire_carries_only_the_routers_forwarding_fields(
            fields in proptest::collection::vec(
                (proptest::sample::select(vec![
                    "x-forwarded-for", "x_forwarded_for", "forwarded", "x-real-ip", "x_real_ip",
                    "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port", "true-client-ip",
                    "x-client-ip", "x-request-id", "accept", "cookie", "x-other",
                ]), proptest::sample::select(vec![
                    "", "abc", "10.0.0.1", "10.0.0.1, 10.0.0.2", "https", "1", "\u{e9}",
                ])),
                0..12,
            ),
            hops in 0usize..3,
            with_host in proptest::bool::ANY,
        ) {
            let mut map = HeaderMap::new();
            for (n, v) in &fields {
                map.append(HeaderName::from_static(n), HeaderValue::from_bytes(v.as_bytes()).unwrap());
            }
            let host = HeaderValue::from_static("shop.example");
            let mut f: Forwarding<'_> = forwarding(hops);
            f.host = with_host.then_some(&host);
            let (ours, id, _) = super::forwarding(&mut map, &f);
            let h1 = wire_fields(&map, &ours.encode(None));
            let mut h2_map = map.clone();
            ours.insert_into(&mut h2_map);
            proptest::prop_assert_eq!(&h1, &wire_fields(&h2_map, b""));
            let count = |name: &str| h1.iter().filter(|(n, _)| n == name).count();
            for name in ["x-forwarded-for", "x-real-ip", "x-forwarded-proto", "x-forwarded-port", "x-request-id"] {
                proptest::prop_assert_eq!(count(name), 1, "{}: {:?}", name, h1);
            }
            proptest::prop_assert_eq!(count("x-forwarded-host"), usize::from(with_host));
            for spoofed in ["x_forwarded_for", "forwarded", "x_real_ip", "true-client-ip", "x-client-ip"] {
                proptest::prop_assert_eq!(count(spoofed), 0, "{}", spoofed);
            }
            let sent_id = h1.iter().find(|(n, _)| n == "x-request-id").map(|(_, v)| v.as_str());
            proptest::prop_assert_eq!(sent_id, Some(id.as_str()));
            if hops == 0 {
                let xff = h1.iter().find(|(n, _)| n == "x-forwarded-for").map(|(_, v)| v.as_str());
                proptest::prop_assert_eq!(xff, Some("192.0.2.7"));
            }
        }
    }

    #[test]
    fn listener_ports_are_written_in_decimal() {
        for port in [80, 443, 8080, 8443, 1, 9443, u16::MAX] {
            assert_eq!(port_value(port), port.to_string().as_str());
        }
    }

    #[test]
    fn underscore_spellings_match_their_dashed_name_only() {
        assert!(dash_spelling_eq("x_forwarded_for", "x-forwarded-for"));
        assert!(dash_spelling_eq("x-forwarded_for", "x-forwarded-for"));
        assert!(dash_spelling_eq("x-real-ip", "x-real-ip"));
        assert!(!dash_spelling_eq("x-forwarded-fo", "x-forwarded-for"));
        assert!(!dash_spelling_eq("x-forwarded-for", "x_forwarded_for"));
        assert!(!dash_spelling_eq("x-forwarded-fox", "x-forwarded-for"));
    }

    #[test]
    fn every_connection_field_and_token_counts_in_any_case() {
        let mut h = HeaderMap::new();
        h.append(CONNECTION, HeaderValue::from_static("Keep-Alive, X-One"));
        h.append(CONNECTION, HeaderValue::from_static(" ,x-two ,, Upgrade"));
        for name in ["x-one", "x-two", "keep-alive", "proxy-connection", "x-keep"] {
            h.insert(name, HeaderValue::from_static("1"));
        }
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(
            &HTTP2_SETTINGS,
            HeaderValue::from_static("AAMAAABkAAQAAP__"),
        );
        let mut answer = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["x-keep"], "{h:?}");
        // A 101 keeps its `Upgrade`, with a `Connection` of its own, even when `Connection` named it.
        strip_hop_by_hop(&mut answer, true);
        assert_eq!(value(&answer, "upgrade"), ["websocket"]);
        assert_eq!(value(&answer, "connection"), ["upgrade"]);
        assert_eq!(answer.len(), 3, "{answer:?}");
        // Nothing hop-by-hop: nothing changes.
        let mut plain = HeaderMap::new();
        plain.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut plain, true);
        assert_eq!(plain.len(), 1);
    }

    fn allowed() -> Vec<String> {
        vec!["websocket".to_owned()]
    }

    #[test]
    fn an_allowed_upgrade_survives_stripping_and_is_restored() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("WebSocket"));
        let UpgradeAsk::Allowed(protocols) = requested_upgrade(&h, &allowed()) else {
            panic!("websocket is allowed");
        };
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
        restore_upgrade(&mut h, protocols);
        assert_eq!(
            h.get(UPGRADE).map(|v| v.as_bytes()),
            Some(&b"WebSocket"[..])
        );
        assert_eq!(
            h.get(CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
    }

    #[test]
    fn h2c_is_never_an_allowed_upgrade_and_its_settings_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(
            &HTTP2_SETTINGS,
            HeaderValue::from_static("AAMAAABkAAQAAP__"),
        );
        assert_eq!(requested_upgrade(&h, &allowed()), UpgradeAsk::Refused);
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
        let mut mixed = HeaderMap::new();
        mixed.insert(CONNECTION, HeaderValue::from_static("keep-alive, upgrade"));
        mixed.insert(UPGRADE, HeaderValue::from_static("h2c, websocket/13"));
        assert_eq!(
            requested_upgrade(&mixed, &allowed()),
            UpgradeAsk::Allowed(HeaderValue::from_static("websocket/13"))
        );
        mixed.remove(CONNECTION);
        assert_eq!(requested_upgrade(&mixed, &allowed()), UpgradeAsk::None);
    }

    #[test]
    fn a_101_must_switch_to_a_requested_protocol() {
        let requested = HeaderValue::from_static("websocket");
        let mut resp = HeaderMap::new();
        assert!(!upgrade_accepted(&resp, &requested));
        resp.insert(UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!upgrade_accepted(&resp, &requested));
        resp.insert(UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(upgrade_accepted(&resp, &requested));
    }

    static CLIENT: std::sync::LazyLock<HeaderValue> =
        std::sync::LazyLock::new(|| ip_value("192.0.2.7".parse().expect("ip")));
    static PORT: std::sync::LazyLock<HeaderValue> = std::sync::LazyLock::new(|| port_value(443));

    fn forwarding(trusted_hops: usize) -> Forwarding<'static> {
        Forwarding {
            client: "192.0.2.7".parse().expect("ip"),
            client_value: &CLIENT,
            proto: "https",
            host: None,
            port: &PORT,
            trusted_hops,
        }
    }

    fn value<'a>(h: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().expect("text"))
            .collect()
    }

    fn spoofed() -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, v) in [
            ("x-forwarded-for", "10.0.0.1, 10.0.0.2"),
            ("x-forwarded-for", "10.0.0.3"),
            ("x_forwarded_for", "10.9.9.9"),
            ("forwarded", "for=10.0.0.1"),
            ("x-real-ip", "10.0.0.1"),
            ("x_real_ip", "10.0.0.1"),
            ("x-forwarded-port", "1"),
            ("x-forwarded-proto", "gopher"),
            ("true-client-ip", "10.0.0.1"),
            ("x-request-id", "abc"),
        ] {
            h.append(HeaderName::from_static(name), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn client_forwarding_headers_are_replaced_in_every_spelling() {
        let mut h = spoofed();
        let (id, dropped) = add_forwarding(&mut h, &forwarding(0));
        assert_eq!((id.as_str(), dropped), ("abc", 9));
        assert_eq!(value(&h, "x-forwarded-for"), ["192.0.2.7"]);
        assert_eq!(value(&h, "x-real-ip"), ["192.0.2.7"]);
        assert_eq!(value(&h, "x-forwarded-proto"), ["https"]);
        assert_eq!(value(&h, "x-forwarded-port"), ["443"]);
        for gone in [
            "x_forwarded_for",
            "forwarded",
            "x_real_ip",
            "true-client-ip",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        let mut fresh = HeaderMap::new();
        let (id, dropped) = add_forwarding(&mut fresh, &forwarding(0));
        assert_eq!((id.as_str().len(), dropped), (32, 0));
        assert_eq!(value(&fresh, "x-request-id"), [id.as_str()]);
        let mut not_text = HeaderMap::new();
        not_text.insert(
            &X_REQUEST_ID,
            HeaderValue::from_bytes(b"\xff").expect("opaque"),
        );
        let (id, _) = add_forwarding(&mut not_text, &forwarding(0));
        assert!(matches!(id, RequestId::Generated(_)), "{id:?}");
        assert_eq!(value(&not_text, "x-request-id"), [id.as_str()]);
    }

    #[test]
    fn trusted_hops_keep_the_last_client_entries() {
        let mut h = spoofed();
        let (_, dropped) = add_forwarding(&mut h, &forwarding(2));
        assert_eq!(dropped, 7);
        assert_eq!(
            value(&h, "x-forwarded-for"),
            ["10.0.0.2, 10.0.0.3, 192.0.2.7"]
        );
        assert_eq!(value(&h, "x-real-ip"), ["10.0.0.2"]);
        let mut few = HeaderMap::new();
        few.insert(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        add_forwarding(&mut few, &forwarding(5));
        assert_eq!(value(&few, "x-forwarded-for"), ["10.0.0.1, 192.0.2.7"]);
    }

    #[test]
    fn cookie_crumbs_are_joined_into_one_line() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1"));
        h.append(COOKIE, HeaderValue::from_static("b=2"));
        h.append(COOKIE, HeaderValue::from_static("c=3"));
        join_cookies(&mut h);
        assert_eq!(value(&h, "cookie"), ["a=1; b=2; c=3"]);
        let mut one = HeaderMap::new();
        one.insert(COOKIE, HeaderValue::from_static("a=1"));
        join_cookies(&mut one);
        assert_eq!(value(&one, "cookie"), ["a=1"]);
    }
}
