//! Manifest builders for `bulkhead standalone` tests: the YAML a tenant or the cluster admin would
//! write (Tenant, Gateway, HTTPRoute, TLSRoute, Service with EndpointSlice), and (feature `tls`) the
//! two-tenant world the isolation tests start from.

use std::net::SocketAddr;

/// A Namespace and a Tenant owning `hostnames`.
pub fn tenant_yaml(name: &str, hostnames: &[&str]) -> String {
    let hosts: Vec<String> = hostnames.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n---\napiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata:\n  name: {name}\nspec:\n  namespace: {name}\n  hostnames: [{}]\n",
        hosts.join(", ")
    )
}

/// A Gateway with an HTTP listener on 80 and, when `secret` is given, an HTTPS listener on 443.
pub fn gateway_yaml(ns: &str, hostname: &str, secret: Option<&str>) -> String {
    let mut s = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  namespace: {ns}\n  name: gw\nspec:\n  gatewayClassName: bulkhead\n  listeners:\n  - name: http\n    protocol: HTTP\n    port: 80\n    hostname: \"{hostname}\"\n"
    );
    if let Some(secret) = secret {
        s.push_str(&format!(
            "  - name: https\n    protocol: HTTPS\n    port: 443\n    hostname: \"{hostname}\"\n    tls:\n      mode: Terminate\n      certificateRefs:\n      - name: {secret}\n"
        ));
    }
    s
}

/// An HTTPRoute sending `path` (PathPrefix) on `hostnames` to Service `svc` port 80.
pub fn route_yaml(ns: &str, name: &str, hostnames: &[&str], path: &str, svc: &str) -> String {
    let hosts: Vec<String> = hostnames.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  namespace: {ns}\n  name: {name}\nspec:\n  parentRefs:\n  - name: gw\n  hostnames: [{}]\n  rules:\n  - matches:\n    - path: {{type: PathPrefix, value: \"{path}\"}}\n    backendRefs:\n    - name: {svc}\n      port: 80\n",
        hosts.join(", ")
    )
}

/// A Service (port 80, name http) and an EndpointSlice pointing at `addr`.
pub fn service_yaml(ns: &str, svc: &str, addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  namespace: {ns}\n  name: {svc}\nspec:\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  namespace: {ns}\n  name: {svc}-1\n  labels:\n    kubernetes.io/service-name: {svc}\naddressType: IPv4\nports:\n- name: http\n  port: {}\nendpoints:\n- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n",
        addr.port(),
        addr.ip()
    )
}

/// A Gateway with a TLS passthrough listener for `hostname` on 443, a TLSRoute to Service `svc`
/// port 443, and the Service with an EndpointSlice pointing at `backend`.
pub fn tls_passthrough_yaml(ns: &str, hostname: &str, svc: &str, backend: SocketAddr) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  namespace: {ns}\n  name: gw\nspec:\n  gatewayClassName: bulkhead\n  listeners:\n  - name: tls\n    protocol: TLS\n    port: 443\n    hostname: \"{hostname}\"\n    tls:\n      mode: Passthrough\n---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\nmetadata:\n  namespace: {ns}\n  name: {svc}\nspec:\n  parentRefs:\n  - name: gw\n  hostnames: [\"{hostname}\"]\n  rules:\n  - backendRefs:\n    - name: {svc}\n      port: 443\n---\napiVersion: v1\nkind: Service\nmetadata:\n  namespace: {ns}\n  name: {svc}\nspec:\n  ports:\n  - name: tls\n    port: 443\n    targetPort: 8443\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  namespace: {ns}\n  name: {svc}-1\n  labels:\n    kubernetes.io/service-name: {svc}\naddressType: IPv4\nports:\n- name: tls\n  port: {}\nendpoints:\n- addresses: [\"{}\"]\n",
        backend.port(),
        backend.ip()
    )
}

/// The two-tenant world: `acme` owning `*.acme.test` and `globex` owning `*.globex.test`, each with
/// a CA of its own, an HTTP and an HTTPS listener (Secret `<tenant>-tls`) and a route sending
/// `www.<tenant>.test/` to Service `web` at the given backend.
#[cfg(feature = "tls")]
pub struct TwoTenants {
    /// The manifest files: (path in the manifest directory, content).
    pub files: Vec<(String, String)>,
    /// The CA that issued acme's certificate.
    pub acme_ca: crate::pki::DemoCa,
    /// The CA that issued globex's certificate.
    pub globex_ca: crate::pki::DemoCa,
}

#[cfg(feature = "tls")]
impl TwoTenants {
    /// The world with acme's `web` at `acme_web` and globex's at `globex_web`.
    pub fn new(acme_web: SocketAddr, globex_web: SocketAddr) -> Result<Self, rcgen::Error> {
        let acme_ca = crate::pki::DemoCa::new("acme CA")?;
        let globex_ca = crate::pki::DemoCa::new("globex CA")?;
        let mut files = tenant_files("acme", &acme_ca, acme_web)?;
        files.extend(tenant_files("globex", &globex_ca, globex_web)?);
        Ok(Self {
            files,
            acme_ca,
            globex_ca,
        })
    }

    /// The files as `Standalone::start` takes them.
    pub fn file_refs(&self) -> Vec<(&str, String)> {
        self.files
            .iter()
            .map(|(name, content)| (name.as_str(), content.clone()))
            .collect()
    }
}

/// One tenant of [`TwoTenants`]: `tenants/<t>.yaml`, `<t>/gw.yaml` (Gateway and TLS Secret) and
/// `<t>/web.yaml` (route, Service, EndpointSlice).
#[cfg(feature = "tls")]
fn tenant_files(
    tenant: &str,
    ca: &crate::pki::DemoCa,
    web: SocketAddr,
) -> Result<Vec<(String, String)>, rcgen::Error> {
    let wildcard = format!("*.{tenant}.test");
    let secret = format!("{tenant}-tls");
    let leaf = ca.issue(&[&wildcard])?;
    Ok(vec![
        (
            format!("tenants/{tenant}.yaml"),
            tenant_yaml(tenant, &[&wildcard]),
        ),
        (
            format!("{tenant}/gw.yaml"),
            gateway_yaml(tenant, &wildcard, Some(&secret))
                + "---\n"
                + &crate::pki::tls_secret_yaml(tenant, &secret, &leaf),
        ),
        (
            format!("{tenant}/web.yaml"),
            route_yaml(tenant, "web", &[&format!("www.{tenant}.test")], "/", "web")
                + "---\n"
                + &service_yaml(tenant, "web", web),
        ),
    ])
}
