//! The fingerprint of one tenant's translation inputs, so the compiler re-translates only tenants
//! whose inputs changed.
//!
//! It covers everything [`super::tenant::translate`] reads: the tenant's name, namespace, owned
//! hostnames and the more specific ones other tenants own inside them; the GatewayClasses Bulkhead serves; every object in the tenant's namespace; routes in
//! other namespaces that name a Gateway in it (and their namespaces' labels, for label selectors);
//! and every object in another namespace those Gateways and routes refer to (Services with their
//! EndpointSlices, Secrets, CA ConfigMaps) together with the ReferenceGrants of those namespaces. Only the parts of
//! an object that can change a translation are hashed: the spec (or data) and the metadata the
//! translator reads (name, namespace, labels, creation time, generation), never `status` or
//! `resourceVersion`.

use super::global::TenantPlan;
use super::world::{ns_of, World};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// Metadata fields that can change a translation.
const METADATA_KEYS: [&str; 5] = [
    "name",
    "namespace",
    "labels",
    "creationTimestamp",
    "generation",
];

/// Hex SHA-256 over the tenant's inputs.
pub(crate) fn fingerprint(world: &World<'_>, plan: &TenantPlan) -> String {
    let mut h = Sha256::new();
    let mut feed = |v: &Value| {
        h.update(serde_json::to_vec(v).unwrap_or_default());
        h.update([0u8]);
    };
    let ns = plan.namespace.as_str();
    feed(&json!({
        "tenant": plan.name,
        "namespace": ns,
        "owned": plan.owned.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "foreign": plan.foreign.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "classes": world.our_classes,
    }));

    let o = world.objects;
    let in_ns = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| ns_of(m) == ns;
    o.namespaces
        .iter()
        .filter(|n| n.metadata.name.as_deref() == Some(ns))
        .for_each(|x| feed(&stripped(x)));
    o.gateways
        .iter()
        .filter(|x| in_ns(&x.metadata))
        .for_each(|x| feed(&stripped(x)));
    o.http_routes
        .iter()
        .filter(|x| in_ns(&x.metadata))
        .for_each(|x| feed(&stripped(x)));
    o.grpc_routes
        .iter()
        .filter(|x| in_ns(&x.metadata))
        .for_each(|x| feed(&stripped(x)));
    o.tls_routes
        .iter()
        .filter(|x| in_ns(&x.metadata))
        .for_each(|x| feed(&stripped(x)));
    o.tcp_routes
        .iter()
        .filter(|x| in_ns(&x.metadata))
        .for_each(|x| feed(&stripped(x)));
    o.reference_grants
        .iter()
        .filter(|x| in_ns(&x.metadata))
        .for_each(|x| feed(&stripped(x)));
    o.secrets
        .iter()
        .filter(|x| in_ns(&x.metadata))
        .for_each(|x| feed(&stripped(x)));
    o.services
        .iter()
        .filter(|x| in_ns(&x.metadata))
        .for_each(|x| feed(&stripped(x)));
    o.endpoint_slices
        .iter()
        .filter(|x| in_ns(&x.metadata))
        .for_each(|x| feed(&stripped(x)));
    o.config_maps
        .iter()
        .filter(|x| in_ns(&x.metadata))
        .for_each(|x| feed(&stripped(x)));
    o.backend_tls_policies
        .iter()
        .filter(|x| in_ns(&x.metadata))
        .for_each(|x| feed(&stripped(x)));

    // (kind, namespace, name) of objects outside the namespace that are referred to.
    let mut refs: BTreeSet<(&'static str, String, String)> = BTreeSet::new();
    let mut foreign_route_namespaces = BTreeSet::new();
    for r in world.routes_into(ns) {
        let rns = ns_of(r.meta());
        if rns != ns {
            feed(
                &json!({"kind": r.kind().as_str(), "metadata": trimmed_metadata(r.meta()), "spec": r.spec_json()}),
            );
            foreign_route_namespaces.insert(rns.to_owned());
        }
        collect_refs(&r.spec_json(), rns, &mut refs);
    }
    for g in world.gateways_in(ns) {
        let spec = serde_json::to_value(&g.spec).unwrap_or_default();
        collect_refs(&spec, ns, &mut refs);
    }
    // ListenerSets: the tenant's own (with the parents they name elsewhere) and those of other
    // namespaces naming its Gateways (counted in their status, with those namespaces' labels).
    for ls in &o.listener_sets {
        let lns = ns_of(&ls.metadata);
        feed(&stripped(ls));
        if lns == ns {
            collect_refs(
                &serde_json::to_value(&ls.spec).unwrap_or_default(),
                ns,
                &mut refs,
            );
            if let Some(parent) = super::listener_sets::parent(world, ls) {
                let pns = ns_of(&parent.metadata);
                if pns != ns {
                    feed(&stripped(parent));
                    let spec = serde_json::to_value(&parent.spec).unwrap_or_default();
                    collect_refs(&spec, pns, &mut refs);
                }
            }
        } else {
            foreign_route_namespaces.insert(lns.to_owned());
        }
    }
    let mut grant_namespaces = BTreeSet::new();
    for (kind, rns, name) in &refs {
        if rns == ns {
            continue;
        }
        grant_namespaces.insert(rns.clone());
        match *kind {
            "Service" => {
                feed(
                    &world
                        .service(rns, name)
                        .map(stripped)
                        .unwrap_or(Value::Null),
                );
                for s in world.slices_for(rns, name) {
                    feed(&stripped(*s));
                }
                // The BackendTLSPolicies of that namespace and their CA ConfigMaps.
                for p in world.objects.backend_tls_policies.iter() {
                    if ns_of(&p.metadata) != rns.as_str() {
                        continue;
                    }
                    feed(&stripped(p));
                    for r in p.spec.validation.ca_certificate_refs.iter().flatten() {
                        let cm = world.config_map(rns, &r.name);
                        feed(&cm.map(stripped).unwrap_or(Value::Null));
                    }
                }
            }
            "ConfigMap" => feed(
                &world
                    .config_map(rns, name)
                    .map(stripped)
                    .unwrap_or(Value::Null),
            ),
            _ => feed(&world.secret(rns, name).map(stripped).unwrap_or(Value::Null)),
        }
    }
    for gns in &grant_namespaces {
        for g in world.grants_in(gns) {
            feed(&stripped(*g));
        }
    }
    for fns in &foreign_route_namespaces {
        feed(&json!({ "namespaceLabels": world.namespace_labels(fns) }));
    }
    hex::encode(h.finalize())
}

/// Collects backend references (`backendRefs[]`, `backendRef`), certificate references
/// (`certificateRefs[]`) and CA bundle references (`caCertificateRefs[]`, ConfigMaps) anywhere in
/// a spec, resolving an absent namespace to `default_ns`.
pub(crate) fn collect_refs(
    v: &Value,
    default_ns: &str,
    out: &mut BTreeSet<(&'static str, String, String)>,
) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let kind = match k.as_str() {
                    "backendRefs" | "backendRef" => Some("Service"),
                    "certificateRefs" => Some("Secret"),
                    "caCertificateRefs" => Some("ConfigMap"),
                    _ => None,
                };
                if let Some(kind) = kind {
                    let items: Vec<&Value> = match child {
                        Value::Array(a) => a.iter().collect(),
                        other => vec![other],
                    };
                    for item in items {
                        if let Some(name) = item.get("name").and_then(Value::as_str) {
                            let ns = item
                                .get("namespace")
                                .and_then(Value::as_str)
                                .unwrap_or(default_ns);
                            out.insert((kind, ns.to_owned(), name.to_owned()));
                        }
                    }
                }
                collect_refs(child, default_ns, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, default_ns, out)),
        _ => {}
    }
}

/// An object as JSON without `status` and with only the metadata the translator reads.
fn stripped<T: Serialize>(obj: &T) -> Value {
    let mut v = serde_json::to_value(obj).unwrap_or_default();
    if let Value::Object(map) = &mut v {
        map.remove("status");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            meta.retain(|k, _| METADATA_KEYS.contains(&k.as_str()));
        }
    }
    v
}

fn trimmed_metadata(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Value {
    let mut v = serde_json::to_value(meta).unwrap_or_default();
    if let Value::Object(m) = &mut v {
        m.retain(|k, _| METADATA_KEYS.contains(&k.as_str()));
    }
    v
}
