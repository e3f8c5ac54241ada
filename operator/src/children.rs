//! The objects the operator server-side applies for one `Tenant`: a pure function from the Tenant,
//! the operator's settings and the tenant's last snapshot to typed Kubernetes objects.
//!
//! In the tenant's namespace (`spec.namespace`), all named after [`ROUTER_NAME`] unless noted:
//! - a `ServiceAccount` whose token is never mounted: the router holds no Kubernetes credentials;
//! - the router `Deployment` (replicas from the Tenant, default
//!   [`DEFAULT_ROUTER_REPLICAS`]): non-root, read-only root filesystem, no capabilities, seccomp
//!   `RuntimeDefault`, resource requests, `/readyz` and `/healthz` probes on the admin port, and a
//!   projected service-account token for [`SNAPSHOT_AUDIENCE`] only, which the operator's snapshot
//!   API checks by TokenReview;
//! - a `Service` (ports `https` 8443, `http` 8080, `admin` 9901);
//! - a `PodDisruptionBudget` (at most one router down at a time);
//! - a `NetworkPolicy` admitting the edge's pods on 8443/8080 and the metrics scraper on 9901 only,
//!   and letting the routers reach only what they need, so they work in a namespace whose own
//!   policies deny all egress (NetworkPolicies add up) and reach nothing else where none does:
//!   the operator's snapshot port (its pods, in the operator's namespace), DNS (the `kube-dns`
//!   pods of `kube-system`, UDP and TCP 53), every pod of the tenant's own namespace (its
//!   backends), and the namespaces of [`ChildSettings::router_egress_namespaces`]. A backend in
//!   another namespace (a cross-namespace `backendRef` a ReferenceGrant allows) is reachable only
//!   when its namespace is listed there: an allow-list cannot say "anywhere but the other
//!   tenants' namespaces" without naming them, and a per-tenant list derived from ReferenceGrants
//!   would have to follow them (not done yet);
//! - the `ConfigMap` [`OPERATOR_CA_CONFIG_MAP`] with the certificate the router trusts for the
//!   snapshot API (public data, so a ConfigMap);
//! - the `Secret` [`BOOTSTRAP_SECRET_NAME`] with the last snapshot (see [`Children::bootstrap`] for
//!   why a Secret and not the ConfigMap the issue first named).
//!
//! Every object is labelled `app.kubernetes.io/{name,instance,managed-by,part-of}` and owned by
//! the Tenant (`controller: true`): the Tenant is cluster-scoped, so owning namespaced objects in any
//! namespace is allowed, and deleting the Tenant garbage-collects all of them. `blockOwnerDeletion`
//! is not set, so the operator needs no permission on `tenants/finalizers`.
//!
//! Invalid input is a [`ChildError`], whose [`ChildError::reason`] becomes the Tenant's condition.

use bulkhead_crds::api_limits::{dns1123_label, dns1123_subdomain, label_value};
use bulkhead_crds::snapshot::TenantSnapshot;
use bulkhead_crds::tenant::DEFAULT_ROUTER_REPLICAS;
use bulkhead_crds::Tenant;
use bulkhead_proxy_io::cidr::{networks, Cidr, PRIVATE_NETWORKS};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::LocalObjectReference;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar,
    HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Service,
    ServiceAccount, ServiceAccountTokenProjection, ServicePort, ServiceSpec,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use kube::Resource;
use serde::Serialize;
use std::collections::BTreeMap;

/// Name of the router's ServiceAccount, Deployment, Service, PodDisruptionBudget and
/// NetworkPolicy; also its pods' `app.kubernetes.io/name` label. The snapshot API's TokenReview
/// authenticator maps `system:serviceaccount:<namespace>:bulkhead-router` to the tenant.
pub const ROUTER_NAME: &str = "bulkhead-router";
/// Name of the Secret holding the tenant's last snapshot.
pub const BOOTSTRAP_SECRET_NAME: &str = "bulkhead-router-bootstrap";
/// Key of the snapshot (JSON) in [`BOOTSTRAP_SECRET_NAME`].
pub const BOOTSTRAP_KEY: &str = "snapshot.json";
/// Name of the ConfigMap holding the snapshot API's CA certificate.
pub const OPERATOR_CA_CONFIG_MAP: &str = "bulkhead-operator-ca";
/// Key of the CA certificate (PEM) in [`OPERATOR_CA_CONFIG_MAP`].
pub const OPERATOR_CA_KEY: &str = "ca.crt";
/// The audience of the routers' projected tokens; the snapshot API accepts no other.
pub const SNAPSHOT_AUDIENCE: &str = "bulkhead.dev/snapshots";
/// Lifetime of a projected token (the kubelet renews it at 80 %).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3600;
/// The `app.kubernetes.io/managed-by` value of every child.
pub const MANAGED_BY: &str = "bulkhead-operator";
/// The namespace of the edge and the operator.
pub const SYSTEM_NAMESPACE: &str = "bulkhead-system";
/// The `app.kubernetes.io/name` label of the edge's pods.
pub const EDGE_NAME: &str = "bulkhead-edge";
/// The namespace whose pods scrape metrics, by default (`kubernetes.io/metadata.name`).
pub const DEFAULT_METRICS_NAMESPACE: &str = "monitoring";

/// The router's TLS port (traffic from the edge's 443).
pub const HTTPS_PORT: i32 = 8443;
/// The router's plain HTTP port (traffic from the edge's 80).
pub const HTTP_PORT: i32 = 8080;
/// The router's admin port: `/healthz`, `/readyz`, `/metrics`.
pub const ADMIN_PORT: i32 = 9901;
/// The unprivileged user and group every Bulkhead container runs as (distroless `nonroot`).
pub const RUN_AS_ID: i64 = 65532;
/// How long a stopping router may drain its connections.
pub const TERMINATION_GRACE_SECONDS: i64 = 60;
/// Kubernetes refuses Secrets larger than 1 MiB; a bigger snapshot gets no bootstrap copy.
pub const MAX_BOOTSTRAP_BYTES: usize = 1024 * 1024;

/// Where the router finds the projected token.
pub const TOKEN_DIR: &str = "/var/run/secrets/bulkhead";
/// Where the router finds the operator's CA certificate.
pub const CA_DIR: &str = "/var/run/bulkhead/ca";
/// Where the router finds its bootstrap snapshot.
pub const BOOTSTRAP_DIR: &str = "/var/run/bulkhead/bootstrap";

/// Default CPU request of a router container.
pub const DEFAULT_CPU_REQUEST: &str = "100m";
/// Default memory request of a router container.
pub const DEFAULT_MEMORY_REQUEST: &str = "128Mi";
/// Default memory limit of a router container (no CPU limit: throttling a proxy adds latency).
pub const DEFAULT_MEMORY_LIMIT: &str = "512Mi";

/// The operator's default snapshot API port (`bulkhead operator --snapshot-listen`): the port the
/// routers' egress policy opens to the operator's pods.
pub const DEFAULT_OPERATOR_SNAPSHOT_PORT: i32 = 8443;
/// Name of the operator's pods (`app.kubernetes.io/name`), the routers' egress destination.
pub const OPERATOR_NAME: &str = "bulkhead-operator";
/// Namespace of the cluster DNS the routers' egress policy opens.
pub const DNS_NAMESPACE: &str = "kube-system";
/// Label (key, value) of the cluster DNS pods (CoreDNS and kube-dns both carry it).
pub const DNS_POD_LABEL: (&str, &str) = ("k8s-app", "kube-dns");
/// DNS port, opened for UDP and TCP.
pub const DNS_PORT: i32 = 53;

/// Namespaces no tenant may own: the system namespaces of Kubernetes and of Bulkhead.
const RESERVED_NAMESPACE_PREFIX: &str = "kube-";

/// The operator's side of the children: what is the same for every tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildSettings {
    /// The `bulkhead` image the routers run (the operator's own image).
    pub image: String,
    /// `imagePullPolicy` of the router containers (cluster default when `None`).
    pub image_pull_policy: Option<String>,
    /// `imagePullSecrets` of the router pods: Secret names that must exist in each tenant's
    /// namespace (the operator does not copy them). Empty by default.
    pub image_pull_secrets: Vec<String>,
    /// The operator's snapshot API port on its pods, opened in the routers' egress policy.
    pub operator_snapshot_port: i32,
    /// Namespaces the routers may also reach (all ports), besides their own: where shared or
    /// cross-namespace backends live. Empty by default.
    pub router_egress_namespaces: Vec<String>,
    /// The snapshot API's URL as routers reach it (`https://…`).
    pub operator_url: String,
    /// The PEM certificate routers trust for the snapshot API.
    pub operator_ca_pem: String,
    /// The namespace of the edge and the operator; no tenant may own it.
    pub system_namespace: String,
    /// The namespaces allowed to scrape the routers' admin port; `None` admits nobody.
    pub metrics_scraper_namespaces: Option<LabelSelector>,
    /// Resources of the router container.
    pub resources: ResourceRequirements,
    /// The networks routers accept PROXY headers from (`--accept-proxy-from`): where the edge
    /// connects from. Default [`bulkhead_proxy_io::cidr::PRIVATE_NETWORKS`], the private address
    /// space pod networks are drawn from (the pod CIDR cannot be known); narrow it to the edge's
    /// pod (or node) CIDR where the CNI does not enforce the routers' NetworkPolicy.
    pub router_accept_proxy_from: Vec<Cidr>,
}

impl ChildSettings {
    /// Settings with the defaults: system namespace [`SYSTEM_NAMESPACE`], metrics scraped from
    /// the [`DEFAULT_METRICS_NAMESPACE`] namespace, requests of 100m CPU and 128Mi memory, a
    /// 512Mi memory limit, PROXY headers accepted from the private address space.
    pub fn new(
        image: impl Into<String>,
        operator_url: impl Into<String>,
        operator_ca_pem: impl Into<String>,
    ) -> Self {
        Self {
            image: image.into(),
            image_pull_policy: None,
            image_pull_secrets: Vec::new(),
            operator_snapshot_port: DEFAULT_OPERATOR_SNAPSHOT_PORT,
            router_egress_namespaces: Vec::new(),
            operator_url: operator_url.into(),
            operator_ca_pem: operator_ca_pem.into(),
            system_namespace: SYSTEM_NAMESPACE.to_owned(),
            metrics_scraper_namespaces: Some(namespace_selector(DEFAULT_METRICS_NAMESPACE)),
            resources: router_resources(&RouterResources {
                cpu_request: DEFAULT_CPU_REQUEST.to_owned(),
                memory_request: DEFAULT_MEMORY_REQUEST.to_owned(),
                cpu_limit: None,
                memory_limit: Some(DEFAULT_MEMORY_LIMIT.to_owned()),
            }),
            router_accept_proxy_from: networks(&PRIVATE_NETWORKS),
        }
    }
}

/// The router container's requests and limits, as quantities (`100m`, `128Mi`), so that a
/// tenant namespace's LimitRange or ResourceQuota (which may require limits) can be met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterResources {
    /// CPU request.
    pub cpu_request: String,
    /// Memory request.
    pub memory_request: String,
    /// CPU limit; none by default (throttling a proxy adds latency).
    pub cpu_limit: Option<String>,
    /// Memory limit.
    pub memory_limit: Option<String>,
}

/// The container resources of `r` (limits omitted when none is set).
pub fn router_resources(r: &RouterResources) -> ResourceRequirements {
    let quantities = |cpu: Option<&String>, memory: Option<&String>| {
        let map: BTreeMap<String, Quantity> = [("cpu", cpu), ("memory", memory)]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), Quantity(v.clone()))))
            .collect();
        (!map.is_empty()).then_some(map)
    };
    ResourceRequirements {
        requests: quantities(Some(&r.cpu_request), Some(&r.memory_request)),
        limits: quantities(r.cpu_limit.as_ref(), r.memory_limit.as_ref()),
        ..ResourceRequirements::default()
    }
}

/// Whether `text` is a Kubernetes resource quantity: a decimal number with an optional exponent
/// (`e3`), binary (`Ki` … `Ei`) or decimal (`n` … `E`) suffix.
pub fn is_quantity(text: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E",
    ];
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let unsigned = number.strip_prefix(['+', '-']).unwrap_or(number);
    let digits_ok = !unsigned.is_empty()
        && unsigned.chars().all(|c| c.is_ascii_digit() || c == '.')
        && unsigned.matches('.').count() <= 1
        && unsigned != ".";
    let exponent_ok = suffix.strip_prefix(['e', 'E']).is_some_and(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    });
    digits_ok && (SUFFIXES.contains(&suffix) || exponent_ok)
}

/// Why a Tenant's children cannot be rendered. Each becomes the Tenant's `Ready=False` condition.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// `spec.namespace` is not a valid namespace name.
    #[error("spec.namespace {namespace:?} is not a valid namespace name: {reason}")]
    InvalidNamespace {
        /// The namespace.
        namespace: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `spec.namespace` is a system namespace.
    #[error("spec.namespace {namespace:?} is reserved for the system")]
    ReservedNamespace {
        /// The namespace.
        namespace: String,
    },
    /// The Tenant's name cannot be a label value (at most 63 characters).
    #[error("tenant name {name:?} cannot be used as a label value: {reason}")]
    InvalidTenantName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The Tenant has no name or uid (it was not read from the API server), so nothing can be
    /// owned by it.
    #[error("tenant {name:?} has no uid: children need an owner read from the API server")]
    MissingOwnerIdentity {
        /// The name, if any.
        name: String,
    },
    /// `spec.replicas` is negative.
    #[error("spec.replicas must not be negative, got {replicas}")]
    NegativeReplicas {
        /// The value.
        replicas: i32,
    },
    /// The bootstrap snapshot is another tenant's or another namespace's.
    #[error(
        "bootstrap snapshot is for tenant {found_tenant:?} in {found_namespace:?}, not this tenant"
    )]
    BootstrapMismatch {
        /// The snapshot's tenant.
        found_tenant: String,
        /// The snapshot's namespace.
        found_namespace: String,
    },
    /// The bootstrap snapshot does not fit in a Secret.
    #[error(
        "bootstrap snapshot is {len} bytes, more than the {max} a Secret may hold",
        max = MAX_BOOTSTRAP_BYTES
    )]
    BootstrapTooLarge {
        /// Its length in JSON.
        len: usize,
    },
    /// The bootstrap snapshot could not be serialised.
    #[error("bootstrap snapshot cannot be serialised: {0}")]
    BootstrapEncoding(#[from] serde_json::Error),
    /// An operator setting is unusable (a deployment error, not the tenant's).
    #[error("operator setting {field} is invalid: {reason}")]
    InvalidSettings {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl ChildError {
    /// The condition reason (CamelCase) for the Tenant's status.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidNamespace { .. } => "InvalidNamespace",
            Self::ReservedNamespace { .. } => "ReservedNamespace",
            Self::InvalidTenantName { .. } => "InvalidTenantName",
            Self::MissingOwnerIdentity { .. } => "MissingOwnerIdentity",
            Self::NegativeReplicas { .. } => "InvalidReplicas",
            Self::BootstrapMismatch { .. } => "BootstrapMismatch",
            Self::BootstrapTooLarge { .. } => "BootstrapTooLarge",
            Self::BootstrapEncoding(_) => "BootstrapEncoding",
            Self::InvalidSettings { .. } => "InvalidOperatorSettings",
        }
    }
}

/// Everything the operator applies for one Tenant, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    /// The router's identity; its token is never automounted.
    pub service_account: ServiceAccount,
    /// The snapshot API's CA certificate.
    pub operator_ca: ConfigMap,
    /// The tenant's last snapshot, `None` when no snapshot was given: the operator then leaves
    /// an existing bootstrap Secret as it is (the volume is optional, so routers start without).
    ///
    /// A `Secret`, not a `ConfigMap`: the snapshot holds the tenant's TLS private keys, and keys
    /// must never sit in ConfigMaps (readable by every `view` role, never encrypted at rest, shown
    /// by `kubectl describe`). Secrets get the RBAC, audit and encryption-at-rest treatment keys
    /// need; the tenant already owns these keys, so storing them in its own namespace discloses
    /// nothing new.
    pub bootstrap: Option<Secret>,
    /// The routers.
    pub deployment: Deployment,
    /// The routers' Service.
    pub service: Service,
    /// At most one router down at a time.
    pub pod_disruption_budget: PodDisruptionBudget,
    /// Admits the edge and the metrics scraper only.
    pub network_policy: NetworkPolicy,
}

impl Children {
    /// Every child as JSON, in apply order (identity and configuration before the pods).
    pub fn to_values(&self) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        let mut out = vec![
            serde_json::to_value(&self.service_account)?,
            serde_json::to_value(&self.operator_ca)?,
        ];
        if let Some(secret) = &self.bootstrap {
            out.push(serde_json::to_value(secret)?);
        }
        out.push(serde_json::to_value(&self.deployment)?);
        out.push(serde_json::to_value(&self.service)?);
        out.push(serde_json::to_value(&self.pod_disruption_budget)?);
        out.push(serde_json::to_value(&self.network_policy)?);
        Ok(out)
    }

    /// Every child as multi-document YAML, in apply order.
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        fn doc<T: Serialize>(out: &mut String, value: &T) -> Result<(), serde_yaml::Error> {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(value)?);
            Ok(())
        }
        let mut out = String::new();
        doc(&mut out, &self.service_account)?;
        doc(&mut out, &self.operator_ca)?;
        if let Some(secret) = &self.bootstrap {
            doc(&mut out, secret)?;
        }
        doc(&mut out, &self.deployment)?;
        doc(&mut out, &self.service)?;
        doc(&mut out, &self.pod_disruption_budget)?;
        doc(&mut out, &self.network_policy)?;
        Ok(out)
    }
}

/// Renders the children of `tenant`. Pure: the same input gives the same objects.
pub fn render_children(
    tenant: &Tenant,
    settings: &ChildSettings,
    bootstrap: Option<&TenantSnapshot>,
) -> Result<Children, ChildError> {
    validate_settings(settings)?;
    let name = tenant.metadata.name.clone().unwrap_or_default();
    let owner = tenant
        .controller_owner_ref(&())
        .ok_or_else(|| ChildError::MissingOwnerIdentity { name: name.clone() })?;
    dns1123_subdomain(&name)
        .and_then(|()| label_value(&name))
        .map_err(|reason| ChildError::InvalidTenantName {
            name: name.clone(),
            reason,
        })?;
    let namespace = tenant.spec.namespace.as_str();
    validate_namespace(namespace, settings)?;
    let replicas = tenant.spec.replicas.unwrap_or(DEFAULT_ROUTER_REPLICAS);
    if replicas < 0 {
        return Err(ChildError::NegativeReplicas { replicas });
    }
    let ctx = Ctx {
        tenant: &name,
        namespace,
        owner,
        settings,
    };
    let bootstrap = bootstrap
        .map(|snapshot| bootstrap_secret(&ctx, snapshot))
        .transpose()?;
    Ok(Children {
        service_account: ServiceAccount {
            metadata: ctx.meta(ROUTER_NAME),
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        },
        operator_ca: ConfigMap {
            metadata: ctx.meta(OPERATOR_CA_CONFIG_MAP),
            data: Some(BTreeMap::from([(
                OPERATOR_CA_KEY.to_owned(),
                settings.operator_ca_pem.clone(),
            )])),
            ..ConfigMap::default()
        },
        bootstrap,
        deployment: deployment(&ctx, replicas),
        service: service(&ctx),
        pod_disruption_budget: PodDisruptionBudget {
            metadata: ctx.meta(ROUTER_NAME),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(ctx.selector()),
                unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
                ..PodDisruptionBudgetSpec::default()
            }),
            ..PodDisruptionBudget::default()
        },
        network_policy: network_policy(&ctx),
    })
}

/// What every child of one tenant shares.
struct Ctx<'a> {
    tenant: &'a str,
    namespace: &'a str,
    owner: OwnerReference,
    settings: &'a ChildSettings,
}

impl Ctx<'_> {
    /// The labels that select this tenant's router pods.
    fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), ROUTER_NAME.to_owned()),
            (
                "app.kubernetes.io/instance".to_owned(),
                self.tenant.to_owned(),
            ),
        ])
    }

    /// Every label of every child.
    fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels();
        labels.insert(
            "app.kubernetes.io/managed-by".to_owned(),
            MANAGED_BY.to_owned(),
        );
        labels.insert(
            "app.kubernetes.io/part-of".to_owned(),
            "bulkhead".to_owned(),
        );
        labels
    }

    fn selector(&self) -> LabelSelector {
        LabelSelector {
            match_labels: Some(self.selector_labels()),
            ..LabelSelector::default()
        }
    }

    fn meta(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(self.labels()),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// Checks the settings every tenant's children are rendered with (the operator also checks them
/// at start, so a bad flag stops it with this error instead of failing every Tenant).
pub fn validate_settings(settings: &ChildSettings) -> Result<(), ChildError> {
    let invalid = |field, reason| Err(ChildError::InvalidSettings { field, reason });
    if settings.image.trim().is_empty() {
        return invalid("image", "empty");
    }
    if !settings.operator_url.starts_with("https://") {
        return invalid("operator_url", "must be an https:// URL");
    }
    if !settings
        .operator_ca_pem
        .contains("-----BEGIN CERTIFICATE-----")
    {
        return invalid("operator_ca_pem", "not a PEM certificate");
    }
    if dns1123_label(&settings.system_namespace).is_err() {
        return invalid("system_namespace", "not a valid namespace name");
    }
    if settings
        .image_pull_secrets
        .iter()
        .any(|n| dns1123_subdomain(n).is_err())
    {
        return invalid("image_pull_secrets", "not a valid Secret name");
    }
    if settings
        .router_egress_namespaces
        .iter()
        .any(|n| dns1123_label(n).is_err())
    {
        return invalid("router_egress_namespaces", "not a valid namespace name");
    }
    let all_quantities = [&settings.resources.requests, &settings.resources.limits]
        .into_iter()
        .flatten()
        .flat_map(|m| m.values())
        .all(|q| is_quantity(&q.0));
    if !all_quantities {
        return invalid("resources", "not a resource quantity");
    }
    if !(1..=65535).contains(&settings.operator_snapshot_port) {
        return invalid("operator_snapshot_port", "not a port number");
    }
    if settings.router_accept_proxy_from.is_empty() {
        return invalid(
            "router_accept_proxy_from",
            "empty: the routers would refuse the edge",
        );
    }
    Ok(())
}

fn validate_namespace(namespace: &str, settings: &ChildSettings) -> Result<(), ChildError> {
    dns1123_label(namespace).map_err(|reason| ChildError::InvalidNamespace {
        namespace: namespace.to_owned(),
        reason,
    })?;
    if namespace == settings.system_namespace || namespace.starts_with(RESERVED_NAMESPACE_PREFIX) {
        return Err(ChildError::ReservedNamespace {
            namespace: namespace.to_owned(),
        });
    }
    Ok(())
}

fn bootstrap_secret(ctx: &Ctx<'_>, snapshot: &TenantSnapshot) -> Result<Secret, ChildError> {
    if snapshot.tenant != ctx.tenant || snapshot.namespace != ctx.namespace {
        return Err(ChildError::BootstrapMismatch {
            found_tenant: snapshot.tenant.clone(),
            found_namespace: snapshot.namespace.clone(),
        });
    }
    let json = serde_json::to_vec(snapshot)?;
    if json.len() > MAX_BOOTSTRAP_BYTES {
        return Err(ChildError::BootstrapTooLarge { len: json.len() });
    }
    Ok(Secret {
        metadata: ctx.meta(BOOTSTRAP_SECRET_NAME),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            BOOTSTRAP_KEY.to_owned(),
            ByteString(json),
        )])),
        ..Secret::default()
    })
}

/// The container-level security context of every Bulkhead container.
pub fn hardened_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_ID),
        run_as_group: Some(RUN_AS_ID),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

/// The pod-level security context of every Bulkhead pod (`fsGroup` makes mounted tokens and
/// keys readable by the unprivileged user).
pub fn hardened_pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_ID),
        run_as_group: Some(RUN_AS_ID),
        fs_group: Some(RUN_AS_ID),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..PodSecurityContext::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        ..SeccompProfile::default()
    }
}

/// The program the router container runs: the data-plane-only binary of the Bulkhead image (same
/// subcommands and flags as `bulkhead router`, without the operator's code).
pub const ROUTER_PROGRAM: &str = "/bulkhead-dataplane";

/// The router's command line: the contract `bulkhead router` implements.
fn router_args(ctx: &Ctx<'_>) -> Vec<String> {
    [
        "router",
        "--tenant",
        ctx.tenant,
        "--https-listen",
        &format!("[::]:{HTTPS_PORT}"),
        "--http-listen",
        &format!("[::]:{HTTP_PORT}"),
        "--admin-listen",
        &format!("[::]:{ADMIN_PORT}"),
        "--operator-url",
        &ctx.settings.operator_url,
        "--operator-ca",
        &format!("{CA_DIR}/{OPERATOR_CA_KEY}"),
        "--token-file",
        &format!("{TOKEN_DIR}/token"),
        "--bootstrap",
        &format!("{BOOTSTRAP_DIR}/{BOOTSTRAP_KEY}"),
        "--accept-proxy-from",
        &ctx.settings
            .router_accept_proxy_from
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn http_probe(path: &str, period_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("admin".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(3),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn read_only_mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// Files readable by owner and `fsGroup` only.
const SECRET_FILE_MODE: i32 = 0o440;

fn volumes() -> Vec<Volume> {
    vec![
        Volume {
            name: "bulkhead-token".to_owned(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(SECRET_FILE_MODE),
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(SNAPSHOT_AUDIENCE.to_owned()),
                        expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                        path: "token".to_owned(),
                    }),
                    ..VolumeProjection::default()
                }]),
            }),
            ..Volume::default()
        },
        Volume {
            name: "operator-ca".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: OPERATOR_CA_CONFIG_MAP.to_owned(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "bootstrap".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(BOOTSTRAP_SECRET_NAME.to_owned()),
                default_mode: Some(SECRET_FILE_MODE),
                optional: Some(true),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
    ]
}

fn deployment(ctx: &Ctx<'_>, replicas: i32) -> Deployment {
    let settings = ctx.settings;
    let container = Container {
        name: "router".to_owned(),
        image: Some(settings.image.clone()),
        image_pull_policy: settings.image_pull_policy.clone(),
        command: Some(vec![ROUTER_PROGRAM.to_owned()]),
        args: Some(router_args(ctx)),
        env: Some(vec![EnvVar {
            name: "BULKHEAD_LOG_FORMAT".to_owned(),
            value: Some("json".to_owned()),
            ..EnvVar::default()
        }]),
        ports: Some(vec![
            container_port("https", HTTPS_PORT),
            container_port("http", HTTP_PORT),
            container_port("admin", ADMIN_PORT),
        ]),
        readiness_probe: Some(http_probe("/readyz", 5)),
        liveness_probe: Some(http_probe("/healthz", 10)),
        resources: Some(settings.resources.clone()),
        security_context: Some(hardened_security_context()),
        volume_mounts: Some(vec![
            read_only_mount("bulkhead-token", TOKEN_DIR),
            read_only_mount("operator-ca", CA_DIR),
            read_only_mount("bootstrap", BOOTSTRAP_DIR),
        ]),
        ..Container::default()
    };
    let spread = |topology_key: &str| TopologySpreadConstraint {
        max_skew: 1,
        topology_key: topology_key.to_owned(),
        when_unsatisfiable: "ScheduleAnyway".to_owned(),
        label_selector: Some(ctx.selector()),
        ..TopologySpreadConstraint::default()
    };
    Deployment {
        metadata: ctx.meta(ROUTER_NAME),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: ctx.selector(),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(ctx.labels()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(ROUTER_NAME.to_owned()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(hardened_pod_security_context()),
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    topology_spread_constraints: Some(vec![
                        spread("kubernetes.io/hostname"),
                        spread("topology.kubernetes.io/zone"),
                    ]),
                    containers: vec![container],
                    image_pull_secrets: image_pull_secrets(settings),
                    volumes: Some(volumes()),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The pods' `imagePullSecrets`, or `None` (not an empty list) when there are none.
fn image_pull_secrets(settings: &ChildSettings) -> Option<Vec<LocalObjectReference>> {
    (!settings.image_pull_secrets.is_empty()).then(|| {
        settings
            .image_pull_secrets
            .iter()
            .map(|name| LocalObjectReference { name: name.clone() })
            .collect()
    })
}

fn service(ctx: &Ctx<'_>) -> Service {
    let port = |name: &str, number: i32| ServicePort {
        name: Some(name.to_owned()),
        port: number,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    };
    Service {
        metadata: ctx.meta(ROUTER_NAME),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(ctx.selector_labels()),
            ports: Some(vec![
                port("https", HTTPS_PORT),
                port("http", HTTP_PORT),
                port("admin", ADMIN_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Selects a namespace by its immutable `kubernetes.io/metadata.name` label.
pub fn namespace_selector(namespace: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_owned(),
            namespace.to_owned(),
        )])),
        ..LabelSelector::default()
    }
}

fn tcp_port(port: i32) -> NetworkPolicyPort {
    protocol_port("TCP", port)
}

fn protocol_port(protocol: &str, port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some(protocol.to_owned()),
        ..NetworkPolicyPort::default()
    }
}

/// Pods labelled `key=value` in the namespace `namespace` (both must match: one peer).
fn pods_in(namespace: &str, key: &str, value: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(namespace_selector(namespace)),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// Where the routers may connect (see the module documentation).
fn router_egress(settings: &ChildSettings) -> Vec<NetworkPolicyEgressRule> {
    let operator = NetworkPolicyEgressRule {
        to: Some(vec![pods_in(
            &settings.system_namespace,
            "app.kubernetes.io/name",
            OPERATOR_NAME,
        )]),
        ports: Some(vec![tcp_port(settings.operator_snapshot_port)]),
    };
    let dns = NetworkPolicyEgressRule {
        to: Some(vec![pods_in(
            DNS_NAMESPACE,
            DNS_POD_LABEL.0,
            DNS_POD_LABEL.1,
        )]),
        ports: Some(vec![
            protocol_port("UDP", DNS_PORT),
            protocol_port("TCP", DNS_PORT),
        ]),
    };
    // A peer with only a pod selector selects pods of the policy's own namespace.
    let own_namespace = NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            pod_selector: Some(LabelSelector::default()),
            ..NetworkPolicyPeer::default()
        }]),
        ports: None,
    };
    let mut egress = vec![operator, dns, own_namespace];
    if !settings.router_egress_namespaces.is_empty() {
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector {
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "kubernetes.io/metadata.name".to_owned(),
                        operator: "In".to_owned(),
                        values: Some(settings.router_egress_namespaces.clone()),
                    }]),
                    ..LabelSelector::default()
                }),
                ..NetworkPolicyPeer::default()
            }]),
            ports: None,
        });
    }
    egress
}

/// Ingress: the edge's pods (namespace and pod selector in one peer, so both must match) on the
/// traffic ports, the metrics scraper on the admin port. Egress: [`router_egress`].
fn network_policy(ctx: &Ctx<'_>) -> NetworkPolicy {
    let edge = NetworkPolicyIngressRule {
        from: Some(vec![pods_in(
            &ctx.settings.system_namespace,
            "app.kubernetes.io/name",
            EDGE_NAME,
        )]),
        ports: Some(vec![tcp_port(HTTPS_PORT), tcp_port(HTTP_PORT)]),
    };
    let mut ingress = vec![edge];
    if let Some(scraper) = &ctx.settings.metrics_scraper_namespaces {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(scraper.clone()),
                ..NetworkPolicyPeer::default()
            }]),
            ports: Some(vec![tcp_port(ADMIN_PORT)]),
        });
    }
    NetworkPolicy {
        metadata: ctx.meta(ROUTER_NAME),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(ctx.selector()),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(ingress),
            egress: Some(router_egress(ctx.settings)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_crds::TenantSpec;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn settings() -> ChildSettings {
        ChildSettings::new(
            "ghcr.io/bulkhead/bulkhead:test",
            "https://bulkhead-operator.bulkhead-system.svc:8443",
            CA,
        )
    }

    fn tenant(name: &str, namespace: &str, replicas: Option<i32>) -> Tenant {
        let mut t = Tenant::new(
            name,
            TenantSpec {
                namespace: namespace.to_owned(),
                hostnames: vec!["*.example.com".to_owned()],
                replicas,
            },
        );
        t.metadata.uid = Some("0b5c2f4e-0000-4000-8000-000000000001".to_owned());
        t
    }

    fn snapshot(tenant: &str, namespace: &str) -> TenantSnapshot {
        TenantSnapshot {
            tenant: tenant.to_owned(),
            namespace: namespace.to_owned(),
            version: 7,
            ..TenantSnapshot::default()
        }
    }

    fn render(t: &Tenant) -> Children {
        render_children(t, &settings(), None).expect("renders")
    }

    fn pod_spec(children: &Children) -> &PodSpec {
        children
            .deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    #[test]
    fn router_container_is_hardened() {
        let children = render(&tenant("acme", "acme", None));
        let pod = pod_spec(&children);
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.service_account_name.as_deref(), Some(ROUTER_NAME));
        let psc = pod.security_context.as_ref().expect("pod security context");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(65532));
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
        assert_eq!(pod.containers.len(), 1);
        let c = &pod.containers[0];
        let sc = c
            .security_context
            .as_ref()
            .expect("container security context");
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.run_as_user, Some(65532));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.privileged, Some(false));
        let caps = sc.capabilities.as_ref().expect("capabilities");
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
        assert!(caps.add.is_none());
        assert_eq!(
            sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
        let requests = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .expect("requests");
        assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
    }

    #[test]
    fn probes_use_the_admin_port() {
        let children = render(&tenant("acme", "acme", None));
        let c = &pod_spec(&children).containers[0];
        let get = |p: &Option<Probe>| {
            p.as_ref()
                .and_then(|p| p.http_get.clone())
                .expect("http probe")
        };
        let ready = get(&c.readiness_probe);
        assert_eq!(ready.path.as_deref(), Some("/readyz"));
        assert_eq!(ready.port, IntOrString::String("admin".to_owned()));
        assert_eq!(get(&c.liveness_probe).path.as_deref(), Some("/healthz"));
        let admin = c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("admin"))
            .expect("admin port");
        assert_eq!(admin.container_port, ADMIN_PORT);
    }

    #[test]
    fn token_is_projected_for_the_snapshot_audience_only() {
        let children = render(&tenant("acme", "acme", None));
        let pod = pod_spec(&children);
        let projections: Vec<_> = pod
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.projected.as_ref())
            .flat_map(|p| p.sources.iter().flatten())
            .filter_map(|s| s.service_account_token.as_ref())
            .collect();
        assert_eq!(projections.len(), 1);
        assert_eq!(projections[0].audience.as_deref(), Some(SNAPSHOT_AUDIENCE));
        assert_eq!(projections[0].expiration_seconds, Some(3600));
        let args = pod.containers[0].args.clone().unwrap_or_default();
        let token_flag = args.iter().position(|a| a == "--token-file").expect("flag");
        assert_eq!(args[token_flag + 1], "/var/run/secrets/bulkhead/token");
    }

    #[test]
    fn router_args_are_the_contract() {
        let children = render(&tenant("acme", "team-a", None));
        let container = &pod_spec(&children).containers[0];
        assert_eq!(
            container.command.as_deref(),
            Some(&["/bulkhead-dataplane".to_owned()][..])
        );
        let args = container.args.clone().unwrap_or_default();
        assert_eq!(
            args.join(" "),
            "router --tenant acme --https-listen [::]:8443 --http-listen [::]:8080 \
             --admin-listen [::]:9901 \
             --operator-url https://bulkhead-operator.bulkhead-system.svc:8443 \
             --operator-ca /var/run/bulkhead/ca/ca.crt \
             --token-file /var/run/secrets/bulkhead/token \
             --bootstrap /var/run/bulkhead/bootstrap/snapshot.json \
             --accept-proxy-from 10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7"
        );
    }

    #[test]
    fn replicas_default_to_two_and_follow_the_tenant() {
        let replicas = |c: &Children| c.deployment.spec.as_ref().and_then(|s| s.replicas);
        assert_eq!(replicas(&render(&tenant("a", "a", None))), Some(2));
        assert_eq!(replicas(&render(&tenant("a", "a", Some(5)))), Some(5));
        assert_eq!(replicas(&render(&tenant("a", "a", Some(0)))), Some(0));
    }

    #[test]
    fn negative_replicas_are_refused() {
        let err = render_children(&tenant("a", "a", Some(-1)), &settings(), None).unwrap_err();
        assert!(matches!(err, ChildError::NegativeReplicas { replicas: -1 }));
        assert_eq!(err.reason(), "InvalidReplicas");
    }

    #[test]
    fn bad_and_reserved_namespaces_are_refused() {
        for bad in ["", "Team", "team_a", "-team", "team-", &"a".repeat(64)] {
            let err = render_children(&tenant("a", bad, None), &settings(), None).unwrap_err();
            assert!(
                matches!(err, ChildError::InvalidNamespace { .. }),
                "{bad:?}: {err}"
            );
        }
        for reserved in ["bulkhead-system", "kube-system", "kube-public"] {
            let err = render_children(&tenant("a", reserved, None), &settings(), None).unwrap_err();
            assert!(
                matches!(err, ChildError::ReservedNamespace { .. }),
                "{reserved}"
            );
        }
        assert!(render_children(&tenant("a", "a-1", None), &settings(), None).is_ok());
    }

    #[test]
    fn tenant_names_must_fit_a_label_value() {
        let long = "a".repeat(64);
        let err = render_children(&tenant(&long, "a", None), &settings(), None).unwrap_err();
        assert!(matches!(err, ChildError::InvalidTenantName { .. }));
    }

    #[test]
    fn a_tenant_without_uid_owns_nothing() {
        let mut t = tenant("a", "a", None);
        t.metadata.uid = None;
        let err = render_children(&t, &settings(), None).unwrap_err();
        assert!(matches!(err, ChildError::MissingOwnerIdentity { .. }));
    }

    #[test]
    fn every_child_is_labelled_and_owned_by_the_tenant() {
        let t = tenant("acme", "team-a", None);
        let snap = snapshot("acme", "team-a");
        let children = render_children(&t, &settings(), Some(&snap)).expect("renders");
        let values = children.to_values().expect("json");
        assert_eq!(values.len(), 7);
        for v in values {
            let meta = &v["metadata"];
            assert_eq!(meta["namespace"], "team-a", "{v}");
            assert_eq!(meta["labels"]["app.kubernetes.io/instance"], "acme");
            assert_eq!(meta["labels"]["app.kubernetes.io/name"], ROUTER_NAME);
            assert_eq!(meta["labels"]["app.kubernetes.io/managed-by"], MANAGED_BY);
            let owners = meta["ownerReferences"].as_array().expect("owners");
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0]["kind"], "Tenant");
            assert_eq!(owners[0]["apiVersion"], "bulkhead.dev/v1alpha1");
            assert_eq!(owners[0]["name"], "acme");
            assert_eq!(owners[0]["uid"], "0b5c2f4e-0000-4000-8000-000000000001");
            assert_eq!(owners[0]["controller"], true);
        }
    }

    #[test]
    fn bootstrap_is_a_secret_holding_the_snapshot_json() {
        let t = tenant("acme", "team-a", None);
        let snap = snapshot("acme", "team-a");
        let children = render_children(&t, &settings(), Some(&snap)).expect("renders");
        let secret = children.bootstrap.expect("bootstrap secret");
        assert_eq!(secret.metadata.name.as_deref(), Some(BOOTSTRAP_SECRET_NAME));
        let bytes = &secret.data.as_ref().expect("data")[BOOTSTRAP_KEY].0;
        let back: TenantSnapshot = serde_json::from_slice(bytes).expect("snapshot json");
        assert_eq!(back, snap);
        assert!(render(&t).bootstrap.is_none());
    }

    #[test]
    fn bootstrap_of_another_tenant_is_refused() {
        let t = tenant("acme", "team-a", None);
        let err = render_children(&t, &settings(), Some(&snapshot("other", "team-a"))).unwrap_err();
        assert!(matches!(err, ChildError::BootstrapMismatch { .. }));
        let err = render_children(&t, &settings(), Some(&snapshot("acme", "team-b"))).unwrap_err();
        assert!(matches!(err, ChildError::BootstrapMismatch { .. }));
    }

    #[test]
    fn oversized_bootstrap_is_refused() {
        let t = tenant("acme", "team-a", None);
        let mut snap = snapshot("acme", "team-a");
        snap.hostnames = vec!["x".repeat(MAX_BOOTSTRAP_BYTES)];
        let err = render_children(&t, &settings(), Some(&snap)).unwrap_err();
        assert!(matches!(err, ChildError::BootstrapTooLarge { .. }));
    }

    #[test]
    fn network_policy_admits_only_edge_and_scraper() {
        let children = render(&tenant("acme", "team-a", None));
        let spec = children.network_policy.spec.expect("spec");
        assert_eq!(
            spec.policy_types,
            Some(vec!["Ingress".to_owned(), "Egress".to_owned()])
        );
        let rules = spec.ingress.expect("ingress rules");
        assert_eq!(rules.len(), 2);
        let ports = |r: &NetworkPolicyIngressRule| -> Vec<IntOrString> {
            r.ports
                .iter()
                .flatten()
                .filter_map(|p| p.port.clone())
                .collect()
        };
        assert_eq!(
            ports(&rules[0]),
            vec![IntOrString::Int(8443), IntOrString::Int(8080)]
        );
        let edge = &rules[0].from.as_ref().expect("peers")[0];
        assert_eq!(
            edge.namespace_selector,
            Some(namespace_selector("bulkhead-system"))
        );
        assert!(edge.pod_selector.is_some());
        assert!(edge.ip_block.is_none());
        assert_eq!(ports(&rules[1]), vec![IntOrString::Int(9901)]);

        let mut no_scraper = settings();
        no_scraper.metrics_scraper_namespaces = None;
        let children =
            render_children(&tenant("acme", "team-a", None), &no_scraper, None).expect("renders");
        let rules = children.network_policy.spec.and_then(|s| s.ingress);
        assert_eq!(rules.map(|r| r.len()), Some(1));
    }

    #[test]
    fn unusable_settings_are_reported() {
        let t = tenant("acme", "team-a", None);
        let mut s = settings();
        s.operator_url = "http://operator:8443".to_owned();
        assert!(matches!(
            render_children(&t, &s, None),
            Err(ChildError::InvalidSettings {
                field: "operator_url",
                ..
            })
        ));
        let mut s = settings();
        s.operator_ca_pem = String::new();
        assert!(render_children(&t, &s, None).is_err());
        let mut s = settings();
        s.image_pull_secrets = vec!["Not_A_Name".to_owned()];
        assert!(render_children(&t, &s, None).is_err());
        let mut s = settings();
        s.router_egress_namespaces = vec!["shared/".to_owned()];
        assert!(render_children(&t, &s, None).is_err());
    }

    /// (namespace selector's name, pod selector labels, ports as "PROTO/port") of each egress peer.
    fn egress_summary(children: &Children) -> Vec<(Option<String>, bool, Vec<String>)> {
        let spec = children.network_policy.spec.clone().expect("spec");
        spec.egress
            .expect("egress rules")
            .iter()
            .flat_map(|rule| {
                let ports: Vec<String> = rule
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| format!("{}/{:?}", p.protocol.clone().unwrap_or_default(), p.port))
                    .collect();
                rule.to.iter().flatten().map(move |peer| {
                    let ns = peer
                        .namespace_selector
                        .as_ref()
                        .and_then(|s| s.match_labels.as_ref())
                        .and_then(|l| l.get("kubernetes.io/metadata.name").cloned());
                    (ns, peer.pod_selector.is_some(), ports.clone())
                })
            })
            .collect()
    }

    #[test]
    fn routers_may_reach_the_operator_dns_and_their_own_namespace_only() {
        let children = render(&tenant("acme", "team-a", None));
        let egress = egress_summary(&children);
        assert_eq!(
            egress,
            vec![
                (
                    Some("bulkhead-system".to_owned()),
                    true,
                    vec!["TCP/Some(Int(8443))".to_owned()]
                ),
                (
                    Some("kube-system".to_owned()),
                    true,
                    vec![
                        "UDP/Some(Int(53))".to_owned(),
                        "TCP/Some(Int(53))".to_owned()
                    ]
                ),
                // Own namespace: a pod selector alone, every port.
                (None, true, vec![]),
            ]
        );
        let spec = children.network_policy.spec.expect("spec");
        let rules = spec.egress.expect("egress");
        let operator_pods = rules[0].to.as_ref().expect("peers")[0]
            .pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone());
        assert_eq!(
            operator_pods,
            Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                OPERATOR_NAME.to_owned()
            )]))
        );
        assert_eq!(
            rules[2].to.as_ref().expect("peers")[0].namespace_selector,
            None
        );
    }

    #[test]
    fn listed_egress_namespaces_and_the_snapshot_port_follow_the_settings() {
        let mut s = settings();
        s.router_egress_namespaces = vec!["shared-db".to_owned()];
        s.operator_snapshot_port = 9443;
        let children = render_children(&tenant("acme", "team-a", None), &s, None).expect("renders");
        let rules = children
            .network_policy
            .spec
            .and_then(|s| s.egress)
            .expect("egress");
        assert_eq!(rules.len(), 4);
        assert_eq!(
            rules[0].ports.as_ref().expect("ports")[0].port,
            Some(IntOrString::Int(9443))
        );
        let listed = rules[3].to.as_ref().expect("peers")[0]
            .namespace_selector
            .as_ref()
            .and_then(|s| s.match_expressions.clone())
            .expect("expressions");
        assert_eq!(listed[0].operator, "In");
        assert_eq!(listed[0].values, Some(vec!["shared-db".to_owned()]));
    }

    #[test]
    fn quantities_are_checked() {
        for good in ["100m", "128Mi", "1", "0.5", "2Gi", "1e3", "1.5G"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "Mi", "12 Mi", "1..2", "abc", "1Gb", "."] {
            assert!(!is_quantity(bad), "{bad}");
        }
        let mut s = settings();
        s.resources.requests = Some(BTreeMap::from([(
            "cpu".to_owned(),
            Quantity("lots".to_owned()),
        )]));
        assert!(matches!(
            render_children(&tenant("acme", "team-a", None), &s, None),
            Err(ChildError::InvalidSettings {
                field: "resources",
                ..
            })
        ));
    }

    #[test]
    fn image_pull_secrets_and_resources_follow_the_settings() {
        let children = render(&tenant("acme", "team-a", None));
        assert_eq!(pod_spec(&children).image_pull_secrets, None);
        let mut s = settings();
        s.image_pull_secrets = vec!["registry-creds".to_owned()];
        s.resources.limits = Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("1".to_owned())),
            ("memory".to_owned(), Quantity("256Mi".to_owned())),
        ]));
        let children = render_children(&tenant("acme", "team-a", None), &s, None).expect("renders");
        let pod = pod_spec(&children);
        assert_eq!(
            pod.image_pull_secrets,
            Some(vec![LocalObjectReference {
                name: "registry-creds".to_owned()
            }])
        );
        let limits = pod.containers[0]
            .resources
            .as_ref()
            .and_then(|r| r.limits.clone())
            .expect("limits");
        assert_eq!(limits.get("cpu"), Some(&Quantity("1".to_owned())));
    }
}
