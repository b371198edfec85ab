//! Counter workloads for fault scenarios: a ledger of sent and acknowledged increments,
//! increment streams through gateway nodes, their call log, and the checks of the counters
//! against the ledger afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gristmill::api::{ERROR_CODE_METADATA, pb};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{NodeClient, wait_until};

/// Time beyond a call's deadline after which the test counts the call as hung.
pub const HANG_MARGIN: Duration = Duration::from_secs(1);

/// Returns the seed of this run: `GRISTMILL_CHAOS_SEED` if set, otherwise a fresh one.
pub fn chaos_seed(scenario: &str) -> u64 {
    let seed = match std::env::var("GRISTMILL_CHAOS_SEED") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|error| panic!("GRISTMILL_CHAOS_SEED={text:?} is invalid: {error}")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64,
    };
    eprintln!("{scenario}: seed {seed} (replay with GRISTMILL_CHAOS_SEED={seed})");
    seed
}

/// Returns the current wall-clock time in nanoseconds since the Unix epoch, the clock of the
/// turn audit.
pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

/// Counter grains with the increments sent to and acknowledged by each.
pub struct Ledger {
    /// Grain keys, by index.
    pub keys: Vec<String>,
    /// Increments sent to each grain.
    pub sent: Vec<AtomicU64>,
    /// Increments each grain acknowledged.
    pub acknowledged: Vec<AtomicU64>,
}

impl Ledger {
    pub fn new(prefix: &str, count: usize) -> Arc<Ledger> {
        Arc::new(Ledger {
            keys: (0..count).map(|i| format!("{prefix}-{i}")).collect(),
            sent: (0..count).map(|_| AtomicU64::new(0)).collect(),
            acknowledged: (0..count).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    pub fn acknowledged_total(&self) -> u64 {
        self.acknowledged
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }

    pub fn sent_total(&self) -> u64 {
        self.sent.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Outcomes of the calls of a workload.
#[derive(Default, Debug)]
pub struct CallLog {
    /// Calls that returned a reply.
    pub replies: u64,
    /// Failed calls by gRPC code and the node's error code (`untyped` when it set none).
    pub errors: BTreeMap<String, u64>,
    /// First message of each kind of failure, for diagnosis.
    pub first_messages: BTreeMap<String, String>,
    /// Calls that had no outcome by their deadline plus [`HANG_MARGIN`].
    pub hung: Vec<String>,
    /// Slowest call, whatever its outcome.
    pub max_latency: Duration,
}

impl CallLog {
    pub fn merge(&mut self, other: CallLog) {
        self.replies += other.replies;
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        for (kind, message) in other.first_messages {
            self.first_messages.entry(kind).or_insert(message);
        }
        self.hung.extend(other.hung);
        self.max_latency = self.max_latency.max(other.max_latency);
    }

    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn untyped_errors(&self) -> u64 {
        self.errors
            .iter()
            .filter(|(kind, _)| kind.ends_with("/untyped"))
            .map(|(_, count)| count)
            .sum()
    }
}

/// Names a failed call by its gRPC code and the node's error code.
pub fn error_kind(status: &tonic::Status) -> String {
    let code = status
        .metadata()
        .get(ERROR_CODE_METADATA)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("untyped");
    format!("{:?}/{code}", status.code())
}

/// Increments a grain once through `client` and records the outcome in `ledger` and `log`.
pub async fn increment(
    client: &mut NodeClient,
    ledger: &Ledger,
    index: usize,
    deadline: Duration,
    log: &mut CallLog,
) {
    let key = &ledger.keys[index];
    ledger.sent[index].fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let call = client.invoke(
        "counter",
        key,
        "add",
        json!({ "amount": 1 }),
        deadline.as_millis() as u32,
    );
    let outcome = tokio::time::timeout(deadline + HANG_MARGIN, call).await;
    log.max_latency = log.max_latency.max(started.elapsed());
    match outcome {
        Ok(Ok(_)) => {
            ledger.acknowledged[index].fetch_add(1, Ordering::Relaxed);
            log.replies += 1;
        }
        Ok(Err(status)) => {
            let kind = error_kind(&status);
            *log.errors.entry(kind.clone()).or_default() += 1;
            log.first_messages
                .entry(kind)
                .or_insert_with(|| format!("{key}: {}", status.message()));
        }
        Err(_) => log
            .hung
            .push(format!("add {key} after {:?}", started.elapsed())),
    }
}

/// Increment streams over a ledger's grains, each through one gateway node.
pub struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<CallLog>>,
}

impl Workload {
    /// Starts `workers` streams of increments to random grains, each call with `deadline`.
    pub fn start(
        ledger: &Arc<Ledger>,
        gateways: &[NodeClient],
        workers: usize,
        deadline: Duration,
        seed: u64,
    ) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for worker in 0..workers {
            let (ledger, stop) = (ledger.clone(), stop.clone());
            let mut client = gateways[worker % gateways.len()].clone();
            let mut rng = StdRng::seed_from_u64(seed ^ (worker as u64 + 1));
            tasks.push(tokio::spawn(async move {
                let mut log = CallLog::default();
                while !stop.load(Ordering::Relaxed) {
                    let index = rng.random_range(0..ledger.keys.len());
                    increment(&mut client, &ledger, index, deadline, &mut log).await;
                }
                log
            }));
        }
        Workload { stop, tasks }
    }

    /// Stops the streams, prints their merged call log, and returns it.
    pub async fn finish(self) -> CallLog {
        self.stop.store(true, Ordering::Relaxed);
        let mut log = CallLog::default();
        for task in self.tasks {
            log.merge(task.await.expect("workload task"));
        }
        eprintln!(
            "calls: {} replies, errors {:?} (first of each: {:?}), {} hung, slowest {:?}",
            log.replies,
            log.errors,
            log.first_messages,
            log.hung.len(),
            log.max_latency
        );
        log
    }
}

/// Increments every grain of `ledger` once, through the gateways in turn, so the grains
/// spread over the nodes; panics on a failed call.
pub async fn activate_all(ledger: &Ledger, gateways: &[NodeClient]) {
    let mut log = CallLog::default();
    for index in 0..ledger.keys.len() {
        let mut client = gateways[index % gateways.len()].clone();
        increment(
            &mut client,
            ledger,
            index,
            Duration::from_secs(10),
            &mut log,
        )
        .await;
    }
    assert_eq!(
        log.replies as usize,
        ledger.keys.len(),
        "first increments: {log:?}"
    );
}

/// Waits until the workload has `count` more acknowledged increments than `from`.
pub async fn wait_acknowledged(ledger: &Ledger, from: u64, count: u64) {
    let what = format!("{count} more increments are acknowledged");
    wait_until(&what, Duration::from_secs(60), || async move {
        let done = ledger.acknowledged_total() - from;
        if done >= count {
            Ok(())
        } else {
            Err(format!("{done} acknowledged"))
        }
    })
    .await;
}

/// Reads one counter, retrying failed reads for a few seconds after a fault.
pub async fn read_counter(client: &NodeClient, key: &str) -> i64 {
    let (value, _) = wait_until(
        &format!("counter {key} can be read"),
        Duration::from_secs(15),
        || {
            let mut client = client.clone();
            async move {
                match client
                    .invoke("counter", key, "get", json!(null), 5_000)
                    .await
                {
                    Ok((value, _)) => value.as_i64().ok_or(format!("get replied {value}")),
                    Err(status) => Err(status.to_string()),
                }
            }
        },
    )
    .await;
    value
}

/// Reads every counter and returns those whose value is not between the increments
/// acknowledged and the increments sent.
pub async fn counters_out_of_bounds(ledger: &Ledger, readers: &[NodeClient]) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut extra = 0;
    for (index, key) in ledger.keys.iter().enumerate() {
        let value = read_counter(&readers[index % readers.len()], key).await as u64;
        let acknowledged = ledger.acknowledged[index].load(Ordering::Relaxed);
        let sent = ledger.sent[index].load(Ordering::Relaxed);
        if value < acknowledged || value > sent {
            wrong.push(format!(
                "{key}: value {value}, acknowledged {acknowledged}, sent {sent}"
            ));
        }
        extra += value - acknowledged.min(value);
    }
    eprintln!(
        "counters: {} grains, {} increments acknowledged of {} sent, {extra} unacknowledged ones applied",
        ledger.keys.len(),
        ledger.acknowledged_total(),
        ledger.sent_total()
    );
    wrong
}

/// Lists the names in the Active set of each node's view, for the agreement check.
pub async fn active_sets(clients: &[NodeClient]) -> Result<Vec<BTreeSet<String>>, String> {
    let mut sets = Vec::new();
    for client in clients {
        let members = client.clone().members().await?;
        sets.push(
            members
                .iter()
                .filter(|member| member.state == pb::NodeState::Active as i32)
                .map(|member| format!("{}#{:x}", member.name, member.boot_id))
                .collect(),
        );
    }
    Ok(sets)
}
