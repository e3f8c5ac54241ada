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

mod network;
mod pod;
mod settings;
pub use network::namespace_selector;
use network::{network_policy, service};
use pod::deployment;
pub use pod::{hardened_pod_security_context, hardened_security_context, ROUTER_PROGRAM};
use settings::validate_namespace;
pub use settings::{
    is_quantity, router_resources, validate_settings, ChildError, ChildSettings, RouterResources,
};

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

#[cfg(test)]
mod tests;
