//! The limits the Kubernetes API server (and the Gateway API CRDs) enforce on the objects Bulkhead
//! writes: names, labels, annotations, conditions, Events, GatewayClass fields. An object that
//! breaks one is refused by the API server (`kubectl apply` fails, a status write is lost), so the
//! operator's renderers and the install manifests are checked against them ([`check_object`]).
//!
//! Sources: Kubernetes `apimachinery/pkg/util/validation` (DNS-1123, DNS-1035, qualified names,
//! label values), `apimachinery/pkg/api/validation` (annotations), `metav1.Condition`'s schema,
//! `events.k8s.io/v1` validation, and the Gateway API v1.5 CRDs.

use serde_json::Value;

/// Longest DNS-1123 label (namespace names, container names, label names).
pub const MAX_DNS1123_LABEL: usize = 63;
/// Longest DNS-1123 subdomain (most object names, label and annotation key prefixes).
pub const MAX_DNS1123_SUBDOMAIN: usize = 253;
/// Longest label value.
pub const MAX_LABEL_VALUE: usize = 63;
/// Largest total size of an object's annotations (keys and values), 256 KiB.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
/// Longest `metav1.Condition` type.
pub const MAX_CONDITION_TYPE: usize = 316;
/// Longest `metav1.Condition` reason.
pub const MAX_CONDITION_REASON: usize = 1024;
/// Longest `metav1.Condition` message.
pub const MAX_CONDITION_MESSAGE: usize = 32_768;
/// Longest `events.k8s.io/v1` Event note, in bytes.
pub const MAX_EVENT_NOTE: usize = 1024;
/// Longest Event reason and action.
pub const MAX_EVENT_REASON: usize = 128;
/// Longest Gateway API `GatewayClass.spec.description`.
pub const MAX_GATEWAY_CLASS_DESCRIPTION: usize = 64;
/// Longest Gateway API `GatewayClass.spec.controllerName`.
pub const MAX_CONTROLLER_NAME: usize = 253;
/// Longest container port name (an IANA service name).
pub const MAX_PORT_NAME: usize = 15;

/// A DNS-1123 label: at most 63 lowercase letters, digits and `-`, starting and ending with a
/// letter or digit. `Err` says why not.
pub fn dns1123_label(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("empty");
    }
    if value.len() > MAX_DNS1123_LABEL {
        return Err("longer than 63 characters");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("only lowercase letters, digits and '-' are allowed");
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

/// A DNS-1123 subdomain: at most 253 characters, dot-separated DNS-1123 labels.
pub fn dns1123_subdomain(value: &str) -> Result<(), &'static str> {
    if value.len() > MAX_DNS1123_SUBDOMAIN {
        return Err("longer than 253 characters");
    }
    value.split('.').try_for_each(|label| {
        dns1123_label(label).map_err(|_| "not dot-separated lowercase DNS labels")
    })
}

/// A DNS-1035 label (Service names): a DNS-1123 label that starts with a letter.
pub fn dns1035_label(value: &str) -> Result<(), &'static str> {
    dns1123_label(value)?;
    if !value.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("must start with a letter");
    }
    Ok(())
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?` of at most `max` characters, empty allowed when
/// `allow_empty` (label values may be empty, label names may not).
fn name_part(value: &str, max: usize, allow_empty: bool) -> Result<(), &'static str> {
    if value.is_empty() {
        return if allow_empty { Ok(()) } else { Err("empty") };
    }
    if value.len() > max {
        return Err("longer than 63 characters");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("only letters, digits, '-', '_' and '.' are allowed");
    }
    let edge_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    if !edge_ok(value.bytes().next()) || !edge_ok(value.bytes().last()) {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

/// A label value: empty, or at most 63 letters, digits, `-`, `_` and `.`, starting and ending
/// with a letter or digit.
pub fn label_value(value: &str) -> Result<(), &'static str> {
    name_part(value, MAX_LABEL_VALUE, true)
}

/// A qualified name (label and annotation keys): an optional DNS-1123 subdomain prefix and `/`,
/// then a name of at most 63 letters, digits, `-`, `_` and `.`.
pub fn qualified_name(value: &str) -> Result<(), &'static str> {
    let name = match value.split_once('/') {
        Some((prefix, name)) => {
            dns1123_subdomain(prefix).map_err(|_| "prefix is not a DNS-1123 subdomain")?;
            name
        }
        None => value,
    };
    name_part(name, MAX_DNS1123_LABEL, false)
}

/// A condition reason: `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`, at most 1024 characters.
pub fn condition_reason(value: &str) -> Result<(), &'static str> {
    if value.is_empty() || value.len() > MAX_CONDITION_REASON {
        return Err("must be 1 to 1024 characters");
    }
    let b = value.as_bytes();
    let inner_ok = b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b',' | b':'));
    let last_ok = b
        .last()
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
    if !b[0].is_ascii_alphabetic() || !inner_ok || !last_ok {
        return Err("must match ^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$");
    }
    Ok(())
}

/// A condition type: a qualified name (`Ready`, `example.com/Ready`) of at most 316 characters.
pub fn condition_type(value: &str) -> Result<(), &'static str> {
    if value.len() > MAX_CONDITION_TYPE {
        return Err("longer than 316 characters");
    }
    qualified_name(value)
}

/// One limit an object breaks: where (a JSON path) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where in the object, e.g. `.metadata.labels["app"]`.
    pub path: String,
    /// The rule broken.
    pub rule: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.rule)
    }
}

struct Checker {
    found: Vec<Violation>,
}

impl Checker {
    fn check(&mut self, path: &str, result: Result<(), &'static str>) {
        if let Err(rule) = result {
            self.found.push(Violation {
                path: path.to_owned(),
                rule: rule.to_owned(),
            });
        }
    }

    fn at_most(&mut self, path: &str, value: &str, max: usize) {
        if value.len() > max {
            self.found.push(Violation {
                path: path.to_owned(),
                rule: format!("{} bytes, at most {max} allowed", value.len()),
            });
        }
    }

    fn metadata(&mut self, kind: &str, meta: &Value) {
        let name = meta["name"].as_str().unwrap_or_default();
        let rule = match kind {
            "Namespace" => dns1123_label,
            "Service" => dns1035_label,
            _ => dns1123_subdomain,
        };
        self.check(".metadata.name", rule(name));
        if let Some(ns) = meta["namespace"].as_str() {
            self.check(".metadata.namespace", dns1123_label(ns));
        }
        if let Some(annotations) = meta["annotations"].as_object() {
            let total: usize = annotations
                .iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                .sum();
            if total > MAX_ANNOTATIONS_BYTES {
                self.check(".metadata.annotations", Err("larger than 256 KiB in total"));
            }
            for key in annotations.keys() {
                self.check(
                    &format!(".metadata.annotations[{key:?}]"),
                    qualified_name(key),
                );
            }
        }
        for owner in meta["ownerReferences"].as_array().into_iter().flatten() {
            let name = owner["name"].as_str().unwrap_or_default();
            self.check(".metadata.ownerReferences[].name", dns1123_subdomain(name));
        }
    }

    fn labels(&mut self, path: &str, labels: &serde_json::Map<String, Value>) {
        for (key, value) in labels {
            let at = format!("{path}[{key:?}]");
            self.check(&at, qualified_name(key));
            self.check(&at, label_value(value.as_str().unwrap_or_default()));
        }
    }

    fn conditions(&mut self, path: &str, conditions: &[Value]) {
        let mut types = std::collections::BTreeSet::new();
        for (i, c) in conditions.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let type_ = c["type"].as_str().unwrap_or_default();
            self.check(&format!("{at}.type"), condition_type(type_));
            if !types.insert(type_) {
                self.check(&format!("{at}.type"), Err("duplicate condition type"));
            }
            let reason = c["reason"].as_str().unwrap_or_default();
            self.check(&format!("{at}.reason"), condition_reason(reason));
            let message = c["message"].as_str().unwrap_or_default();
            self.at_most(&format!("{at}.message"), message, MAX_CONDITION_MESSAGE);
            let status = c["status"].as_str().unwrap_or_default();
            if !matches!(status, "True" | "False" | "Unknown") {
                self.check(&format!("{at}.status"), Err("not True, False or Unknown"));
            }
        }
    }

    /// Walks every value: labels and selectors, conditions, container, port and volume names.
    fn walk(&mut self, path: &str, value: &Value) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    let at = format!("{path}.{key}");
                    match (key.as_str(), v) {
                        ("labels" | "matchLabels", Value::Object(labels)) => {
                            self.labels(&at, labels)
                        }
                        ("conditions", Value::Array(list)) => self.conditions(&at, list),
                        ("containers" | "initContainers" | "volumes", Value::Array(list)) => {
                            for item in list {
                                let name = item["name"].as_str().unwrap_or_default();
                                self.check(&format!("{at}[].name"), dns1123_label(name));
                            }
                        }
                        ("ports", Value::Array(list)) => {
                            for name in list.iter().filter_map(|p| p["name"].as_str()) {
                                self.at_most(&format!("{at}[].name"), name, MAX_PORT_NAME);
                                self.check(&format!("{at}[].name"), dns1123_label(name));
                            }
                        }
                        _ => {}
                    }
                    self.walk(&at, v);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    self.walk(&format!("{path}[{i}]"), v);
                }
            }
            _ => {}
        }
    }

    fn gateway_class(&mut self, spec: &Value) {
        let controller = spec["controllerName"].as_str().unwrap_or_default();
        self.at_most(".spec.controllerName", controller, MAX_CONTROLLER_NAME);
        if let Some((domain, path)) = controller.split_once('/') {
            self.check(".spec.controllerName", dns1123_subdomain(domain));
            if path.is_empty() {
                self.check(".spec.controllerName", Err("empty path"));
            }
        } else {
            self.check(".spec.controllerName", Err("must be DOMAIN/PATH"));
        }
        if let Some(description) = spec["description"].as_str() {
            self.at_most(
                ".spec.description",
                description,
                MAX_GATEWAY_CLASS_DESCRIPTION,
            );
        }
    }
}

/// Every limit `object` (a Kubernetes object as JSON, with `kind` and `metadata`) breaks: its
/// name by kind (DNS-1123 label for Namespaces, DNS-1035 label for Services, DNS-1123 subdomain
/// otherwise), its namespace, annotations (keys, 256 KiB in total), owner names; every label map
/// and selector at any depth (keys, values); every `conditions` list (type, reason pattern,
/// message length, status, one condition per type); container, volume and port names; a
/// GatewayClass's `controllerName` and `description`.
pub fn check_object(object: &Value) -> Vec<Violation> {
    let mut checker = Checker { found: Vec::new() };
    let kind = object["kind"].as_str().unwrap_or_default();
    checker.metadata(kind, &object["metadata"]);
    checker.walk("", object);
    if kind == "GatewayClass" && object.get("spec").is_some() {
        checker.gateway_class(&object["spec"]);
    }
    checker.found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_the_kubernetes_patterns() {
        assert!(dns1123_label("team-a").is_ok());
        for bad in ["", "Team", "-a", "a-", "a.b", &"a".repeat(64)] {
            assert!(dns1123_label(bad).is_err(), "{bad:?}");
        }
        assert!(dns1123_subdomain("a.b-c.d").is_ok());
        assert!(dns1123_subdomain("a..b").is_err());
        assert!(dns1123_subdomain(&format!("{}.b", "a".repeat(252))).is_err());
        assert!(dns1035_label("9lives").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_x").is_ok());
        assert!(label_value("_x").is_err());
        assert!(qualified_name("app.kubernetes.io/name").is_ok());
        assert!(qualified_name("Bad_Prefix/name").is_err());
        assert!(qualified_name("/name").is_err());
    }

    #[test]
    fn condition_reasons_follow_the_metav1_pattern() {
        for good in ["Accepted", "A", "Not_Ready", "a:b,c_"] {
            assert!(condition_reason(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "1Bad",
            "Has Space",
            "Ends:",
            "dash-ed",
            &"A".repeat(1025),
        ] {
            assert!(condition_reason(bad).is_err(), "{bad:?}");
        }
        assert!(condition_type("bulkhead.dev/Overlap").is_ok());
        assert!(condition_type("Bad Type").is_err());
    }

    #[test]
    fn an_object_breaking_limits_lists_each_violation() {
        let object = json!({
            "kind": "GatewayClass",
            "metadata": {"name": "Bulkhead", "labels": {"app": "x".repeat(64)}},
            "spec": {"controllerName": "bulkhead.dev/gateway-controller", "description": "d".repeat(65)},
            "status": {"conditions": [
                {"type": "Accepted", "status": "True", "reason": "Bad-Reason", "message": "m".repeat(32_769)},
                {"type": "Accepted", "status": "Maybe", "reason": "Ok", "message": ""}
            ]}
        });
        let found: Vec<String> = check_object(&object).into_iter().map(|v| v.path).collect();
        for path in [
            ".metadata.name",
            ".metadata.labels[\"app\"]",
            ".spec.description",
            ".status.conditions[0].reason",
            ".status.conditions[0].message",
            ".status.conditions[1].type",
            ".status.conditions[1].status",
        ] {
            assert!(found.iter().any(|p| p == path), "{path} in {found:?}");
        }
        assert_eq!(found.len(), 7, "{found:?}");
    }
}
