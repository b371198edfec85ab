//! Grain lifecycle in real node processes: durable reminders, in-memory timers, stateless
//! workers, and start-up checks of the node configuration.
//!
//! A panicking grain is not tested here, because no sample grain that `gristmill run` hosts
//! can panic. `tests/single_node.rs` checks in-process that a panic fails only its call and
//! that the node keeps serving.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::{BIN, COOKIE, Cluster, NodeClient, Timing, cluster_slot, wait_gone, wait_until};
use gristmill::api::ERROR_CODE_METADATA;
use gristmill::grain::samples::BANK_WORKERS;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Tick period of the ticker in these tests: the shortest one it accepts.
const PERIOD: Duration = Duration::from_secs(1);
/// Interval between reminder polls of the test nodes, so ticks fire at most this late.
const REMINDER_POLL_MS: u64 = 100;
/// Margin for a tick on a loaded test machine, beyond the period and the poll interval.
const TICK_SLACK: Duration = Duration::from_secs(2);
/// Time a reminder has to fire again after its host died: a node that dies while it holds
/// the reminder's lease (a few milliseconds per tick) leaves it leased for 30 s.
const REFIRE_WITHIN: Duration = Duration::from_secs(40);
/// Time the survivors have to declare a killed node down.
const DOWN_WITHIN: Duration = Duration::from_secs(15);

/// Writes a node config file that sets the reminder poll interval to [`REMINDER_POLL_MS`].
fn fast_reminder_config() -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("create the config file");
    writeln!(file, "reminder_poll_ms = {REMINDER_POLL_MS}").expect("write the config file");
    file
}

/// Calls `method` of ticker `key` through `client`; returns the reply and the serving node.
async fn call_ticker(
    client: &mut NodeClient,
    key: &str,
    method: &str,
    payload: Value,
) -> Result<(Value, String), tonic::Status> {
    client.invoke("ticker", key, method, payload, 0).await
}

/// Reads a tick count of ticker `key` with `method`: `count` for the reminder's ticks,
/// `timer_count` for the timer's. Returns the count and the serving node.
async fn count(client: &mut NodeClient, key: &str, method: &str) -> Result<(u64, String), String> {
    let (value, served_by) = call_ticker(client, key, method, json!(null))
        .await
        .map_err(|status| format!("{method}: {status}"))?;
    let count = value
        .as_u64()
        .unwrap_or_else(|| panic!("ticker {key} returned the {method} {value}"));
    Ok((count, served_by))
}

/// Waits until the `method` count of ticker `key` reaches `at_least` and returns the count,
/// the serving node and the time it took.
async fn wait_ticks(
    client: &NodeClient,
    key: &str,
    method: &str,
    at_least: u64,
    within: Duration,
) -> (u64, String, Duration) {
    let what = format!("ticker {key} counts {at_least} ticks with {method}");
    let ((count, served_by), took) = wait_until(&what, within, || {
        let mut client = client.clone();
        async move {
            let (count, served_by) = count(&mut client, key, method).await?;
            if count < at_least {
                return Err(format!("{count} ticks on {served_by}"));
            }
            Ok((count, served_by))
        }
    })
    .await;
    (count, served_by, took)
}

// Goal: a durable reminder fires once per period, and keeps firing, with its count intact,
// after the node that hosts the grain dies.
// Method: start a 1 s ticker on a two-node cluster whose nodes poll reminders every 100 ms,
// time its first three ticks, kill -9 the ticker's node, and wait for two more ticks on the
// survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminder_keeps_firing_after_host_dies() {
    let _slot = cluster_slot().await;
    let config = fast_reminder_config();
    let config_path = config.path().to_str().expect("UTF-8 temporary path");
    let mut cluster = Cluster::start_with(2, Timing::FAST, &["--config", config_path]).await;
    let mut clients = cluster.clients().await;
    let key = "tick-tock";

    let too_short = call_ticker(&mut clients[0], key, "start", json!({ "period_ms": 10 }))
        .await
        .expect_err("a period below 1 s is rejected");
    let code = too_short.metadata().get(ERROR_CODE_METADATA);
    assert_eq!(
        code.and_then(|code| code.to_str().ok()),
        Some("invalid_period"),
        "{too_short:?}"
    );

    let period_ms = u64::try_from(PERIOD.as_millis()).expect("small");
    let started = Instant::now();
    call_ticker(
        &mut clients[0],
        key,
        "start",
        json!({ "period_ms": period_ms }),
    )
    .await
    .expect("start the ticker");
    let (ticks, host, _) = wait_ticks(&clients[0], key, "count", 3, 3 * PERIOD + TICK_SLACK).await;
    let took = started.elapsed();
    eprintln!("{ticks} ticks after {took:?} on {host}");
    assert!(ticks <= 4, "{ticks} ticks within {took:?} of a 1 s period");
    // The third tick is due three periods after the start, and reminders never fire early.
    assert!(took >= 3 * PERIOD, "three ticks after only {took:?}");

    let victim = cluster
        .nodes
        .iter()
        .position(|node| node.ready.node == host)
        .unwrap_or_else(|| panic!("{host} is not a node of the cluster"));
    let survivor = 1 - victim;
    let (before_kill, _) = count(&mut clients[victim], key, "count")
        .await
        .expect("count before the kill");
    cluster.nodes[victim].kill9().await;
    wait_gone(&clients[survivor..=survivor], &host, DOWN_WITHIN).await;

    let (after, served_by, took) = wait_ticks(
        &clients[survivor],
        key,
        "count",
        before_kill + 2,
        REFIRE_WITHIN,
    )
    .await;
    eprintln!("{after} ticks {took:?} after {host} died, on {served_by}");
    assert_eq!(served_by, cluster.nodes[survivor].ready.node);

    let (stopped, _) = call_ticker(&mut clients[survivor], key, "stop", json!(null))
        .await
        .expect("stop the ticker");
    assert_eq!(stopped, json!(true), "the reminder was registered");
    let (stopped_again, _) = call_ticker(&mut clients[survivor], key, "stop", json!(null))
        .await
        .expect("stop the ticker again");
    assert_eq!(stopped_again, json!(false), "the reminder is gone");
}

/// Tick period of the ticker's in-memory timer in the timer test.
const TIMER_PERIOD: Duration = Duration::from_millis(100);
/// Time three timer ticks may take on a loaded test machine.
const TIMER_TICKS_WITHIN: Duration = Duration::from_secs(10);
/// Idle age of the test nodes in the timer test, in seconds.
const TIMER_IDLE_AFTER_SECS: u64 = 2;
/// Time the timer test watches a stopped timer's count for a tick that must not come: ten
/// periods. It is an observation window, not a wait for an event.
const QUIET_WINDOW: Duration = Duration::from_secs(1);

/// Reads the timer count of ticker `key`, activating it if needed, and checks that it stays
/// the same for [`QUIET_WINDOW`]. Returns the count and the serving node.
async fn assert_timer_quiet(client: &NodeClient, key: &str, why: &str) -> (u64, String) {
    let what = format!("ticker {key} answers timer_count");
    let ((first, served_by), _) = wait_until(&what, Duration::from_secs(15), || {
        let mut client = client.clone();
        async move { count(&mut client, key, "timer_count").await }
    })
    .await;
    tokio::time::sleep(QUIET_WINDOW).await;
    let (second, _) = count(&mut client.clone(), key, "timer_count")
        .await
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(first, second, "ticker {key} counted timer ticks {why}");
    (first, served_by)
}

// Goal: a timer fires repeatedly while its grain is active, and ends with the activation: it
// stops when the grain is deactivated for idleness and does not survive a kill -9 of its node,
// unlike a reminder.
// Method: start a 100 ms timer that persists its tick count and wait for three ticks. Let the
// grain go idle and poll ListActivations until it is gone. Then read the persisted count
// through a new activation and check that it stays put. Repeat with a second grain whose node
// is killed instead, reading the count on the survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_ends_with_its_activation() {
    let _slot = cluster_slot().await;
    let idle_after = TIMER_IDLE_AFTER_SECS.to_string();
    let mut cluster =
        Cluster::start_with(2, Timing::FAST, &["--idle-after-secs", &idle_after]).await;
    let mut clients = cluster.clients().await;
    let period_ms = u64::try_from(TIMER_PERIOD.as_millis()).expect("small");

    // Idle collection stops the timer.
    let key = "beat-idle";
    let (_, host) = call_ticker(
        &mut clients[0],
        key,
        "start_timer",
        json!({ "period_ms": period_ms }),
    )
    .await
    .expect("start the timer");
    let (ticks, _, _) = wait_ticks(&clients[0], key, "timer_count", 3, TIMER_TICKS_WITHIN).await;
    eprintln!("{ticks} timer ticks of {key} on {host}");
    let host_index = cluster
        .nodes
        .iter()
        .position(|node| node.ready.node == host)
        .unwrap_or_else(|| panic!("{host} is not a node of the cluster"));
    let what = format!("{key} is deactivated on {host}");
    let idle_within = Duration::from_secs(TIMER_IDLE_AFTER_SECS + 10);
    wait_until(&what, idle_within, || {
        let mut client = clients[host_index].clone();
        async move {
            let listed = client.activations("ticker").await;
            if listed.iter().any(|activation| activation.key == key) {
                return Err(format!("{} ticker activations", listed.len()));
            }
            Ok(())
        }
    })
    .await;
    let (after_idle, _) = assert_timer_quiet(&clients[0], key, "after idle collection").await;
    assert!(
        after_idle >= ticks,
        "{after_idle} ticks persisted, {ticks} seen before"
    );

    // A kill -9 of the node ends the timer: nothing restarts it elsewhere.
    let key = "beat-kill";
    let (_, host) = call_ticker(
        &mut clients[0],
        key,
        "start_timer",
        json!({ "period_ms": period_ms }),
    )
    .await
    .expect("start the second timer");
    let (before_kill, _, _) =
        wait_ticks(&clients[0], key, "timer_count", 3, TIMER_TICKS_WITHIN).await;
    let victim = cluster
        .nodes
        .iter()
        .position(|node| node.ready.node == host)
        .unwrap_or_else(|| panic!("{host} is not a node of the cluster"));
    let survivor = 1 - victim;
    cluster.nodes[victim].kill9().await;
    wait_gone(&clients[survivor..=survivor], &host, DOWN_WITHIN).await;
    let (after_kill, served_by) =
        assert_timer_quiet(&clients[survivor], key, "after its node was killed").await;
    eprintln!("{before_kill} timer ticks before the kill, {after_kill} after, on {served_by}");
    assert_eq!(served_by, cluster.nodes[survivor].ready.node);
    assert!(
        after_kill >= before_kill,
        "{after_kill} ticks persisted, {before_kill} seen before"
    );
}

/// Sends a transfer of 1 for each `(from, to)` account pair through `client`, all at once,
/// and returns the serving node of each, or what failed.
async fn transfer_at_once(
    client: &NodeClient,
    pairs: impl Iterator<Item = (String, String)>,
) -> Vec<Result<String, String>> {
    let mut transfers = JoinSet::new();
    for (from, to) in pairs {
        let mut client = client.clone();
        transfers.spawn(async move {
            let payload = json!({ "from": from, "to": to, "amount": 1 });
            let outcome = client.invoke("bank", "main", "transfer", payload, 0).await;
            outcome
                .map(|(_, served_by)| served_by)
                .map_err(|status| format!("transfer {from} -> {to}: {status}"))
        });
    }
    transfers.join_all().await
}

// Goal: calls to a stateless worker run in parallel on several activations of the node that
// receives them, up to the worker limit, and no other node activates the worker.
// Method: send 64 transfers at once through node-0 of a two-node cluster, each between two
// accounts of its own, then list the bank activations of both nodes and check that the
// transfers conserved the accounts' total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_worker_calls_spread_over_local_activations() {
    const TRANSFERS: usize = 64;
    let _slot = cluster_slot().await;
    let cluster = Cluster::start(2, Timing::FAST).await;
    let mut clients = cluster.clients().await;

    let pairs =
        (0..TRANSFERS).map(|index| (format!("w-{}", 2 * index), format!("w-{}", 2 * index + 1)));
    for outcome in transfer_at_once(&clients[0], pairs).await {
        let served_by = outcome.unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!(
            served_by, "node-0",
            "a worker call is served where it arrives"
        );
    }

    let workers = clients[0].activations("bank").await;
    eprintln!("bank activations on node-0: {workers:?}");
    assert!(
        workers.len() >= 2,
        "{TRANSFERS} parallel transfers ran on {} bank activation(s)",
        workers.len()
    );
    let limit = usize::try_from(BANK_WORKERS).expect("small");
    assert!(
        workers.len() <= limit,
        "{} bank activations exceed the limit of {limit}",
        workers.len()
    );
    assert!(
        workers.iter().all(|worker| worker.key == "main"),
        "{workers:?}"
    );
    let remote = clients[1].activations("bank").await;
    assert!(
        remote.is_empty(),
        "node-1 activated bank workers: {remote:?}"
    );

    let mut total = 0;
    for account in 0..2 * TRANSFERS {
        let key = format!("w-{account}");
        let (balance, _) = clients[account % 2]
            .invoke("account", &key, "balance", json!(null), 0)
            .await
            .unwrap_or_else(|status| panic!("balance of {key}: {status}"));
        total += balance
            .as_i64()
            .unwrap_or_else(|| panic!("balance of {key} is {balance}"));
    }
    let initial =
        i64::try_from(2 * TRANSFERS).expect("small") * gristmill::grain::samples::INITIAL_BALANCE;
    assert_eq!(total, initial, "total balance after the transfers");
}

// Goal: a node with an invalid setting exits at start with code 2 and a message that names
// the setting, before it binds any socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configuration_exits_with_code_2() {
    let cases: [(&[&str], &str); 4] = [
        (&["--storage-provider", "mysql"], "storage.provider"),
        (
            &[
                "--storage-provider",
                "postgres",
                "--postgres-url",
                "not a connection string",
            ],
            "storage.postgres_url",
        ),
        (&["--storage-provider", "postgres"], "storage.postgres_url"),
        (&["--idle-after-secs", "0"], "idle_after_secs"),
    ];
    for (args, setting) in cases {
        let node = tokio::process::Command::new(BIN)
            .arg("run")
            .args(args)
            .env("GRISTMILL_COOKIE", COOKIE)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the gristmill binary");
        let output = tokio::time::timeout(Duration::from_secs(10), node.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("gristmill run {args:?} is still running"))
            .expect("wait for gristmill run");
        let (status, errors) = (output.status, String::from_utf8_lossy(&output.stderr));
        let printed = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            status.code(),
            Some(2),
            "exit code of {args:?}; stderr: {errors}"
        );
        assert!(
            errors.contains(setting),
            "{args:?}: stderr does not name {setting}: {errors}"
        );
        assert!(
            printed.is_empty(),
            "{args:?} printed a ready line: {printed}"
        );
    }
}

// Goal: calls that reach a grain while it is being activated all complete, whichever node
// they enter through.
// Method: send 32 adds at once to one new counter, alternating between the two nodes of a
// cluster, and check every reply and the final value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_calls_all_complete() {
    const CALLS: usize = 32;
    let _slot = cluster_slot().await;
    let cluster = Cluster::start(2, Timing::FAST).await;
    let mut clients = cluster.clients().await;

    for round in 0..4 {
        let key = format!("crowd-{round}");
        let mut adds = JoinSet::new();
        for index in 0..CALLS {
            let mut client = clients[index % 2].clone();
            let key = key.clone();
            adds.spawn(async move {
                let started = Instant::now();
                let outcome = client
                    .invoke("counter", &key, "add", json!({ "amount": 1 }), 0)
                    .await;
                outcome.map_err(|status| {
                    format!(
                        "add {index} to {key} after {:?}: {status}",
                        started.elapsed()
                    )
                })
            });
        }
        let mut failures = Vec::new();
        while let Some(joined) = adds.join_next().await {
            if let Err(failure) = joined.expect("add task") {
                failures.push(failure);
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {CALLS} adds failed: {failures:#?}",
            failures.len()
        );
        let (value, _) = clients[0]
            .invoke("counter", &key, "get", json!(null), 0)
            .await
            .unwrap_or_else(|status| panic!("get {key}: {status}"));
        assert_eq!(value, json!(CALLS), "counter {key}");
    }
}
