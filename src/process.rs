//! What every subcommand's process does the same way: the async runtime (one worker: a current-thread
//! runtime), logging and trace export around the work, and shutdown on SIGTERM or Ctrl-C.

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

/// Installs logging, starts the runtime, runs `work` on it with trace export (when an OTLP
/// endpoint is configured) and flushes the traces at the end.
///
/// # Errors
/// When the runtime or the trace exporter cannot start, or `work` fails.
pub fn run<F>(log_format: LogFormat, work: F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    telemetry::init(log_format);
    let workers = worker_threads();
    // One worker: a current-thread runtime does the same work without cross-thread hand-offs.
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .worker_threads(workers)
            .build()
    }
    .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let otel = telemetry::init_tracing()?;
        let result = work.await;
        if let Some(otel) = otel {
            otel.shutdown().await;
        }
        result
    })
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
