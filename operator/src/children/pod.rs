//! The router `Deployment`: its pod (hardened security contexts, probes, ports, volumes) and the
//! router's command line.

use super::*;

/// The container-level security context of every Bulkhead container.
pub fn hardened_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_ID),
        run_as_group: Some(RUN_AS_ID),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

/// The pod-level security context of every Bulkhead pod (`fsGroup` makes mounted tokens and
/// keys readable by the unprivileged user).
pub fn hardened_pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_ID),
        run_as_group: Some(RUN_AS_ID),
        fs_group: Some(RUN_AS_ID),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..PodSecurityContext::default()
    }
}

pub(super) fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        ..SeccompProfile::default()
    }
}

/// The program the router container runs: the data-plane-only binary of the Bulkhead image (same
/// subcommands and flags as `bulkhead router`, without the operator's code).
pub const ROUTER_PROGRAM: &str = "/bulkhead-dataplane";

/// The router's command line: the contract `bulkhead router` implements.
pub(super) fn router_args(ctx: &Ctx<'_>) -> Vec<String> {
    [
        "router",
        "--tenant",
        ctx.tenant,
        "--https-listen",
        &format!("[::]:{HTTPS_PORT}"),
        "--http-listen",
        &format!("[::]:{HTTP_PORT}"),
        "--admin-listen",
        &format!("[::]:{ADMIN_PORT}"),
        "--operator-url",
        &ctx.settings.operator_url,
        "--operator-ca",
        &format!("{CA_DIR}/{OPERATOR_CA_KEY}"),
        "--token-file",
        &format!("{TOKEN_DIR}/token"),
        "--bootstrap",
        &format!("{BOOTSTRAP_DIR}/{BOOTSTRAP_KEY}"),
        "--accept-proxy-from",
        &ctx.settings
            .router_accept_proxy_from
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

pub(super) fn http_probe(path: &str, period_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("admin".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(3),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

pub(super) fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

pub(super) fn read_only_mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// Files readable by owner and `fsGroup` only.
pub(super) const SECRET_FILE_MODE: i32 = 0o440;

pub(super) fn volumes() -> Vec<Volume> {
    vec![
        Volume {
            name: "bulkhead-token".to_owned(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(SECRET_FILE_MODE),
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(SNAPSHOT_AUDIENCE.to_owned()),
                        expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                        path: "token".to_owned(),
                    }),
                    ..VolumeProjection::default()
                }]),
            }),
            ..Volume::default()
        },
        Volume {
            name: "operator-ca".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: OPERATOR_CA_CONFIG_MAP.to_owned(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "bootstrap".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(BOOTSTRAP_SECRET_NAME.to_owned()),
                default_mode: Some(SECRET_FILE_MODE),
                optional: Some(true),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
    ]
}

pub(super) fn deployment(ctx: &Ctx<'_>, replicas: i32) -> Deployment {
    let settings = ctx.settings;
    let container = Container {
        name: "router".to_owned(),
        image: Some(settings.image.clone()),
        image_pull_policy: settings.image_pull_policy.clone(),
        command: Some(vec![ROUTER_PROGRAM.to_owned()]),
        args: Some(router_args(ctx)),
        env: Some(vec![EnvVar {
            name: "BULKHEAD_LOG_FORMAT".to_owned(),
            value: Some("json".to_owned()),
            ..EnvVar::default()
        }]),
        ports: Some(vec![
            container_port("https", HTTPS_PORT),
            container_port("http", HTTP_PORT),
            container_port("admin", ADMIN_PORT),
        ]),
        readiness_probe: Some(http_probe("/readyz", 5)),
        liveness_probe: Some(http_probe("/healthz", 10)),
        resources: Some(settings.resources.clone()),
        security_context: Some(hardened_security_context()),
        volume_mounts: Some(vec![
            read_only_mount("bulkhead-token", TOKEN_DIR),
            read_only_mount("operator-ca", CA_DIR),
            read_only_mount("bootstrap", BOOTSTRAP_DIR),
        ]),
        ..Container::default()
    };
    let spread = |topology_key: &str| TopologySpreadConstraint {
        max_skew: 1,
        topology_key: topology_key.to_owned(),
        when_unsatisfiable: "ScheduleAnyway".to_owned(),
        label_selector: Some(ctx.selector()),
        ..TopologySpreadConstraint::default()
    };
    Deployment {
        metadata: ctx.meta(ROUTER_NAME),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: ctx.selector(),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(ctx.labels()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(ROUTER_NAME.to_owned()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(hardened_pod_security_context()),
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    topology_spread_constraints: Some(vec![
                        spread("kubernetes.io/hostname"),
                        spread("topology.kubernetes.io/zone"),
                    ]),
                    containers: vec![container],
                    image_pull_secrets: image_pull_secrets(settings),
                    volumes: Some(volumes()),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The pods' `imagePullSecrets`, or `None` (not an empty list) when there are none.
pub(super) fn image_pull_secrets(settings: &ChildSettings) -> Option<Vec<LocalObjectReference>> {
    (!settings.image_pull_secrets.is_empty()).then(|| {
        settings
            .image_pull_secrets
            .iter()
            .map(|name| LocalObjectReference { name: name.clone() })
            .collect()
    })
}
