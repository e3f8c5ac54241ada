//! Each tenant's router addresses for the edge snapshot, found in the objects the operator holds:
//! the ready endpoints of the EndpointSlices of the `bulkhead-router` Service in the tenant's
//! namespace. A pure function of an [`ObjectSet`], shared by every provider (it needs no
//! Kubernetes client), so the compiler does not depend on the Kubernetes provider for it.

use crate::children::ROUTER_NAME;
use crate::objects::ObjectSet;
use bulkhead_snapshot::RouterEndpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// The label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Port name of the routers' TLS port in their Service (and so in its EndpointSlices).
pub const HTTPS_PORT_NAME: &str = "https";
/// Port name of the routers' plain HTTP port.
pub const HTTP_PORT_NAME: &str = "http";

/// Each tenant's router addresses: the ready endpoints of the EndpointSlices of the
/// `bulkhead-router` Service in the tenant's namespace, on the ports named `https` and `http`.
/// Every Tenant gets an entry (possibly empty); sorted and without duplicates.
pub fn router_endpoints(objects: &ObjectSet) -> BTreeMap<String, RouterEndpoints> {
    let mut by_namespace: BTreeMap<&str, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in &objects.endpoint_slices {
        let is_router = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .is_some_and(|s| s == ROUTER_NAME);
        if let (true, Some(ns)) = (is_router, slice.metadata.namespace.as_deref()) {
            by_namespace.entry(ns).or_default().push(slice);
        }
    }
    let mut out = BTreeMap::new();
    for tenant in &objects.tenants {
        let Some(name) = tenant.metadata.name.clone() else {
            continue;
        };
        let mut endpoints = RouterEndpoints::default();
        for slice in by_namespace
            .get(tenant.spec.namespace.as_str())
            .into_iter()
            .flatten()
        {
            endpoints
                .https
                .extend(slice_addresses(slice, HTTPS_PORT_NAME));
            endpoints
                .http
                .extend(slice_addresses(slice, HTTP_PORT_NAME));
        }
        for list in [&mut endpoints.https, &mut endpoints.http] {
            list.sort();
            list.dedup();
        }
        out.insert(name, endpoints);
    }
    out
}

/// Ready addresses of one slice on the port named `port_name`. An endpoint whose `ready` condition
/// is unknown counts as ready, as Kubernetes says consumers should.
fn slice_addresses(slice: &EndpointSlice, port_name: &str) -> Vec<SocketAddr> {
    let Some(port) = slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(port_name))
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
    else {
        return Vec::new();
    };
    slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{parse_documents, Object};
    use std::path::Path;

    fn objects(yaml: &str) -> Vec<Object> {
        let (objects, errors) = parse_documents(Path::new("t.yaml"), yaml);
        assert!(errors.is_empty(), "{errors:?}");
        objects
    }

    #[test]
    fn router_endpoints_come_from_the_router_service_slices() {
        let set = ObjectSet::from_objects(objects(
            r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {name: acme}
spec: {namespace: team-a, hostnames: ["a.test"]}
---
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {name: globex}
spec: {namespace: team-g, hostnames: ["g.test"]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bulkhead-router-1, namespace: team-a, labels: {kubernetes.io/service-name: bulkhead-router}}
addressType: IPv4
ports: [{name: https, port: 8443}, {name: http, port: 8080}, {name: admin, port: 9901}]
endpoints:
- addresses: ["10.0.0.2"]
  conditions: {ready: true}
- addresses: ["10.0.0.1"]
- addresses: ["10.0.0.9"]
  conditions: {ready: false}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bulkhead-router-2, namespace: team-a, labels: {kubernetes.io/service-name: bulkhead-router}}
addressType: IPv4
ports: [{name: https, port: 8443}]
endpoints: [{addresses: ["10.0.0.1"]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: app-1, namespace: team-a, labels: {kubernetes.io/service-name: app}}
addressType: IPv4
ports: [{name: https, port: 443}]
endpoints: [{addresses: ["10.0.0.50"]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bulkhead-router-1, namespace: elsewhere, labels: {kubernetes.io/service-name: bulkhead-router}}
addressType: IPv4
ports: [{name: https, port: 8443}]
endpoints: [{addresses: ["10.9.9.9"]}]
"#,
        ));
        let eps = router_endpoints(&set);
        let acme = &eps["acme"];
        assert_eq!(
            acme.https,
            vec![
                "10.0.0.1:8443".parse().unwrap(),
                "10.0.0.2:8443".parse().unwrap()
            ]
        );
        assert_eq!(
            acme.http,
            vec![
                "10.0.0.1:8080".parse().unwrap(),
                "10.0.0.2:8080".parse().unwrap()
            ]
        );
        assert_eq!(eps["globex"], RouterEndpoints::default());
        assert_eq!(eps.len(), 2);
    }
}
