//! Gateway listeners of one tenant: protocol and port mapping to the two edge ports (a port the
//! edge does not receive for that protocol is `PortUnavailable`), hostnames within
//! the tenant's, allowed routes, certificates, and conflicts between listeners (every Gateway of a
//! tenant is served by the same router, so two listeners with the same hostname on the same edge
//! port conflict even when they belong to different Gateways; the oldest Gateway, then the first
//! listener, wins). Client certificate validation is the Gateway's, per port ([`frontend`]).

use super::frontend;
use super::global::TenantPlan;
use super::refs::{resolve_certificate, CertificateRef, Problem};
use super::world::{name_of, ns_of, RouteKind, World, GATEWAY_GROUP};
use crate::conditions::{
    REASON_HOSTNAME_CONFLICT, REASON_HOSTNAME_NOT_PERMITTED, REASON_INVALID_CERTIFICATE_REF,
    REASON_INVALID_HOSTNAME, REASON_INVALID_ROUTE_KINDS, REASON_PORT_UNAVAILABLE,
    REASON_PROTOCOL_CONFLICT, REASON_UNSUPPORTED_PROTOCOL,
};
use bulkhead_crds::snapshot::{Certificate, ClientValidation, EdgePort};
use bulkhead_hostmatch::HostPattern;
use gateway_api::experimental::gateways::{
    Gateway, GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom,
    GatewayListenersAllowedRoutesNamespacesSelector, GatewayListenersTlsMode,
};
use std::collections::{BTreeMap, BTreeSet};

/// How a listener is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Plain HTTP, on the edge's HTTP port.
    Http,
    /// HTTPS (TLS terminated by the router), on the edge's TLS port.
    HttpsTerminate,
    /// TLS passthrough (TLSRoute), on the edge's TLS port.
    TlsPassthrough,
    /// TLS terminated by the router, then plain TCP to a backend (TCPRoute or TLSRoute), on the
    /// edge's TLS port.
    TlsTerminate,
    /// Not served.
    Unsupported,
}

impl Mode {
    fn edge(self) -> Option<EdgePort> {
        match self {
            Self::Http => Some(EdgePort::Http),
            Self::HttpsTerminate | Self::TlsPassthrough | Self::TlsTerminate => {
                Some(EdgePort::Https)
            }
            Self::Unsupported => None,
        }
    }

    /// Whether the router terminates TLS for this listener (it needs a certificate).
    pub(crate) fn terminates(self) -> bool {
        matches!(self, Self::HttpsTerminate | Self::TlsTerminate)
    }

    fn supported_kinds(self) -> &'static [RouteKind] {
        match self {
            Self::Http | Self::HttpsTerminate => &[RouteKind::Http, RouteKind::Grpc],
            Self::TlsPassthrough => &[RouteKind::Tls],
            Self::TlsTerminate => &[RouteKind::Tcp, RouteKind::Tls],
            Self::Unsupported => &[],
        }
    }
}

/// Which namespaces may attach routes.
#[derive(Debug, Clone)]
pub(crate) enum AllowedFrom {
    Same,
    All,
    Selector(Option<GatewayListenersAllowedRoutesNamespacesSelector>),
}

/// A route that attached to a listener.
pub(crate) type AttachedRoute = (RouteKind, String, String);

/// Where listeners are declared: one of the tenant's Gateways, or one of its ListenerSets
/// ([`super::listener_sets`]).
#[derive(Debug, Clone)]
pub(crate) struct Source<'a> {
    /// `Gateway` or `ListenerSet`.
    pub(crate) kind: &'static str,
    pub(crate) name: &'a str,
    /// The namespace certificate references are relative to (the declaring object's).
    pub(crate) namespace: &'a str,
    /// The Gateway whose `spec.tls.frontend` applies (a ListenerSet's parent).
    pub(crate) gateway: &'a Gateway,
    /// The listeners declared.
    pub(crate) listeners: std::borrow::Cow<'a, [GatewayListeners]>,
    /// `Some` when none of the listeners may be served (a ListenerSet its parent does not admit).
    pub(crate) refused: Option<Problem>,
    /// A parent Gateway outside the tenant whose own listeners take precedence in conflicts.
    pub(crate) foreign_parent: Option<&'a Gateway>,
}

impl<'a> Source<'a> {
    /// The listeners of one of the tenant's Gateways.
    pub(crate) fn gateway(g: &'a Gateway) -> Self {
        Self {
            kind: "Gateway",
            name: name_of(&g.metadata),
            namespace: ns_of(&g.metadata),
            gateway: g,
            listeners: std::borrow::Cow::Borrowed(&g.spec.listeners),
            refused: None,
            foreign_parent: None,
        }
    }
}

/// One listener of one of the tenant's Gateways or ListenerSets.
#[derive(Debug, Clone)]
pub(crate) struct Listener {
    /// Index of the declaring [`Source`] in the tenant's list.
    pub(crate) gateway: usize,
    /// Kind of the declaring object (`Gateway` or `ListenerSet`).
    pub(crate) owner_kind: &'static str,
    pub(crate) gateway_name: String,
    pub(crate) name: String,
    /// The port as written (0 when out of range).
    pub(crate) port: u16,
    pub(crate) mode: Mode,
    /// Hostname patterns served (the listener's hostname, or all of the tenant's when it has none).
    pub(crate) patterns: Vec<HostPattern>,
    /// `Some` when not accepted.
    pub(crate) not_accepted: Option<Problem>,
    /// Unresolved references (certificates, route kinds).
    pub(crate) unresolved: Vec<Problem>,
    /// `Some` when in conflict with an earlier listener.
    pub(crate) conflicted: Option<Problem>,
    /// Route kinds allowed to attach.
    pub(crate) kinds: Vec<RouteKind>,
    pub(crate) from: AllowedFrom,
    /// Id of the certificate served (HTTPS only).
    pub(crate) certificate: Option<String>,
    /// How client certificates are validated (HTTPS only; the Gateway's `spec.tls.frontend`).
    pub(crate) client_validation: Option<ClientValidation>,
    /// Routes attached.
    pub(crate) attached: BTreeSet<AttachedRoute>,
}

impl Listener {
    /// The edge port this listener receives traffic from.
    pub(crate) fn edge(&self) -> Option<EdgePort> {
        self.mode.edge()
    }

    /// Accepted and not in conflict: routes may attach.
    pub(crate) fn usable(&self) -> bool {
        self.not_accepted.is_none() && self.conflicted.is_none()
    }

    /// Usable, and (when the router terminates TLS) with a certificate: the router serves it.
    pub(crate) fn serving(&self) -> bool {
        self.usable() && (!self.mode.terminates() || self.certificate.is_some())
    }

    /// Whether routes from namespace `route_ns` may attach (the Gateway lives in `gateway_ns`).
    pub(crate) fn allows_namespace(
        &self,
        world: &World<'_>,
        gateway_ns: &str,
        route_ns: &str,
    ) -> bool {
        match &self.from {
            AllowedFrom::Same => gateway_ns == route_ns,
            AllowedFrom::All => true,
            AllowedFrom::Selector(None) => false,
            AllowedFrom::Selector(Some(sel)) => {
                selector_matches(sel, &world.namespace_labels(route_ns))
            }
        }
    }
}

/// Builds, validates and de-conflicts the listeners of the tenant's Gateways (given oldest first),
/// then of its ListenerSets (oldest first). Valid certificates are added to `certificates`.
pub(crate) fn build(
    world: &World<'_>,
    plan: &TenantPlan,
    sources: &[Source<'_>],
    certificates: &mut BTreeMap<String, Certificate>,
) -> Vec<Listener> {
    let mut out = Vec::new();
    for (gi, src) in sources.iter().enumerate() {
        for (li, l) in src.listeners.iter().enumerate() {
            let mut built = listener(world, plan, gi, src, li, l, certificates);
            if let Some(p) = &src.refused {
                built.not_accepted = Some(p.clone());
            }
            out.push(built);
        }
    }
    conflicts_with_parents(world, sources, &mut out);
    resolve_conflicts(&mut out);
    out
}

/// One listener: its mode and port, hostname patterns, allowed routes, certificate and client
/// certificate validation, each checked by its own step below.
fn listener(
    world: &World<'_>,
    plan: &TenantPlan,
    gi: usize,
    src: &Source<'_>,
    li: usize,
    l: &GatewayListeners,
    certificates: &mut BTreeMap<String, Certificate>,
) -> Listener {
    let g = src.gateway;
    let field = format!("spec.listeners[{li}]");
    let (mode, port, mut not_accepted) = mode_and_port(world, l, &field);
    let patterns = hostname_patterns(plan, l, &field, &mut not_accepted);
    let mut unresolved = Vec::new();
    let kinds = allowed_kinds(mode, l, &field, &mut unresolved);
    let from = allowed_from(l);
    let certificate = if mode.terminates() {
        listener_certificate(world, src, l, mode, &field, certificates, &mut unresolved)
    } else {
        None
    };
    let mut client_validation = None;
    if mode == Mode::HttpsTerminate {
        let v = frontend::for_listener(world, g, l.port);
        unresolved.extend(v.unresolved);
        if not_accepted.is_none() {
            not_accepted = v.not_accepted;
        }
        client_validation = v.validation;
    }
    Listener {
        gateway: gi,
        owner_kind: src.kind,
        gateway_name: src.name.to_owned(),
        name: l.name.clone(),
        port: port.unwrap_or(0),
        mode,
        patterns,
        not_accepted,
        unresolved,
        conflicted: None,
        kinds,
        from,
        certificate,
        client_validation,
        attached: BTreeSet::new(),
    }
}

/// How the listener is served and on which port (`None` when out of range); `Some` problem when
/// its protocol, TLS mode or port cannot be served.
fn mode_and_port(
    world: &World<'_>,
    l: &GatewayListeners,
    field: &str,
) -> (Mode, Option<u16>, Option<Problem>) {
    let port = u16::try_from(l.port).ok().filter(|p| *p != 0);
    let tls_mode = l.tls.as_ref().and_then(|t| t.mode.clone());
    let unsupported = |message: String| {
        (
            Mode::Unsupported,
            Some(Problem::new(REASON_UNSUPPORTED_PROTOCOL, message)),
        )
    };
    let (mode, mut not_accepted) = match (l.protocol.as_str(), tls_mode) {
        ("HTTP", _) => (Mode::Http, None),
        ("HTTPS", None | Some(GatewayListenersTlsMode::Terminate)) => (Mode::HttpsTerminate, None),
        ("HTTPS", Some(GatewayListenersTlsMode::Passthrough)) => unsupported(format!(
            "{field}.tls.mode: HTTPS listeners terminate TLS; use protocol TLS for Passthrough"
        )),
        ("TLS", Some(GatewayListenersTlsMode::Passthrough)) => (Mode::TlsPassthrough, None),
        ("TLS", None | Some(GatewayListenersTlsMode::Terminate)) => (Mode::TlsTerminate, None),
        ("TCP", _) => unsupported(format!(
            "{field}.protocol: TCP listeners are not supported: the edge tells tenants apart by TLS SNI or HTTP Host, which plain TCP does not carry; use protocol TLS with mode Terminate (TCPRoute) or Passthrough (TLSRoute)"
        )),
        (other, _) => unsupported(format!(
            "{field}.protocol: {other:?} is not supported (HTTP, HTTPS and TLS are)"
        )),
    };
    if port.is_none() && not_accepted.is_none() {
        not_accepted = Some(Problem::new(
            REASON_PORT_UNAVAILABLE,
            format!("{field}.port: {} is not a valid port", l.port),
        ));
    }
    if not_accepted.is_none() {
        not_accepted = port.and_then(|p| port_unavailable(world, mode, p, field));
    }
    (mode, port, not_accepted)
}

/// The hostname patterns served: the listener's hostname, which must lie within the tenant's,
/// or all of the tenant's when it has none.
fn hostname_patterns(
    plan: &TenantPlan,
    l: &GatewayListeners,
    field: &str,
    not_accepted: &mut Option<Problem>,
) -> Vec<HostPattern> {
    let Some(raw) = l.hostname.as_deref() else {
        if plan.owned.is_empty() && not_accepted.is_none() {
            *not_accepted = Some(Problem::new(
                REASON_HOSTNAME_NOT_PERMITTED,
                format!("{field}: tenant {:?} owns no hostnames", plan.name),
            ));
        }
        return plan.owned.clone();
    };
    match HostPattern::parse(raw) {
        Err(e) => {
            not_accepted.get_or_insert_with(|| {
                Problem::new(
                    REASON_INVALID_HOSTNAME,
                    format!("{field}.hostname {raw:?}: {e}"),
                )
            });
            Vec::new()
        }
        Ok(p) => {
            if !plan.owned.iter().any(|o| p.is_subset_of(o)) {
                not_accepted.get_or_insert_with(|| {
                    Problem::new(
                        REASON_HOSTNAME_NOT_PERMITTED,
                        format!(
                            "{field}.hostname {raw:?} is outside the hostnames of tenant {:?} ({})",
                            plan.name,
                            plan.owned_list()
                        ),
                    )
                });
            }
            vec![p]
        }
    }
}

/// The route kinds allowed to attach: those listed in `allowedRoutes.kinds` that the mode
/// supports (the others are unresolved), or all it supports.
fn allowed_kinds(
    mode: Mode,
    l: &GatewayListeners,
    field: &str,
    unresolved: &mut Vec<Problem>,
) -> Vec<RouteKind> {
    let supported = mode.supported_kinds();
    let Some(list) = l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) else {
        return supported.to_vec();
    };
    let mut kinds = Vec::new();
    for (ki, k) in list.iter().enumerate() {
        let group_ok = k.group.as_deref().is_none_or(|g| g == GATEWAY_GROUP);
        match supported.iter().find(|s| s.as_str() == k.kind) {
            Some(kind) if group_ok => kinds.push(*kind),
            _ => unresolved.push(Problem::new(
                REASON_INVALID_ROUTE_KINDS,
                format!(
                    "{field}.allowedRoutes.kinds[{ki}]: {} is not supported on this listener",
                    k.kind
                ),
            )),
        }
    }
    kinds
}

/// Which namespaces may attach routes (`allowedRoutes.namespaces`).
fn allowed_from(l: &GatewayListeners) -> AllowedFrom {
    match l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
        .and_then(|n| n.from.clone().map(|f| (f, n.selector.clone())))
    {
        None | Some((GatewayListenersAllowedRoutesNamespacesFrom::Same, _)) => AllowedFrom::Same,
        Some((GatewayListenersAllowedRoutesNamespacesFrom::All, _)) => AllowedFrom::All,
        Some((GatewayListenersAllowedRoutesNamespacesFrom::Selector, sel)) => {
            AllowedFrom::Selector(sel)
        }
    }
}

/// The id of the certificate a terminating listener serves (its first valid `certificateRefs`
/// entry, added to `certificates`); the invalid ones are unresolved.
fn listener_certificate(
    world: &World<'_>,
    src: &Source<'_>,
    l: &GatewayListeners,
    mode: Mode,
    field: &str,
    certificates: &mut BTreeMap<String, Certificate>,
    unresolved: &mut Vec<Problem>,
) -> Option<String> {
    let refs = l
        .tls
        .as_ref()
        .and_then(|t| t.certificate_refs.as_deref())
        .unwrap_or_default();
    if refs.is_empty() {
        unresolved.push(Problem::new(
            REASON_INVALID_CERTIFICATE_REF,
            format!(
                "{field}.tls.certificateRefs: {} needs a certificate",
                if mode == Mode::HttpsTerminate {
                    "an HTTPS listener"
                } else {
                    "a TLS listener with mode Terminate"
                }
            ),
        ));
    }
    let mut certificate = None;
    for (ci, c) in refs.iter().enumerate() {
        let r = CertificateRef {
            group: c.group.as_deref(),
            kind: c.kind.as_deref(),
            namespace: c.namespace.as_deref(),
            name: &c.name,
        };
        let cfield = format!("{field}.tls.certificateRefs[{ci}]");
        match resolve_certificate(world, (src.kind, src.namespace), &r, &cfield) {
            Ok((id, cert)) => {
                if certificate.is_none() {
                    certificates.insert(id.clone(), cert);
                    certificate = Some(id);
                }
            }
            Err(p) => unresolved.push(p),
        }
    }
    certificate
}

/// `PortUnavailable` when the edge does not receive listener port `port` on the side `mode` is
/// served on ([`super::TranslateSettings`]).
fn port_unavailable(world: &World<'_>, mode: Mode, port: u16, field: &str) -> Option<Problem> {
    let (ports, side, flag) = match mode.edge()? {
        EdgePort::Http => (&world.settings.http_ports, "HTTP", "--listener-http-ports"),
        EdgePort::Https => (&world.settings.tls_ports, "TLS", "--listener-tls-ports"),
    };
    if ports.is_empty() || ports.contains(&port) {
        return None;
    }
    let served: Vec<String> = ports.iter().map(u16::to_string).collect();
    Some(Problem::new(
        REASON_PORT_UNAVAILABLE,
        format!(
            "{field}.port: the edge receives {side} listeners on ports {} only, not {port} (set with {flag})",
            served.join(", ")
        ),
    ))
}

/// Marks a ListenerSet's listener conflicted when one of its patterns is the hostname of a listener
/// of its parent Gateway on the same edge port (a parent outside the tenant; the tenant's own
/// Gateways come first in [`resolve_conflicts`]): the parent's listeners take precedence.
fn conflicts_with_parents(world: &World<'_>, sources: &[Source<'_>], listeners: &mut [Listener]) {
    for l in listeners.iter_mut() {
        let Some(parent) = sources[l.gateway].foreign_parent else {
            continue;
        };
        let Some(edge) = l.edge() else { continue };
        if l.not_accepted.is_some() {
            continue;
        }
        let clash = parent.spec.listeners.iter().find(|pl| {
            let (mode, _, _) = mode_and_port(world, pl, "");
            let pattern = HostPattern::parse(pl.hostname.as_deref().unwrap_or("*")).ok();
            mode.edge() == Some(edge) && pattern.is_some_and(|p| l.patterns.contains(&p))
        });
        if let Some(pl) = clash {
            let (mode, _, _) = mode_and_port(world, pl, "");
            let reason = if mode == l.mode {
                "HostnameConflict"
            } else {
                "ProtocolConflict"
            };
            l.conflicted = Some(Problem::new(
                reason,
                format!(
                    "hostname {} on the {} edge port is already served by listener {:?} of the parent Gateway {}/{}",
                    pl.hostname.as_deref().unwrap_or("*"),
                    edge_name(edge),
                    pl.name,
                    ns_of(&parent.metadata),
                    name_of(&parent.metadata)
                ),
            ));
        }
    }
}

/// Marks a listener conflicted when one of its patterns is already served on its edge port by an
/// earlier accepted listener.
fn resolve_conflicts(listeners: &mut [Listener]) {
    let mut claimed: BTreeMap<(EdgePort, HostPattern), usize> = BTreeMap::new();
    for i in 0..listeners.len() {
        let Some(edge) = listeners[i].edge() else {
            continue;
        };
        if listeners[i].not_accepted.is_some() {
            continue;
        }
        let clash = listeners[i].patterns.iter().find_map(|p| {
            claimed
                .get(&(edge, p.clone()))
                .map(|owner| (p.clone(), *owner))
        });
        match clash {
            Some((p, owner)) => {
                let o = &listeners[owner];
                let reason = if o.mode == listeners[i].mode {
                    REASON_HOSTNAME_CONFLICT
                } else {
                    REASON_PROTOCOL_CONFLICT
                };
                let message = format!(
                    "hostname {p} on the {} edge port is already served by listener {:?} of {} {:?} (all Gateways of a tenant share its router)",
                    edge_name(edge),
                    o.name,
                    o.owner_kind,
                    o.gateway_name
                );
                listeners[i].conflicted = Some(Problem::new(reason, message));
            }
            None => {
                for p in &listeners[i].patterns {
                    claimed.insert((edge, p.clone()), i);
                }
            }
        }
    }
}

/// `https` or `http`, for messages.
pub(crate) fn edge_name(edge: EdgePort) -> &'static str {
    match edge {
        EdgePort::Https => "https",
        EdgePort::Http => "http",
    }
}

/// Kubernetes label selector semantics (`matchLabels` and `matchExpressions`, all must hold).
pub(crate) fn selector_matches(
    sel: &GatewayListenersAllowedRoutesNamespacesSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_api::experimental::gateways::GatewayListenersAllowedRoutesNamespacesSelectorMatchExpressions as Expr;

    #[test]
    fn selector_follows_kubernetes_semantics() {
        let labels = BTreeMap::from([
            ("team".to_owned(), "web".to_owned()),
            (
                super::super::world::NAMESPACE_NAME_LABEL.to_owned(),
                "web".to_owned(),
            ),
        ]);
        let sel = |labels: Option<BTreeMap<String, String>>, exprs: Vec<Expr>| {
            GatewayListenersAllowedRoutesNamespacesSelector {
                match_labels: labels,
                match_expressions: Some(exprs),
            }
        };
        let expr = |key: &str, op: &str, values: &[&str]| Expr {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
        };
        assert!(
            selector_matches(&sel(None, vec![]), &labels),
            "empty selector matches all"
        );
        assert!(selector_matches(
            &sel(
                Some(BTreeMap::from([("team".into(), "web".into())])),
                vec![]
            ),
            &labels
        ));
        assert!(!selector_matches(
            &sel(Some(BTreeMap::from([("team".into(), "db".into())])), vec![]),
            &labels
        ));
        assert!(selector_matches(
            &sel(None, vec![expr("team", "In", &["web", "api"])]),
            &labels
        ));
        assert!(!selector_matches(
            &sel(None, vec![expr("team", "NotIn", &["web"])]),
            &labels
        ));
        assert!(selector_matches(
            &sel(None, vec![expr("tier", "DoesNotExist", &[])]),
            &labels
        ));
        assert!(!selector_matches(
            &sel(None, vec![expr("tier", "Exists", &[])]),
            &labels
        ));
        assert!(!selector_matches(
            &sel(None, vec![expr("team", "Bogus", &[])]),
            &labels
        ));
    }
}
