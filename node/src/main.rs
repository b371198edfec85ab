//! The `gristmill` binary: `run` one node, start a `local` cluster on loopback, or `ctl` a node.

#![forbid(unsafe_code)]

mod bench;
mod client;
mod ctl;
mod duration_arg;
mod local;
mod ready;
mod run;
mod settings;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The allocator of every node process. Envelopes, payloads and replies are freed on other
/// threads than the ones that allocated them. With glibc's allocator, a node receiving
/// one-way messages spent about a quarter of its time in arena locks and chunk
/// consolidation (perf, one-way benchmark). mimalloc frees such blocks without a lock.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gristmill: distributed virtual actors (grains) on a self-managing cluster.
#[derive(Debug, Parser)]
#[command(name = "gristmill", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node until SIGTERM or SIGINT, which make it drain and leave the cluster.
    ///
    /// Prints one JSON line on stdout once the node serves:
    /// {"event":"ready","node":..,"boot_id":..,"gossip_addr":..,"cluster_addr":..,
    /// "grpc_addr":..,"metrics_addr":..}. Logs go to stderr. Exit codes: 0 after a graceful
    /// leave, 1 when the node failed to start, 2 for an invalid setting, 3 when the node
    /// stopped by itself (for example after being declared down).
    Run(Box<settings::RunArgs>),
    /// Start a cluster of node processes on 127.0.0.1 and drive a sample workload through it.
    Local(local::LocalArgs),
    /// Ask a node about members, load and activations, or invoke a grain.
    Ctl(ctl::CtlArgs),
    /// Measure grain calls, messages, activations and crash detection against their floor
    /// and peers, on loopback node processes, and print one table.
    Bench(bench::BenchArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run::run(*args).await,
        Command::Local(args) => {
            init_tool_logging();
            local::run(args).await
        }
        Command::Ctl(args) => ctl::run(args).await,
        Command::Bench(args) => {
            init_tool_logging();
            bench::run(args).await
        }
    }
}

/// Sends warnings of `local` and `bench` themselves to stderr, filtered by RUST_LOG, with ANSI colours only
/// when stderr is a terminal.
fn init_tool_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A failed write to stderr (its reader went away) drops the line. Reporting it would
        // write to stderr again, and the standard library panics when that fails.
        .log_internal_errors(false)
        .init();
}

/// Renders the help output for `argv`, for tests of the help text.
#[cfg(test)]
fn cli_help(argv: &[&str]) -> String {
    use clap::CommandFactory;

    let error = Cli::command()
        .try_get_matches_from(argv)
        .expect_err("--help ends parsing");
    error.render().to_string()
}
