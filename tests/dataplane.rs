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

/// Both tiers with their bootstrap snapshots (one tenant, `*.acme.test`, `/app` → `web`); the
/// listeners bind `bind(port)` of free ports; the edge reaches the router on loopback.
struct Tiers {
    router: Tier,
    edge: Tier,
    edge_http_port: u16,
    admins: [u16; 2],
    _dir: tempfile::TempDir,
}

impl Tiers {
    async fn start(web: SocketAddr, bind: impl Fn(u16) -> String) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let [router_https, router_http, router_admin, edge_https, edge_http, edge_admin] =
            free_addrs().map(|a| a.port());
        write_bootstraps(dir.path(), web, router_https, router_http);
        let listen = |https, http, admin| {
            vec![
                "--https-listen".to_owned(),
                bind(https),
                "--http-listen".into(),
                bind(http),
                "--admin-listen".into(),
                bind(admin),
            ]
        };
        // The edge reaches the router from loopback, which the router's default (the private
        // ranges of a cluster) does not trust.
        let mut router_args = vec![
            "router".to_owned(),
            "--tenant".into(),
            "acme".into(),
            "--accept-proxy-from".into(),
            "127.0.0.1/32".into(),
        ];
        router_args.extend(listen(router_https, router_http, router_admin));
        router_args.extend(link_args(dir.path(), &dir.path().join("router.yaml")));
        let router = Tier::start(dir.path(), "router", &router_args);
        let mut edge_args = vec!["edge".to_owned()];
        edge_args.extend(listen(edge_https, edge_http, edge_admin));
        edge_args.extend(link_args(dir.path(), &dir.path().join("edge.json")));
        let edge = Tier::start(dir.path(), "edge", &edge_args);
        Self {
            router,
            edge,
            edge_http_port: edge_http,
            admins: [router_admin, edge_admin],
            _dir: dir,
        }
    }

    fn logs(&self) -> String {
        format!(
            "router log:\n{}\nedge log:\n{}",
            self.router.log(),
            self.edge.log()
        )
    }

    /// The first 200 answer to `GET /app/x` through the edge at `edge`, or a failure with the logs.
    async fn answer(&self, edge: SocketAddr) -> String {
        let answer = eventually(SETTLE, || async {
            let (status, _, body) = http_get(edge, "www.acme.test", "/app/x").await.ok()?;
            (status == 200).then_some(body)
        })
        .await;
        answer.unwrap_or_else(|| panic!("no answer through both tiers; {}", self.logs()))
    }
}

fn write_bootstraps(dir: &Path, web: SocketAddr, router_https: u16, router_http: u16) {
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
    std::fs::write(dir.join("router.yaml"), router_snapshot).expect("write");
    // The edge's bootstrap exactly as the operator writes it: the ConfigMap's `snapshot.json`.
    let edge_snapshot: bulkhead_crds::snapshot::EdgeSnapshot =
        serde_json::from_value(serde_json::json!({
            "version": 1,
            "routes": [{"hostname": "*.acme.test", "tenant": "acme"}],
            "tenants": {"acme": {
                "https": [format!("127.0.0.1:{router_https}")],
                "http": [format!("127.0.0.1:{router_http}")],
            }},
        }))
        .expect("edge snapshot");
    let config_map = bulkhead_operator::kube::edge_bootstrap::edge_bootstrap_config_map(
        "bulkhead-system",
        &edge_snapshot,
    )
    .expect("the operator renders the edge bootstrap");
    let data = config_map.data.expect("ConfigMap data");
    std::fs::write(
        dir.join("edge.json"),
        &data[bulkhead_operator::children::BOOTSTRAP_KEY],
    )
    .expect("write");
}

#[tokio::test]
async fn both_tiers_serve_their_bootstrap_snapshots_while_the_operator_is_down() {
    let web = backend("web").await;
    let tiers = Tiers::start(web, |port| format!("127.0.0.1:{port}")).await;
    let edge_http = SocketAddr::from(([127, 0, 0, 1], tiers.edge_http_port));
    let logs = || tiers.logs();
    let body = tiers.answer(edge_http).await;
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
    for port in tiers.admins {
        let admin = SocketAddr::from(([127, 0, 0, 1], port));
        let (status, _, body) = http_get(admin, "admin", "/readyz").await.expect("readyz");
        assert_eq!(status, 200, "{admin}: {body}; {}", logs());
    }
}

/// Listeners on `[::]` (the cluster default) serve IPv4 and IPv6 clients alike, and an IPv4 client
/// keeps its IPv4 address (not `::ffff:127.0.0.1`) in the PROXY header, the access log and
/// `X-Forwarded-For`.
#[tokio::test]
async fn dual_stack_listeners_serve_ipv4_and_ipv6_clients_with_canonical_addresses() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback on this host");
        return;
    }
    let web = backend("web").await;
    let tiers = Tiers::start(web, |port| format!("[::]:{port}")).await;
    let port = tiers.edge_http_port;
    let body = tiers.answer(SocketAddr::from(([127, 0, 0, 1], port))).await;
    assert_eq!(echoed_header(&body, "x-forwarded-for"), ["127.0.0.1"]);
    let v6: SocketAddr = format!("[::1]:{port}").parse().expect("addr");
    let body = tiers.answer(v6).await;
    assert_eq!(echoed_header(&body, "x-forwarded-for"), ["::1"]);
    for admin in tiers.admins {
        for host in ["127.0.0.1", "[::1]"] {
            let addr: SocketAddr = format!("{host}:{admin}").parse().expect("addr");
            let (status, _, body) = http_get(addr, "admin", "/readyz").await.expect("readyz");
            assert_eq!(status, 200, "{addr}: {body}; {}", tiers.logs());
        }
    }
}
