//! Which host a request is for, and whether this tenant may answer it: the checks that run before
//! any virtual host or route is looked at. Every refusal is a [`HostRefusal`], which decides the
//! status, the `bulkhead_router_host_refusals_total` reason and the log line in one place.
//!
//! | request | answer | reason |
//! |---|---|---|
//! | no `Host` and no URI authority | 400 | `missing` |
//! | two or more `Host` field lines (RFC 9112 §3.2) | 400 | `duplicate` |
//! | a host that is neither a valid name nor an IP address (`192.0.2.1`, `[2001:db8::1]`, with or without port) | 400 | `invalid` |
//! | HTTP/2 `:authority` and `host` naming different hosts (RFC 9113 §8.3.1: malformed) | 400 | `authority_mismatch` |
//! | a name outside the tenant's grants | 421 | `not_owned` |
//! | a more specific name another tenant owns inside them | 421 | `other_tenant` |
//! | on TLS, a host another listener serves than the SNI's, or no listener serves (GEP-3567) | 421 | `misdirected` |
//! | on TLS, a host of the SNI's listener, whose client certificate validation is no longer the one the connection was handshaken under | 421 | `validation_changed` |
//!
//! Each request is checked against the configuration current when it arrives: a connection keeps
//! only what its handshake fixed (the listener, the validation), so a change reaches its next
//! request, and a change to what the handshake fixed sends the client to a new connection.
//!
//! A request by IP address (`Host: 192.0.2.1:8080`, as clients of a load balancer and the Gateway
//! API conformance suite send it) names no host: only a tenant granted `*` owns it, and it is
//! served by the listener and virtual host without hostname.
//!
//! An HTTP/1.1 request in absolute form names its host in the request target, and RFC 9112
//! §3.2.2 says the `Host` field is then ignored: the target's authority is the host checked here,
//! routed on and sent upstream as `Host`.

use super::refusal::Refusal;
use super::{ConnContext, Entry};
use crate::compile::{CompiledConfig, Ownership, SniTarget};
use crate::metrics::{HostRefusal, HostRefusalLabels};
use bulkhead_hostmatch::Host;
use bulkhead_snapshot::ClientValidation;
use http::header::HOST;
use http::{HeaderValue, Request, StatusCode, Version};
use std::sync::Arc;

impl HostRefusal {
    /// The status the client gets.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Self::Missing | Self::Duplicate | Self::Invalid | Self::AuthorityMismatch => {
                StatusCode::BAD_REQUEST
            }
            Self::NotOwned | Self::OtherTenant | Self::Misdirected | Self::ValidationChanged => {
                StatusCode::MISDIRECTED_REQUEST
            }
        }
    }

    /// Counts and logs the refusal; the refusal to answer with.
    pub(crate) fn refuse(self, ctx: &ConnContext, host: &str) -> Refusal {
        ctx.shared
            .metrics
            .host_refusals
            .get_or_create(&HostRefusalLabels {
                tenant: Arc::clone(&ctx.shared.tenant),
                reason: self,
            })
            .inc();
        tracing::debug!(tenant = %ctx.shared.tenant, client = %ctx.client, host, reason = self.as_str(), "request refused for its host");
        Refusal::Host(self)
    }
}

/// The request's host: the value as sent (for the upstream `Host`) and its normalised form.
pub(crate) struct RequestHost {
    /// As sent: the URI authority (HTTP/2 `:authority`, HTTP/1 absolute form) or `Host`; the
    /// `Host` field's own bytes, shared rather than copied.
    pub(crate) raw: HeaderValue,
    /// Normalised, for matching.
    pub(crate) host: Host,
}

impl RequestHost {
    /// Normalised (lower case, no port, no trailing dot; an IPv6 address in brackets), for logs
    /// and redirects.
    pub(crate) fn name(&self) -> String {
        self.host.to_string()
    }
}

/// The host `req` is for, checked as the module table says (up to `authority_mismatch`).
pub(crate) fn request_host<B>(req: &Request<B>) -> Result<RequestHost, HostRefusal> {
    let mut fields = req.headers().get_all(HOST).iter();
    let header = fields.next();
    if fields.next().is_some() {
        return Err(HostRefusal::Duplicate);
    }
    let header_text = header
        .map(|v| v.to_str().map_err(|_| HostRefusal::Invalid))
        .transpose()?;
    let normalize = |raw: &str| Host::parse(raw).map_err(|_| HostRefusal::Invalid);
    let from_authority = |authority: &str| {
        let host = normalize(authority)?;
        let raw = HeaderValue::from_str(authority).map_err(|_| HostRefusal::Invalid)?;
        Ok(RequestHost { raw, host })
    };
    match (req.uri().authority(), header, header_text) {
        (Some(authority), Some(_), Some(text)) if req.version() == Version::HTTP_2 => {
            let host = from_authority(authority.as_str())?;
            if host.host != normalize(text)? {
                return Err(HostRefusal::AuthorityMismatch);
            }
            Ok(host)
        }
        (Some(authority), _, _) => from_authority(authority.as_str()),
        (None, Some(value), Some(text)) => Ok(RequestHost {
            host: normalize(text)?,
            raw: value.clone(),
        }),
        (None, _, _) => Err(HostRefusal::Missing),
    }
}

/// Whether this tenant may answer a request for `host` on this connection under `config`, the
/// configuration current for the request (the 421 rows of the module table).
pub(crate) fn authorise(
    ctx: &ConnContext,
    config: &CompiledConfig,
    host: &Host,
) -> Result<(), HostRefusal> {
    match config.owned.lookup_host(host) {
        Some(Ownership::Tenant) => {}
        Some(Ownership::OtherTenant) => return Err(HostRefusal::OtherTenant),
        None => return Err(HostRefusal::NotOwned),
    }
    match &ctx.entry {
        Entry::Tls {
            listener,
            client_auth,
        } => on_listener(config, listener, client_auth.as_ref(), host),
        Entry::Plain => Ok(()),
    }
}

/// GEP-3567, decided by listener and not by certificate: a request on a terminated TLS connection
/// is misdirected (421) unless its host is served by the listener the SNI selected — the listener
/// whose hostname matches the host most specifically, `*` (a listener without hostname) included.
/// A host another listener serves, a passthrough / TCP name, or a host no listener serves is
/// misdirected, even when one certificate covers every name.
///
/// A host of that listener is refused too (`ValidationChanged`) when the listener's client
/// certificate validation is not the one the connection was `handshaken` under (added, removed or
/// changed since): the client opens a new connection, whose handshake applies it. An open
/// connection never routes past a check its handshake skipped.
fn on_listener(
    config: &CompiledConfig,
    listener: &Arc<str>,
    handshaken: Option<&Arc<ClientValidation>>,
    host: &Host,
) -> Result<(), HostRefusal> {
    match config.sni.lookup_host(host) {
        Some(SniTarget::Terminate {
            listener: other,
            client_auth,
        }) if other == listener => {
            let now = client_auth.as_ref().map(|a| &a.terms);
            let same = match (now, handshaken) {
                (None, None) => true,
                // The same compiled validation, or an equal one compiled again since.
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                _ => false,
            };
            if same {
                Ok(())
            } else {
                Err(HostRefusal::ValidationChanged)
            }
        }
        _ => Err(HostRefusal::Misdirected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(req: Request<()>) -> Result<String, HostRefusal> {
        request_host(&req).map(|h| h.name())
    }

    #[test]
    fn an_address_is_a_host_and_ipv6_keeps_its_brackets() {
        assert_eq!(
            host_of(h1("/", &["127.0.0.1:8080"])).as_deref(),
            Ok("127.0.0.1")
        );
        assert_eq!(host_of(h1("/", &["[::1]:8080"])).as_deref(), Ok("[::1]"));
        assert_eq!(
            host_of(h2("[::1]:8443", Some("[0::1]"))).as_deref(),
            Ok("[::1]")
        );
        let parsed = request_host(&h1("/", &["[::1]"])).map(|h| h.host);
        assert_eq!(parsed.ok(), Some(Host::Address("::1".parse().expect("ip"))));
        assert_eq!(host_of(h1("/", &["[::1"])), Err(HostRefusal::Invalid));
    }

    fn h1(target: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().uri(target).version(Version::HTTP_11);
        for h in hosts {
            b = b.header(HOST, *h);
        }
        b.body(()).expect("request")
    }

    fn h2(authority: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder()
            .uri(format!("https://{authority}/"))
            .version(Version::HTTP_2);
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn two_host_field_lines_are_a_bad_request_even_when_equal() {
        let dup = host_of(h1("/", &["a.test", "b.test"]));
        assert_eq!(dup, Err(HostRefusal::Duplicate));
        let same = host_of(h1("/", &["a.test", "a.test"]));
        assert_eq!(same, Err(HostRefusal::Duplicate));
        assert_eq!(dup.unwrap_err().status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn absolute_form_names_the_host_and_host_is_ignored() {
        let req = h1("http://shop.example.test/x", &["www.example.test"]);
        assert_eq!(host_of(req).as_deref(), Ok("shop.example.test"));
    }

    #[test]
    fn h2_authority_and_host_must_name_the_same_host() {
        assert_eq!(
            host_of(h2("www.example.test", Some("shop.example.test"))),
            Err(HostRefusal::AuthorityMismatch)
        );
        assert_eq!(
            host_of(h2("www.example.test", Some("WWW.example.test:443"))).as_deref(),
            Ok("www.example.test")
        );
        assert_eq!(
            host_of(h2("www.example.test", None)).as_deref(),
            Ok("www.example.test")
        );
    }

    #[test]
    fn missing_and_invalid_hosts_are_bad_requests() {
        assert_eq!(host_of(h1("/", &[])), Err(HostRefusal::Missing));
        assert_eq!(host_of(h1("/", &["a b"])), Err(HostRefusal::Invalid));
    }
}
