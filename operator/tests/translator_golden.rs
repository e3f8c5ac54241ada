//! Golden tests of the translator: `testdata/translator/NAME.in.yaml` (the objects a cluster or a
//! standalone manifest directory would hold) → `NAME.out.yaml` (`edge`, `tenants`, `statuses`, and
//! `load_errors` when the input has invalid documents).
//!
//! Regenerate with `BULKHEAD_UPDATE_GOLDEN=1 cargo test -p bulkhead-operator --test translator_golden`
//! and review the diff. Secrets may write `"@pem:FILE"` for a value of `stringData` (ConfigMaps
//! for a value of `data`, CA bundles): the harness
//! substitutes `testdata/translator/certs/FILE` (real, throw-away certificates, since the translator
//! validates them as the router will) and writes the same placeholder back in the output.
//! Each tenant i (by name) gets router endpoints `192.0.2.(i+1):8443` (TLS) and `:8080` (HTTP); the
//! edge receives HTTP listeners on ports 80 and 8080 and TLS listeners on 443 and 5433.

use bulkhead_crds::snapshot::{RouterEndpoints, TenantSnapshot};
use bulkhead_operator::objects::{parse_documents, ObjectSet};
use bulkhead_operator::translator::{
    translate, translate_with, TranslateInput, TranslateSettings, Translation,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

const PEM_PREFIX: &str = "@pem:";

#[derive(Serialize)]
struct Golden<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    load_errors: Vec<String>,
    edge: &'a bulkhead_crds::snapshot::EdgeSnapshot,
    tenants: &'a BTreeMap<String, TenantSnapshot>,
    statuses: &'a [bulkhead_operator::status::ObjectStatus],
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/translator")
}

fn pems() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(testdata().join("certs")).expect("certs directory") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        out.insert(name, std::fs::read_to_string(&path).expect("read pem"));
    }
    out
}

fn load(path: &Path, pems: &BTreeMap<String, String>) -> (ObjectSet, Vec<String>) {
    let text = std::fs::read_to_string(path).expect("read input");
    let display = Path::new(path.file_name().unwrap());
    let (objects, errors) = parse_documents(display, &text);
    let mut set = ObjectSet::from_objects(objects);
    let secret_values = set
        .secrets
        .iter_mut()
        .flat_map(|s| s.string_data.iter_mut().flat_map(|d| d.values_mut()));
    let config_map_values = set
        .config_maps
        .iter_mut()
        .flat_map(|c| c.data.iter_mut().flat_map(|d| d.values_mut()));
    for value in secret_values.chain(config_map_values) {
        if let Some(file) = value.strip_prefix(PEM_PREFIX) {
            *value = pems
                .get(file)
                .unwrap_or_else(|| panic!("unknown pem {file}"))
                .clone();
        }
    }
    (set, errors.iter().map(ToString::to_string).collect())
}

fn router_endpoints(set: &ObjectSet) -> BTreeMap<String, RouterEndpoints> {
    let mut names: Vec<String> = set
        .tenants
        .iter()
        .filter_map(|t| t.metadata.name.clone())
        .collect();
    names.sort();
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let ip = format!("192.0.2.{}", i + 1);
            let addr = |port: u16| -> SocketAddr { format!("{ip}:{port}").parse().unwrap() };
            (
                name,
                RouterEndpoints {
                    https: vec![addr(8443)],
                    http: vec![addr(8080)],
                },
            )
        })
        .collect()
}

fn placeholders(t: &mut Translation, pems: &BTreeMap<String, String>) {
    for snapshot in t.tenants.values_mut() {
        let cas = snapshot
            .client_validation
            .values_mut()
            .map(|v| &mut v.ca_pem);
        for value in snapshot
            .certificates
            .values_mut()
            .flat_map(|c| [&mut c.cert_pem, &mut c.key_pem])
            .chain(cas)
        {
            if let Some((name, _)) = pems.iter().find(|(_, pem)| *pem == value) {
                *value = format!("{PEM_PREFIX}{name}");
            }
        }
    }
}

/// The listener ports the harness's edge receives: HTTP 80 and 8080, TLS 443 and 5433.
fn settings() -> TranslateSettings {
    TranslateSettings {
        http_ports: [80, 8080].into(),
        tls_ports: [443, 5433].into(),
    }
}

fn render(path: &Path, pems: &BTreeMap<String, String>) -> String {
    let (set, load_errors) = load(path, pems);
    let endpoints = router_endpoints(&set);
    let mut t = translate_with(
        &TranslateInput {
            objects: &set,
            router_endpoints: &endpoints,
        },
        &settings(),
    );
    placeholders(&mut t, pems);
    serde_yaml::to_string(&Golden {
        load_errors,
        edge: &t.edge,
        tenants: &t.tenants,
        statuses: &t.statuses,
    })
    .expect("serialise golden output")
}

/// A line diff (longest common subsequence), `-` expected, `+` actual.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+{:>5}: {}\n", j + 1, b[j]));
            j += 1;
        } else {
            out.push_str(&format!("-{:>5}: {}\n", i + 1, a[i]));
            i += 1;
        }
    }
    out
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(testdata())
        .expect("testdata/translator")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".in.yaml"))
        .collect();
    cases.sort();
    cases
}

#[test]
fn translator_matches_golden_files() {
    let update = std::env::var_os("BULKHEAD_UPDATE_GOLDEN").is_some();
    let pems = pems();
    let cases = cases();
    let count = cases.len();
    let mut failures = Vec::new();
    for input in cases {
        let output = PathBuf::from(input.to_string_lossy().replace(".in.yaml", ".out.yaml"));
        let actual = render(&input, &pems);
        if update {
            std::fs::write(&output, &actual).expect("write golden output");
            continue;
        }
        let expected = std::fs::read_to_string(&output).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{} differs from its golden output:\n{}",
                input.display(),
                diff(&expected, &actual)
            ));
        }
    }
    assert!(count >= 14, "golden cases are missing: only {count}");
    assert!(
        failures.is_empty(),
        "{}\nRegenerate with BULKHEAD_UPDATE_GOLDEN=1 and review the diff.",
        failures.join("\n")
    );
}

#[test]
fn translation_does_not_depend_on_input_order() {
    let pems = pems();
    for input in cases() {
        let text = std::fs::read_to_string(&input).unwrap();
        let (objects, _) = parse_documents(Path::new("x"), &text);
        let (mut set, _) = load(&input, &pems);
        let endpoints = router_endpoints(&set);
        let forward = translate(&TranslateInput {
            objects: &set,
            router_endpoints: &endpoints,
        });
        // Same objects, reversed, collected again.
        let mut reversed = ObjectSet::from_objects(objects.into_iter().rev());
        std::mem::swap(&mut reversed.secrets, &mut set.secrets);
        std::mem::swap(&mut reversed.config_maps, &mut set.config_maps);
        let backward = translate(&TranslateInput {
            objects: &reversed,
            router_endpoints: &endpoints,
        });
        assert_eq!(forward, backward, "{}", input.display());
    }
}
