//! `bulkhead-bench`: the benchmark adapters, in a binary of their own so that the shipped
//! binaries (`bulkhead`, `bulkhead-dataplane`) carry no benchmark code.
//!
//! * `bulkhead-bench bench-candidate` ([`candidate`]): one tier (edge or router, `$BENCH_ROLE`)
//!   under the load harness in `shared/bench`, which starts it through `CANDIDATE_*_CMD`.
//! * `bulkhead-bench bench-operator` ([`operator`]): the control plane at scale, a synthetic
//!   cluster through the real control loop and snapshot server.
//! * `bulkhead-bench snapshot` ([`candidate::write_snapshot`]): the edge or router snapshot
//!   `bench-candidate` would publish for a routes file, as JSON, for `bulkhead-dataplane edge|router
//!   --bootstrap` (the shipped binary's memory with many routes, without a control plane).
//!
//! Both run the same edge, router and operator crates as the shipped binaries; see `BENCHMARKS.md`.
#![forbid(unsafe_code)]

mod candidate;
mod operator;

use bulkhead::process;
use clap::{Parser, Subcommand};

/// Bulkhead's benchmark adapters.
#[derive(Parser, Debug)]
#[command(name = "bulkhead-bench", version)]
struct Cli {
    #[command(flatten)]
    log: process::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one tier under the load harness in shared/bench (reads the BENCH_* environment).
    BenchCandidate,
    /// Measure the control plane at scale: a synthetic cluster through the real control loop and
    /// snapshot server.
    BenchOperator(operator::ScaleArgs),
    /// Write the edge or router snapshot a routes file compiles to, as JSON, for
    /// `bulkhead-dataplane edge|router --bootstrap`.
    Snapshot(candidate::SnapshotArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let threads = match cli.command {
        Command::BenchCandidate => process::Threads::PerWorker,
        _ => process::Threads::Shared,
    };
    process::run(cli.log.log_format, threads, async move {
        match cli.command {
            Command::BenchCandidate => candidate::run().await,
            Command::BenchOperator(args) => operator::run(args).await,
            Command::Snapshot(args) => candidate::write_snapshot(&args),
        }
    })
}
