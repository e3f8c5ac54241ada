//! The edge over real sockets on 127.0.0.1: fake routers read the PROXY v2 header and echo.

use bulkhead_admin::ReadyFlag;
use bulkhead_edge::{Edge, EdgeConfig, EdgeError, EdgeLimits, EdgeMetrics};
use bulkhead_proxy_io::{encode_v2, read_proxy_header, ProxyAddresses, ProxyHeader};
use bulkhead_snapshot::{Ack, Publisher};
use bulkhead_snapshot::{EdgeRoute, EdgeSnapshot, RouterEndpoints, Sealed};
use bulkhead_test_support::net::{closed_port, connect_from, serve_each};
use bulkhead_test_support::tls::{
    client_hello, ALERT_DECODE_ERROR, ALERT_INTERNAL_ERROR, ALERT_UNRECOGNIZED_NAME,
};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);
/// A stand-in for a tenant router: reads the PROXY header, reports it, echoes every byte after it.
struct FakeRouter {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<ProxyHeader>,
}

async fn fake_router() -> FakeRouter {
    let (tx, seen) = mpsc::unbounded_channel();
    let addr = serve_each(move |mut s| {
        let tx = tx.clone();
        async move {
            let mut buf = Vec::new();
            let header = read_proxy_header(&mut s, &mut buf, WAIT).await.unwrap();
            let _ = tx.send(header);
            let (mut r, mut w) = s.split();
            w.write_all(&buf).await.unwrap();
            tokio::io::copy(&mut r, &mut w).await.unwrap();
            w.shutdown().await.unwrap();
        }
    })
    .await;
    FakeRouter { addr, seen }
}

struct Harness {
    https: SocketAddr,
    http: SocketAddr,
    publisher: Publisher<EdgeSnapshot>,
    acks: mpsc::Receiver<Ack>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), EdgeError>>,
    ready: ReadyFlag,
    registry: Registry,
    version: u64,
}

async fn start(limits: EdgeLimits) -> Harness {
    start_with(limited(limits)).await
}

/// Starts an edge with `config`, listening on ephemeral loopback ports whatever it says.
async fn start_with(config: EdgeConfig) -> Harness {
    let mut registry = Registry::default();
    let metrics = EdgeMetrics::register(&mut registry);
    let ready = ReadyFlag::new("edge");
    let config = EdgeConfig {
        https_listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        ..config
    };
    let edge = Edge::bind(config, metrics, ready.clone()).await.unwrap();
    let (https, http) = (edge.https_addr(), edge.http_addr());
    assert_ne!(https.port(), 0);
    let (publisher, acks) = Publisher::new();
    let subscription = publisher.subscribe("edge/test");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(edge.run(subscription, shutdown.clone()));
    Harness {
        https,
        http,
        publisher,
        acks,
        shutdown,
        task,
        ready,
        registry,
        version: 0,
    }
}

impl Harness {
    /// Publishes one hostname per tenant, each tenant's router on the TLS port only, and waits
    /// until the edge accepted the snapshot.
    async fn publish_tls(&mut self, tenants: &[(&str, &str, SocketAddr)]) {
        let routes: Vec<_> = tenants.iter().map(|(h, t, _)| (*h, *t)).collect();
        let routers: Vec<_> = tenants
            .iter()
            .map(|(_, t, addr)| (*t, vec![*addr], vec![]))
            .collect();
        self.publish(&routes, &routers)
            .await
            .expect("snapshot accepted");
    }

    /// Publishes a snapshot built from routes and tenants and waits for its acknowledgement.
    async fn publish(
        &mut self,
        routes: &[(&str, &str)],
        tenants: &[(&str, Vec<SocketAddr>, Vec<SocketAddr>)],
    ) -> Result<(), String> {
        self.version += 1;
        let mut s = EdgeSnapshot {
            version: self.version,
            hash: String::new(),
            routes: routes
                .iter()
                .map(|(h, t)| EdgeRoute {
                    hostname: (*h).into(),
                    tenant: (*t).into(),
                })
                .collect(),
            tenants: tenants
                .iter()
                .map(|(t, https, http)| {
                    (
                        (*t).to_string(),
                        RouterEndpoints {
                            https: https.clone(),
                            http: http.clone(),
                        },
                    )
                })
                .collect(),
        };
        s.seal();
        self.publisher.publish(s);
        loop {
            let ack = tokio::time::timeout(WAIT, self.acks.recv())
                .await
                .expect("edge acknowledges")
                .expect("ack channel open");
            if ack.version == self.version {
                return ack.outcome;
            }
        }
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }

    /// Whether the metrics text has exactly this line.
    fn has_line(&self, line: &str) -> bool {
        self.metrics().lines().any(|l| l == line)
    }

    /// Waits until the metrics text contains `line` (counters move right after the bytes do).
    async fn metric_eventually(&self, line: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.metrics().contains(line) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "metric line {line:?} never appeared in:\n{}",
                self.metrics()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("edge stops")
            .unwrap()
            .unwrap();
    }
}

/// Sends a ClientHello for `sni` through the edge and checks it comes back unaltered.
async fn tls_roundtrip(edge: SocketAddr, sni: &str) -> TcpStream {
    tls_roundtrip_from("127.0.0.1", edge, sni).await
}

/// [`tls_roundtrip`] from the loopback address `source` (all of 127/8 reaches lo on Linux).
async fn tls_roundtrip_from(source: &str, edge: SocketAddr, sni: &str) -> TcpStream {
    let hello = client_hello(sni);
    let mut c = connect_from(source, edge).await;
    c.write_all(&hello).await.unwrap();
    let mut back = vec![0u8; hello.len()];
    tokio::time::timeout(WAIT, c.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        back, hello,
        "the router received the ClientHello byte for byte"
    );
    c
}

async fn read_all(c: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, c.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

async fn recv(r: &mut FakeRouter) -> ProxyHeader {
    tokio::time::timeout(WAIT, r.seen.recv())
        .await
        .expect("router got a connection")
        .unwrap()
}

#[tokio::test]
async fn sni_routes_to_the_owning_tenant_with_the_client_address_in_proxy_v2() {
    let mut acme = fake_router().await;
    let mut globex = fake_router().await;
    let mut h = start(EdgeLimits::default()).await;
    assert!(!h.ready.is_ready(), "not ready before a snapshot");
    h.publish_tls(&[
        ("a.example", "acme", acme.addr),
        ("*.globex.example", "globex", globex.addr),
    ])
    .await;
    assert!(h.ready.is_ready());

    let mut c = tls_roundtrip(h.https, "A.Example").await;
    assert_eq!(
        recv(&mut acme).await,
        ProxyHeader::Proxied(ProxyAddresses {
            source: c.local_addr().unwrap(),
            destination: h.https,
        })
    );
    // After the ClientHello, bytes keep flowing untouched both ways.
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    c.write_all(&payload).await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(read_all(&mut c).await, payload);

    let g = tls_roundtrip(h.https, "x.globex.example").await;
    assert!(matches!(recv(&mut globex).await, ProxyHeader::Proxied(_)));
    assert!(
        acme.seen.try_recv().is_err(),
        "acme saw only its own connection"
    );
    drop(g);
    h.metric_eventually(r#"bulkhead_edge_sniff_total{listener="https",outcome="ok"} 2"#)
        .await;
    h.metric_eventually(&format!(
        r#"bulkhead_edge_connections_total{{listener="https",tenant="acme",endpoint="{}"}} 1"#,
        acme.addr
    ))
    .await;
    h.stop().await;
}

/// The table is consulted once the name is sniffed, not at accept: a client still connecting when
/// a tenant is onboarded reaches it.
#[tokio::test]
async fn a_connection_accepted_before_a_change_but_greeting_after_it_gets_the_change() {
    let acme = fake_router().await;
    let mut globex = fake_router().await;
    let mut h = start(EdgeLimits::default()).await;
    h.publish_tls(&[("a.example", "acme", acme.addr)]).await;
    let mut c = TcpStream::connect(h.https).await.unwrap();
    h.metric_eventually("bulkhead_edge_connections_open 1")
        .await;
    h.publish_tls(&[
        ("a.example", "acme", acme.addr),
        ("b.example", "globex", globex.addr),
    ])
    .await;
    c.write_all(&client_hello("b.example")).await.unwrap();
    assert!(matches!(recv(&mut globex).await, ProxyHeader::Proxied(_)));
    drop(c);
    h.stop().await;
}

#[tokio::test]
async fn unknown_sni_gets_the_unrecognized_name_alert() {
    let acme = fake_router().await;
    let mut h = start(EdgeLimits::default()).await;
    h.publish_tls(&[("a.example", "acme", acme.addr)]).await;
    let mut c = TcpStream::connect(h.https).await.unwrap();
    c.write_all(&client_hello("b.example")).await.unwrap();
    assert_eq!(read_all(&mut c).await, ALERT_UNRECOGNIZED_NAME);
    h.metric_eventually(r#"bulkhead_edge_unknown_hostnames_total{listener="https"} 1"#)
        .await;
    assert!(
        !h.metrics().contains("b.example"),
        "client input never becomes a label"
    );
    h.stop().await;
}

#[tokio::test]
async fn malformed_client_hello_gets_decode_error() {
    let h = start(EdgeLimits::default()).await;
    let mut c = TcpStream::connect(h.https).await.unwrap();
    // A handshake record carrying a ServerHello.
    c.write_all(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00])
        .await
        .unwrap();
    assert_eq!(read_all(&mut c).await, ALERT_DECODE_ERROR);
    h.metric_eventually(r#"bulkhead_edge_sniff_total{listener="https",outcome="malformed"} 1"#)
        .await;
    h.stop().await;
}

#[tokio::test]
async fn http_host_routes_and_unknown_or_missing_host_is_answered() {
    let mut acme = fake_router().await;
    let mut h = start(EdgeLimits::default()).await;
    h.publish(
        &[("www.acme.example", "acme")],
        &[("acme", vec![], vec![acme.addr])],
    )
    .await
    .unwrap();

    let request =
        b"POST /x HTTP/1.1\r\nHost: WWW.acme.example:80\r\nContent-Length: 5\r\n\r\nhello";
    let mut c = TcpStream::connect(h.http).await.unwrap();
    c.write_all(request).await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(read_all(&mut c).await, request);
    assert_eq!(
        recv(&mut acme).await,
        ProxyHeader::Proxied(ProxyAddresses {
            source: c.local_addr().unwrap(),
            destination: h.http,
        })
    );

    let answer = |req: &'static [u8]| async move {
        let mut c = TcpStream::connect(h.http).await.unwrap();
        c.write_all(req).await.unwrap();
        String::from_utf8(read_all(&mut c).await).unwrap()
    };
    let not_found = answer(b"GET / HTTP/1.1\r\nHost: other.example\r\n\r\n").await;
    assert!(not_found.starts_with("HTTP/1.1 404 "), "{not_found}");
    assert!(not_found.contains("Connection: close"));
    let bad = answer(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n").await;
    assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
    let bad = answer(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await;
    assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
    assert!(
        acme.seen.try_recv().is_err(),
        "refused requests never reach a router"
    );
    h.stop().await;
}

#[tokio::test]
async fn snapshot_swap_keeps_established_connections_alive() {
    let mut acme = fake_router().await;
    let mut h = start(EdgeLimits::default()).await;
    h.publish_tls(&[("a.example", "acme", acme.addr)]).await;
    let mut c = tls_roundtrip(h.https, "a.example").await;
    recv(&mut acme).await;

    // The tenant loses the name: new connections are refused, the open one keeps working.
    h.publish(&[], &[("acme", vec![acme.addr], vec![])])
        .await
        .unwrap();
    let mut refused = TcpStream::connect(h.https).await.unwrap();
    refused.write_all(&client_hello("a.example")).await.unwrap();
    assert_eq!(read_all(&mut refused).await, ALERT_UNRECOGNIZED_NAME);

    c.write_all(b"still here").await.unwrap();
    let mut back = [0u8; 10];
    c.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"still here");
    c.shutdown().await.unwrap();
    assert!(read_all(&mut c).await.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn invalid_snapshot_is_refused_and_the_previous_one_keeps_serving() {
    let mut acme = fake_router().await;
    let mut h = start(EdgeLimits::default()).await;
    h.publish_tls(&[("a.example", "acme", acme.addr)]).await;
    let err = h
        .publish(
            &[("a.example", "ghost")],
            &[("acme", vec![acme.addr], vec![])],
        )
        .await
        .unwrap_err();
    assert!(err.contains("ghost"), "{err}");
    let err = h
        .publish(
            &[("a..example", "acme")],
            &[("acme", vec![acme.addr], vec![])],
        )
        .await
        .unwrap_err();
    assert!(err.contains("a..example"), "{err}");
    assert!(h.ready.is_ready());
    drop(tls_roundtrip(h.https, "a.example").await);
    recv(&mut acme).await;
    h.metric_eventually("bulkhead_edge_snapshots_rejected_total 2")
        .await;
    h.metric_eventually("bulkhead_edge_snapshot_version 1")
        .await;
    h.stop().await;
}

#[tokio::test]
async fn unreachable_router_endpoint_is_skipped() {
    let mut acme = fake_router().await;
    let dead = closed_port().await;
    let mut h = start(EdgeLimits::default()).await;
    h.publish(
        &[("a.example", "acme")],
        &[("acme", vec![dead, acme.addr], vec![])],
    )
    .await
    .unwrap();
    let mut open = Vec::new();
    for _ in 0..8 {
        open.push(tls_roundtrip(h.https, "a.example").await);
        recv(&mut acme).await;
    }
    drop(open);
    h.stop().await;
}

#[tokio::test]
async fn refused_router_endpoint_is_marked_failing_and_skipped() {
    let mut acme = fake_router().await;
    let dead = closed_port().await;
    // A backoff that outlasts the test: "skipped" never depends on timing.
    let limits = EdgeLimits {
        failing_mark_base: Duration::from_secs(3600),
        failing_mark_max: Duration::from_secs(3600),
        ..EdgeLimits::default()
    };
    let mut h = start(limits).await;
    h.publish(
        &[("a.example", "acme")],
        &[("acme", vec![dead, acme.addr], vec![])],
    )
    .await
    .unwrap();
    let failing = r#"bulkhead_edge_router_endpoints_failing{listener="https",tenant="acme"}"#;
    let errors = format!(
        r#"bulkhead_edge_connect_errors_total{{listener="https",tenant="acme",endpoint="{dead}"}} 1"#
    );
    let mut open = Vec::new();
    // P2C picks the dead endpoint first half the time; 200 misses in a row are 2^-200 unlikely.
    for _ in 0..200 {
        if h.has_line(&format!("{failing} 1")) {
            break;
        }
        open.push(tls_roundtrip(h.https, "a.example").await);
        recv(&mut acme).await;
    }
    assert!(h.has_line(&format!("{failing} 1")), "{}", h.metrics());
    assert!(h.has_line(&errors), "one failed connect marks it");
    for _ in 0..16 {
        open.push(tls_roundtrip(h.https, "a.example").await);
        recv(&mut acme).await;
    }
    assert!(h.has_line(&errors), "the marked endpoint was skipped");

    // Only marked endpoints left: they are still tried.
    h.publish_tls(&[("a.example", "acme", dead)]).await;
    let mut c = TcpStream::connect(h.https).await.unwrap();
    c.write_all(&client_hello("a.example")).await.unwrap();
    assert_eq!(read_all(&mut c).await, ALERT_INTERNAL_ERROR);
    h.metric_eventually(&errors.replace("} 1", "} 2")).await;

    // An endpoint that leaves the snapshot leaves the gauge.
    h.publish_tls(&[("a.example", "acme", acme.addr)]).await;
    drop(open);
    drop(c);
    h.metric_eventually(&format!("{failing} 0")).await;
    h.stop().await;
}

#[tokio::test]
async fn tenant_without_reachable_router_gets_internal_error() {
    let dead = closed_port().await;
    let mut h = start(EdgeLimits::default()).await;
    h.publish_tls(&[("a.example", "acme", dead)]).await;
    let mut c = TcpStream::connect(h.https).await.unwrap();
    c.write_all(&client_hello("a.example")).await.unwrap();
    assert_eq!(read_all(&mut c).await, ALERT_INTERNAL_ERROR);
    h.metric_eventually(
        r#"bulkhead_edge_refused_total{listener="https",tenant="acme",reason="connect_failed"} 1"#,
    )
    .await;
    h.stop().await;
}

#[tokio::test]
async fn tenant_connection_limit_refuses_only_that_tenant() {
    let mut acme = fake_router().await;
    let mut globex = fake_router().await;
    let limits = EdgeLimits {
        max_connections_per_tenant: 1,
        ..EdgeLimits::default()
    };
    let mut h = start(limits).await;
    h.publish_tls(&[
        ("a.example", "acme", acme.addr),
        ("g.example", "globex", globex.addr),
    ])
    .await;
    let held = tls_roundtrip(h.https, "a.example").await;
    recv(&mut acme).await;
    let mut c = TcpStream::connect(h.https).await.unwrap();
    c.write_all(&client_hello("a.example")).await.unwrap();
    assert_eq!(read_all(&mut c).await, ALERT_INTERNAL_ERROR);
    // Another tenant is not affected.
    let other = tls_roundtrip(h.https, "g.example").await;
    recv(&mut globex).await;
    drop((held, other));
    h.metric_eventually(
        r#"bulkhead_edge_refused_total{listener="https",tenant="acme",reason="tenant_limit"} 1"#,
    )
    .await;
    h.stop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_open_connections_finish() {
    let mut acme = fake_router().await;
    let mut h = start(EdgeLimits::default()).await;
    h.publish_tls(&[("a.example", "acme", acme.addr)]).await;
    let mut c = tls_roundtrip(h.https, "a.example").await;
    recv(&mut acme).await;
    h.shutdown.cancel();
    let deadline = tokio::time::Instant::now() + WAIT;
    while h.ready.is_ready() {
        assert!(tokio::time::Instant::now() < deadline, "ready turns false");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The draining edge still carries the open connection.
    c.write_all(b"drain").await.unwrap();
    let mut back = [0u8; 5];
    c.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"drain");
    assert!(!h.task.is_finished(), "run waits for open connections");
    c.shutdown().await.unwrap();
    assert!(read_all(&mut c).await.is_empty());
    tokio::time::timeout(WAIT, h.task)
        .await
        .expect("edge stops once connections are done")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(h.https).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn drain_timeout_cuts_connections_that_stay_open() {
    let mut acme = fake_router().await;
    let limits = EdgeLimits {
        drain_timeout: Duration::from_millis(100),
        ..EdgeLimits::default()
    };
    let mut h = start(limits).await;
    h.publish_tls(&[("a.example", "acme", acme.addr)]).await;
    let mut c = tls_roundtrip(h.https, "a.example").await;
    recv(&mut acme).await;
    h.shutdown.cancel();
    tokio::time::timeout(WAIT, &mut h.task)
        .await
        .expect("edge stops after the drain timeout")
        .unwrap()
        .unwrap();
    let mut rest = Vec::new();
    let end = tokio::time::timeout(WAIT, c.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(
        end.is_err() || rest.is_empty(),
        "the client sees its connection end"
    );
    // Cut by the hard stop mid-relay: counted once, as drained.
    assert!(
        h.has_line(
            r#"bulkhead_edge_closed_total{listener="https",tenant="acme",outcome="drained"} 1"#
        ),
        "{}",
        h.metrics()
    );
}

#[tokio::test]
async fn bytes_are_counted_per_tenant_and_direction() {
    let mut acme = fake_router().await;
    let mut h = start(EdgeLimits::default()).await;
    h.publish_tls(&[("a.example", "acme", acme.addr)]).await;
    let hello_len = client_hello("a.example").len();
    let mut c = tls_roundtrip(h.https, "a.example").await;
    recv(&mut acme).await;
    c.write_all(&[7u8; 1000]).await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(read_all(&mut c).await.len(), 1000);
    let total = hello_len + 1000;
    h.metric_eventually(&format!(
        r#"bulkhead_edge_bytes_total{{listener="https",tenant="acme",direction="client_to_router"}} {total}"#
    ))
    .await;
    h.metric_eventually(&format!(
        r#"bulkhead_edge_bytes_total{{listener="https",tenant="acme",direction="router_to_client"}} {total}"#
    ))
    .await;
    h.metric_eventually(
        r#"bulkhead_edge_closed_total{listener="https",tenant="acme",outcome="ok"} 1"#,
    )
    .await;
    h.stop().await;
}

// ---- PROXY headers from an upstream load balancer ---------------------------------------------

/// Reads until the edge closes the connection (FIN or reset) and returns what came before.
async fn closed_without_answer(c: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    match tokio::time::timeout(WAIT, c.read_to_end(&mut out)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Err(_) => panic!("the edge kept the connection open"),
    }
    out
}

fn trusting(cidrs: &[&str]) -> EdgeConfig {
    EdgeConfig {
        accept_proxy_from: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        ..EdgeConfig::default()
    }
}

#[tokio::test]
async fn a_trusted_load_balancer_declares_the_client_in_v2_or_v1() {
    let mut acme = fake_router().await;
    let mut h = start_with(trusting(&["10.0.0.0/8", "127.0.0.0/8"])).await;
    h.publish(
        &[("a.example", "acme")],
        &[("acme", vec![acme.addr], vec![acme.addr])],
    )
    .await
    .unwrap();
    let declared = ProxyAddresses {
        source: "203.0.113.7:40000".parse().unwrap(),
        destination: "198.51.100.1:443".parse().unwrap(),
    };

    // v2 on the TLS listener: the header is consumed, the hello replayed, the client declared.
    let hello = client_hello("a.example");
    let mut c = TcpStream::connect(h.https).await.unwrap();
    let mut first = encode_v2(&declared);
    first.extend_from_slice(&hello);
    c.write_all(&first).await.unwrap();
    let mut back = vec![0u8; hello.len()];
    tokio::time::timeout(WAIT, c.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        back, hello,
        "the router gets the hello without the LB's header"
    );
    assert_eq!(recv(&mut acme).await, ProxyHeader::Proxied(declared));
    drop(c);

    // v1 on the HTTP listener, trickled in two pieces across the header boundary.
    let line = b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 443\r\n";
    let request = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n";
    let mut c = TcpStream::connect(h.http).await.unwrap();
    c.write_all(&line[..20]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.write_all(&[&line[20..], &request[..]].concat())
        .await
        .unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(read_all(&mut c).await, request);
    assert_eq!(recv(&mut acme).await, ProxyHeader::Proxied(declared));
    h.stop().await;
}

#[tokio::test]
async fn a_trusted_source_without_a_header_is_refused() {
    let mut acme = fake_router().await;
    let mut h = start_with(trusting(&["127.0.0.1"])).await;
    h.publish(
        &[("a.example", "acme")],
        &[("acme", vec![acme.addr], vec![acme.addr])],
    )
    .await
    .unwrap();
    let mut c = TcpStream::connect(h.https).await.unwrap();
    c.write_all(&client_hello("a.example")).await.unwrap();
    assert!(closed_without_answer(&mut c).await.is_empty());
    h.metric_eventually(
        r#"bulkhead_edge_refused_total{listener="https",tenant="",reason="proxy_header_missing"} 1"#,
    )
    .await;
    assert!(acme.seen.try_recv().is_err(), "nothing was forwarded");
    h.stop().await;
}

#[tokio::test]
async fn a_header_from_an_untrusted_source_is_refused() {
    for config in [trusting(&["10.0.0.0/8", "::1/128"]), EdgeConfig::default()] {
        let mut acme = fake_router().await;
        let mut h = start_with(config).await;
        h.publish(
            &[("a.example", "acme")],
            &[("acme", vec![acme.addr], vec![acme.addr])],
        )
        .await
        .unwrap();
        let spoofed = ProxyAddresses {
            source: "10.9.9.9:1234".parse().unwrap(),
            destination: "198.51.100.1:443".parse().unwrap(),
        };
        let mut first = encode_v2(&spoofed);
        first.extend_from_slice(&client_hello("a.example"));
        let mut c = TcpStream::connect(h.https).await.unwrap();
        c.write_all(&first).await.unwrap();
        assert!(closed_without_answer(&mut c).await.is_empty());

        let mut c = TcpStream::connect(h.http).await.unwrap();
        c.write_all(b"PROXY TCP4 10.9.9.9 198.51.100.1 1234 80\r\nGET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
            .await
            .unwrap();
        closed_without_answer(&mut c).await;
        for listener in ["https", "http"] {
            h.metric_eventually(&format!(
                r#"bulkhead_edge_refused_total{{listener="{listener}",tenant="",reason="untrusted_proxy_header"}} 1"#
            ))
            .await;
        }
        assert!(acme.seen.try_recv().is_err(), "nothing was forwarded");
        h.stop().await;
    }
}

// ---- per-source limits ------------------------------------------------------------------------

/// `limits` with a sniff deadline far beyond the test's waits, so only per-source caps refuse.
fn source_limits(limits: EdgeLimits) -> EdgeLimits {
    EdgeLimits {
        sniff_timeout: Duration::from_secs(120),
        ..limits
    }
}

/// An edge configuration with `limits`.
fn limited(limits: EdgeLimits) -> EdgeConfig {
    EdgeConfig {
        limits,
        ..EdgeConfig::default()
    }
}

/// An edge with `config` (sniff deadline raised) serving `a.example` for tenant acme's one fake router.
async fn start_acme(config: EdgeConfig) -> (FakeRouter, Harness) {
    let acme = fake_router().await;
    let mut h = start_with(EdgeConfig {
        limits: source_limits(config.limits.clone()),
        ..config
    })
    .await;
    h.publish_tls(&[("a.example", "acme", acme.addr)]).await;
    (acme, h)
}

#[tokio::test]
async fn one_source_holding_silent_connections_leaves_the_pool_to_others() {
    let (mut acme, h) = start_acme(limited(EdgeLimits {
        max_sniffing: 8,
        max_sniffing_per_source: 4,
        ..EdgeLimits::default()
    }))
    .await;
    // The flooding source opens twice the global pool of silent connections.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(connect_from("127.0.0.1", h.https).await);
    }
    h.metric_eventually("bulkhead_edge_connections_sniffing 4")
        .await;
    // Its connections beyond its cap are closed at once, without an answer.
    for c in &mut silent[4..] {
        assert!(closed_without_answer(c).await.is_empty());
    }
    h.metric_eventually(
        r#"bulkhead_edge_refused_total{listener="https",tenant="",reason="source_sniffing_limit"} 4"#,
    )
    .await;
    // Another source is still served.
    let c = tls_roundtrip_from("127.0.0.2", h.https, "a.example").await;
    let ProxyHeader::Proxied(seen) = recv(&mut acme).await else {
        panic!("a proxied header");
    };
    assert_eq!(seen.source.ip().to_string(), "127.0.0.2");
    drop(c);
    // The flooding source gets its slots back as its connections end.
    drop(silent);
    tls_roundtrip_from("127.0.0.1", h.https, "a.example").await;
    h.stop().await;
}

#[tokio::test]
async fn a_source_opening_connections_beyond_its_burst_is_refused() {
    let (mut acme, h) = start_acme(limited(EdgeLimits {
        source_connect_rate: 1,
        source_connect_burst: 3,
        ..EdgeLimits::default()
    }))
    .await;
    // The burst, spent at once (one token a second comes back: the next one is refused).
    let mut burst = Vec::new();
    for _ in 0..3 {
        let mut c = connect_from("127.0.0.1", h.https).await;
        c.write_all(&client_hello("a.example")).await.unwrap();
        burst.push(c);
    }
    let mut refused = connect_from("127.0.0.1", h.https).await;
    let _ = refused.write_all(&client_hello("a.example")).await;
    assert!(closed_without_answer(&mut refused).await.is_empty());
    for _ in 0..3 {
        recv(&mut acme).await;
    }
    h.metric_eventually(
        r#"bulkhead_edge_refused_total{listener="https",tenant="",reason="source_rate_limit"} 1"#,
    )
    .await;
    // Another source has its own bucket.
    let other = tls_roundtrip_from("127.0.0.2", h.https, "a.example").await;
    recv(&mut acme).await;
    drop((burst, other));
    h.stop().await;
}

/// A hello for `a.example` from `source` gets the `internal_error` alert, the first refusal of
/// tenant acme for `reason`.
async fn acme_refused_once(h: &Harness, source: &str, reason: &str) {
    let mut c = connect_from(source, h.https).await;
    c.write_all(&client_hello("a.example")).await.unwrap();
    assert_eq!(read_all(&mut c).await, ALERT_INTERNAL_ERROR);
    h.metric_eventually(&format!(
        r#"bulkhead_edge_refused_total{{listener="https",tenant="acme",reason="{reason}"}} 1"#
    ))
    .await;
}

#[tokio::test]
async fn one_source_cannot_fill_a_tenants_quota() {
    let mut acme = fake_router().await;
    let mut globex = fake_router().await;
    let mut h = start(source_limits(EdgeLimits {
        max_connections_per_tenant: 3,
        max_connections_per_source_per_tenant: 2,
        ..EdgeLimits::default()
    }))
    .await;
    h.publish_tls(&[
        ("a.example", "acme", acme.addr),
        ("g.example", "globex", globex.addr),
    ])
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tls_roundtrip_from("127.0.0.1", h.https, "a.example").await);
        recv(&mut acme).await;
    }
    // The source's share of acme is full: refused like a full tenant.
    acme_refused_once(&h, "127.0.0.1", "source_tenant_limit").await;
    // Another source still reaches acme, and the same source still reaches another tenant.
    held.push(tls_roundtrip_from("127.0.0.2", h.https, "a.example").await);
    recv(&mut acme).await;
    held.push(tls_roundtrip_from("127.0.0.1", h.https, "g.example").await);
    recv(&mut globex).await;
    // Now acme's quota is full: a third source is refused, globex is still served.
    acme_refused_once(&h, "127.0.0.3", "tenant_limit").await;
    held.push(tls_roundtrip_from("127.0.0.3", h.https, "g.example").await);
    recv(&mut globex).await;
    drop(held);
    h.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_balancer_the_declared_client_is_the_source() {
    let (mut acme, h) = start_acme(EdgeConfig {
        limits: EdgeLimits {
            max_sniffing_per_source: 2,
            ..EdgeLimits::default()
        },
        ..trusting(&["127.0.0.1"])
    })
    .await;
    let declare = |client: &str| {
        encode_v2(&ProxyAddresses {
            source: client.parse().unwrap(),
            destination: "198.51.100.1:443".parse().unwrap(),
        })
    };
    // The balancer itself is exempt: more silent connections than the cap, all kept.
    let mut balancer = Vec::new();
    for _ in 0..3 {
        balancer.push(connect_from("127.0.0.1", h.https).await);
    }
    // One declared client holds its cap of silent connections; its next one is closed.
    let mut flood = Vec::new();
    for _ in 0..3 {
        let mut c = connect_from("127.0.0.1", h.https).await;
        c.write_all(&declare("203.0.113.7:40000")).await.unwrap();
        flood.push(c);
    }
    h.metric_eventually(
        r#"bulkhead_edge_refused_total{listener="https",tenant="",reason="source_sniffing_limit"} 1"#,
    )
    .await;
    // Another client through the same balancer is served.
    let mut c = connect_from("127.0.0.1", h.https).await;
    let hello = client_hello("a.example");
    c.write_all(&[declare("203.0.113.8:40000"), hello.clone()].concat())
        .await
        .unwrap();
    let mut back = vec![0u8; hello.len()];
    tokio::time::timeout(WAIT, c.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    let ProxyHeader::Proxied(seen) = recv(&mut acme).await else {
        panic!("a proxied header");
    };
    assert_eq!(seen.source.to_string(), "203.0.113.8:40000");
    assert!(
        h.has_line("bulkhead_edge_connections_sniffing 5"),
        "3 balancer connections without a header, 2 of the flooding client:\n{}",
        h.metrics()
    );
    drop((balancer, flood, c));
    h.stop().await;
}
