//! The workload of `gristmill local`: counter increments and account transfers over gRPC,
//! with latency histograms.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use gristmill::routing::{ClientBuilder, ClientConfig, GristmillClient, StrategyKind};
use hdrhistogram::Histogram;
use rand::RngExt;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::NodeClient;

/// Balance every account grain starts with.
pub const INITIAL_BALANCE: i64 = 1_000;
/// Largest amount moved by one transfer; small, so an account rarely runs out of funds.
const MAX_TRANSFER: i64 = 10;
/// Highest latency the histograms record, in microseconds; slower calls count as this value.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Time after the end of the workload during which a transfer without a known outcome is
/// still sent again with its id, so that it finishes before the balances are read.
const TRANSFER_RETRY_GRACE: Duration = Duration::from_secs(20);
/// Pause before a transfer is sent again, so that membership can catch up with a lost node.
const TRANSFER_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Shape of the workload.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    /// Number of counter grains, keyed `c-0` and up.
    pub counters: u64,
    /// Number of account grains, keyed `a-0` and up.
    pub accounts: u64,
    /// Percentage of calls that are account transfers; the others are counter increments.
    pub transfer_percent: u8,
    /// Calls in flight at once during the spike.
    pub concurrency: usize,
    /// End of the spike; after it the quiet phase runs `quiet_concurrency` workers over the
    /// first `quiet_counters` counters only, so the other counters go idle.
    pub spike_until: Instant,
    /// Calls in flight at once during the quiet phase; at least 1.
    pub quiet_concurrency: usize,
    /// Counters the quiet phase calls, keyed `c-0` and up; at least 1.
    pub quiet_counters: u64,
    /// Deadline sent with each call, in milliseconds.
    pub call_timeout_ms: u32,
    /// When the workers stop starting calls.
    pub until: Instant,
}

/// Call counts and latencies, for the whole run and for the current progress window.
pub struct Stats {
    /// Latency of every call that ended, with a reply or an error, in microseconds.
    pub total: Histogram<u64>,
    /// Latency of the calls since the last progress line, in microseconds.
    pub window: Histogram<u64>,
    /// Calls that ended, with a reply or an error.
    pub calls: u64,
    /// Calls that ended with an error status.
    pub errors: u64,
    /// Error counts by gRPC status code name.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Transfers that still had no known outcome when their retries ran out (see
    /// [`settles_transfer`]).
    pub uncertain_transfers: u64,
    /// Transfers sent again with the same id after a failure without a known outcome.
    pub transfer_retries: u64,
    /// Calls in the current progress window.
    pub window_calls: u64,
    /// Errors in the current progress window.
    pub window_errors: u64,
}

impl Stats {
    fn new() -> Stats {
        let histogram = || {
            Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("bounds are valid constants")
        };
        Stats {
            total: histogram(),
            window: histogram(),
            calls: 0,
            errors: 0,
            errors_by_code: BTreeMap::new(),
            uncertain_transfers: 0,
            transfer_retries: 0,
            window_calls: 0,
            window_errors: 0,
        }
    }

    fn record(&mut self, latency: Duration, outcome: Result<(), String>) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(MAX_LATENCY_US)
            .clamp(1, MAX_LATENCY_US);
        self.total.saturating_record(micros);
        self.window.saturating_record(micros);
        self.calls += 1;
        self.window_calls += 1;
        if let Err(code) = outcome {
            self.errors += 1;
            self.window_errors += 1;
            *self.errors_by_code.entry(code).or_default() += 1;
        }
    }

    /// Ends the progress window: returns its calls, errors, p50 and p99 in microseconds, and
    /// starts a new one.
    pub fn take_window(&mut self) -> (u64, u64, u64, u64) {
        let taken = (
            self.window_calls,
            self.window_errors,
            self.window.value_at_quantile(0.5),
            self.window.value_at_quantile(0.99),
        );
        self.window.reset();
        self.window_calls = 0;
        self.window_errors = 0;
        taken
    }
}

/// Shared statistics of a running workload.
pub type SharedStats = Arc<Mutex<Stats>>;

/// The Active nodes by name, refreshed as the cluster scales, for the progress lines and the
/// summary; calls go through the cluster-aware client instead.
pub type Gateways = Arc<RwLock<Vec<(String, NodeClient)>>>;

/// Starts `spec.concurrency` workers that call grains through `client` until `spec.until`;
/// after `spec.spike_until` only `spec.quiet_concurrency` of them go on.
///
/// Dropping the returned set aborts the workers, which is how an interrupt stops them.
pub fn start(spec: &WorkloadSpec, client: &GristmillClient) -> (JoinSet<()>, SharedStats) {
    let stats = Arc::new(Mutex::new(Stats::new()));
    let mut workers = JoinSet::new();
    for index in 0..spec.concurrency {
        let mut spec = spec.clone();
        if index >= spec.quiet_concurrency {
            spec.until = spec.until.min(spec.spike_until);
        }
        let client = client.clone();
        let stats = Arc::clone(&stats);
        workers.spawn(async move { run_worker(spec, client, stats).await });
    }
    (workers, stats)
}

async fn run_worker(spec: WorkloadSpec, client: GristmillClient, stats: SharedStats) {
    let mut rng: StdRng = rand::make_rng();
    let timeout = Some(Duration::from_millis(u64::from(spec.call_timeout_ms)));
    while Instant::now() < spec.until {
        let counters = if Instant::now() < spec.spike_until {
            spec.counters
        } else {
            spec.quiet_counters.min(spec.counters)
        };
        let is_transfer =
            spec.accounts >= 2 && rng.random_range(0..100) < u32::from(spec.transfer_percent);
        let started = Instant::now();
        if is_transfer {
            let from = rng.random_range(0..spec.accounts);
            // Pick a different account by offsetting the source by 1 to accounts - 1.
            let to = (from + rng.random_range(1..spec.accounts)) % spec.accounts;
            let payload = json!({
                "from": account_key(from),
                "to": account_key(to),
                "amount": rng.random_range(1..=MAX_TRANSFER),
                "id": rng.random::<u64>(),
            });
            let retry_until = spec.until + TRANSFER_RETRY_GRACE;
            let (outcome, retries) = transfer(&client, &payload, timeout, retry_until).await;
            let uncertain = outcome
                .as_ref()
                .is_err_and(|label| !settles_transfer(label));
            let mut stats = stats.lock().expect("stats lock is never poisoned");
            stats.record(started.elapsed(), outcome);
            stats.transfer_retries += retries;
            if uncertain {
                stats.uncertain_transfers += 1;
            }
        } else {
            let key = format!("c-{}", rng.random_range(0..counters));
            let payload = json!({ "amount": 1 });
            let outcome = client
                .invoke_json::<_, Value>("counter", &key, "add", &payload, timeout)
                .await
                .map(drop)
                .map_err(|error| error_label(&error));
            let mut stats = stats.lock().expect("stats lock is never poisoned");
            stats.record(started.elapsed(), outcome);
        }
    }
}

/// Sends the transfer `payload`, which carries its id, until its outcome is known or
/// `retry_until` passes. Returns the last outcome and the number of retries.
async fn transfer(
    client: &GristmillClient,
    payload: &Value,
    timeout: Option<Duration>,
    retry_until: Instant,
) -> (Result<(), String>, u64) {
    let mut retries = 0;
    loop {
        let outcome = client
            .invoke_json::<_, Value>("bank", "main", "transfer", payload, timeout)
            .await
            .map(drop)
            .map_err(|error| error_label(&error));
        match outcome {
            Err(label) if !settles_transfer(&label) && Instant::now() < retry_until => {
                retries += 1;
                tokio::time::sleep(TRANSFER_RETRY_PAUSE).await;
            }
            outcome => return (outcome, retries),
        }
    }
}

/// Returns whether a transfer that failed with the error `label` is known to have left every
/// balance as it was: the bank rejected it before the withdrawal, the withdrawal was
/// rejected (`transfer_id_reused` included), or the receiver rejected the deposit and the
/// withdrawal was paid back (`transfer_refunded`). The workload sends every transfer with an
/// id, so a withdrawal that was never sent comes back as `transfer_incomplete`, because an
/// earlier attempt may have withdrawn. Any other failure, such as a lost node or a deadline in
/// the middle of the transfer (`transfer_incomplete`), may have left the amount withdrawn and
/// not yet deposited, until the transfer is sent again with its id.
fn settles_transfer(label: &str) -> bool {
    const SETTLED: [&str; 5] = [
        "invalid_transfer",
        "invalid_amount",
        "insufficient_funds",
        "transfer_id_reused",
        "transfer_refunded",
    ];
    label
        .split_once(':')
        .is_some_and(|(_, grain_code)| SETTLED.contains(&grain_code))
}

/// Returns the label under which the summary counts `error`: its gRPC code, followed by the
/// grain's own error code for an error that a grain returned, such as
/// `FailedPrecondition:insufficient_funds`.
fn error_label(error: &gristmill::routing::ClientError) -> String {
    let code = error.code().unwrap_or(tonic::Code::Unknown);
    let grain_code = match error {
        gristmill::routing::ClientError::Status { status, .. } => status
            .metadata()
            .get(gristmill::api::ERROR_CODE_METADATA)
            .and_then(|value| value.to_str().ok()),
        _ => None,
    };
    match grain_code {
        Some(grain_code) => format!("{code:?}:{grain_code}"),
        None => format!("{code:?}"),
    }
}

/// Builds the cluster-aware client of the workload, watching membership through `seeds`.
///
/// Counters go straight to the node that hosts them (grain-aware), and the `bank` worker's
/// calls go round robin, so every node runs transfers. Calls are retried only where they
/// cannot have run, because increments and transfers are not idempotent.
pub async fn connect_client(seeds: Vec<String>) -> Result<GristmillClient, String> {
    let config = ClientConfig {
        seeds,
        strategy: StrategyKind::GrainAware,
        strategy_by_grain_type: BTreeMap::from([("bank".to_owned(), StrategyKind::RoundRobin)]),
        ..ClientConfig::default()
    };
    ClientBuilder::new(config)
        .connect()
        .await
        .map_err(|error| format!("cannot connect the workload client: {error}"))
}

/// Returns the key of account number `index`.
pub fn account_key(index: u64) -> String {
    format!("a-{index}")
}

/// Sum of the account balances read after the workload, and the reads that failed.
pub struct BalanceCheck {
    /// Sum of the balances that could be read.
    pub total: i64,
    /// Accounts whose balance could not be read.
    pub failed_reads: u64,
}

/// Reads every account's balance, spreading the reads over the nodes.
pub async fn read_balances(
    nodes: &[NodeClient],
    accounts: u64,
    call_timeout_ms: u32,
) -> BalanceCheck {
    let mut check = BalanceCheck {
        total: 0,
        failed_reads: 0,
    };
    let mut nodes = nodes.to_vec();
    for index in 0..accounts {
        let slot = usize::try_from(index).expect("account index fits usize") % nodes.len();
        let reply = nodes[slot]
            .invoke_json(
                "account",
                &account_key(index),
                "balance",
                &serde_json::Value::Null,
                call_timeout_ms,
            )
            .await;
        match reply.map(|response| crate::client::reply_json(&response).as_i64()) {
            Ok(Some(balance)) => check.total += balance,
            Ok(None) | Err(_) => check.failed_reads += 1,
        }
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_resets_but_total_keeps_counting() {
        let mut stats = Stats::new();
        stats.record(Duration::from_micros(100), Ok(()));
        stats.record(Duration::from_micros(300), Err("Unavailable".to_owned()));

        let (calls, errors, p50, _) = stats.take_window();
        assert_eq!((calls, errors), (2, 1));
        assert!((99..=101).contains(&p50), "p50 {p50}");
        assert_eq!(stats.take_window().0, 0);
        assert_eq!(stats.calls, 2);
        assert_eq!(stats.errors_by_code.get("Unavailable"), Some(&1));
    }

    #[test]
    fn transfer_outcome_known_only_for_settled_codes() {
        for settled in [
            "FailedPrecondition:insufficient_funds",
            "InvalidArgument:invalid_transfer",
            "InvalidArgument:invalid_amount",
            "InvalidArgument:transfer_id_reused",
            "FailedPrecondition:transfer_refunded",
        ] {
            assert!(settles_transfer(settled), "{settled}");
        }
        for uncertain in [
            "FailedPrecondition:transfer_incomplete",
            "FailedPrecondition:call_failed",
            "Unavailable",
            "DeadlineExceeded",
            "Unknown",
        ] {
            assert!(!settles_transfer(uncertain), "{uncertain}");
        }
    }

    #[test]
    fn grain_error_label_names_its_code() {
        let error = gristmill::grain::CallError::Grain {
            grain: gristmill::grain::GrainId::new("account", "a-1"),
            error: gristmill::grain::GrainError::new("insufficient_funds", "balance 3"),
        };
        let status = gristmill::api::call_error_status(&error);
        let error = gristmill::routing::ClientError::Status {
            node: "node-0".into(),
            attempts: 1,
            status,
        };
        assert_eq!(error_label(&error), "FailedPrecondition:insufficient_funds");
    }

    #[test]
    fn latency_above_histogram_range_is_clamped() {
        let mut stats = Stats::new();
        stats.record(Duration::from_secs(3_600), Ok(()));
        assert_eq!(stats.total.len(), 1);
    }
}
