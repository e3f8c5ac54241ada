//! The cluster-wide part of a translation, cheap and recomputed every time: which tenant is served
//! and owns which hostnames, the Tenant and GatewayClass statuses, the statuses of `bulkhead`
//! Gateways outside any tenant namespace, and the edge snapshot.

use super::listener_sets;
use super::world::{age_key, name_of, ns_of, World};
use crate::conditions::{
    ACCEPTED, HOSTNAMES_OVERLAP, PROGRAMMED, READY, REASON_ACCEPTED, REASON_HOSTNAME_CONFLICT,
    REASON_INVALID_HOSTNAME, REASON_NAMESPACE_CONFLICT, REASON_NAMESPACE_NOT_FOUND,
    REASON_NAMESPACE_NOT_ONBOARDED, REASON_NOT_SERVED, REASON_OVERLAPPING_GRANT, REASON_PENDING,
};
use crate::status::{condition, ObjectMeta, ObjectStatus};
use bulkhead_crds::snapshot::{EdgeRoute, EdgeSnapshot, RouterEndpoints, Sealed};
use bulkhead_crds::{Tenant, TenantStatus, CONTROLLER_NAME};
use bulkhead_hostmatch::HostPattern;
use gateway_api::experimental::gateways::Gateway;
use gateway_api::gatewayclasses::{GatewayClassStatus, GatewayClassStatusSupportedFeatures};
use gateway_api::gateways::GatewayStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use std::collections::{BTreeMap, BTreeSet};

/// One tenant, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TenantPlan {
    /// The Tenant's name.
    pub(crate) name: String,
    /// Its namespace.
    pub(crate) namespace: String,
    /// The hostname patterns it owns (invalid and conflicting ones removed), sorted by text.
    pub(crate) owned: Vec<HostPattern>,
    /// More specific patterns, inside `owned`, that other served tenants own (see
    /// [`overlapping_grants`]), sorted by text: the router answers 421 for them.
    pub(crate) foreign: Vec<HostPattern>,
    /// Whether it is served (its namespace exists and no older Tenant claims that namespace).
    pub(crate) active: bool,
}

impl TenantPlan {
    /// The owned patterns as text, comma separated, for messages.
    pub(crate) fn owned_list(&self) -> String {
        if self.owned.is_empty() {
            return "none".to_owned();
        }
        self.owned
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The global part of a translation.
pub(crate) struct Global {
    /// Every tenant, by name.
    pub(crate) plans: BTreeMap<String, TenantPlan>,
    /// Tenant, GatewayClass and orphan Gateway statuses.
    pub(crate) statuses: Vec<ObjectStatus>,
}

/// Resolves tenants, hostname ownership and the cluster-wide statuses.
pub(crate) fn resolve(world: &World<'_>) -> Global {
    let mut tenants: Vec<&Tenant> = world.objects.tenants.iter().collect();
    tenants.sort_by(|a, b| {
        age_key(&a.metadata)
            .cmp(&age_key(&b.metadata))
            .then_with(|| name_of(&a.metadata).cmp(name_of(&b.metadata)))
    });

    let mut namespace_owner: BTreeMap<&str, &str> = BTreeMap::new();
    let mut hostname_owner: BTreeMap<HostPattern, &str> = BTreeMap::new();
    let mut plans = BTreeMap::new();
    let mut statuses = Vec::new();
    let mut tenant_statuses: Vec<(&str, TenantStatus)> = Vec::new();

    for t in tenants {
        let name = name_of(&t.metadata);
        let ns = t.spec.namespace.as_str();
        let generation = t.metadata.generation;
        let mut problems: Vec<(&str, String)> = Vec::new();

        let namespace_taken_by = namespace_owner.get(ns).copied();
        let namespace_exists = world.existing_namespaces.contains(ns);
        if let Some(owner) = namespace_taken_by {
            problems.push((
                REASON_NAMESPACE_CONFLICT,
                format!("namespace {ns:?} is already onboarded by the older Tenant {owner:?}; this Tenant is not served"),
            ));
        } else {
            namespace_owner.insert(ns, name);
            if !namespace_exists {
                problems.push((
                    REASON_NAMESPACE_NOT_FOUND,
                    format!(
                        "namespace {ns:?} does not exist; this Tenant is not served until it does"
                    ),
                ));
            }
        }

        let mut owned = BTreeSet::new();
        let mut invalid = Vec::new();
        let mut conflicts = Vec::new();
        if namespace_taken_by.is_none() {
            for (i, raw) in t.spec.hostnames.iter().enumerate() {
                match HostPattern::parse(raw) {
                    Err(e) => invalid.push(format!("spec.hostnames[{i}] {raw:?} ({e})")),
                    Ok(p) => match hostname_owner.get(&p) {
                        Some(owner) if *owner != name => conflicts.push(format!(
                            "spec.hostnames[{i}] {raw:?} (owned by the older Tenant {owner:?})"
                        )),
                        _ => {
                            hostname_owner.insert(p.clone(), name);
                            owned.insert(p);
                        }
                    },
                }
            }
        }
        if !invalid.is_empty() {
            problems.push((
                REASON_INVALID_HOSTNAME,
                format!("invalid hostnames, not served: {}", invalid.join(", ")),
            ));
        }
        if !conflicts.is_empty() {
            problems.push((
                REASON_HOSTNAME_CONFLICT,
                format!(
                    "hostnames claimed by older tenants, not served: {}",
                    conflicts.join(", ")
                ),
            ));
        }

        let active = namespace_taken_by.is_none() && namespace_exists;
        let mut owned: Vec<HostPattern> = owned.into_iter().collect();
        owned.sort_by_key(ToString::to_string);

        let accepted = match problems.first() {
            None => condition(
                ACCEPTED,
                true,
                REASON_ACCEPTED,
                format!("namespace {ns:?} is served"),
                generation,
            ),
            Some((reason, _)) => condition(
                ACCEPTED,
                false,
                reason,
                problems
                    .iter()
                    .map(|(_, m)| m.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
                generation,
            ),
        };
        let ready = if active {
            condition(
                READY,
                false,
                REASON_PENDING,
                "Waiting for the tenant's routers to acknowledge the current snapshot",
                generation,
            )
        } else {
            let reason = problems
                .first()
                .map(|(r, _)| *r)
                .unwrap_or(REASON_NOT_SERVED);
            condition(READY, false, reason, "The tenant is not served", generation)
        };
        let status = TenantStatus {
            conditions: vec![accepted, ready],
            observed_generation: generation,
            hostnames: owned.iter().map(ToString::to_string).collect(),
            acknowledged_version: None,
        };
        tenant_statuses.push((name, status));
        plans.insert(
            name.to_owned(),
            TenantPlan {
                name: name.to_owned(),
                namespace: ns.to_owned(),
                owned,
                foreign: Vec::new(),
                active,
            },
        );
    }

    let overlaps = overlapping_grants(&plans);
    for o in &overlaps {
        if let Some(plan) = plans.get_mut(&o.outer) {
            plan.foreign.extend(o.names.iter().cloned());
        }
    }
    for plan in plans.values_mut() {
        plan.foreign.sort_by_key(ToString::to_string);
        plan.foreign.dedup();
    }
    for (name, mut status) in tenant_statuses {
        let generation = status.observed_generation;
        status
            .conditions
            .extend(overlap_condition(name, &overlaps, generation));
        statuses.push(ObjectStatus {
            api_version: "bulkhead.dev/v1alpha1".into(),
            kind: "Tenant".into(),
            metadata: ObjectMeta {
                namespace: None,
                name: name.to_owned(),
            },
            status: serde_json::to_value(status).unwrap_or_default(),
            tenant: plans
                .get(name)
                .is_some_and(|p| p.active)
                .then(|| name.to_owned()),
        });
    }

    statuses.extend(gateway_class_statuses(world));
    statuses.extend(orphan_gateway_statuses(world, &plans));
    statuses.extend(listener_sets::unserved_statuses(world, |ns| {
        plans.values().any(|p| p.active && p.namespace == ns)
    }));
    Global { plans, statuses }
}

/// Two served tenants whose grants overlap: `names` are patterns `inner` owns that lie strictly
/// inside a pattern `outer` owns. The edge sends those names to `inner` (the most specific grant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Overlap {
    /// The tenant holding the wider grant (it answers 421 for `names`).
    pub(crate) outer: String,
    /// The tenant holding the more specific grants.
    pub(crate) inner: String,
    /// `inner`'s patterns inside `outer`'s, sorted by text.
    pub(crate) names: Vec<HostPattern>,
}

/// Every overlap between served tenants, ordered by outer then inner tenant name. A tenant that is
/// not served has no router and no edge route, so it neither takes names away nor loses any.
pub(crate) fn overlapping_grants(plans: &BTreeMap<String, TenantPlan>) -> Vec<Overlap> {
    let served: Vec<&TenantPlan> = plans.values().filter(|p| p.active).collect();
    let mut overlaps = Vec::new();
    for outer in &served {
        for inner in served.iter().filter(|p| p.name != outer.name) {
            let names: Vec<HostPattern> = inner
                .owned
                .iter()
                .filter(|i| outer.owned.iter().any(|o| *i != o && i.is_subset_of(o)))
                .cloned()
                .collect();
            if !names.is_empty() {
                overlaps.push(Overlap {
                    outer: outer.name.clone(),
                    inner: inner.name.clone(),
                    names,
                });
            }
        }
    }
    overlaps
}

/// `HostnamesOverlap=True` naming every other tenant and the names concerned, or `None` when
/// `tenant`'s grants overlap no other served tenant's.
fn overlap_condition(
    tenant: &str,
    overlaps: &[Overlap],
    generation: Option<i64>,
) -> Option<Condition> {
    let list = |names: &[HostPattern]| {
        names
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    for o in overlaps {
        if o.outer == tenant {
            parts.push(format!(
                "Tenant {:?} owns more specific names inside this Tenant's hostnames, served by it only (this Tenant's routers answer 421 for them): {}",
                o.inner,
                list(&o.names)
            ));
        }
        if o.inner == tenant {
            parts.push(format!(
                "this Tenant's names lie inside the wider grants of Tenant {:?}, whose routers answer 421 for them: {}",
                o.outer,
                list(&o.names)
            ));
        }
    }
    (!parts.is_empty()).then(|| {
        condition(
            HOSTNAMES_OVERLAP,
            true,
            REASON_OVERLAPPING_GRANT,
            parts.join("; "),
            generation,
        )
    })
}

/// `Accepted=True` and the features Bulkhead implements for every GatewayClass naming our
/// controller.
fn gateway_class_statuses(world: &World<'_>) -> Vec<ObjectStatus> {
    world
        .objects
        .gateway_classes
        .iter()
        .filter(|c| c.spec.controller_name == CONTROLLER_NAME)
        .map(|c| {
            let status = GatewayClassStatus {
                conditions: Some(vec![condition(
                    ACCEPTED,
                    true,
                    REASON_ACCEPTED,
                    "Bulkhead serves Gateways of this class",
                    c.metadata.generation,
                )]),
                supported_features: Some(supported_features()),
            };
            ObjectStatus {
                api_version: "gateway.networking.k8s.io/v1".into(),
                kind: "GatewayClass".into(),
                metadata: ObjectMeta {
                    namespace: None,
                    name: name_of(&c.metadata).to_owned(),
                },
                status: serde_json::to_value(status).unwrap_or_default(),
                tenant: None,
            }
        })
        .collect()
}

/// [`crate::features::SUPPORTED_FEATURES`] as `status.supportedFeatures` (sorted by name).
fn supported_features() -> Vec<GatewayClassStatusSupportedFeatures> {
    crate::features::supported_feature_names()
        .map(|name| GatewayClassStatusSupportedFeatures {
            name: name.to_owned(),
        })
        .collect()
}

/// Gateways of our class in a namespace no served tenant owns: not accepted.
fn orphan_gateway_statuses(
    world: &World<'_>,
    plans: &BTreeMap<String, TenantPlan>,
) -> Vec<ObjectStatus> {
    let served: BTreeSet<&str> = plans
        .values()
        .filter(|p| p.active)
        .map(|p| p.namespace.as_str())
        .collect();
    world
        .objects
        .gateways
        .iter()
        .filter(|g| world.is_ours(g) && !served.contains(ns_of(&g.metadata)))
        .map(|g| {
            let ns = ns_of(&g.metadata);
            let generation = g.metadata.generation;
            let message = format!(
                "namespace {ns:?} is not the namespace of a served Tenant; ask the cluster admin to onboard it"
            );
            let conditions: Vec<Condition> = if listener_sets::admits_any(g) {
                shared_gateway_conditions(world, g, &served, &message)
            } else {
                vec![
                    condition(ACCEPTED, false, REASON_NAMESPACE_NOT_ONBOARDED, message.clone(), generation),
                    condition(PROGRAMMED, false, REASON_NAMESPACE_NOT_ONBOARDED, message, generation),
                ]
            };
            let status = GatewayStatus {
                conditions: Some(conditions),
                ..Default::default()
            };
            let mut status = serde_json::to_value(status).unwrap_or_default();
            listener_sets::decorate_gateway_status(world, g, &|ns| served.contains(ns), &mut status);
            ObjectStatus {
                api_version: "gateway.networking.k8s.io/v1".into(),
                kind: "Gateway".into(),
                metadata: ObjectMeta {
                    namespace: Some(ns.to_owned()),
                    name: name_of(&g.metadata).to_owned(),
                },
                status,
                tenant: None,
            }
        })
        .collect()
}

/// A Gateway of ours outside every tenant namespace that admits ListenerSets: a shared Gateway,
/// accepted as their parent. Its own listeners are not served (no tenant owns its namespace); the
/// listeners of its ListenerSets are, by their tenants' routers.
fn shared_gateway_conditions(
    world: &World<'_>,
    g: &Gateway,
    served: &BTreeSet<&str>,
    not_onboarded: &str,
) -> Vec<Condition> {
    let generation = g.metadata.generation;
    let attached = listener_sets::attached_count(world, g, &|ns| served.contains(ns));
    let own = if g.spec.listeners.is_empty() {
        String::new()
    } else {
        format!("; its own listeners are not served: {not_onboarded}")
    };
    let accepted = condition(
        "Accepted",
        true,
        "Accepted",
        format!("Gateway is accepted as the parent of ListenerSets{own}"),
        generation,
    );
    let programmed = if attached > 0 {
        condition(
            "Programmed",
            true,
            "Programmed",
            "The listeners of its ListenerSets are served by their tenants' routers",
            generation,
        )
    } else {
        condition(
            "Programmed",
            false,
            "Invalid",
            format!("No ListenerSet is attached{own}"),
            generation,
        )
    };
    vec![accepted, programmed]
}

/// The edge snapshot (version 0, sealed): every owned pattern of every served tenant, and the
/// router endpoints of every served tenant (empty when none are known yet).
pub(crate) fn edge_snapshot(
    plans: &BTreeMap<String, TenantPlan>,
    router_endpoints: &BTreeMap<String, RouterEndpoints>,
) -> EdgeSnapshot {
    let mut snapshot = EdgeSnapshot::default();
    for plan in plans.values().filter(|p| p.active) {
        for p in &plan.owned {
            snapshot.routes.push(EdgeRoute {
                hostname: p.to_string(),
                tenant: plan.name.clone(),
            });
        }
        snapshot.tenants.insert(
            plan.name.clone(),
            router_endpoints
                .get(&plan.name)
                .cloned()
                .unwrap_or_default(),
        );
    }
    snapshot.routes.sort();
    snapshot.seal();
    snapshot
}
