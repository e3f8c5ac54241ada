//! `BackendTLSPolicy`: TLS from the router to a Service's endpoints, and the policy's status.
//!
//! A policy in namespace N targets Services of N (`targetRefs[]`, group `""`, kind `Service`,
//! optional `sectionName` = a Service port name). For one Service port the policies naming that
//! port come first, then those naming the whole Service; among equals the oldest, then the first by
//! name wins, and the others targeting the same Service and section are `Accepted=False`/
//! `Conflicted`.
//!
//! The winner is compiled into [`BackendTls`]: SNI = `validation.hostname`; trust = the `ca.crt` of
//! the referenced ConfigMaps of N (another namespace is not allowed: `InvalidCACertificateRef`;
//! another kind: `InvalidKind`; missing ConfigMap or key, unusable PEM:
//! `InvalidCACertificateRef`, all with `ResolvedRefs=False`), or the router's system store
//! (`wellKnownCACertificates: System`); `subjectAltNames` replace the hostname for
//! authentication. A policy whose references are all invalid is `Accepted=False`/
//! `NoValidCACertificate` and its backend is not served (a route's share for it is answered 500:
//! the connection must fail, and never fall back to plaintext). An unknown
//! `wellKnownCACertificates`, both or neither of the trust fields, or a Hostname/URI SAN without
//! its value is `Accepted=False`/`Invalid`, treated the same way.
//!
//! A Gateway's `spec.tls.backend.clientCertificateRef` (a `kubernetes.io/tls` Secret of its
//! namespace) is presented on TLS connections to the backends of the routes attached to it: those
//! backends get an id of their own per client certificate (`<id>+client=<Secret id>`), so a
//! Gateway without one never presents another's. An invalid reference sets the Gateway's
//! `ResolvedRefs=False`/`InvalidClientCertificateRef` and no certificate is presented.
//!
//! Status: `status.ancestors[]`, one entry per Gateway of the tenant through whose accepted routes
//! the targeted Service is used (at most [`MAX_ANCESTORS`]), `controllerName`
//! `bulkhead.dev/gateway-controller`.

use super::refs::{resolve_ca_bundle, resolve_certificate, CertificateRef, ObjectRef, Problem};
use super::routes::CompiledRoute;
use super::world::{age_key, name_of, ns_of, World, GATEWAY_GROUP};
use crate::status::{condition, ObjectMeta, ObjectStatus};
use bulkhead_crds::snapshot::{BackendTls, BackendTrust, Certificate, HttpFilter, SubjectAltName};
use bulkhead_crds::CONTROLLER_NAME;
use gateway_api::backendtlspolicies::{
    BackendTlsPolicy, BackendTlsPolicyValidationSubjectAltNamesType as SanType,
};
use gateway_api::experimental::gateways::Gateway;
use k8s_openapi::api::core::v1::ServicePort;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// API version of the policy statuses written.
pub(crate) const API_VERSION: &str = "gateway.networking.k8s.io/v1";
/// The kind.
pub(crate) const KIND: &str = "BackendTLSPolicy";
/// At most this many `status.ancestors[]` entries (the API's limit).
pub(crate) const MAX_ANCESTORS: usize = 16;
/// The `wellKnownCACertificates` value Bulkhead supports.
const SYSTEM: &str = "System";

/// What a Service port's policies make of its backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PortTls {
    /// No policy: plaintext.
    Plain,
    /// TLS as the winning policy says.
    Tls(BackendTls),
    /// The winning policy is invalid: the backend must not be used.
    Invalid,
}

/// The policies of `ns` targeting Service `service`, with the section each names, in precedence
/// order (section-specific first, then oldest, then name).
fn targeting<'a>(
    world: &World<'a>,
    ns: &str,
    service: &str,
) -> Vec<(&'a BackendTlsPolicy, Option<&'a str>)> {
    let mut out: Vec<(&BackendTlsPolicy, Option<&str>)> = world
        .objects
        .backend_tls_policies
        .iter()
        .filter(|p| ns_of(&p.metadata) == ns)
        .flat_map(|p| {
            p.spec
                .target_refs
                .iter()
                .filter(|t| t.group.is_empty() && t.kind == "Service" && t.name == service)
                .map(move |t| (p, t.section_name.as_deref()))
        })
        .collect();
    out.sort_by(|(a, sa), (b, sb)| {
        sa.is_none()
            .cmp(&sb.is_none())
            .then_with(|| age_key(&a.metadata).cmp(&age_key(&b.metadata)))
            .then_with(|| name_of(&a.metadata).cmp(name_of(&b.metadata)))
    });
    out
}

/// The TLS of Service `ns/service` port `port`.
pub(crate) fn for_port(world: &World<'_>, ns: &str, service: &str, port: &ServicePort) -> PortTls {
    let want = port.name.as_deref().unwrap_or_default();
    let Some((policy, _)) = targeting(world, ns, service)
        .into_iter()
        .find(|(_, section)| section.is_none_or(|s| s == want))
    else {
        return PortTls::Plain;
    };
    match evaluate(world, policy).tls {
        Some(tls) => PortTls::Tls(tls),
        None => PortTls::Invalid,
    }
}

/// A policy's verdict: the TLS it compiles to (`None`: not usable) and its conditions.
struct Evaluation {
    tls: Option<BackendTls>,
    /// `Accepted` (ok, reason, message).
    accepted: (bool, &'static str, String),
    /// `ResolvedRefs` (ok, reason, message).
    resolved: (bool, &'static str, String),
}

fn evaluate(world: &World<'_>, policy: &BackendTlsPolicy) -> Evaluation {
    let ns = ns_of(&policy.metadata);
    let v = &policy.spec.validation;
    let refs = v.ca_certificate_refs.as_deref().unwrap_or_default();
    let invalid = |message: String| Evaluation {
        tls: None,
        accepted: (false, "Invalid", message),
        resolved: (true, "ResolvedRefs", "references resolved".into()),
    };
    let subject_alt_names = match subject_alt_names(policy) {
        Ok(s) => s,
        Err(m) => return invalid(m),
    };
    let trust = match (refs.is_empty(), v.well_known_ca_certificates.as_deref()) {
        (true, Some(SYSTEM)) => BackendTrust::System,
        (true, Some(other)) => {
            return invalid(format!(
            "spec.validation.wellKnownCACertificates: {other:?} is not supported (only {SYSTEM:?})"
        ))
        }
        (true, None) => {
            return invalid(
                "spec.validation: caCertificateRefs or wellKnownCACertificates is required".into(),
            )
        }
        (false, Some(_)) => {
            return invalid(
                "spec.validation: caCertificateRefs and wellKnownCACertificates are exclusive"
                    .into(),
            )
        }
        (false, None) => {
            let (bundle, problems) = ca_bundle(world, ns, policy);
            if let Some(first) = problems.first() {
                let resolved = (false, first.reason, join(&problems));
                if bundle.is_empty() {
                    return Evaluation {
                        tls: None,
                        accepted: (false, "NoValidCACertificate", join(&problems)),
                        resolved,
                    };
                }
                return Evaluation {
                    tls: Some(BackendTls {
                        hostname: v.hostname.clone(),
                        trust: BackendTrust::CaPem { ca_pem: bundle },
                        subject_alt_names,
                        client_certificate: None,
                    }),
                    accepted: (true, "Accepted", "policy is accepted".into()),
                    resolved,
                };
            }
            BackendTrust::CaPem { ca_pem: bundle }
        }
    };
    Evaluation {
        tls: Some(BackendTls {
            hostname: v.hostname.clone(),
            trust,
            subject_alt_names,
            client_certificate: None,
        }),
        accepted: (true, "Accepted", "policy is accepted".into()),
        resolved: (true, "ResolvedRefs", "references resolved".into()),
    }
}

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The concatenated `ca.crt` of the valid references, and the problems of the others.
fn ca_bundle(world: &World<'_>, ns: &str, policy: &BackendTlsPolicy) -> (String, Vec<Problem>) {
    let mut bundle = String::new();
    let mut problems = Vec::new();
    let refs = policy.spec.validation.ca_certificate_refs.iter().flatten();
    for (i, r) in refs.enumerate() {
        let field = format!("spec.validation.caCertificateRefs[{i}]");
        let object = ObjectRef {
            group: &r.group,
            kind: &r.kind,
            namespace: None,
            name: &r.name,
        };
        match resolve_ca_bundle(world, (GATEWAY_GROUP, KIND, ns), &object, &field) {
            Ok(pem) => {
                bundle.push_str(&pem);
                if !bundle.ends_with('\n') {
                    bundle.push('\n');
                }
            }
            Err(mut p) => {
                if p.reason == "InvalidCACertificateKind" {
                    p.reason = "InvalidKind";
                }
                problems.push(p);
            }
        }
    }
    (bundle, problems)
}

fn subject_alt_names(policy: &BackendTlsPolicy) -> Result<Vec<SubjectAltName>, String> {
    let sans = policy.spec.validation.subject_alt_names.iter().flatten();
    sans.enumerate()
        .map(|(i, s)| {
            let field = format!("spec.validation.subjectAltNames[{i}]");
            match s.r#type {
                SanType::Hostname => s
                    .hostname
                    .clone()
                    .filter(|h| !h.is_empty())
                    .map(SubjectAltName::Hostname)
                    .ok_or(format!("{field}: type Hostname needs hostname")),
                SanType::Uri => s
                    .uri
                    .clone()
                    .filter(|u| !u.is_empty())
                    .map(SubjectAltName::Uri)
                    .ok_or(format!("{field}: type URI needs uri")),
            }
        })
        .collect()
}

/// Statuses of the policies of the tenant's namespace `ns` that target the Services in `used`
/// (Service name → the tenant's Gateways using it through accepted routes), one ancestor per
/// Gateway.
pub(crate) fn statuses(
    world: &World<'_>,
    ns: &str,
    used: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<ObjectStatus> {
    let mut ancestors: BTreeMap<&str, (&BackendTlsPolicy, BTreeSet<&str>)> = BTreeMap::new();
    for (service, gateways) in used {
        for (p, _) in targeting(world, ns, service) {
            let entry = ancestors
                .entry(name_of(&p.metadata))
                .or_insert_with(|| (p, BTreeSet::new()));
            entry.1.extend(gateways.iter().map(String::as_str));
        }
    }
    let conflicted = conflicted(world, ns);
    ancestors
        .into_values()
        .map(|(p, gateways)| status_of(world, p, &gateways, &conflicted))
        .collect()
}

/// Names of the policies of `ns` that lose a (Service, section) to another.
fn conflicted<'a>(world: &World<'a>, ns: &str) -> BTreeSet<&'a str> {
    let mut winners: BTreeMap<(&str, Option<&str>), &str> = BTreeMap::new();
    let mut losers = BTreeSet::new();
    let mut policies: Vec<&BackendTlsPolicy> = world
        .objects
        .backend_tls_policies
        .iter()
        .filter(|p| ns_of(&p.metadata) == ns)
        .collect();
    policies.sort_by(|a, b| {
        age_key(&a.metadata)
            .cmp(&age_key(&b.metadata))
            .then_with(|| name_of(&a.metadata).cmp(name_of(&b.metadata)))
    });
    for p in policies {
        for t in &p.spec.target_refs {
            let key = (t.name.as_str(), t.section_name.as_deref());
            let name = name_of(&p.metadata);
            if *winners.entry(key).or_insert(name) != name {
                losers.insert(name);
            }
        }
    }
    losers
}

fn status_of(
    world: &World<'_>,
    policy: &BackendTlsPolicy,
    gateways: &BTreeSet<&str>,
    conflicted: &BTreeSet<&str>,
) -> ObjectStatus {
    let ns = ns_of(&policy.metadata);
    let generation = policy.metadata.generation;
    let e = evaluate(world, policy);
    let accepted = if conflicted.contains(name_of(&policy.metadata)) {
        (
            false,
            "Conflicted",
            "an older policy targets the same Service and section".to_owned(),
        )
    } else {
        e.accepted
    };
    let conditions = vec![
        condition("Accepted", accepted.0, accepted.1, accepted.2, generation),
        condition(
            "ResolvedRefs",
            e.resolved.0,
            e.resolved.1,
            e.resolved.2,
            generation,
        ),
    ];
    let ancestors: Vec<Value> = gateways
        .iter()
        .take(MAX_ANCESTORS)
        .map(|g| {
            json!({
                "ancestorRef": {"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": ns, "name": g},
                "controllerName": CONTROLLER_NAME,
                "conditions": conditions,
            })
        })
        .collect();
    ObjectStatus {
        api_version: API_VERSION.to_owned(),
        kind: KIND.to_owned(),
        metadata: ObjectMeta {
            namespace: Some(ns.to_owned()),
            name: name_of(&policy.metadata).to_owned(),
        },
        status: json!({ "ancestors": ancestors }),
        tenant: None,
    }
}

/// The client certificate a Gateway presents to TLS backends (`spec.tls.backend
/// .clientCertificateRef`, a `kubernetes.io/tls` Secret of the Gateway's namespace), added to
/// `certificates`; its id, `None` when the Gateway names none. A reference that does not resolve
/// is `Err`, with the reason the Gateway's `ResolvedRefs` condition takes
/// (`InvalidClientCertificateRef`).
pub(crate) fn gateway_client_certificate(
    world: &World<'_>,
    gateway: &Gateway,
    certificates: &mut BTreeMap<String, Certificate>,
) -> Result<Option<String>, Problem> {
    let r = gateway
        .spec
        .tls
        .as_ref()
        .and_then(|t| t.backend.as_ref())
        .and_then(|b| b.client_certificate_ref.as_ref());
    let Some(r) = r else { return Ok(None) };
    let ns = ns_of(&gateway.metadata);
    let reference = CertificateRef {
        group: r.group.as_deref(),
        kind: r.kind.as_deref(),
        namespace: None,
        name: &r.name,
    };
    let field = "spec.tls.backend.clientCertificateRef";
    let (id, cert) =
        resolve_certificate(world, ("Gateway", ns), &reference, field).map_err(|mut p| {
            if p.reason == "InvalidCertificateRef" {
                p.reason = "InvalidClientCertificateRef";
            }
            p
        })?;
    certificates.insert(id.clone(), cert);
    Ok(Some(id))
}

/// `compiled` as seen through a Gateway presenting client certificate `cert`: its TLS backends
/// renamed (`<id>+client=<cert>`) and presenting `cert`; `None` when it has no TLS backend (it
/// is used as it is).
pub(crate) fn with_client_certificate(
    compiled: &CompiledRoute,
    cert: &str,
) -> Option<CompiledRoute> {
    let renamed: BTreeMap<String, String> = compiled
        .backends
        .iter()
        .filter(|(_, b)| b.tls.is_some())
        .map(|(id, _)| (id.clone(), format!("{id}+client={cert}")))
        .collect();
    if renamed.is_empty() {
        return None;
    }
    let mut out = compiled.clone();
    out.backends = std::mem::take(&mut out.backends)
        .into_iter()
        .map(|(id, mut b)| match renamed.get(&id) {
            Some(new) => {
                if let Some(tls) = b.tls.as_mut() {
                    tls.client_certificate = Some(cert.to_owned());
                }
                (new.clone(), b)
            }
            None => (id, b),
        })
        .collect();
    let rename = |id: &mut String| {
        if let Some(new) = renamed.get(id.as_str()) {
            new.clone_into(id);
        }
    };
    for rule in &mut out.rules {
        let filters = rule.filters.iter_mut().chain(
            rule.backends
                .iter_mut()
                .flat_map(|wb| wb.filters.iter_mut()),
        );
        for f in filters {
            if let HttpFilter::RequestMirror(m) = f {
                rename(&mut m.backend);
            }
        }
        for wb in &mut rule.backends {
            if let Some(id) = wb.backend.as_mut() {
                rename(id);
            }
        }
    }
    Some(out)
}
