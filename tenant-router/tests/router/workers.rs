//! A router on a runtime per worker thread (`bulkhead_net::workers`): every worker accepts and
//! serves whole requests, upstream connection included, so a stuck worker holds back only the
//! connections the kernel gave it.

use crate::support::*;
use bulkhead_net::workers::{self, WorkerThreads, Workers};
use http::StatusCode;
use std::time::Duration;

/// Blocks the worker of `handle` (a task that never yields) until the returned sender is dropped;
/// returns once the block has begun.
fn stick(handle: &tokio::runtime::Handle) -> std::sync::mpsc::Sender<()> {
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (began_tx, began_rx) = std::sync::mpsc::channel::<()>();
    handle.spawn(async move {
        let _ = began_tx.send(());
        let _ = release_rx.recv();
    });
    began_rx.recv().unwrap();
    release_tx
}

/// Connections opened at once, each with one GET (every other over HTTP/2).
const CONNECTIONS: usize = 16;

/// How many of [`CONNECTIONS`] new TLS connections, each with one GET, were answered by the
/// backend within 3 s.
async fn answered(pki: &Pki, router: &TestRouter) -> usize {
    let gets = (0..CONNECTIONS).map(|i| {
        tokio::time::timeout(Duration::from_secs(3), async move {
            let alpn: &[&[u8]] = if i % 2 == 0 { &[b"http/1.1"] } else { &[b"h2"] };
            let tls = tls_connect(pki, router.https, "a.acme.test", alpn)
                .await
                .ok()?;
            let mut client = if i % 2 == 0 {
                Client::h1(tls).await
            } else {
                Client::h2(tls).await
            };
            let reply = client.get("a.acme.test", "/").await;
            (reply.status == StatusCode::OK && reply.backend() == "web").then_some(())
        })
    });
    futures::future::join_all(gets)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(Some(()))))
        .count()
}

#[tokio::test]
async fn each_worker_serves_requests_end_to_end_while_the_other_is_stuck() {
    let web = EchoBackend::start("web").await;
    let pki = Pki::new();
    let s = web_snapshot(&pki, 1, "acme/web:80", web.addr);
    let runtimes = workers::runtimes(2).unwrap();
    let all = Workers::of(&runtimes);
    let threads = WorkerThreads::start("worker", &all, runtimes.into_iter().enumerate()).unwrap();
    // Started on worker 0, as a process starts it on its first worker.
    let router = all.handles()[0].spawn(TestRouter::start(s)).await.unwrap();
    assert_eq!(
        answered(&pki, &router).await,
        CONNECTIONS,
        "both workers free"
    );
    // The kernel spreads connections over the workers by their addresses (`SO_REUSEPORT`): those
    // for a stuck worker wait; the others' are served from TLS to the backend and back, on
    // upstream connections of the worker's own (one borrowed from the stuck worker would hang).
    for stuck_worker in [0, 1] {
        let stuck = stick(&all.handles()[stuck_worker]);
        let served = answered(&pki, &router).await;
        assert!(
            served > 0,
            "no connection served while worker {stuck_worker} is stuck"
        );
        drop(stuck);
    }
    drop(router);
    drop(threads);
}
