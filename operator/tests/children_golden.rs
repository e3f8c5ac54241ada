//! Golden tests of `render_children`: `testdata/children/NAME.in.yaml` (a `tenant`, optionally a
//! `bootstrap` snapshot and `settings` overrides) → `NAME.out.yaml` (the children as multi-document
//! YAML, in apply order, or the `error` the Tenant's condition would carry).
//!
//! Regenerate with `BULKHEAD_UPDATE_GOLDEN=1 cargo test -p bulkhead-operator --test children_golden`
//! and review the diff.

use bulkhead_crds::snapshot::TenantSnapshot;
use bulkhead_crds::Tenant;
use bulkhead_operator::children::{render_children, ChildSettings};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A throw-away CA certificate for the settings (its content is not parsed by the renderer).
const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    tenant: Tenant,
    #[serde(default)]
    bootstrap: Option<TenantSnapshot>,
    #[serde(default)]
    settings: Overrides,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[serde(default)]
struct Overrides {
    /// `false` admits no metrics scraper.
    metrics_scraper: bool,
    /// `--router-image-pull-secrets`.
    image_pull_secrets: Vec<String>,
    /// `--router-egress-namespaces`.
    egress_namespaces: Vec<String>,
    /// `--router-cpu-limit`.
    cpu_limit: Option<String>,
}

impl Default for Overrides {
    fn default() -> Self {
        Self {
            metrics_scraper: true,
            image_pull_secrets: Vec::new(),
            egress_namespaces: Vec::new(),
            cpu_limit: None,
        }
    }
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/children")
}

fn render(input: &Input) -> String {
    let mut settings = ChildSettings::new(
        "ghcr.io/bulkhead/bulkhead:0.1.0",
        "https://bulkhead-operator.bulkhead-system.svc:8443",
        TEST_CA,
    );
    if !input.settings.metrics_scraper {
        settings.metrics_scraper_namespaces = None;
    }
    settings.image_pull_secrets = input.settings.image_pull_secrets.clone();
    settings.router_egress_namespaces = input.settings.egress_namespaces.clone();
    if let Some(cpu) = &input.settings.cpu_limit {
        let limits = settings
            .resources
            .limits
            .get_or_insert_with(Default::default);
        limits.insert(
            "cpu".to_owned(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity(cpu.clone()),
        );
    }
    match render_children(&input.tenant, &settings, input.bootstrap.as_ref()) {
        Ok(children) => children.to_yaml().expect("children serialise"),
        Err(err) => format!("error:\n  reason: {}\n  message: {err}\n", err.reason()),
    }
}

#[test]
fn children_match_golden_files() {
    let update = std::env::var_os("BULKHEAD_UPDATE_GOLDEN").is_some();
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(testdata())
        .expect("testdata/children exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".in.yaml"))
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 5, "golden inputs missing: {inputs:?}");
    let mut failures = Vec::new();
    for input_path in inputs {
        let text = std::fs::read_to_string(&input_path).expect("read input");
        let input: Input =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", input_path.display()));
        let rendered = render(&input);
        let out_path = PathBuf::from(
            input_path
                .to_string_lossy()
                .replace(".in.yaml", ".out.yaml"),
        );
        if update {
            std::fs::write(&out_path, &rendered).expect("write golden");
            continue;
        }
        let expected = std::fs::read_to_string(&out_path).unwrap_or_default();
        if expected != rendered {
            failures.push(format!(
                "{} differs from the rendering:\n{rendered}",
                out_path.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\nrerun with BULKHEAD_UPDATE_GOLDEN=1 and review the diff",
        failures.join("\n")
    );
}
