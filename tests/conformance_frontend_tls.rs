//! Frontend client certificate validation (Gateway `spec.tls.frontend`, Gateway API v1.5
//! standard), written from the specification and the official conformance tests
//! (`GatewayFrontendClientCertificateValidation`, `...InsecureFallback`,
//! `GatewayFrontendInvalidDefaultClientCertificateValidation`), through `bulkhead standalone`
//! with real rustls clients over HTTP/1.1 and HTTP/2.
//!
//! One tenant, `acme`, with four Gateways:
//! * `gw`: default validation against client CA A (`AllowValidOnly`) for its 443 listener
//!   (`strict.acme.test`), a per-port override for 8443 (`b.acme.test`) against client CA B, and
//!   an HTTP listener;
//! * `open`: `AllowInsecureFallback` against CA A (`open.acme.test`);
//! * `broken`: a CA ConfigMap that does not exist (`broken.acme.test`), plus an HTTP listener;
//! * `badpem`: a CA ConfigMap whose `ca.crt` is not a certificate, and `wrongkind`: a reference to
//!   a Secret.
//!
//! A second tenant, `globex`, serves HTTPS without client validation.

mod common;

use bulkhead_test_support::tls;
use bytes::Bytes;
use common::{pki, Answer, Standalone};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The header carrying the verified identity.
const XFCC: &str = "x-forwarded-client-cert";

/// The PKI of the world: server certificates and two client CAs with their clients.
struct Pki {
    server_ca: pki::DemoCa,
    acme_server: pki::LeafCert,
    globex_server: pki::LeafCert,
    client_ca_a: pki::DemoCa,
    client_ca_b: pki::DemoCa,
    /// Issued by CA A.
    user: pki::LeafCert,
    /// Issued by CA A, the identity the `by-identity` route matches.
    admin: pki::LeafCert,
    /// Issued by CA B.
    b_user: pki::LeafCert,
}

impl Pki {
    fn new() -> Self {
        let server_ca = pki::DemoCa::new("server CA").unwrap();
        let client_ca_a = pki::DemoCa::new("client CA A").unwrap();
        let client_ca_b = pki::DemoCa::new("client CA B").unwrap();
        Self {
            acme_server: server_ca.issue(&["*.acme.test"]).unwrap(),
            globex_server: server_ca.issue(&["www.globex.test"]).unwrap(),
            user: client_ca_a.issue(&["user.clients.acme.test"]).unwrap(),
            admin: client_ca_a.issue(&["admin.clients.acme.test"]).unwrap(),
            b_user: client_ca_b.issue(&["b.clients.acme.test"]).unwrap(),
            server_ca,
            client_ca_a,
            client_ca_b,
        }
    }
}

fn ca_config_map(name: &str, pem: &str) -> String {
    let body: String = pem.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  namespace: acme\n  name: {name}\ndata:\n  ca.crt: |\n{body}"
    )
}

fn https_listener(name: &str, port: u16, hostname: &str) -> String {
    format!(
        "  - name: {name}\n    protocol: HTTPS\n    port: {port}\n    hostname: {hostname}\n    tls:\n      certificateRefs:\n      - name: acme-tls\n"
    )
}

fn http_listener(hostname: &str) -> String {
    format!("  - name: http\n    protocol: HTTP\n    port: 80\n    hostname: {hostname}\n")
}

fn validation(refs: &[(&str, &str)], mode: &str) -> String {
    let refs: String = refs
        .iter()
        .map(|(kind, name)| {
            format!("          - group: \"\"\n            kind: {kind}\n            name: {name}\n")
        })
        .collect();
    format!("        validation:\n          mode: {mode}\n          caCertificateRefs:\n{refs}")
}

fn gateway(name: &str, frontend: &str, listeners: &[String]) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  namespace: acme\n  name: {name}\nspec:\n  gatewayClassName: bulkhead\n  tls:\n    frontend:\n{frontend}  listeners:\n{}",
        listeners.concat()
    )
}

fn route(name: &str, parents: &[&str], matches: &str, svc: &str) -> String {
    let parents: String = parents.iter().map(|p| format!("  - name: {p}\n")).collect();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  namespace: acme\n  name: {name}\nspec:\n  parentRefs:\n{parents}  rules:\n  - matches: {matches}\n    backendRefs:\n    - name: {svc}\n      port: 80\n"
    )
}

/// Starts the world: both tenants, the four Gateways, the routes and their backends.
async fn start(p: &Pki) -> Standalone {
    let web = common::backend("web").await;
    let admin = common::backend("admin").await;
    let globex = common::backend("globex").await;
    let default_a = format!(
        "      default:\n{}",
        validation(&[("ConfigMap", "client-ca-a")], "AllowValidOnly")
    );
    let gw = gateway(
        "gw",
        &format!(
            "{default_a}      perPort:\n      - port: 8443\n        tls:\n{}",
            validation(&[("ConfigMap", "client-ca-b")], "AllowValidOnly")
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        ),
        &[
            https_listener("https", 443, "strict.acme.test"),
            https_listener("https-b", 8443, "b.acme.test"),
            http_listener("strict.acme.test"),
        ],
    );
    let open = gateway(
        "open",
        &format!(
            "      default:\n{}",
            validation(&[("ConfigMap", "client-ca-a")], "AllowInsecureFallback")
        ),
        &[https_listener("https", 443, "open.acme.test")],
    );
    let broken = gateway(
        "broken",
        &format!(
            "      default:\n{}",
            validation(&[("ConfigMap", "nope")], "AllowValidOnly")
        ),
        &[
            https_listener("https", 443, "broken.acme.test"),
            http_listener("broken.acme.test"),
        ],
    );
    let badpem = gateway(
        "badpem",
        &format!(
            "      default:\n{}",
            validation(&[("ConfigMap", "bad-ca")], "AllowValidOnly")
        ),
        &[https_listener("https", 443, "badpem.acme.test")],
    );
    let wrongkind = gateway(
        "wrongkind",
        &format!(
            "      default:\n{}",
            validation(&[("Secret", "acme-tls")], "AllowValidOnly")
        ),
        &[https_listener("https", 443, "wrongkind.acme.test")],
    );
    let identity_match = "[{headers: [{type: RegularExpression, name: x-forwarded-client-cert, value: \".*;DNS=admin\\\\.clients\\\\.acme\\\\.test(;.*)?\"}]}]";
    let acme = [
        common::tenant_yaml("acme", &["*.acme.test"]),
        pki::tls_secret_yaml("acme", "acme-tls", &p.acme_server),
        ca_config_map("client-ca-a", p.client_ca_a.cert_pem()),
        ca_config_map("client-ca-b", p.client_ca_b.cert_pem()),
        ca_config_map("bad-ca", "not a certificate"),
        gw,
        open,
        broken,
        badpem,
        wrongkind,
        route(
            "web",
            &["gw", "open", "broken", "badpem", "wrongkind"],
            "[{path: {type: PathPrefix, value: /}}]",
            "web",
        ),
        route("by-identity", &["gw"], identity_match, "admin"),
        common::service_yaml("acme", "web", web),
        common::service_yaml("acme", "admin", admin),
    ]
    .join("---\n");
    let globex_files = [
        common::tenant_yaml("globex", &["www.globex.test"]),
        pki::tls_secret_yaml("globex", "globex-tls", &p.globex_server),
        common::gateway_yaml("globex", "www.globex.test", Some("globex-tls")),
        common::route_yaml("globex", "web", &["www.globex.test"], "/", "globex"),
        common::service_yaml("globex", "globex", globex),
    ]
    .join("---\n");
    Standalone::start(&[("acme.yaml", acme), ("globex.yaml", globex_files)]).await
}

/// A TLS client trusting the server CA, presenting `client` when given.
fn connector(server_ca: &str, client: Option<&pki::LeafCert>, alpn: &[u8]) -> TlsConnector {
    TlsConnector::from(match client {
        Some(leaf) => tls::client_config_presenting(server_ca, leaf, &[alpn]),
        None => tls::client_config(server_ca, &[alpn]),
    })
}

/// Which HTTP version a request goes over.
#[derive(Debug, Clone, Copy)]
enum Version {
    H1,
    H2,
}

/// One GET to `host` (also the SNI) over TLS, presenting `client`, with extra `headers`; an error
/// when the handshake or the request fails (with TLS 1.3 a refused client certificate surfaces as
/// the first read failing).
async fn get(
    s: &Standalone,
    p: &Pki,
    version: Version,
    host: &str,
    client: Option<&pki::LeafCert>,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    let alpn: &[u8] = match version {
        Version::H1 => b"http/1.1",
        Version::H2 => b"h2",
    };
    let stream = TcpStream::connect(s.https)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        connector(p.server_ca.cert_pem(), client, alpn).connect(name, stream),
    )
    .await
    .map_err(|_| "handshake timeout".to_string())?
    .map_err(|e| format!("handshake: {e}"))?;
    match version {
        Version::H1 => common::send_request_over(tls, "GET", host, "/", headers).await,
        Version::H2 => h2_get(tls, host, headers).await,
    }
}

async fn h2_get<S>(stream: S, host: &str, headers: &[(&str, &str)]) -> Result<Answer, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = http::Request::get(format!("https://{host}/"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    common::answer_of(resp).await
}

/// The backend that answered (the demo backend's `backend` line).
fn backend_of(body: &str) -> Option<String> {
    common::answer_field(body, "backend")
}

/// The identity the backend saw.
fn identity_seen(body: &str) -> Vec<String> {
    common::echoed_header(body, XFCC)
}

fn assert_refused(r: Result<Answer, String>, what: &str) {
    assert!(
        r.is_err(),
        "{what}: expected the connection to be refused, got {r:?}"
    );
}

const FORGED: &str = "Hash=00;Subject=\"CN=admin\";DNS=admin.clients.acme.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_valid_only_serves_only_clients_with_a_valid_certificate_and_passes_their_identity() {
    let p = Pki::new();
    let s = start(&p).await;
    for v in [Version::H1, Version::H2] {
        let host = "strict.acme.test";
        assert_refused(
            get(&s, &p, v, host, None, &[]).await,
            "no client certificate",
        );
        assert_refused(
            get(&s, &p, v, host, Some(&p.b_user), &[]).await,
            "a certificate of another CA",
        );
        let forged = [(XFCC, FORGED), ("x_forwarded_client_cert", FORGED)];
        let (status, _, body) = get(&s, &p, v, host, Some(&p.user), &forged)
            .await
            .unwrap_or_else(|e| panic!("{v:?}: valid certificate refused: {e}\n{}", s.log()));
        assert_eq!(status, 200, "{v:?}: {body}");
        assert_eq!(backend_of(&body).as_deref(), Some("web"), "{v:?}: {body}");
        let seen = identity_seen(&body);
        assert_eq!(
            seen.len(),
            1,
            "{v:?}: exactly the router's own header: {body}"
        );
        let id = &seen[0];
        assert!(id.starts_with("Hash="), "{id}");
        assert!(
            id.contains(";Subject=\"CN=user.clients.acme.test\""),
            "{id}"
        );
        assert!(id.ends_with(";DNS=user.clients.acme.test"), "{id}");
        assert!(
            common::echoed_header(&body, "x_forwarded_client_cert").is_empty(),
            "the underscore spelling is stripped too: {body}"
        );
    }
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("outcome=\"client_certificate_refused\""),
        "refusals are counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_header_match_routes_by_the_verified_identity_never_by_a_forged_one() {
    let p = Pki::new();
    let s = start(&p).await;
    for v in [Version::H1, Version::H2] {
        let host = "strict.acme.test";
        let (_, _, body) = get(&s, &p, v, host, Some(&p.admin), &[]).await.unwrap();
        assert_eq!(backend_of(&body).as_deref(), Some("admin"), "{v:?}: {body}");
        let (_, _, body) = get(&s, &p, v, host, Some(&p.user), &[(XFCC, FORGED)])
            .await
            .unwrap();
        assert_eq!(
            backend_of(&body).as_deref(),
            Some("web"),
            "{v:?}: a forged identity header must not reach route matching: {body}"
        );
    }
    // Plain HTTP: no certificate, so no identity; a forged header is dropped all the same.
    let (status, _, body) =
        common::http_request(s.http, "GET", "strict.acme.test", "/", &[(XFCC, FORGED)])
            .await
            .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(backend_of(&body).as_deref(), Some("web"), "{body}");
    assert!(identity_seen(&body).is_empty(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_port_validation_overrides_the_default_for_its_port_only() {
    let p = Pki::new();
    let s = start(&p).await;
    for v in [Version::H1, Version::H2] {
        let (status, _, body) = get(&s, &p, v, "b.acme.test", Some(&p.b_user), &[])
            .await
            .unwrap_or_else(|e| panic!("{v:?}: CA B on 8443 refused: {e}"));
        assert_eq!(status, 200);
        assert!(identity_seen(&body)[0].ends_with(";DNS=b.clients.acme.test"));
        assert_refused(
            get(&s, &p, v, "b.acme.test", Some(&p.user), &[]).await,
            "CA A on the 8443 listener",
        );
        assert_refused(
            get(&s, &p, v, "strict.acme.test", Some(&p.b_user), &[]).await,
            "CA B on the 443 listener",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_fallback_serves_every_client_but_only_a_valid_certificate_gives_an_identity() {
    let p = Pki::new();
    let s = start(&p).await;
    let host = "open.acme.test";
    for v in [Version::H1, Version::H2] {
        for (client, what) in [(None, "no certificate"), (Some(&p.b_user), "another CA")] {
            let (status, _, body) = get(&s, &p, v, host, client, &[(XFCC, FORGED)])
                .await
                .unwrap_or_else(|e| panic!("{v:?}: {what}: refused: {e}"));
            assert_eq!(status, 200, "{v:?}: {what}");
            assert!(identity_seen(&body).is_empty(), "{v:?}: {what}: {body}");
        }
        let (_, _, body) = get(&s, &p, v, host, Some(&p.user), &[]).await.unwrap();
        assert!(identity_seen(&body)[0].ends_with(";DNS=user.clients.acme.test"));
    }
    let status = s
        .object_status("Gateway", "acme", "open")
        .await
        .unwrap_or_default();
    let insecure = status["conditions"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|c| c["type"] == "InsecureFrontendValidationMode")
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(insecure["status"], "True", "{status}");
    assert_eq!(insecure["reason"], "ConfigurationChanged", "{status}");
}

/// The condition `kind` of listener `listener` in a Gateway status.
fn listener_condition(status: &serde_json::Value, listener: &str, kind: &str) -> (String, String) {
    let l = status["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == listener))
        .cloned()
        .unwrap_or_default();
    let c = l["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .cloned()
        .unwrap_or_default();
    (
        c["status"].as_str().unwrap_or_default().to_owned(),
        c["reason"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_ca_reference_fails_closed_and_everything_else_keeps_serving() {
    let p = Pki::new();
    let s = start(&p).await;
    for (gw, reason) in [
        ("broken", "InvalidCACertificateRef"),
        ("badpem", "InvalidCACertificateRef"),
        ("wrongkind", "InvalidCACertificateKind"),
    ] {
        let status = s
            .object_status("Gateway", "acme", gw)
            .await
            .unwrap_or_default();
        let f = |k| listener_condition(&status, "https", k);
        assert_eq!(
            f("ResolvedRefs"),
            ("False".into(), reason.into()),
            "{gw}: {status}"
        );
        assert_eq!(
            f("Accepted"),
            ("False".into(), "NoValidCACertificate".into()),
            "{gw}: {status}"
        );
        assert_eq!(f("Programmed").0, "False", "{gw}: {status}");
        let host = format!("{gw}.acme.test");
        for v in [Version::H1, Version::H2] {
            assert_refused(
                get(&s, &p, v, &host, Some(&p.user), &[]).await,
                &format!("{v:?}: {host} with an invalid CA reference"),
            );
        }
    }
    // The broken Gateway's HTTP listener, the other listeners and the other tenant keep serving.
    let broken = s
        .object_status("Gateway", "acme", "broken")
        .await
        .unwrap_or_default();
    assert_eq!(
        listener_condition(&broken, "http", "Accepted"),
        ("True".into(), "Accepted".into())
    );
    let (status, _, _) = common::http_request(s.http, "GET", "broken.acme.test", "/", &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, _, _) = get(&s, &p, Version::H2, "strict.acme.test", Some(&p.user), &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, _, body) = get(&s, &p, Version::H1, "www.globex.test", None, &[])
        .await
        .unwrap();
    assert_eq!(
        (status, backend_of(&body).as_deref()),
        (200, Some("globex"))
    );
}
