//! `gristmill local`: a cluster of node processes on loopback, driven by a sample workload.
//!
//! Steps:
//! 1. Start node 0 with no seeds, read its ready line, then start the others seeded with its
//!    gossip address. Every node uses OS-chosen ports and one random cookie.
//! 2. Wait until every node lists all nodes as ACTIVE.
//! 3. Run counter increments and account transfers through all nodes' gRPC APIs, printing
//!    progress once a second on stderr.
//! 4. Read every account balance, print the summary, and stop the nodes with SIGTERM.
//!
//! Ctrl-C at any step skips to stopping the nodes. Nodes are killed when this process drops
//! them or exits, and on Linux also when it is killed (`--parent-pid`).

mod children;
mod report;
mod workload;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use rand::RngExt;
use tokio::time::Instant;

use crate::client::{self, NodeClient};
use children::{ChildNode, NodeSpec};
use report::Summary;
use workload::WorkloadSpec;

/// Exit code when the cluster could not be started or never converged.
const EXIT_FAILED: u8 = 1;
/// Exit code after Ctrl-C, following the shell convention of 128 + SIGINT.
const EXIT_INTERRUPTED: u8 = 130;

/// Options of `gristmill local`.
#[derive(Debug, clap::Args)]
pub struct LocalArgs {
    /// Number of node processes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub nodes: u16,

    /// Number of counter grains the workload increments.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub grains: u64,

    /// Number of account grains the workload transfers between; each starts with 1000.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(2..))]
    pub accounts: u64,

    /// Percentage of calls that are account transfers; the rest are counter increments.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub transfer_percent: u8,

    /// How long the workload runs, such as `30s` or `2m`.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub duration: humantime::Duration,

    /// Calls in flight at once, over all nodes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub concurrency: u16,

    /// Deadline of each call, in milliseconds.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub call_timeout_ms: u32,

    /// Time the cluster has to start and converge, such as `60s`.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub start_timeout: humantime::Duration,

    /// Log filter of the nodes, whose logs go to this process's stderr.
    #[arg(long, default_value = "warn", value_name = "FILTER")]
    pub node_log: String,

    /// Print the summary as one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Time each node has to drain and exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Runs the local cluster and workload; always stops the nodes before returning.
pub async fn run(args: LocalArgs) -> ExitCode {
    let mut nodes = Vec::new();
    let outcome = tokio::select! {
        outcome = run_steps(&args, &mut nodes) => outcome,
        _ = tokio::signal::ctrl_c() => Err(ExitCode::from(EXIT_INTERRUPTED)),
    };
    if outcome.is_err() && !nodes.is_empty() {
        eprintln!("stopping {} nodes", nodes.len());
    }
    children::shut_down(&mut nodes, STOP_GRACE).await;
    match outcome {
        Ok(summary) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string(&summary).expect("summary encodes as JSON")
                );
            } else {
                print!("{}", summary.to_text());
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

async fn run_steps(args: &LocalArgs, nodes: &mut Vec<ChildNode>) -> Result<Summary, ExitCode> {
    let start_deadline = Instant::now() + *args.start_timeout;
    start_nodes(args, nodes, start_deadline)
        .await
        .map_err(|error| {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_FAILED)
        })?;
    let mut clients = Vec::new();
    for node in nodes.iter() {
        let client = NodeClient::connect(&node.ready.grpc_addr.to_string())
            .await
            .map_err(|error| {
                eprintln!("error: {error}");
                ExitCode::from(EXIT_FAILED)
            })?;
        clients.push(client);
    }
    wait_for_convergence(&mut clients, start_deadline)
        .await
        .map_err(|error| {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_FAILED)
        })?;

    let names: Vec<String> = nodes.iter().map(|node| node.ready.node.clone()).collect();
    eprintln!(
        "{} nodes ACTIVE; running {} with {} calls in flight over {} counters and {} accounts",
        nodes.len(),
        humantime::format_duration(*args.duration),
        args.concurrency,
        args.grains,
        args.accounts,
    );
    Ok(run_workload(args, &names, &clients).await)
}

/// Starts node 0, then the others seeded with node 0's gossip address.
async fn start_nodes(
    args: &LocalArgs,
    nodes: &mut Vec<ChildNode>,
    deadline: Instant,
) -> Result<(), children::SpawnError> {
    let exe = std::env::current_exe().map_err(|source| children::SpawnError::Spawn {
        name: "node-0".into(),
        source,
    })?;
    let cookie = random_cookie();
    for index in 0..args.nodes {
        let seed = nodes
            .first()
            .map(|first| first.ready.gossip_addr.to_string());
        let spec = NodeSpec {
            name: format!("node-{index}"),
            cookie: &cookie,
            seed,
            log: &args.node_log,
            start_timeout: deadline.saturating_duration_since(Instant::now()),
        };
        let node = ChildNode::start(&exe, spec).await?;
        eprintln!(
            "started {} (gRPC {}, metrics {})",
            node.ready.node,
            node.ready.grpc_addr,
            node.ready
                .metrics_addr
                .map_or_else(|| "off".to_owned(), |addr| addr.to_string())
        );
        nodes.push(node);
    }
    Ok(())
}

/// Returns 32 random hex digits.
fn random_cookie() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Waits until every node lists all nodes as ACTIVE.
async fn wait_for_convergence(clients: &mut [NodeClient], deadline: Instant) -> Result<(), String> {
    let expected = clients.len();
    loop {
        let mut active_counts = Vec::with_capacity(expected);
        for client in clients.iter_mut() {
            let active = match client.members().await {
                Ok(response) => response
                    .members
                    .iter()
                    .filter(|member| client::state_name(member.state) == "ACTIVE")
                    .count(),
                Err(_) => 0,
            };
            active_counts.push(active);
        }
        if active_counts.iter().all(|&count| count == expected) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "nodes did not converge to {expected} ACTIVE members in time; ACTIVE members seen by each node: {active_counts:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the workload with a progress line per second, then checks the balances.
async fn run_workload(args: &LocalArgs, names: &[String], clients: &[NodeClient]) -> Summary {
    let started = Instant::now();
    let spec = WorkloadSpec {
        counters: args.grains,
        accounts: args.accounts,
        transfer_percent: args.transfer_percent,
        concurrency: usize::from(args.concurrency),
        call_timeout_ms: args.call_timeout_ms,
        until: started + *args.duration,
    };
    let (mut workers, stats) = workload::start(&spec, clients);
    let mut ticker =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    let mut last_tick = started;
    loop {
        tokio::select! {
            next = workers.join_next() => if next.is_none() { break },
            tick = ticker.tick() => {
                let window = stats.lock().expect("stats lock is never poisoned").take_window();
                let activations = count_activations(names, clients).await;
                let line = report::progress_line(started.elapsed(), tick - last_tick, window, &activations);
                eprintln!("{line}");
                last_tick = tick;
            }
        }
    }
    let duration = started.elapsed();

    let balances = workload::read_balances(clients, args.accounts, args.call_timeout_ms).await;
    let activations_per_node = count_activations(names, clients)
        .await
        .into_iter()
        .filter_map(|(name, count)| count.map(|count| (name, count)))
        .collect();
    let stats = stats.lock().expect("stats lock is never poisoned");
    Summary {
        nodes: names.len(),
        duration_secs: duration.as_secs_f64(),
        calls: stats.calls,
        errors: stats.errors,
        errors_by_code: stats.errors_by_code.clone(),
        calls_per_sec: stats.calls as f64 / duration.as_secs_f64(),
        p50_us: stats.total.value_at_quantile(0.5),
        p99_us: stats.total.value_at_quantile(0.99),
        max_us: stats.total.max(),
        activations_per_node,
        accounts: args.accounts,
        total_balance_expected: workload::INITIAL_BALANCE
            * i64::try_from(args.accounts).unwrap_or(i64::MAX),
        total_balance_actual: balances.total,
        balance_read_errors: balances.failed_reads,
    }
}

/// Asks each node how many activations it hosts, with `None` for a node that failed to reply.
async fn count_activations(
    names: &[String],
    clients: &[NodeClient],
) -> BTreeMap<String, Option<u64>> {
    let mut counts = BTreeMap::new();
    for (name, client) in names.iter().zip(clients) {
        let mut client = client.clone();
        let count = tokio::time::timeout(Duration::from_millis(500), client.activation_count())
            .await
            .ok()
            .and_then(Result::ok);
        counts.insert(name.clone(), count);
    }
    counts
}
