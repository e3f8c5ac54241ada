//! The objects the control plane reads, typed: parsing multi-document YAML into [`Object`]s and
//! collecting them into an [`ObjectSet`].
//!
//! Accepted kinds and API versions (anything else is reported as a [`LoadError`] and skipped):
//!
//! | kind | apiVersion |
//! |---|---|
//! | `Tenant` | `bulkhead.dev/v1alpha1` |
//! | `Namespace`, `Secret`, `Service`, `ConfigMap` | `v1` |
//! | `EndpointSlice` | `discovery.k8s.io/v1` |
//! | `GatewayClass`, `Gateway`, `HTTPRoute`, `ReferenceGrant` | `gateway.networking.k8s.io/v1` or `v1beta1` |
//! | `GRPCRoute` | `gateway.networking.k8s.io/v1` |
//! | `TLSRoute` | `gateway.networking.k8s.io/v1`, `v1alpha3` or `v1alpha2` |
//! | `TCPRoute` | `gateway.networking.k8s.io/v1alpha2` |
//! | `ListenerSet` | `gateway.networking.k8s.io/v1` |
//! | `BackendTLSPolicy` | `gateway.networking.k8s.io/v1` or `v1alpha3` |
//!
//! A `v1` `List` document is unpacked into its `items`. A namespaced object without
//! `metadata.namespace` lands in `default`, as `kubectl apply` would put it.

use crate::index::Kind;
use bulkhead_crds::Tenant;
use gateway_api::backendtlspolicies::BackendTlsPolicy;
use gateway_api::experimental::gateways::Gateway;
use gateway_api::experimental::tcproutes::TcpRoute;
use gateway_api::experimental::tlsroutes::TlsRoute;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::grpcroutes::GrpcRoute;
use gateway_api::httproutes::HttpRoute;
use gateway_api::listenersets::ListenerSet;
use gateway_api::referencegrants::ReferenceGrant;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Annotation set on a cached route (never written to the cluster) whose `status.parents` holds
/// an entry of Bulkhead's: if no Gateway of ours accepts the route any more, the entry must be
/// removed.
pub const HAS_OUR_PARENTS_ANNOTATION: &str = "bulkhead.dev/has-status-parents";

/// Namespace given to namespaced objects that name none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// One typed object.
#[derive(Debug, Clone)]
pub enum Object {
    /// `bulkhead.dev/v1alpha1` `Tenant`.
    Tenant(Box<Tenant>),
    /// `v1` `Namespace`.
    Namespace(Box<Namespace>),
    /// `GatewayClass`.
    GatewayClass(Box<GatewayClass>),
    /// `Gateway`.
    Gateway(Box<Gateway>),
    /// `HTTPRoute`.
    HttpRoute(Box<HttpRoute>),
    /// `GRPCRoute`.
    GrpcRoute(Box<GrpcRoute>),
    /// `TLSRoute`.
    TlsRoute(Box<TlsRoute>),
    /// `TCPRoute`.
    TcpRoute(Box<TcpRoute>),
    /// `ReferenceGrant`.
    ReferenceGrant(Box<ReferenceGrant>),
    /// `v1` `Secret`.
    Secret(Box<Secret>),
    /// `v1` `Service`.
    Service(Box<Service>),
    /// `discovery.k8s.io/v1` `EndpointSlice`.
    EndpointSlice(Box<EndpointSlice>),
    /// `v1` `ConfigMap` (CA certificate bundles, key `ca.crt`).
    ConfigMap(Box<ConfigMap>),
    /// `ListenerSet`: listeners a namespace adds to a Gateway that allows it.
    ListenerSet(Box<ListenerSet>),
    /// `BackendTLSPolicy`.
    BackendTlsPolicy(Box<BackendTlsPolicy>),
}

/// Identity of an object: kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The object's kind.
    pub kind: Kind,
    /// Namespace, `""` for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

impl Object {
    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Self::Tenant(o) => &o.metadata,
            Self::Namespace(o) => &o.metadata,
            Self::GatewayClass(o) => &o.metadata,
            Self::Gateway(o) => &o.metadata,
            Self::HttpRoute(o) => &o.metadata,
            Self::GrpcRoute(o) => &o.metadata,
            Self::TlsRoute(o) => &o.metadata,
            Self::TcpRoute(o) => &o.metadata,
            Self::ReferenceGrant(o) => &o.metadata,
            Self::Secret(o) => &o.metadata,
            Self::Service(o) => &o.metadata,
            Self::EndpointSlice(o) => &o.metadata,
            Self::ConfigMap(o) => &o.metadata,
            Self::ListenerSet(o) => &o.metadata,
            Self::BackendTlsPolicy(o) => &o.metadata,
        }
    }

    /// The Kubernetes kind (`HTTPRoute`, `Secret`, ...).
    pub fn kind(&self) -> Kind {
        match self {
            Self::Tenant(_) => Kind::Tenant,
            Self::Namespace(_) => Kind::Namespace,
            Self::GatewayClass(_) => Kind::GatewayClass,
            Self::Gateway(_) => Kind::Gateway,
            Self::HttpRoute(_) => Kind::HttpRoute,
            Self::GrpcRoute(_) => Kind::GrpcRoute,
            Self::TlsRoute(_) => Kind::TlsRoute,
            Self::TcpRoute(_) => Kind::TcpRoute,
            Self::ReferenceGrant(_) => Kind::ReferenceGrant,
            Self::Secret(_) => Kind::Secret,
            Self::Service(_) => Kind::Service,
            Self::EndpointSlice(_) => Kind::EndpointSlice,
            Self::ConfigMap(_) => Kind::ConfigMap,
            Self::ListenerSet(_) => Kind::ListenerSet,
            Self::BackendTlsPolicy(_) => Kind::BackendTlsPolicy,
        }
    }

    /// The object's identity.
    pub fn key(&self) -> ObjectKey {
        let meta = self.metadata();
        ObjectKey {
            kind: self.kind(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

/// Why a document was not loaded. `Display` gives one line naming the file, the object and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The file the document came from.
    pub file: PathBuf,
    /// 1-based position of the YAML document in the file (0: the file as a whole).
    pub document: usize,
    /// The document's `kind`, when it could be read.
    pub kind: Option<String>,
    /// `namespace/name` (or `name` for cluster-scoped kinds), when it could be read.
    pub name: Option<String>,
    /// Path of the offending field (`spec.listeners[0].port`), when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
    /// Whether the file is not valid YAML at all (the file provider then keeps its previous objects).
    pub syntax: bool,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.document > 0 {
            write!(f, ": document {}", self.document)?;
        }
        match (&self.kind, &self.name) {
            (Some(k), Some(n)) => write!(f, " ({k} {n})")?,
            (Some(k), None) => write!(f, " ({k})")?,
            (None, Some(n)) => write!(f, " ({n})")?,
            (None, None) => {}
        }
        if let Some(field) = &self.field {
            write!(f, ": field {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for LoadError {}

/// Every object the translator reads, by kind, each list sorted by namespace then name, without
/// duplicates (the first occurrence of a kind/namespace/name wins).
#[derive(Debug, Clone, Default)]
pub struct ObjectSet {
    /// `Tenant`s (cluster-scoped).
    pub tenants: Vec<Tenant>,
    /// `Namespace`s (optional in standalone mode).
    pub namespaces: Vec<Namespace>,
    /// `GatewayClass`es (optional in standalone mode: `bulkhead` exists implicitly).
    pub gateway_classes: Vec<GatewayClass>,
    /// `Gateway`s.
    pub gateways: Vec<Gateway>,
    /// `HTTPRoute`s.
    pub http_routes: Vec<HttpRoute>,
    /// `GRPCRoute`s.
    pub grpc_routes: Vec<GrpcRoute>,
    /// `TLSRoute`s.
    pub tls_routes: Vec<TlsRoute>,
    /// `TCPRoute`s.
    pub tcp_routes: Vec<TcpRoute>,
    /// `ReferenceGrant`s.
    pub reference_grants: Vec<ReferenceGrant>,
    /// `Secret`s.
    pub secrets: Vec<Secret>,
    /// `Service`s.
    pub services: Vec<Service>,
    /// `EndpointSlice`s.
    pub endpoint_slices: Vec<EndpointSlice>,
    /// `ConfigMap`s.
    pub config_maps: Vec<ConfigMap>,
    /// `ListenerSet`s.
    pub listener_sets: Vec<ListenerSet>,
    /// `BackendTLSPolicy`s.
    pub backend_tls_policies: Vec<BackendTlsPolicy>,
}

impl ObjectSet {
    /// Collects objects; later duplicates of a kind/namespace/name are dropped.
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let mut set = Self::default();
        let mut seen = BTreeSet::new();
        for object in objects {
            if !seen.insert(object.key()) {
                continue;
            }
            set.push(object);
        }
        set.sort();
        set
    }

    fn push(&mut self, object: Object) {
        match object {
            Object::Tenant(o) => self.tenants.push(*o),
            Object::Namespace(o) => self.namespaces.push(*o),
            Object::GatewayClass(o) => self.gateway_classes.push(*o),
            Object::Gateway(o) => self.gateways.push(*o),
            Object::HttpRoute(o) => self.http_routes.push(*o),
            Object::GrpcRoute(o) => self.grpc_routes.push(*o),
            Object::TlsRoute(o) => self.tls_routes.push(*o),
            Object::TcpRoute(o) => self.tcp_routes.push(*o),
            Object::ReferenceGrant(o) => self.reference_grants.push(*o),
            Object::Secret(o) => self.secrets.push(*o),
            Object::Service(o) => self.services.push(*o),
            Object::EndpointSlice(o) => self.endpoint_slices.push(*o),
            Object::ConfigMap(o) => self.config_maps.push(*o),
            Object::ListenerSet(o) => self.listener_sets.push(*o),
            Object::BackendTlsPolicy(o) => self.backend_tls_policies.push(*o),
        }
    }

    fn sort(&mut self) {
        fn key(m: &ObjectMeta) -> (String, String) {
            (
                m.namespace.clone().unwrap_or_default(),
                m.name.clone().unwrap_or_default(),
            )
        }
        self.tenants.sort_by_key(|o| key(&o.metadata));
        self.namespaces.sort_by_key(|o| key(&o.metadata));
        self.gateway_classes.sort_by_key(|o| key(&o.metadata));
        self.gateways.sort_by_key(|o| key(&o.metadata));
        self.http_routes.sort_by_key(|o| key(&o.metadata));
        self.grpc_routes.sort_by_key(|o| key(&o.metadata));
        self.tls_routes.sort_by_key(|o| key(&o.metadata));
        self.tcp_routes.sort_by_key(|o| key(&o.metadata));
        self.reference_grants.sort_by_key(|o| key(&o.metadata));
        self.secrets.sort_by_key(|o| key(&o.metadata));
        self.services.sort_by_key(|o| key(&o.metadata));
        self.endpoint_slices.sort_by_key(|o| key(&o.metadata));
        self.config_maps.sort_by_key(|o| key(&o.metadata));
        self.listener_sets.sort_by_key(|o| key(&o.metadata));
        self.backend_tls_policies.sort_by_key(|o| key(&o.metadata));
    }

    /// Every object of the set, by kind.
    pub fn into_objects(self) -> impl Iterator<Item = Object> {
        self.tenants
            .into_iter()
            .map(|o| Object::Tenant(Box::new(o)))
            .chain(
                self.namespaces
                    .into_iter()
                    .map(|o| Object::Namespace(Box::new(o))),
            )
            .chain(
                self.gateway_classes
                    .into_iter()
                    .map(|o| Object::GatewayClass(Box::new(o))),
            )
            .chain(
                self.gateways
                    .into_iter()
                    .map(|o| Object::Gateway(Box::new(o))),
            )
            .chain(
                self.http_routes
                    .into_iter()
                    .map(|o| Object::HttpRoute(Box::new(o))),
            )
            .chain(
                self.grpc_routes
                    .into_iter()
                    .map(|o| Object::GrpcRoute(Box::new(o))),
            )
            .chain(
                self.tls_routes
                    .into_iter()
                    .map(|o| Object::TlsRoute(Box::new(o))),
            )
            .chain(
                self.tcp_routes
                    .into_iter()
                    .map(|o| Object::TcpRoute(Box::new(o))),
            )
            .chain(
                self.reference_grants
                    .into_iter()
                    .map(|o| Object::ReferenceGrant(Box::new(o))),
            )
            .chain(
                self.secrets
                    .into_iter()
                    .map(|o| Object::Secret(Box::new(o))),
            )
            .chain(
                self.services
                    .into_iter()
                    .map(|o| Object::Service(Box::new(o))),
            )
            .chain(
                self.endpoint_slices
                    .into_iter()
                    .map(|o| Object::EndpointSlice(Box::new(o))),
            )
            .chain(
                self.config_maps
                    .into_iter()
                    .map(|o| Object::ConfigMap(Box::new(o))),
            )
            .chain(
                self.listener_sets
                    .into_iter()
                    .map(|o| Object::ListenerSet(Box::new(o))),
            )
            .chain(
                self.backend_tls_policies
                    .into_iter()
                    .map(|o| Object::BackendTlsPolicy(Box::new(o))),
            )
    }

    /// Number of objects in the set.
    pub fn len(&self) -> usize {
        self.tenants.len()
            + self.namespaces.len()
            + self.gateway_classes.len()
            + self.gateways.len()
            + self.http_routes.len()
            + self.grpc_routes.len()
            + self.tls_routes.len()
            + self.tcp_routes.len()
            + self.reference_grants.len()
            + self.secrets.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.config_maps.len()
            + self.listener_sets.len()
            + self.backend_tls_policies.len()
    }

    /// Whether the set holds no object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A kind this module reads: its accepted API versions and whether it lives in a namespace.
struct KindSpec {
    kind: &'static str,
    api_versions: &'static [&'static str],
    namespaced: bool,
}

const GATEWAY_V1: &[&str] = &[
    "gateway.networking.k8s.io/v1",
    "gateway.networking.k8s.io/v1beta1",
];

const KINDS: &[KindSpec] = &[
    KindSpec {
        kind: "Tenant",
        api_versions: &["bulkhead.dev/v1alpha1"],
        namespaced: false,
    },
    KindSpec {
        kind: "Namespace",
        api_versions: &["v1"],
        namespaced: false,
    },
    KindSpec {
        kind: "GatewayClass",
        api_versions: GATEWAY_V1,
        namespaced: false,
    },
    KindSpec {
        kind: "Gateway",
        api_versions: GATEWAY_V1,
        namespaced: true,
    },
    KindSpec {
        kind: "HTTPRoute",
        api_versions: GATEWAY_V1,
        namespaced: true,
    },
    KindSpec {
        kind: "GRPCRoute",
        api_versions: &["gateway.networking.k8s.io/v1"],
        namespaced: true,
    },
    KindSpec {
        kind: "TLSRoute",
        api_versions: &[
            "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1alpha3",
            "gateway.networking.k8s.io/v1alpha2",
        ],
        namespaced: true,
    },
    KindSpec {
        kind: "TCPRoute",
        api_versions: &["gateway.networking.k8s.io/v1alpha2"],
        namespaced: true,
    },
    KindSpec {
        kind: "ReferenceGrant",
        api_versions: GATEWAY_V1,
        namespaced: true,
    },
    KindSpec {
        kind: "Secret",
        api_versions: &["v1"],
        namespaced: true,
    },
    KindSpec {
        kind: "Service",
        api_versions: &["v1"],
        namespaced: true,
    },
    KindSpec {
        kind: "EndpointSlice",
        api_versions: &["discovery.k8s.io/v1"],
        namespaced: true,
    },
    KindSpec {
        kind: "ConfigMap",
        api_versions: &["v1"],
        namespaced: true,
    },
    KindSpec {
        kind: "ListenerSet",
        api_versions: &["gateway.networking.k8s.io/v1"],
        namespaced: true,
    },
    KindSpec {
        kind: "BackendTLSPolicy",
        api_versions: &[
            "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1alpha3",
        ],
        namespaced: true,
    },
];

/// Which object a status belongs to: apiVersion, kind, namespace (`""` if cluster-scoped), name.
pub type StatusKey = (String, String, String, String);

/// `status` of `kind` as a watcher reads it back once the API server stored it: through the
/// kind's typed status, so that a status rendered by the translator and one observed on an object
/// compare equal when they say the same. `None` when `kind` is not one whose status the operator
/// writes, or `status` does not parse as its status.
pub fn typed_status(kind: &str, status: &Value) -> Option<Value> {
    fn through<S: serde::Serialize + DeserializeOwned>(status: &Value) -> Option<Value> {
        let typed: S = serde_json::from_value(status.clone()).ok()?;
        serde_json::to_value(typed).ok()
    }
    use gateway_api::experimental::tcproutes::TcpRouteStatus;
    use gateway_api::experimental::tlsroutes::TlsRouteStatus;
    use gateway_api::gatewayclasses::GatewayClassStatus;
    use gateway_api::gateways::GatewayStatus;
    use gateway_api::grpcroutes::GrpcRouteStatus;
    use gateway_api::httproutes::HttpRouteStatus;
    use gateway_api::listenersets::ListenerSetStatus;
    match kind {
        "Tenant" => through::<bulkhead_crds::TenantStatus>(status),
        "GatewayClass" => through::<GatewayClassStatus>(status),
        "Gateway" => through::<GatewayStatus>(status),
        "HTTPRoute" => through::<HttpRouteStatus>(status),
        "GRPCRoute" => through::<GrpcRouteStatus>(status),
        "TLSRoute" => through::<TlsRouteStatus>(status),
        "TCPRoute" => through::<TcpRouteStatus>(status),
        "ListenerSet" => through::<ListenerSetStatus>(status),
        "BackendTLSPolicy" => {
            through::<gateway_api::backendtlspolicies::BackendTlsPolicyStatus>(status)
        }
        _ => None,
    }
}

/// Parses a multi-document YAML text. Documents of unknown kinds and invalid objects are reported
/// and skipped; the others are returned. A YAML syntax error ends the file (reported with
/// [`LoadError::syntax`] set); the documents before it are returned.
pub fn parse_documents(file: &Path, text: &str) -> (Vec<Object>, Vec<LoadError>) {
    let (objects, errors) = parse_documents_positioned(file, text);
    (objects.into_iter().map(|(_, o)| o).collect(), errors)
}

/// Like [`parse_documents`], with each object's 1-based document position.
pub fn parse_documents_positioned(
    file: &Path,
    text: &str,
) -> (Vec<(usize, Object)>, Vec<LoadError>) {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let position = index + 1;
        let error = |message: String| LoadError {
            file: file.to_owned(),
            document: position,
            kind: None,
            name: None,
            field: None,
            message,
            syntax: false,
        };
        let yaml = match serde_yaml::Value::deserialize(document) {
            Ok(v) => v,
            Err(e) => {
                errors.push(LoadError {
                    syntax: true,
                    ..error(format!("invalid YAML: {e}"))
                });
                break;
            }
        };
        if yaml.is_null() {
            continue;
        }
        let json = match serde_json::to_value(&yaml) {
            Ok(v) => v,
            Err(e) => {
                errors.push(error(format!(
                    "unsupported YAML (keys must be strings): {e}"
                )));
                continue;
            }
        };
        if is_list(&json) {
            let items = match json.get("items") {
                Some(Value::Array(items)) => items.clone(),
                Some(Value::Null) | None => Vec::new(),
                Some(_) => {
                    errors.push(LoadError {
                        field: Some("items".into()),
                        ..error("a List's items must be a sequence".into())
                    });
                    continue;
                }
            };
            for (i, item) in items.into_iter().enumerate() {
                match parse_object(item) {
                    Ok(o) => objects.push((position, o)),
                    Err(mut e) => {
                        e.field = Some(match e.field {
                            Some(f) => format!("items[{i}].{f}"),
                            None => format!("items[{i}]"),
                        });
                        errors.push(e.into_load_error(file, position));
                    }
                }
            }
            continue;
        }
        match parse_object(json) {
            Ok(o) => objects.push((position, o)),
            Err(e) => errors.push(e.into_load_error(file, position)),
        }
    }
    (objects, errors)
}

fn is_list(json: &Value) -> bool {
    json.get("apiVersion").and_then(Value::as_str) == Some("v1")
        && json.get("kind").and_then(Value::as_str) == Some("List")
}

/// A document-level error before the file and position are known.
struct ObjectError {
    kind: Option<String>,
    name: Option<String>,
    field: Option<String>,
    message: String,
}

impl ObjectError {
    fn into_load_error(self, file: &Path, document: usize) -> LoadError {
        LoadError {
            file: file.to_owned(),
            document,
            kind: self.kind,
            name: self.name,
            field: self.field,
            message: self.message,
            syntax: false,
        }
    }
}

impl Object {
    /// The status the operator writes on this object, as the object carries it (`status: None`
    /// when it carries none, or, for a route, no entry of Bulkhead's), in the form
    /// [`typed_status`] gives; `None` for kinds whose status the operator does not write and for
    /// GatewayClasses of other controllers.
    pub fn owned_status(&self) -> Option<(StatusKey, Option<Value>)> {
        use bulkhead_crds::CONTROLLER_NAME;
        use kube::Resource;
        fn key_of<K: Resource<DynamicType = ()>>(o: &K) -> StatusKey {
            let meta = o.meta();
            (
                K::api_version(&()).into_owned(),
                K::kind(&()).into_owned(),
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            )
        }
        fn value<S: serde::Serialize>(status: Option<&S>) -> Option<Value> {
            status.and_then(|s| serde_json::to_value(s).ok())
        }
        macro_rules! route {
            ($r:expr) => {{
                let ours = $r.status.as_ref().is_some_and(|s| {
                    s.parents
                        .iter()
                        .any(|p| p.controller_name == CONTROLLER_NAME)
                });
                (
                    key_of(&**$r),
                    if ours {
                        value($r.status.as_ref())
                    } else {
                        None
                    },
                )
            }};
        }
        Some(match self {
            Self::Tenant(o) => (key_of(&**o), value(o.status.as_ref())),
            Self::GatewayClass(o) if o.spec.controller_name == CONTROLLER_NAME => {
                (key_of(&**o), value(o.status.as_ref()))
            }
            Self::Gateway(o) => (key_of(&**o), value(o.status.as_ref())),
            Self::ListenerSet(o) => (key_of(&**o), value(o.status.as_ref())),
            Self::BackendTlsPolicy(p) => {
                let ours = p.status.as_ref().is_some_and(|s| {
                    s.ancestors
                        .iter()
                        .any(|a| a.controller_name == CONTROLLER_NAME)
                });
                (
                    key_of(&**p),
                    ours.then(|| value(p.status.as_ref())).flatten(),
                )
            }
            Self::HttpRoute(r) => route!(r),
            Self::GrpcRoute(r) => route!(r),
            Self::TlsRoute(r) => route!(r),
            Self::TcpRoute(r) => route!(r),
            _ => return None,
        })
    }

    /// Drops the parts of `status` nobody reads back, before the object is cached: statuses the
    /// operator writes itself (Tenant, GatewayClass, Gateway, Namespace and Service statuses, and
    /// Bulkhead's own `status.parents[]` entries of routes, leaving the cache-only annotation
    /// [`HAS_OUR_PARENTS_ANNOTATION`] to say they were there). Other controllers' route entries
    /// are kept: they are carried along in our writes.
    pub fn strip_owned_status(&mut self) {
        use bulkhead_crds::CONTROLLER_NAME;
        macro_rules! ours_out {
            ($r:expr) => {
                if let Some(status) = $r.status.as_mut() {
                    let before = status.parents.len();
                    status
                        .parents
                        .retain(|p| p.controller_name != CONTROLLER_NAME);
                    if status.parents.len() != before {
                        $r.metadata
                            .annotations
                            .get_or_insert_with(Default::default)
                            .insert(HAS_OUR_PARENTS_ANNOTATION.to_owned(), "true".to_owned());
                    }
                    if status.parents.is_empty() {
                        $r.status = None;
                    }
                }
            };
        }
        match self {
            Self::Tenant(o) => o.status = None,
            Self::Namespace(o) => o.status = None,
            Self::GatewayClass(o) => o.status = None,
            Self::Gateway(o) => o.status = None,
            Self::ListenerSet(o) => o.status = None,
            Self::Service(o) => o.status = None,
            Self::HttpRoute(r) => ours_out!(r),
            Self::GrpcRoute(r) => ours_out!(r),
            Self::TlsRoute(r) => ours_out!(r),
            Self::TcpRoute(r) => ours_out!(r),
            Self::ReferenceGrant(_)
            | Self::Secret(_)
            | Self::EndpointSlice(_)
            | Self::ConfigMap(_) => {}
            // Status entries are rewritten whole by their controllers; ours are recomputed.
            Self::BackendTlsPolicy(o) => o.status = None,
        }
    }

    /// One object from its JSON form (as the API server or `kubectl get -o json` gives it), with
    /// the same checks as [`parse_documents`]; the error names the kind, object and field.
    pub fn from_json(json: Value) -> Result<Self, String> {
        parse_object(json).map_err(|e| {
            let mut out = String::new();
            if let Some(kind) = &e.kind {
                out.push_str(kind);
                out.push(' ');
            }
            if let Some(name) = &e.name {
                out.push_str(name);
                out.push(' ');
            }
            if let Some(field) = &e.field {
                out.push_str(field);
                out.push_str(": ");
            }
            out.push_str(&e.message);
            out
        })
    }
}

fn parse_object(mut json: Value) -> Result<Object, ObjectError> {
    parse_object_inner(&mut json)
}

fn parse_object_inner(json: &mut Value) -> Result<Object, ObjectError> {
    let kind = json.get("kind").and_then(Value::as_str).map(str::to_owned);
    let api_version = json
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let base = |message: String| ObjectError {
        kind: kind.clone(),
        name: None,
        field: None,
        message,
    };
    if !json.is_object() {
        return Err(base(
            "a document must be a mapping with apiVersion, kind and metadata".into(),
        ));
    }
    let Some(kind_str) = kind.clone() else {
        return Err(ObjectError {
            field: Some("kind".into()),
            ..base("kind is missing".into())
        });
    };
    let Some(spec) = KINDS.iter().find(|k| k.kind == kind_str) else {
        return Err(base(format!("unsupported kind {kind_str:?} (skipped)")));
    };
    let Some(api_version) = api_version else {
        return Err(ObjectError {
            field: Some("apiVersion".into()),
            ..base("apiVersion is missing".into())
        });
    };
    if !spec.api_versions.contains(&api_version.as_str()) {
        return Err(ObjectError {
            field: Some("apiVersion".into()),
            ..base(format!(
                "apiVersion {api_version:?} is not supported for {kind_str} (expected {})",
                spec.api_versions.join(" or ")
            ))
        });
    }
    let name =
        normalise_metadata(json, spec.namespaced).map_err(|(field, message)| ObjectError {
            field: Some(field),
            ..base(message)
        })?;
    let with_name = |field: Option<String>, message: String| ObjectError {
        kind: kind.clone(),
        name: Some(name.clone()),
        field,
        message,
    };
    if let Some(map) = json.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
        map.remove("status");
        if kind_str == "TLSRoute" {
            if let Some(Value::Object(spec)) = map.get_mut("spec") {
                spec.entry("hostnames")
                    .or_insert_with(|| Value::Array(Vec::new()));
            }
        }
    }
    let value = std::mem::take(json);
    let typed = match spec.kind {
        "Tenant" => typed(value).map(|o| Object::Tenant(Box::new(o))),
        "Namespace" => typed(value).map(|o| Object::Namespace(Box::new(o))),
        "GatewayClass" => typed(value).map(|o| Object::GatewayClass(Box::new(o))),
        "Gateway" => typed(value).map(|o| Object::Gateway(Box::new(o))),
        "HTTPRoute" => typed(value).map(|o| Object::HttpRoute(Box::new(o))),
        "GRPCRoute" => typed(value).map(|o| Object::GrpcRoute(Box::new(o))),
        "TLSRoute" => typed(value).map(|o| Object::TlsRoute(Box::new(o))),
        "TCPRoute" => typed(value).map(|o| Object::TcpRoute(Box::new(o))),
        "ReferenceGrant" => typed(value).map(|o| Object::ReferenceGrant(Box::new(o))),
        "Secret" => typed(value).map(|o| Object::Secret(Box::new(o))),
        "Service" => typed(value).map(|o| Object::Service(Box::new(o))),
        "EndpointSlice" => typed(value).map(|o| Object::EndpointSlice(Box::new(o))),
        "ConfigMap" => typed(value).map(|o| Object::ConfigMap(Box::new(o))),
        "ListenerSet" => typed(value).map(|o| Object::ListenerSet(Box::new(o))),
        "BackendTLSPolicy" => typed(value).map(|o| Object::BackendTlsPolicy(Box::new(o))),
        other => Err((None, format!("unsupported kind {other:?} (skipped)"))),
    };
    typed.map_err(|(field, message)| with_name(field, message))
}

/// Checks `metadata.name`, fills or clears `metadata.namespace`; returns `namespace/name` or `name`.
fn normalise_metadata(json: &mut Value, namespaced: bool) -> Result<String, (String, String)> {
    let Some(map) = json.as_object_mut() else {
        return Err(("metadata".into(), "metadata is missing".into()));
    };
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    let Some(meta) = meta.as_object_mut() else {
        return Err(("metadata".into(), "metadata must be a mapping".into()));
    };
    let name = match meta.get("name") {
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        _ => return Err(("metadata.name".into(), "metadata.name is missing".into())),
    };
    if !namespaced {
        meta.remove("namespace");
        return Ok(name);
    }
    let namespace = match meta.get("namespace") {
        Some(Value::String(ns)) if !ns.is_empty() => ns.clone(),
        None | Some(Value::Null) | Some(Value::String(_)) => DEFAULT_NAMESPACE.to_owned(),
        Some(_) => {
            return Err((
                "metadata.namespace".into(),
                "metadata.namespace must be a string".into(),
            ))
        }
    };
    meta.insert("namespace".into(), Value::String(namespace.clone()));
    Ok(format!("{namespace}/{name}"))
}

fn typed<T: DeserializeOwned>(value: Value) -> Result<T, (Option<String>, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = (path != ".").then_some(path);
        (field, e.into_inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Vec<Object>, Vec<LoadError>) {
        parse_documents(Path::new("m.yaml"), text)
    }

    #[test]
    fn multi_document_yaml_gives_typed_objects_with_default_namespace() {
        let (objects, errors) = parse(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n---\n---\n\
             apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {name: acme, namespace: ignored}\n\
             spec: {namespace: acme, hostnames: [\"a.test\"]}\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let keys: Vec<String> = objects.iter().map(|o| o.key().to_string()).collect();
        assert_eq!(keys, vec!["Service default/web", "Tenant acme"]);
    }

    #[test]
    fn unknown_kinds_and_wrong_versions_are_reported_and_skipped() {
        let (objects, errors) = parse(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n---\n\
             apiVersion: gateway.networking.k8s.io/v2\nkind: Gateway\nmetadata: {name: g}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {namespace: a}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n",
        );
        assert_eq!(objects.len(), 1);
        assert_eq!(errors.len(), 3);
        assert_eq!(errors[0].document, 1);
        assert!(errors[0].message.contains("unsupported kind"));
        assert_eq!(errors[1].field.as_deref(), Some("apiVersion"));
        assert_eq!(errors[2].field.as_deref(), Some("metadata.name"));
        assert!(errors.iter().all(|e| !e.syntax));
    }

    #[test]
    fn a_type_error_names_the_field_in_one_line() {
        let (objects, errors) = parse(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: acme}\n\
             spec:\n  rules:\n  - backendRefs: [{name: a, port: eighty}]\n",
        );
        assert!(objects.is_empty());
        let e = &errors[0];
        assert_eq!(
            e.field.as_deref(),
            Some("spec.rules[0].backendRefs[0].port")
        );
        let line = e.to_string();
        assert!(!line.contains('\n'));
        assert!(
            line.starts_with(
                "m.yaml: document 1 (HTTPRoute acme/r): field spec.rules[0].backendRefs[0].port: "
            ),
            "{line}"
        );
    }

    #[test]
    fn a_syntax_error_stops_the_file_and_is_flagged() {
        let (objects, errors) = parse(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: [unclosed\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n",
        );
        assert_eq!(objects.len(), 1);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].syntax);
    }

    #[test]
    fn lists_are_unpacked_and_old_tlsroutes_without_hostnames_load() {
        let (objects, errors) = parse(
            "apiVersion: v1\nkind: List\nitems:\n\
             - apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n\
             - apiVersion: gateway.networking.k8s.io/v1alpha2\n  kind: TLSRoute\n  metadata: {name: t, namespace: a}\n  \
               spec: {rules: [{backendRefs: [{name: db, port: 5432}]}]}\n\
             - apiVersion: v1\n  kind: Secret\n  metadata: {}\n",
        );
        assert_eq!(objects.len(), 2, "{errors:?}");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field.as_deref(), Some("items[2].metadata.name"));
        let set = ObjectSet::from_objects(objects);
        assert_eq!(set.tls_routes.len(), 1);
        assert!(set.tls_routes[0].spec.hostnames.is_empty());
    }

    #[test]
    fn object_set_keeps_the_first_duplicate_and_sorts() {
        let (objects, _) = parse(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {first: \"yes\"}}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
        );
        let set = ObjectSet::from_objects(objects);
        let names: Vec<_> = set
            .namespaces
            .iter()
            .map(|n| n.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, vec!["a", "b"]);
        assert!(set.namespaces[0].metadata.labels.is_some());
        assert_eq!(set.len(), 2);
    }
}
