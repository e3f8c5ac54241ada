//! Slow clients through `bulkhead standalone`: connections that send nothing, or only part of a
//! ClientHello or request head, hold no one up: normal clients are served meanwhile, and the
//! stalled ones are closed by the edge's sniff deadline (the default, 5 s).

mod common;

use common::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Stalled connections of each kind.
const STALLED_PER_KIND: usize = 4;
/// Longest wait for a stalled connection to be closed: the default sniff deadline (5 s) with a
/// wide margin; the test fails, rather than hangs, when the deadline is not enforced.
const CLOSE_WAIT: Duration = Duration::from_secs(15);
/// A short look at a stalled connection to see it is still open.
const PEEK: Duration = Duration::from_millis(20);

#[tokio::test]
async fn stalled_handshakes_are_closed_while_normal_clients_are_served() {
    let ca = pki::DemoCa::new("acme CA").unwrap();
    let leaf = ca.issue(&["*.acme.test"]).unwrap();
    let web = backend("acme-web").await;
    let bh = Standalone::start(&[
        ("tenant.yaml", tenant_yaml("acme", &["*.acme.test"])),
        (
            "gw.yaml",
            gateway_yaml("acme", "*.acme.test", Some("acme-tls"))
                + "---\n"
                + &pki::tls_secret_yaml("acme", "acme-tls", &leaf),
        ),
        (
            "web.yaml",
            route_yaml("acme", "web", &["www.acme.test"], "/", "web")
                + "---\n"
                + &service_yaml("acme", "web", web),
        ),
    ])
    .await;
    let served = eventually(SETTLE, || async {
        let (status, _, _) = https_get(bh.https, "www.acme.test", "/", ca.cert_pem())
            .await
            .ok()?;
        (status == 200).then_some(())
    })
    .await;
    assert!(served.is_some(), "never served\n{}", bh.log());

    // Stall: silent TLS clients, TLS clients that sent half a hello, HTTP clients that sent half
    // a request head.
    let (_, hello) = first_flight(tls_client_config(ca.cert_pem(), &[]), "www.acme.test");
    let mut silent = Vec::new();
    let mut half_hello = Vec::new();
    let mut half_head = Vec::new();
    for _ in 0..STALLED_PER_KIND {
        silent.push(TcpStream::connect(bh.https).await.unwrap());
        let mut s = TcpStream::connect(bh.https).await.unwrap();
        s.write_all(&hello[..hello.len() / 2]).await.unwrap();
        half_hello.push(s);
        let mut s = TcpStream::connect(bh.http).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: www.acme.test\r\nUser-Ag")
            .await
            .unwrap();
        half_head.push(s);
    }

    // Normal clients are served while the stalled ones wait.
    for _ in 0..3 {
        let (status, _, body) = https_get(bh.https, "www.acme.test", "/", ca.cert_pem())
            .await
            .unwrap_or_else(|e| panic!("HTTPS while others stall: {e}\n{}", bh.log()));
        assert_eq!(status, 200);
        assert_eq!(answer_field(&body, "backend").as_deref(), Some("acme-web"));
        let (status, _, body) = http_get(bh.http, "www.acme.test", "/").await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(answer_field(&body, "backend").as_deref(), Some("acme-web"));
    }
    // ... and the stalled ones were still open then: only the deadline closes them.
    for s in silent
        .iter_mut()
        .chain(&mut half_hello)
        .chain(&mut half_head)
    {
        let ending = read_to_close(s, PEEK).await;
        assert_eq!(
            ending,
            Ending::Open(Vec::new()),
            "closed before the deadline"
        );
    }

    // The deadline closes every stalled connection: TLS ones without a word (a timeout has no
    // alert), HTTP ones with a 408.
    for s in silent.iter_mut().chain(&mut half_hello) {
        let ending = read_to_close(s, CLOSE_WAIT).await;
        assert!(
            matches!(ending, Ending::Closed(ref b) | Ending::Reset(ref b) if b.is_empty()),
            "stalled TLS client not closed: {ending:?}"
        );
    }
    for s in &mut half_head {
        let ending = read_to_close(s, CLOSE_WAIT).await;
        let text = String::from_utf8_lossy(ending.bytes()).into_owned();
        assert!(
            matches!(ending, Ending::Closed(_) | Ending::Reset(_)),
            "stalled HTTP client not closed: {text}"
        );
        assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
        assert!(text.contains("Connection: close"), "{text}");
    }

    let metrics = bh.metrics().await;
    let stalled_tls = 2 * STALLED_PER_KIND;
    assert!(
        metrics.contains(&format!(
            "bulkhead_edge_sniff_total{{listener=\"https\",outcome=\"timeout\"}} {stalled_tls}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "bulkhead_edge_sniff_total{{listener=\"http\",outcome=\"timeout\"}} {STALLED_PER_KIND}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("bulkhead_edge_connections_sniffing 0"),
        "{metrics}"
    );
    // And service goes on.
    let (status, _, _) = https_get(bh.https, "www.acme.test", "/", ca.cert_pem())
        .await
        .unwrap();
    assert_eq!(status, 200);
}
