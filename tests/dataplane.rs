//! `bulkhead-dataplane`, the binary the edge and router pods run, end to end in cluster mode with
//! the operator unreachable: each tier serves its bootstrap snapshot, and a request crosses both
//! (edge by Host → PROXY v2 → router → demo backend).

mod common;

use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A data-plane process, killed when dropped; its log is kept for failure messages.
struct Tier {
    child: Child,
    log: std::path::PathBuf,
}

impl Tier {
    fn start(dir: &Path, name: &str, args: &[String]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_bulkhead-dataplane"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn bulkhead-dataplane");
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The operator link flags: an address where nothing listens, a real CA, a token file, and the
/// bootstrap snapshot.
fn link_args(dir: &Path, bootstrap: &Path) -> Vec<String> {
    let ca = pki::DemoCa::new("operator CA").expect("CA");
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).expect("write CA");
    std::fs::write(dir.join("token"), "not-a-real-token").expect("write token");
    let unreachable = free_addr();
    vec![
        "--operator-url".into(),
        format!("https://{unreachable}"),
        "--operator-ca".into(),
        dir.join("ca.pem").display().to_string(),
        "--token-file".into(),
        dir.join("token").display().to_string(),
        "--bootstrap".into(),
        bootstrap.display().to_string(),
    ]
}

fn listen_args(https: SocketAddr, http: SocketAddr, admin: SocketAddr) -> Vec<String> {
    vec![
        "--https-listen".into(),
        https.to_string(),
        "--http-listen".into(),
        http.to_string(),
        "--admin-listen".into(),
        admin.to_string(),
    ]
}

#[tokio::test]
async fn both_tiers_serve_their_bootstrap_snapshots_while_the_operator_is_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let web = backend("web").await;
    let (router_https, router_http, router_admin) = (free_addr(), free_addr(), free_addr());
    let (edge_https, edge_http, edge_admin) = (free_addr(), free_addr(), free_addr());

    let router_snapshot = format!(
        "tenant: acme
namespace: acme
version: 1
hostnames: [\"*.acme.test\"]
https: {{}}
http:
  virtual_hosts:
  - hostname: \"*.acme.test\"
    listener_port: 80
    routes:
    - route: {{kind: HTTPRoute, namespace: acme, name: web}}
      match: {{path: {{type: PathPrefix, value: /app}}}}
      backends: [{{backend: \"acme/web:80\", weight: 1}}]
backends:
  \"acme/web:80\": {{endpoints: [\"{web}\"]}}
"
    );
    std::fs::write(dir.path().join("router.yaml"), router_snapshot).expect("write");
    let edge_snapshot = format!(
        "version: 1
routes: [{{hostname: \"*.acme.test\", tenant: acme}}]
tenants:
  acme: {{https: [\"{router_https}\"], http: [\"{router_http}\"]}}
"
    );
    std::fs::write(dir.path().join("edge.yaml"), edge_snapshot).expect("write");

    let mut router_args = vec!["router".to_owned(), "--tenant".into(), "acme".into()];
    router_args.extend(listen_args(router_https, router_http, router_admin));
    router_args.extend(link_args(dir.path(), &dir.path().join("router.yaml")));
    let router = Tier::start(dir.path(), "router", &router_args);
    let mut edge_args = vec!["edge".to_owned()];
    edge_args.extend(listen_args(edge_https, edge_http, edge_admin));
    edge_args.extend(link_args(dir.path(), &dir.path().join("edge.yaml")));
    let edge = Tier::start(dir.path(), "edge", &edge_args);

    let answer = eventually(SETTLE, || async {
        let (status, _, body) = http_get(edge_http, "www.acme.test", "/app/x").await.ok()?;
        (status == 200).then_some(body)
    })
    .await;
    let logs = || format!("router log:\n{}\nedge log:\n{}", router.log(), edge.log());
    let body = answer.unwrap_or_else(|| panic!("no answer through both tiers; {}", logs()));
    assert_eq!(answer_field(&body, "backend").as_deref(), Some("web"));
    assert_eq!(answer_field(&body, "path").as_deref(), Some("/app/x"));
    // The router saw the client's address through the edge's PROXY v2 header.
    assert_eq!(echoed_header(&body, "x-forwarded-for"), ["127.0.0.1"]);

    // A path no route serves, and a host no tenant owns.
    let (status, _, _) = http_get(edge_http, "www.acme.test", "/other")
        .await
        .expect("GET");
    assert_eq!(status, 404, "{}", logs());
    let (status, _, _) = http_get(edge_http, "www.initech.test", "/")
        .await
        .expect("GET");
    assert_eq!(status, 404, "{}", logs());

    // Both report ready (serving the bootstrap) on their admin listeners.
    for admin in [router_admin, edge_admin] {
        let (status, _, body) = http_get(admin, "admin", "/readyz").await.expect("readyz");
        assert_eq!(status, 200, "{admin}: {body}; {}", logs());
    }
}
