//! The identity of a verified client certificate, as the backend and route matching see it.
//!
//! A listener with frontend TLS validation ([`bulkhead_snapshot::ClientValidation`]) verifies the
//! client's certificate during the handshake; the identity of a certificate that verified is
//! formatted once per connection and set on each of its requests as `X-Forwarded-Client-Cert`,
//! before the route is selected (so an HTTPRoute header match can route by it). The format is
//! Envoy's (`Hash=<SHA-256 of the DER, hex>;Subject="<RFC 4514 DN>";URI=<SAN>;DNS=<SAN>`, one
//! pair per SAN), what Envoy Gateway sends with `xForwardedClientCert.mode: SanitizeSet` and
//! `certDetailsToAdd: [Subject, URI, DNS]`.
//!
//! A client's own copy of the header, in `-` or `_` spelling, never reaches a route match or a
//! backend: it is removed from every request, on every listener, whether or not a verified
//! identity replaces it.

use http::{HeaderMap, HeaderName, HeaderValue};
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Name};

/// `X-Forwarded-Client-Cert`: the verified client certificate's identity.
pub(crate) static X_FORWARDED_CLIENT_CERT: HeaderName =
    HeaderName::from_static("x-forwarded-client-cert");

/// The `X-Forwarded-Client-Cert` value for a verified leaf certificate; `None` when its DER does
/// not parse (webpki accepted it, so this does not happen in practice) or the value is not a
/// valid header value.
pub(crate) fn identity(leaf: &CertificateDer<'_>) -> Option<HeaderValue> {
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).ok()?;
    let mut out = format!("Hash={}", hex::encode(Sha256::digest(leaf.as_ref())));
    let _ = write!(out, ";Subject=\"{}\"", quoted(&rfc4514(cert.subject())));
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) => {
                    let _ = write!(out, ";URI={}", escaped(uri));
                }
                GeneralName::DNSName(dns) => {
                    let _ = write!(out, ";DNS={}", escaped(dns));
                }
                _ => {}
            }
        }
    }
    HeaderValue::from_str(&out).ok()
}

/// Removes every client-supplied `X-Forwarded-Client-Cert` (either spelling) and sets
/// `identity`, when the connection has a verified one. Returns how many fields were removed.
pub(crate) fn set_identity(headers: &mut HeaderMap, identity: Option<&HeaderValue>) -> usize {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| {
            crate::http::headers::dash_spelling_eq(n.as_str(), X_FORWARDED_CLIENT_CERT.as_str())
        })
        .cloned()
        .collect();
    let removed = names
        .iter()
        .map(|n| match headers.entry(n) {
            http::header::Entry::Occupied(e) => e.remove_entry_mult().1.count(),
            http::header::Entry::Vacant(_) => 0,
        })
        .sum();
    if let Some(v) = identity {
        headers.insert(X_FORWARDED_CLIENT_CERT.clone(), v.clone());
    }
    removed
}

/// A distinguished name as RFC 4514 writes it: the last RDN first, `,` between RDNs, `+` between
/// the attributes of one, short attribute names where known (else the dotted OID).
fn rfc4514(name: &X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let oid = attr.attr_type();
                    let key = x509_parser::objects::oid2abbrev(oid, registry)
                        .map(str::to_owned)
                        .unwrap_or_else(|_| oid.to_id_string());
                    let value = match attr.as_str() {
                        Ok(v) => dn_escaped(v),
                        Err(_) => format!("#{}", hex::encode(attr.attr_value().data)),
                    };
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// An attribute value escaped as RFC 4514 section 2.4 says.
fn dn_escaped(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A value inside XFCC double quotes: `"` and `\` escaped, control characters as `\xHH`.
fn quoted(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// An unquoted XFCC value: the separators `;`, `,` and `=` and control characters percent-encoded
/// (a SAN carrying them cannot start a pair of its own).
fn escaped(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            ';' | ',' | '"' | '=' => {
                let _ = write!(out, "%{:02X}", u32::from(c));
            }
            c if c.is_control() => {
                let _ = write!(out, "%{:02X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(dn: &[(rcgen::DnType, &str)], sans: Vec<rcgen::SanType>) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), *v);
        }
        params.subject_alt_names = sans;
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn identity_is_envoys_xfcc_with_hash_subject_uri_and_dns() {
        let der = leaf(
            &[
                (rcgen::DnType::OrganizationName, "Acme, Inc."),
                (rcgen::DnType::CommonName, "client \"one\""),
            ],
            vec![
                rcgen::SanType::URI("spiffe://acme.test/ns/web/sa/client".try_into().unwrap()),
                rcgen::SanType::DnsName("client.acme.test".try_into().unwrap()),
                rcgen::SanType::DnsName("other.acme.test".try_into().unwrap()),
            ],
        );
        let hash = hex::encode(Sha256::digest(der.as_ref()));
        let value = identity(&der).expect("identity");
        assert_eq!(
            value.to_str().unwrap(),
            format!(
                "Hash={hash};Subject=\"CN=client \\\\\\\"one\\\\\\\",O=Acme\\\\, Inc.\";URI=spiffe://acme.test/ns/web/sa/client;DNS=client.acme.test;DNS=other.acme.test"
            )
        );
    }

    #[test]
    fn a_san_cannot_smuggle_another_pair() {
        let der = leaf(
            &[(rcgen::DnType::CommonName, "c")],
            vec![rcgen::SanType::URI(
                "urn:x;DNS=admin.acme.test".try_into().unwrap(),
            )],
        );
        let value = identity(&der).expect("identity");
        let v = value.to_str().unwrap();
        assert!(v.ends_with(";URI=urn:x%3BDNS%3Dadmin.acme.test"), "{v}");
    }

    #[test]
    fn client_copies_are_removed_in_both_spellings_and_replaced() {
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-client-cert",
            HeaderValue::from_static("Hash=forged"),
        );
        h.append(
            "x-forwarded-client-cert",
            HeaderValue::from_static("Hash=forged2"),
        );
        h.append(
            "x_forwarded_client_cert",
            HeaderValue::from_static("Hash=forged3"),
        );
        h.append("x-other", HeaderValue::from_static("kept"));
        let verified = HeaderValue::from_static("Hash=real");
        assert_eq!(set_identity(&mut h, Some(&verified)), 3);
        assert_eq!(
            h.get_all(&X_FORWARDED_CLIENT_CERT)
                .iter()
                .collect::<Vec<_>>(),
            [&verified]
        );
        assert!(h.get("x_forwarded_client_cert").is_none());
        assert_eq!(h.get("x-other").unwrap(), "kept");
        assert_eq!(set_identity(&mut h, None), 1);
        assert!(h.get(&X_FORWARDED_CLIENT_CERT).is_none());
    }
}
