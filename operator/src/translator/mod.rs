//! The translator: a pure function from objects to snapshots and statuses, in the manner of Envoy
//! Gateway's translator. Same input, same output (every list is sorted); nothing is read from the
//! clock or the environment, so every condition's `lastTransitionTime` is the Unix epoch and
//! callers stamp real times with [`crate::status::stamp_transitions`].
//!
//! # Rules (Gateway API v1, with Bulkhead's tenancy)
//!
//! **Tenants.** A `Tenant` serves `spec.namespace` under `spec.hostnames` (parsed with
//! [`bulkhead_hostmatch::HostPattern`]; an invalid entry is dropped and reported as
//! `Accepted=False`/`InvalidHostname` naming `spec.hostnames[i]`, the other entries are still
//! served). Conflicts follow the Gateway API rule "oldest wins": tenants are ordered by
//! `creationTimestamp` (objects without one last), then name; a pattern already claimed by an older
//! tenant is dropped (`HostnameConflict`), and so is a namespace already onboarded by an older tenant
//! (`NamespaceConflict`: the younger tenant is not served at all). A namespace exists when a
//! `Namespace` object names it or any object lives in it (standalone manifests rarely carry
//! `Namespace` objects); a tenant whose namespace does not exist is not served (`NamespaceNotFound`)
//! but keeps its claim on its hostnames. `Ready` stays `False`/`Pending` until the tenant's routers
//! acknowledge the snapshot ([`crate::status::apply_acks`]).
//!
//! **Overlapping grants.** Two served tenants may hold nested patterns (A `*.example.test`, B
//! `shop.example.test`): the edge sends a name to the most specific grant, so B's patterns that lie
//! strictly inside one of A's go into A's snapshot as `foreign_hostnames` (names only, never B's
//! certificates or routes) and A's router answers 421 for them, on TLS and plain connections alike.
//! Both Tenants get `HostnamesOverlap=True`/`OverlappingGrant` naming the other tenant and the
//! names (the condition is absent when a tenant overlaps no one). A tenant that is not served
//! takes no name away.
//!
//! **Edge snapshot.** Every owned pattern of every served tenant → that tenant; every served tenant →
//! its router endpoints (empty when unknown).
//!
//! **Gateways.** Gateways whose class is `bulkhead` (implicit unless a GatewayClass object of that
//! name says otherwise) or any GatewayClass naming `bulkhead.dev/gateway-controller` are ours; others
//! get no status from us. Ours outside a served tenant's namespace are `Accepted=False`
//! (`NamespaceNotOnboarded`). A route gets a `status.parents[]` entry only for parentRefs naming one
//! of our Gateways in a served tenant's namespace (a parentRef to a Gateway that does not exist, or
//! to one outside every tenant, might belong to another controller, so it is left alone). Listener protocol decides the edge port: `HTTP` → HTTP side; `HTTPS`
//! (TLS mode `Terminate`), `TLS` mode `Passthrough` and `TLS` mode `Terminate` → TLS side; the port must
//! be one the edge receives on that side ([`TranslateSettings`]: 80 for HTTP, 443 for TLS by
//! default), else `Accepted=False`/`PortUnavailable` (the port is kept for redirects); `TCP` (the edge cannot tell plain TCP
//! connections apart), `UDP` and `HTTPS`/`Passthrough` → `Accepted=False`/`UnsupportedProtocol`. A listener hostname must lie within one of the tenant's patterns, else
//! `Accepted=False`/`HostnameNotPermitted`; no hostname means all of the tenant's patterns. An HTTPS
//! or `TLS`/`Terminate` listener serves the first valid `certificateRef` (a `kubernetes.io/tls` Secret whose `tls.crt` and
//! `tls.key` load in rustls exactly as the router will load them; another namespace needs a
//! ReferenceGrant); invalid references give `ResolvedRefs=False` (`InvalidCertificateRef`,
//! `RefNotPermitted`), and a listener without a valid certificate is not programmed. All Gateways of
//! a tenant share one router, so two listeners serving the same pattern on the same edge port
//! conflict (`Conflicted=True`, oldest Gateway then first listener wins). `Programmed` waits for the
//! routers' acknowledgement.
//!
//! **Routes.** A parentRef attaches to the listeners of the named Gateway selected by `sectionName`
//! and `port`, when the listener allows the route's kind and namespace (`allowedRoutes`, default
//! `Same`; `All` and label `Selector` supported). Route hostnames are intersected with the listener's
//! ([`bulkhead_hostmatch::intersect`]); a route without hostnames takes the listener's; hostnames with
//! no intersection are not served (named in the `Accepted` message) and when nothing is left the
//! parent is `Accepted=False`/`NoMatchingListenerHostname`. Since listener hostnames lie within the
//! tenant's, route hostnames outside the tenant's are never served. A request goes to the listener
//! with the most specific hostname, so a route hostname inside a more specific listener's hostname is
//! served through that listener only. Each rule × match becomes a [`RouteEntry`] of the virtual host
//! (edge port, pattern), sorted by Gateway API precedence: Exact path, then RegularExpression
//! (implementation-specific: as in Envoy Gateway, before prefixes, so that a `PathPrefix: /`
//! fallback does not shadow it; longest first; GRPCRoutes keep theirs after prefixes), then
//! PathPrefix (longest first); then a method match; then more header matches; then more query matches; then the oldest route; then
//! `namespace/name`; then rule and match order. A value the data plane cannot serve (invalid regular
//! expression, header name, path, duration; `ExtensionRef`/`CORS` filters) makes the route
//! `Accepted=False`/`UnsupportedValue` naming the field, and it is skipped; other routes are
//! unaffected. Backend references resolve to Services (another namespace needs a ReferenceGrant:
//! `RefNotPermitted`; missing Service or port: `BackendNotFound`; other kinds: `InvalidKind`), and an
//! unresolved one becomes `WeightedBackend { backend: None }`, answered with 500 for its share.
//! Endpoints are the ready addresses of the EndpointSlices labelled `kubernetes.io/service-name`,
//! at the slice port named like the Service port. GRPCRoutes become path matches on
//! `/service/method` with h2c backends. TLSRoutes attach to TLS passthrough listeners (raw copy,
//! [`PassthroughRoute`]); TCPRoutes and TLSRoutes attach to `TLS`/`Terminate` listeners (the router
//! terminates TLS with the listener's certificate and copies the plaintext to the backend,
//! [`TlsTerminateTcp`]; a TCPRoute has no hostnames, so it takes the listener's). A hostname
//! already taken by an older TLSRoute or TCPRoute stays with it (`HostnameConflict` when nothing is
//! left). [`RouteEntry`]s with no
//! `backendRefs` at all keep an empty backend list.
//!
//! **ListenerSets** ([`listener_sets`]): a ListenerSet whose parent Gateway admits its namespace
//! (`spec.allowedListeners`) adds its listeners to the tenant owning that namespace, validated as
//! the tenant's Gateway listeners (after them, oldest ListenerSet first; the parent's own listeners
//! win conflicts); refused ones are `Accepted=False`/`NotAllowed`. Routes attach with parentRef
//! kind `ListenerSet`.
//! **BackendTLSPolicy** (see `backend_tls.rs`): a Service port targeted by a valid policy of its
//! namespace gets `Backend::tls` (SNI, CA bundle or system store, subjectAltNames); a port whose
//! winning policy is invalid is left out of the snapshot (its share answered 500, the route not
//! blamed); TLSRoute and TCPRoute backends never get TLS origination.
//!
//! Client certificate validation (`spec.tls.frontend`, the `perPort` entry of an HTTPS listener's
//! port, else `default`): its `caCertificateRefs` resolve to the `ca.crt` of ConfigMaps (another
//! namespace needs a ReferenceGrant: `RefNotPermitted`; another kind: `InvalidCACertificateKind`;
//! missing ConfigMap or key, unusable PEM: `InvalidCACertificateRef`), and the bundle of the valid
//! ones is carried per listener (`TenantSnapshot::client_validation`). A listener whose references
//! are all invalid is `Accepted=False`/`NoValidCACertificate` and not served (fail closed); an
//! `AllowInsecureFallback` listener sets `InsecureFrontendValidationMode=True` on its Gateway.
//!
//! [`RouteEntry`]: bulkhead_crds::snapshot::RouteEntry
//! [`PassthroughRoute`]: bulkhead_crds::snapshot::PassthroughRoute
//! [`TlsTerminateTcp`]: bulkhead_crds::snapshot::TlsTerminateTcp

mod backend_tls;
pub(crate) mod fingerprint;
mod frontend;
pub(crate) mod global;
pub(crate) mod listener_sets;
mod listeners;
mod model;
mod refs;
pub mod routes;
pub(crate) mod tenant;
pub(crate) mod world;

use crate::objects::ObjectSet;
use crate::status::{ObjectMeta, ObjectStatus};
use bulkhead_crds::snapshot::{EdgeSnapshot, RouterEndpoints, TenantSnapshot};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use tenant::{RouteParentFragment, TenantOutput};
use world::World;

/// What the translator reads.
#[derive(Debug, Clone, Copy)]
pub struct TranslateInput<'a> {
    /// Every object.
    pub objects: &'a ObjectSet,
    /// Where each tenant's routers listen (tenant name → endpoints), for the edge snapshot.
    pub router_endpoints: &'a BTreeMap<String, RouterEndpoints>,
}

/// What the translator produces.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Translation {
    /// The edge snapshot (version 0, sealed).
    pub edge: EdgeSnapshot,
    /// One snapshot per served tenant (version 0, sealed).
    pub tenants: BTreeMap<String, TenantSnapshot>,
    /// The status of every object we own a status for, sorted by kind, namespace, name.
    pub statuses: Vec<ObjectStatus>,
}

/// Gateway listener ports of protocol `HTTP` served by default: 80, the port of the edge Service
/// that leads to the edge's HTTP listener. Override: `--listener-http-ports`.
pub const DEFAULT_HTTP_LISTENER_PORTS: &[u16] = &[80];

/// Gateway listener ports of protocol `HTTPS` and `TLS` served by default: 443, the port of the
/// edge Service that leads to the edge's TLS listener. Override: `--listener-tls-ports`.
pub const DEFAULT_TLS_LISTENER_PORTS: &[u16] = &[443];

/// What a translation reads besides objects, fixed for the life of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateSettings {
    /// Listener ports of protocol `HTTP` the edge receives (on its HTTP listener); a listener on
    /// another port is `Accepted=False`/`PortUnavailable`. Empty: every port.
    pub http_ports: BTreeSet<u16>,
    /// Listener ports of protocol `HTTPS` and `TLS` the edge receives (on its TLS listener); a
    /// listener on another port is `Accepted=False`/`PortUnavailable`. Empty: every port.
    pub tls_ports: BTreeSet<u16>,
}

impl TranslateSettings {
    /// Every listener port served by its protocol (HTTP on the edge's HTTP listener, HTTPS and TLS
    /// on its TLS listener): `bulkhead standalone`'s fixed contract, where one process's two listen
    /// addresses stand for the edge's every port.
    pub fn every_port() -> Self {
        Self {
            http_ports: BTreeSet::new(),
            tls_ports: BTreeSet::new(),
        }
    }
}

impl Default for TranslateSettings {
    fn default() -> Self {
        Self {
            http_ports: DEFAULT_HTTP_LISTENER_PORTS.iter().copied().collect(),
            tls_ports: DEFAULT_TLS_LISTENER_PORTS.iter().copied().collect(),
        }
    }
}

/// Translates objects into snapshots and statuses, with the default [`TranslateSettings`]. Pure
/// and deterministic.
pub fn translate(input: &TranslateInput<'_>) -> Translation {
    translate_with(input, &TranslateSettings::default())
}

/// Translates objects into snapshots and statuses with `settings`. Pure and deterministic.
pub fn translate_with(input: &TranslateInput<'_>, settings: &TranslateSettings) -> Translation {
    let world = World::new(input.objects).with_settings(settings.clone());
    let global = global::resolve(&world);
    let outputs: BTreeMap<String, TenantOutput> = global
        .plans
        .values()
        .filter(|p| p.active)
        .map(|p| (p.name.clone(), tenant::translate(&world, p)))
        .collect();
    let statuses = assemble_statuses(&global.statuses, outputs.values());
    Translation {
        edge: global::edge_snapshot(&global.plans, input.router_endpoints),
        tenants: outputs
            .into_iter()
            .map(|(name, out)| (name, out.snapshot))
            .collect(),
        statuses,
    }
}

/// Merges the global statuses and every tenant's Gateway and route statuses into one sorted list.
pub(crate) fn assemble_statuses<'o>(
    global: &[ObjectStatus],
    outputs: impl Iterator<Item = &'o TenantOutput>,
) -> Vec<ObjectStatus> {
    let mut statuses: Vec<ObjectStatus> = global.to_vec();
    let mut parents: BTreeMap<(world::RouteKind, String, String), Vec<&RouteParentFragment>> =
        BTreeMap::new();
    for out in outputs {
        statuses.extend(out.gateway_statuses.iter().cloned());
        for f in &out.route_parents {
            parents
                .entry((f.kind, f.namespace.clone(), f.name.clone()))
                .or_default()
                .push(f);
        }
    }
    for ((kind, namespace, name), mut list) in parents {
        list.sort_by_key(|f| f.index);
        let parents: Vec<Value> = list.into_iter().map(|f| f.status.clone()).collect();
        statuses.push(ObjectStatus {
            api_version: kind.api_version().to_owned(),
            kind: kind.as_str().to_owned(),
            metadata: ObjectMeta {
                namespace: Some(namespace),
                name,
            },
            status: serde_json::json!({ "parents": parents }),
            tenant: None,
        });
    }
    statuses.sort_by(|a, b| {
        (a.kind.as_str(), &a.metadata.namespace, &a.metadata.name).cmp(&(
            b.kind.as_str(),
            &b.metadata.namespace,
            &b.metadata.name,
        ))
    });
    statuses
}
