//! Route `status.parents` entries of other controllers: read from the cached routes and merged
//! into the statuses the operator writes (the list is atomic for server-side apply), and the stale
//! entries of routes no Gateway of ours lists any more.

use crate::index::{Kind, ObjectIndex};
use crate::status::ObjectStatus;
use bulkhead_crds::CONTROLLER_NAME;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

/// Route `status.parents` entries written by other controllers, by (kind, namespace, name).
pub type ForeignParents = BTreeMap<(String, String, String), Vec<serde_json::Value>>;

/// The entries of the `status.parents` of the routes listed in `statuses` whose `controllerName`
/// is not Bulkhead's, read from the cached routes. `parents` is an atomic list for server-side
/// apply: writing only ours would delete theirs.
pub fn foreign_parents(statuses: &[ObjectStatus], index: &ObjectIndex) -> ForeignParents {
    fn collect<S: serde::Serialize>(
        out: &mut ForeignParents,
        kind: Kind,
        meta: &ObjectMeta,
        status: Option<&S>,
    ) {
        let Some(status) = status.and_then(|s| serde_json::to_value(s).ok()) else {
            return;
        };
        let theirs: Vec<serde_json::Value> = status["parents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["controllerName"] != CONTROLLER_NAME)
            .cloned()
            .collect();
        if !theirs.is_empty() {
            let key = (
                kind.as_str().to_owned(),
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            );
            out.insert(key, theirs);
        }
    }
    use crate::objects::Object;
    let mut out = ForeignParents::new();
    for s in statuses.iter() {
        let ns = s.metadata.namespace.as_deref().unwrap_or_default();
        let Some(kind) = Kind::parse(&s.kind).filter(|k| k.is_route()) else {
            continue;
        };
        match index.get(kind, ns, &s.metadata.name) {
            Some(Object::HttpRoute(r)) => collect(&mut out, kind, &r.metadata, r.status.as_ref()),
            Some(Object::GrpcRoute(r)) => collect(&mut out, kind, &r.metadata, r.status.as_ref()),
            Some(Object::TlsRoute(r)) => collect(&mut out, kind, &r.metadata, r.status.as_ref()),
            Some(Object::TcpRoute(r)) => collect(&mut out, kind, &r.metadata, r.status.as_ref()),
            _ => {}
        }
    }
    out
}

/// Routes in `namespaces` whose status in the cluster still holds an entry of ours (see
/// [`crate::objects::HAS_OUR_PARENTS_ANNOTATION`]) although no Gateway of ours lists them in
/// `current` any more: each gets a status without entries of ours, so the stale ones are removed
/// (other controllers' entries are merged in after).
pub(crate) fn detached_routes<'a>(
    namespaces: impl Iterator<Item = &'a str>,
    current: &[ObjectStatus],
    index: &ObjectIndex,
) -> Vec<ObjectStatus> {
    let listed: std::collections::BTreeSet<(&str, Option<&str>, &str)> = current
        .iter()
        .map(|s| {
            (
                s.kind.as_str(),
                s.metadata.namespace.as_deref(),
                s.metadata.name.as_str(),
            )
        })
        .collect();
    let mut out = Vec::new();
    for ns in namespaces {
        for kind in Kind::ROUTES {
            for route in index.in_namespace(kind, ns) {
                let meta = route.metadata();
                let marked = meta
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(crate::objects::HAS_OUR_PARENTS_ANNOTATION));
                let name = meta.name.as_deref().unwrap_or_default();
                if !marked || listed.contains(&(kind.as_str(), Some(ns), name)) {
                    continue;
                }
                let version = match route {
                    crate::objects::Object::TcpRoute(_) => "gateway.networking.k8s.io/v1alpha2",
                    _ => "gateway.networking.k8s.io/v1",
                };
                out.push(ObjectStatus {
                    api_version: version.to_owned(),
                    kind: kind.as_str().to_owned(),
                    metadata: crate::status::ObjectMeta {
                        namespace: Some(ns.to_owned()),
                        name: name.to_owned(),
                    },
                    status: serde_json::json!({ "parents": [] }),
                    tenant: None,
                });
            }
        }
    }
    out
}

/// `statuses` without other controllers' route entries (as compiled).
pub(crate) fn ours_only(statuses: &[ObjectStatus]) -> Vec<ObjectStatus> {
    let mut out = statuses.to_vec();
    for s in out
        .iter_mut()
        .filter(|s| Kind::parse(&s.kind).is_some_and(Kind::is_route))
    {
        if let Some(serde_json::Value::Array(parents)) = s.status.get_mut("parents") {
            parents.retain(|p| p["controllerName"] == CONTROLLER_NAME);
        }
    }
    out
}

/// Appends other controllers' entries to the `parents` of the route statuses we write.
pub fn merge_foreign_parents(statuses: &mut [ObjectStatus], foreign: &ForeignParents) {
    for s in statuses.iter_mut() {
        let key = (
            s.kind.clone(),
            s.metadata.namespace.clone().unwrap_or_default(),
            s.metadata.name.clone(),
        );
        let Some(theirs) = foreign.get(&key) else {
            continue;
        };
        if let Some(serde_json::Value::Array(parents)) = s.status.get_mut("parents") {
            parents.extend(theirs.iter().cloned());
        }
    }
}
