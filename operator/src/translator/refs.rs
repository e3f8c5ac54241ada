//! References out of a Gateway or a route: backend Services (resolved to EndpointSlice addresses
//! through the Service port, as Kubernetes does), certificate Secrets (validated the way the
//! tenant router will load them) and CA bundle ConfigMaps (likewise), with ReferenceGrant checks
//! for cross-namespace references.

use super::backend_tls::{self, PortTls};
use super::model::BackendRefModel;
use super::world::{RouteKind, World, GATEWAY_GROUP};
use crate::conditions::{
    REASON_BACKEND_NOT_FOUND, REASON_INVALID_CA_CERTIFICATE_KIND,
    REASON_INVALID_CA_CERTIFICATE_REF, REASON_INVALID_CERTIFICATE_REF, REASON_INVALID_KIND,
    REASON_REF_NOT_PERMITTED,
};
use bulkhead_crds::snapshot::{pem_pair_digest, Backend, BackendProtocol, Certificate};
use bulkhead_snapshot::pem::{certified_key, trust_anchors, PemError};
use k8s_openapi::api::core::v1::{Secret, ServicePort};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

/// Key of a CA bundle ConfigMap holding the PEM certificates.
pub(crate) const CA_BUNDLE_KEY: &str = "ca.crt";

/// Secret type of a TLS certificate.
pub(crate) const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
/// `appProtocol` values that mean HTTP/2 over cleartext.
const H2C_APP_PROTOCOLS: &[&str] = &["kubernetes.io/h2c", "grpc"];

/// Reason of a backend whose winning `BackendTLSPolicy` is invalid: the backend is not served,
/// but the route is not blamed (the policy's status says why).
pub(crate) const INVALID_BACKEND_TLS: &str = "InvalidBackendTLSPolicy";

/// A failed reference: a Gateway API reason and a message naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

impl Problem {
    pub(crate) fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// Where a backend reference comes from.
pub(crate) struct BackendSource<'r> {
    pub(crate) kind: RouteKind,
    pub(crate) namespace: &'r str,
    /// Field path of the reference, for messages (`spec.rules[0].backendRefs[1]`).
    pub(crate) field: String,
}

/// Resolves a backend reference to its id and endpoints.
///
/// Backend ids are `namespace/service:port`; when the route kind needs another protocol than the
/// Service port declares (`appProtocol` `kubernetes.io/h2c` or `grpc` mean h2c, anything else
/// HTTP/1.1), the protocol is appended (`/h2c`, `/tcp`, `/http1`) so one id never names two protocols.
pub(crate) fn resolve_backend(
    world: &World<'_>,
    source: &BackendSource<'_>,
    r: &BackendRefModel,
) -> Result<(String, Backend), Problem> {
    let field = &source.field;
    let group = r.group.as_deref().unwrap_or_default();
    let kind = r.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return Err(Problem::new(
            REASON_INVALID_KIND,
            format!(
                "{field}: kind {kind} of group {group:?} is not supported; only core Services are"
            ),
        ));
    }
    let ns = r.namespace.as_deref().unwrap_or(source.namespace);
    let name = r.name.as_str();
    if ns != source.namespace
        && !world.grant_permits(
            (GATEWAY_GROUP, source.kind.as_str(), source.namespace),
            ("", "Service", ns, name),
        )
    {
        return Err(Problem::new(
            REASON_REF_NOT_PERMITTED,
            format!(
                "{field}: Service {ns}/{name} is in another namespace and no ReferenceGrant in {ns:?} allows {} from {:?} to use it",
                source.kind.as_str(),
                source.namespace
            ),
        ));
    }
    let Some(service) = world.service(ns, name) else {
        return Err(Problem::new(
            REASON_BACKEND_NOT_FOUND,
            format!("{field}: Service {ns}/{name} does not exist"),
        ));
    };
    let Some(port) = r.port else {
        return Err(Problem::new(
            REASON_BACKEND_NOT_FOUND,
            format!("{field}: port is required for a Service backend"),
        ));
    };
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    let Some(service_port) = ports.iter().find(|p| p.port == port) else {
        return Err(Problem::new(
            REASON_BACKEND_NOT_FOUND,
            format!("{field}: Service {ns}/{name} has no port {port}"),
        ));
    };
    let natural = natural_protocol(service_port);
    let protocol = match source.kind {
        RouteKind::Http => natural,
        RouteKind::Grpc => BackendProtocol::H2c,
        RouteKind::Tls | RouteKind::Tcp => BackendProtocol::Tcp,
    };
    let mut id = format!("{ns}/{name}:{port}");
    if protocol != natural {
        id.push('/');
        id.push_str(protocol_suffix(protocol));
    }
    let tls = match protocol {
        // TLS origination is for HTTP and gRPC backends; L4 routes copy bytes as they are.
        BackendProtocol::Tcp => None,
        BackendProtocol::Http1 | BackendProtocol::H2c => {
            match backend_tls::for_port(world, ns, name, service_port) {
                PortTls::Plain => None,
                PortTls::Tls(tls) => Some(tls),
                PortTls::Invalid => {
                    return Err(Problem::new(
                        INVALID_BACKEND_TLS,
                        format!("{field}: the BackendTLSPolicy of Service {ns}/{name} is invalid"),
                    ))
                }
            }
        }
    };
    let endpoints = endpoints(world, ns, name, service_port);
    Ok((
        id,
        Backend {
            protocol,
            endpoints,
            tls,
        },
    ))
}

fn natural_protocol(port: &ServicePort) -> BackendProtocol {
    match port.app_protocol.as_deref() {
        Some(p) if H2C_APP_PROTOCOLS.contains(&p) => BackendProtocol::H2c,
        _ => BackendProtocol::Http1,
    }
}

fn protocol_suffix(p: BackendProtocol) -> &'static str {
    match p {
        BackendProtocol::Http1 => "http1",
        BackendProtocol::H2c => "h2c",
        BackendProtocol::Tcp => "tcp",
    }
}

/// Ready addresses of the Service port: every EndpointSlice labelled with the Service, its port named
/// like the Service port (both unnamed for a single-port Service), endpoints not marked not-ready.
fn endpoints(world: &World<'_>, ns: &str, service: &str, port: &ServicePort) -> Vec<SocketAddr> {
    let want = port.name.as_deref().unwrap_or_default();
    let mut out = BTreeSet::new();
    for slice in world.slices_for(ns, service) {
        if slice.address_type == "FQDN" {
            continue;
        }
        let Some(slice_port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or_default() == want)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for e in &slice.endpoints {
            if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for a in &e.addresses {
                if let Ok(ip) = a.parse::<IpAddr>() {
                    out.insert(SocketAddr::new(ip, slice_port));
                }
            }
        }
    }
    out.into_iter().collect()
}

/// A listener's certificate reference (group, kind, namespace, name).
pub(crate) struct CertificateRef<'r> {
    pub(crate) group: Option<&'r str>,
    pub(crate) kind: Option<&'r str>,
    pub(crate) namespace: Option<&'r str>,
    pub(crate) name: &'r str,
}

/// Resolves a certificate reference of a Gateway in `gateway_ns` to its id (`namespace/name`) and PEM.
pub(crate) fn resolve_certificate(
    world: &World<'_>,
    (from_kind, gateway_ns): (&str, &str),
    r: &CertificateRef<'_>,
    field: &str,
) -> Result<(String, Certificate), Problem> {
    let group = r.group.unwrap_or_default();
    let kind = r.kind.unwrap_or("Secret");
    if !group.is_empty() || kind != "Secret" {
        return Err(Problem::new(
            REASON_INVALID_CERTIFICATE_REF,
            format!(
                "{field}: kind {kind} of group {group:?} is not supported; only core Secrets are"
            ),
        ));
    }
    let ns = r.namespace.unwrap_or(gateway_ns);
    let name = r.name;
    if ns != gateway_ns
        && !world.grant_permits(
            (GATEWAY_GROUP, from_kind, gateway_ns),
            ("", "Secret", ns, name),
        )
    {
        return Err(Problem::new(
            REASON_REF_NOT_PERMITTED,
            format!(
                "{field}: Secret {ns}/{name} is in another namespace and no ReferenceGrant in {ns:?} allows {from_kind}s from {gateway_ns:?} to use it"
            ),
        ));
    }
    let Some(secret) = world.secret(ns, name) else {
        return Err(Problem::new(
            REASON_INVALID_CERTIFICATE_REF,
            format!("{field}: Secret {ns}/{name} does not exist"),
        ));
    };
    let certificate = certificate_of(secret).map_err(|m| {
        Problem::new(
            REASON_INVALID_CERTIFICATE_REF,
            format!("{field}: Secret {ns}/{name}: {m}"),
        )
    })?;
    Ok((format!("{ns}/{name}"), certificate))
}

/// A reference to an object by group, kind, namespace (`None`: the referrer's) and name, as the
/// Gateway API's `ObjectReference` (`caCertificateRefs`) writes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ObjectRef<'r> {
    pub(crate) group: &'r str,
    pub(crate) kind: &'r str,
    pub(crate) namespace: Option<&'r str>,
    pub(crate) name: &'r str,
}

/// Resolves a CA bundle reference made by an object of `from` (group, kind, namespace) to the PEM
/// of its trust anchors: the `ca.crt` key of a core ConfigMap, every certificate of it usable as a
/// trust anchor (the check the router makes when it builds its verifier).
///
/// Reasons: `InvalidCACertificateKind` (not a core ConfigMap), `RefNotPermitted` (another
/// namespace without a ReferenceGrant), `InvalidCACertificateRef` (missing ConfigMap or key,
/// unusable PEM). Those are the Gateway listener's reasons; a BackendTLSPolicy caller maps the
/// kind reason to its own (`InvalidKind`).
pub(crate) fn resolve_ca_bundle(
    world: &World<'_>,
    from: (&str, &str, &str),
    r: &ObjectRef<'_>,
    field: &str,
) -> Result<String, Problem> {
    let (from_group, from_kind, from_ns) = from;
    if !r.group.is_empty() || r.kind != "ConfigMap" {
        return Err(Problem::new(
            REASON_INVALID_CA_CERTIFICATE_KIND,
            format!(
                "{field}: kind {} of group {:?} is not supported; only core ConfigMaps are",
                r.kind, r.group
            ),
        ));
    }
    let ns = r.namespace.unwrap_or(from_ns);
    let name = r.name;
    if ns != from_ns
        && !world.grant_permits(
            (from_group, from_kind, from_ns),
            ("", "ConfigMap", ns, name),
        )
    {
        return Err(Problem::new(
            REASON_REF_NOT_PERMITTED,
            format!(
                "{field}: ConfigMap {ns}/{name} is in another namespace and no ReferenceGrant in {ns:?} allows {from_kind}s from {from_ns:?} to use it"
            ),
        ));
    }
    let invalid = |why: String| {
        Problem::new(
            REASON_INVALID_CA_CERTIFICATE_REF,
            format!("{field}: ConfigMap {ns}/{name} {why}"),
        )
    };
    let Some(config_map) = world.config_map(ns, name) else {
        return Err(invalid("does not exist".into()));
    };
    let Some(pem) = config_map.data.as_ref().and_then(|d| d.get(CA_BUNDLE_KEY)) else {
        return Err(invalid(format!("has no key {CA_BUNDLE_KEY:?}")));
    };
    trust_anchors(pem.as_bytes()).map_err(|e| invalid(format!("{CA_BUNDLE_KEY}: {e}")))?;
    Ok(pem.clone())
}

/// Reads and validates `tls.crt` / `tls.key` of a `kubernetes.io/tls` Secret (`data` or `stringData`).
fn certificate_of(secret: &Secret) -> Result<Certificate, String> {
    let type_ = secret.type_.as_deref().unwrap_or("Opaque");
    if type_ != TLS_SECRET_TYPE {
        return Err(format!("type is {type_:?}, not {TLS_SECRET_TYPE:?}"));
    }
    let field = |key: &str| -> Result<String, String> {
        if let Some(v) = secret.string_data.as_ref().and_then(|d| d.get(key)) {
            return Ok(v.clone());
        }
        match secret.data.as_ref().and_then(|d| d.get(key)) {
            Some(bytes) => {
                String::from_utf8(bytes.0.clone()).map_err(|_| format!("{key} is not UTF-8 PEM"))
            }
            None => Err(format!("{key} is missing")),
        }
    };
    let cert_pem = field("tls.crt")?;
    let key_pem = field("tls.key")?;
    validate_pem(&cert_pem, &key_pem)?;
    Ok(Certificate { cert_pem, key_pem })
}

/// Checks what the tenant router checks when it loads a certificate: a PEM chain with at least one
/// certificate, a PEM private key, a key type rustls (ring) can sign with, and a key that belongs to
/// the leaf certificate. Results are remembered by content ([`PemVerdicts`]): a tenant's Secrets
/// are checked on every translation of the tenant, and parsing keys is the costliest step of
/// translating a tenant with many certificates.
pub(crate) fn validate_pem(cert_pem: &str, key_pem: &str) -> Result<(), String> {
    static VERDICTS: std::sync::OnceLock<PemVerdicts> = std::sync::OnceLock::new();
    VERDICTS
        .get_or_init(|| PemVerdicts::new(PEM_VERDICTS_CAPACITY))
        .check(cert_pem, key_pem, parse_pem)
}

/// How many verdicts [`validate_pem`] keeps (about 100 bytes each) before it starts over.
const PEM_VERDICTS_CAPACITY: usize = 16_384;

/// Verdicts of a check of a certificate and key, by their content digest ([`pem_pair_digest`]),
/// at most `capacity` of them: when full, it is emptied and fills again with what is in use.
#[derive(Debug)]
pub(crate) struct PemVerdicts {
    capacity: usize,
    verdicts: std::sync::Mutex<std::collections::HashMap<[u8; 32], Result<(), String>>>,
}

impl PemVerdicts {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            verdicts: std::sync::Mutex::default(),
        }
    }

    /// The verdict of `check` on this pair: remembered, or computed now and remembered.
    pub(crate) fn check(
        &self,
        cert_pem: &str,
        key_pem: &str,
        check: impl FnOnce(&str, &str) -> Result<(), String>,
    ) -> Result<(), String> {
        let digest = pem_pair_digest(cert_pem, key_pem);
        let lock = || {
            self.verdicts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(verdict) = lock().get(&digest) {
            return verdict.clone();
        }
        let verdict = check(cert_pem, key_pem);
        let mut verdicts = lock();
        if verdicts.len() >= self.capacity {
            verdicts.clear();
        }
        verdicts.insert(digest, verdict.clone());
        verdict
    }
}

/// The router's own PEM check ([`certified_key`]), its failure worded for the Secret's keys.
fn parse_pem(cert_pem: &str, key_pem: &str) -> Result<(), String> {
    let provider = rustls::crypto::ring::default_provider();
    certified_key(cert_pem.as_bytes(), key_pem.as_bytes(), &provider)
        .map(drop)
        .map_err(|e| match e {
            PemError::Chain(e) => format!("tls.crt: {e}"),
            PemError::NoCertificate => "tls.crt holds no CERTIFICATE PEM block".into(),
            PemError::Key(e) => format!("tls.key holds no usable PRIVATE KEY PEM block: {e}"),
            PemError::Mismatch(e) => {
                format!("tls.crt and tls.key do not form a usable certificate: {e}")
            }
        })
}

#[cfg(test)]
mod tests {
    use super::PemVerdicts;
    use std::cell::Cell;

    #[test]
    fn verdicts_are_remembered_by_content_within_capacity() {
        let verdicts = PemVerdicts::new(2);
        let calls = Cell::new(0);
        let check = |cert: &str, _key: &str| {
            calls.set(calls.get() + 1);
            if cert.contains("bad") {
                Err(format!("{cert} is bad"))
            } else {
                Ok(())
            }
        };
        assert_eq!(verdicts.check("good", "k", check), Ok(()));
        assert_eq!(verdicts.check("good", "k", check), Ok(()));
        assert_eq!(calls.get(), 1, "the same pair is checked once");
        assert_eq!(verdicts.check("bad", "k", check), Err("bad is bad".into()));
        assert_eq!(verdicts.check("bad", "k", check), Err("bad is bad".into()));
        assert_eq!(calls.get(), 2, "refusals are remembered too");
        // Moving a byte from the key to the chain is another pair.
        assert_eq!(verdicts.check("goodk", "", check), Ok(()));
        assert_eq!(calls.get(), 3);
        // Full (2 entries): emptied, so the first pair is checked again.
        assert_eq!(verdicts.check("good", "k", check), Ok(()));
        assert_eq!(calls.get(), 4);
    }

    #[test]
    fn a_real_pair_is_valid_and_a_mismatched_one_is_not() {
        let read = |f: &str| {
            let dir =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/translator/certs");
            std::fs::read_to_string(dir.join(f)).expect("test certificate")
        };
        let (a_cert, a_key) = (read("a.crt"), read("a.key"));
        assert_eq!(super::validate_pem(&a_cert, &a_key), Ok(()));
        let mismatched = super::validate_pem(&a_cert, &read("b.key"));
        assert!(
            mismatched.is_err_and(|e| e.contains("do not form a usable certificate")),
            "mismatched key refused"
        );
    }
}
