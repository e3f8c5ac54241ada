//! ListenerSets (Gateway API v1.5, GEP-1713): listeners a namespace adds to a Gateway that allows
//! it, the tenant's way to add listeners (hostnames, certificates) to a shared Gateway.
//!
//! A ListenerSet attaches to the Gateway its `parentRef` names when that Gateway is ours and its
//! `spec.allowedListeners.namespaces.from` admits the ListenerSet's namespace (`Same`, `All`,
//! `Selector`; absent or `None` admits none). Its listeners are served by the router of the tenant
//! owning the ListenerSet's namespace, exactly like that tenant's Gateway listeners (hostnames
//! within the tenant's grant, certificates from its namespace); the parent Gateway's own listeners
//! come first when listeners conflict, then ListenerSets oldest first, then by name. A ListenerSet
//! the Gateway does not admit is `Accepted=False`/`NotAllowed` and none of its listeners is served.
//! A ListenerSet whose parent is missing or another controller's gets no status from us (as a
//! route's parentRef).

use super::global::TenantPlan;
use super::listeners::{selector_matches, Listener};
use super::refs::Problem;
use super::tenant::{accepted_and_programmed, listener_status};
use super::world::{age_key, name_of, ns_of, World, GATEWAY_GROUP};
use crate::status::{condition, ObjectMeta, ObjectStatus};
use gateway_api::experimental::gateways::{
    Gateway, GatewayAllowedListenersNamespacesFrom, GatewayListeners,
    GatewayListenersAllowedRoutesNamespacesSelector,
};
use gateway_api::listenersets::{ListenerSet, ListenerSetStatus, ListenerSetStatusListeners};
use serde_json::Value;

/// The kind as routes' parentRefs and statuses name it.
pub(crate) const KIND: &str = "ListenerSet";
/// The API version ListenerSet statuses are written with.
pub(crate) const API_VERSION: &str = "gateway.networking.k8s.io/v1";
/// Gateway condition reporting attached ListenerSets (present when `allowedListeners` admits some).
const ATTACHED_CONDITION: &str = "AttachedListenerSets";

/// The namespace of the Gateway a ListenerSet names, when its `parentRef` names a Gateway.
pub(crate) fn parent_namespace(ls: &ListenerSet) -> Option<String> {
    let p = &ls.spec.parent_ref;
    let group_ok = p.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP;
    let kind_ok = p.kind.as_deref().unwrap_or("Gateway") == "Gateway";
    (group_ok && kind_ok).then(|| {
        p.namespace
            .clone()
            .unwrap_or_else(|| ns_of(&ls.metadata).to_owned())
    })
}

/// The Gateway a ListenerSet names, when it exists and is ours.
pub(crate) fn parent<'a>(world: &World<'a>, ls: &ListenerSet) -> Option<&'a Gateway> {
    let pns = parent_namespace(ls)?;
    world
        .gateways_in(&pns)
        .iter()
        .copied()
        .find(|g| name_of(&g.metadata) == ls.spec.parent_ref.name && world.is_ours(g))
}

/// Whether Gateway `g`'s `allowedListeners` admits any namespace at all.
pub(crate) fn admits_any(g: &Gateway) -> bool {
    from_of(g).is_some_and(|f| f != GatewayAllowedListenersNamespacesFrom::None)
}

fn from_of(g: &Gateway) -> Option<GatewayAllowedListenersNamespacesFrom> {
    g.spec
        .allowed_listeners
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
        .and_then(|n| n.from.clone())
}

/// `Ok` when Gateway `g`'s `allowedListeners` admits ListenerSets from namespace `ls_ns`, else
/// why not (`NotAllowed`).
pub(crate) fn admission(world: &World<'_>, g: &Gateway, ls_ns: &str) -> Result<(), Problem> {
    let gns = ns_of(&g.metadata);
    let gateway = format!("Gateway {gns}/{}", name_of(&g.metadata));
    let refuse = |why: String| Err(Problem::new("NotAllowed", format!("{gateway} {why}")));
    match from_of(g) {
        None | Some(GatewayAllowedListenersNamespacesFrom::None) => {
            refuse("admits no ListenerSets (spec.allowedListeners.namespaces.from is None)".into())
        }
        Some(GatewayAllowedListenersNamespacesFrom::All) => Ok(()),
        Some(GatewayAllowedListenersNamespacesFrom::Same) if gns == ls_ns => Ok(()),
        Some(GatewayAllowedListenersNamespacesFrom::Same) => refuse(format!(
            "admits ListenerSets of its own namespace only, not of {ls_ns:?}"
        )),
        Some(GatewayAllowedListenersNamespacesFrom::Selector) => {
            let selector = g
                .spec
                .allowed_listeners
                .as_ref()
                .and_then(|a| a.namespaces.as_ref())
                .and_then(|n| n.selector.as_ref())
                .and_then(|s| serde_json::to_value(s).ok())
                .and_then(|v| {
                    serde_json::from_value::<GatewayListenersAllowedRoutesNamespacesSelector>(v)
                        .ok()
                });
            match selector {
                Some(sel) if selector_matches(&sel, &world.namespace_labels(ls_ns)) => Ok(()),
                _ => refuse(format!(
                    "admits ListenerSets of the namespaces its selector matches, not {ls_ns:?}"
                )),
            }
        }
    }
}

/// One ListenerSet of the tenant whose parent is ours.
#[derive(Debug, Clone)]
pub(crate) struct TenantSet<'a> {
    pub(crate) ls: &'a ListenerSet,
    pub(crate) parent: &'a Gateway,
    /// `Err(NotAllowed)` when the parent does not admit it (its listeners are not served).
    pub(crate) admitted: Result<(), Problem>,
    /// Its listeners, as the Gateway listeners they are.
    pub(crate) listeners: Vec<GatewayListeners>,
}

/// The ListenerSets in namespace `ns` whose parent Gateway is ours, oldest first, then by name.
pub(crate) fn of_namespace<'a>(world: &World<'a>, ns: &str) -> Vec<TenantSet<'a>> {
    let mut sets: Vec<TenantSet<'a>> = world
        .objects
        .listener_sets
        .iter()
        .filter(|ls| ns_of(&ls.metadata) == ns)
        .filter_map(|ls| {
            let parent = parent(world, ls)?;
            Some(TenantSet {
                ls,
                parent,
                admitted: admission(world, parent, ns),
                listeners: ls
                    .spec
                    .listeners
                    .iter()
                    .filter_map(|l| {
                        serde_json::to_value(l)
                            .ok()
                            .and_then(|v| serde_json::from_value(v).ok())
                    })
                    .collect(),
            })
        })
        .collect();
    sets.sort_by(|a, b| {
        age_key(&a.ls.metadata)
            .cmp(&age_key(&b.ls.metadata))
            .then_with(|| name_of(&a.ls.metadata).cmp(name_of(&b.ls.metadata)))
    });
    sets
}

/// How many ListenerSets Gateway `g`'s `allowedListeners` admits among those naming it whose
/// namespace `served` accepts (the cluster-wide part knows which namespaces are served; a tenant's
/// translation counts every admitted one).
pub(crate) fn attached_count(
    world: &World<'_>,
    g: &Gateway,
    served: &dyn Fn(&str) -> bool,
) -> usize {
    let (gns, gname) = (ns_of(&g.metadata), name_of(&g.metadata));
    world
        .objects
        .listener_sets
        .iter()
        .filter(|ls| {
            ls.spec.parent_ref.name == gname && parent_namespace(ls).as_deref() == Some(gns)
        })
        .filter(|ls| served(ns_of(&ls.metadata)))
        .filter(|ls| admission(world, g, ns_of(&ls.metadata)).is_ok())
        .count()
}

/// Adds `status.attachedListenerSets` and the `AttachedListenerSets` condition to a Gateway's
/// status, when its `allowedListeners` admits some namespace (left out otherwise, so Gateways
/// that do not use ListenerSets keep the status they had).
pub(crate) fn decorate_gateway_status(
    world: &World<'_>,
    g: &Gateway,
    served: &dyn Fn(&str) -> bool,
    status: &mut Value,
) {
    if !admits_any(g) {
        return;
    }
    let count = attached_count(world, g, served);
    let generation = g.metadata.generation;
    let c = if count > 0 {
        condition(
            ATTACHED_CONDITION,
            true,
            "ListenerSetsAttached",
            format!("{count} ListenerSet(s) attached"),
            generation,
        )
    } else {
        condition(
            ATTACHED_CONDITION,
            false,
            "NoListenerSetsAttached",
            "No ListenerSet is attached",
            generation,
        )
    };
    if let Value::Object(map) = status {
        map.insert(
            "attachedListenerSets".into(),
            Value::from(i32::try_from(count).unwrap_or(i32::MAX)),
        );
        if let Some(Value::Array(conditions)) = map.get_mut("conditions") {
            conditions.push(serde_json::to_value(c).unwrap_or_default());
        }
    }
}

/// The status of one of the tenant's ListenerSets; `index` is its place among the listener
/// sources (its listeners carry it).
pub(crate) fn status(
    plan: &TenantPlan,
    set: &TenantSet<'_>,
    index: usize,
    listeners: &[Listener],
) -> ObjectStatus {
    let generation = set.ls.metadata.generation;
    let mine: Vec<&Listener> = listeners.iter().filter(|l| l.gateway == index).collect();
    let conditions = match &set.admitted {
        Err(p) => vec![
            condition("Accepted", false, p.reason, p.message.clone(), generation),
            condition("Programmed", false, p.reason, p.message.clone(), generation),
        ],
        Ok(()) => accepted_and_programmed(&mine, KIND, generation).to_vec(),
    };
    let status = ListenerSetStatus {
        conditions: Some(conditions),
        listeners: Some(
            mine.iter()
                .filter_map(|l| {
                    serde_json::to_value(listener_status(l, generation))
                        .ok()
                        .and_then(|v| serde_json::from_value::<ListenerSetStatusListeners>(v).ok())
                })
                .collect(),
        ),
    };
    ObjectStatus {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        metadata: ObjectMeta {
            namespace: Some(plan.namespace.clone()),
            name: name_of(&set.ls.metadata).to_owned(),
        },
        status: serde_json::to_value(status).unwrap_or_default(),
        tenant: Some(plan.name.clone()),
    }
}

/// Statuses of the ListenerSets whose parent is ours but whose namespace is no served tenant's
/// (`served` tells): `NotAllowed`, nothing of theirs is served.
pub(crate) fn unserved_statuses(
    world: &World<'_>,
    served: impl Fn(&str) -> bool,
) -> Vec<ObjectStatus> {
    world
        .objects
        .listener_sets
        .iter()
        .filter(|ls| !served(ns_of(&ls.metadata)) && parent(world, ls).is_some())
        .map(|ls| {
            let ns = ns_of(&ls.metadata);
            let generation = ls.metadata.generation;
            let message = format!(
                "namespace {ns:?} is not the namespace of a served Tenant, so its listeners are not served; ask the cluster admin to onboard it"
            );
            let status = ListenerSetStatus {
                conditions: Some(vec![
                    condition("Accepted", false, "NotAllowed", message.clone(), generation),
                    condition("Programmed", false, "NotAllowed", message, generation),
                ]),
                listeners: None,
            };
            ObjectStatus {
                api_version: API_VERSION.into(),
                kind: KIND.into(),
                metadata: ObjectMeta {
                    namespace: Some(ns.to_owned()),
                    name: name_of(&ls.metadata).to_owned(),
                },
                status: serde_json::to_value(status).unwrap_or_default(),
                tenant: None,
            }
        })
        .collect()
}
