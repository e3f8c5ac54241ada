//! The incremental compiler: runs the translator over a changing [`ObjectSet`], re-translating only
//! the tenants whose inputs changed, and versions the snapshots.
//!
//! Every call recomputes the cheap global part (tenants, hostname ownership, the edge snapshot,
//! Tenant and GatewayClass statuses), then, per served tenant, compares the fingerprint of its inputs
//! (see [`crate::translator`]'s `fingerprint` module: its namespace's objects, routes naming its
//! Gateways, referenced objects elsewhere and the ReferenceGrants that permit them, its owned
//! hostnames) with the previous call's and re-translates only on a difference. A snapshot's version
//! goes up only when its content hash changes; versions of a tenant keep increasing even if the
//! tenant disappears and comes back.

use crate::objects::ObjectSet;
use crate::status::ObjectStatus;
use crate::translator::fingerprint::fingerprint;
use crate::translator::tenant::{self, TenantOutput};
use crate::translator::world::World;
use crate::translator::{assemble_statuses, global};
use bulkhead_crds::snapshot::{EdgeSnapshot, RouterEndpoints, Sealed, TenantSnapshot};
use std::collections::BTreeMap;

/// What one compilation changed.
#[derive(Debug, Clone, Default)]
pub struct CompileOutput {
    /// The new edge snapshot, when its content changed (its version was bumped).
    pub edge: Option<EdgeSnapshot>,
    /// The tenant snapshots whose content changed, each with its version bumped.
    pub changed: Vec<TenantSnapshot>,
    /// Tenants that are no longer served.
    pub removed: Vec<String>,
    /// The status of every object we own a status for (as [`crate::translator::Translation`]).
    pub statuses: Vec<ObjectStatus>,
    /// Tenants that were actually re-translated (their inputs changed), sorted.
    pub recomputed: Vec<String>,
}

struct TenantState {
    fingerprint: String,
    output: TenantOutput,
    /// The snapshot as last published (current version, sealed).
    published: TenantSnapshot,
}

/// Incremental, versioning front of the translator.
#[derive(Default)]
pub struct Compiler {
    tenants: BTreeMap<String, TenantState>,
    versions: BTreeMap<String, u64>,
    edge: Option<EdgeSnapshot>,
    edge_content_hash: Option<String>,
    edge_version: u64,
}

impl std::fmt::Debug for Compiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiler")
            .field("tenants", &self.tenants.keys().collect::<Vec<_>>())
            .field("versions", &self.versions)
            .field("edge_version", &self.edge_version)
            .finish()
    }
}

impl Compiler {
    /// A compiler that has published nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Compiles the current objects; see [`CompileOutput`].
    pub fn compile(
        &mut self,
        objects: &ObjectSet,
        router_endpoints: &BTreeMap<String, RouterEndpoints>,
    ) -> CompileOutput {
        let world = World::new(objects);
        let global = global::resolve(&world);
        let mut out = CompileOutput::default();

        let mut previous = std::mem::take(&mut self.tenants);
        for plan in global.plans.values().filter(|p| p.active) {
            let fp = fingerprint(&world, plan);
            let state = match previous.remove(&plan.name) {
                Some(state) if state.fingerprint == fp => state,
                old => {
                    out.recomputed.push(plan.name.clone());
                    let output = tenant::translate(&world, plan);
                    let unchanged = old
                        .as_ref()
                        .is_some_and(|o| o.output.snapshot.hash == output.snapshot.hash);
                    let published = match old {
                        Some(o) if unchanged => o.published,
                        _ => {
                            let version = self.versions.entry(plan.name.clone()).or_insert(0);
                            *version += 1;
                            let mut s = output.snapshot.clone();
                            s.version = *version;
                            s.seal();
                            out.changed.push(s.clone());
                            s
                        }
                    };
                    TenantState {
                        fingerprint: fp,
                        output,
                        published,
                    }
                }
            };
            self.tenants.insert(plan.name.clone(), state);
        }
        out.removed = previous.into_keys().collect();

        let mut edge = global::edge_snapshot(&global.plans, router_endpoints);
        if self.edge_content_hash.as_deref() != Some(edge.hash.as_str()) {
            self.edge_content_hash = Some(edge.hash.clone());
            self.edge_version += 1;
            edge.version = self.edge_version;
            edge.seal();
            self.edge = Some(edge.clone());
            out.edge = Some(edge);
        }

        out.statuses = assemble_statuses(&global.statuses, self.tenants.values().map(|s| &s.output));
        out
    }

    /// The edge snapshot last published, if any.
    pub fn edge(&self) -> Option<&EdgeSnapshot> {
        self.edge.as_ref()
    }

    /// The snapshot last published for a tenant that is still served.
    pub fn tenant(&self, name: &str) -> Option<&TenantSnapshot> {
        self.tenants.get(name).map(|s| &s.published)
    }

    /// Every served tenant's last published snapshot, by tenant name.
    pub fn tenants(&self) -> impl Iterator<Item = &TenantSnapshot> {
        self.tenants.values().map(|s| &s.published)
    }
}
