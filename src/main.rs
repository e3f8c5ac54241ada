//! `bulkhead`: the one binary. Subcommands run the tiers (`edge`, `router`, `operator`), the whole
//! system in one process without Kubernetes (`standalone`, `quickstart`), and print the CRDs (`crds`).
#![forbid(unsafe_code)]

mod demo;
mod gateway_flags;
mod operator_cmd;
mod quickstart;
mod standalone;
mod translate;

use bulkhead::{cluster, process};

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Bulkhead: a two-tier ingress for multi-tenant Kubernetes clusters.
#[derive(Parser, Debug)]
#[command(name = "bulkhead", version, about)]
struct Cli {
    #[command(flatten)]
    log: process::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run edge, one tenant router per Tenant and the file provider in one process, on loopback.
    Standalone(standalone::StandaloneArgs),
    /// Print what the operator would make of a manifest directory (statuses, rejections, snapshots
    /// with keys redacted) without serving; exits non-zero when an object is rejected.
    Translate(translate::TranslateArgs),
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
    #[command(flatten)]
    DataPlane(cluster::DataPlaneCommand),
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
    let cli: Cli = process::parse_args();
    // The edge and the router serve connections on a runtime per worker; the rest shares one.
    let threads = match cli.command {
        Command::DataPlane(_) => process::Threads::PerWorker,
        _ => process::Threads::Shared,
    };
    process::run(cli.log.log_format, threads, run(cli.command))
}

/// Runs one subcommand to its end.
async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Standalone(args) => standalone::run(args).await,
        Command::Translate(args) => translate::run(args),
        Command::Quickstart(args) => quickstart::run(args).await,
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
        Command::DataPlane(command) => command.run().await,
        Command::Operator(args) => operator_cmd::run(args).await,
    }
}
