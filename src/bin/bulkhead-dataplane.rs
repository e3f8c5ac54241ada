//! `bulkhead-dataplane`: the edge and the tenant router alone, without the operator, kube-rs or the
//! standalone tooling. Same subcommands, flags and behaviour as `bulkhead edge` / `bulkhead router`;
//! a fraction of the code, so each router process maps fewer pages (see `BENCHMARKS.md`).
#![forbid(unsafe_code)]

use bulkhead::{cluster, process};
use clap::Parser;

/// Bulkhead's data plane: the edge tier and the per-tenant router.
#[derive(Parser, Debug)]
#[command(name = "bulkhead-dataplane", version)]
struct Cli {
    #[command(flatten)]
    log: process::LogArgs,
    #[command(subcommand)]
    command: cluster::DataPlaneCommand,
}

fn main() -> anyhow::Result<()> {
    let cli: Cli = process::parse_args();
    process::run(
        cli.log.log_format,
        process::Threads::PerWorker,
        cli.command.run(),
    )
}
