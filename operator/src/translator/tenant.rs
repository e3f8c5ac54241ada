//! The translation of one tenant: its Gateways' listeners, the routes attached to them (from its
//! namespace or, where a listener allows it, from others), its [`TenantSnapshot`], its Gateways'
//! statuses and its part of the routes' statuses.

use super::backend_tls;
use super::frontend;
use super::global::TenantPlan;
use super::listener_sets;
use super::listeners::{self, edge_name, Listener, Mode, Source};
use super::model::{ParentRefModel, RouteModel};
use super::refs::Problem;
use super::routes::{self, precedence, CompiledRoute, MatchPrecedence};
use super::world::{RouteKind, World, GATEWAY_GROUP};
use crate::conditions::{
    ACCEPTED, CONFLICTED, INSECURE_FRONTEND_VALIDATION_MODE, PROGRAMMED, REASON_ACCEPTED,
    REASON_CONFIGURATION_CHANGED, REASON_HOSTNAME_CONFLICT, REASON_INVALID,
    REASON_LISTENERS_NOT_VALID, REASON_NOT_ALLOWED_BY_LISTENERS, REASON_NO_CONFLICTS,
    REASON_NO_MATCHING_LISTENER_HOSTNAME, REASON_NO_MATCHING_PARENT, REASON_PENDING,
    REASON_RESOLVED_REFS, RESOLVED_REFS,
};
use crate::status::{condition, ObjectMeta, ObjectStatus};
use bulkhead_crds::snapshot::{
    EdgePort, ListenerRef, PassthroughRoute, RouteEntry, RouteRef, Sealed, TenantSnapshot,
    TlsTerminate, TlsTerminateTcp, VirtualHost, WeightedBackend,
};
use bulkhead_crds::CONTROLLER_NAME;
use bulkhead_hostmatch::{intersect, HostPattern};
use gateway_api::experimental::gateways::Gateway;
use gateway_api::gateways::{
    GatewayStatus, GatewayStatusListeners, GatewayStatusListenersSupportedKinds,
};
use gateway_api::httproutes::{HttpRouteStatusParents, HttpRouteStatusParentsParentRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::Value;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// One tenant's translation.
#[derive(Debug, Clone)]
pub(crate) struct TenantOutput {
    /// The snapshot, version 0, sealed.
    pub(crate) snapshot: TenantSnapshot,
    /// Statuses of the tenant's Gateways, and of the BackendTLSPolicies of its namespace that
    /// its routes use.
    pub(crate) gateway_statuses: Vec<ObjectStatus>,
    /// `status.parents[]` entries for parentRefs naming the tenant's Gateways.
    pub(crate) route_parents: Vec<RouteParentFragment>,
}

/// One `status.parents[]` entry of a route.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RouteParentFragment {
    pub(crate) kind: RouteKind,
    pub(crate) namespace: String,
    pub(crate) name: String,
    /// Index of the parentRef in the route's spec.
    pub(crate) index: usize,
    pub(crate) status: Value,
}

/// Where a route entry sits among the entries of one virtual host: entries are tried in
/// ascending order, so the derived `Ord` (field by field, in declaration order) encodes the Gateway
/// API precedence rules:
///
/// 1. the route whose matching hostname is the most specific (an exact hostname, then longer
///    wildcards, then `*`);
/// 2. the most specific match (see [`precedence`]: exact path, regular expression, longest
///    prefix, then method, more headers, more query parameters);
/// 3. the oldest route by creation timestamp (routes without one last);
/// 4. the route first in alphabetical order of namespace, then name (then kind, so the order is
///    total);
/// 5. the rule, then the match, in the order the route lists them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct EntryKey {
    /// Specificity of the hostname pattern the entry is reached through, most specific first.
    /// Left at its lowest when the entry is built; set when virtual hosts merge.
    host: Reverse<(u8, usize)>,
    /// The match's precedence.
    matched: MatchPrecedence,
    /// Whether the route has no creation timestamp, then the timestamp: oldest first.
    created: (bool, Option<Time>),
    /// The route's namespace.
    namespace: String,
    /// The route's name.
    name: String,
    /// The route's kind.
    kind: RouteKind,
    /// Index of the rule in the route.
    rule: usize,
    /// Index of the match in the rule.
    match_index: usize,
}

impl EntryKey {
    /// The rule and match the entry stands for, whatever hostname it is reached through.
    fn identity(&self) -> (String, String, RouteKind, usize, usize) {
        (
            self.namespace.clone(),
            self.name.clone(),
            self.kind,
            self.rule,
            self.match_index,
        )
    }
}

/// The entries routes contribute under one hostname pattern of one listener.
struct VhostBuild {
    pattern: HostPattern,
    /// The listener serving this pattern.
    owner: usize,
    listener_port: u16,
    /// Entries with their key, the host rank left at its lowest (filled when virtual hosts merge).
    entries: Vec<(EntryKey, RouteEntry)>,
    routes: BTreeSet<(RouteKind, String, String)>,
}

/// Translates one served tenant: listeners, then the routes attached to them, then the snapshot's
/// parts (TLS terminations, L4 routes, virtual hosts, the certificates in use), then statuses.
pub(crate) fn translate(world: &World<'_>, plan: &TenantPlan) -> TenantOutput {
    let ns = plan.namespace.as_str();
    let gateways: Vec<&Gateway> = world
        .gateways_in(ns)
        .iter()
        .copied()
        .filter(|g| world.is_ours(g))
        .collect();
    let mut snapshot = TenantSnapshot {
        tenant: plan.name.clone(),
        namespace: plan.namespace.clone(),
        hostnames: plan.owned.iter().map(ToString::to_string).collect(),
        foreign_hostnames: plan.foreign.iter().map(ToString::to_string).collect(),
        ..Default::default()
    };
    let sets = listener_sets::of_namespace(world, ns);
    let sources = listener_sources(&gateways, &sets);
    let mut listeners = listeners::build(world, plan, &sources, &mut snapshot.certificates);
    // A Gateway's backend client certificate (`spec.tls.backend`), per source: a ListenerSet's
    // routes present none (its parent Gateway's key stays out of the tenant's snapshot).
    let client_certs: Vec<Result<Option<String>, Problem>> = sources
        .iter()
        .enumerate()
        .map(|(si, _)| match gateways.get(si) {
            Some(g) => {
                backend_tls::gateway_client_certificate(world, g, &mut snapshot.certificates)
            }
            None => Ok(None),
        })
        .collect();
    let attached = attach_routes(
        world,
        plan,
        (&sources, &client_certs),
        &mut listeners,
        &mut snapshot,
    );
    add_terminations(&mut snapshot, plan, &listeners);
    add_l4_routes(&mut snapshot, attached.l4);
    add_virtual_hosts(&mut snapshot, attached.vhosts, &listeners);
    retain_used_certificates(&mut snapshot);
    // Held for as long as it is served (by the operator and, in standalone, by the router).
    snapshot.shrink_to_fit();
    snapshot.seal();

    let mut gateway_statuses: Vec<ObjectStatus> = gateways
        .iter()
        .enumerate()
        .map(|(gi, g)| {
            let mut status = gateway_status(world, plan, gi, g, &listeners);
            if let Err(p) = &client_certs[gi] {
                client_certificate_condition(&mut status, p, g.metadata.generation);
            }
            status
        })
        .collect();
    gateway_statuses.extend(
        sets.iter()
            .enumerate()
            .map(|(si, set)| listener_sets::status(plan, set, gateways.len() + si, &listeners)),
    );
    gateway_statuses.extend(backend_tls::statuses(world, ns, &attached.tls_ancestors));
    TenantOutput {
        snapshot,
        gateway_statuses,
        route_parents: attached.route_parents,
    }
}

/// The tenant's Gateways, then its ListenerSets, as listener sources (a listener's `gateway` is
/// its source's index here).
fn listener_sources<'a>(
    gateways: &[&'a Gateway],
    sets: &[listener_sets::TenantSet<'a>],
) -> Vec<Source<'a>> {
    let mut sources: Vec<Source<'a>> = gateways.iter().map(|g| Source::gateway(g)).collect();
    for set in sets {
        let foreign = !gateways.iter().any(|g| std::ptr::eq(*g, set.parent));
        sources.push(Source {
            kind: listener_sets::KIND,
            name: set.ls.metadata.name.as_deref().unwrap_or_default(),
            namespace: set.ls.metadata.namespace.as_deref().unwrap_or_default(),
            gateway: set.parent,
            listeners: std::borrow::Cow::Owned(set.listeners.clone()),
            refused: set.admitted.clone().err(),
            foreign_parent: foreign.then_some(set.parent),
        });
    }
    sources
}

/// What the routes into the tenant's namespace contribute.
struct AttachedRoutes {
    vhosts: BTreeMap<(EdgePort, String), VhostBuild>,
    l4: BTreeMap<String, L4Route>,
    route_parents: Vec<RouteParentFragment>,
    /// Service of the tenant's namespace → the Gateways whose accepted routes use it (the
    /// ancestors of its BackendTLSPolicies).
    tls_ancestors: BTreeMap<String, BTreeSet<String>>,
}

/// Attaches every route naming one of `sources` (Gateways or ListenerSets) to their listeners;
/// the backends of the routes accepted somewhere go into the snapshot.
fn attach_routes(
    world: &World<'_>,
    plan: &TenantPlan,
    (sources, client_certs): (&[Source<'_>], &[Result<Option<String>, Problem>]),
    listeners: &mut [Listener],
    snapshot: &mut TenantSnapshot,
) -> AttachedRoutes {
    let ns = plan.namespace.as_str();
    let mut out = AttachedRoutes {
        vhosts: BTreeMap::new(),
        l4: BTreeMap::new(),
        route_parents: Vec::new(),
        tls_ancestors: BTreeMap::new(),
    };
    for robj in world.routes_into(ns) {
        let route = match RouteModel::read(*robj) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(kind = robj.kind().as_str(), error = %e, "route skipped: unreadable spec");
                continue;
            }
        };
        let targets: Vec<(usize, &ParentRefModel, usize)> = route
            .parent_refs
            .iter()
            .enumerate()
            .filter_map(|(k, p)| target_gateway(p, &route, ns, sources).map(|gi| (k, p, gi)))
            .collect();
        if targets.is_empty() {
            continue;
        }
        let compiled = routes::compile(world, &route);
        let mut used = false;
        for (k, parent, gi) in targets {
            let through_gateway = match &client_certs[gi] {
                Ok(Some(cert)) => backend_tls::with_client_certificate(&compiled, cert),
                _ => None,
            };
            let compiled = through_gateway.as_ref().unwrap_or(&compiled);
            let accepted = match attach(world, plan, listeners, gi, ns, &route, compiled, parent) {
                Err(p) => Err(p),
                Ok((attachments, notes)) => {
                    if matches!(route.kind, RouteKind::Tls | RouteKind::Tcp) {
                        add_l4(
                            &mut out.l4,
                            plan,
                            &route,
                            compiled,
                            &attachments,
                            listeners,
                            notes,
                        )
                    } else {
                        add_entries(&mut out.vhosts, &route, compiled, &attachments, listeners);
                        Ok(notes)
                    }
                }
            };
            used |= accepted.is_ok();
            if accepted.is_ok() {
                note_tls_ancestors(&mut out.tls_ancestors, ns, compiled, sources[gi].gateway);
                if through_gateway.is_some() {
                    snapshot.backends.extend(compiled.backends.clone());
                }
            }
            out.route_parents.push(RouteParentFragment {
                kind: route.kind,
                namespace: route.namespace.to_owned(),
                name: route.name.to_owned(),
                index: k,
                status: parent_status(parent, &route, compiled, accepted),
            });
        }
        if used {
            snapshot.backends.extend(compiled.backends);
        }
    }
    out
}

/// Adds `ResolvedRefs=False` for an invalid backend client certificate to a Gateway's status.
fn client_certificate_condition(status: &mut ObjectStatus, p: &Problem, generation: Option<i64>) {
    let c = condition(
        "ResolvedRefs",
        false,
        p.reason,
        p.message.clone(),
        generation,
    );
    if let (Some(list), Ok(c)) = (
        status.status["conditions"].as_array_mut(),
        serde_json::to_value(c),
    ) {
        list.retain(|x| x["type"] != "ResolvedRefs");
        list.push(c);
    }
}

/// Records `gateway` as an ancestor of the policies of the Services of `ns` that `compiled` uses.
fn note_tls_ancestors(
    out: &mut BTreeMap<String, BTreeSet<String>>,
    ns: &str,
    compiled: &CompiledRoute,
    gateway: &Gateway,
) {
    let name = gateway.metadata.name.clone().unwrap_or_default();
    for (sns, service) in &compiled.services {
        if sns == ns {
            out.entry(service.clone()).or_default().insert(name.clone());
        }
    }
}

/// The SNI patterns of the served HTTPS listeners, each with the listener's certificate, and the
/// client certificate validation of those listeners that have one.
fn add_terminations(snapshot: &mut TenantSnapshot, plan: &TenantPlan, listeners: &[Listener]) {
    for l in listeners
        .iter()
        .filter(|l| l.serving() && l.mode == Mode::HttpsTerminate)
    {
        let Some(cert) = &l.certificate else { continue };
        let listener = listener_ref(plan, l);
        if let Some(v) = &l.client_validation {
            snapshot.client_validation.insert(listener.id(), v.clone());
        }
        for p in &l.patterns {
            snapshot.https.terminate.push(TlsTerminate {
                hostname: p.to_string(),
                certificate: cert.clone(),
                listener: listener.clone(),
            });
        }
    }
    snapshot
        .https
        .terminate
        .sort_by(|a, b| a.hostname.cmp(&b.hostname));
}

/// The TLSRoutes and TCPRoutes: passed through, or terminated and forwarded as plain TCP.
fn add_l4_routes(snapshot: &mut TenantSnapshot, l4: BTreeMap<String, L4Route>) {
    for (hostname, r) in l4 {
        match r.terminate {
            None => snapshot.https.passthrough.push(PassthroughRoute {
                hostname,
                route: r.route,
                backends: r.backends,
            }),
            Some((certificate, listener)) => snapshot.https.terminate_tcp.push(TlsTerminateTcp {
                hostname,
                certificate,
                listener,
                route: r.route,
                backends: r.backends,
            }),
        }
    }
}

/// The virtual hosts of both edge ports: the routes' entries, and an empty one for every served
/// listener hostname without routes.
fn add_virtual_hosts(
    snapshot: &mut TenantSnapshot,
    mut vhosts: BTreeMap<(EdgePort, String), VhostBuild>,
    listeners: &[Listener],
) {
    for (l_index, l) in listeners.iter().enumerate() {
        let Some(edge) = l.edge() else { continue };
        if !l.serving() || !matches!(l.mode, Mode::Http | Mode::HttpsTerminate) {
            continue;
        }
        // Every listener hostname gets a virtual host, so that a request for it never falls back
        // to a less specific listener's routes (it gets 404 when no route is attached).
        for p in &l.patterns {
            vhosts
                .entry((edge, p.to_string()))
                .or_insert_with(|| VhostBuild::new(p.clone(), l_index, l.port));
        }
    }
    for (edge, vhost) in merge_vhosts(&vhosts) {
        match edge {
            EdgePort::Https => snapshot.https.virtual_hosts.push(vhost),
            EdgePort::Http => snapshot.http.virtual_hosts.push(vhost),
        }
    }
}

/// Keeps only the certificates a terminate entry or a backend (its client certificate) uses.
fn retain_used_certificates(snapshot: &mut TenantSnapshot) {
    let https = &snapshot.https;
    let backend_clients = snapshot
        .backends
        .values()
        .filter_map(|b| b.tls.as_ref()?.client_certificate.clone());
    let used: BTreeSet<String> = https
        .terminate
        .iter()
        .map(|t| t.certificate.clone())
        .chain(https.terminate_tcp.iter().map(|t| t.certificate.clone()))
        .chain(backend_clients)
        .collect();
    snapshot.certificates.retain(|id, _| used.contains(id));
}

/// Index of the tenant Gateway or ListenerSet a parentRef names, if it names one.
fn target_gateway(
    p: &ParentRefModel,
    route: &RouteModel<'_>,
    ns: &str,
    sources: &[Source<'_>],
) -> Option<usize> {
    let group_ok = p.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP;
    let kind = p.kind.as_deref().unwrap_or("Gateway");
    let pns = p.namespace.as_deref().unwrap_or(route.namespace);
    if !group_ok || pns != ns {
        return None;
    }
    sources
        .iter()
        .position(|s| s.kind == kind && s.name == p.name)
}

/// (listener index, hostname pattern) pairs a route serves through one parentRef.
type Attachments = Vec<(usize, HostPattern)>;

/// Attaches a route to the listeners a parentRef selects; returns the attachments and notes about
/// hostnames that are not served, or why the route is not accepted for this parent.
#[allow(clippy::too_many_arguments)]
fn attach(
    world: &World<'_>,
    plan: &TenantPlan,
    listeners: &mut [Listener],
    gi: usize,
    gateway_ns: &str,
    route: &RouteModel<'_>,
    compiled: &CompiledRoute,
    parent: &ParentRefModel,
) -> Result<(Attachments, Vec<String>), Problem> {
    if let Some(p) = &compiled.invalid {
        return Err(p.clone());
    }
    let candidates: Vec<usize> = (0..listeners.len())
        .filter(|&i| {
            let l = &listeners[i];
            l.gateway == gi
                && parent.section_name.as_deref().is_none_or(|s| s == l.name)
                && parent.port.is_none_or(|p| i32::from(l.port) == p)
        })
        .collect();
    if candidates.is_empty() {
        let what = match (&parent.section_name, parent.port) {
            (Some(s), Some(p)) => format!("named {s:?} on port {p}"),
            (Some(s), None) => format!("named {s:?}"),
            (None, Some(p)) => format!("on port {p}"),
            (None, None) => "at all".to_owned(),
        };
        return Err(Problem::new(
            REASON_NO_MATCHING_PARENT,
            format!(
                "{} {:?} has no listener {what}",
                parent.kind.as_deref().unwrap_or("Gateway"),
                parent.name
            ),
        ));
    }
    let usable: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| listeners[i].usable())
        .collect();
    if usable.is_empty() {
        let why: Vec<String> = candidates
            .iter()
            .map(|&i| {
                let l = &listeners[i];
                let reason = l
                    .not_accepted
                    .as_ref()
                    .or(l.conflicted.as_ref())
                    .map(|p| p.message.clone())
                    .unwrap_or_default();
                format!("listener {:?}: {reason}", l.name)
            })
            .collect();
        return Err(Problem::new(
            REASON_NOT_ALLOWED_BY_LISTENERS,
            format!("no usable listener: {}", why.join("; ")),
        ));
    }
    let allowed: Vec<usize> = usable
        .iter()
        .copied()
        .filter(|&i| {
            let l = &listeners[i];
            l.kinds.contains(&route.kind) && l.allows_namespace(world, gateway_ns, route.namespace)
        })
        .collect();
    if allowed.is_empty() {
        let kind_ok = usable
            .iter()
            .any(|&i| listeners[i].kinds.contains(&route.kind));
        let message = if kind_ok {
            format!(
                "no listener of Gateway {:?} allows routes from namespace {:?}",
                parent.name, route.namespace
            )
        } else {
            format!(
                "no listener of Gateway {:?} accepts the kind {}",
                parent.name,
                route.kind.as_str()
            )
        };
        return Err(Problem::new(REASON_NOT_ALLOWED_BY_LISTENERS, message));
    }

    let mut attachments = Vec::new();
    let mut matched_hostnames = BTreeSet::new();
    let mut attached_any = false;
    let mut covered = Vec::new();
    for &li in &allowed {
        let mut patterns: Vec<HostPattern> = Vec::new();
        if compiled.hostnames.is_empty() {
            patterns.extend(listeners[li].patterns.iter().cloned());
        } else {
            for (hi, h) in &compiled.hostnames {
                for lp in &listeners[li].patterns {
                    if let Some(x) = intersect(h, lp) {
                        matched_hostnames.insert(*hi);
                        if !patterns.contains(&x) {
                            patterns.push(x);
                        }
                    }
                }
            }
        }
        if patterns.is_empty() {
            continue;
        }
        attached_any = true;
        listeners[li].attached.insert((
            route.kind,
            route.namespace.to_owned(),
            route.name.to_owned(),
        ));
        for p in patterns {
            // A request goes to the listener with the most specific matching hostname: a route
            // hostname inside a more specific listener's hostname is served by that listener only.
            match owner(listeners, li, &p) {
                Some(o) if o == li => attachments.push((li, p)),
                Some(o) => covered.push(format!(
                    "hostname {p} belongs to the more specific listener {:?}",
                    listeners[o].name
                )),
                None => {}
            }
        }
    }

    let outside = |h: &HostPattern| !plan.owned.iter().any(|o| intersect(h, o).is_some());
    let notes: Vec<String> = compiled
        .hostnames
        .iter()
        .filter(|(hi, _)| !matched_hostnames.contains(hi))
        .map(|(hi, h)| {
            if outside(h) {
                format!(
                    "spec.hostnames[{hi}] \"{h}\" is outside the hostnames of tenant {:?} ({})",
                    plan.name,
                    plan.owned_list()
                )
            } else {
                format!("spec.hostnames[{hi}] \"{h}\" matches no listener hostname")
            }
        })
        .chain(covered)
        .collect();
    if !attached_any {
        let listener_patterns: BTreeSet<String> = allowed
            .iter()
            .flat_map(|&i| listeners[i].patterns.iter().map(ToString::to_string))
            .collect();
        let mut message = notes.join("; ");
        if message.is_empty() {
            message = "no route hostname matches a listener hostname".into();
        }
        message.push_str(&format!(
            " (listener hostnames: {})",
            listener_patterns.into_iter().collect::<Vec<_>>().join(", ")
        ));
        return Err(Problem::new(REASON_NO_MATCHING_LISTENER_HOSTNAME, message));
    }
    Ok((attachments, notes))
}

/// The usable listener that serves pattern `p` on `listeners[via]`'s edge port: the one whose
/// hostname contains `p` most specifically.
fn owner(listeners: &[Listener], via: usize, p: &HostPattern) -> Option<usize> {
    let edge = listeners[via].edge()?;
    let mut best: Option<(usize, (u8, usize))> = None;
    for (i, l) in listeners.iter().enumerate() {
        if !l.usable() || l.edge() != Some(edge) {
            continue;
        }
        for q in &l.patterns {
            if p.is_subset_of(q) && best.is_none_or(|(_, s)| q.specificity() > s) {
                best = Some((i, q.specificity()));
            }
        }
    }
    best.map(|(i, _)| i)
}

impl VhostBuild {
    fn new(pattern: HostPattern, owner: usize, listener_port: u16) -> Self {
        Self {
            pattern,
            owner,
            listener_port,
            entries: Vec::new(),
            routes: BTreeSet::new(),
        }
    }
}

fn add_entries(
    vhosts: &mut BTreeMap<(EdgePort, String), VhostBuild>,
    route: &RouteModel<'_>,
    compiled: &CompiledRoute,
    attachments: &Attachments,
    listeners: &[Listener],
) {
    let route_key = (
        route.kind,
        route.namespace.to_owned(),
        route.name.to_owned(),
    );
    for (li, p) in attachments {
        let l = &listeners[*li];
        let Some(edge) = l.edge() else { continue };
        if !l.serving() {
            continue;
        }
        let build = vhosts
            .entry((edge, p.to_string()))
            .or_insert_with(|| VhostBuild::new(p.clone(), *li, l.port));
        if !build.routes.insert(route_key.clone()) {
            continue;
        }
        for rule in &compiled.rules {
            for (j, m) in rule.matches.iter().enumerate() {
                let key = EntryKey {
                    host: Reverse((0, 0)),
                    matched: precedence(m, route.kind),
                    created: (route.created.is_none(), route.created.cloned()),
                    namespace: route.namespace.to_owned(),
                    name: route.name.to_owned(),
                    kind: route.kind,
                    rule: rule.index,
                    match_index: j,
                };
                build.entries.push((
                    key,
                    RouteEntry {
                        route: RouteRef {
                            kind: route.kind.as_str().to_owned(),
                            namespace: route.namespace.to_owned(),
                            name: route.name.to_owned(),
                            rule: rule.index,
                        },
                        matches: m.clone(),
                        filters: rule.filters.clone(),
                        backends: rule.backends.clone(),
                        timeouts: rule.timeouts.clone(),
                    },
                ));
            }
        }
    }
}

/// The final virtual hosts. A request is served by the most specific virtual host matching its
/// host, so each virtual host also carries the entries of the less specific patterns of the same
/// listener that contain it, after its own: the Gateway API gives precedence to the route with the
/// most specific matching hostname, then to the match, and a request that matches none of the
/// specific route's rules falls through to the wildcard routes.
fn merge_vhosts(vhosts: &BTreeMap<(EdgePort, String), VhostBuild>) -> Vec<(EdgePort, VirtualHost)> {
    let mut out = Vec::new();
    for ((edge, hostname), build) in vhosts {
        let mut entries: Vec<(EntryKey, &RouteEntry)> = Vec::new();
        for ((other_edge, _), other) in vhosts {
            if other_edge != edge
                || other.owner != build.owner
                || !build.pattern.is_subset_of(&other.pattern)
            {
                continue;
            }
            let host = Reverse(other.pattern.specificity());
            for (key, entry) in &other.entries {
                let mut key = key.clone();
                key.host = host;
                entries.push((key, entry));
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        // The same rule and match reached through two hostnames: keep the most specific.
        let mut seen = BTreeSet::new();
        entries.retain(|(k, _)| seen.insert(k.identity()));
        out.push((
            *edge,
            VirtualHost {
                hostname: hostname.clone(),
                listener_port: build.listener_port,
                routes: entries.into_iter().map(|(_, e)| e.clone()).collect(),
            },
        ));
    }
    out
}

/// The Gateway listener `l` of the tenant, as the snapshot names it.
fn listener_ref(plan: &TenantPlan, l: &Listener) -> ListenerRef {
    ListenerRef {
        namespace: plan.namespace.clone(),
        gateway: if l.owner_kind == listener_sets::KIND {
            format!("{}/{}", listener_sets::KIND, l.gateway_name)
        } else {
            l.gateway_name.clone()
        },
        listener: l.name.clone(),
        port: l.port,
    }
}

/// A TLSRoute or TCPRoute served under one SNI pattern: passed through untouched, or (on a TLS
/// `Terminate` listener) terminated with the listener's certificate and copied as plain TCP.
struct L4Route {
    route: RouteRef,
    backends: Vec<WeightedBackend>,
    /// Certificate id and listener, when the router terminates TLS.
    terminate: Option<(String, ListenerRef)>,
}

/// Adds a TLSRoute's or TCPRoute's entries; a hostname already taken by an older route stays with
/// it.
fn add_l4(
    l4: &mut BTreeMap<String, L4Route>,
    plan: &TenantPlan,
    route: &RouteModel<'_>,
    compiled: &CompiledRoute,
    attachments: &Attachments,
    listeners: &[Listener],
    mut notes: Vec<String>,
) -> Result<Vec<String>, Problem> {
    let mut added = 0;
    let mut taken = Vec::new();
    for (li, p) in attachments {
        let l = &listeners[*li];
        if !l.serving() {
            continue;
        }
        let terminate = match (l.mode, &l.certificate) {
            (Mode::TlsTerminate, Some(cert)) => Some((cert.clone(), listener_ref(plan, l))),
            _ => None,
        };
        let key = p.to_string();
        match l4.get(&key) {
            Some(existing)
                if existing.route.kind != route.kind.as_str()
                    || existing.route.namespace != route.namespace
                    || existing.route.name != route.name =>
            {
                let verb = if existing.terminate.is_some() {
                    "served by"
                } else {
                    "passed through to"
                };
                taken.push(format!(
                    "hostname {key} is already {verb} the older {} {}/{}",
                    existing.route.kind, existing.route.namespace, existing.route.name
                ));
            }
            Some(_) => added += 1,
            None => {
                l4.insert(
                    key,
                    L4Route {
                        route: RouteRef {
                            kind: route.kind.as_str().to_owned(),
                            namespace: route.namespace.to_owned(),
                            name: route.name.to_owned(),
                            rule: 0,
                        },
                        backends: compiled.l4_backends.clone(),
                        terminate,
                    },
                );
                added += 1;
            }
        }
    }
    if added == 0 && !taken.is_empty() {
        return Err(Problem::new(REASON_HOSTNAME_CONFLICT, taken.join("; ")));
    }
    notes.extend(taken);
    Ok(notes)
}

fn parent_status(
    parent: &ParentRefModel,
    route: &RouteModel<'_>,
    compiled: &CompiledRoute,
    accepted: Result<Vec<String>, Problem>,
) -> Value {
    let generation = route.generation;
    let accepted = match accepted {
        Ok(notes) if notes.is_empty() => condition(
            ACCEPTED,
            true,
            REASON_ACCEPTED,
            "Route is accepted",
            generation,
        ),
        Ok(notes) => condition(
            ACCEPTED,
            true,
            REASON_ACCEPTED,
            format!("Route is accepted; not served: {}", notes.join("; ")),
            generation,
        ),
        Err(p) => condition(ACCEPTED, false, p.reason, p.message, generation),
    };
    let resolved = match compiled.unresolved.first() {
        None => condition(
            RESOLVED_REFS,
            true,
            REASON_RESOLVED_REFS,
            "All references are resolved",
            generation,
        ),
        Some(first) => condition(
            RESOLVED_REFS,
            false,
            first.reason,
            compiled
                .unresolved
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            generation,
        ),
    };
    let status = HttpRouteStatusParents {
        conditions: vec![accepted, resolved],
        controller_name: CONTROLLER_NAME.to_owned(),
        parent_ref: HttpRouteStatusParentsParentRef {
            group: parent.group.clone(),
            kind: parent.kind.clone(),
            name: parent.name.clone(),
            namespace: parent.namespace.clone(),
            port: parent.port,
            section_name: parent.section_name.clone(),
        },
    };
    serde_json::to_value(status).unwrap_or_default()
}

fn gateway_status(
    world: &World<'_>,
    plan: &TenantPlan,
    gi: usize,
    g: &Gateway,
    listeners: &[Listener],
) -> ObjectStatus {
    let generation = g.metadata.generation;
    let mine: Vec<&Listener> = listeners.iter().filter(|l| l.gateway == gi).collect();
    let [accepted, programmed] = accepted_and_programmed(&mine, "Gateway", generation);
    let mut conditions = vec![accepted, programmed];
    let https_ports = mine
        .iter()
        .filter(|l| l.mode == Mode::HttpsTerminate)
        .map(|l| i32::from(l.port));
    if frontend::insecure_fallback(g, https_ports) {
        conditions.push(condition(
            INSECURE_FRONTEND_VALIDATION_MODE,
            true,
            REASON_CONFIGURATION_CHANGED,
            "An HTTPS listener accepts clients without a valid certificate (AllowInsecureFallback)",
            generation,
        ));
    }
    let status = GatewayStatus {
        conditions: Some(conditions),
        listeners: Some(
            mine.iter()
                .map(|l| listener_status(l, generation))
                .collect(),
        ),
        ..Default::default()
    };
    let mut status = serde_json::to_value(status).unwrap_or_default();
    listener_sets::decorate_gateway_status(world, g, &|_| true, &mut status);
    ObjectStatus {
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "Gateway".into(),
        metadata: ObjectMeta {
            namespace: Some(plan.namespace.clone()),
            name: g.metadata.name.clone().unwrap_or_default(),
        },
        status,
        tenant: Some(plan.name.clone()),
    }
}

/// `Accepted` and `Programmed` of a Gateway or ListenerSet (`kind`) declaring listeners `mine`.
pub(crate) fn accepted_and_programmed(
    mine: &[&Listener],
    kind: &str,
    generation: Option<i64>,
) -> [Condition; 2] {
    let invalid: Vec<&str> = mine
        .iter()
        .filter(|l| !l.usable())
        .map(|l| l.name.as_str())
        .collect();
    let accepted = if invalid.is_empty() {
        condition(
            ACCEPTED,
            true,
            REASON_ACCEPTED,
            format!("{kind} is accepted"),
            generation,
        )
    } else {
        let message = format!("invalid listeners: {}", invalid.join(", "));
        condition(
            ACCEPTED,
            invalid.len() < mine.len(),
            REASON_LISTENERS_NOT_VALID,
            message,
            generation,
        )
    };
    let programmed = if mine.iter().any(|l| l.serving()) {
        condition(
            PROGRAMMED,
            false,
            REASON_PENDING,
            "Waiting for the tenant's routers to acknowledge the snapshot",
            generation,
        )
    } else {
        condition(
            PROGRAMMED,
            false,
            REASON_INVALID,
            "No listener can be served",
            generation,
        )
    };
    [accepted, programmed]
}

/// The status of one listener (a Gateway's or a ListenerSet's: both have the same shape).
pub(crate) fn listener_status(l: &Listener, generation: Option<i64>) -> GatewayStatusListeners {
    let accepted = match &l.not_accepted {
        None => condition(
            ACCEPTED,
            true,
            REASON_ACCEPTED,
            "Listener is accepted",
            generation,
        ),
        Some(p) => condition(ACCEPTED, false, p.reason, p.message.clone(), generation),
    };
    let resolved = match l.unresolved.first() {
        None => condition(
            RESOLVED_REFS,
            true,
            REASON_RESOLVED_REFS,
            "All references are resolved",
            generation,
        ),
        Some(first) => condition(
            RESOLVED_REFS,
            false,
            first.reason,
            l.unresolved
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            generation,
        ),
    };
    let programmed = if l.serving() {
        let edge = l.edge().map(edge_name).unwrap_or_default();
        condition(
            PROGRAMMED,
            false,
            REASON_PENDING,
            format!(
                "Served on the {edge} edge port once the tenant's routers acknowledge the snapshot"
            ),
            generation,
        )
    } else {
        let why = l
            .not_accepted
            .as_ref()
            .or(l.conflicted.as_ref())
            .map(|p| p.message.clone())
            .unwrap_or_else(|| "no valid certificate".into());
        condition(
            PROGRAMMED,
            false,
            REASON_INVALID,
            format!("Listener is not served: {why}"),
            generation,
        )
    };
    let conflicted = match &l.conflicted {
        None => condition(
            CONFLICTED,
            false,
            REASON_NO_CONFLICTS,
            "No conflicts",
            generation,
        ),
        Some(p) => condition(CONFLICTED, true, p.reason, p.message.clone(), generation),
    };
    let conditions: Vec<Condition> = vec![accepted, resolved, programmed, conflicted];
    GatewayStatusListeners {
        attached_routes: i32::try_from(l.attached.len()).unwrap_or(i32::MAX),
        conditions,
        name: l.name.clone(),
        supported_kinds: Some(
            l.kinds
                .iter()
                .map(|k| GatewayStatusListenersSupportedKinds {
                    group: Some(GATEWAY_GROUP.to_owned()),
                    kind: k.as_str().to_owned(),
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_crds::snapshot::{HttpMatch, PathMatch};

    fn key(host: &str, path: &str, created: Option<&str>, name: &str, rule: usize) -> EntryKey {
        let host = HostPattern::parse(host).expect("pattern");
        let m = HttpMatch {
            path: Some(PathMatch::PathPrefix(path.into())),
            ..Default::default()
        };
        EntryKey {
            host: Reverse(host.specificity()),
            matched: precedence(&m, RouteKind::Http),
            created: (
                created.is_none(),
                created.map(|t| Time(t.parse().expect("timestamp"))),
            ),
            namespace: "acme".into(),
            name: name.into(),
            kind: RouteKind::Http,
            rule,
            match_index: 0,
        }
    }

    #[test]
    fn entries_sort_by_hostname_then_match_then_age_then_name_then_rule() {
        let old = Some("2026-01-01T00:00:00Z");
        let new = Some("2026-06-01T00:00:00Z");
        let exact_host = key("www.acme.test", "/", new, "z", 1);
        let long_wildcard = key("*.www.acme.test", "/a/b", old, "a", 0);
        let wildcard_long_path = key("*.acme.test", "/a/b", new, "z", 1);
        let wildcard_short_path_old = key("*.acme.test", "/a", old, "z", 1);
        let wildcard_short_path_new = key("*.acme.test", "/a", new, "a", 1);
        let same_but_later_name = key("*.acme.test", "/a", new, "b", 0);
        let same_but_later_rule = key("*.acme.test", "/a", new, "b", 1);
        let no_timestamp = key("*.acme.test", "/a", None, "a", 0);
        let mut keys = vec![
            no_timestamp.clone(),
            same_but_later_rule.clone(),
            wildcard_short_path_new.clone(),
            exact_host.clone(),
            same_but_later_name.clone(),
            wildcard_long_path.clone(),
            long_wildcard.clone(),
            wildcard_short_path_old.clone(),
        ];
        keys.sort();
        assert_eq!(
            keys,
            [
                exact_host,
                long_wildcard,
                wildcard_long_path,
                wildcard_short_path_old,
                wildcard_short_path_new,
                same_but_later_name,
                same_but_later_rule,
                no_timestamp,
            ]
        );
    }
}
