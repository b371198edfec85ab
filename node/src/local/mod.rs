//! `gristmill local`: a self-scaling cluster of node processes on loopback, driven by a sample
//! workload with a load spike and a quiet period.
//!
//! Steps:
//! 1. Start node 0 with no seeds, read its ready line, then start the others seeded with its
//!    gossip address. Every node uses OS-chosen ports, one random cookie, the local
//!    orchestrator and the demo scaling policy.
//! 2. Wait until every node lists all nodes as ACTIVE.
//! 3. Run counter increments and account transfers through the Active nodes' gRPC APIs:
//!    first a spike over every counter, then a quiet period over a few. Print progress once a
//!    second and each scaling decision that acts, on stderr.
//! 4. Read every account balance, print the summary, and stop the nodes with SIGTERM.
//!
//! The nodes share a SQLite file of this run alone (named with this process's id and removed
//! at the end) unless `--sqlite-path` names one, so concurrent runs never share grain state.
//!
//! Ctrl-C at any step skips to stopping the nodes. Nodes are killed when this process drops
//! them or exits, and on Linux also when it is killed (`--parent-pid`).

mod children;
mod progress;
mod report;
mod timeline;
mod workload;

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use gristmill::runtime::NodeConfig;
use gristmill::scaling::ScalingConfig;
use gristmill::scaling::supervisor::OrchestratorKind;

use rand::RngExt;
use tokio::time::Instant;

use crate::client::{self, NodeClient};
use children::{ChildNode, NodeSpec};
use gristmill::routing::GristmillClient;
use report::Summary;
use workload::{Gateways, WorkloadSpec};

/// Exit code when the cluster could not be started or never converged.
const EXIT_FAILED: u8 = 1;
/// Exit code for invalid options, matching clap's code for invalid flags.
const EXIT_INVALID_ARGS: u8 = 2;
/// Exit code when the final check finds the total balance not conserved or unreadable.
const EXIT_INCONSISTENT: u8 = 4;
/// Exit code after Ctrl-C, following the shell convention of 128 + SIGINT.
const EXIT_INTERRUPTED: u8 = 130;

/// Options of `gristmill local`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = PHASES_HELP)]
pub struct LocalArgs {
    /// Number of node processes to start with; the supervisor never scales in below it.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub nodes: u16,

    /// Most node processes the supervisor runs.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_nodes: u16,

    /// Share of the run that is the load spike, in percent; the rest is the quiet period.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub spike_percent: u8,

    /// Number of counter grains the workload increments.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub grains: u64,

    /// Number of account grains the workload transfers between; each starts with 1000.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(2..))]
    pub accounts: u64,

    /// Percentage of calls that are account transfers; the rest are counter increments.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub transfer_percent: u8,

    /// How long the workload runs, spike and quiet period together, such as `30s` or `2m`.
    #[arg(long, default_value = "120s", value_name = "DURATION", value_parser = crate::duration_arg::parse_positive)]
    pub duration: humantime::Duration,

    /// Calls in flight at once over all nodes during the spike; an eighth of them (at least
    /// one) go on in the quiet period.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub concurrency: u16,

    /// Deadline of each call, in milliseconds.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub call_timeout_ms: u32,

    /// Time the cluster has to start and converge, such as `60s`.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = crate::duration_arg::parse_positive)]
    pub start_timeout: humantime::Duration,

    /// Log filter of the nodes, whose logs go to this process's stderr.
    #[arg(long, default_value = "warn", value_name = "FILTER")]
    pub node_log: String,

    /// Print the summary as one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,

    /// SQLite database file of the nodes, kept after the run. Default: a new file in the
    /// temporary directory, named with this process's id and removed after the run.
    #[arg(long, value_name = "PATH")]
    pub sqlite_path: Option<PathBuf>,
}

/// The phases of the demo, shown by `gristmill local --help`.
const PHASES_HELP: &str = "\
Phases of the demo:
  1. start: --nodes nodes start with the local orchestrator and a scaling policy whose windows
     are seconds long (evaluation every 1 s, 5 s scale-out and 20 s scale-in stabilization,
     5 s cooldown, 1,000 activations per node).
  2. spike (the first --spike-percent of --duration): every counter is called, so activations
     pass the target; the supervisor adds nodes up to --max-nodes, and placement and the
     rebalancer fill them.
  3. quiet (the rest): only the first 1 % of the counters and the accounts are called; idle
     activations are deactivated after 10 s, and the supervisor drains and removes nodes one
     by one, down to --nodes.
  4. stop: balances are checked, the summary lists every scaling decision, and all nodes stop.
Each scaling decision that acts is printed on stderr with its reason, as it starts and ends.

Exit codes: 0 when the total balance is conserved, 4 when it is not or a balance could not be
read (an acknowledged transfer was lost or applied twice, or a transfer cut short between its
withdrawal and its deposit was not finished by its retries), 1 when the cluster did not start or
converge, 2 for invalid options, 130 after Ctrl-C. A transfer that fails without a known
outcome, as when a node is killed, is sent again with its id until it finishes, for at most
20 s after the workload ends.";

/// Time each node has to drain and exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Idle time after which the demo nodes deactivate a grain, so the quiet period lowers load.
const DEMO_IDLE_AFTER_SECS: u64 = 10;
/// Interval between two refreshes of the Active gateway nodes.
const GATEWAY_REFRESH: Duration = Duration::from_secs(1);

/// Runs the local cluster and workload; always stops the nodes before returning.
pub async fn run(args: LocalArgs) -> ExitCode {
    if let Err(error) = check_args(&args) {
        eprintln!("error: {error}");
        return ExitCode::from(EXIT_INVALID_ARGS);
    }
    let run_name = format!("gristmill-local-{}", std::process::id());
    let config_path = std::env::temp_dir().join(format!("{run_name}.toml"));
    let own_database = args.sqlite_path.is_none();
    let database = args
        .sqlite_path
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("{run_name}.sqlite3")));
    if own_database {
        // A file of this name is left over from a killed run whose process id was reused.
        remove_sqlite_files(&database);
    }
    if let Err(error) = write_demo_config(&args, &database, &config_path) {
        eprintln!("error: {error}");
        return ExitCode::from(EXIT_FAILED);
    }
    let mut nodes = Vec::new();
    let outcome = tokio::select! {
        outcome = run_steps(&args, &config_path, &mut nodes) => outcome,
        _ = tokio::signal::ctrl_c() => Err(ExitCode::from(EXIT_INTERRUPTED)),
    };
    if outcome.is_err() && !nodes.is_empty() {
        eprintln!(
            "stopping {}",
            crate::table::counted(nodes.len() as u64, "node", "nodes")
        );
    }
    pause_scaling(&nodes).await;
    children::shut_down(&mut nodes, STOP_GRACE).await;
    let _ = std::fs::remove_file(&config_path);
    if own_database {
        remove_sqlite_files(&database);
    }
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
            if summary.balance_conserved() {
                return ExitCode::SUCCESS;
            }
            if summary.uncertain_transfers > 0 {
                eprintln!(
                    "error: the total balance is not conserved or not readable, and {} \
                     transfers were still without a known outcome when their retries ran out. \
                     Such a transfer may have withdrawn its amount and not deposited it yet; \
                     only a run without them shows lost or doubled writes",
                    summary.uncertain_transfers
                );
            } else {
                eprintln!(
                    "error: the total balance is not conserved or not readable, although every \
                     failed transfer left the balances as they were, so acknowledged writes \
                     were lost or applied twice; see the summary above"
                );
            }
            ExitCode::from(EXIT_INCONSISTENT)
        }
        Err(code) => code,
    }
}

/// Pauses the scaling supervisor before the nodes stop. Otherwise the nodes that drain move
/// their grains to the nodes the supervisor added, and one of those takes over the
/// supervisor and starts another node to restore `min_nodes`. The pause is recorded in the
/// supervisor register, so a supervisor that takes over stays paused. A node that does not
/// act as supervisor rejects the request, so each node is asked in turn, each for at most 2 s.
async fn pause_scaling(nodes: &[ChildNode]) {
    let request = gristmill::api::pb::PauseRequest {
        reason: "gristmill local is stopping its nodes".into(),
    };
    for node in nodes {
        let addr = node.ready.grpc_addr.to_string();
        let Ok(mut scaling) = crate::ctl::scaling::connect(&addr, PAUSE_TIMEOUT).await else {
            continue;
        };
        if scaling.pause(request.clone()).await.is_ok() {
            return;
        }
    }
    tracing::debug!("no node paused the scaling supervisor before the shutdown");
}

/// Time one node has to reply to the pause before the shutdown.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Removes a SQLite database file with its write-ahead log and shared-memory files.
fn remove_sqlite_files(database: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut path = database.as_os_str().to_owned();
        path.push(suffix);
        let path = PathBuf::from(path);
        if let Err(error) = std::fs::remove_file(&path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("warning: cannot remove {}: {error}", path.display());
        }
    }
}

/// Checks the options that clap cannot check one by one.
fn check_args(args: &LocalArgs) -> Result<(), String> {
    if args.max_nodes < args.nodes {
        return Err(format!(
            "invalid --max-nodes {}: it must be at least --nodes {}; raise --max-nodes or lower \
             --nodes",
            args.max_nodes, args.nodes
        ));
    }
    if let Err(error) = tracing_subscriber::EnvFilter::try_new(&args.node_log) {
        return Err(format!(
            "invalid --node-log {:?}: {error}; expected comma-separated directives such as \
             `warn` or `warn,gristmill::scaling=info`",
            args.node_log
        ));
    }
    if let Some(path) = &args.sqlite_path {
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        if !directory.is_dir() {
            return Err(format!(
                "invalid --sqlite-path {}: directory {} does not exist; create it or name a \
                 file in an existing directory",
                path.display(),
                directory.display()
            ));
        }
    }
    Ok(())
}

/// Returns the settings every demo node shares: the SQLite file `database`, the local
/// orchestrator, the demo scaling policy bounded by `--nodes` and `--max-nodes`, and a short
/// idle time.
fn demo_config(args: &LocalArgs, database: &Path) -> Result<NodeConfig, String> {
    let mut scaling = ScalingConfig::for_local_demo();
    scaling.min_nodes =
        NonZeroU32::new(u32::from(args.nodes)).ok_or("--nodes must be at least 1")?;
    scaling.max_nodes =
        NonZeroU32::new(u32::from(args.max_nodes)).ok_or("--max-nodes must be at least 1")?;
    Ok(NodeConfig {
        storage: gristmill::storage::StorageConfig {
            sqlite_path: database.to_owned(),
            ..gristmill::storage::StorageConfig::default()
        },
        orchestrator: OrchestratorKind::Local,
        idle_after_secs: DEMO_IDLE_AFTER_SECS,
        call_timeout_ms: u64::from(args.call_timeout_ms),
        scaling,
        ..NodeConfig::default()
    })
}

fn write_demo_config(args: &LocalArgs, database: &Path, path: &Path) -> Result<(), String> {
    let config = demo_config(args, database)?;
    let text = toml::to_string(&config)
        .map_err(|error| format!("cannot encode the node config: {error}"))?;
    std::fs::write(path, text)
        .map_err(|error| format!("cannot write the node config {}: {error}", path.display()))
}

async fn run_steps(
    args: &LocalArgs,
    config_path: &Path,
    nodes: &mut Vec<ChildNode>,
) -> Result<Summary, ExitCode> {
    let start_deadline = Instant::now() + *args.start_timeout;
    start_nodes(args, config_path, nodes, start_deadline)
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
    let gateways: Gateways = Arc::new(std::sync::RwLock::new(
        names.iter().cloned().zip(clients.iter().cloned()).collect(),
    ));
    eprintln!(
        "{} ACTIVE; running {} with {} calls in flight over {} counters and {} accounts",
        crate::table::counted(nodes.len() as u64, "node", "nodes"),
        humantime::format_duration(*args.duration),
        args.concurrency,
        args.grains,
        args.accounts,
    );
    let addrs: Vec<String> = nodes
        .iter()
        .map(|node| node.ready.grpc_addr.to_string())
        .collect();
    let client = workload::connect_client(addrs.clone())
        .await
        .map_err(|error| {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_FAILED)
        })?;
    Ok(run_workload(args, &gateways, &client, addrs, nodes).await)
}

/// Starts node 0, then the others seeded with node 0's gossip address.
async fn start_nodes(
    args: &LocalArgs,
    config_path: &Path,
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
            config: Some(config_path),
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

/// Runs the workload with a progress line per second and the scaling timeline, then checks
/// the balances. A node of `nodes` that exits meanwhile is reported at once, and the run goes
/// on without it.
async fn run_workload(
    args: &LocalArgs,
    gateways: &Gateways,
    client: &GristmillClient,
    addrs: Vec<String>,
    nodes: &mut [ChildNode],
) -> Summary {
    let started = Instant::now();
    let until = started + *args.duration;
    let spike = args.duration.mul_f64(f64::from(args.spike_percent) / 100.0);
    let spec = WorkloadSpec {
        counters: args.grains,
        accounts: args.accounts,
        transfer_percent: args.transfer_percent,
        concurrency: usize::from(args.concurrency),
        call_timeout_ms: args.call_timeout_ms,
        until,
        spike_until: started + spike,
        quiet_concurrency: (usize::from(args.concurrency) / 8).max(1),
        quiet_counters: (args.grains / 100).max(1),
    };
    let initial_nodes = gateways
        .read()
        .expect("gateways lock is never poisoned")
        .len();
    let (watcher, decisions) = timeline::watch(addrs, started);
    let (mut workers, stats) = workload::start(&spec, client);
    let mut clock = progress::ProgressClock::new(started, GATEWAY_REFRESH);
    let mut quiet_announced = spike.is_zero();
    let mut peak_nodes = initial_nodes;
    loop {
        tokio::select! {
            next = workers.join_next() => if next.is_none() { break },
            (node, status) = children::next_exit(nodes) => match status {
                // A node that the supervisor drained and removed exits 0.
                Ok(status) if status.success() => tracing::info!(node = %node, "node left the cluster and exited"),
                Ok(status) => tracing::warn!(node = %node, %status, "node exited during the run; the workload goes on with the other nodes"),
                Err(error) => tracing::warn!(node = %node, %error, "cannot wait for node; the workload goes on with the other nodes"),
            },
            tick = clock.tick() => {
                // The window ends before the slow steps below, so its counts match its length.
                let window = clock.end_window();
                let counts = stats.lock().expect("stats lock is never poisoned").take_window();
                refresh_gateways(gateways).await;
                let active = gateways.read().expect("gateways lock is never poisoned").len();
                peak_nodes = peak_nodes.max(active);
                if !quiet_announced && tick >= spec.spike_until {
                    quiet_announced = true;
                    eprintln!("[{:>6.1}s] spike over; quiet period with {} calls in flight over {} counters",
                        started.elapsed().as_secs_f64(), spec.quiet_concurrency, spec.quiet_counters);
                }
                let activations = count_activations(gateways).await;
                let line = report::progress_line(window, counts, &activations);
                eprintln!("{line}");
            }
        }
    }
    let duration = started.elapsed();
    watcher.abort();

    let clients: Vec<NodeClient> = gateways
        .read()
        .expect("gateways lock is never poisoned")
        .iter()
        .map(|(_, client)| client.clone())
        .collect();
    let balances = workload::read_balances(&clients, args.accounts, args.call_timeout_ms).await;
    let activations_per_node = count_activations(gateways)
        .await
        .into_iter()
        .filter_map(|(name, count)| count.map(|count| (name, count)))
        .collect();
    let stats = stats.lock().expect("stats lock is never poisoned");
    let decisions = decisions
        .lock()
        .expect("decisions lock is never poisoned")
        .clone();
    Summary {
        nodes: initial_nodes,
        peak_nodes: peak_nodes.max(clients.len()),
        final_nodes: clients.len(),
        duration_secs: duration.as_secs_f64(),
        calls: stats.calls,
        errors: stats.errors,
        errors_by_code: stats.errors_by_code.clone(),
        uncertain_transfers: stats.uncertain_transfers,
        transfer_retries: stats.transfer_retries,
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
        scaling_decisions: decisions,
    }
}

/// Replaces the gateways with the Active members, as the first gateway that replies sees them.
async fn refresh_gateways(gateways: &Gateways) {
    let current: Vec<(String, NodeClient)> = gateways
        .read()
        .expect("gateways lock is never poisoned")
        .clone();
    for (_, client) in &current {
        let mut client = client.clone();
        let Ok(Ok(response)) =
            tokio::time::timeout(Duration::from_millis(500), client.members()).await
        else {
            continue;
        };
        let mut next = Vec::new();
        for member in &response.members {
            if client::state_name(member.state) != "ACTIVE" {
                continue;
            }
            let known = current.iter().find(|(name, _)| *name == member.name);
            let connected = match known {
                Some((_, client)) => Some(client.clone()),
                None => NodeClient::connect(&member.grpc_addr).await.ok(),
            };
            if let Some(client) = connected {
                next.push((member.name.clone(), client));
            }
        }
        if !next.is_empty() {
            *gateways.write().expect("gateways lock is never poisoned") = next;
        }
        return;
    }
}

/// Asks each gateway how many activations it hosts, with `None` for one that failed to reply.
async fn count_activations(gateways: &Gateways) -> BTreeMap<String, Option<u64>> {
    let current: Vec<(String, NodeClient)> = gateways
        .read()
        .expect("gateways lock is never poisoned")
        .clone();
    let mut counts = BTreeMap::new();
    for (name, client) in current {
        let mut client = client.clone();
        let count = tokio::time::timeout(Duration::from_millis(500), client.activation_count())
            .await
            .ok()
            .and_then(Result::ok);
        counts.insert(name, count);
    }
    counts
}
