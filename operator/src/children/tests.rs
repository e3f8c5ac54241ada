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
