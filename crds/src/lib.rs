//! The Bulkhead API.
//!
//! * [`tenant`]: the cluster-scoped `Tenant` CRD (group `bulkhead.dev`, version `v1alpha1`) by which a
//!   cluster admin onboards a namespace and grants it hostnames.
//! * [`snapshot`]: the versioned configuration the operator compiles and the data plane serves: one
//!   [`snapshot::EdgeSnapshot`] for the edge tier and one [`snapshot::TenantSnapshot`] per tenant
//!   (a re-export of `bulkhead_snapshot::schema`, which has no Kubernetes dependency).
//! * [`crd_yaml`]: the CRD manifests, committed under `crds/` and checked against the types by a test.
//! * [`api_limits`]: the limits the API server enforces on names, labels, conditions and Events.
#![forbid(unsafe_code)]

pub mod api_limits;
pub mod snapshot;
pub mod tenant;

pub use tenant::{Tenant, TenantSpec, TenantStatus};

/// GatewayClass name served by Bulkhead.
pub const GATEWAY_CLASS_NAME: &str = "bulkhead";
/// `spec.controllerName` of the Bulkhead GatewayClass.
pub const CONTROLLER_NAME: &str = "bulkhead.dev/gateway-controller";

/// The YAML of every CRD Bulkhead defines, as `bulkhead crds` prints it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&Tenant::crd())
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_crd_yaml_matches_the_types() {
        let generated = super::crd_yaml().expect("CRD serialises");
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tenant.yaml");
        if std::env::var_os("BULKHEAD_UPDATE_CRDS").is_some() {
            std::fs::write(path, &generated).expect("write crds/tenant.yaml");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert_eq!(
            committed, generated,
            "crds/tenant.yaml drifted from the Tenant type: rerun with BULKHEAD_UPDATE_CRDS=1 and review the diff"
        );
    }
}
