//! Snapshot swaps: open connections keep their configuration, invalid snapshots are refused with a
//! reason while the previous configuration keeps serving, shutdown drains.

use crate::support::*;
use bulkhead_snapshot::PathMatch;
use http::StatusCode;
use std::time::Duration;

#[tokio::test]
async fn swap_keeps_open_connections_and_invalid_snapshots_are_refused() {
    let pki = Pki::new();
    let v1 = EchoBackend::start("v1").await;
    let v2 = EchoBackend::start("v2").await;
    let mut router = TestRouter::start(web_snapshot(&pki, 1, "acme/v1:80", v1.addr)).await;
    assert!(router.ready.is_ready());

    let mut old = h1_tls(&pki, &router, "a.acme.test").await;
    assert_eq!(old.get("a.acme.test", "/").await.backend(), "v1");

    router
        .publish(web_snapshot(&pki, 2, "acme/v2:80", v2.addr))
        .await
        .expect("v2 accepted");
    assert_eq!(
        old.get("a.acme.test", "/").await.backend(),
        "v1",
        "open connection keeps its configuration"
    );
    let mut fresh = h2_tls(&pki, &router, "a.acme.test").await;
    assert_eq!(
        fresh.get("a.acme.test", "/").await.backend(),
        "v2",
        "new connections get the new one"
    );

    let mut bad_regex = web_snapshot(&pki, 3, "acme/v1:80", v1.addr);
    bad_regex.https.virtual_hosts[0].routes[0].matches.path =
        Some(PathMatch::RegularExpression("(unclosed".into()));
    let err = router
        .publish(bad_regex)
        .await
        .expect_err("bad regex refused");
    assert!(
        err.contains("HTTPRoute acme/web rule 0") && err.contains("match.path"),
        "{err}"
    );

    let mut bad_pem = web_snapshot(&pki, 4, "acme/v1:80", v1.addr);
    bad_pem.certificates.get_mut("acme/exact").unwrap().cert_pem =
        "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n".into();
    let err = router.publish(bad_pem).await.expect_err("bad PEM refused");
    assert!(err.contains("acme/exact"), "{err}");

    let mut dangling = web_snapshot(&pki, 5, "acme/v1:80", v1.addr);
    dangling.https.virtual_hosts[0].routes[0].backends = vec![weighted(Some("acme/missing:80"), 1)];
    let err = router
        .publish(dangling)
        .await
        .expect_err("dangling backend refused");
    assert!(err.contains("acme/missing:80"), "{err}");

    let mut other_tenant = web_snapshot(&pki, 6, "acme/v1:80", v1.addr);
    other_tenant.tenant = "globex".into();
    assert!(router.publish(other_tenant).await.is_err());

    assert!(
        router.ready.is_ready(),
        "still serving the last good snapshot"
    );
    let mut after = h1_tls(&pki, &router, "a.acme.test").await;
    assert_eq!(
        after.get("a.acme.test", "/").await.backend(),
        "v2",
        "v2 still served after refusals"
    );
    assert_eq!(fresh.get("a.acme.test", "/").await.status, StatusCode::OK);

    let served = r#"bulkhead_router_requests_total{tenant="acme",route="HTTPRoute acme/web rule 0",backend="acme/v2:80",code="200"} 3"#;
    assert!(
        eventually(|| router.metrics_text().contains(served)).await,
        "{}",
        router.metrics_text()
    );
    let text = router.metrics_text();
    assert!(
        text.contains(r#"bulkhead_router_snapshots_total{tenant="acme",outcome="rejected"} 4"#),
        "{text}"
    );
    assert!(
        text.contains(r#"bulkhead_router_snapshot_version{tenant="acme"} 2"#),
        "{text}"
    );
}

/// A connection takes the configuration current when its first bytes arrive, not the one current
/// when it was accepted: a client still connecting when a change lands gets the change.
#[tokio::test]
async fn a_connection_accepted_before_a_change_but_greeting_after_it_gets_the_change() {
    let pki = Pki::new();
    let v1 = EchoBackend::start("v1").await;
    let v2 = EchoBackend::start("v2").await;
    let mut router = TestRouter::start(web_snapshot(&pki, 1, "acme/v1:80", v1.addr)).await;

    // Accepted and admitted (PROXY header read), ClientHello not sent yet.
    let tcp = proxied_tcp(router.https).await;
    let open = || router.metric("bulkhead_router_open_connections", &[("listener", "https")]);
    assert!(
        eventually(|| open() == Some(1.0)).await,
        "the router holds the connection before the change"
    );
    router
        .publish(web_snapshot(&pki, 2, "acme/v2:80", v2.addr))
        .await
        .expect("v2 accepted");

    let connector = tokio_rustls::TlsConnector::from(pki.client_config(&[b"http/1.1"]));
    let tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("a.acme.test").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let mut client = Client::h1(tls).await;
    assert_eq!(client.get("a.acme.test", "/").await.backend(), "v2");

    // The plain HTTP listener takes it once the PROXY header is read. v3 adds the host on port 80.
    let mut tcp = tokio::net::TcpStream::connect(router.http).await.unwrap();
    // Ordering, not timing: the accept loop takes the connection well within this.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut v3 = web_snapshot(&pki, 3, "acme/v1:80", v1.addr);
    v3.http.virtual_hosts = vec![vhost(
        "a.acme.test",
        80,
        vec![route(
            "web",
            prefix("/"),
            vec![weighted(Some("acme/v1:80"), 1)],
        )],
    )];
    router.publish(v3).await.expect("v3 accepted");
    tokio::io::AsyncWriteExt::write_all(&mut tcp, &proxy_header())
        .await
        .unwrap();
    let mut client = Client::h1(tcp).await;
    assert_eq!(client.get("a.acme.test", "/").await.backend(), "v1");
}

#[tokio::test]
async fn shutdown_stops_accepting_and_marks_not_ready() {
    let pki = Pki::new();
    let v1 = EchoBackend::start("v1").await;
    let mut router = TestRouter::start(web_snapshot(&pki, 1, "acme/v1:80", v1.addr)).await;
    let mut idle = h1_tls(&pki, &router, "a.acme.test").await;
    assert_eq!(idle.get("a.acme.test", "/").await.status, StatusCode::OK);
    router.shutdown.cancel();
    let task = router.task.take().unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("router stops")
        .unwrap();
    assert!(result.is_ok());
    assert!(!router.ready.is_ready());
    assert!(
        tokio::net::TcpStream::connect(router.https).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn in_flight_request_finishes_during_drain() {
    let pki = Pki::new();
    let v1 = EchoBackend::start("v1").await;
    let mut router = TestRouter::start(web_snapshot(&pki, 1, "acme/v1:80", v1.addr)).await;
    let mut c = h2_tls(&pki, &router, "a.acme.test").await;
    let req = c
        .request("GET", "a.acme.test", "/delay")
        .body(http_body_util::Full::default())
        .unwrap();
    let in_flight = tokio::spawn(async move { read_reply(c.send(req).await.unwrap()).await });
    assert!(eventually(|| v1.seen.lock().unwrap().contains(&"GET /delay".to_owned())).await);
    router.shutdown.cancel();
    let reply = in_flight.await.unwrap();
    assert_eq!(
        (reply.status, reply.backend().as_str()),
        (StatusCode::OK, "v1")
    );
    let task = router.task.take().unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .is_ok());
}
