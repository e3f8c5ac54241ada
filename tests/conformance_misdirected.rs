//! Gateway API conformance: misdirected requests (GEP-3567) are decided by listener, not by
//! certificate (issue 14, item 2).
//!
//! Written the way `HTTPRouteHTTPSListenerDetectMisdirectedRequests` sends its requests: several
//! HTTPS listeners on port 443 (`example.org`'s routes on the listener without hostname,
//! `second-example.org`, `*.wildcard.org`, `fourth-example.wildcard.org`), ONE certificate covering
//! every name, and HTTP/2 requests whose `:authority` differs from the SNI. A request whose host
//! the SNI's listener does not serve — another listener serves it, or none does — gets 421, even
//! though the certificate would cover it.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;

/// A status and the backend that answered (none for a local answer).
type Outcome = (u16, Option<String>);

/// The conformance Gateway: four HTTPS listeners on 443 sharing Secret `tls`.
fn gateway(ns: &str) -> String {
    let listener = |name: &str, hostname: Option<&str>| {
        let hostname = hostname
            .map(|h| format!("    hostname: \"{h}\"\n"))
            .unwrap_or_default();
        format!(
            "  - name: {name}\n    protocol: HTTPS\n    port: 443\n{hostname}    tls:\n      mode: Terminate\n      certificateRefs:\n      - name: tls\n"
        )
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  namespace: {ns}\n  name: gw\nspec:\n  gatewayClassName: bulkhead\n  listeners:\n{}{}{}{}",
        listener("https", None),
        listener("https-with-hostname", Some("second-example.org")),
        listener("https-with-wildcard-hostname", Some("*.wildcard.org")),
        listener(
            "https-with-hostname-matching-wildcard",
            Some("fourth-example.wildcard.org")
        ),
    )
}

/// An HTTPRoute on `section` (all listeners when `None`) with `hostnames`, PathPrefix
/// `/detect-misdirected-requests` to Service `svc`.
fn route(ns: &str, name: &str, section: Option<&str>, hostnames: &[&str], svc: &str) -> String {
    let section = section
        .map(|s| format!("    sectionName: {s}\n"))
        .unwrap_or_default();
    let hosts: Vec<String> = hostnames.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  namespace: {ns}\n  name: {name}\nspec:\n  parentRefs:\n  - name: gw\n{section}  hostnames: [{}]\n  rules:\n  - matches:\n    - path: {{type: PathPrefix, value: /detect-misdirected-requests}}\n    backendRefs:\n    - name: {svc}\n      port: 80\n",
        hosts.join(", ")
    )
}

/// The conformance world, in tenant `conf` (granted `"*"`), and the CA clients trust.
async fn world() -> (Standalone, pki::DemoCa) {
    let ns = "conf";
    let ca = pki::DemoCa::new("misdirected CA").expect("CA");
    let leaf = ca
        .issue(&[
            "example.org",
            "second-example.org",
            "unknown-example.org",
            "*.wildcard.org",
        ])
        .expect("one certificate for every name");
    let third_and_fourth = ["third-example.wildcard.org", "fourth-example.wildcard.org"];
    let mut files = vec![
        ("tenant.yaml", tenant_yaml(ns, &["*"])),
        ("gw.yaml", gateway(ns)),
        ("tls.yaml", pki::tls_secret_yaml(ns, "tls", &leaf)),
        ("r1.yaml", route(ns, "r1", None, &["example.org"], "v1")),
        (
            "r2.yaml",
            route(ns, "r2", Some("https-with-hostname"), &[], "v2"),
        ),
        (
            "r3.yaml",
            route(
                ns,
                "r3",
                Some("https-with-wildcard-hostname"),
                &third_and_fourth,
                "v3",
            ),
        ),
        (
            "r4.yaml",
            route(
                ns,
                "r4",
                Some("https-with-hostname-matching-wildcard"),
                &third_and_fourth,
                "v4",
            ),
        ),
    ];
    for (file, svc) in [
        ("v1.yaml", "v1"),
        ("v2.yaml", "v2"),
        ("v3.yaml", "v3"),
        ("v4.yaml", "v4"),
    ] {
        files.push((file, service_yaml(ns, svc, backend(svc).await)));
    }
    let s = Standalone::start(&files).await;
    (s, ca)
}

/// One GET with `:authority` `host` on an open HTTP/2 connection: status and backend name.
async fn h2_get(sender: &mut SendRequest<Empty<Bytes>>, host: &str) -> Result<Outcome, String> {
    let (status, body) = h2_get_on(sender, host, "/detect-misdirected-requests").await?;
    Ok((status, answer_field(&body, "backend")))
}

#[tokio::test]
async fn https_listeners_on_one_port_answer_421_for_hosts_the_sni_listener_does_not_serve() {
    let (s, ca) = world().await;
    let ready = eventually(SETTLE, || async {
        let (mut c, _) = h2_connect(s.https, "fourth-example.wildcard.org", ca.cert_pem())
            .await
            .ok()?;
        let answer = h2_get(&mut c, "fourth-example.wildcard.org").await.ok()?;
        (answer == (200, Some("v4".to_owned()))).then_some(())
    })
    .await;
    assert!(ready.is_some(), "never served; log:\n{}", s.log());

    // (SNI, then for each host on that one HTTP/2 connection: status and backend.)
    let ok = |backend: &str| (200, Some(backend.to_owned()));
    let cases: [(&str, Vec<(&str, Outcome)>); 5] = [
        (
            "example.org",
            vec![
                ("example.org", ok("v1")),
                ("second-example.org", (421, None)),
                ("unknown-example.org", (404, None)),
            ],
        ),
        (
            "second-example.org",
            vec![
                ("second-example.org", ok("v2")),
                ("example.org", (421, None)),
                ("unknown-example.org", (421, None)),
            ],
        ),
        (
            "third-example.wildcard.org",
            vec![
                ("third-example.wildcard.org", ok("v3")),
                ("fourth-example.wildcard.org", (421, None)),
                ("second-example.org", (421, None)),
                ("unknown-example.org", (421, None)),
            ],
        ),
        (
            "fourth-example.wildcard.org",
            vec![
                ("fourth-example.wildcard.org", ok("v4")),
                ("fifth-example.wildcard.org", (421, None)),
            ],
        ),
        (
            "unknown-example.org",
            vec![
                ("example.org", ok("v1")),
                ("unknown-example.org", (404, None)),
            ],
        ),
    ];
    for (sni, requests) in cases {
        let (mut conn, _) = h2_connect(s.https, sni, ca.cert_pem())
            .await
            .expect("h2 connection");
        for (host, want) in requests {
            let got = h2_get(&mut conn, host).await.expect("answer");
            assert_eq!(got, want, "SNI {sni}, :authority {host}");
        }
    }
    let metrics = s.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("bulkhead_router_host_refusals_total")
                && l.contains("reason=\"misdirected\"")),
        "421s are counted as misdirected:\n{metrics}"
    );
}

#[tokio::test]
async fn a_host_no_listener_serves_is_misdirected_not_404() {
    let ca = pki::DemoCa::new("acme CA").expect("CA");
    let leaf = ca.issue(&["*.acme.test"]).expect("leaf");
    let s = Standalone::start(&[
        ("tenant.yaml", tenant_yaml("acme", &["*.acme.test"])),
        ("gw.yaml", gateway_yaml("acme", "a.acme.test", Some("tls"))),
        ("tls.yaml", pki::tls_secret_yaml("acme", "tls", &leaf)),
        ("route.yaml", route_yaml("acme", "web", &[], "/", "web")),
        (
            "svc.yaml",
            service_yaml("acme", "web", backend("web").await),
        ),
    ])
    .await;
    let requests = [("a.acme.test", "/"), ("b.acme.test", "/")];
    let answers = eventually(SETTLE, || async {
        let (answers, _) =
            https_gets_on_one_connection(s.https, "a.acme.test", ca.cert_pem(), &requests).await;
        (answers.len() == 2 && answers[0].0 == 200).then_some(answers)
    })
    .await
    .unwrap_or_else(|| panic!("never served; log:\n{}", s.log()));
    // b.acme.test is the tenant's and the certificate covers it, but no listener serves it.
    assert_eq!(answers[1].0, 421, "{}", answers[1].2);
}
