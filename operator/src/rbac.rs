//! The operator's Kubernetes permissions, written once.
//!
//! [`OPERATOR_API_CALLS`] is the one list of API calls the operator makes. The RBAC objects in
//! `deploy/operator.yaml` are rendered from it ([`cluster_role`], [`namespace_role`]) and a test
//! checks that the manifest equals the rendering, so code and install cannot drift; the operator's
//! own tests check each request they make with [`allows`].
//!
//! RBAC cannot name the objects a cluster-wide `create` may make, so the writes to children are
//! also bounded by a `ValidatingAdmissionPolicy` ([`admission_policy`], [`admission_policy_binding`],
//! rendered into `deploy/admission.yaml` and compared by the same test): requests of the
//! operator's service account that create, change or delete an object of a [`CHILD_WRITES`] kind
//! are refused unless the object has one of the operator's own child names and its namespace does
//! not start with `kube-`. The operator account is then not cluster-admin in disguise: it cannot
//! replace a tenant's own Deployment, Service or Secret, nor write in Kubernetes' namespaces.
//!
//! Least privilege: every resource gets only the verbs the operator uses. Leader-election leases are
//! granted in the operator's own namespace only (a `Role`, not the `ClusterRole`). Gateway API
//! `ReferenceGrant`s have no status subresource, so they are read-only. Writes to Secrets are
//! cluster-wide because each tenant's bootstrap snapshot is a Secret in the tenant's namespace
//! (see [`crate::children`]); the data plane itself holds no Kubernetes credentials at all.

use crate::children::{BOOTSTRAP_SECRET_NAME, OPERATOR_CA_CONFIG_MAP, ROUTER_NAME};
use crate::kube::edge_bootstrap::EDGE_BOOTSTRAP_CONFIG_MAP;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec, Validation, Variable,
};
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

/// Verbs of a watched, read-only resource: a kube-rs watcher lists, then watches; nothing reads
/// one object by name.
const READ: &[&str] = &["list", "watch"];
/// Verbs of a watched resource whose objects are also read one by one (routes: their live status
/// is read before it is replaced, see `kube::route_status`).
const READ_ONE: &[&str] = &["get", "list", "watch"];
/// Verbs of a resource the operator server-side applies, watches (`kube::child_watch`, metadata
/// only) and deletes from a namespace a Tenant left (`kube::onboarding::remove_children`, which
/// finds the object by a `list` selecting its name). A server-side apply that creates an object
/// needs `create` as well as `patch`; nothing needs `get`.
const APPLY: &[&str] = &["list", "watch", "create", "patch", "delete"];
/// Verbs on Secrets: [`APPLY`] (the bootstrap snapshot) and `get` (a referenced TLS Secret's
/// data, read on demand).
const SECRETS: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];
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
    // Gateway API (standard channel, ListenerSet included, plus TLSRoute and TCPRoute): watched;
    // statuses written.
    ApiCall {
        group: "gateway.networking.k8s.io",
        resources: &[
            "gatewayclasses",
            "gateways",
            "referencegrants",
            "listenersets",
        ],
        verbs: READ,
        scope: Scope::Cluster,
    },
    ApiCall {
        group: "gateway.networking.k8s.io",
        resources: &[
            "httproutes",
            "grpcroutes",
            "tlsroutes",
            "tcproutes",
            "backendtlspolicies",
        ],
        verbs: READ_ONE,
        scope: Scope::Cluster,
    },
    ApiCall {
        group: "gateway.networking.k8s.io",
        resources: &[
            "gatewayclasses/status",
            "gateways/status",
            "listenersets/status",
        ],
        verbs: STATUS,
        scope: Scope::Cluster,
    },
    // Route statuses (`parents`) and BackendTLSPolicy statuses (`ancestors`) are shared with
    // other controllers, so they are replaced (`update`) with the live resourceVersion after
    // merging, never applied blind (see `kube::route_status`).
    ApiCall {
        group: "gateway.networking.k8s.io",
        resources: &[
            "httproutes/status",
            "grpcroutes/status",
            "tlsroutes/status",
            "tcproutes/status",
            "backendtlspolicies/status",
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
    // Children of a Tenant, server-side applied in the tenant's namespace. ConfigMaps: the
    // operator's CA certificate.
    ApiCall {
        group: "",
        resources: &["services", "serviceaccounts", "configmaps"],
        verbs: APPLY,
        scope: Scope::Cluster,
    },
    // Secrets: a child (the bootstrap snapshot, applied like the others) and an input. TLS
    // Secrets are watched by metadata only; the data (private keys) of one is read by `get`, and
    // only while a Gateway's `certificateRefs` names it (`kube::secret_data`).
    ApiCall {
        group: "",
        resources: &["secrets"],
        verbs: SECRETS,
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

/// The names the operator gives the objects of one kind it writes cluster-wide (its children).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildWrite {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Resource (plural, lower case).
    pub resource: &'static str,
    /// Every name the operator writes an object of this kind with.
    pub names: &'static [&'static str],
}

/// Every kind the operator creates, patches or deletes outside its own namespace's `Role`, with
/// the only names it uses: the admission policy's list. A test checks it covers every kind
/// [`OPERATOR_API_CALLS`] grants `delete` on.
pub const CHILD_WRITES: &[ChildWrite] = &[
    ChildWrite {
        group: "",
        resource: "secrets",
        names: &[BOOTSTRAP_SECRET_NAME],
    },
    ChildWrite {
        group: "",
        resource: "services",
        names: &[ROUTER_NAME],
    },
    ChildWrite {
        group: "",
        resource: "serviceaccounts",
        names: &[ROUTER_NAME],
    },
    // The CA bundle in each tenant's namespace; the edge's bootstrap snapshot in the operator's.
    ChildWrite {
        group: "",
        resource: "configmaps",
        names: &[OPERATOR_CA_CONFIG_MAP, EDGE_BOOTSTRAP_CONFIG_MAP],
    },
    ChildWrite {
        group: "apps",
        resource: "deployments",
        names: &[ROUTER_NAME],
    },
    ChildWrite {
        group: "policy",
        resource: "poddisruptionbudgets",
        names: &[ROUTER_NAME],
    },
    ChildWrite {
        group: "networking.k8s.io",
        resource: "networkpolicies",
        names: &[ROUTER_NAME],
    },
];

/// The admission operations the policy checks (a server-side apply is a `CREATE` or an `UPDATE`).
const CHECKED_OPERATIONS: &[&str] = &["CREATE", "UPDATE", "DELETE"];

/// The CEL condition selecting the operator's requests: its service account's user name, in
/// whatever namespace it is installed (a kustomize namespace override keeps the policy valid).
pub const OPERATOR_USER_CONDITION: &str = r#"request.userInfo.username.startsWith("system:serviceaccount:") && request.userInfo.username.endsWith(":bulkhead-operator")"#;

/// The CEL map from `group/resource` to the names the operator may write.
fn allowed_names_expression() -> String {
    let entries: Vec<String> = CHILD_WRITES
        .iter()
        .map(|w| {
            let names: Vec<String> = w.names.iter().map(|n| format!("\"{n}\"")).collect();
            format!("\"{}/{}\": [{}]", w.group, w.resource, names.join(", "))
        })
        .collect();
    format!("{{{}}}", entries.join(", "))
}

/// One admission rule per API group of [`CHILD_WRITES`], in list order.
fn child_write_rules() -> Vec<NamedRuleWithOperations> {
    let mut groups: Vec<&str> = Vec::new();
    for w in CHILD_WRITES {
        if !groups.contains(&w.group) {
            groups.push(w.group);
        }
    }
    groups
        .into_iter()
        .map(|group| NamedRuleWithOperations {
            api_groups: Some(vec![group.to_owned()]),
            api_versions: Some(vec!["*".to_owned()]),
            operations: Some(CHECKED_OPERATIONS.iter().map(|o| (*o).to_owned()).collect()),
            resources: Some(
                CHILD_WRITES
                    .iter()
                    .filter(|w| w.group == group)
                    .map(|w| w.resource.to_owned())
                    .collect(),
            ),
            scope: Some("Namespaced".to_owned()),
            ..NamedRuleWithOperations::default()
        })
        .collect()
}

/// The operator's `ValidatingAdmissionPolicy` (named [`OPERATOR_ROLE_NAME`]): see the module
/// documentation. A failure to evaluate it refuses the request (`failurePolicy: Fail`).
pub fn admission_policy() -> ValidatingAdmissionPolicy {
    let validation = |expression: &str, message_expression: &str| Validation {
        expression: expression.to_owned(),
        message_expression: Some(message_expression.to_owned()),
        reason: Some("Forbidden".to_owned()),
        ..Validation::default()
    };
    ValidatingAdmissionPolicy {
        metadata: ObjectMeta {
            name: Some(OPERATOR_ROLE_NAME.to_owned()),
            labels: Some(labels()),
            ..ObjectMeta::default()
        },
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".to_owned()),
            match_constraints: Some(MatchResources {
                resource_rules: Some(child_write_rules()),
                ..MatchResources::default()
            }),
            match_conditions: Some(vec![MatchCondition {
                name: "bulkhead-operator".to_owned(),
                expression: OPERATOR_USER_CONDITION.to_owned(),
            }]),
            variables: Some(vec![Variable {
                name: "allowedNames".to_owned(),
                expression: format!(
                    r#"{}[request.resource.group + "/" + request.resource.resource]"#,
                    allowed_names_expression()
                ),
            }]),
            validations: Some(vec![
                validation(
                    r#"!request.namespace.startsWith("kube-")"#,
                    r#""the Bulkhead operator never writes in a kube- namespace: " + request.namespace"#,
                ),
                validation(
                    "request.name in variables.allowedNames",
                    r#""the Bulkhead operator writes only its own children, not " + request.resource.resource + " " + request.namespace + "/" + request.name"#,
                ),
            ]),
            ..ValidatingAdmissionPolicySpec::default()
        }),
        ..ValidatingAdmissionPolicy::default()
    }
}

/// The binding that puts [`admission_policy`] in force (`Deny`) in every namespace.
pub fn admission_policy_binding() -> ValidatingAdmissionPolicyBinding {
    ValidatingAdmissionPolicyBinding {
        metadata: ObjectMeta {
            name: Some(OPERATOR_ROLE_NAME.to_owned()),
            labels: Some(labels()),
            ..ObjectMeta::default()
        },
        spec: Some(ValidatingAdmissionPolicyBindingSpec {
            policy_name: Some(OPERATOR_ROLE_NAME.to_owned()),
            validation_actions: Some(vec!["Deny".to_owned()]),
            ..ValidatingAdmissionPolicyBindingSpec::default()
        }),
    }
}

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
        assert!(!allows("bulkhead.dev", "tenants", "get", Scope::Cluster));
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
            "gateway.networking.k8s.io",
            "httproutes",
            "get",
            Scope::Cluster
        ));
        assert!(allows(
            "authentication.k8s.io",
            "tokenreviews",
            "create",
            Scope::Cluster
        ));
    }

    /// Watchers list and watch; children are found by a `list` selecting their name. Only routes
    /// and BackendTLSPolicies (their live status, before it is replaced), referenced TLS Secrets
    /// (their data), the lease and the Gateway API CRDs (their bundle version) are read one by one.
    #[test]
    fn get_is_granted_only_on_routes_policies_secrets_leases_and_crds() {
        let mut with_get: Vec<&str> = OPERATOR_API_CALLS
            .iter()
            .filter(|c| c.verbs.contains(&"get"))
            .flat_map(|c| c.resources.iter().copied())
            .collect();
        with_get.sort_unstable();
        assert_eq!(
            with_get,
            [
                "backendtlspolicies",
                "customresourcedefinitions",
                "grpcroutes",
                "httproutes",
                "leases",
                "secrets",
                "tcproutes",
                "tlsroutes"
            ]
        );
        assert!(allows("", "secrets", "get", Scope::Cluster));
        assert!(!allows("", "namespaces", "get", Scope::Cluster));
    }

    #[test]
    fn the_admission_policy_covers_every_kind_the_operator_may_delete() {
        let deletable: std::collections::BTreeSet<(&str, &str)> = OPERATOR_API_CALLS
            .iter()
            .filter(|c| c.verbs.contains(&"delete") || c.verbs.contains(&"create"))
            .filter(|c| c.scope == Scope::Cluster)
            .flat_map(|c| c.resources.iter().map(move |r| (c.group, *r)))
            // Reviews and events are not objects in a tenant's namespace the operator owns.
            .filter(|(g, _)| *g != "authentication.k8s.io" && *g != "events.k8s.io")
            .collect();
        let policed: std::collections::BTreeSet<(&str, &str)> =
            CHILD_WRITES.iter().map(|w| (w.group, w.resource)).collect();
        assert_eq!(deletable, policed);
        let rules = child_write_rules();
        let covered: usize = rules
            .iter()
            .map(|r| r.resources.as_ref().map_or(0, Vec::len))
            .sum();
        assert_eq!(covered, CHILD_WRITES.len());
    }

    #[test]
    fn the_admission_policy_names_every_child_and_refuses_kube_namespaces() {
        let policy = admission_policy();
        let spec = policy.spec.expect("spec");
        assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
        let allowed = &spec.variables.as_ref().expect("variables")[0].expression;
        for name in [
            ROUTER_NAME,
            BOOTSTRAP_SECRET_NAME,
            OPERATOR_CA_CONFIG_MAP,
            EDGE_BOOTSTRAP_CONFIG_MAP,
        ] {
            assert!(allowed.contains(&format!("\"{name}\"")), "{allowed}");
        }
        assert!(allowed.contains(r#""apps/deployments": ["bulkhead-router"]"#));
        let expressions: Vec<&str> = spec
            .validations
            .iter()
            .flatten()
            .map(|v| v.expression.as_str())
            .collect();
        assert!(expressions.contains(&r#"!request.namespace.startsWith("kube-")"#));
        assert!(expressions.contains(&"request.name in variables.allowedNames"));
        let binding = admission_policy_binding().spec.expect("binding spec");
        assert_eq!(binding.policy_name.as_deref(), Some(OPERATOR_ROLE_NAME));
        assert_eq!(
            binding.validation_actions.as_deref(),
            Some(&["Deny".to_owned()][..])
        );
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
