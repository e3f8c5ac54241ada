//! The router `Service` and the `NetworkPolicy` that admits the edge and the scraper and lets the
//! routers reach only what they need.

use super::*;

pub(super) fn service(ctx: &Ctx<'_>) -> Service {
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

pub(super) fn tcp_port(port: i32) -> NetworkPolicyPort {
    protocol_port("TCP", port)
}

pub(super) fn protocol_port(protocol: &str, port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some(protocol.to_owned()),
        ..NetworkPolicyPort::default()
    }
}

/// Pods labelled `key=value` in the namespace `namespace` (both must match: one peer).
pub(super) fn pods_in(namespace: &str, key: &str, value: &str) -> NetworkPolicyPeer {
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
pub(super) fn router_egress(settings: &ChildSettings) -> Vec<NetworkPolicyEgressRule> {
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
pub(super) fn network_policy(ctx: &Ctx<'_>) -> NetworkPolicy {
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
