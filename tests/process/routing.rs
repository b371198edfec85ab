//! The cluster-aware client against real node processes: scale-out spread, grain-aware
//! routing, and circuit breaking around a stalled node.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Cluster, NodeProcess, Timing, cluster_slot, quantile, wait_until};
use gristmill::api::pb::PayloadFormat;
use gristmill::directory::partition_owner;
use gristmill::membership::Incarnation;
use gristmill::routing::{
    AttemptDeadline, BreakerConfig, BreakerState, ClientConfig, ClientError, GristmillClient,
    InvokeReply, StrategyKind,
};
use nix::sys::signal::{Signal, kill};
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Time a scaled-out cluster has to give the new node its share of the calls.
const SPREAD_WITHIN: Duration = Duration::from_secs(60);

/// Client settings for `strategy` that watch membership through `seeds`.
fn config(seeds: &[SocketAddr], strategy: StrategyKind) -> ClientConfig {
    ClientConfig {
        seeds: seeds.iter().map(SocketAddr::to_string).collect(),
        strategy,
        resubscribe_after: Duration::from_millis(100),
        ..ClientConfig::default()
    }
}

async fn connect(config: ClientConfig) -> GristmillClient {
    GristmillClient::builder(config)
        .connect()
        .await
        .expect("connect the client")
}

/// Calls `counter/{key}.{method}` with a JSON payload.
async fn call(
    client: &GristmillClient,
    key: &str,
    method: &str,
) -> Result<InvokeReply, gristmill::routing::ClientError> {
    let payload = match method {
        "add" => json!({ "amount": 1 }),
        _ => json!(null),
    };
    let payload = serde_json::to_vec(&payload).expect("encode JSON");
    client
        .invoke("counter", key, method, payload, PayloadFormat::Json, None)
        .await
}

/// Waits until `client` sends calls to exactly `expected` gateways.
async fn wait_gateways(client: &GristmillClient, expected: &[&str], within: Duration) -> Duration {
    let expected: BTreeSet<String> = expected.iter().map(|name| (*name).to_owned()).collect();
    let ((), took) = wait_until("the client's gateways match", within, || {
        let gateways: BTreeSet<String> = client
            .gateways()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let expected = expected.clone();
        async move {
            if gateways == expected {
                Ok(())
            } else {
                Err(format!("gateways {gateways:?}"))
            }
        }
    })
    .await;
    took
}

/// Replies counted per gateway while `counting` is set.
#[derive(Default)]
struct GatewayCounts {
    counting: AtomicBool,
    by_gateway: Mutex<BTreeMap<String, u64>>,
    errors: AtomicU64,
}

impl GatewayCounts {
    fn record(&self, result: &Result<InvokeReply, gristmill::routing::ClientError>) {
        match result {
            Ok(reply) if self.counting.load(Ordering::Relaxed) => {
                let mut counts = self.by_gateway.lock().expect("counts lock");
                *counts.entry(reply.gateway.clone()).or_default() += 1;
            }
            Ok(_) => {}
            Err(error) => {
                eprintln!("call failed: {error}");
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.by_gateway.lock().expect("counts lock").clone()
    }
}

// Goal: scaling out spreads load over the new node with no reconnect by hand.
// Method: 20 long-lived round-robin clients call a 2-node cluster at a paced rate, and a
// third node joins. Once every client sends to it, the test counts the gateway of each reply
// until 900 replies, then checks the new node's share and the evenness of all shares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_spreads_load_over_new_node() {
    let _slot = cluster_slot().await;
    let mut cluster = Cluster::start(2, Timing::FAST).await;
    let seeds = [cluster.nodes[0].ready.grpc_addr];
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(connect(config(&seeds, StrategyKind::RoundRobin)).await);
    }

    let counts = Arc::new(GatewayCounts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = JoinSet::new();
    for (index, client) in clients.iter().enumerate() {
        let client = client.clone();
        let counts = Arc::clone(&counts);
        let stop = Arc::clone(&stop);
        load.spawn(async move {
            // 20 clients at 20 calls/s each: 400 calls/s, a load two cores carry with room.
            let mut pace = tokio::time::interval(Duration::from_millis(50));
            let mut serial = 0_usize;
            while !stop.load(Ordering::Relaxed) {
                pace.tick().await;
                let key = format!("spread-{index}-{}", serial % 10);
                serial += 1;
                counts.record(&call(&client, &key, "add").await);
            }
        });
    }

    let gossip_seed = [cluster.nodes[0].ready.gossip_addr];
    let added_at = Instant::now();
    cluster
        .nodes
        .push(NodeProcess::start("node-2", &gossip_seed, Timing::FAST, &[]).await);
    for client in &clients {
        wait_gateways(client, &["node-0", "node-1", "node-2"], SPREAD_WITHIN).await;
    }
    let discovered = added_at.elapsed();
    eprintln!("all 20 clients send to node-2 {discovered:?} after it started");

    counts.counting.store(true, Ordering::Relaxed);
    let remaining = SPREAD_WITHIN.saturating_sub(added_at.elapsed());
    let (counted, _) = wait_until("900 replies are counted", remaining, || {
        let counted = counts.snapshot();
        async move {
            let total: u64 = counted.values().sum();
            if total >= 900 {
                Ok(counted)
            } else {
                Err(format!("{total} replies: {counted:?}"))
            }
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}

    let total: u64 = counted.values().sum();
    eprintln!("replies by gateway: {counted:?}");
    assert_eq!(
        counts.errors.load(Ordering::Relaxed),
        0,
        "client-visible errors"
    );
    let even = 1.0 / 3.0;
    for name in ["node-0", "node-1", "node-2"] {
        let share = counted.get(name).copied().unwrap_or(0) as f64 / total as f64;
        assert!(
            (even * 0.85..=even * 1.15).contains(&share),
            "{name} got {share:.3} of {total} calls, expected 1/3 ± 15 %: {counted:?}"
        );
    }
    let new_share = counted.get("node-2").copied().unwrap_or(0) as f64 / total as f64;
    assert!(new_share >= 0.2, "node-2 got {new_share:.3}");
    assert!(
        added_at.elapsed() < SPREAD_WITHIN,
        "spread took {:?}",
        added_at.elapsed()
    );
}

// Goal: grain-aware routing sends calls straight to the grain's node.
// Method: on a 3-node cluster, a grain-aware and a round-robin client call the same 40
// counters in alternation after one warm-up round. The test compares hops and latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grain_aware_routing_skips_forwards() {
    let _slot = cluster_slot().await;
    let cluster = Cluster::start(3, Timing::FAST).await;
    let seeds = [cluster.nodes[1].ready.grpc_addr];
    let aware = connect(config(&seeds, StrategyKind::GrainAware)).await;
    let round_robin = connect(config(&seeds, StrategyKind::RoundRobin)).await;
    for client in [&aware, &round_robin] {
        wait_gateways(
            client,
            &["node-0", "node-1", "node-2"],
            Duration::from_secs(10),
        )
        .await;
    }
    let keys: Vec<String> = (0..40).map(|index| format!("aware-{index}")).collect();
    for key in &keys {
        call(&aware, key, "add").await.expect("warm-up call");
    }

    let mut latencies: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let mut direct: BTreeMap<&str, usize> = BTreeMap::new();
    for _round in 0..10 {
        for key in &keys {
            for (label, client) in [("grain-aware", &aware), ("round-robin", &round_robin)] {
                let started = Instant::now();
                let reply = call(client, key, "get").await.expect("steady-state call");
                latencies.entry(label).or_default().push(started.elapsed());
                if reply.hops == 0 {
                    *direct.entry(label).or_default() += 1;
                }
                assert_eq!(
                    reply.gateway == reply.served_by,
                    reply.hops == 0,
                    "{reply:?}"
                );
            }
        }
    }

    let calls = keys.len() * 10;
    for (label, samples) in &mut latencies {
        let share = direct.get(label).copied().unwrap_or(0) as f64 / calls as f64;
        eprintln!(
            "{label}: {:.1} % of {calls} calls with hops == 0, p50 {:?}, p99 {:?}",
            share * 100.0,
            quantile(samples, 0.5),
            quantile(samples, 0.99),
        );
    }
    let aware_direct = direct.get("grain-aware").copied().unwrap_or(0) as f64 / calls as f64;
    let spread_direct = direct.get("round-robin").copied().unwrap_or(0) as f64 / calls as f64;
    assert!(
        aware_direct >= 0.95,
        "grain-aware: {aware_direct:.3} direct"
    );
    assert!(
        spread_direct < 0.6,
        "round robin should forward about 2/3 of calls on 3 nodes: {spread_direct:.3} direct"
    );
}

/// Failure detection slow enough that a node stopped for a few seconds stays a member, so
/// only the client's breaker reacts to it.
const PATIENT: Timing = Timing {
    probe_period_ms: 200,
    probe_rtt_ms: 80,
    suspect_to_down_ms: 30_000,
};

// Goal: a gateway that replies to nothing opens its breaker, idempotent calls see no error,
// and after recovery the half-open probe closes the breaker.
// Method: stop node-2 with SIGSTOP while one client reads counters hosted on the other
// nodes (whose directory owner is not node-2 either), then SIGCONT it and keep reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_gateway_opens_breaker_and_recovers() {
    let _slot = cluster_slot().await;
    let cluster = Cluster::start(3, PATIENT).await;
    let seeds = [cluster.nodes[0].ready.grpc_addr];
    let mut settings = config(&seeds, StrategyKind::RoundRobin);
    settings.idempotent_methods.insert("counter.get".into());
    settings.attempt_timeout = Some(Duration::from_millis(300));
    settings.call_timeout = Duration::from_secs(3);
    settings.breaker = BreakerConfig {
        failure_threshold: 3,
        open_for: Duration::from_secs(1),
    };
    let client = connect(settings).await;
    wait_gateways(
        &client,
        &["node-0", "node-1", "node-2"],
        Duration::from_secs(10),
    )
    .await;

    let live: Vec<Incarnation> = cluster
        .nodes
        .iter()
        .map(|node| Incarnation {
            name: node.ready.node.clone(),
            boot_id: node.ready.boot_id,
        })
        .collect();
    let mut keys = Vec::new();
    for index in 0..40 {
        let key = format!("breaker-{index}");
        let reply = call(&client, &key, "add").await.expect("warm-up call");
        let grain = gristmill::grain::GrainId::new("counter", key.as_str());
        let owner = partition_owner(&grain, &live).expect("members");
        if reply.served_by != "node-2" && owner.name != "node-2" {
            keys.push(key);
        }
    }
    assert!(
        keys.len() >= 5,
        "too few counters away from node-2: {keys:?}"
    );

    let stalled = cluster.nodes[2].pid();
    kill(stalled, Signal::SIGSTOP).expect("send SIGSTOP");
    let stopped_at = Instant::now();
    let mut opened = false;
    let mut sent_to_stalled_while_open = 0;
    for round in 0..60 {
        let key = &keys[round % keys.len()];
        let reply = call(&client, key, "get")
            .await
            .unwrap_or_else(|error| panic!("get {key} while node-2 is stopped: {error}"));
        let state = client.breaker_state("node-2");
        if matches!(state, Some(BreakerState::Open { .. })) {
            opened = true;
        }
        if opened && reply.gateway == "node-2" {
            sent_to_stalled_while_open += 1;
        }
    }
    assert!(opened, "node-2's breaker never opened");
    assert_eq!(sent_to_stalled_while_open, 0, "a stopped node served calls");
    eprintln!(
        "60 calls without an error while node-2 was stopped for {:?}",
        stopped_at.elapsed()
    );

    kill(stalled, Signal::SIGCONT).expect("send SIGCONT");
    let mut round = 0_usize;
    let (reply, took) = wait_until(
        "node-2 serves again with a closed breaker",
        Duration::from_secs(20),
        || {
            round += 1;
            let key = keys[round % keys.len()].clone();
            let client = client.clone();
            async move {
                let reply = call(&client, &key, "get")
                    .await
                    .map_err(|error| format!("{error}"))?;
                match client.breaker_state("node-2") {
                    Some(BreakerState::Closed { .. }) if reply.gateway == "node-2" => Ok(reply),
                    state => Err(format!("breaker {state:?}, last gateway {}", reply.gateway)),
                }
            }
        },
    )
    .await;
    eprintln!("node-2 closed its breaker and served {reply:?} {took:?} after SIGCONT");

    let transitions = client
        .metrics()
        .registry()
        .gather()
        .into_iter()
        .find(|family| family.name() == "gristmill_client_breaker_transitions_total")
        .expect("breaker transitions are counted");
    let states: BTreeSet<String> = transitions
        .get_metric()
        .iter()
        .filter(|metric| metric.get_label().iter().any(|l| l.value() == "node-2"))
        .flat_map(|metric| metric.get_label().iter().filter(|l| l.name() == "state"))
        .map(|label| label.value().to_owned())
        .collect();
    let expected: BTreeSet<String> = ["open", "half_open", "closed"].map(String::from).into();
    assert_eq!(
        states, expected,
        "node-2's breaker went through every state"
    );
}

// Goal: a call to a gateway that never replies fails with the deadline that ended it, as
// the caller gave it, and not with the time the client waited beyond it for a late reply.
// Method: stop a single node with SIGSTOP, then call it once with a call deadline and once
// with a shorter `attempt_timeout`. `add` is not idempotent, so neither call is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_gateway_error_names_the_deadline() {
    let _slot = cluster_slot().await;
    let cluster = Cluster::start(1, PATIENT).await;
    let seeds = [cluster.nodes[0].ready.grpc_addr];
    let client = connect(config(&seeds, StrategyKind::RoundRobin)).await;
    let mut capped_config = config(&seeds, StrategyKind::RoundRobin);
    capped_config.attempt_timeout = Some(Duration::from_millis(300));
    let capped = connect(capped_config).await;
    for client in [&client, &capped] {
        wait_gateways(client, &["node-0"], Duration::from_secs(10)).await;
        call(client, "deadline-0", "add")
            .await
            .expect("warm-up call");
    }

    let stopped = cluster.nodes[0].pid();
    kill(stopped, Signal::SIGSTOP).expect("send SIGSTOP");
    let payload = serde_json::to_vec(&json!({ "amount": 1 })).expect("encode JSON");
    let call_deadline = client
        .invoke(
            "counter",
            "deadline-0",
            "add",
            payload.clone(),
            PayloadFormat::Json,
            Some(Duration::from_millis(700)),
        )
        .await;
    let attempt_deadline = capped
        .invoke(
            "counter",
            "deadline-0",
            "add",
            payload,
            PayloadFormat::Json,
            Some(Duration::from_secs(2)),
        )
        .await;
    kill(stopped, Signal::SIGCONT).expect("send SIGCONT");

    let error = call_deadline.expect_err("a stopped node cannot reply");
    assert!(
        matches!(
            error,
            ClientError::NoResponse {
                deadline: AttemptDeadline::Call(timeout),
                attempts: 1,
                ..
            } if timeout == Duration::from_millis(700)
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "no response from node-0 before the call's deadline of 700 ms passed (1 attempt(s))"
    );
    let error = attempt_deadline.expect_err("a stopped node cannot reply");
    assert_eq!(
        error.to_string(),
        "no response from node-0 before attempt_timeout of 300 ms passed (1 attempt(s))"
    );
}
