//! The operator's settings for every tenant's children ([`ChildSettings`], router resources) and
//! their validation; what a bad value is ([`ChildError`]).

use super::*;

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

pub(super) fn validate_namespace(
    namespace: &str,
    settings: &ChildSettings,
) -> Result<(), ChildError> {
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
