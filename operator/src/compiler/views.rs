//! The parts of the [`ObjectIndex`] one translation reads: a tenant's view (its namespace, the
//! routes into it and the namespaces they refer to) and the cluster-wide view.

use crate::index::{Kind, ObjectIndex};
use crate::objects::{Object, ObjectSet};
use crate::status::ObjectStatus;
use crate::translator::fingerprint::collect_refs;
use crate::translator::listener_sets;
use serde_json::Value;
use std::collections::BTreeSet;

pub(super) fn clone_kind(index: &ObjectIndex, kind: Kind, ns: &str, out: &mut Vec<Object>) {
    out.extend(index.in_namespace(kind, ns).cloned());
}

/// One tenant's view of the index and the namespaces it covers.
pub(super) fn tenant_view(index: &ObjectIndex, ns: &str) -> (ObjectSet, BTreeSet<String>) {
    let mut objects = Vec::new();
    for kind in Kind::ALL.into_iter().filter(|k| !k.is_cluster_scoped()) {
        clone_kind(index, kind, ns, &mut objects);
    }
    let mut reads = BTreeSet::from([ns.to_owned()]);
    let mut refs = BTreeSet::new();
    for o in index.routes_into(ns) {
        let rns = o.metadata().namespace.clone().unwrap_or_default();
        reads.insert(rns.clone());
        objects.push(o.clone());
    }
    add_listener_set_parents(index, ns, &mut objects, &mut reads);
    for o in &objects {
        let rns = o.metadata().namespace.as_deref().unwrap_or_default();
        let spec = match o {
            Object::Gateway(g) => serde_json::to_value(&g.spec),
            Object::HttpRoute(r) => serde_json::to_value(&r.spec),
            Object::GrpcRoute(r) => serde_json::to_value(&r.spec),
            Object::TlsRoute(r) => serde_json::to_value(&r.spec),
            Object::TcpRoute(r) => serde_json::to_value(&r.spec),
            Object::ListenerSet(l) => serde_json::to_value(&l.spec),
            _ => continue,
        };
        collect_refs(&spec.unwrap_or(Value::Null), rns, &mut refs);
    }
    reads.extend(refs.into_iter().map(|(_, rns, _)| rns));
    for other in reads.iter().filter(|r| r.as_str() != ns) {
        for kind in [
            Kind::Service,
            Kind::EndpointSlice,
            Kind::Secret,
            Kind::ConfigMap,
            Kind::ReferenceGrant,
            Kind::BackendTlsPolicy,
        ] {
            clone_kind(index, kind, other, &mut objects);
        }
    }
    for r in &reads {
        if let Some(n) = index.get(Kind::Namespace, "", r) {
            objects.push(n.clone());
        }
    }
    objects.extend(index.of_kind(Kind::GatewayClass).cloned());
    (ObjectSet::from_objects(objects), reads)
}

/// The Gateways in other namespaces that the ListenerSets of `ns` name (their namespaces are read:
/// a change there re-translates the tenant).
fn add_listener_set_parents(
    index: &ObjectIndex,
    ns: &str,
    objects: &mut Vec<Object>,
    reads: &mut BTreeSet<String>,
) {
    let parents: Vec<(String, String)> = index
        .in_namespace(Kind::ListenerSet, ns)
        .filter_map(|o| match o {
            Object::ListenerSet(ls) => listener_sets::parent_namespace(ls)
                .filter(|pns| pns != ns)
                .map(|pns| (pns, ls.spec.parent_ref.name.clone())),
            _ => None,
        })
        .collect();
    for (pns, name) in parents {
        objects.extend(index.get(Kind::Gateway, &pns, &name).cloned());
        reads.insert(pns);
    }
}

/// The cluster-wide view: Tenants, Namespaces, GatewayClasses, Gateways and ListenerSets.
pub(super) fn cluster_view(index: &ObjectIndex) -> ObjectSet {
    ObjectSet::from_objects(
        [
            Kind::Tenant,
            Kind::Namespace,
            Kind::GatewayClass,
            Kind::Gateway,
            Kind::ListenerSet,
        ]
        .into_iter()
        .flat_map(|k| index.of_kind(k).cloned()),
    )
}

pub(super) fn sort_statuses(statuses: &mut [ObjectStatus]) {
    statuses.sort_by(|a, b| {
        (a.kind.as_str(), &a.metadata.namespace, &a.metadata.name).cmp(&(
            b.kind.as_str(),
            &b.metadata.namespace,
            &b.metadata.name,
        ))
    });
}
