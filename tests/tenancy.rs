//! Two tenants behind one edge: each is reached with its own certificate, by SNI and by Host, and
//! neither can serve a name the cluster admin did not give it.

mod common;

use common::*;

struct TwoTenants {
    bh: Standalone,
    acme_ca: String,
    globex_ca: String,
}

async fn two_tenants() -> TwoTenants {
    let acme_ca = pki::DemoCa::new("acme CA").unwrap();
    let globex_ca = pki::DemoCa::new("globex CA").unwrap();
    let acme_leaf = acme_ca.issue(&["*.acme.test"]).unwrap();
    let globex_leaf = globex_ca.issue(&["*.globex.test"]).unwrap();
    let acme_web = backend("acme-web").await;
    let globex_web = backend("globex-web").await;
    let files = vec![
        ("tenants/acme.yaml", tenant_yaml("acme", &["*.acme.test"])),
        (
            "tenants/globex.yaml",
            tenant_yaml("globex", &["*.globex.test"]),
        ),
        (
            "acme/gw.yaml",
            gateway_yaml("acme", "*.acme.test", Some("acme-tls")),
        ),
        (
            "acme/tls.yaml",
            pki::tls_secret_yaml("acme", "acme-tls", &acme_leaf),
        ),
        (
            "acme/web.yaml",
            route_yaml("acme", "web", &["www.acme.test"], "/", "web")
                + "---\n"
                + &service_yaml("acme", "web", acme_web),
        ),
        (
            "globex/gw.yaml",
            gateway_yaml("globex", "*.globex.test", Some("globex-tls")),
        ),
        (
            "globex/tls.yaml",
            pki::tls_secret_yaml("globex", "globex-tls", &globex_leaf),
        ),
        (
            "globex/web.yaml",
            route_yaml("globex", "web", &["www.globex.test"], "/", "web")
                + "---\n"
                + &service_yaml("globex", "web", globex_web),
        ),
    ];
    let bh = Standalone::start(&files).await;
    TwoTenants {
        bh,
        acme_ca: acme_ca.cert_pem().to_owned(),
        globex_ca: globex_ca.cert_pem().to_owned(),
    }
}

#[tokio::test]
async fn https_reaches_each_tenants_backend_with_its_own_certificate() {
    let t = two_tenants().await;
    // Each client trusts only its tenant's CA: a handshake that succeeds proves which certificate was served.
    let (status, _, body) = https_get(t.bh.https, "www.acme.test", "/hello", &t.acme_ca)
        .await
        .unwrap_or_else(|e| panic!("acme over HTTPS: {e}\n{}", t.bh.log()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(answer_field(&body, "backend").as_deref(), Some("acme-web"));
    assert_eq!(answer_field(&body, "path").as_deref(), Some("/hello"));

    let (status, _, body) = https_get(t.bh.https, "www.globex.test", "/", &t.globex_ca)
        .await
        .unwrap_or_else(|e| panic!("globex over HTTPS: {e}"));
    assert_eq!(status, 200);
    assert_eq!(
        answer_field(&body, "backend").as_deref(),
        Some("globex-web")
    );

    // acme's CA does not vouch for the certificate globex's router serves.
    assert!(https_get(t.bh.https, "www.globex.test", "/", &t.acme_ca)
        .await
        .is_err());

    // HTTP/2 is negotiated by ALPN and routed the same way.
    let (status, body, alpn) = https_get_h2(t.bh.https, "www.acme.test", "/h2", &t.acme_ca)
        .await
        .unwrap_or_else(|e| panic!("acme over h2: {e}"));
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(status, 200);
    assert_eq!(answer_field(&body, "backend").as_deref(), Some("acme-web"));
}

#[tokio::test]
async fn plain_http_is_routed_by_host() {
    let t = two_tenants().await;
    let (status, _, body) = http_get(t.bh.http, "www.globex.test", "/x").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        answer_field(&body, "backend").as_deref(),
        Some("globex-web")
    );
    // Host matching ignores case, a port and a trailing dot.
    let (status, _, body) = http_get(t.bh.http, "WWW.ACME.test.:80", "/").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(answer_field(&body, "backend").as_deref(), Some("acme-web"));
    // A host of an onboarded tenant without a matching route: that tenant's router answers 404.
    let (status, _, _) = http_get(t.bh.http, "api.acme.test", "/").await.unwrap();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn unknown_names_are_refused_at_the_edge() {
    let t = two_tenants().await;
    let err = tls_connect(t.bh.https, "www.initech.test", &t.acme_ca, &[b"http/1.1"]).await;
    assert!(
        err.is_err(),
        "a handshake for a name no tenant owns must fail"
    );
    let (status, _, _) = http_get(t.bh.http, "www.initech.test", "/").await.unwrap();
    assert_eq!(status, 404);
    // The refusal is counted.
    let metrics = t.bh.metrics().await;
    assert!(
        metrics.contains("unknown"),
        "no unknown-hostname metric in:\n{metrics}"
    );
}

fn futures_status(bh: &Standalone) -> String {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(bh.status()).to_string()
        })
        .join()
        .unwrap_or_default()
    })
}

#[tokio::test]
async fn a_hostname_outside_the_tenants_grant_is_not_served() {
    let t = two_tenants().await;
    // acme tries to take www.globex.test with a route of its own.
    t.bh.write(
        "acme/steal.yaml",
        &route_yaml("acme", "steal", &["www.globex.test"], "/", "web"),
    );
    let status = eventually(SETTLE, || async {
        let s = t.bh.object_status("HTTPRoute", "acme", "steal").await?;
        let text = s.to_string();
        text.contains("\"Accepted\"").then_some(s)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no status for acme/steal; status: {}",
            futures_status(&t.bh)
        )
    });
    let accepted = status["parents"][0]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Accepted"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        accepted["status"], "False",
        "acme/steal must not be accepted: {status}"
    );
    // globex keeps its name.
    let (status, _, body) = http_get(t.bh.http, "www.globex.test", "/").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        answer_field(&body, "backend").as_deref(),
        Some("globex-web")
    );
}
