//! Which version of each Gateway API kind the API server serves, found by API discovery.
//!
//! Gateway API v1.4 and v1.5, standard and experimental channels, serve some kinds at different
//! versions: `ReferenceGrant` at `v1` (v1.5) or `v1beta1` (v1.4), `TLSRoute` at `v1` (v1.5),
//! `v1alpha3` or `v1alpha2` (v1.4 experimental), `TCPRoute` at `v1alpha2` (experimental only). The
//! operator's types read every one of these versions (their schemas are the same for the fields
//! the translator reads), so each kind is watched at the newest version the cluster serves
//! ([`KIND_VERSIONS`], newest first). A required kind that is served at none of its versions is
//! reported as degraded (log, readiness detail, `bulkhead_operator_degraded_kinds`) instead of
//! being served as a silently reduced world; an optional kind (`TLSRoute`, `TCPRoute`, absent from
//! v1.4's standard channel; `ListenerSet`, new in v1.5; `BackendTLSPolicy`, `v1` since v1.4 and
//! `v1alpha3` before) is logged. v1.4's experimental `XListenerSet`
//! (`gateway.networking.x-k8s.io/v1alpha1`) is not read. Discovery runs when the operator starts: a Gateway API
//! upgrade that changes a served version is picked up by the next restart.

use crate::index::Kind;
use ::kube::Client;
use std::collections::{BTreeMap, BTreeSet};

/// The Gateway API group.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// The versions the operator reads for one kind, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindVersions {
    /// The kind.
    pub kind: Kind,
    /// Its plural resource name.
    pub plural: &'static str,
    /// Versions the operator reads, newest first.
    pub versions: &'static [&'static str],
    /// Whether Bulkhead cannot work as documented without it.
    pub required: bool,
}

/// Every Gateway API kind the operator watches.
pub const KIND_VERSIONS: &[KindVersions] = &[
    KindVersions {
        kind: Kind::GatewayClass,
        plural: "gatewayclasses",
        versions: &["v1"],
        required: true,
    },
    KindVersions {
        kind: Kind::Gateway,
        plural: "gateways",
        versions: &["v1"],
        required: true,
    },
    KindVersions {
        kind: Kind::HttpRoute,
        plural: "httproutes",
        versions: &["v1"],
        required: true,
    },
    KindVersions {
        kind: Kind::GrpcRoute,
        plural: "grpcroutes",
        versions: &["v1"],
        required: true,
    },
    KindVersions {
        kind: Kind::ReferenceGrant,
        plural: "referencegrants",
        versions: &["v1", "v1beta1"],
        required: true,
    },
    KindVersions {
        kind: Kind::TlsRoute,
        plural: "tlsroutes",
        versions: &["v1", "v1alpha3", "v1alpha2"],
        required: false,
    },
    KindVersions {
        kind: Kind::TcpRoute,
        plural: "tcproutes",
        versions: &["v1alpha2"],
        required: false,
    },
    KindVersions {
        kind: Kind::ListenerSet,
        plural: "listenersets",
        versions: &["v1"],
        required: false,
    },
    KindVersions {
        kind: Kind::BackendTlsPolicy,
        plural: "backendtlspolicies",
        versions: &["v1", "v1alpha3"],
        required: false,
    },
];

/// The version each kind is watched at, and what is missing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServedVersions {
    /// Kind → the version to watch.
    pub chosen: BTreeMap<Kind, &'static str>,
    /// Required kinds served at none of their versions.
    pub missing_required: Vec<&'static KindVersions>,
    /// Optional kinds served at none of their versions.
    pub missing_optional: Vec<&'static KindVersions>,
}

impl ServedVersions {
    /// Without discovery: each kind at its newest version (what a failed discovery falls back to).
    pub fn newest() -> Self {
        Self {
            chosen: KIND_VERSIONS
                .iter()
                .map(|k| (k.kind, k.versions[0]))
                .collect(),
            ..Self::default()
        }
    }

    /// The version to watch `kind` at: the discovered one, else its newest.
    pub fn version_of(&self, kind: Kind) -> Option<&'static str> {
        self.chosen.get(&kind).copied().or_else(|| {
            KIND_VERSIONS
                .iter()
                .find(|k| k.kind == kind)
                .map(|k| k.versions[0])
        })
    }

    /// Why `kind` is degraded, when it is a required kind the API server does not serve.
    pub fn missing_reason(kind: &KindVersions) -> String {
        format!(
            "{} is not served by the API server at any version Bulkhead reads ({}); install the Gateway API CRDs (v1.4 or v1.5)",
            kind.kind,
            kind.versions.join(", ")
        )
    }
}

/// Chooses, from `served` (version → plural resource names the group serves at that version), the
/// newest version the operator reads of every kind.
pub fn choose(served: &BTreeMap<String, BTreeSet<String>>) -> ServedVersions {
    let mut out = ServedVersions::default();
    for kind in KIND_VERSIONS {
        let found = kind.versions.iter().find(|v| {
            served
                .get(**v)
                .is_some_and(|resources| resources.contains(kind.plural))
        });
        match (found, kind.required) {
            (Some(v), _) => {
                out.chosen.insert(kind.kind, v);
            }
            (None, true) => {
                out.chosen.insert(kind.kind, kind.versions[0]);
                out.missing_required.push(kind);
            }
            (None, false) => {
                out.chosen.insert(kind.kind, kind.versions[0]);
                out.missing_optional.push(kind);
            }
        }
    }
    out
}

/// Asks the API server which versions of the Gateway API group it serves, and which resources at
/// each; a group it does not serve at all yields every kind missing.
pub async fn discover(client: &Client) -> Result<ServedVersions, ::kube::Error> {
    let groups = client.list_api_groups().await?;
    let mut served = BTreeMap::new();
    if let Some(group) = groups.groups.iter().find(|g| g.name == GATEWAY_GROUP) {
        for version in &group.versions {
            let resources = client
                .list_api_group_resources(&version.group_version)
                .await?;
            served.insert(
                version.version.clone(),
                resources.resources.into_iter().map(|r| r.name).collect(),
            );
        }
    }
    Ok(choose(&served))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::testing::{respond_json, MockApi};

    fn served(pairs: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        pairs
            .iter()
            .map(|(v, rs)| {
                (
                    (*v).to_owned(),
                    rs.iter().map(|r| (*r).to_owned()).collect(),
                )
            })
            .collect()
    }

    const V1_CORE: &[&str] = &["gatewayclasses", "gateways", "httproutes", "grpcroutes"];

    #[test]
    fn gateway_api_1_4_standard_reads_reference_grants_at_v1beta1() {
        let mut v1 = V1_CORE.to_vec();
        v1.extend(["gateways/status", "backendtlspolicies"]);
        let chosen = choose(&served(&[
            ("v1", &v1),
            ("v1beta1", &["referencegrants", "gateways"]),
        ]));
        assert_eq!(chosen.chosen[&Kind::ReferenceGrant], "v1beta1");
        assert_eq!(chosen.chosen[&Kind::HttpRoute], "v1");
        assert_eq!(chosen.chosen[&Kind::BackendTlsPolicy], "v1");
        assert!(chosen.missing_required.is_empty());
        let optional: Vec<_> = chosen.missing_optional.iter().map(|k| k.kind).collect();
        assert_eq!(
            optional,
            [Kind::TlsRoute, Kind::TcpRoute, Kind::ListenerSet]
        );
    }

    #[test]
    fn gateway_api_1_4_experimental_reads_tls_routes_at_v1alpha2_or_v1alpha3() {
        let chosen = choose(&served(&[
            ("v1", V1_CORE),
            ("v1beta1", &["referencegrants"]),
            ("v1alpha2", &["tlsroutes", "tcproutes", "referencegrants"]),
        ]));
        assert_eq!(chosen.chosen[&Kind::TlsRoute], "v1alpha2");
        assert_eq!(chosen.chosen[&Kind::TcpRoute], "v1alpha2");
        let with_v1alpha3 = choose(&served(&[
            ("v1", V1_CORE),
            ("v1beta1", &["referencegrants"]),
            ("v1alpha3", &["tlsroutes"]),
            ("v1alpha2", &["tlsroutes", "tcproutes"]),
        ]));
        assert_eq!(with_v1alpha3.chosen[&Kind::TlsRoute], "v1alpha3");
    }

    #[test]
    fn gateway_api_1_5_reads_everything_standard_at_v1() {
        let mut v1 = V1_CORE.to_vec();
        v1.extend(["referencegrants", "tlsroutes"]);
        let chosen = choose(&served(&[("v1", &v1), ("v1beta1", &["referencegrants"])]));
        assert_eq!(chosen.chosen[&Kind::ReferenceGrant], "v1");
        assert_eq!(chosen.chosen[&Kind::TlsRoute], "v1");
    }

    #[test]
    fn a_cluster_without_reference_grants_is_reported_missing() {
        let chosen = choose(&served(&[("v1", V1_CORE)]));
        let optional: Vec<_> = chosen.missing_optional.iter().map(|k| k.kind).collect();
        assert_eq!(
            optional,
            [
                Kind::TlsRoute,
                Kind::TcpRoute,
                Kind::ListenerSet,
                Kind::BackendTlsPolicy
            ]
        );
        let missing: Vec<_> = chosen.missing_required.iter().map(|k| k.kind).collect();
        assert_eq!(missing, [Kind::ReferenceGrant]);
        let reason = ServedVersions::missing_reason(chosen.missing_required[0]);
        assert!(reason.contains("v1, v1beta1"), "{reason}");
    }

    #[tokio::test]
    async fn discovery_asks_the_group_at_every_version_it_serves() {
        let (client, mut mock) = MockApi::pair();
        let serve = async {
            let (request, send) = mock.next_request().await;
            assert_eq!(request.uri().path(), "/apis");
            respond_json(
                send,
                200,
                &serde_json::json!({
                    "kind": "APIGroupList", "apiVersion": "v1",
                    "groups": [
                        {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}]},
                        {"name": GATEWAY_GROUP, "versions": [
                            {"groupVersion": "gateway.networking.k8s.io/v1", "version": "v1"},
                            {"groupVersion": "gateway.networking.k8s.io/v1beta1", "version": "v1beta1"}
                        ]}
                    ]
                }),
            );
            for (path, resources) in [
                ("/apis/gateway.networking.k8s.io/v1", V1_CORE.to_vec()),
                (
                    "/apis/gateway.networking.k8s.io/v1beta1",
                    vec!["referencegrants"],
                ),
            ] {
                let (request, send) = mock.next_request().await;
                assert_eq!(request.uri().path(), path);
                let list: Vec<_> = resources
                    .iter()
                    .map(|r| serde_json::json!({"name": r, "singularName": "", "namespaced": true, "kind": "X", "verbs": ["list", "watch"]}))
                    .collect();
                respond_json(
                    send,
                    200,
                    &serde_json::json!({
                        "kind": "APIResourceList", "apiVersion": "v1",
                        "groupVersion": &path[6..],
                        "resources": list
                    }),
                );
            }
        };
        let (served, ()) = tokio::join!(discover(&client), serve);
        let served = served.expect("discovered");
        assert_eq!(served.chosen[&Kind::ReferenceGrant], "v1beta1");
        assert!(served.missing_required.is_empty());
    }
}
