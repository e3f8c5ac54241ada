//! The Gateway API features Bulkhead claims (`GatewayClass.status.supportedFeatures`, from the one
//! list in `operator/src/features.rs`) are kept honest: every claimed feature names a test function
//! that exists (the conformance-style tests of this directory send requests as the official suite
//! does: by address for routes without hostnames, HTTP/2 for misdirected requests), and the support
//! tables of `README.md` and `tenant-router/README.md` say exactly what the list says.

use bulkhead_operator::features::{Feature, SUPPORTED_FEATURES};
use std::collections::BTreeMap;
use std::path::Path;

const TABLE_BEGIN: &str = "<!-- supported-features: begin";
const TABLE_END: &str = "<!-- supported-features: end -->";

fn workspace_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

/// Whether `source` defines a test function `name` (a `#[test]` or `#[tokio::test...]` attribute
/// on the lines just above `fn name(`).
fn defines_test(source: &str, name: &str) -> bool {
    let lines: Vec<&str> = source.lines().collect();
    lines.iter().enumerate().any(|(i, line)| {
        let line = line.trim_start();
        let defines = line.starts_with(&format!("fn {name}("))
            || line.starts_with(&format!("async fn {name}("));
        defines
            && lines[i.saturating_sub(3)..i]
                .iter()
                .any(|l| l.contains("#[test]") || l.contains("#[tokio::test"))
    })
}

#[test]
fn every_claimed_feature_names_a_test_that_exists() {
    let mut missing = Vec::new();
    for Feature {
        name, proven_by, ..
    } in SUPPORTED_FEATURES
    {
        let (path, function) = proven_by
            .split_once("::")
            .unwrap_or_else(|| panic!("{name}: proven_by {proven_by:?} is not PATH::FUNCTION"));
        if !defines_test(&workspace_file(path), function) {
            missing.push(format!("{name}: no test function {function} in {path}"));
        }
    }
    assert!(
        missing.is_empty(),
        "claimed features without their test:\n{}",
        missing.join("\n")
    );
}

/// The rows of a README's support table: feature name → (level, supported).
fn support_table(readme: &str) -> BTreeMap<String, (String, bool)> {
    let text = workspace_file(readme);
    let start = text
        .find(TABLE_BEGIN)
        .unwrap_or_else(|| panic!("{readme}: no support table ({TABLE_BEGIN} ...)"));
    let end = text[start..]
        .find(TABLE_END)
        .unwrap_or_else(|| panic!("{readme}: support table without {TABLE_END}"));
    let mut rows = BTreeMap::new();
    for line in text[start..start + end].lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, feature, level, support, _] = cells.as_slice() else {
            continue;
        };
        let Some(feature) = feature.strip_prefix('`').and_then(|f| f.strip_suffix('`')) else {
            continue;
        };
        let supported = match *support {
            "yes" => true,
            s if s.starts_with("no") => false,
            other => panic!("{readme}: {feature}: support {other:?} is neither yes nor no"),
        };
        let previous = rows.insert(feature.to_owned(), (level.to_string(), supported));
        assert!(previous.is_none(), "{readme}: {feature} listed twice");
    }
    rows
}

#[test]
fn readme_support_tables_match_the_supported_features() {
    let claimed: BTreeMap<String, (String, bool)> = SUPPORTED_FEATURES
        .iter()
        .map(|f| (f.name.to_owned(), (f.level.as_str().to_owned(), true)))
        .collect();
    for readme in ["README.md", "tenant-router/README.md"] {
        let table = support_table(readme);
        let said_yes: BTreeMap<String, (String, bool)> = table
            .iter()
            .filter(|(_, (_, yes))| *yes)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(
            said_yes, claimed,
            "{readme}: the rows marked yes must be exactly operator/src/features.rs's SUPPORTED_FEATURES (with their levels)"
        );
    }
    assert_eq!(
        support_table("README.md"),
        support_table("tenant-router/README.md"),
        "README.md and tenant-router/README.md must carry the same support table"
    );
}
