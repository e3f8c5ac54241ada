//! Snapshot swaps: an open connection's next request is routed by the new configuration (a
//! request in flight finishes on the one it started with), what a connection's handshake fixed is
//! not bypassed, invalid snapshots are refused with a reason while the previous configuration
//! keeps serving, shutdown drains.

use crate::support::*;
use bulkhead_snapshot::{ClientValidation, ClientValidationMode, PathMatch};
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
    let mut old_h2 = h2_tls(&pki, &router, "a.acme.test").await;
    assert_eq!(old_h2.get("a.acme.test", "/").await.backend(), "v1");

    router
        .publish(web_snapshot(&pki, 2, "acme/v2:80", v2.addr))
        .await
        .expect("v2 accepted");
    assert_eq!(
        old.get("a.acme.test", "/").await.backend(),
        "v2",
        "an open HTTP/1.1 connection's next request takes the new configuration"
    );
    assert_eq!(
        old_h2.get("a.acme.test", "/").await.backend(),
        "v2",
        "an open HTTP/2 connection's next stream takes the new configuration"
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

    let served = r#"bulkhead_router_requests_total{tenant="acme",route="HTTPRoute acme/web rule 0",backend="acme/v2:80",code="200"} 5"#;
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

/// A route deleted is gone for connections already open, not only for new ones (a client that
/// keeps its connection for hours must not keep reaching it), and a route added is reached on
/// them; a request in flight during the change finishes on the route it started with.
#[tokio::test]
async fn open_connections_follow_route_changes_between_requests() {
    let pki = Pki::new();
    let v1 = EchoBackend::start("v1").await;
    let v2 = EchoBackend::start("v2").await;
    let mut router = TestRouter::start(web_snapshot(&pki, 1, "acme/v1:80", v1.addr)).await;
    let mut h1 = h1_tls(&pki, &router, "a.acme.test").await;
    let mut h2 = h2_tls(&pki, &router, "a.acme.test").await;
    assert_eq!(h1.get("a.acme.test", "/").await.backend(), "v1");
    assert_eq!(h2.get("a.acme.test", "/").await.backend(), "v1");

    // In flight on a third connection when v2 lands.
    let mut slow = h2_tls(&pki, &router, "a.acme.test").await;
    let req = slow
        .request("GET", "a.acme.test", "/delay")
        .body(http_body_util::Full::default())
        .unwrap();
    let in_flight = tokio::spawn(async move {
        let reply = read_reply(slow.send(req).await.unwrap()).await;
        (reply, slow)
    });
    assert!(eventually(|| v1.seen.lock().unwrap().contains(&"GET /delay".to_owned())).await);
    // v2: "/" goes nowhere any more; "/new" goes to v2.
    let mut v2_snapshot = web_snapshot(&pki, 2, "acme/v2:80", v2.addr);
    v2_snapshot.https.virtual_hosts[0].routes[0].matches.path = prefix("/new");
    router.publish(v2_snapshot).await.expect("v2 accepted");
    let (reply, mut slow) = in_flight.await.unwrap();
    assert_eq!(
        (reply.status, reply.backend().as_str()),
        (StatusCode::OK, "v1"),
        "the request in flight finishes on its route"
    );

    for (name, client) in [
        ("HTTP/1.1", &mut h1),
        ("HTTP/2", &mut h2),
        ("HTTP/2", &mut slow),
    ] {
        assert_eq!(
            client.get("a.acme.test", "/").await.status,
            StatusCode::NOT_FOUND,
            "{name}: the deleted route is not reached on an open connection"
        );
        let added = client.get("a.acme.test", "/new/page").await;
        assert_eq!(
            (added.status, added.backend().as_str()),
            (StatusCode::OK, "v2"),
            "{name}: the added route is reached on an open connection"
        );
    }
    assert_eq!(
        v1.seen.lock().unwrap().len(),
        3,
        "v1 got nothing after the change"
    );
}

/// A listener whose client certificate validation changes under open connections: a connection
/// handshaken under other validation than the listener's now is not served (421, counted as the
/// configuration's doing), whichever way it changed; the same validation compiled again (a route
/// edit) is no change; new connections are validated the new way.
#[tokio::test]
async fn a_connection_opened_under_other_client_validation_is_not_served_past_it() {
    let pki = Pki::new();
    let v1 = EchoBackend::start("v1").await;
    let mut router = TestRouter::start(web_snapshot(&pki, 1, "acme/v1:80", v1.addr)).await;
    let mut h1 = h1_tls(&pki, &router, "a.acme.test").await;
    let mut h2 = h2_tls(&pki, &router, "a.acme.test").await;
    assert_eq!(h1.get("a.acme.test", "/").await.status, StatusCode::OK);
    assert_eq!(h2.get("a.acme.test", "/").await.status, StatusCode::OK);
    let refused = |r: &TestRouter| {
        r.metric(
            "bulkhead_router_host_refusals_total",
            &[("reason", "validation_changed")],
        )
    };

    // v2: the listener asks for a client certificate.
    let mut validated = web_snapshot(&pki, 2, "acme/v1:80", v1.addr);
    validated.client_validation.insert(
        listener_ref(443).id(),
        ClientValidation {
            ca_pem: pki.ca_pem().to_owned(),
            mode: ClientValidationMode::AllowValidOnly,
        },
    );
    router
        .publish(validated.clone())
        .await
        .expect("v2 accepted");
    let seen = v1.seen.lock().unwrap().len();
    for (name, client) in [("HTTP/1.1", &mut h1), ("HTTP/2", &mut h2)] {
        assert_eq!(
            client.get("a.acme.test", "/").await.status,
            StatusCode::MISDIRECTED_REQUEST,
            "{name}: a connection without a client certificate is not served past the new validation"
        );
    }
    assert_eq!(
        v1.seen.lock().unwrap().len(),
        seen,
        "nothing reached the backend"
    );
    assert_eq!(refused(&router), Some(2.0));
    let anonymous = match tls_connect(&pki, router.https, "a.acme.test", &[b"http/1.1"]).await {
        Err(_) => None,
        Ok(tls) => Some(Client::h1(tls).await),
    };
    if let Some(mut c) = anonymous {
        let req = c
            .request("GET", "a.acme.test", "/")
            .body(http_body_util::Full::default())
            .unwrap();
        assert!(
            c.send(req).await.is_err(),
            "a new connection must present a certificate"
        );
    }
    let connector = tokio_rustls::TlsConnector::from(pki.client_config_presenting(&[b"h2"]));
    let tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("a.acme.test").unwrap(),
            proxied_tcp(router.https).await,
        )
        .await
        .expect("handshake with a client certificate");
    let mut mtls = Client::h2(tls).await;
    assert_eq!(mtls.get("a.acme.test", "/").await.status, StatusCode::OK);

    // v3: a route edit; the same validation, compiled again, is not a change.
    validated.version = 3;
    validated.https.virtual_hosts[0].routes[0].matches.path = prefix("/x");
    router.publish(validated).await.expect("v3 accepted");
    assert_eq!(mtls.get("a.acme.test", "/x").await.status, StatusCode::OK);
    assert_eq!(refused(&router), Some(2.0));

    // v4: validation removed. The connection handshaken under it is sent to a new one; the ones
    // handshaken without it match the listener again.
    router
        .publish(web_snapshot(&pki, 4, "acme/v1:80", v1.addr))
        .await
        .expect("v4 accepted");
    assert_eq!(
        mtls.get("a.acme.test", "/").await.status,
        StatusCode::MISDIRECTED_REQUEST
    );
    assert_eq!(refused(&router), Some(3.0));
    assert_eq!(h1.get("a.acme.test", "/").await.status, StatusCode::OK);
    let mut after = h2_tls(&pki, &router, "a.acme.test").await;
    assert_eq!(after.get("a.acme.test", "/").await.status, StatusCode::OK);
}

/// A host moved to another listener while a connection to it is open: the connection's SNI chose
/// the old listener, so its next request for that host is misdirected (GEP-3567), as it would be
/// on a new connection made with that SNI; a new connection gets the new listener.
#[tokio::test]
async fn a_host_moved_to_another_listener_is_misdirected_on_open_connections() {
    let pki = Pki::new();
    let v1 = EchoBackend::start("v1").await;
    let mut router = TestRouter::start(web_snapshot(&pki, 1, "acme/v1:80", v1.addr)).await;
    let mut h2 = h2_tls(&pki, &router, "a.acme.test").await;
    assert_eq!(h2.get("a.acme.test", "/").await.status, StatusCode::OK);
    // v2: `a.acme.test` is no longer a listener of its own; the wildcard listener serves it.
    let mut moved = web_snapshot(&pki, 2, "acme/v1:80", v1.addr);
    moved
        .https
        .terminate
        .retain(|t| t.hostname != "a.acme.test");
    router.publish(moved).await.expect("v2 accepted");
    assert_eq!(
        h2.get("a.acme.test", "/").await.status,
        StatusCode::MISDIRECTED_REQUEST
    );
    let mut fresh = h2_tls(&pki, &router, "a.acme.test").await;
    assert_eq!(fresh.get("a.acme.test", "/").await.status, StatusCode::OK);
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
