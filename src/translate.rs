//! `bulkhead translate`: what the operator would make of a directory of manifests, without serving.
//!
//! Loads the directory as `bulkhead standalone` does, translates it with the operator's translator,
//! compiles every tenant snapshot as that tenant's router would, and prints one JSON document:
//! every object's status (as it would be written to Kubernetes once the routers acknowledged),
//! the objects and files that were rejected and why, and the snapshots (private keys redacted).
//! Exits non-zero when anything was rejected, so tenants can check their routes in a pull request.

use anyhow::Context;
use bulkhead_operator::file_provider::FileProvider;
use bulkhead_operator::status::{apply_acks, ObjectStatus};
use bulkhead_operator::{translate_with, TranslateInput};
use bulkhead_snapshot::TenantSnapshot;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

/// What replaces every private key in the printed snapshots.
const REDACTED: &str = "<redacted>";

/// Arguments of `bulkhead translate`.
#[derive(clap::Args, Debug, Clone)]
pub struct TranslateArgs {
    /// Directory of multi-document YAML manifests (subfolders too), as for `standalone`.
    #[arg(long)]
    pub manifests: PathBuf,
    /// Leave the tenant snapshots out of the output (statuses and rejections only).
    #[arg(long)]
    pub no_snapshots: bool,
    /// Listener ports, as for `operator` and `standalone`.
    #[command(flatten)]
    pub gateway: crate::gateway_flags::GatewayArgs,
}

/// One thing that would not be served as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The object's kind (`HTTPRoute`, ...), or `File` for a manifest that could not be loaded.
    pub kind: String,
    /// `namespace/name`, `name`, or the file path.
    pub name: String,
    /// Where in the status the verdict stands (`status.parents[0].conditions[Accepted]`), or the
    /// field of the manifest.
    pub at: String,
    /// The condition's reason (`UnsupportedValue`, ...), or `LoadError` / `RouterRefused`.
    pub reason: String,
    /// The condition's message.
    pub message: String,
}

/// The document `bulkhead translate` prints.
#[derive(Debug, Serialize)]
struct Report {
    /// Every rejection; empty when the directory would be served as written.
    rejected: Vec<Rejection>,
    /// Every object's status.
    statuses: Vec<ObjectStatus>,
    /// Tenant → snapshot, private keys redacted (absent with `--no-snapshots`).
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshots: Option<BTreeMap<String, TenantSnapshot>>,
}

/// Runs `bulkhead translate`: prints the report; exits with status 1 when something was rejected.
pub fn run(args: TranslateArgs) -> anyhow::Result<()> {
    let loaded = FileProvider::load_once(&args.manifests)
        .with_context(|| format!("cannot load {}", args.manifests.display()))?;
    let translation = translate_with(
        &TranslateInput {
            objects: &loaded.objects,
            router_endpoints: &BTreeMap::new(),
        },
        &args.gateway.settings(),
    );
    let mut rejected: Vec<Rejection> = loaded
        .errors
        .iter()
        .map(|e| Rejection {
            kind: e.kind.clone().unwrap_or_else(|| "File".to_owned()),
            name: e
                .name
                .clone()
                .unwrap_or_else(|| e.file.display().to_string()),
            at: e.field.clone().unwrap_or_default(),
            reason: "LoadError".to_owned(),
            message: e.to_string(),
        })
        .collect();
    let mut served = BTreeMap::new();
    for (tenant, snapshot) in &translation.tenants {
        let outcome = bulkhead_router::validate_snapshot(snapshot);
        if let Err(e) = &outcome {
            rejected.push(Rejection {
                kind: "Tenant".to_owned(),
                name: tenant.clone(),
                at: "snapshot".to_owned(),
                reason: "RouterRefused".to_owned(),
                message: e.to_string(),
            });
        }
        served.insert(tenant.clone(), outcome.is_ok());
    }
    let mut statuses = translation.statuses;
    apply_acks(&mut statuses, &served);
    for s in &statuses {
        rejected.extend(status_rejections(s));
    }
    let snapshots = (!args.no_snapshots).then(|| {
        let mut tenants = translation.tenants;
        tenants.values_mut().for_each(redact_keys);
        tenants
    });
    let report = Report {
        rejected,
        statuses,
        snapshots,
    };
    let json = serde_json::to_string_pretty(&report).context("cannot render the report")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{json}")
        .and_then(|()| stdout.flush())
        .context("cannot write the report")?;
    if !report.rejected.is_empty() {
        // A verdict, not a failure of the command: one line and exit status 1, no error trace.
        eprintln!(
            "bulkhead translate: {} rejection(s) in {} (see \"rejected\")",
            report.rejected.len(),
            args.manifests.display()
        );
        std::process::exit(1);
    }
    Ok(())
}

/// Replaces every private key of `snapshot` by [`REDACTED`].
fn redact_keys(snapshot: &mut TenantSnapshot) {
    for cert in snapshot.certificates.values_mut() {
        cert.key_pem = REDACTED.to_owned();
    }
}

/// The conditions of `status` that say the object (or a part of it) is not served as written:
/// `Accepted=False`, `ResolvedRefs=False`, `Conflicted=True`, wherever they stand in the status.
pub fn status_rejections(status: &ObjectStatus) -> Vec<Rejection> {
    let mut out = Vec::new();
    let name = match &status.metadata.namespace {
        Some(ns) => format!("{ns}/{}", status.metadata.name),
        None => status.metadata.name.clone(),
    };
    walk(&status.status, "status", &mut |at, condition| {
        let field = |k: &str| {
            condition
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let kind = field("type");
        let bad = match kind.as_str() {
            "Accepted" | "ResolvedRefs" => field("status") == "False",
            "Conflicted" => field("status") == "True",
            _ => false,
        };
        if bad {
            out.push(Rejection {
                kind: status.kind.clone(),
                name: name.clone(),
                at: format!("{at}[{kind}]"),
                reason: field("reason"),
                message: field("message"),
            });
        }
    });
    out
}

/// Calls `visit` with every condition object below `value` and the path of its `conditions` list.
fn walk(value: &Value, at: &str, visit: &mut dyn FnMut(&str, &Value)) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = format!("{at}.{key}");
                if key == "conditions" {
                    for condition in child.as_array().into_iter().flatten() {
                        visit(&path, condition);
                    }
                } else {
                    walk(child, &path, visit);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{at}[{i}]"), visit);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_operator::status::ObjectMeta;
    use serde_json::json;

    fn status(kind: &str, body: Value) -> ObjectStatus {
        ObjectStatus {
            api_version: "gateway.networking.k8s.io/v1".to_owned(),
            kind: kind.to_owned(),
            metadata: ObjectMeta {
                namespace: Some("acme".to_owned()),
                name: "web".to_owned(),
            },
            status: body,
            tenant: None,
        }
    }

    #[test]
    fn a_refused_route_parent_is_a_rejection_naming_where_it_stands() {
        let s = status(
            "HTTPRoute",
            json!({"parents": [{"conditions": [
                {"type": "Accepted", "status": "False", "reason": "UnsupportedValue", "message": "bad regex"},
                {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "message": ""}
            ]}]}),
        );
        let r = status_rejections(&s);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].name, "acme/web");
        assert_eq!(r[0].at, "status.parents[0].conditions[Accepted]");
        assert_eq!(r[0].reason, "UnsupportedValue");
        assert_eq!(r[0].message, "bad regex");
    }

    #[test]
    fn listener_conflicts_and_unresolved_refs_are_rejections_but_pending_programmed_is_not() {
        let s = status(
            "Gateway",
            json!({
                "conditions": [{"type": "Programmed", "status": "False", "reason": "Pending"}],
                "listeners": [
                    {"name": "a", "conditions": [{"type": "Conflicted", "status": "True", "reason": "HostnameConflict"}]},
                    {"name": "b", "conditions": [{"type": "ResolvedRefs", "status": "False", "reason": "InvalidCertificateRef"}]},
                    {"name": "c", "conditions": [{"type": "Conflicted", "status": "False", "reason": "NoConflicts"}]}
                ]
            }),
        );
        let reasons: Vec<String> = status_rejections(&s)
            .into_iter()
            .map(|r| r.reason)
            .collect();
        assert_eq!(reasons, ["HostnameConflict", "InvalidCertificateRef"]);
    }

    #[test]
    fn printed_snapshots_hold_no_private_key() {
        let mut snapshot = TenantSnapshot {
            tenant: "acme".to_owned(),
            ..TenantSnapshot::default()
        };
        snapshot.certificates.insert(
            "acme/tls".to_owned(),
            bulkhead_snapshot::Certificate {
                cert_pem: "CERT".to_owned(),
                key_pem: "-----BEGIN PRIVATE KEY-----".to_owned(),
            },
        );
        redact_keys(&mut snapshot);
        let text = serde_json::to_string(&snapshot).expect("serialise");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert!(text.contains(REDACTED));
    }
}
