//! Every tenant snapshot in the translator's golden files compiles in the router: a snapshot the
//! operator publishes can never be refused by the data plane for a rule the two apply differently
//! (regex limits, redirect codes, certificates, ...); and every edge snapshot passes the edge's
//! check ([`EdgeSnapshot::validate`]).

use bulkhead_snapshot::{EdgeSnapshot, TenantSnapshot};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const PEM_PREFIX: &str = "@pem:";

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("operator/testdata/translator")
}

/// Puts the PEM files back where the golden files name them (`@pem:FILE`).
fn with_pems(mut snapshot: TenantSnapshot) -> TenantSnapshot {
    let read = |value: &mut String| {
        if let Some(file) = value.strip_prefix(PEM_PREFIX) {
            let path = testdata().join("certs").join(file);
            *value = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    };
    for cert in snapshot.certificates.values_mut() {
        read(&mut cert.cert_pem);
        read(&mut cert.key_pem);
    }
    for validation in snapshot.client_validation.values_mut() {
        read(&mut validation.ca_pem);
    }
    snapshot
}

/// Each golden output file and its parsed YAML.
fn goldens() -> Vec<(PathBuf, serde_yaml::Value)> {
    let mut goldens: Vec<PathBuf> = std::fs::read_dir(testdata())
        .expect("golden directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".out.yaml"))
        .collect();
    goldens.sort();
    assert!(!goldens.is_empty(), "no golden files found");
    goldens
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read golden");
            let doc = serde_yaml::from_str(&text).expect("golden is YAML");
            (path, doc)
        })
        .collect()
}

#[test]
fn every_golden_edge_snapshot_passes_the_edges_check() {
    let mut checked = 0;
    for (path, doc) in goldens() {
        let Some(edge) = doc.get("edge") else {
            continue;
        };
        let edge: EdgeSnapshot = serde_yaml::from_value(edge.clone())
            .unwrap_or_else(|e| panic!("{}: edge does not decode: {e}", path.display()));
        if let Err(e) = edge.validate() {
            panic!("{}: the edge refuses the snapshot: {e}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} snapshots checked");
}

#[test]
fn every_golden_tenant_snapshot_compiles_in_the_router() {
    let mut checked = 0;
    for (path, doc) in goldens() {
        let Some(tenants) = doc.get("tenants") else {
            continue;
        };
        let tenants: BTreeMap<String, TenantSnapshot> = serde_yaml::from_value(tenants.clone())
            .unwrap_or_else(|e| panic!("{}: tenants do not decode: {e}", path.display()));
        for (name, snapshot) in tenants {
            if let Err(e) = bulkhead_router::validate_snapshot(&with_pems(snapshot)) {
                panic!(
                    "{}: the router refuses tenant {name}'s snapshot: {e}",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} snapshots checked");
}
