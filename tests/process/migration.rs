//! Live migration over real node processes: grains move under load without lost writes or
//! overlapping activations, a target killed mid-migration leaves one activation, and a drained
//! node ends empty with no failed call.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::audit::{overlapping_activations, read_audits, turns_by_epoch};
use common::{Cluster, NodeClient, Timing, cluster_slot, counters_on, quantile, wait_gone};
use gristmill::api::pb;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use tokio::sync::Mutex;

/// Counter grains that the migration-under-load test moves in CI. The acceptance run uses
/// 10,000: `GRISTMILL_TEST_MIGRATION_GRAINS=10000 cargo test -p gristmill-node --test migration`.
const GRAINS: usize = 2_000;
/// Concurrent increment streams during the migration.
const INCREMENTERS: usize = 8;
/// Concurrent Migrate requests.
const MIGRATORS: usize = 16;

fn grain_count() -> usize {
    std::env::var("GRISTMILL_TEST_MIGRATION_GRAINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(GRAINS)
}

async fn add(client: &mut NodeClient, key: &str) -> Result<i64, String> {
    match client
        .invoke("counter", key, "add", json!({ "amount": 1 }), 10_000)
        .await
    {
        Ok((value, _)) => value
            .as_i64()
            .ok_or_else(|| format!("add {key} replied {value}")),
        Err(status) => Err(format!("add {key}: {status}")),
    }
}

async fn get(client: &mut NodeClient, key: &str) -> i64 {
    let (value, _) = client
        .invoke("counter", key, "get", json!(null), 10_000)
        .await
        .unwrap_or_else(|s| panic!("get {key}: {s}"));
    value
        .as_i64()
        .unwrap_or_else(|| panic!("get {key} replied {value}"))
}

async fn migrate(
    client: &mut NodeClient,
    key: &str,
    target: &str,
) -> Result<pb::MigrateResponse, tonic::Status> {
    let request = pb::MigrateRequest {
        grain_type: "counter".into(),
        key: key.into(),
        target_node: target.into(),
        timeout_ms: 10_000,
    };
    client.grains.migrate(request).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grains_migrate_under_load_without_loss() {
    // Goal: every grain moves once while increments keep arriving; no call fails, no
    // acknowledged increment is lost, and no two activations of a grain ever run turns at
    // the same time. Method: each node logs every turn to an audit file; afterwards the test
    // compares every counter with the increments it acknowledged and checks the audit.
    let _slot = cluster_slot().await;
    let grains = grain_count();
    let audit_dir = tempfile::tempdir().expect("audit directory");
    let audit_paths: Vec<_> = (0..3)
        .map(|i| audit_dir.path().join(format!("node-{i}.audit")))
        .collect();
    let audit_args: Vec<String> = audit_paths
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut nodes = Vec::new();
    let first = common::NodeProcess::start(
        "node-0",
        &[],
        Timing::LOADED,
        &["--turn-audit", &audit_args[0]],
    )
    .await;
    let seed = [first.ready.gossip_addr];
    nodes.push(first);
    for (index, audit) in audit_args.iter().enumerate().skip(1) {
        let name = format!("node-{index}");
        nodes.push(
            common::NodeProcess::start(&name, &seed, Timing::LOADED, &["--turn-audit", audit])
                .await,
        );
    }
    let cluster = Cluster { nodes };
    cluster.wait_converged().await;
    let clients = cluster.clients().await;

    let keys: Arc<Vec<String>> = Arc::new((0..grains).map(|i| format!("m-{i}")).collect());
    let acknowledged: Arc<Vec<AtomicU64>> =
        Arc::new((0..grains).map(|_| AtomicU64::new(0)).collect());
    let started = Instant::now();
    for (index, key) in keys.iter().enumerate() {
        let mut client = clients[index % clients.len()].clone();
        add(&mut client, key)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        acknowledged[index].fetch_add(1, Ordering::Relaxed);
    }
    eprintln!("activated {grains} counters in {:?}", started.elapsed());

    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut incrementers = Vec::new();
    for worker in 0..INCREMENTERS {
        let (keys, acknowledged, failures, stop) = (
            keys.clone(),
            acknowledged.clone(),
            failures.clone(),
            stop.clone(),
        );
        let mut client = clients[worker % clients.len()].clone();
        incrementers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(worker as u64);
            let mut calls = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let index = rng.random_range(0..keys.len());
                match add(&mut client, &keys[index]).await {
                    Ok(_) => {
                        acknowledged[index].fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => failures.lock().await.push(error),
                }
                calls += 1;
            }
            calls
        }));
    }

    let migrated = Arc::new(AtomicU64::new(0));
    let migration_failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let migration_started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut migrators = Vec::new();
    for worker in 0..MIGRATORS {
        let (keys, next, migrated, migration_failures) = (
            keys.clone(),
            next.clone(),
            migrated.clone(),
            migration_failures.clone(),
        );
        let mut client = clients[worker % clients.len()].clone();
        migrators.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(key) = keys.get(index) else { return };
                let mut last_error = None;
                for _attempt in 0..5 {
                    match migrate(&mut client, key, "").await {
                        Ok(_) => {
                            migrated.fetch_add(1, Ordering::Relaxed);
                            last_error = None;
                            break;
                        }
                        // Rejected or unavailable hand-offs changed nothing; try again.
                        Err(status) => last_error = Some(format!("migrate {key}: {status}")),
                    }
                }
                if let Some(error) = last_error {
                    migration_failures.lock().await.push(error);
                }
            }
        }));
    }
    for migrator in migrators {
        migrator.await.expect("migrator task");
    }
    let migration_time = migration_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut increments = 0;
    for incrementer in incrementers {
        increments += incrementer.await.expect("incrementer task");
    }
    let migrated = migrated.load(Ordering::Relaxed);
    eprintln!(
        "migrated {migrated} of {grains} grains in {migration_time:?} ({:.0} grains/s) under {increments} increments",
        migrated as f64 / migration_time.as_secs_f64()
    );

    let failures = failures.lock().await;
    assert!(
        failures.is_empty(),
        "{} increments failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    let migration_failures = migration_failures.lock().await;
    assert!(
        migration_failures.is_empty(),
        "{} migrations failed, first: {:?}",
        migration_failures.len(),
        migration_failures.first()
    );
    assert_eq!(migrated, grains as u64, "every grain migrated once");

    let mut lost = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        let mut client = clients[index % clients.len()].clone();
        let value = get(&mut client, key).await;
        let expected = acknowledged[index].load(Ordering::Relaxed) as i64;
        if value != expected {
            lost.push(format!("{key}: read {value}, acknowledged {expected}"));
        }
    }
    assert!(
        lost.is_empty(),
        "{} counters differ, first: {:?}",
        lost.len(),
        lost.first()
    );

    let audit_refs: Vec<&Path> = audit_paths.iter().map(|p| p.as_path()).collect();
    let turns = read_audits(&audit_refs);
    let audited_turns: usize = turns.values().map(Vec::len).sum();
    let epochs = turns_by_epoch(&turns);
    eprintln!(
        "audit: {audited_turns} turns of {} grains, turns by epoch {epochs:?}",
        turns.len()
    );
    assert!(turns.len() >= grains, "the audit covers every grain");
    assert!(
        epochs.keys().any(|epoch| *epoch >= 1),
        "some turns ran on migrated activations"
    );
    let overlaps = overlapping_activations(&turns);
    assert!(
        overlaps.is_empty(),
        "{} overlapping turns of different activations, first: {:?}",
        overlaps.len(),
        overlaps.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_target_mid_migration_keeps_one_activation() {
    // Goal: kill -9 of the target while grains migrate to it leaves every grain with exactly
    // one activation and its acknowledged value. Method: move node-0's counters to node-2
    // and kill node-2 once some moves succeeded; then read every counter through the
    // survivors and list their activations.
    let _slot = cluster_slot().await;
    let mut cluster = Cluster::start(3, Timing::LOADED).await;
    let mut clients = cluster.clients().await;
    let keys = counters_on(&mut clients, "node-0", 600).await;
    let moved = Arc::new(AtomicU64::new(0));
    let mut movers = Vec::new();
    for (worker, chunk) in keys.chunks(keys.len().div_ceil(8)).enumerate() {
        let chunk = chunk.to_vec();
        let moved = moved.clone();
        let mut client = clients[worker % 2].clone();
        movers.push(tokio::spawn(async move {
            for key in chunk {
                if migrate(&mut client, &key, "node-2").await.is_ok() {
                    moved.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while moved.load(Ordering::Relaxed) < 20 {
        assert!(
            Instant::now() < deadline,
            "no migration to node-2 succeeded"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.nodes[2].kill9().await;
    eprintln!(
        "killed node-2 after {} of {} migrations",
        moved.load(Ordering::Relaxed),
        keys.len()
    );
    for mover in movers {
        mover.await.expect("mover task");
    }
    let survivors = vec![clients[0].clone(), clients[1].clone()];
    wait_gone(&survivors, "node-2", Duration::from_secs(30)).await;

    // Every counter was incremented exactly once before the migration.
    for (index, key) in keys.iter().enumerate() {
        let mut client = survivors[index % 2].clone();
        assert_eq!(
            get(&mut client, key).await,
            1,
            "{key} after the target died"
        );
    }
    // Right after a node dies, an activation whose entry was lost with it can run beside the
    // one that replaced it; the periodic re-assertion deactivates it within one period.
    common::wait_one_activation_each(&survivors, "counter", &keys, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drained_node_ends_empty_without_failed_calls() {
    // Goal: draining a node under load moves all its grains, fails no call, and loses no
    // acknowledged increment. Method: increment counters through the other nodes while
    // node-1 drains, then compare every counter with its acknowledged increments. The test
    // also prints call latency before the drain against latency during it, from one run.
    let _slot = cluster_slot().await;
    let cluster = Cluster::start(3, Timing::LOADED).await;
    let mut clients = cluster.clients().await;
    let served = common::spread_counters(&mut clients, 900).await;
    let on_node_1 = served.get("node-1").map_or(0, Vec::len);
    assert!(on_node_1 > 0, "node-1 serves some counters: {served:?}");
    let keys: Arc<Vec<String>> = Arc::new((0..900).map(|i| format!("c-{i}")).collect());
    let acknowledged: Arc<Vec<AtomicU64>> = Arc::new((0..900).map(|_| AtomicU64::new(1)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    // Latencies of the calls that started before the drain (index 0) and during it (index 1).
    let draining = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new([Vec::<Duration>::new(), Vec::new()]));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let (keys, acknowledged, stop, failures) = (
            keys.clone(),
            acknowledged.clone(),
            stop.clone(),
            failures.clone(),
        );
        let (draining, latencies) = (draining.clone(), latencies.clone());
        let mut client = if worker % 2 == 0 {
            clients[0].clone()
        } else {
            clients[2].clone()
        };
        workers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(worker);
            while !stop.load(Ordering::Relaxed) {
                let index = rng.random_range(0..keys.len());
                let phase = usize::from(draining.load(Ordering::Relaxed));
                let started = Instant::now();
                match add(&mut client, &keys[index]).await {
                    Ok(_) => {
                        acknowledged[index].fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => failures.lock().await.push(error),
                }
                latencies.lock().await[phase].push(started.elapsed());
            }
        }));
    }
    // The baseline is the first 2,000 calls, counted rather than timed.
    common::wait_until(
        "2,000 calls before the drain",
        Duration::from_secs(60),
        || {
            let latencies = latencies.clone();
            async move {
                match latencies.lock().await[0].len() {
                    done if done >= 2_000 => Ok(()),
                    done => Err(format!("{done} calls")),
                }
            }
        },
    )
    .await;
    draining.store(true, Ordering::Relaxed);
    let request = pb::NodeDrainRequest {
        node: "node-1".into(),
        timeout_ms: 60_000,
        leave_after: false,
    };
    let report = clients[0]
        .cluster
        .drain_node(request)
        .await
        .expect("DrainNode")
        .into_inner();
    eprintln!("drained node-1: {report:?} (held {on_node_1} counters)");
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("increment task");
    }
    let mut latencies = latencies.lock().await;
    let [before, during] = &mut *latencies;
    eprintln!(
        "measured: call latency before the drain p50 {:?} p99 {:?} over {} calls; during the drain p50 {:?} p99 {:?} over {} calls",
        quantile(before, 0.5),
        quantile(before, 0.99),
        before.len(),
        quantile(during, 0.5),
        quantile(during, 0.99),
        during.len()
    );
    assert_eq!(
        report.remaining, 0,
        "node-1 holds no activation after the drain"
    );
    assert!(report.migrated > 0, "the drain migrated grains");
    assert!(
        clients[1].activations("counter").await.is_empty(),
        "node-1 lists no activation"
    );
    let failures = failures.lock().await;
    assert!(
        failures.is_empty(),
        "{} calls failed during the drain, first: {:?}",
        failures.len(),
        failures.first()
    );
    for (index, key) in keys.iter().enumerate() {
        let mut client = if index % 2 == 0 {
            clients[0].clone()
        } else {
            clients[2].clone()
        };
        let expected = acknowledged[index].load(Ordering::Relaxed) as i64;
        assert_eq!(
            get(&mut client, key).await,
            expected,
            "{key} after the drain"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_migration_deadline_is_deadline_exceeded() {
    // Goal: a migration whose deadline is too short fails with DEADLINE_EXCEEDED, so the
    // operator knows to allow more time, never with UNAVAILABLE, which blames a healthy node.
    // Method: ask node-0 to move 40 counters, spread over both nodes, each with a 1 ms
    // deadline; afterwards each grain still replies with its value.
    let _slot = cluster_slot().await;
    let cluster = Cluster::start(2, Timing::LOADED).await;
    let mut clients = cluster.clients().await;
    common::spread_counters(&mut clients, 40).await;

    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for index in 0..40 {
        let request = pb::MigrateRequest {
            grain_type: "counter".into(),
            key: format!("c-{index}"),
            target_node: String::new(),
            timeout_ms: 1,
        };
        let code = match clients[0].grains.migrate(request).await {
            Ok(_) => tonic::Code::Ok,
            Err(status) => {
                assert_eq!(
                    status.code(),
                    tonic::Code::DeadlineExceeded,
                    "c-{index}: {status}"
                );
                status.code()
            }
        };
        *codes.entry(format!("{code:?}")).or_default() += 1;
    }

    println!("codes of 40 migrations with a 1 ms deadline: {codes:?}");
    assert!(
        codes.contains_key("DeadlineExceeded"),
        "no migration ran out of its 1 ms: {codes:?}"
    );
    for index in 0..40 {
        assert_eq!(get(&mut clients[0], &format!("c-{index}")).await, 1);
    }
}
