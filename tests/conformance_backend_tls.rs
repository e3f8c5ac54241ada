//! BackendTLSPolicy (Gateway API v1.4 standard), written from the specification and the official
//! conformance tests (`BackendTLSPolicy`, `BackendTLSPolicySANValidation`,
//! `BackendTLSPolicyInvalidCACertificateRef`, `BackendTLSPolicyInvalidKind`,
//! `BackendTLSPolicyConflictResolution`), through `bulkhead standalone` with real rustls backends
//! on loopback that record what they saw of the router's connection (TLS or not, SNI, ALPN).
//!
//! One tenant, `acme`, one Gateway `gw` (HTTP on 80, HTTPS on 443 for `*.acme.test`), one route per
//! backend Service, `/NAME` → Service `NAME`:
//! * `secure`: TLS backend with a certificate of backend CA A for `secure.backend.test`; policy
//!   `secure` (CA A, hostname `secure.backend.test`), and a younger policy `secure-late`
//!   targeting the same Service (conflicted);
//! * `wrongca`: TLS backend whose certificate comes from backend CA B; policy trusting CA A;
//! * `spiffe`: TLS backend whose certificate holds the URI SAN `spiffe://acme.test/ns/acme/sa/web`
//!   and the DNS name `other.backend.test` only; policy with hostname `spiffe.backend.test`
//!   (SNI only) and that URI as `subjectAltNames`;
//! * `spiffewrong`: the same backend, a policy asking for another URI;
//! * `grpc`: a TLS backend behind a Service port with `appProtocol: kubernetes.io/h2c` (HTTP/2);
//! * `broken`: a TLS backend whose policy names a ConfigMap that does not exist;
//! * `wrongkind`: a TLS backend whose policy names a Secret as CA;
//! * `plain`: a plaintext backend without policy;
//! * `mtls`: a TLS backend that requires a client certificate of the gateway client CA, reached
//!   through Gateway `gw-mtls` (`mtls.acme.test`), which sets `spec.tls.backend.clientCertificateRef`,
//!   and through `gw`, which presents none.

mod common;

use common::{pki, Standalone};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const SPIFFE: &str = "spiffe://acme.test/ns/acme/sa/web";

/// A test CA that can also issue URI SANs.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate chain and key, PEM.
struct Leaf {
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let pem = params.self_signed(&key).expect("self-signed").pem();
        Self {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    fn issue(&self, dns: &[&str], uris: &[&str]) -> Leaf {
        let names: Vec<String> = dns.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        for u in uris {
            let uri = (*u).try_into().expect("IA5 URI");
            params.subject_alt_names.push(SanType::URI(uri));
        }
        if let Some(first) = dns.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A rustls server configuration presenting `leaf`, offering h2 and http/1.1, requiring a client
/// certificate of `client_ca` when given.
fn backend_config(leaf: &Leaf, client_ca: Option<&str>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("chain");
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(c.expect("CA")).expect("add CA");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).expect("cert");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A TLS backend answering every request with what it saw of the connection:
/// `backend`, `tls: yes`, `sni`, `alpn`, `client-cert` (`yes`/`no`) and `version` (HTTP).
async fn tls_backend(name: &'static str, config: Arc<ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let conn = tls.get_ref().1;
                let seen = format!(
                    "backend: {name}\ntls: yes\nsni: {}\nalpn: {}\nclient-cert: {}\n",
                    conn.server_name().unwrap_or("-"),
                    conn.alpn_protocol()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .unwrap_or_else(|| "-".into()),
                    if conn.peer_certificates().is_some() {
                        "yes"
                    } else {
                        "no"
                    },
                );
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let body = format!("{seen}version: {:?}\n", req.version());
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

fn service(name: &str, addr: SocketAddr, app_protocol: Option<&str>) -> String {
    let app = app_protocol
        .map(|p| format!("    appProtocol: {p}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  namespace: acme\n  name: {name}\nspec:\n  ports:\n  - name: https\n    port: 443\n    targetPort: 8443\n{app}---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  namespace: acme\n  name: {name}-1\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\nports:\n- name: https\n  port: {}\nendpoints:\n- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n",
        addr.port(),
        addr.ip()
    )
}

fn route(name: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  namespace: acme\n  name: {name}\nspec:\n  parentRefs:\n  - name: gw\n  hostnames: [\"www.acme.test\"]\n  rules:\n  - matches:\n    - path: {{type: PathPrefix, value: /{name}}}\n    backendRefs:\n    - name: {name}\n      port: 443\n"
    )
}

/// Gateway `gw-mtls` (HTTP, `mtls.acme.test`) presenting Secret `gateway-client` to TLS backends,
/// and its route `/mtls` → Service `mtls`.
fn mtls_gateway() -> String {
    "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  namespace: acme\n  name: gw-mtls\nspec:\n  gatewayClassName: bulkhead\n  listeners:\n  - name: http\n    protocol: HTTP\n    port: 80\n    hostname: mtls.acme.test\n  tls:\n    backend:\n      clientCertificateRef:\n        name: gateway-client\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  namespace: acme\n  name: mtls-through-gw-mtls\nspec:\n  parentRefs:\n  - name: gw-mtls\n  rules:\n  - backendRefs:\n    - name: mtls\n      port: 443\n".to_owned()
}

fn config_map(name: &str, pem: &str) -> String {
    let body: String = pem.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  namespace: acme\n  name: {name}\ndata:\n  ca.crt: |\n{body}"
    )
}

/// A policy on Service `service` with the given `validation` body (indented by 4).
fn policy(name: &str, created: &str, service: &str, validation: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata:\n  namespace: acme\n  name: {name}\n  creationTimestamp: \"{created}\"\nspec:\n  targetRefs:\n  - group: \"\"\n    kind: Service\n    name: {service}\n  validation:\n{validation}"
    )
}

fn ca_validation(config_map: &str, kind: &str, hostname: &str) -> String {
    format!(
        "    hostname: {hostname}\n    caCertificateRefs:\n    - group: \"\"\n      kind: {kind}\n      name: {config_map}\n"
    )
}

/// The world described in the module documentation, running.
struct World {
    bulkhead: Standalone,
    ca: String,
}

async fn world() -> World {
    let server_ca = pki::DemoCa::new("front CA").expect("CA");
    let front = server_ca.issue(&["*.acme.test"]).expect("leaf");
    let ca_a = Ca::new("backend CA A");
    let ca_b = Ca::new("backend CA B");
    let secure = ca_a.issue(&["secure.backend.test"], &[]);
    let spiffe = ca_a.issue(&["other.backend.test"], &[SPIFFE]);
    let grpc = ca_a.issue(&["grpc.backend.test"], &[]);
    let foreign = ca_b.issue(&["wrongca.backend.test"], &[]);

    let secure_addr = tls_backend("secure", backend_config(&secure, None)).await;
    let wrongca_addr = tls_backend("wrongca", backend_config(&foreign, None)).await;
    let spiffe_addr = tls_backend("spiffe", backend_config(&spiffe, None)).await;
    let grpc_addr = tls_backend("grpc", backend_config(&grpc, None)).await;
    let client_ca = Ca::new("gateway client CA");
    let gateway_client = client_ca.issue(&["gw-mtls.acme.test"], &[]);
    let mtls = ca_a.issue(&["mtls.backend.test"], &[]);
    let mtls_addr = tls_backend("mtls", backend_config(&mtls, Some(&client_ca.pem))).await;
    let plain_addr = common::backend("plain").await;

    let a = ca_validation("ca-a", "ConfigMap", "secure.backend.test");
    let files = vec![
        (
            "tenant.yaml",
            common::tenant_yaml("acme", &["*.acme.test"]),
        ),
        (
            "gateway.yaml",
            common::gateway_yaml("acme", "*.acme.test", Some("front")),
        ),
        ("front.yaml", pki::tls_secret_yaml("acme", "front", &front)),
        ("ca-a.yaml", config_map("ca-a", &ca_a.pem)),
        (
            "services.yaml",
            [
                service("secure", secure_addr, None),
                service("wrongca", wrongca_addr, None),
                service("spiffe", spiffe_addr, None),
                service("spiffewrong", spiffe_addr, None),
                service("grpc", grpc_addr, Some("kubernetes.io/h2c")),
                service("broken", secure_addr, None),
                service("wrongkind", secure_addr, None),
                service("mtls", mtls_addr, None),
                common::service_yaml("acme", "plain", plain_addr),
            ]
            .join("---\n"),
        ),
        (
            "routes.yaml",
            [
                "secure",
                "wrongca",
                "spiffe",
                "spiffewrong",
                "grpc",
                "broken",
                "wrongkind",
                "mtls",
            ]
            .map(route)
            .join("---\n"),
        ),
        ("gw-mtls.yaml", mtls_gateway()),
        (
            "gateway-client.yaml",
            pki::tls_secret_yaml(
                "acme",
                "gateway-client",
                &pki::LeafCert {
                    cert_pem: gateway_client.cert_pem.clone(),
                    key_pem: gateway_client.key_pem.clone(),
                },
            ),
        ),
        (
            "plain-route.yaml",
            common::route_yaml("acme", "plain", &["www.acme.test"], "/plain", "plain"),
        ),
        (
            "policies.yaml",
            [
                policy("secure", "2026-01-01T00:00:00Z", "secure", &a),
                policy(
                    "secure-late",
                    "2026-02-01T00:00:00Z",
                    "secure",
                    &ca_validation("ca-a", "ConfigMap", "late.backend.test"),
                ),
                policy(
                    "wrongca",
                    "2026-01-01T00:00:00Z",
                    "wrongca",
                    &ca_validation("ca-a", "ConfigMap", "wrongca.backend.test"),
                ),
                policy(
                    "spiffe",
                    "2026-01-01T00:00:00Z",
                    "spiffe",
                    &format!("{}    subjectAltNames:\n    - type: URI\n      uri: {SPIFFE}\n", ca_validation("ca-a", "ConfigMap", "spiffe.backend.test")),
                ),
                policy(
                    "spiffewrong",
                    "2026-01-01T00:00:00Z",
                    "spiffewrong",
                    &format!("{}    subjectAltNames:\n    - type: URI\n      uri: spiffe://acme.test/ns/acme/sa/other\n", ca_validation("ca-a", "ConfigMap", "spiffe.backend.test")),
                ),
                policy(
                    "grpc",
                    "2026-01-01T00:00:00Z",
                    "grpc",
                    &ca_validation("ca-a", "ConfigMap", "grpc.backend.test"),
                ),
                policy(
                    "mtls",
                    "2026-01-01T00:00:00Z",
                    "mtls",
                    &ca_validation("ca-a", "ConfigMap", "mtls.backend.test"),
                ),
                policy(
                    "broken",
                    "2026-01-01T00:00:00Z",
                    "broken",
                    &ca_validation("missing", "ConfigMap", "secure.backend.test"),
                ),
                policy(
                    "wrongkind",
                    "2026-01-01T00:00:00Z",
                    "wrongkind",
                    &ca_validation("front", "Secret", "secure.backend.test"),
                ),
            ]
            .join("---\n"),
        ),
    ];
    let bulkhead = Standalone::start(&files).await;
    let ready = common::eventually(common::SETTLE, || async {
        let (status, _, _) = common::http_get(bulkhead.http, "www.acme.test", "/plain")
            .await
            .ok()?;
        (status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "world never served: {}", bulkhead.log());
    World {
        bulkhead,
        ca: server_ca.cert_pem().to_owned(),
    }
}

async fn get(w: &World, path: &str) -> (u16, String) {
    let (status, _, body) = common::http_get(w.bulkhead.http, "www.acme.test", path)
        .await
        .expect("request");
    (status, body)
}

fn field(body: &str, key: &str) -> String {
    common::answer_field(body, key).unwrap_or_default()
}

/// The condition `type_` of the first ancestor entry of policy `name`.
async fn policy_condition(w: &World, name: &str, type_: &str) -> serde_json::Value {
    let status = w
        .bulkhead
        .object_status("BackendTLSPolicy", "acme", name)
        .await
        .unwrap_or_else(|| panic!("no status for policy {name}"));
    let ancestor = &status["ancestors"][0];
    assert_eq!(ancestor["ancestorRef"]["name"], "gw", "{status}");
    assert_eq!(ancestor["ancestorRef"]["kind"], "Gateway", "{status}");
    assert_eq!(
        ancestor["controllerName"], "bulkhead.dev/gateway-controller",
        "{status}"
    );
    ancestor["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .cloned()
        .unwrap_or_else(|| panic!("no {type_} condition: {status}"))
}

#[tokio::test]
async fn backend_tls_policy_follows_the_specification() {
    let w = world().await;

    // TLS with the policy's hostname as SNI, ALPN http/1.1, verified against the ConfigMap's CA.
    let (status, body) = get(&w, "/secure").await;
    assert_eq!(status, 200, "{body}\n{}", w.bulkhead.log());
    assert_eq!(field(&body, "tls"), "yes");
    assert_eq!(field(&body, "sni"), "secure.backend.test");
    assert_eq!(field(&body, "alpn"), "http/1.1");
    assert_eq!(field(&body, "client-cert"), "no");

    // The same over an HTTP/2 client on the HTTPS listener.
    let (status, body, _) =
        common::https_get_h2(w.bulkhead.https, "www.acme.test", "/secure", &w.ca)
            .await
            .expect("h2 request");
    assert_eq!(status, 200, "{body}");
    assert_eq!(field(&body, "sni"), "secure.backend.test");

    // An HTTP/2 backend (appProtocol kubernetes.io/h2c) gets ALPN h2 and HTTP/2.
    let (status, body) = get(&w, "/grpc").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(field(&body, "sni"), "grpc.backend.test");
    assert_eq!(field(&body, "alpn"), "h2");
    assert_eq!(field(&body, "version"), "HTTP/2.0");

    // No policy: plaintext, as before.
    let (status, body) = get(&w, "/plain").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(field(&body, "backend"), "plain");

    // A certificate from another CA is refused: a 502, counted, logged.
    let (status, body) = get(&w, "/wrongca").await;
    assert_eq!(status, 502, "{body}");
    let metrics = w.bulkhead.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("bulkhead_router_upstream_errors_total")
                && l.contains("backend=\"acme/wrongca:443\"")
                && l.contains("kind=\"tls\"")),
        "{metrics}"
    );
    assert!(w.bulkhead.log().contains("backend TLS handshake failed"));

    // Status: accepted policies have the Gateway as ancestor.
    let accepted = policy_condition(&w, "secure", "Accepted").await;
    assert_eq!(accepted["status"], "True", "{accepted}");
    let resolved = policy_condition(&w, "secure", "ResolvedRefs").await;
    assert_eq!(resolved["status"], "True", "{resolved}");
}

#[tokio::test]
async fn subject_alt_names_replace_the_hostname_for_authentication() {
    let w = world().await;
    // The certificate holds the URI SAN and not the hostname: accepted, the SNI is still sent.
    let (status, body) = get(&w, "/spiffe").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(field(&body, "sni"), "spiffe.backend.test");
    // A URI the certificate does not hold: refused.
    let (status, body) = get(&w, "/spiffewrong").await;
    assert_eq!(status, 502, "{body}");
    let accepted = policy_condition(&w, "spiffe", "Accepted").await;
    assert_eq!(accepted["status"], "True", "{accepted}");
}

#[tokio::test]
async fn invalid_and_conflicting_policies_fail_closed_with_the_reasons_of_the_specification() {
    let w = world().await;

    // A missing CA ConfigMap: Accepted=False/NoValidCACertificate,
    // ResolvedRefs=False/InvalidCACertificateRef, requests answered 5xx, never plaintext.
    let accepted = policy_condition(&w, "broken", "Accepted").await;
    assert_eq!(accepted["status"], "False", "{accepted}");
    assert_eq!(accepted["reason"], "NoValidCACertificate", "{accepted}");
    let resolved = policy_condition(&w, "broken", "ResolvedRefs").await;
    assert_eq!(resolved["status"], "False", "{resolved}");
    assert_eq!(resolved["reason"], "InvalidCACertificateRef", "{resolved}");
    let (status, body) = get(&w, "/broken").await;
    assert_eq!(status, 500, "{body}");

    // A CA reference of an unsupported kind: ResolvedRefs=False/InvalidKind.
    let resolved = policy_condition(&w, "wrongkind", "ResolvedRefs").await;
    assert_eq!(resolved["reason"], "InvalidKind", "{resolved}");
    let accepted = policy_condition(&w, "wrongkind", "Accepted").await;
    assert_eq!(accepted["reason"], "NoValidCACertificate", "{accepted}");
    let (status, _) = get(&w, "/wrongkind").await;
    assert_eq!(status, 500);

    // The route itself stays accepted.
    let route = w
        .bulkhead
        .object_status("HTTPRoute", "acme", "broken")
        .await
        .expect("route status");
    let accepted = common::parent_condition(&route, "Accepted");
    assert_eq!(accepted["status"], "True", "{route}");

    // Two policies on one Service: the older wins, the younger is Conflicted.
    let conflicted = policy_condition(&w, "secure-late", "Accepted").await;
    assert_eq!(conflicted["status"], "False", "{conflicted}");
    assert_eq!(conflicted["reason"], "Conflicted", "{conflicted}");
    let (status, body) = get(&w, "/secure").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(field(&body, "sni"), "secure.backend.test");
}

#[tokio::test]
async fn a_gateway_presents_its_backend_client_certificate_and_only_its_own() {
    let w = world().await;
    // Through gw-mtls: the Gateway's client certificate is presented and accepted.
    let (status, _, body) = common::http_get(w.bulkhead.http, "mtls.acme.test", "/")
        .await
        .expect("request");
    assert_eq!(status, 200, "{body}\n{}", w.bulkhead.log());
    assert_eq!(field(&body, "client-cert"), "yes");
    assert_eq!(field(&body, "sni"), "mtls.backend.test");
    // The same Service through gw, which sets no client certificate: refused by the backend.
    let (status, body) = get(&w, "/mtls").await;
    assert_eq!(status, 502, "{body}");
}
