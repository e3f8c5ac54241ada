//! `bulkhead`: the one binary. Subcommands run the tiers (`edge`, `router`, `operator`), the whole
//! system in one process without Kubernetes (`standalone`, `quickstart`), and print the CRDs (`crds`).
#![forbid(unsafe_code)]

mod bench;
mod bench_operator;
mod cluster;
mod demo;
mod operator_cmd;
mod pki;
mod quickstart;
mod standalone;
mod telemetry;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Bulkhead: a two-tier ingress for multi-tenant Kubernetes clusters.
#[derive(Parser, Debug)]
#[command(name = "bulkhead", version, about)]
struct Cli {
    /// Log format: `text` or `json`.
    #[arg(
        long,
        global = true,
        env = "BULKHEAD_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: telemetry::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run edge, one tenant router per Tenant and the file provider in one process, on loopback.
    Standalone(standalone::StandaloneArgs),
    /// Run the quickstart: demo backends, generated certificates and `standalone` on examples/quickstart.
    Quickstart(quickstart::QuickstartArgs),
    /// Serve a demo HTTP backend that says who it is and echoes what it received.
    DemoBackend {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// Name reported in every answer.
        #[arg(long)]
        name: String,
    },
    /// Run one tier under the load harness in shared/bench (reads the BENCH_* environment).
    #[command(hide = true)]
    BenchCandidate,
    /// Measure the control plane at scale: a synthetic cluster through the real control loop and
    /// snapshot server (a benchmark; see BENCHMARKS.md).
    #[command(hide = true)]
    BenchOperator(bench_operator::ScaleArgs),
    /// Run the edge tier, fed by the operator's snapshot service.
    Edge(cluster::EdgeArgs),
    /// Run one tenant router, fed by the operator's snapshot service.
    Router(cluster::RouterArgs),
    /// Run the control plane on Kubernetes (watchers, snapshot API, tenant routers, statuses).
    Operator(operator_cmd::OperatorArgs),
    /// Print the CRD YAML.
    Crds {
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
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
        let result = run(cli.command).await;
        if let Some(otel) = otel {
            otel.shutdown().await;
        }
        result
    })
}

/// Runs one subcommand to its end.
async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Standalone(args) => standalone::run(args).await,
        Command::Quickstart(args) => quickstart::run(args).await,
        Command::BenchCandidate => bench::run().await,
        Command::BenchOperator(args) => bench_operator::run(args).await,
        Command::DemoBackend { listen, name } => demo::serve_forever(listen, name).await,
        Command::Crds { out } => {
            let yaml = bulkhead_crds::crd_yaml().context("cannot render the CRDs")?;
            match out {
                Some(path) => std::fs::write(&path, yaml)
                    .with_context(|| format!("cannot write {}", path.display())),
                None => {
                    print!("{yaml}");
                    Ok(())
                }
            }
        }
        Command::Edge(args) => cluster::run_edge(args).await,
        Command::Router(args) => cluster::run_router(args).await,
        Command::Operator(args) => operator_cmd::run(args).await,
    }
}

/// Worker threads: `BULKHEAD_WORKERS` if set (the benchmark harness sets 1), else one per core.
fn worker_threads() -> usize {
    std::env::var("BULKHEAD_WORKERS")
        .or_else(|_| std::env::var("BENCH_WORKERS"))
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}
