//! `GatewayHTTPListenerIsolation`, the way the Gateway API conformance suite checks it: four HTTP
//! listeners on port 80 (no hostname, `*.example.com`, `*.foo.example.com`, `abc.foo.example.com`),
//! one route without hostnames attached to each by `sectionName`, each matching its own path; a
//! request reaches only the routes of the most specific listener matching its Host, so every other
//! listener's path is 404 there.

mod common;

use common::*;

/// The listeners (name, hostname) of the Gateway, in a namespace whose tenant is granted `"*"`
/// (the catch-all: the listener without hostname serves any name).
const LISTENERS: &[(&str, Option<&str>)] = &[
    ("empty-hostname", None),
    ("wildcard-example-com", Some("*.example.com")),
    ("wildcard-foo-example-com", Some("*.foo.example.com")),
    ("abc-foo-example-com", Some("abc.foo.example.com")),
];

fn gateway() -> String {
    let mut s = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  namespace: any\n  name: http-listener-isolation\nspec:\n  gatewayClassName: bulkhead\n  listeners:\n",
    );
    for (name, hostname) in LISTENERS {
        s.push_str(&format!(
            "  - name: {name}\n    protocol: HTTP\n    port: 80\n"
        ));
        if let Some(h) = hostname {
            s.push_str(&format!("    hostname: \"{h}\"\n"));
        }
        s.push_str("    allowedRoutes:\n      namespaces:\n        from: Same\n");
    }
    s
}

/// A route without hostnames on listener `name`, PathPrefix `/name` to the Service `name`.
fn route(name: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  namespace: any\n  name: {name}\nspec:\n  parentRefs:\n  - name: http-listener-isolation\n    sectionName: {name}\n  rules:\n  - matches:\n    - path: {{type: PathPrefix, value: /{name}}}\n    backendRefs:\n    - name: {name}\n      port: 80\n"
    )
}

#[tokio::test]
async fn each_request_reaches_only_the_routes_of_its_most_specific_listener() {
    let mut files: Vec<(String, String)> = vec![
        ("tenant.yaml".into(), tenant_yaml("any", &["*"])),
        ("gateway.yaml".into(), gateway()),
    ];
    for (name, _) in LISTENERS {
        let manifest = route(name) + "---\n" + &service_yaml("any", name, backend(name).await);
        files.push((format!("{name}.yaml"), manifest));
    }
    let files: Vec<(&str, String)> = files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    let bh = Standalone::start(&files).await;

    // (host, listener whose routes serve it)
    let cases = [
        ("bar.com", "empty-hostname"),
        ("bar.example.com", "wildcard-example-com"),
        ("bar.foo.example.com", "wildcard-foo-example-com"),
        ("abc.foo.example.com", "abc-foo-example-com"),
    ];
    for (host, owner) in cases {
        let path = format!("/{owner}");
        let body = eventually(SETTLE, || async {
            let (code, _, body) = http_get(bh.http, host, &path).await.ok()?;
            (code == 200).then_some(body)
        })
        .await
        .unwrap_or_else(|| panic!("{host}{path} not served by its listener's route"));
        assert_eq!(
            answer_field(&body, "backend").as_deref(),
            Some(owner),
            "{host}{path}"
        );
        for (other, _) in LISTENERS.iter().filter(|(n, _)| *n != owner) {
            let (code, _, body) = http_get(bh.http, host, &format!("/{other}"))
                .await
                .expect("request");
            assert_eq!(
                code, 404,
                "{host}/{other} must not reach listener {other}'s route: {body}"
            );
        }
    }
}
