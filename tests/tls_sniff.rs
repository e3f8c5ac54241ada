//! ClientHello sniffing through `bulkhead standalone`: a hello trickled one byte per TCP segment
//! and a hello split over several TLS records both reach the right tenant and the handshake
//! completes; an unknown or missing SNI gets an `unrecognized_name` alert, a hello that does not
//! parse a `decode_error` alert, and a stream that is not TLS at all is closed.

mod common;

use common::*;
use std::io::Write;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Most time spent trickling a hello one byte at a time.
const TRICKLE_BUDGET: Duration = Duration::from_millis(400);
/// How many records the re-framed hello is split into.
const RECORDS: usize = 3;

/// Runs a blocking HTTPS GET whose ClientHello is delivered by `send_hello(socket, hello)`.
async fn get_with_hello(
    t: &TwoTenants,
    host: &'static str,
    ca: &str,
    send_hello: fn(&mut std::net::TcpStream, &[u8]) -> std::io::Result<()>,
) -> String {
    let addr = t.bh.https;
    let config = tls_client_config(ca, &[b"http/1.1"]);
    let response = tokio::task::spawn_blocking(move || {
        let (conn, hello) = first_flight(config, host);
        https_get_with_hello(addr, conn, |s| send_hello(s, &hello), host, "/sniffed")
    })
    .await
    .expect("client thread");
    response.unwrap_or_else(|e| panic!("{host}: {e}\n{}", t.bh.log()))
}

fn trickle(sock: &mut std::net::TcpStream, hello: &[u8]) -> std::io::Result<()> {
    write_bytewise(sock, hello, TRICKLE_BUDGET)
}

fn in_records(sock: &mut std::net::TcpStream, hello: &[u8]) -> std::io::Result<()> {
    let framed = split_into_records(hello, RECORDS);
    assert_eq!(framed.len(), hello.len() + 5 * (RECORDS - 1));
    sock.write_all(&framed)?;
    sock.flush()
}

fn in_records_bytewise(sock: &mut std::net::TcpStream, hello: &[u8]) -> std::io::Result<()> {
    write_bytewise(sock, &split_into_records(hello, RECORDS), TRICKLE_BUDGET)
}

fn assert_served_by(response: &str, backend: &str) {
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "not a 200: {response}"
    );
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert_eq!(
        answer_field(body, "backend").as_deref(),
        Some(backend),
        "{response}"
    );
    assert_eq!(answer_field(body, "path").as_deref(), Some("/sniffed"));
}

#[tokio::test]
async fn a_hello_sent_one_byte_per_segment_reaches_its_tenant() {
    let t = two_tenants().await;
    let acme = get_with_hello(&t, "www.acme.test", &t.acme_ca, trickle).await;
    assert_served_by(&acme, "acme-web");
    let globex = get_with_hello(&t, "www.globex.test", &t.globex_ca, trickle).await;
    assert_served_by(&globex, "globex-web");
}

#[tokio::test]
async fn a_hello_split_over_several_records_reaches_its_tenant() {
    let t = two_tenants().await;
    let globex = get_with_hello(&t, "www.globex.test", &t.globex_ca, in_records).await;
    assert_served_by(&globex, "globex-web");
    let acme = get_with_hello(&t, "www.acme.test", &t.acme_ca, in_records).await;
    assert_served_by(&acme, "acme-web");
    // Both at once: several records, each trickled byte by byte.
    let acme = get_with_hello(&t, "www.acme.test", &t.acme_ca, in_records_bytewise).await;
    assert_served_by(&acme, "acme-web");
}

/// Sends `bytes` on a fresh connection to the TLS listener and reads until it closes.
async fn answer_to(t: &TwoTenants, bytes: &[u8]) -> Ending {
    let mut s = TcpStream::connect(t.bh.https).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_to_close(&mut s, SETTLE).await
}

#[tokio::test]
async fn unknown_or_missing_sni_gets_unrecognized_name() {
    let t = two_tenants().await;
    let config = tls_client_config(&t.acme_ca, &[]);

    let (_, unknown) = first_flight(config.clone(), "www.nobody.test");
    assert_eq!(
        answer_to(&t, &unknown).await,
        Ending::Closed(ALERT_UNRECOGNIZED_NAME.to_vec()),
        "unknown SNI"
    );
    // The same unknown name, split over records: refused the same way.
    assert_eq!(
        answer_to(&t, &split_into_records(&unknown, RECORDS)).await,
        Ending::Closed(ALERT_UNRECOGNIZED_NAME.to_vec()),
        "unknown SNI in several records"
    );
    // An IP address as server name: rustls sends no SNI at all, and nobody owns "*".
    let (_, no_sni) = first_flight(config, "127.0.0.1");
    assert_eq!(
        answer_to(&t, &no_sni).await,
        Ending::Closed(ALERT_UNRECOGNIZED_NAME.to_vec()),
        "no SNI"
    );
    let metrics = t.bh.metrics().await;
    assert!(
        metrics.contains("bulkhead_edge_unknown_hostnames_total{listener=\"https\"} 3"),
        "{metrics}"
    );
    assert!(!metrics.contains("nobody"), "no label per unknown hostname");
}

#[tokio::test]
async fn a_hello_that_does_not_parse_gets_decode_error() {
    let t = two_tenants().await;
    // A handshake record carrying a ClientHello of one byte: complete, and nonsense.
    let nonsense = [0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0xff];
    assert_eq!(
        answer_to(&t, &nonsense).await,
        Ending::Closed(ALERT_DECODE_ERROR.to_vec())
    );
    // A real hello for a served name, with its handshake length corrupted.
    let (_, mut hello) = first_flight(tls_client_config(&t.acme_ca, &[]), "www.acme.test");
    hello[6] = 0xff;
    assert_eq!(
        answer_to(&t, &hello).await,
        Ending::Closed(ALERT_DECODE_ERROR.to_vec())
    );
}

#[tokio::test]
async fn a_stream_that_is_not_tls_is_closed() {
    let t = two_tenants().await;
    let ending = answer_to(&t, b"GET / HTTP/1.1\r\nHost: www.acme.test\r\n\r\n").await;
    assert!(
        matches!(ending, Ending::Closed(_) | Ending::Reset(_)),
        "still open: {ending:?}"
    );
    let got = ending.bytes();
    assert!(
        got.is_empty() || got == ALERT_DECODE_ERROR,
        "nothing but a decode_error alert may come back: {got:?}"
    );
    // The listener keeps serving.
    let (status, _, _) = https_get(t.bh.https, "www.acme.test", "/", &t.acme_ca)
        .await
        .unwrap();
    assert_eq!(status, 200);
}
