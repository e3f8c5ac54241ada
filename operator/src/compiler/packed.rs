//! Statuses kept between rounds as compact JSON text ([`PackedPartition`]): a `serde_json::Value`
//! tree costs several times more, and a partition is unpacked only when it is rendered or written
//! again.

use crate::status::ObjectStatus;
use crate::translator::tenant::RouteParentFragment;
use serde_json::Value;

/// A status kept as compact JSON text (a `serde_json::Value` tree costs several times more), with
/// the rest of its record; the value is parsed again only when a partition is rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Packed<T> {
    pub(super) record: T,
    pub(super) json: Box<str>,
}

pub(super) fn pack_status(mut s: ObjectStatus) -> Packed<ObjectStatus> {
    let json = serde_json::to_string(&s.status)
        .unwrap_or_default()
        .into_boxed_str();
    s.status = Value::Null;
    Packed { record: s, json }
}

pub(super) fn pack_fragment(mut f: RouteParentFragment) -> Packed<RouteParentFragment> {
    let json = serde_json::to_string(&f.status)
        .unwrap_or_default()
        .into_boxed_str();
    f.status = Value::Null;
    Packed { record: f, json }
}

/// A status partition as kept between rounds (rendered, written): each status packed as compact
/// JSON, unpacked only when the partition is rendered or written again. `Eq`, so that comparing
/// two `Arc`s of the same partition is a pointer comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedPartition(Vec<Packed<ObjectStatus>>);

impl PackedPartition {
    /// Packs statuses.
    pub fn pack(statuses: Vec<ObjectStatus>) -> Self {
        Self(statuses.into_iter().map(pack_status).collect())
    }

    /// The statuses, unpacked.
    pub fn unpack(&self) -> Vec<ObjectStatus> {
        self.0
            .iter()
            .map(|p| ObjectStatus {
                status: unpack(&p.json),
                ..p.record.clone()
            })
            .collect()
    }

    /// The statuses without their `status` values (for their identity: kind, namespace, name).
    pub fn records(&self) -> impl Iterator<Item = &ObjectStatus> {
        self.0.iter().map(|p| &p.record)
    }

    /// Number of statuses.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the partition holds no status.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

pub(super) fn unpack(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or(Value::Null)
}
