//! The `Tenant` custom resource: a namespace onboarded by the cluster admin and the hostnames it may serve.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default number of tenant router replicas.
pub const DEFAULT_ROUTER_REPLICAS: i32 = 2;
/// Most router replicas a Tenant may ask for (`spec.replicas`, enforced by the CRD schema).
pub const MAX_ROUTER_REPLICAS: i32 = 100;
/// Most hostname patterns one Tenant may be granted (`spec.hostnames`, enforced by the CRD schema):
/// bounds the edge table and the Tenant object's size.
pub const MAX_TENANT_HOSTNAMES: usize = 256;
/// Most conditions in a Tenant's status (the Gateway API's bound for its own conditions).
pub const MAX_TENANT_CONDITIONS: usize = 8;
/// Longest Tenant name: it is the `app.kubernetes.io/instance` label value of its router's objects.
pub const MAX_TENANT_NAME: usize = 63;

/// `spec.namespace`: a DNS-1123 label, as namespace names are.
const NAMESPACE_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// One `spec.hostnames` item: `*` (any name), or a lowercase DNS name, optionally behind `*.`
/// (the Gateway API's hostname pattern, plus `*`).
const HOSTNAME_PATTERN: &str =
    r"^(\*|(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$";

/// A tenant: one namespace whose Gateways and routes Bulkhead serves, limited to `hostnames`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "bulkhead.dev",
    version = "v1alpha1",
    kind = "Tenant",
    plural = "tenants",
    shortname = "tn",
    status = "TenantStatus",
    doc = "A Tenant onboards one namespace: Bulkhead runs a router there and serves the namespace's Gateways and routes, for the hostnames the Tenant grants and no others. Created by the cluster admin.",
    validation = Rule::new("size(self.metadata.name) <= 63").message("a Tenant name is at most 63 characters (it labels the router's objects)"),
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".spec.namespace"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// The namespace this tenant owns, whose `bulkhead` Gateways and routes are served. Fixed at creation: to move a tenant, delete the Tenant and create a new one.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = NAMESPACE_PATTERN),
        extend("x-kubernetes-validations" = [{
            "rule": "self == oldSelf",
            "message": "spec.namespace is immutable: delete the Tenant and create a new one"
        }])
    )]
    pub namespace: String,
    /// Hostnames the tenant may serve: exact names, `*.suffix` wildcards, or `"*"` for any name.
    #[schemars(
        length(max = MAX_TENANT_HOSTNAMES),
        inner(length(min = 1, max = 253), regex(pattern = HOSTNAME_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub hostnames: Vec<String>,
    /// Number of tenant router replicas (default 2; 0 stops the routers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_ROUTER_REPLICAS))]
    pub replicas: Option<i32>,
}

/// Observed state of a tenant.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// `Accepted` (the Tenant can be onboarded) and `Ready` (its routers serve the current configuration), at most one of each type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_TENANT_CONDITIONS),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The hostname patterns this tenant actually owns (conflicts with older tenants removed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_TENANT_HOSTNAMES), extend("x-kubernetes-list-type" = "set"))]
    pub hostnames: Vec<String>,
    /// The configuration version its routers acknowledged serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i64>", range(min = 0))]
    pub acknowledged_version: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use serde_json::Value;

    fn schema() -> Value {
        let crd = serde_json::to_value(Tenant::crd()).expect("CRD serialises");
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    fn rules(node: &Value) -> Vec<&str> {
        node["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["rule"].as_str())
            .collect()
    }

    fn matches(pattern: &Value, value: &str) -> bool {
        let pattern = pattern.as_str().expect("a pattern");
        regex::Regex::new(pattern)
            .expect("the pattern compiles")
            .is_match(value)
    }

    #[test]
    fn the_namespace_is_an_immutable_dns_label() {
        let namespace = &schema()["properties"]["spec"]["properties"]["namespace"];
        assert_eq!(rules(namespace), vec!["self == oldSelf"]);
        assert_eq!(namespace["maxLength"], 63);
        for good in ["team-a", "a", "0a"] {
            assert!(matches(&namespace["pattern"], good), "{good}");
        }
        for bad in ["Team", "-a", "a-", "a.b", "a_b", ""] {
            assert!(!matches(&namespace["pattern"], bad), "{bad}");
        }
    }

    #[test]
    fn hostnames_are_a_bounded_set_of_lowercase_names_or_wildcards() {
        let hostnames = &schema()["properties"]["spec"]["properties"]["hostnames"];
        assert_eq!(hostnames["x-kubernetes-list-type"], "set");
        assert_eq!(hostnames["maxItems"], MAX_TENANT_HOSTNAMES);
        let item = &hostnames["items"];
        assert_eq!(item["maxLength"], 253);
        for good in ["*", "*.acme.test", "acme.test", "a-1.b"] {
            assert!(matches(&item["pattern"], good), "{good}");
        }
        for bad in [
            "Acme.test",
            "*acme.test",
            "a..b",
            "*.*.a",
            "a.*",
            "a b",
            "acme.test.",
        ] {
            assert!(!matches(&item["pattern"], bad), "{bad}");
        }
    }

    #[test]
    fn replicas_names_conditions_and_versions_are_bounded() {
        let schema = schema();
        let replicas = &schema["properties"]["spec"]["properties"]["replicas"];
        assert_eq!(replicas["minimum"], 0.0);
        assert_eq!(replicas["maximum"], f64::from(MAX_ROUTER_REPLICAS));
        assert_eq!(
            rules(&schema),
            vec![format!("size(self.metadata.name) <= {MAX_TENANT_NAME}")]
        );
        let status = &schema["properties"]["status"]["properties"];
        let conditions = &status["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"])
        );
        assert_eq!(conditions["maxItems"], MAX_TENANT_CONDITIONS);
        assert_eq!(status["acknowledgedVersion"]["format"], "int64");
        let text = serde_json::to_string(&schema).expect("JSON");
        assert!(
            !text.contains("uint64"),
            "no format the API server does not know"
        );
        assert!(!text.contains("Auto-generated"), "human descriptions only");
    }
}
