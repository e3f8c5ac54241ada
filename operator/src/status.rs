//! Object statuses, as they would be written to Kubernetes, and the two steps that happen after
//! translation: [`apply_acks`] (a Gateway is `Programmed` and a Tenant `Ready` only once the tenant's
//! routers serve the snapshot) and [`stamp_transitions`] (the translator is pure and leaves every
//! `lastTransitionTime` at the Unix epoch; callers stamp real times, keeping the previous time of a
//! condition whose status did not change).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Condition status `"True"`.
pub const TRUE: &str = "True";
/// Condition status `"False"`.
pub const FALSE: &str = "False";
pub use crate::conditions::REASON_PENDING;
use crate::conditions::{PROGRAMMED, READY, REASON_PROGRAMMED, REASON_READY};

/// The status of one object: the item shape of the admin `/status` endpoint
/// (`{"apiVersion", "kind", "metadata": {"namespace", "name"}, "status": {...}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectStatus {
    /// API version of the object (`gateway.networking.k8s.io/v1`, ...).
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Kind of the object.
    pub kind: String,
    /// Which object.
    pub metadata: ObjectMeta,
    /// The `status` stanza exactly as it would be written to Kubernetes.
    pub status: Value,
    /// The tenant whose routers must acknowledge before this status is final (not serialised).
    #[serde(skip)]
    pub tenant: Option<String>,
}

/// Namespace and name of the object a status belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Namespace (absent for cluster-scoped objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

/// A condition with `lastTransitionTime` at the Unix epoch (see the module documentation).
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { TRUE } else { FALSE }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

/// Flips the statuses that wait for the routers: for every tenant whose routers serve the current
/// snapshot (`acked[tenant] == true`), a Gateway's `Programmed` condition and its listeners'
/// `Programmed` conditions go from `False`/`Pending` to `True`/`Programmed`, and the Tenant's `Ready`
/// from `False`/`Pending` to `True`/`Ready`. Other conditions are left alone.
pub fn apply_acks(statuses: &mut [ObjectStatus], acked: &BTreeMap<String, bool>) {
    for s in statuses.iter_mut() {
        let Some(tenant) = s.tenant.as_deref() else {
            continue;
        };
        if acked.get(tenant) != Some(&true) {
            continue;
        }
        match s.kind.as_str() {
            "Gateway" | "ListenerSet" => {
                flip_pending(
                    s.status.get_mut("conditions"),
                    PROGRAMMED,
                    REASON_PROGRAMMED,
                    "The tenant's routers serve this Gateway",
                );
                if let Some(Value::Array(listeners)) = s.status.get_mut("listeners") {
                    for l in listeners {
                        flip_pending(
                            l.get_mut("conditions"),
                            PROGRAMMED,
                            REASON_PROGRAMMED,
                            "The tenant's routers serve this listener",
                        );
                    }
                }
            }
            "Tenant" => flip_pending(
                s.status.get_mut("conditions"),
                READY,
                REASON_READY,
                "The tenant's routers serve the current snapshot",
            ),
            _ => {}
        }
    }
}

fn flip_pending(conditions: Option<&mut Value>, type_: &str, reason: &str, message: &str) {
    let Some(Value::Array(conditions)) = conditions else {
        return;
    };
    for c in conditions {
        let is_target = c.get("type").and_then(Value::as_str) == Some(type_)
            && c.get("status").and_then(Value::as_str) == Some(FALSE)
            && c.get("reason").and_then(Value::as_str) == Some(REASON_PENDING);
        if is_target {
            if let Value::Object(map) = c {
                map.insert("status".into(), Value::String(TRUE.into()));
                map.insert("reason".into(), Value::String(reason.into()));
                map.insert("message".into(), Value::String(message.into()));
            }
        }
    }
}

/// Sets `lastTransitionTime` of every condition in `current`: the time from `previous` when the same
/// condition (same object, same place, same type) had the same status there, else `now`.
/// Conditions are found under `status.conditions`, `status.listeners[].conditions` and
/// `status.parents[].conditions`.
pub fn stamp_transitions(current: &mut [ObjectStatus], previous: &[ObjectStatus], now: &Time) {
    let before: BTreeMap<String, &Value> = previous
        .iter()
        .map(|s| (object_path(s), &s.status))
        .collect();
    let now = serde_json::to_value(now).unwrap_or(Value::Null);
    for s in current.iter_mut() {
        let known = before
            .get(&object_path(s))
            .map(|v| transition_times(v))
            .unwrap_or_default();
        restamp(&mut s.status, &known, &now, Some(&now));
    }
}

/// Where a condition sits in a status (section, item and type, as a 64-bit hash: these are kept
/// for every object whose status the operator writes), its status and its `lastTransitionTime`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionTime {
    place: u64,
    status: String,
    time: Value,
}

/// The place, status and transition time of every condition of `status` (see
/// [`stamp_transitions`] for the places searched).
pub fn transition_times(status: &Value) -> Vec<ConditionTime> {
    let mut out = Vec::new();
    let mut status = status.clone();
    visit_conditions(&mut status, "", &mut |place, c| {
        if let (Some(s), Some(time)) = (
            c.get("status").and_then(Value::as_str),
            c.get("lastTransitionTime"),
        ) {
            out.push(ConditionTime {
                place: place_hash(place),
                status: s.to_owned(),
                time: time.clone(),
            });
        }
    });
    out
}

/// Sets the `lastTransitionTime` of every condition of `status` from `known` (as
/// [`transition_times`] gave it for an earlier status of the same object): the known time when
/// the condition had the same status, `changed` when its status differs, and `unknown` (or the
/// time it has, when `None`) when it was not there.
pub fn restamp(
    status: &mut Value,
    known: &[ConditionTime],
    changed: &Value,
    unknown: Option<&Value>,
) {
    visit_conditions(status, "", &mut |place, c| {
        let current = c.get("status").and_then(Value::as_str).unwrap_or_default();
        let place = place_hash(place);
        let time = match known.iter().find(|k| k.place == place) {
            Some(k) if k.status == current => k.time.clone(),
            Some(_) => changed.clone(),
            None => match unknown {
                Some(t) => t.clone(),
                None => return,
            },
        };
        if let Value::Object(map) = c {
            map.insert("lastTransitionTime".into(), time);
        }
    });
}

fn object_path(s: &ObjectStatus) -> String {
    format!(
        "{}|{}|{}|{}",
        s.api_version,
        s.kind,
        s.metadata.namespace.as_deref().unwrap_or_default(),
        s.metadata.name
    )
}

fn place_hash(place: &str) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    place.hash(&mut h);
    h.finish()
}

/// Calls `f(path, condition)` for every condition at the known places.
fn visit_conditions(status: &mut Value, prefix: &str, f: &mut dyn FnMut(&str, &mut Value)) {
    visit_list(status.get_mut("conditions"), prefix, f);
    for (section, id_key) in [("listeners", "name"), ("parents", "parentRef")] {
        if let Some(Value::Array(items)) = status.get_mut(section) {
            for item in items {
                let id = item.get(id_key).map(|v| v.to_string()).unwrap_or_default();
                let path = format!("{prefix}|{section}|{id}");
                visit_list(item.get_mut("conditions"), &path, f);
            }
        }
    }
}

fn visit_list(list: Option<&mut Value>, prefix: &str, f: &mut dyn FnMut(&str, &mut Value)) {
    let Some(Value::Array(conditions)) = list else {
        return;
    };
    for c in conditions {
        let type_ = c
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        f(&format!("{prefix}|{type_}"), c);
    }
}

/// A 64-bit digest of a status value (or of a list of statuses), to tell whether it changed
/// without keeping a copy. Stable within one process only.
pub fn digest<T: Serialize + ?Sized>(value: &T) -> u64 {
    use std::hash::{DefaultHasher, Hasher};
    let mut h = DefaultHasher::new();
    h.write(&serde_json::to_vec(value).unwrap_or_default());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gateway_status(tenant: &str) -> ObjectStatus {
        ObjectStatus {
            api_version: "gateway.networking.k8s.io/v1".into(),
            kind: "Gateway".into(),
            metadata: ObjectMeta {
                namespace: Some("acme".into()),
                name: "web".into(),
            },
            status: json!({
                "conditions": [
                    serde_json::to_value(condition("Accepted", true, "Accepted", "ok", Some(1))).unwrap(),
                    serde_json::to_value(condition("Programmed", false, REASON_PENDING, "wait", Some(1))).unwrap(),
                ],
                "listeners": [{
                    "name": "https",
                    "attachedRoutes": 1,
                    "conditions": [
                        serde_json::to_value(condition("Programmed", false, REASON_PENDING, "wait", Some(1))).unwrap(),
                        serde_json::to_value(condition("ResolvedRefs", false, "InvalidCertificateRef", "bad", Some(1))).unwrap(),
                    ]
                }]
            }),
            tenant: Some(tenant.into()),
        }
    }

    fn cond<'a>(v: &'a Value, type_: &str) -> &'a Value {
        v.as_array()
            .and_then(|a| a.iter().find(|c| c["type"] == type_))
            .expect("condition present")
    }

    #[test]
    fn acks_flip_only_pending_programmed_conditions_of_acked_tenants() {
        let mut statuses = vec![gateway_status("acme"), gateway_status("globex")];
        let acked = BTreeMap::from([("acme".to_owned(), true), ("globex".to_owned(), false)]);
        apply_acks(&mut statuses, &acked);
        let acme = &statuses[0].status;
        assert_eq!(cond(&acme["conditions"], "Programmed")["status"], "True");
        assert_eq!(
            cond(&acme["conditions"], "Programmed")["reason"],
            "Programmed"
        );
        let l = &acme["listeners"][0]["conditions"];
        assert_eq!(cond(l, "Programmed")["status"], "True");
        assert_eq!(
            cond(l, "ResolvedRefs")["status"],
            "False",
            "other conditions untouched"
        );
        let globex = &statuses[1].status;
        assert_eq!(
            cond(&globex["conditions"], "Programmed")["reason"],
            REASON_PENDING
        );
    }

    #[test]
    fn stamping_keeps_the_time_of_unchanged_conditions() {
        let then = Time("2024-01-01T00:00:00Z".parse().unwrap());
        let now = Time("2025-06-01T12:00:00Z".parse().unwrap());
        let mut previous = vec![gateway_status("acme")];
        stamp_transitions(&mut previous, &[], &then);
        assert_eq!(
            cond(&previous[0].status["conditions"], "Accepted")["lastTransitionTime"],
            "2024-01-01T00:00:00Z"
        );
        let mut current = vec![gateway_status("acme")];
        apply_acks(&mut current, &BTreeMap::from([("acme".to_owned(), true)]));
        stamp_transitions(&mut current, &previous, &now);
        let c = &current[0].status["conditions"];
        assert_eq!(
            cond(c, "Accepted")["lastTransitionTime"],
            "2024-01-01T00:00:00Z"
        );
        assert_eq!(
            cond(c, "Programmed")["lastTransitionTime"],
            "2025-06-01T12:00:00Z"
        );
        let l = &current[0].status["listeners"][0]["conditions"];
        assert_eq!(
            cond(l, "ResolvedRefs")["lastTransitionTime"],
            "2024-01-01T00:00:00Z"
        );
        assert_eq!(
            cond(l, "Programmed")["lastTransitionTime"],
            "2025-06-01T12:00:00Z"
        );
    }

    #[test]
    fn object_status_serialises_to_the_status_item_shape() {
        let s = gateway_status("acme");
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(v["metadata"], json!({"namespace": "acme", "name": "web"}));
        assert!(v.get("tenant").is_none());
    }
}
