//! Typed checks of the install manifests in `deploy/`.
//!
//! Every document of every file listed under `resources:` in `deploy/kustomization.yaml` is parsed
//! into its k8s-openapi (or gateway-api) type by kind; an unknown kind, an unknown field (the typed
//! object must serialise back to exactly the document) or a failed check fails the test. When
//! `kubectl` is on `PATH`, the output of `kubectl kustomize deploy/` gets the same checks and must
//! hold the same objects; otherwise that part is skipped with a note.
//!
//! Checks: hardened security contexts on every pod; no Kubernetes credentials in data-plane pods
//! and no RBAC for their service accounts; the operator's RBAC equals `rbac::cluster_role()` and
//! `rbac::namespace_role()`; the CRD copy equals `crds/tenant.yaml`; the edge's LoadBalancer
//! Service, PDB and HPA; the GatewayClass; the NetworkPolicies; the dashboard's metric names.

use bulkhead_operator::children::{
    hardened_pod_security_context, hardened_security_context, SNAPSHOT_AUDIENCE, SYSTEM_NAMESPACE,
};
use bulkhead_operator::rbac;
use gateway_api::apis::standard::gatewayclasses::GatewayClass;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The operator's service account: the only one allowed any RBAC binding.
const OPERATOR_SA: &str = "bulkhead-operator";
/// Data-plane service accounts: never bound to any role.
const DATA_PLANE_SAS: &[&str] = &["bulkhead-edge", "bulkhead-router"];
/// The snapshot API as the edge reaches it (and the operator tells the routers): derived from the
/// pod's namespace, which Kubernetes expands from the `POD_NAMESPACE` env var, so a kustomize
/// `namespace:` override keeps it right.
const OPERATOR_URL: &str = "https://bulkhead-operator.$(POD_NAMESPACE).svc:8443";

/// One typed install object.
#[derive(Debug, Clone)]
enum Manifest {
    Namespace(Namespace),
    Crd(Box<CustomResourceDefinition>),
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    Role(Role),
    ClusterRoleBinding(ClusterRoleBinding),
    RoleBinding(RoleBinding),
    Deployment(Box<Deployment>),
    Service(Service),
    PodDisruptionBudget(PodDisruptionBudget),
    HorizontalPodAutoscaler(HorizontalPodAutoscaler),
    NetworkPolicy(NetworkPolicy),
    GatewayClass(GatewayClass),
    AdmissionPolicy(Box<ValidatingAdmissionPolicy>),
    AdmissionPolicyBinding(ValidatingAdmissionPolicyBinding),
}

/// The parsed install: typed objects and their JSON, keyed by (kind, namespace, name).
struct Install {
    objects: Vec<Manifest>,
    json: BTreeMap<(String, String, String), serde_json::Value>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("operator/ has a parent")
        .to_path_buf()
}

fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

/// Deserialises `value` as `T` and checks it serialises back to the same document, so a misspelt
/// or misplaced field (which serde would silently drop) fails.
fn typed<T: DeserializeOwned + Serialize>(source: &str, value: &serde_json::Value) -> T {
    let object: T = serde_path_to_error::deserialize(value.clone())
        .unwrap_or_else(|e| panic!("{source}: {} at {}", e.inner(), e.path()));
    let back = serde_json::to_value(&object).expect("serialises");
    if let Some(diff) = first_difference(value, &back, "") {
        panic!("{source}: the document has fields its type does not know: {diff}");
    }
    object
}

/// Where two JSON documents differ (numbers compare by value: `0` equals `0.0`), or `None`.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            (x.as_f64() != y.as_f64()).then(|| format!("{path}: {x} != {y}"))
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(xv), Some(yv)) => first_difference(xv, yv, &format!("{path}.{k}")),
                (Some(_), None) => Some(format!("{path}.{k} is lost")),
                (None, _) => Some(format!("{path}.{k} appears")),
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (xv, yv))| first_difference(xv, yv, &format!("{path}[{i}]"))),
        _ => (a != b).then(|| format!("{path}: {a} != {b}")),
    }
}

fn parse_install(source: &str, text: &str) -> Install {
    let mut install = Install {
        objects: Vec::new(),
        json: BTreeMap::new(),
    };
    for document in serde_yaml::Deserializer::from_str(text) {
        let yaml = serde_yaml::Value::deserialize(document)
            .unwrap_or_else(|e| panic!("{source}: invalid YAML: {e}"));
        if yaml.is_null() {
            continue;
        }
        let value = serde_json::to_value(&yaml).expect("YAML converts to JSON");
        let api_version = value["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        let name = value["metadata"]["name"].as_str().unwrap_or_default();
        let namespace = value["metadata"]["namespace"].as_str().unwrap_or_default();
        let at = format!("{source}: {kind} {namespace}/{name}");
        let manifest = match (api_version.as_str(), kind.as_str()) {
            ("v1", "Namespace") => Manifest::Namespace(typed(&at, &value)),
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                Manifest::Crd(Box::new(typed(&at, &value)))
            }
            ("v1", "ServiceAccount") => Manifest::ServiceAccount(typed(&at, &value)),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                Manifest::ClusterRole(typed(&at, &value))
            }
            ("rbac.authorization.k8s.io/v1", "Role") => Manifest::Role(typed(&at, &value)),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                Manifest::ClusterRoleBinding(typed(&at, &value))
            }
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                Manifest::RoleBinding(typed(&at, &value))
            }
            ("apps/v1", "Deployment") => Manifest::Deployment(Box::new(typed(&at, &value))),
            ("v1", "Service") => Manifest::Service(typed(&at, &value)),
            ("policy/v1", "PodDisruptionBudget") => {
                Manifest::PodDisruptionBudget(typed(&at, &value))
            }
            ("autoscaling/v2", "HorizontalPodAutoscaler") => {
                Manifest::HorizontalPodAutoscaler(typed(&at, &value))
            }
            ("networking.k8s.io/v1", "NetworkPolicy") => {
                Manifest::NetworkPolicy(typed(&at, &value))
            }
            ("gateway.networking.k8s.io/v1", "GatewayClass") => {
                Manifest::GatewayClass(typed(&at, &value))
            }
            ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy") => {
                Manifest::AdmissionPolicy(Box::new(typed(&at, &value)))
            }
            ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding") => {
                Manifest::AdmissionPolicyBinding(typed(&at, &value))
            }
            _ => panic!("{at}: unknown apiVersion/kind {api_version}/{kind}"),
        };
        let key = (kind, namespace.to_owned(), name.to_owned());
        assert!(
            install.json.insert(key.clone(), value).is_none(),
            "{source}: duplicate object {key:?}"
        );
        install.objects.push(manifest);
    }
    install
}

/// The files listed under `resources:` in `deploy/kustomization.yaml`.
fn kustomization_resources() -> Vec<String> {
    #[derive(Deserialize)]
    struct Kustomization {
        resources: Vec<String>,
    }
    let text = std::fs::read_to_string(deploy_dir().join("kustomization.yaml"))
        .expect("deploy/kustomization.yaml");
    let k: Kustomization = serde_yaml::from_str(&text).expect("kustomization parses");
    k.resources
}

fn parse_files() -> Install {
    let mut all = String::new();
    for file in kustomization_resources() {
        let path = deploy_dir().join(&file);
        assert!(
            path.starts_with(deploy_dir()) && !file.contains(".."),
            "{file} is outside deploy/ (kustomize refuses it)"
        );
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        all.push_str("\n---\n");
        all.push_str(&text);
    }
    parse_install("deploy/ files", &all)
}

fn meta_of(m: &Manifest) -> &ObjectMeta {
    match m {
        Manifest::Namespace(o) => &o.metadata,
        Manifest::Crd(o) => &o.metadata,
        Manifest::ServiceAccount(o) => &o.metadata,
        Manifest::ClusterRole(o) => &o.metadata,
        Manifest::Role(o) => &o.metadata,
        Manifest::ClusterRoleBinding(o) => &o.metadata,
        Manifest::RoleBinding(o) => &o.metadata,
        Manifest::Deployment(o) => &o.metadata,
        Manifest::Service(o) => &o.metadata,
        Manifest::PodDisruptionBudget(o) => &o.metadata,
        Manifest::HorizontalPodAutoscaler(o) => &o.metadata,
        Manifest::NetworkPolicy(o) => &o.metadata,
        Manifest::AdmissionPolicy(o) => &o.metadata,
        Manifest::AdmissionPolicyBinding(o) => &o.metadata,
        Manifest::GatewayClass(o) => &o.metadata,
    }
}

fn name_of(m: &Manifest) -> &str {
    meta_of(m).name.as_deref().unwrap_or_default()
}

impl Install {
    fn deployments(&self) -> impl Iterator<Item = &Deployment> {
        self.objects.iter().filter_map(|m| match m {
            Manifest::Deployment(d) => Some(d.as_ref()),
            _ => None,
        })
    }

    fn deployment(&self, name: &str) -> &Deployment {
        self.deployments()
            .find(|d| d.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no Deployment {name}"))
    }

    fn service(&self, name: &str) -> &Service {
        self.objects
            .iter()
            .find_map(|m| match m {
                Manifest::Service(s) if s.metadata.name.as_deref() == Some(name) => Some(s),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no Service {name}"))
    }

    fn service_account(&self, name: &str) -> &ServiceAccount {
        self.objects
            .iter()
            .find_map(|m| match m {
                Manifest::ServiceAccount(s) if s.metadata.name.as_deref() == Some(name) => Some(s),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no ServiceAccount {name}"))
    }
}

fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("Deployment has a pod spec")
}

fn check_pods_are_hardened(install: &Install) {
    let mut seen = 0;
    for d in install.deployments() {
        seen += 1;
        let name = d.metadata.name.as_deref().unwrap_or_default();
        let pod = pod_spec(d);
        assert_eq!(
            pod.security_context,
            Some(hardened_pod_security_context()),
            "{name}: pod securityContext"
        );
        for flag in [pod.host_network, pod.host_pid, pod.host_ipc] {
            assert_ne!(flag, Some(true), "{name}: host namespaces");
        }
        assert_eq!(
            pod.enable_service_links,
            Some(false),
            "{name}: service links"
        );
        let containers = pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten());
        for c in containers {
            let at = format!("{name}/{}", c.name);
            assert_eq!(
                c.security_context,
                Some(hardened_security_context()),
                "{at}: container securityContext"
            );
            let requests = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .unwrap_or_else(|| panic!("{at}: no resource requests"));
            assert!(
                requests.contains_key("cpu") && requests.contains_key("memory"),
                "{at}: cpu and memory requests"
            );
            let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
                p.as_ref()
                    .and_then(|p| p.http_get.as_ref())
                    .and_then(|h| h.path.clone())
            };
            assert_eq!(
                probe_path(&c.readiness_probe).as_deref(),
                Some("/readyz"),
                "{at}"
            );
            assert_eq!(
                probe_path(&c.liveness_probe).as_deref(),
                Some("/healthz"),
                "{at}"
            );
            for port in c.ports.iter().flatten() {
                assert!(port.host_port.is_none(), "{at}: hostPort");
                assert!(port.container_port >= 1024, "{at}: privileged port");
            }
            let image = c.image.as_deref().unwrap_or_default();
            assert!(
                image.starts_with("ghcr.io/bulkhead/bulkhead:"),
                "{at}: one image for every subcommand, got {image}"
            );
            assert!(!image.ends_with(":latest"), "{at}: pinned tag");
        }
    }
    assert_eq!(seen, 2, "the operator and the edge Deployments");
}

fn check_data_plane_has_no_credentials(install: &Install) {
    for d in install.deployments() {
        let name = d.metadata.name.as_deref().unwrap_or_default();
        let pod = pod_spec(d);
        let sa = pod.service_account_name.as_deref().unwrap_or("default");
        assert_ne!(sa, "default", "{name}: its own service account");
        let sa_object = install.service_account(sa);
        assert_eq!(
            sa_object.automount_service_account_token,
            Some(false),
            "{sa}: ServiceAccount must not automount"
        );
        if sa == OPERATOR_SA {
            continue;
        }
        assert!(DATA_PLANE_SAS.contains(&sa), "{name}: unexpected {sa}");
        assert_eq!(
            pod.automount_service_account_token,
            Some(false),
            "{name}: data-plane pods hold no Kubernetes credentials"
        );
        let tokens: Vec<_> = pod
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.projected.as_ref())
            .flat_map(|p| p.sources.iter().flatten())
            .filter_map(|s| s.service_account_token.as_ref())
            .collect();
        assert_eq!(tokens.len(), 1, "{name}: one projected token");
        assert_eq!(tokens[0].audience.as_deref(), Some(SNAPSHOT_AUDIENCE));
        assert_eq!(tokens[0].expiration_seconds, Some(3600));
        let flag = |f: &str| flag_value(name, pod, f);
        check_pod_namespace_env(name, pod);
        assert_eq!(flag("--operator-url"), OPERATOR_URL);
        assert_eq!(flag("--token-file"), "/var/run/secrets/bulkhead/token");
        assert_eq!(flag("--operator-ca"), "/var/run/bulkhead/ca/ca.crt");
        // The data plane never mounts a Secret whole (the operator's TLS Secret holds its key).
        for v in pod.volumes.iter().flatten() {
            assert!(v.secret.is_none(), "{name}: Secret volume {}", v.name);
            for s in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
                if let Some(secret) = &s.secret {
                    let keys: Vec<_> = secret.items.iter().flatten().map(|i| &i.key).collect();
                    assert_eq!(keys, ["ca.crt"], "{name}: only the CA certificate");
                }
            }
        }
    }
}

fn subject_is_data_plane(s: &Subject) -> bool {
    match s.kind.as_str() {
        "ServiceAccount" => DATA_PLANE_SAS.contains(&s.name.as_str()),
        // Groups that contain every service account (of a namespace) would include the data plane.
        "Group" => s.name.starts_with("system:serviceaccounts"),
        _ => false,
    }
}

fn check_rbac(install: &Install) {
    let expected_cluster_role = rbac::cluster_role();
    let expected_role = rbac::namespace_role(SYSTEM_NAMESPACE);
    let mut cluster_roles = 0;
    let mut roles = 0;
    for m in &install.objects {
        match m {
            Manifest::ClusterRole(r) => {
                cluster_roles += 1;
                assert_eq!(
                    r,
                    &expected_cluster_role,
                    "deploy/operator.yaml's ClusterRole differs from rbac::cluster_role(); expected:\n{}",
                    serde_yaml::to_string(&expected_cluster_role).unwrap_or_default()
                );
            }
            Manifest::Role(r) => {
                roles += 1;
                assert_eq!(
                    r,
                    &expected_role,
                    "deploy/operator.yaml's Role differs from rbac::namespace_role(); expected:\n{}",
                    serde_yaml::to_string(&expected_role).unwrap_or_default()
                );
            }
            Manifest::ClusterRoleBinding(b) => {
                assert_eq!(b.role_ref.name, rbac::OPERATOR_ROLE_NAME);
                check_binding_subjects(name_of(m), b.subjects.as_deref());
            }
            Manifest::RoleBinding(b) => {
                assert_eq!(b.role_ref.name, rbac::OPERATOR_ROLE_NAME);
                check_binding_subjects(name_of(m), b.subjects.as_deref());
            }
            _ => {}
        }
    }
    assert_eq!((cluster_roles, roles), (1, 1), "one ClusterRole, one Role");
}

/// The admission policy bounding the operator's writes equals `rbac::admission_policy()` (and its
/// binding `rbac::admission_policy_binding()`): exactly one of each. Both are cluster-scoped; a
/// kustomize `namespace:` override (v5.5 does not know these kinds) sets a namespace on them, which
/// the API server drops, so it is ignored here.
fn check_admission_policy(install: &Install) {
    let policy = rbac::admission_policy();
    let binding = rbac::admission_policy_binding();
    let mut seen = (0, 0);
    for m in &install.objects {
        match m {
            Manifest::AdmissionPolicy(p) => {
                seen.0 += 1;
                let mut p = (**p).clone();
                p.metadata.namespace = None;
                assert_eq!(
                    p,
                    policy,
                    "deploy/admission.yaml's policy differs from rbac::admission_policy(); expected:\n{}",
                    serde_yaml::to_string(&policy).unwrap_or_default()
                );
            }
            Manifest::AdmissionPolicyBinding(b) => {
                seen.1 += 1;
                let mut b = b.clone();
                b.metadata.namespace = None;
                assert_eq!(
                    b,
                    binding,
                    "deploy/admission.yaml's binding differs from rbac::admission_policy_binding(); expected:\n{}",
                    serde_yaml::to_string(&binding).unwrap_or_default()
                );
            }
            _ => {}
        }
    }
    assert_eq!(
        seen,
        (1, 1),
        "one ValidatingAdmissionPolicy bounding the operator's writes, one binding"
    );
}

/// A pod's `POD_NAMESPACE` env var comes from its own namespace (the Downward API).
fn check_pod_namespace_env(name: &str, pod: &PodSpec) {
    let from_namespace = pod.containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "POD_NAMESPACE")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(
        from_namespace,
        Some("metadata.namespace"),
        "{name}: POD_NAMESPACE (the operator URL is derived from it)"
    );
}

/// The value following `flag` in the first container's args.
fn flag_value(name: &str, pod: &PodSpec, flag: &str) -> String {
    let args = pod.containers[0].args.clone().unwrap_or_default();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| panic!("{name}: no {flag}"))
}

fn check_binding_subjects(binding: &str, subjects: Option<&[Subject]>) {
    let subjects = subjects.unwrap_or_default();
    assert!(!subjects.is_empty(), "{binding}: no subjects");
    for s in subjects {
        assert!(
            !subject_is_data_plane(s),
            "{binding}: binds data-plane identity {s:?}"
        );
        assert_eq!(
            (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()),
            ("ServiceAccount", OPERATOR_SA, Some(SYSTEM_NAMESPACE)),
            "{binding}: only the operator is bound"
        );
    }
}

fn check_crd_copy() {
    let original = std::fs::read_to_string(repo_root().join("crds/tenant.yaml")).expect("crds");
    let copy = std::fs::read_to_string(deploy_dir().join("crds/tenant.yaml")).expect("copy");
    assert_eq!(
        copy, original,
        "deploy/crds/tenant.yaml differs from crds/tenant.yaml: cp crds/tenant.yaml deploy/crds/"
    );
}

fn check_crd(install: &Install) {
    let crds: Vec<_> = install
        .objects
        .iter()
        .filter_map(|m| match m {
            Manifest::Crd(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(crds.len(), 1);
    assert_eq!(
        crds[0].metadata.name.as_deref(),
        Some("tenants.bulkhead.dev")
    );
    assert_eq!(crds[0].spec.scope, "Cluster");
}

fn check_namespaces(install: &Install) {
    let mut namespaces = 0;
    for m in &install.objects {
        let meta = meta_of(m);
        let scoped = !matches!(
            m,
            Manifest::Namespace(_)
                | Manifest::Crd(_)
                | Manifest::ClusterRole(_)
                | Manifest::ClusterRoleBinding(_)
                | Manifest::GatewayClass(_)
                | Manifest::AdmissionPolicy(_)
                | Manifest::AdmissionPolicyBinding(_)
        );
        let expected = scoped.then_some(SYSTEM_NAMESPACE);
        assert_eq!(
            meta.namespace.as_deref(),
            expected,
            "{}: namespace",
            name_of(m)
        );
        if let Manifest::Namespace(ns) = m {
            namespaces += 1;
            assert_eq!(ns.metadata.name.as_deref(), Some(SYSTEM_NAMESPACE));
            let labels = ns.metadata.labels.clone().unwrap_or_default();
            assert_eq!(
                labels
                    .get("pod-security.kubernetes.io/enforce")
                    .map(String::as_str),
                Some("restricted")
            );
        }
        if matches!(m, Manifest::Crd(_)) {
            continue; // a byte-for-byte copy of crds/tenant.yaml
        }
        let part_of = meta
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/part-of"));
        assert_eq!(
            part_of.map(String::as_str),
            Some("bulkhead"),
            "{}",
            name_of(m)
        );
    }
    assert_eq!(namespaces, 1);
}

fn check_edge(install: &Install) {
    let edge = install.deployment("bulkhead-edge");
    let spec = edge.spec.as_ref().expect("edge spec");
    assert!(
        spec.replicas.is_none(),
        "the HPA owns the edge's replicas; re-applying must not reset them"
    );
    let lb = install.service("bulkhead-edge");
    let lb_spec = lb.spec.as_ref().expect("service spec");
    assert_eq!(lb_spec.type_.as_deref(), Some("LoadBalancer"));
    let ports: BTreeSet<(i32, String)> = lb_spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let target = match &p.target_port {
                Some(IntOrString::String(s)) => s.clone(),
                other => panic!("edge port {}: named targetPort, got {other:?}", p.port),
            };
            (p.port, target)
        })
        .collect();
    assert_eq!(
        ports,
        BTreeSet::from([(443, "https".to_owned()), (80, "http".to_owned())])
    );
    let container_ports: BTreeMap<String, i32> = pod_spec(edge).containers[0]
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
        .collect();
    assert_eq!(container_ports.get("https"), Some(&8443));
    assert_eq!(container_ports.get("http"), Some(&8080));
    // The edge runs the data-plane-only binary, as the routers do.
    assert_eq!(
        pod_spec(edge).containers[0].command.as_deref(),
        Some(&[bulkhead_operator::children::ROUTER_PROGRAM.to_owned()][..])
    );

    let pdb = install
        .objects
        .iter()
        .find_map(|m| match m {
            Manifest::PodDisruptionBudget(p) => Some(p),
            _ => None,
        })
        .expect("edge PDB");
    let pdb_spec = pdb.spec.as_ref().expect("pdb spec");
    assert_eq!(pdb_spec.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(pdb_spec.selector.as_ref(), Some(&spec.selector));

    let hpa = install
        .objects
        .iter()
        .find_map(|m| match m {
            Manifest::HorizontalPodAutoscaler(h) => Some(h),
            _ => None,
        })
        .expect("edge HPA");
    let hpa_spec = hpa.spec.as_ref().expect("hpa spec");
    assert_eq!(hpa_spec.scale_target_ref.kind, "Deployment");
    assert_eq!(hpa_spec.scale_target_ref.name, "bulkhead-edge");
    assert!(hpa_spec.min_replicas.unwrap_or(1) >= 2);
    let cpu = hpa_spec
        .metrics
        .iter()
        .flatten()
        .filter_map(|m| m.resource.as_ref())
        .any(|r| r.name == "cpu");
    assert!(cpu, "the HPA scales on CPU");
}

fn check_operator(install: &Install) {
    let op = install.deployment("bulkhead-operator");
    let pod = pod_spec(op);
    assert_eq!(pod.service_account_name.as_deref(), Some(OPERATOR_SA));
    assert_eq!(pod.automount_service_account_token, Some(true));
    check_pod_namespace_env("bulkhead-operator", pod);
    assert_eq!(
        flag_value("bulkhead-operator", pod, "--operator-url"),
        OPERATOR_URL
    );
    let svc = install.service("bulkhead-operator");
    let ports: BTreeSet<i32> = svc
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, BTreeSet::from([8443, 9901]));
    assert_eq!(
        svc.spec.as_ref().and_then(|s| s.type_.as_deref()),
        Some("ClusterIP")
    );
    // Only the leader listens for snapshots: the Service must select its label, or standbys
    // (ready, but not listening) receive data-plane connections.
    let selector = svc.spec.as_ref().and_then(|s| s.selector.clone());
    assert_eq!(
        selector
            .as_ref()
            .and_then(|s| s.get(bulkhead_operator::kube::leader_label::LEADER_LABEL))
            .map(String::as_str),
        Some(bulkhead_operator::kube::leader_label::LEADER_VALUE),
        "the operator Service must select the leader's pod label: {selector:?}"
    );
}

fn check_gateway_class(install: &Install) {
    let classes: Vec<_> = install
        .objects
        .iter()
        .filter_map(|m| match m {
            Manifest::GatewayClass(g) => Some(g),
            _ => None,
        })
        .collect();
    assert_eq!(classes.len(), 1);
    assert_eq!(
        classes[0].metadata.name.as_deref(),
        Some(bulkhead_crds::GATEWAY_CLASS_NAME)
    );
    assert_eq!(
        classes[0].spec.controller_name,
        bulkhead_crds::CONTROLLER_NAME
    );
}

fn check_network_policies(install: &Install) {
    let policies: Vec<&NetworkPolicy> = install
        .objects
        .iter()
        .filter_map(|m| match m {
            Manifest::NetworkPolicy(p) => Some(p),
            _ => None,
        })
        .collect();
    let deny = policies
        .iter()
        .find(|p| {
            p.spec.as_ref().is_some_and(|s| {
                s.pod_selector.clone().unwrap_or_default() == Default::default()
                    && s.ingress.is_none()
                    && s.policy_types.as_deref() == Some(&["Ingress".to_owned()][..])
            })
        })
        .is_some();
    assert!(deny, "a default-deny ingress policy for bulkhead-system");
    // Every pod has a policy selecting it by name that admits its ports and nothing else.
    for d in install.deployments() {
        let name = d.metadata.name.clone().unwrap_or_default();
        let selected: Vec<_> = policies
            .iter()
            .filter_map(|p| p.spec.as_ref())
            .filter(|s| {
                s.pod_selector
                    .as_ref()
                    .and_then(|sel| sel.match_labels.as_ref())
                    .and_then(|l| l.get("app.kubernetes.io/name"))
                    == Some(&name)
            })
            .collect();
        assert_eq!(selected.len(), 1, "{name}: one NetworkPolicy");
        let admitted: BTreeSet<i32> = selected[0]
            .ingress
            .iter()
            .flatten()
            .flat_map(|r| r.ports.iter().flatten())
            .filter_map(|p| match &p.port {
                Some(IntOrString::Int(n)) => Some(*n),
                _ => None,
            })
            .collect();
        let declared: BTreeSet<i32> = pod_spec(d)
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .map(|p| p.container_port)
            .collect();
        assert_eq!(admitted, declared, "{name}: admitted ports");
        let admin_rules = selected[0].ingress.iter().flatten().filter(|r| {
            r.ports
                .iter()
                .flatten()
                .any(|p| p.port == Some(IntOrString::Int(9901)))
        });
        for rule in admin_rules {
            assert!(
                rule.from.as_ref().is_some_and(|f| !f.is_empty()),
                "{name}: the admin port is not open to everyone"
            );
        }
    }
}

fn check_install(install: &Install) {
    check_pods_are_hardened(install);
    check_data_plane_has_no_credentials(install);
    check_rbac(install);
    check_admission_policy(install);
    check_crd(install);
    check_namespaces(install);
    check_edge(install);
    check_operator(install);
    check_gateway_class(install);
    check_network_policies(install);
}

#[test]
fn deploy_files_are_typed_and_hardened() {
    check_crd_copy();
    let install = parse_files();
    check_install(&install);
}

#[test]
fn a_data_plane_binding_would_be_caught() {
    let sneaky = Subject {
        kind: "ServiceAccount".to_owned(),
        name: "bulkhead-edge".to_owned(),
        namespace: Some(SYSTEM_NAMESPACE.to_owned()),
        ..Subject::default()
    };
    assert!(subject_is_data_plane(&sneaky));
    let group = Subject {
        kind: "Group".to_owned(),
        name: "system:serviceaccounts:bulkhead-system".to_owned(),
        ..Subject::default()
    };
    assert!(subject_is_data_plane(&group));
    let result = std::panic::catch_unwind(|| check_binding_subjects("test", Some(&[sneaky])));
    assert!(result.is_err());
}

#[test]
fn a_misspelt_field_is_refused() {
    let text = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\nautomountServiceAcountToken: false\n";
    let result = std::panic::catch_unwind(|| parse_install("test", text));
    assert!(result.is_err(), "typo must not pass the typed round trip");
    let unknown = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: x\n";
    assert!(std::panic::catch_unwind(|| parse_install("test", unknown)).is_err());
}

/// `kubectl kustomize dir`, or `None` (with a note) when kubectl is not on `PATH`.
fn kustomize(dir: &Path) -> Option<String> {
    let probe = Command::new("kubectl")
        .args(["version", "--client"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "note: kubectl is not on PATH; skipping the `kubectl kustomize {}` check",
            dir.display()
        );
        return None;
    }
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8(output.stdout).expect("UTF-8 output"))
}

#[test]
fn kustomize_output_is_the_same_install() {
    let Some(text) = kustomize(&deploy_dir()) else {
        return;
    };
    let rendered = parse_install("kubectl kustomize deploy/", &text);
    check_install(&rendered);
    let files = parse_files();
    assert_eq!(
        rendered.json.keys().collect::<Vec<_>>(),
        files.json.keys().collect::<Vec<_>>(),
        "kustomize renders exactly the listed objects"
    );
    for (key, value) in &files.json {
        if let Some(diff) = first_difference(value, &rendered.json[key], "") {
            panic!("{key:?} changed by kustomize: {diff}");
        }
    }
    // The replacement keeps the routers' image equal to the operator's.
    let op = rendered.deployment("bulkhead-operator");
    let container = &pod_spec(op).containers[0];
    let router_image = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "BULKHEAD_ROUTER_IMAGE")
        .and_then(|e| e.value.clone());
    assert_eq!(router_image, container.image);
}

/// Every YAML document of `text` as JSON.
fn json_documents(source: &str, text: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| {
            let yaml = serde_yaml::Value::deserialize(d)
                .unwrap_or_else(|e| panic!("{source}: invalid YAML: {e}"));
            serde_json::to_value(&yaml).expect("YAML converts to JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The kustomizations of `operator/testdata/kustomize/` (overlays of `deploy/`).
fn overlay_dir(name: &str) -> PathBuf {
    repo_root().join("operator/testdata/kustomize").join(name)
}

/// The namespace of the install under test in `operator/testdata/kustomize/`.
const OTHER_NAMESPACE: &str = "bulkhead-alt";

/// A `namespace:` override moves the whole install: nothing still names `bulkhead-system` (the
/// operator URL is derived from the pod's namespace, the RBAC subjects follow), and the policy
/// checks still hold.
#[test]
fn a_namespace_override_moves_the_whole_install() {
    let Some(text) = kustomize(&overlay_dir("other-namespace")) else {
        return;
    };
    assert!(
        !text.contains(SYSTEM_NAMESPACE),
        "the install in {OTHER_NAMESPACE} still names {SYSTEM_NAMESPACE}:\n{}",
        text.lines()
            .filter(|l| l.contains(SYSTEM_NAMESPACE))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let install = parse_install("other-namespace", &text);
    for (kind, namespace, name) in install.json.keys() {
        let cluster_scoped = [
            "Namespace",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
            "GatewayClass",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ];
        if !cluster_scoped.contains(&kind.as_str()) {
            assert_eq!(namespace, OTHER_NAMESPACE, "{kind} {name}");
        }
    }
    for m in &install.objects {
        let subjects = match m {
            Manifest::ClusterRoleBinding(b) => b.subjects.clone(),
            Manifest::RoleBinding(b) => b.subjects.clone(),
            _ => continue,
        };
        for s in subjects.into_iter().flatten() {
            assert_eq!(s.namespace.as_deref(), Some(OTHER_NAMESPACE), "{s:?}");
        }
    }
    check_admission_policy(&install);
    check_pods_are_hardened(&install);
}

/// The cert-manager component's leaf certificate, as JSON, from `documents`.
fn leaf_certificate(documents: &[serde_json::Value]) -> &serde_json::Value {
    documents
        .iter()
        .find(|d| d["kind"] == "Certificate" && d["metadata"]["name"] == "bulkhead-operator")
        .expect("Certificate bulkhead-operator")
}

/// The component issues exactly the Secret the operator mounts, for the host of the operator URL
/// in the install namespace; its CA issuer is its own, in that namespace.
fn check_cert_manager(documents: &[serde_json::Value], install: &Install, namespace: &str) {
    let leaf = leaf_certificate(documents);
    let mounted = pod_spec(install.deployment("bulkhead-operator"))
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.secret.as_ref()?.secret_name.clone());
    assert_eq!(leaf["spec"]["secretName"].as_str(), mounted.as_deref());
    let host = OPERATOR_URL
        .trim_start_matches("https://")
        .split(':')
        .next()
        .unwrap_or_default()
        .replace("$(POD_NAMESPACE)", namespace);
    assert_eq!(leaf["spec"]["dnsNames"][0].as_str(), Some(host.as_str()));
    assert_eq!(
        leaf["spec"]["dnsNames"][1].as_str(),
        Some(format!("{host}.cluster.local").as_str())
    );
    assert_eq!(leaf["spec"]["usages"], serde_json::json!(["server auth"]));
    for d in documents {
        if d["apiVersion"] == "cert-manager.io/v1" {
            assert_eq!(
                d["metadata"]["namespace"].as_str(),
                Some(namespace),
                "{}",
                d["metadata"]["name"]
            );
        }
    }
    let issuers: Vec<&str> = documents
        .iter()
        .filter(|d| d["kind"] == "Issuer")
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        leaf["spec"]["issuerRef"]["kind"], "Issuer",
        "a namespaced issuer of its own, not a ClusterIssuer"
    );
    let issuer = leaf["spec"]["issuerRef"]["name"]
        .as_str()
        .unwrap_or_default();
    assert!(issuers.contains(&issuer), "{issuer} is not in {issuers:?}");
}

#[test]
fn the_cert_manager_component_issues_the_operator_secret() {
    let dir = deploy_dir().join("components/cert-manager");
    let text = std::fs::read_to_string(dir.join("certificates.yaml")).expect("certificates");
    let documents = json_documents("components/cert-manager", &text);
    check_cert_manager(&documents, &parse_files(), SYSTEM_NAMESPACE);
    let component =
        std::fs::read_to_string(dir.join("kustomization.yaml")).expect("component kustomization");
    assert!(component.contains("kind: Component"));
}

#[test]
fn the_cert_manager_component_follows_a_namespace_override() {
    let Some(text) = kustomize(&overlay_dir("cert-manager-other-namespace")) else {
        return;
    };
    assert!(!text.contains(SYSTEM_NAMESPACE), "{text}");
    let documents = json_documents("cert-manager-other-namespace", &text);
    let install_only: Vec<String> = documents
        .iter()
        .filter(|d| d["apiVersion"] != "cert-manager.io/v1")
        .map(|d| serde_yaml::to_string(d).expect("YAML"))
        .collect();
    let install = parse_install("cert-manager-other-namespace", &install_only.join("---\n"));
    check_cert_manager(&documents, &install, OTHER_NAMESPACE);
}

/// Metric names each tier registers, read from its source (prefix + registered name).
fn registered_metrics() -> BTreeSet<String> {
    let register = regex::Regex::new(r#"\.register\(\s*"([a-z_]+)""#).expect("regex");
    let mut names = BTreeSet::new();
    for (file, prefix) in [
        ("edge/src/metrics.rs", "bulkhead_edge_"),
        ("tenant-router/src/metrics.rs", "bulkhead_router_"),
        ("operator/src/metrics.rs", "bulkhead_operator_"),
    ] {
        let text = std::fs::read_to_string(repo_root().join(file)).expect("metrics source");
        for cap in register.captures_iter(&text) {
            let base = format!("{prefix}{}", &cap[1]);
            // Counters are exposed with `_total`, histograms as `_bucket`, `_sum`, `_count`.
            for suffix in ["", "_total", "_bucket", "_sum", "_count"] {
                names.insert(format!("{base}{suffix}"));
            }
        }
    }
    names
}

#[test]
fn dashboard_uses_only_real_metric_names() {
    let path = deploy_dir().join("dashboards/bulkhead.json");
    let text = std::fs::read_to_string(&path).expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["uid"].as_str().is_some_and(|t| !t.is_empty()));
    let known = registered_metrics();
    assert!(
        known.contains("bulkhead_edge_connections_total"),
        "{known:?}"
    );
    let metric = regex::Regex::new(r"bulkhead_(edge|router|operator)_[a-z_]+").expect("regex");
    let mut exprs = 0;
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("target expr");
            exprs += 1;
            for m in metric.find_iter(expr) {
                assert!(
                    known.contains(m.as_str()),
                    "panel {:?}: unknown metric {}",
                    panel["title"],
                    m.as_str()
                );
                used.insert(m.as_str().to_owned());
            }
        }
    }
    assert!(exprs >= 10, "the dashboard has real panels");
    assert!(used.iter().any(|m| m.starts_with("bulkhead_edge_")));
    assert!(used.iter().any(|m| m.starts_with("bulkhead_router_")));
    assert!(used.iter().any(|m| m.starts_with("bulkhead_operator_")));
}

#[test]
fn dockerfile_builds_one_non_root_image() {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile")).expect("Dockerfile");
    let froms = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 2, "multi-stage build");
    assert!(text.contains("cargo build --release --locked"));
    assert!(text.contains("USER 65532:65532"));
    assert!(text.contains(r#"ENTRYPOINT ["/bulkhead"]"#));
    // Every base image comes from a build argument declared before the first stage, so it can
    // be pinned by digest (`--build-arg BUILD_IMAGE=rust:1-bookworm@sha256:…`).
    let args: BTreeSet<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("FROM "))
        .filter_map(|l| l.strip_prefix("ARG "))
        .filter_map(|a| a.split_once('=').map(|(name, _)| name))
        .collect();
    for from in text.lines().filter(|l| l.starts_with("FROM ")) {
        let image = from.split_whitespace().nth(1).unwrap_or_default();
        let arg = image
            .strip_prefix("${")
            .and_then(|i| i.strip_suffix('}'))
            .unwrap_or_else(|| panic!("{from}: not pinnable by a build argument"));
        assert!(args.contains(arg), "{from}: ARG {arg} has no default");
    }
    // A profile-guided build takes the profile `bench/pgo/build.sh` makes, by a build argument
    // that defaults to none (a plain release build).
    assert!(text.lines().any(|l| l == "ARG PGO_PROFILE="), "{text}");
    assert!(
        text.contains(r#"RUSTFLAGS="-Cprofile-use=/src/$PGO_PROFILE""#),
        "{text}"
    );
    // The program the edge and router pods run is built and copied into the image.
    let program = bulkhead_operator::children::ROUTER_PROGRAM;
    let name = program.trim_start_matches('/');
    assert!(text.contains(&format!("--bin {name}")), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("COPY --from=build") && l.contains(&format!("/out{program}"))),
        "{text}"
    );
}

/// Every YAML document of every `*.out.yaml` file in `operator/testdata/<dir>`, with its file name.
fn golden_documents(dir: &str) -> Vec<(String, serde_json::Value)> {
    let root = repo_root().join("operator/testdata").join(dir);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".out.yaml"))
        .collect();
    paths.sort();
    let mut documents = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("golden file");
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        if text.starts_with("error:") {
            // A refusal (the Tenant's condition), not objects.
            continue;
        }
        for document in serde_yaml::Deserializer::from_str(&text) {
            let yaml = serde_yaml::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{file}: invalid YAML: {e}"));
            let json = serde_json::to_value(&yaml).expect("YAML converts to JSON");
            documents.push((file.to_string(), json));
        }
    }
    documents
}

/// Fails with every limit `objects` break, naming the object.
fn assert_within_api_limits<'a>(
    objects: impl IntoIterator<Item = (String, &'a serde_json::Value)>,
) {
    let mut checked = 0;
    let mut broken = Vec::new();
    for (source, object) in objects {
        checked += 1;
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        for v in bulkhead_crds::api_limits::check_object(object) {
            broken.push(format!("{source}: {kind} {name}: {v}"));
        }
    }
    assert!(checked > 0, "nothing was checked");
    assert!(
        broken.is_empty(),
        "the API server would refuse:\n{}",
        broken.join("\n")
    );
}

#[test]
fn deploy_objects_fit_the_api_server_limits() {
    let install = parse_files();
    assert_within_api_limits(install.json.values().map(|v| ("deploy/".to_owned(), v)));
}

#[test]
fn rendered_children_fit_the_api_server_limits() {
    let documents = golden_documents("children");
    let children = documents
        .iter()
        .map(|(file, d)| (format!("testdata/children/{file}"), d));
    assert_within_api_limits(children);
}

#[test]
fn rendered_statuses_fit_the_api_server_limits() {
    let documents = golden_documents("translator");
    let statuses: Vec<(String, &serde_json::Value)> = documents
        .iter()
        .flat_map(|(file, d)| {
            d["statuses"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |s| (format!("testdata/translator/{file}"), s))
        })
        .collect();
    assert!(statuses.len() >= 20, "statuses missing: {}", statuses.len());
    assert_within_api_limits(statuses);
}
