//! What every subcommand's process does the same way: the async runtimes (a current-thread runtime
//! per worker thread, see `bulkhead_net::workers`), logging and trace export around the work, and
//! shutdown on SIGTERM or Ctrl-C.

use crate::telemetry::{self, LogFormat};
use anyhow::Context;
use std::future::Future;
use tokio_util::sync::CancellationToken;

/// The flags every subcommand takes.
#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// Log format: `text` or `json`.
    #[arg(
        long,
        global = true,
        env = "BULKHEAD_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// How a process's threads run its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// A current-thread runtime per worker thread, each serving the connections its accept loops
    /// take (see `bulkhead_net::workers`): the edge and the router.
    PerWorker,
    /// One multi-thread runtime whose workers share every task: the control plane and the tools.
    Shared,
}

/// Parses the command line on a thread of its own. clap's derived parsers build every argument on
/// the stack, tens of kilobytes for the edge's and router's flags, and the main thread's stack
/// pages stay resident (anonymous memory) for the life of the process, where a finished thread's
/// stack is unmapped. `--help`, `--version` and usage errors exit the process from that thread.
pub fn parse_args<P: clap::Parser + Send + 'static>() -> P {
    std::thread::spawn(P::parse)
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Installs logging, starts the runtimes (one worker: a current-thread runtime either way), runs
/// `work` on this thread's with trace export (when an OTLP endpoint is configured) and flushes the
/// traces at the end.
///
/// # Errors
/// When a runtime or the trace exporter cannot start, or `work` fails.
pub fn run<F>(log_format: LogFormat, threads: Threads, work: F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    telemetry::init(log_format);
    // On the heap: a subcommand's future is tens of kilobytes, and each move on the way into
    // `block_on` would take as much of the main thread's stack, which stays resident after.
    let work = Box::pin(work);
    let workers = worker_threads();
    if threads == Threads::Shared && workers > 1 {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .worker_threads(workers)
            .build()
            .context("cannot start the async runtime")?;
        return runtime.block_on(with_tracing(work));
    }
    let (main, all, threads) = bulkhead_net::workers::start("worker", workers)
        .context("cannot start the worker runtimes")?;
    bulkhead_net::workers::enter(&all, 0);
    let result = main.block_on(with_tracing(work));
    // Stops the other workers and waits for them.
    drop(threads);
    result
}

/// `work` with trace export around it.
async fn with_tracing<F>(work: F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let otel = telemetry::init_tracing()?;
    let result = work.await;
    if let Some(otel) = otel {
        otel.shutdown().await;
    }
    result
}

/// Worker threads: `BULKHEAD_WORKERS` if set (the benchmark harness sets 1), else one per core.
pub fn worker_threads() -> usize {
    std::env::var("BULKHEAD_WORKERS")
        .or_else(|_| std::env::var("BENCH_WORKERS"))
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// A token cancelled on SIGTERM or Ctrl-C.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    spawn_signal_handler(token.clone());
    token
}

/// Cancels `shutdown` on SIGTERM or Ctrl-C.
pub fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: draining connections");
        shutdown.cancel();
    });
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
