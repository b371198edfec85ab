//! Forwarding between nodes against real node processes: stateless worker calls balanced over
//! the nodes, and a circuit breaker per peer around a stalled node.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{
    Cluster, NodeClient, Timing, cluster_slot, config_file, metric_value_with, wait_until,
};
use nix::sys::signal::{Signal, kill};
use serde_json::json;
use tokio::time::Instant;

/// Failure detection slow enough that a node stopped for a few seconds stays a member, so
/// only the peers' breakers react to it.
const PATIENT: Timing = Timing {
    probe_period_ms: 200,
    probe_rtt_ms: 80,
    suspect_to_down_ms: 30_000,
};

async fn start(count: usize, timing: Timing, settings: &str) -> (Cluster, tempfile::NamedTempFile) {
    let file = config_file(settings);
    let path = file.path().to_str().expect("utf-8 path").to_owned();
    let cluster = Cluster::start_with(count, timing, &["--config", &path]).await;
    (cluster, file)
}

/// Sends `count` bank transfers through `gateway` and counts the serving node of each.
async fn transfers_by_node(gateway: &mut NodeClient, count: usize) -> BTreeMap<String, usize> {
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for index in 0..count {
        let payload = json!({ "from": format!("a-{}", index % 10), "to": "sink", "amount": 1 });
        let (_, served_by) = gateway
            .invoke("bank", "main", "transfer", payload, 5_000)
            .await
            .unwrap_or_else(|status| panic!("transfer {index}: {status}"));
        *served.entry(served_by).or_default() += 1;
    }
    served
}

// Goal: with `spread_workers`, calls to a stateless worker type through one gateway run on
// every Active node in round-robin order. Without it, they all run on the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_workers_balance_over_nodes() {
    let _slot = cluster_slot().await;
    let (cluster, _file) = start(
        3,
        Timing::FAST,
        "[forwarding]\nspread_workers = [\"bank\"]\nstrategy = \"round-robin\"\n",
    )
    .await;
    let mut gateway = cluster.nodes[0].client().await;
    let served = transfers_by_node(&mut gateway, 90).await;
    eprintln!("spread: 90 transfers through node-0 served by {served:?}");
    for node in ["node-0", "node-1", "node-2"] {
        let share = served.get(node).copied().unwrap_or(0);
        assert!(
            (25..=35).contains(&share),
            "round robin over 3 nodes should give {node} about 30 of 90 calls: {served:?}"
        );
    }
    let metrics = cluster.nodes[0].ready.metrics_addr.expect("metrics port");
    let decisions = metric_value_with(
        metrics,
        "gristmill_worker_routing_decisions_total",
        &["strategy=\"round-robin\""],
    )
    .await;
    assert!(
        decisions >= 90.0,
        "node-0 should count a routing decision per transfer: {decisions}"
    );
    drop(cluster);

    let (cluster, _file) = start(2, Timing::FAST, "").await;
    let mut gateway = cluster.nodes[0].client().await;
    let served = transfers_by_node(&mut gateway, 20).await;
    eprintln!("local: 20 transfers through node-0 served by {served:?}");
    assert_eq!(
        served,
        BTreeMap::from([("node-0".to_owned(), 20)]),
        "without spread_workers, worker calls stay on the gateway"
    );
}

// Goal: a peer that replies to nothing opens the forwarding node's breaker, so calls for its
// grains fail at once with UNAVAILABLE instead of each waiting for its deadline. After the
// peer recovers, a probe closes the breaker and calls succeed again.
// Method: stop node-2 with SIGSTOP (failure detection is slow enough that it stays a member),
// call a counter hosted on node-2 through node-0, then SIGCONT node-2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_peer_opens_breaker_and_recovers() {
    let _slot = cluster_slot().await;
    let (cluster, _file) = start(
        3,
        PATIENT,
        "[forwarding.breaker]\nfailure_threshold = 3\nopen_for = \"1s\"\n",
    )
    .await;
    let mut clients = cluster.clients().await;
    let key = common::counters_on(&mut clients, "node-2", 30).await[0].clone();
    let mut gateway = clients[0].clone();
    let (_, served_by) = gateway
        .invoke("counter", &key, "get", json!(null), 2_000)
        .await
        .expect("counter read before the stall");
    assert_eq!(served_by, "node-2", "counter {key} is hosted on node-2");

    let pid = cluster.nodes[2].pid();
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP node-2");
    // The signal takes effect some time after `kill` returns; a call before that is served.
    cluster.nodes[2].wait_stopped().await;
    eprintln!("injected: SIGSTOP to node-2 (pid {pid})");

    let mut timed_out = 0;
    let mut rejected_after = None;
    for attempt in 0..10 {
        let started = Instant::now();
        let status = gateway
            .invoke("counter", &key, "get", json!(null), 300)
            .await
            .expect_err("node-2 is stopped, so the call cannot succeed");
        let took = started.elapsed();
        eprintln!(
            "attempt {attempt}: {:?} after {took:?}: {}",
            status.code(),
            status.message()
        );
        match status.code() {
            tonic::Code::DeadlineExceeded => timed_out += 1,
            tonic::Code::Unavailable if status.message().contains("circuit breaker") => {
                assert!(
                    took < Duration::from_millis(250),
                    "a rejected call should end at once, not after {took:?}"
                );
                rejected_after = Some(attempt);
                break;
            }
            code => panic!("unexpected {code:?}: {}", status.message()),
        }
    }
    assert_eq!(
        (timed_out, rejected_after),
        (3, Some(3)),
        "three timeouts should open the breaker, and the fourth call is rejected"
    );
    let metrics = cluster.nodes[0].ready.metrics_addr.expect("metrics port");
    let opened = metric_value_with(
        metrics,
        "gristmill_peer_breaker_transitions_total",
        &["peer=\"node-2\"", "state=\"open\""],
    )
    .await;
    assert!(opened >= 1.0, "node-0 should count the breaker opening");

    kill(pid, Signal::SIGCONT).expect("SIGCONT node-2");
    eprintln!("injected: SIGCONT to node-2");
    let (_, recovered_in) = wait_until(
        "calls to node-2 succeed again",
        Duration::from_secs(20),
        || {
            let mut gateway = gateway.clone();
            let key = key.clone();
            async move {
                match gateway
                    .invoke("counter", &key, "get", json!(null), 1_000)
                    .await
                {
                    Ok((_, served_by)) if served_by == "node-2" => Ok(()),
                    Ok((_, served_by)) => Err(format!("served by {served_by}")),
                    Err(status) => Err(status.to_string()),
                }
            }
        },
    )
    .await;
    eprintln!("measured: calls succeed again {recovered_in:?} after SIGCONT");
    let closed = metric_value_with(
        metrics,
        "gristmill_peer_breaker_transitions_total",
        &["peer=\"node-2\"", "state=\"closed\""],
    )
    .await;
    assert!(
        closed >= 1.0,
        "the half-open probe should close the breaker"
    );
}
