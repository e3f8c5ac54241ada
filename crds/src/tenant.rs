//! The `Tenant` custom resource: a namespace onboarded by the cluster admin and the hostnames it may serve.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default number of tenant router replicas.
pub const DEFAULT_ROUTER_REPLICAS: i32 = 2;

/// A tenant: one namespace whose Gateways and routes Bulkhead serves, limited to `hostnames`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "bulkhead.dev",
    version = "v1alpha1",
    kind = "Tenant",
    plural = "tenants",
    shortname = "tn",
    status = "TenantStatus",
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".spec.namespace"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// The namespace this tenant owns; its `bulkhead` Gateways and routes are served.
    pub namespace: String,
    /// Hostnames the tenant may serve: exact names, `*.suffix` wildcards, or `"*"` for any name.
    pub hostnames: Vec<String>,
    /// Number of tenant router replicas (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
}

/// Observed state of a tenant.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// `Ready` and `Accepted` conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The hostname patterns this tenant actually owns (conflicts with older tenants removed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// The snapshot version its routers acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_version: Option<u64>,
}
