//! Read-only indexes over an [`ObjectSet`] for the lookups the translator makes: Services, Secrets,
//! ConfigMaps and EndpointSlices by name, ReferenceGrants by namespace, routes by the namespace of the Gateways
//! they name, namespace labels, and which GatewayClasses are ours.

use super::TranslateSettings;
use crate::objects::ObjectSet;
use bulkhead_crds::{CONTROLLER_NAME, GATEWAY_CLASS_NAME};
use gateway_api::experimental::gateways::Gateway;
use gateway_api::experimental::tcproutes::TcpRoute;
use gateway_api::experimental::tlsroutes::TlsRoute;
use gateway_api::grpcroutes::GrpcRoute;
use gateway_api::httproutes::HttpRoute;
use gateway_api::referencegrants::ReferenceGrant;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// API group of the Gateway API.
pub(crate) const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// Label Kubernetes puts on an EndpointSlice naming its Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label Kubernetes puts on every Namespace, holding its name.
pub(crate) const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Namespace of an object (`""` when absent).
pub(crate) fn ns_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or_default()
}

/// Name of an object (`""` when absent).
pub(crate) fn name_of(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

/// Sort key "oldest first, then by name": objects without a creation timestamp come last.
pub(crate) fn age_key(meta: &ObjectMeta) -> (bool, Option<&Time>) {
    (
        meta.creation_timestamp.is_none(),
        meta.creation_timestamp.as_ref(),
    )
}

/// The four route kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum RouteKind {
    Http,
    Grpc,
    Tls,
    Tcp,
}

impl RouteKind {
    /// The Kubernetes kind.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Http => "HTTPRoute",
            Self::Grpc => "GRPCRoute",
            Self::Tls => "TLSRoute",
            Self::Tcp => "TCPRoute",
        }
    }

    /// The API version statuses are written with.
    pub(crate) fn api_version(self) -> &'static str {
        match self {
            Self::Http | Self::Grpc | Self::Tls => "gateway.networking.k8s.io/v1",
            Self::Tcp => "gateway.networking.k8s.io/v1alpha2",
        }
    }
}

/// A route object of any kind.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RouteObject<'a> {
    Http(&'a HttpRoute),
    Grpc(&'a GrpcRoute),
    Tls(&'a TlsRoute),
    Tcp(&'a TcpRoute),
}

impl<'a> RouteObject<'a> {
    pub(crate) fn kind(self) -> RouteKind {
        match self {
            Self::Http(_) => RouteKind::Http,
            Self::Grpc(_) => RouteKind::Grpc,
            Self::Tls(_) => RouteKind::Tls,
            Self::Tcp(_) => RouteKind::Tcp,
        }
    }

    pub(crate) fn meta(self) -> &'a ObjectMeta {
        match self {
            Self::Http(r) => &r.metadata,
            Self::Grpc(r) => &r.metadata,
            Self::Tls(r) => &r.metadata,
            Self::Tcp(r) => &r.metadata,
        }
    }

    /// The spec as JSON (the shape the Gateway API defines), for the route model and fingerprints.
    pub(crate) fn spec_json(self) -> Value {
        let v = match self {
            Self::Http(r) => serde_json::to_value(&r.spec),
            Self::Grpc(r) => serde_json::to_value(&r.spec),
            Self::Tls(r) => serde_json::to_value(&r.spec),
            Self::Tcp(r) => serde_json::to_value(&r.spec),
        };
        v.unwrap_or(Value::Null)
    }

    /// The namespaces of the parents this route names (the route's own when a parentRef has none).
    pub(crate) fn parent_namespaces(self) -> BTreeSet<String> {
        macro_rules! collect {
            ($r:expr) => {
                $r.spec
                    .parent_refs
                    .iter()
                    .flatten()
                    .map(|p| {
                        p.namespace
                            .clone()
                            .unwrap_or_else(|| ns_of(&$r.metadata).to_owned())
                    })
                    .collect()
            };
        }
        match self {
            Self::Http(r) => collect!(r),
            Self::Grpc(r) => collect!(r),
            Self::Tls(r) => collect!(r),
            Self::Tcp(r) => collect!(r),
        }
    }
}

/// namespace → name → value.
type ByName<'a, V> = BTreeMap<&'a str, BTreeMap<&'a str, V>>;

/// Indexes over one [`ObjectSet`].
pub(crate) struct World<'a> {
    pub(crate) objects: &'a ObjectSet,
    /// Namespaces that exist: a Namespace object, or any object living in it (see the module docs of
    /// [`crate::translator`]).
    pub(crate) existing_namespaces: BTreeSet<&'a str>,
    /// Names of the GatewayClasses Bulkhead serves.
    pub(crate) our_classes: BTreeSet<String>,
    namespace_labels: BTreeMap<&'a str, &'a BTreeMap<String, String>>,
    services: ByName<'a, &'a Service>,
    secrets: ByName<'a, &'a Secret>,
    config_maps: ByName<'a, &'a ConfigMap>,
    slices: ByName<'a, Vec<&'a EndpointSlice>>,
    grants: BTreeMap<&'a str, Vec<&'a ReferenceGrant>>,
    gateways: BTreeMap<&'a str, Vec<&'a Gateway>>,
    routes_into: BTreeMap<String, Vec<RouteObject<'a>>>,
    /// What the translation reads besides objects.
    pub(crate) settings: TranslateSettings,
}

impl<'a> World<'a> {
    pub(crate) fn new(objects: &'a ObjectSet) -> Self {
        let mut existing: BTreeSet<&str> = BTreeSet::new();
        for n in &objects.namespaces {
            existing.insert(name_of(&n.metadata));
        }
        let mut note = |m: &'a ObjectMeta| {
            if !ns_of(m).is_empty() {
                existing.insert(ns_of(m));
            }
        };
        objects.gateways.iter().for_each(|o| note(&o.metadata));
        objects.http_routes.iter().for_each(|o| note(&o.metadata));
        objects.grpc_routes.iter().for_each(|o| note(&o.metadata));
        objects.tls_routes.iter().for_each(|o| note(&o.metadata));
        objects.tcp_routes.iter().for_each(|o| note(&o.metadata));
        objects
            .reference_grants
            .iter()
            .for_each(|o| note(&o.metadata));
        objects.secrets.iter().for_each(|o| note(&o.metadata));
        objects.config_maps.iter().for_each(|o| note(&o.metadata));
        objects.listener_sets.iter().for_each(|o| note(&o.metadata));
        objects.services.iter().for_each(|o| note(&o.metadata));
        objects
            .endpoint_slices
            .iter()
            .for_each(|o| note(&o.metadata));
        Self::with_existing(objects, existing)
    }

    /// Indexes over a part of the cluster (see [`crate::index`]); `existing` is the set of
    /// namespaces that exist in the whole cluster (only the cluster-wide part reads it).
    pub(crate) fn with_existing(
        objects: &'a ObjectSet,
        existing_namespaces: BTreeSet<&'a str>,
    ) -> Self {
        let mut namespace_labels = BTreeMap::new();
        for n in &objects.namespaces {
            if let Some(labels) = &n.metadata.labels {
                namespace_labels.insert(name_of(&n.metadata), labels);
            }
        }

        let mut our_classes: BTreeSet<String> = objects
            .gateway_classes
            .iter()
            .filter(|c| c.spec.controller_name == CONTROLLER_NAME)
            .map(|c| name_of(&c.metadata).to_owned())
            .collect();
        let explicit_default = objects
            .gateway_classes
            .iter()
            .any(|c| name_of(&c.metadata) == GATEWAY_CLASS_NAME);
        if !explicit_default {
            our_classes.insert(GATEWAY_CLASS_NAME.to_owned());
        }

        let mut services: ByName<'a, &'a Service> = BTreeMap::new();
        for s in &objects.services {
            services
                .entry(ns_of(&s.metadata))
                .or_default()
                .insert(name_of(&s.metadata), s);
        }
        let mut secrets: ByName<'a, &'a Secret> = BTreeMap::new();
        for s in &objects.secrets {
            secrets
                .entry(ns_of(&s.metadata))
                .or_default()
                .insert(name_of(&s.metadata), s);
        }
        let mut config_maps: ByName<'a, &'a ConfigMap> = BTreeMap::new();
        for c in &objects.config_maps {
            config_maps
                .entry(ns_of(&c.metadata))
                .or_default()
                .insert(name_of(&c.metadata), c);
        }
        let mut slices: ByName<'a, Vec<&'a EndpointSlice>> = BTreeMap::new();
        for s in &objects.endpoint_slices {
            if let Some(svc) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            {
                slices
                    .entry(ns_of(&s.metadata))
                    .or_default()
                    .entry(svc.as_str())
                    .or_default()
                    .push(s);
            }
        }
        let mut grants: BTreeMap<&str, Vec<&ReferenceGrant>> = BTreeMap::new();
        for g in &objects.reference_grants {
            grants.entry(ns_of(&g.metadata)).or_default().push(g);
        }
        let mut gateways: BTreeMap<&str, Vec<&Gateway>> = BTreeMap::new();
        for g in &objects.gateways {
            gateways.entry(ns_of(&g.metadata)).or_default().push(g);
        }
        for list in gateways.values_mut() {
            list.sort_by(|a, b| {
                age_key(&a.metadata)
                    .cmp(&age_key(&b.metadata))
                    .then_with(|| name_of(&a.metadata).cmp(name_of(&b.metadata)))
            });
        }
        let mut routes_into: BTreeMap<String, Vec<RouteObject<'a>>> = BTreeMap::new();
        let all_routes = objects
            .http_routes
            .iter()
            .map(RouteObject::Http)
            .chain(objects.grpc_routes.iter().map(RouteObject::Grpc))
            .chain(objects.tls_routes.iter().map(RouteObject::Tls))
            .chain(objects.tcp_routes.iter().map(RouteObject::Tcp));
        for r in all_routes {
            for ns in r.parent_namespaces() {
                routes_into.entry(ns).or_default().push(r);
            }
        }
        for list in routes_into.values_mut() {
            list.sort_by(|a, b| {
                age_key(a.meta())
                    .cmp(&age_key(b.meta()))
                    .then_with(|| ns_of(a.meta()).cmp(ns_of(b.meta())))
                    .then_with(|| name_of(a.meta()).cmp(name_of(b.meta())))
                    .then_with(|| a.kind().cmp(&b.kind()))
            });
        }
        Self {
            objects,
            existing_namespaces,
            our_classes,
            namespace_labels,
            services,
            secrets,
            config_maps,
            slices,
            grants,
            gateways,
            routes_into,
            settings: TranslateSettings::default(),
        }
    }

    /// The same indexes, translated with `settings`.
    pub(crate) fn with_settings(mut self, settings: TranslateSettings) -> Self {
        self.settings = settings;
        self
    }

    pub(crate) fn service(&self, ns: &str, name: &str) -> Option<&'a Service> {
        self.services.get(ns).and_then(|m| m.get(name)).copied()
    }

    pub(crate) fn secret(&self, ns: &str, name: &str) -> Option<&'a Secret> {
        self.secrets.get(ns).and_then(|m| m.get(name)).copied()
    }

    pub(crate) fn config_map(&self, ns: &str, name: &str) -> Option<&'a ConfigMap> {
        self.config_maps.get(ns).and_then(|m| m.get(name)).copied()
    }

    /// EndpointSlices labelled for Service `ns/name`.
    pub(crate) fn slices_for(&self, ns: &str, name: &str) -> &[&'a EndpointSlice] {
        self.slices
            .get(ns)
            .and_then(|m| m.get(name))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// ReferenceGrants living in `ns`.
    pub(crate) fn grants_in(&self, ns: &str) -> &[&'a ReferenceGrant] {
        self.grants.get(ns).map(Vec::as_slice).unwrap_or_default()
    }

    /// Every Gateway in `ns` (whatever its class), oldest first.
    pub(crate) fn gateways_in(&self, ns: &str) -> &[&'a Gateway] {
        self.gateways.get(ns).map(Vec::as_slice).unwrap_or_default()
    }

    /// Every route with a parentRef into `ns`, oldest first (then namespace, name, kind).
    pub(crate) fn routes_into(&self, ns: &str) -> &[RouteObject<'a>] {
        self.routes_into
            .get(ns)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Whether Bulkhead serves this Gateway's class.
    pub(crate) fn is_ours(&self, gateway: &Gateway) -> bool {
        self.our_classes.contains(&gateway.spec.gateway_class_name)
    }

    /// The labels of namespace `ns`, including the `kubernetes.io/metadata.name` label Kubernetes sets.
    pub(crate) fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        let mut labels = self
            .namespace_labels
            .get(ns)
            .map(|l| (*l).clone())
            .unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.to_owned(), ns.to_owned());
        labels
    }

    /// Whether a ReferenceGrant in `to_ns` lets `from_kind` objects of `from_ns` refer to the
    /// `to_group`/`to_kind` object `to_name`.
    pub(crate) fn grant_permits(
        &self,
        from: (&str, &str, &str),
        to: (&str, &str, &str, &str),
    ) -> bool {
        let (from_group, from_kind, from_ns) = from;
        let (to_group, to_kind, to_ns, to_name) = to;
        self.grants_in(to_ns).iter().any(|g| {
            g.spec
                .from
                .iter()
                .any(|f| f.group == from_group && f.kind == from_kind && f.namespace == from_ns)
                && g.spec.to.iter().any(|t| {
                    t.group == to_group
                        && t.kind == to_kind
                        && t.name
                            .as_deref()
                            .is_none_or(|n| n.is_empty() || n == to_name)
                })
        })
    }
}
