//! Frontend TLS validation (Gateway API `spec.tls.frontend`): which CA bundle the client
//! certificates of an HTTPS listener are verified against, and in which mode.
//!
//! The configuration for a listener is the `perPort` entry of its port, else the `default`. Its
//! `caCertificateRefs` are resolved ([`resolve_ca_bundle`]): a listener with some invalid
//! references gets `ResolvedRefs=False` (`InvalidCACertificateRef`, `InvalidCACertificateKind` or
//! `RefNotPermitted`) and is served with the valid ones; a listener whose references are all
//! invalid is also `Accepted=False` (`NoValidCACertificate`) and is not served at all (fail
//! closed: it never falls back to serving without validation). A Gateway with a listener in
//! `AllowInsecureFallback` mode gets `InsecureFrontendValidationMode=True`.

use super::refs::{resolve_ca_bundle, ObjectRef, Problem};
use super::world::{ns_of, World, GATEWAY_GROUP};
use crate::conditions::{REASON_INVALID_CA_CERTIFICATE_REF, REASON_NO_VALID_CA_CERTIFICATE};
use bulkhead_crds::snapshot::{ClientValidation, ClientValidationMode};
use gateway_api::experimental::gateways::{
    Gateway, GatewayTlsFrontendDefaultValidationMode, GatewayTlsFrontendPerPortTlsValidationMode,
};

/// A listener's frontend validation as written: the field it comes from, its references, its mode.
struct Configured<'g> {
    field: String,
    refs: Vec<ObjectRef<'g>>,
    mode: ClientValidationMode,
}

/// A [`Configured`] from one of the generated validation types (`default` and `perPort` have the
/// same shape but distinct Rust types).
macro_rules! configured {
    ($field:expr, $v:expr, $insecure:expr) => {
        Configured {
            field: $field,
            refs: $v
                .ca_certificate_refs
                .iter()
                .map(|r| ObjectRef {
                    group: &r.group,
                    kind: &r.kind,
                    namespace: r.namespace.as_deref(),
                    name: &r.name,
                })
                .collect(),
            mode: mode($v.mode == Some($insecure)),
        }
    };
}

/// The validation configured for listener port `port` of `g`: its `perPort` entry, else the
/// default; `None` when neither sets `validation`.
fn configured(g: &Gateway, port: i32) -> Option<Configured<'_>> {
    let frontend = g.spec.tls.as_ref()?.frontend.as_ref()?;
    let per_port = frontend.per_port.iter().flatten().enumerate();
    if let Some((i, p)) = per_port.into_iter().find(|(_, p)| p.port == port) {
        let v = p.tls.validation.as_ref()?;
        return Some(configured!(
            format!("spec.tls.frontend.perPort[{i}].tls.validation"),
            v,
            GatewayTlsFrontendPerPortTlsValidationMode::AllowInsecureFallback
        ));
    }
    let v = frontend.default.validation.as_ref()?;
    Some(configured!(
        "spec.tls.frontend.default.validation".into(),
        v,
        GatewayTlsFrontendDefaultValidationMode::AllowInsecureFallback
    ))
}

fn mode(insecure_fallback: bool) -> ClientValidationMode {
    if insecure_fallback {
        ClientValidationMode::AllowInsecureFallback
    } else {
        ClientValidationMode::AllowValidOnly
    }
}

/// What frontend validation means for one HTTPS listener.
#[derive(Debug, Default)]
pub(crate) struct ListenerValidation {
    /// The validation to serve with (`None`: no client certificate is asked for).
    pub(crate) validation: Option<ClientValidation>,
    /// References that did not resolve (`ResolvedRefs=False`).
    pub(crate) unresolved: Vec<Problem>,
    /// `Some` when every reference failed: the listener is not accepted, so not served.
    pub(crate) not_accepted: Option<Problem>,
}

/// Resolves the frontend validation of the HTTPS listener on `port` of `g`.
pub(crate) fn for_listener(world: &World<'_>, g: &Gateway, port: i32) -> ListenerValidation {
    let Some(c) = configured(g, port) else {
        return ListenerValidation::default();
    };
    let gateway_ns = ns_of(&g.metadata);
    let mut out = ListenerValidation::default();
    let mut bundles = Vec::new();
    for (i, r) in c.refs.iter().enumerate() {
        let field = format!("{}.caCertificateRefs[{i}]", c.field);
        match resolve_ca_bundle(world, (GATEWAY_GROUP, "Gateway", gateway_ns), r, &field) {
            Ok(pem) => bundles.push(pem),
            Err(p) => out.unresolved.push(p),
        }
    }
    if bundles.is_empty() {
        let why = if c.refs.is_empty() {
            format!("{}.caCertificateRefs is empty", c.field)
        } else {
            format!("no reference of {}.caCertificateRefs is valid", c.field)
        };
        if out.unresolved.is_empty() {
            out.unresolved
                .push(Problem::new(REASON_INVALID_CA_CERTIFICATE_REF, why.clone()));
        }
        out.not_accepted = Some(Problem::new(
            REASON_NO_VALID_CA_CERTIFICATE,
            format!("{why}: the listener is not served rather than served without client certificate validation"),
        ));
        return out;
    }
    out.validation = Some(ClientValidation {
        ca_pem: bundles.concat(),
        mode: c.mode,
    });
    out
}

/// Whether an HTTPS listener of `g` on one of `ports` is configured with `AllowInsecureFallback`
/// (the Gateway then reports `InsecureFrontendValidationMode=True`).
pub(crate) fn insecure_fallback(g: &Gateway, ports: impl IntoIterator<Item = i32>) -> bool {
    ports.into_iter().any(|p| {
        configured(g, p).is_some_and(|c| c.mode == ClientValidationMode::AllowInsecureFallback)
    })
}
