//! Load drivers that run inside a node process (or next to a bare transport), so grain calls
//! are measured through `GrainRef` without the gRPC API in front.
//!
//! Each driver prints one JSON line with its result on stdout and exits.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gristmill::grain::samples::{self, Counter, Get};
use gristmill::grain::{Grain, GrainContext, GrainError, GrainRef, Handler, Method, Methods};
use gristmill::membership::NodeState;
use gristmill::runtime::{Node, NodeConfig};
use serde::{Deserialize, Serialize};

use super::stats::{self, Measurement, Worker};

/// Options of the hidden `gristmill bench driver` subcommand.
#[derive(Debug, clap::Args)]
pub struct DriverArgs {
    /// What to drive.
    #[arg(value_enum)]
    pub kind: DriverKind,
    /// Gossip address of the node to join (`remote`, `send`), or cluster address of the node
    /// to send to (`oneway`).
    #[arg(long)]
    pub peer: Option<SocketAddr>,
    /// Name of the peer node (`oneway`).
    #[arg(long)]
    pub peer_name: Option<String>,
    /// Boot id of the peer node (`oneway`).
    #[arg(long)]
    pub peer_boot_id: Option<u64>,
    /// Address of the peer's `/metrics` endpoint (`oneway`, `send`).
    #[arg(long)]
    pub peer_metrics: Option<SocketAddr>,
    /// Recorded time of each measurement.
    #[arg(long, default_value = "10s")]
    pub duration: humantime::Duration,
    /// Calls in flight in the concurrent measurement, and counter grains called.
    #[arg(long, default_value_t = 64)]
    pub in_flight: u16,
    /// Grains to activate (`activation`).
    #[arg(long, default_value_t = 100_000)]
    pub grains: u64,
    /// Directory for the driver node's SQLite file.
    #[arg(long)]
    pub data_dir: PathBuf,
}

/// The load a driver generates.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DriverKind {
    /// `GrainRef` calls from a node in this process to counter grains on the peer node.
    Remote,
    /// One-way grain messages from a bare transport in this process to the peer node.
    Oneway,
    /// One-way `GrainRef::send` from a node in this process to counter grains on the peer
    /// node.
    Send,
    /// Cold activations and the memory of idle activations on a node in this process.
    Activation,
}

/// Result of the `remote` driver.
#[derive(Debug, Serialize, Deserialize)]
pub struct RemoteResult {
    /// One call in flight.
    pub one: Measurement,
    /// `in_flight` calls in flight.
    pub many: Measurement,
    /// Activations the driver's own node hosted at the end, which is 0 when every call was remote.
    pub local_activations: i64,
}

/// Result of the `oneway` and `send` drivers.
#[derive(Debug, Serialize, Deserialize)]
pub struct OnewayResult {
    /// Turns the receiver ran for the messages, over the time until the last one ran.
    pub delivered: Measurement,
    /// One-way messages sent.
    pub sent: u64,
}

/// Result of the `activation` driver.
#[derive(Debug, Serialize, Deserialize)]
pub struct ActivationResult {
    /// Activations started, over the time they took.
    pub activations: Measurement,
    /// Resident memory before the first activation, in bytes.
    pub rss_before_bytes: u64,
    /// Resident memory with every activation idle, in bytes.
    pub rss_after_bytes: u64,
}

/// Key of the `index`th counter grain that the remote benchmarks call.
pub fn counter_key(index: usize) -> String {
    format!("bench-{index}")
}

fn print_result<T: Serialize>(result: &T) -> Result<(), String> {
    let line = serde_json::to_string(result).map_err(|error| error.to_string())?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|error| format!("cannot write the result: {error}"))
}

/// Runs the driver and prints its result.
pub async fn run(args: DriverArgs, cookie: String) -> Result<(), String> {
    match args.kind {
        DriverKind::Remote => print_result(&drive_remote(&args, cookie).await?),
        DriverKind::Oneway => print_result(&super::oneway::drive(&args, cookie).await?),
        DriverKind::Send => print_result(&super::oneway::drive_send(&args, cookie).await?),
        DriverKind::Activation => print_result(&drive_activation(&args, cookie).await?),
    }
}

/// Starts a node of the bench grain types, joining through `seed`, and waits until it is
/// Active.
pub(super) async fn start_node(
    name: &str,
    seed: Option<SocketAddr>,
    cookie: String,
    data_dir: &Path,
) -> Result<Node, String> {
    let mut config = NodeConfig {
        node_name: name.into(),
        cookie,
        metrics_port: None,
        seeds: seed.iter().map(ToString::to_string).collect(),
        ..NodeConfig::default()
    };
    config.storage.sqlite_path = data_dir.join(super::procs::CLUSTER_DATABASE);
    let mut registry = samples::registry();
    registry.register::<Echo>();
    let node = Node::start(config, registry)
        .await
        .map_err(|error| format!("the driver node failed to start: {error}"))?;
    let mut state = node.watch_state();
    tokio::time::timeout(
        Duration::from_secs(30),
        state.wait_for(|state| *state == NodeState::Active),
    )
    .await
    .map_err(|_| "the driver node did not become Active within 30 s".to_string())?
    .map_err(|_| "the driver node stopped while joining".to_string())?;
    Ok(node)
}

struct CounterWorker(GrainRef<Counter>);

impl Worker for CounterWorker {
    async fn call(&mut self) -> Result<(), String> {
        self.0
            .call(Get)
            .await
            .map(|_| ())
            .map_err(|error| format!("grain call failed: {error}"))
    }
}

/// Returns references to the first `count` bench counters, each called once.
///
/// The first call of each grain resolves it through the directory and fills the cache. It
/// retries while the session to the peer forms.
pub(super) async fn warm_counters(
    node: &Node,
    count: usize,
) -> Result<Vec<GrainRef<Counter>>, String> {
    let grains: Vec<GrainRef<Counter>> = (0..count)
        .map(|index| node.grain::<Counter>(counter_key(index)))
        .collect();
    for grain in &grains {
        let started = Instant::now();
        while let Err(error) = grain.call(Get).await {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!("warm-up call to {} failed: {error}", grain.id()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(grains)
}

async fn drive_remote(args: &DriverArgs, cookie: String) -> Result<RemoteResult, String> {
    let seed = args.peer.ok_or("--peer names the node to join")?;
    let node = start_node("bench-driver", Some(seed), cookie, &args.data_dir).await?;
    let in_flight = usize::from(args.in_flight.max(1));
    let grains = warm_counters(&node, in_flight).await?;
    let duration = Duration::from(args.duration);
    let warmup = stats::warmup_for(duration);
    let one = stats::closed_loop(vec![CounterWorker(grains[0].clone())], warmup, duration).await?;
    let workers = grains.into_iter().map(CounterWorker).collect();
    let many = stats::closed_loop(workers, warmup, duration).await?;
    let local_activations = node.metrics().activations.get();
    // Leave instead of vanishing: a member that the host's failure detector declares down
    // counts against the host's majority, and after two such drivers the host, alone with
    // them, would hold its turns as a node on the minority side does.
    node.leave().await;
    Ok(RemoteResult {
        one,
        many,
        local_activations,
    })
}

/// A grain without state, so activating it costs the runtime only and no storage read.
struct Echo;

/// Returns `value` unchanged.
#[derive(Debug, Serialize, Deserialize)]
struct Ping(u64);

impl Method for Ping {
    const NAME: &'static str = "ping";
    type Response = u64;
}

impl Grain for Echo {
    const TYPE_NAME: &'static str = "bench-echo";

    async fn activate(_ctx: &mut GrainContext) -> Result<Self, GrainError> {
        Ok(Echo)
    }

    fn register(methods: &mut Methods<Self>) {
        methods.add::<Ping>();
    }
}

impl Handler<Ping> for Echo {
    async fn handle(&mut self, request: Ping, _ctx: &mut GrainContext) -> Result<u64, GrainError> {
        Ok(request.0)
    }
}

/// Returns this process's resident memory in bytes, from `/proc/self/status`.
fn resident_bytes() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|error| format!("cannot read /proc/self/status: {error}"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .ok_or("/proc/self/status has no VmRSS line")?;
    Ok(kib * 1024)
}

async fn drive_activation(args: &DriverArgs, cookie: String) -> Result<ActivationResult, String> {
    let node = start_node("bench-activation", None, cookie, &args.data_dir).await?;
    let rss_before_bytes = resident_bytes()?;
    let next = Arc::new(AtomicU64::new(0));
    let total = args.grains;
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.in_flight.max(1))
        .map(|_| {
            let node = node.clone();
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total {
                        return Ok::<(), String>(());
                    }
                    node.grain::<Echo>(format!("idle-{index}"))
                        .call(Ping(index))
                        .await
                        .map_err(|error| format!("activating call failed: {error}"))?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await
            .map_err(|error| format!("activation task failed: {error}"))??;
    }
    let elapsed = started.elapsed();
    let rss_after_bytes = resident_bytes()?;
    let activations = Measurement {
        ops: node.metrics().activations_started.get(),
        elapsed_secs: elapsed.as_secs_f64(),
        latency: None,
    };
    Ok(ActivationResult {
        activations,
        rss_before_bytes,
        rss_after_bytes,
    })
}
