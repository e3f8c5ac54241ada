//! The operator's Kubernetes permissions, written once.
//!
//! [`OPERATOR_API_CALLS`] is the one list of API calls the operator makes. The RBAC objects in
//! `deploy/operator.yaml` are rendered from it ([`cluster_role`], [`namespace_role`]) and a test
//! checks that the manifest equals the rendering, so code and install cannot drift; the operator's
//! own tests check each request they make with [`allows`].
//!
//! Least privilege: every resource gets only the verbs the operator uses. Leader-election leases are
//! granted in the operator's own namespace only (a `Role`, not the `ClusterRole`). Gateway API
//! `ReferenceGrant`s have no status subresource, so they are read-only. Writes to Secrets are
//! cluster-wide because each tenant's bootstrap snapshot is a Secret in the tenant's namespace
//! (see [`crate::children`]); the data plane itself holds no Kubernetes credentials at all.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

/// Name of the operator's `ClusterRole`, `Role`, their bindings and its `ServiceAccount`.
pub const OPERATOR_ROLE_NAME: &str = "bulkhead-operator";

/// Where a permission is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// In every namespace (and for cluster-scoped resources): the `ClusterRole`.
    Cluster,
    /// Only in the operator's own namespace: the `Role`.
    OperatorNamespace,
}

/// One kind of API call: these verbs on these resources of one API group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiCall {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Resources, with `/subresource` where it applies (e.g. `tenants/status`).
    pub resources: &'static [&'static str],
    /// Verbs, as RBAC spells them.
    pub verbs: &'static [&'static str],
    /// Where the permission is granted.
    pub scope: Scope,
}

/// Verbs of a watched, read-only resource.
const READ: &[&str] = &["get", "list", "watch"];
/// Verbs of a resource the operator server-side applies and deletes (its children). A server-side
/// apply that creates an object needs `create` as well as `patch`.
const APPLY: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];
/// Verbs of a status subresource written by server-side apply.
const STATUS: &[&str] = &["patch"];
/// Verbs of a route status subresource: replaced with the live resourceVersion after merging
/// other controllers' entries (the route itself is read with `get`).
const ROUTE_STATUS: &[&str] = &["update"];

/// Every API call the operator makes. The single source of the operator's RBAC.
pub const OPERATOR_API_CALLS: &[ApiCall] = &[
    // The Tenant CRD: watched; status written by server-side apply.
    ApiCall {
        group: "bulkhead.dev",
        resources: &["tenants"],
        verbs: READ,
        scope: Scope::Cluster,
    },
    ApiCall {
        group: "bulkhead.dev",
        resources: &["tenants/status"],
        verbs: STATUS,
        scope: Scope::Cluster,
    },
    // Gateway API (standard channel plus TLSRoute and TCPRoute): watched; statuses written.
    ApiCall {
        group: "gateway.networking.k8s.io",
        resources: &[
            "gatewayclasses",
            "gateways",
            "httproutes",
            "grpcroutes",
            "tlsroutes",
            "tcproutes",
            "referencegrants",
        ],
        verbs: READ,
        scope: Scope::Cluster,
    },
    ApiCall {
        group: "gateway.networking.k8s.io",
        resources: &["gatewayclasses/status", "gateways/status"],
        verbs: STATUS,
        scope: Scope::Cluster,
    },
    // Route statuses: `parents` is shared with other controllers, so it is replaced (`update`)
    // with the live resourceVersion after merging, never applied blind (see
    // `kube::route_status`).
    ApiCall {
        group: "gateway.networking.k8s.io",
        resources: &[
            "httproutes/status",
            "grpcroutes/status",
            "tlsroutes/status",
            "tcproutes/status",
        ],
        verbs: ROUTE_STATUS,
        scope: Scope::Cluster,
    },
    // Inputs read from the core group: certificates (Secrets are also children, below),
    // Services and the Namespaces tenants own.
    ApiCall {
        group: "",
        resources: &["namespaces"],
        verbs: READ,
        scope: Scope::Cluster,
    },
    ApiCall {
        group: "discovery.k8s.io",
        resources: &["endpointslices"],
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
    },
    // Children of a Tenant, server-side applied in the tenant's namespace. Secrets: the bootstrap
    // snapshot (and TLS Secrets read as inputs); ConfigMaps: the operator's CA certificate.
    ApiCall {
        group: "",
        resources: &["secrets", "services", "serviceaccounts", "configmaps"],
        verbs: APPLY,
        scope: Scope::Cluster,
    },
    ApiCall {
        group: "apps",
        resources: &["deployments"],
        verbs: APPLY,
        scope: Scope::Cluster,
    },
    ApiCall {
        group: "policy",
        resources: &["poddisruptionbudgets"],
        verbs: APPLY,
        scope: Scope::Cluster,
    },
    ApiCall {
        group: "networking.k8s.io",
        resources: &["networkpolicies"],
        verbs: APPLY,
        scope: Scope::Cluster,
    },
    // Snapshot API authentication: routers and the edge present projected tokens.
    ApiCall {
        group: "authentication.k8s.io",
        resources: &["tokenreviews"],
        verbs: &["create"],
        scope: Scope::Cluster,
    },
    // The Gateway API CRDs' bundle-version annotation (GatewayClass `SupportedVersion`,
    // `kube::installation`): read one by one, never listed or watched.
    ApiCall {
        group: "apiextensions.k8s.io",
        resources: &["customresourcedefinitions"],
        verbs: &["get"],
        scope: Scope::Cluster,
    },
    // Events about the objects it reconciles (kube-rs writes `events.k8s.io/v1`).
    ApiCall {
        group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
        scope: Scope::Cluster,
    },
    // Leader election, in the operator's namespace only.
    ApiCall {
        group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["get", "create", "update"],
        scope: Scope::OperatorNamespace,
    },
    // The leader's pod label (`kube::leader_label`), in the operator's namespace only: the
    // snapshot Service selects it, so data-plane clients reach only the leader.
    ApiCall {
        group: "",
        resources: &["pods"],
        verbs: &["list", "patch"],
        scope: Scope::OperatorNamespace,
    },
];

/// Whether [`OPERATOR_API_CALLS`] grants `verb` on `resource` (with `/subresource` if any) of
/// `group` in `scope`. A cluster-wide grant also covers the operator's namespace.
pub fn allows(group: &str, resource: &str, verb: &str, scope: Scope) -> bool {
    OPERATOR_API_CALLS.iter().any(|call| {
        (call.scope == scope || call.scope == Scope::Cluster)
            && call.group == group
            && call.resources.contains(&resource)
            && call.verbs.contains(&verb)
    })
}

/// Policy rules for the calls of one scope, in list order.
fn rules(scope: Scope) -> Vec<PolicyRule> {
    OPERATOR_API_CALLS
        .iter()
        .filter(|call| call.scope == scope)
        .map(|call| PolicyRule {
            api_groups: Some(vec![call.group.to_owned()]),
            resources: Some(call.resources.iter().map(|r| (*r).to_owned()).collect()),
            verbs: call.verbs.iter().map(|v| (*v).to_owned()).collect(),
            ..PolicyRule::default()
        })
        .collect()
}

/// The labels of the operator's RBAC objects.
fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            OPERATOR_ROLE_NAME.to_owned(),
        ),
        (
            "app.kubernetes.io/part-of".to_owned(),
            "bulkhead".to_owned(),
        ),
    ])
}

/// The operator's `ClusterRole` (named [`OPERATOR_ROLE_NAME`]): every [`Scope::Cluster`] call.
pub fn cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(OPERATOR_ROLE_NAME.to_owned()),
            labels: Some(labels()),
            ..ObjectMeta::default()
        },
        rules: Some(rules(Scope::Cluster)),
        ..ClusterRole::default()
    }
}

/// The operator's `Role` in `namespace` (its own): every [`Scope::OperatorNamespace`] call.
pub fn namespace_role(namespace: &str) -> Role {
    Role {
        metadata: ObjectMeta {
            name: Some(OPERATOR_ROLE_NAME.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels()),
            ..ObjectMeta::default()
        },
        rules: Some(rules(Scope::OperatorNamespace)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_has_resources_and_verbs_without_wildcards() {
        for call in OPERATOR_API_CALLS {
            assert!(!call.resources.is_empty(), "{call:?}");
            assert!(!call.verbs.is_empty(), "{call:?}");
            for word in call.resources.iter().chain(call.verbs.iter()) {
                assert!(!word.contains('*'), "wildcard in {call:?}");
            }
            assert_ne!(call.group, "*", "wildcard group in {call:?}");
        }
    }

    #[test]
    fn each_group_and_resource_is_listed_once_per_scope() {
        let mut seen = std::collections::HashSet::new();
        for call in OPERATOR_API_CALLS {
            for resource in call.resources {
                assert!(
                    seen.insert((call.group, *resource, call.scope)),
                    "{}/{resource} listed twice",
                    call.group
                );
            }
        }
    }

    #[test]
    fn status_subresources_are_only_written() {
        for call in OPERATOR_API_CALLS {
            if call.resources.iter().any(|r| r.ends_with("/status")) {
                assert!(
                    call.verbs == STATUS || call.verbs == ROUTE_STATUS,
                    "{call:?}"
                );
            }
        }
    }

    #[test]
    fn allows_exactly_what_is_listed() {
        assert!(allows("bulkhead.dev", "tenants", "watch", Scope::Cluster));
        assert!(allows(
            "bulkhead.dev",
            "tenants/status",
            "patch",
            Scope::Cluster
        ));
        assert!(!allows("bulkhead.dev", "tenants", "patch", Scope::Cluster));
        assert!(!allows("bulkhead.dev", "tenants", "delete", Scope::Cluster));
        assert!(allows("apps", "deployments", "patch", Scope::Cluster));
        assert!(!allows("apps", "daemonsets", "patch", Scope::Cluster));
        assert!(!allows(
            "gateway.networking.k8s.io",
            "referencegrants/status",
            "patch",
            Scope::Cluster
        ));
        assert!(!allows("", "pods", "get", Scope::Cluster));
        assert!(!allows("", "secrets", "update", Scope::Cluster));
        assert!(allows(
            "authentication.k8s.io",
            "tokenreviews",
            "create",
            Scope::Cluster
        ));
    }

    #[test]
    fn leases_are_granted_only_in_the_operator_namespace() {
        assert!(allows(
            "coordination.k8s.io",
            "leases",
            "update",
            Scope::OperatorNamespace
        ));
        assert!(!allows(
            "coordination.k8s.io",
            "leases",
            "update",
            Scope::Cluster
        ));
        let cluster = cluster_role();
        let leases_in_cluster_role = cluster
            .rules
            .iter()
            .flatten()
            .flat_map(|r| r.resources.iter().flatten())
            .any(|r| r == "leases");
        assert!(!leases_in_cluster_role);
        let role = namespace_role("bulkhead-system");
        assert_eq!(role.metadata.namespace.as_deref(), Some("bulkhead-system"));
        // Leases, and the leader's pod label: nothing else in the operator's namespace.
        assert_eq!(role.rules.as_ref().map(Vec::len), Some(2));
        assert!(!allows("", "pods", "patch", Scope::Cluster));
    }

    #[test]
    fn cluster_role_has_one_rule_per_cluster_call() {
        let role = cluster_role();
        let rules = role.rules.unwrap_or_default();
        let calls: Vec<_> = OPERATOR_API_CALLS
            .iter()
            .filter(|c| c.scope == Scope::Cluster)
            .collect();
        assert_eq!(rules.len(), calls.len());
        for (rule, call) in rules.iter().zip(calls) {
            assert_eq!(
                rule.api_groups.as_deref(),
                Some(&[call.group.to_owned()][..])
            );
            assert_eq!(rule.verbs, call.verbs);
            assert!(rule.resource_names.is_none());
            assert!(rule.non_resource_urls.is_none());
        }
    }
}
