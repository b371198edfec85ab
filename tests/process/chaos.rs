//! Fault scenarios over real node processes: SIGTERM under a stream of increments, ten
//! restarts under one name, SIGSTOP bursts longer than the suspicion timeout, and scale-in
//! that removes the node cheapest to drain.
//!
//! Each scenario prints what it injected (seed, pids, signals, timings) and what it measured.
//! The seed comes from `GRISTMILL_CHAOS_SEED` when it is set, so a failing run can be
//! replayed with the same workload and fault schedule. Process scheduling still varies.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::audit::{
    Turn, assert_one_activation_at_a_time, audit_path, early_handoffs, handoffs,
    overlapping_activations, read_cluster_audit,
};
use common::workload::{
    CallLog, Ledger, Workload, activate_all, active_sets, chaos_seed, counters_out_of_bounds,
    increment, now_ns, wait_acknowledged,
};
use common::{
    Cluster, NodeClient, NodeProcess, Timing, activations_deactivated_at_stop, cluster_slot,
    describe, try_decisions, wait_one_activation_each, wait_until,
};
use gristmill::api::pb;
use gristmill::api::pb::scaling_client::ScalingClient;
use nix::sys::signal::Signal;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;

/// Counter grains each scenario increments.
const GRAINS: usize = 200;
/// Time the cluster has to settle after the faults stop: views agree and every grain has one
/// activation.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);

/// Starts `count` nodes with a turn audit each, in `audit_dir`, plus `extra_args`.
async fn start_audited(
    count: usize,
    timing: Timing,
    audit_dir: &Path,
    extra_args: &[&str],
) -> Cluster {
    let mut nodes: Vec<NodeProcess> = Vec::new();
    for index in 0..count {
        let name = format!("node-{index}");
        let seeds: Vec<_> = nodes
            .first()
            .map(|n| n.ready.gossip_addr)
            .into_iter()
            .collect();
        nodes.push(start_node(&name, &seeds, timing, audit_dir, extra_args).await);
    }
    let cluster = Cluster { nodes };
    cluster.wait_converged().await;
    cluster
}

/// Starts one node that appends its turns to `<audit_dir>/<name>.audit`.
async fn start_node(
    name: &str,
    seeds: &[std::net::SocketAddr],
    timing: Timing,
    audit_dir: &Path,
    extra_args: &[&str],
) -> NodeProcess {
    let audit = audit_path(audit_dir, name).display().to_string();
    let mut args = vec!["--turn-audit", audit.as_str()];
    args.extend_from_slice(extra_args);
    NodeProcess::start(name, seeds, timing, &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_increments_loses_nothing() {
    // Goal: a node that receives SIGTERM while its grains take acknowledged increments hands
    // every grain over without a failed call or a lost acknowledged increment, and no grain's
    // new activation starts a turn before the old one ended its last. Method: three audited
    // nodes, 200 counters spread over them, six increment streams through node-0 and node-1
    // with a 3 s deadline per call; SIGTERM to node-2 after 200 acknowledged increments, and
    // 200 more after it exited.
    const DEADLINE: Duration = Duration::from_secs(3);
    let _slot = cluster_slot().await;
    let seed = chaos_seed("sigterm");
    let audit_dir = tempfile::tempdir().expect("audit directory");
    let mut cluster = start_audited(3, Timing::LOADED, audit_dir.path(), &[]).await;
    let clients = cluster.clients().await;
    let ledger = Ledger::new("t", GRAINS);
    activate_all(&ledger, &clients).await;
    let on_victim = clients[2].clone().activations("counter").await.len();
    assert!(on_victim > 0, "node-2 hosts some counters");

    let gateways = &clients[..2];
    let workload = Workload::start(&ledger, gateways, 6, DEADLINE, seed);
    wait_acknowledged(&ledger, ledger.acknowledged_total(), 200).await;
    let pid = cluster.nodes[2].pid();
    let signalled_ns = now_ns();
    let signalled = Instant::now();
    cluster.nodes[2].terminate();
    let status = cluster.nodes[2].wait_exit(Duration::from_secs(60)).await;
    let exit_took = signalled.elapsed();
    eprintln!(
        "injected: SIGTERM to node-2 (pid {pid}, {on_victim} activations) at {signalled_ns} ns; exited {status} after {exit_took:?}"
    );
    assert!(
        status.success(),
        "node-2 exit status after SIGTERM: {status}"
    );
    wait_acknowledged(&ledger, ledger.acknowledged_total(), 200).await;
    let log = workload.finish().await;

    assert!(log.hung.is_empty(), "calls hung: {:?}", log.hung);
    // A graceful leave keeps replying to peers until they know it left, and callers retry what
    // a leaving node cannot have run, so no call fails.
    assert_eq!(
        log.error_total(),
        0,
        "failed calls: {:?}, first of each: {:?}",
        log.errors,
        log.first_messages
    );
    let wrong = counters_out_of_bounds(&ledger, gateways).await;
    assert!(
        wrong.is_empty(),
        "{} counters wrong: {wrong:?}",
        wrong.len()
    );

    let turns = read_cluster_audit(audit_dir.path(), &["node-0", "node-1", "node-2"]);
    let moved: Vec<_> = handoffs(&turns)
        .into_iter()
        .filter(|handoff| handoff.last_old.node == "node-2")
        .collect();
    let min_gap = moved.iter().map(|h| h.gap_ns()).min();
    eprintln!(
        "measured: {} grains moved off node-2, smallest gap between old and new activation {:?} µs",
        moved.len(),
        min_gap.map(|gap| gap / 1_000)
    );
    assert!(
        !moved.is_empty(),
        "the audit shows grains moving off node-2"
    );
    assert_one_activation_at_a_time(&turns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_restarts_under_one_name_converge() {
    // Goal: a node restarted ten times under the same name, alternately after SIGTERM and
    // kill -9, ends as one Active entry in every view, hosts grains again, and no grain
    // ends with two activations or loses an acknowledged increment. Method: a steady
    // workload through node-0 and node-1; node-2 is restarted within a second of each exit,
    // and the views must converge before the next stop.
    const RESTARTS: usize = 10;
    const DEADLINE: Duration = Duration::from_secs(3);
    let _slot = cluster_slot().await;
    let seed = chaos_seed("restarts");
    let audit_dir = tempfile::tempdir().expect("audit directory");
    let mut cluster = start_audited(3, Timing::LOADED, audit_dir.path(), &[]).await;
    let clients = cluster.clients().await;
    let ledger = Ledger::new("r", GRAINS);
    activate_all(&ledger, &clients).await;
    let gateways = clients[..2].to_vec();
    let workload = Workload::start(&ledger, &gateways, 4, DEADLINE, seed);
    let seeds = [cluster.nodes[0].ready.gossip_addr];

    for round in 0..RESTARTS {
        let (signal, pid) = (
            if round % 2 == 0 { "SIGTERM" } else { "SIGKILL" },
            cluster.nodes[2].pid(),
        );
        let stopped = Instant::now();
        if round % 2 == 0 {
            cluster.nodes[2].terminate();
            let status = cluster.nodes[2].wait_exit(Duration::from_secs(60)).await;
            assert!(
                status.success(),
                "node-2 exit status after SIGTERM: {status}"
            );
        } else {
            cluster.nodes[2].kill9().await;
        }
        let exited = stopped.elapsed();
        let old_boot_id = cluster.nodes[2].ready.boot_id;
        cluster.nodes[2] =
            start_node("node-2", &seeds, Timing::LOADED, audit_dir.path(), &[]).await;
        let ready = stopped.elapsed();
        cluster.wait_converged().await;
        eprintln!(
            "injected: restart {} of node-2 by {signal} to pid {pid} (boot {old_boot_id:x} -> {:x}); exited after {exited:?}, ready after {ready:?}, views agreed after {:?}",
            round + 1,
            cluster.nodes[2].ready.boot_id,
            stopped.elapsed()
        );
    }
    let log = workload.finish().await;
    assert!(log.hung.is_empty(), "calls hung: {:?}", log.hung);
    assert_eq!(log.untyped_errors(), 0, "untyped errors: {:?}", log.errors);

    let clients = cluster.clients().await;
    let sets = active_sets(&clients).await.expect("list members");
    eprintln!("measured: Active sets {sets:?}");
    let node_2 = format!("node-2#{:x}", cluster.nodes[2].ready.boot_id);
    for (index, set) in sets.iter().enumerate() {
        assert_eq!(set, &sets[0], "node-{index} disagrees with node-0");
        assert!(set.contains(&node_2), "node-{index} lists {node_2} Active");
        assert_eq!(set.len(), 3, "node-{index} lists three Active nodes");
    }

    let wrong = counters_out_of_bounds(&ledger, &gateways).await;
    assert!(
        wrong.is_empty(),
        "{} counters wrong: {wrong:?}",
        wrong.len()
    );
    let took = wait_one_activation_each(&clients, "counter", &ledger.keys, SETTLE_WITHIN).await;
    eprintln!("measured: every grain had one activation {took:?} after the reads");

    // The restarted node receives grains again: new counters are placed on it too.
    let fresh = Ledger::new("r-fresh", 30);
    activate_all(&fresh, &gateways).await;
    let hosted = clients[2].clone().activations("counter").await.len();
    eprintln!("measured: restarted node-2 hosts {hosted} counters");
    assert!(hosted > 0, "the restarted node-2 hosts no grain");

    let turns = read_cluster_audit(audit_dir.path(), &["node-0", "node-1", "node-2"]);
    assert_one_activation_at_a_time(&turns);
}

/// Waits until node-2 of `cluster` is either Active again in every view with its boot id or
/// has exited; panics when neither happens within [`SETTLE_WITHIN`].
///
/// `clients` must be connected before the pause, because the node may exit at any time after
/// it.
async fn await_burst_outcome(
    cluster: &mut Cluster,
    clients: &[NodeClient],
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + SETTLE_WITHIN;
    let boot_id = cluster.nodes[2].ready.boot_id;
    loop {
        if let Some(status) = cluster.nodes[2].exited() {
            return Some(status);
        }
        let mut seen = Vec::new();
        for client in clients {
            let members = client.clone().members().await.unwrap_or_default();
            let back = members.len() == 3
                && members
                    .iter()
                    .all(|member| member.state == pb::NodeState::Active as i32)
                && members
                    .iter()
                    .any(|member| member.name == "node-2" && member.boot_id == boot_id);
            if !back {
                seen.push(describe(&members));
            }
        }
        if seen.is_empty() {
            return None;
        }
        assert!(
            Instant::now() < deadline,
            "node-2 neither rejoined nor exited within {SETTLE_WITHIN:?}; views: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigstop_bursts_keep_one_activation() {
    // Goal: pausing a node with SIGSTOP for longer than the suspicion timeout, several
    // times, never leaves a grain with two activations that run turns at the same time. No
    // call outlives its deadline, and the cluster converges with the node back, as a new
    // incarnation when it was declared down. Method: three audited nodes; increments through
    // node-0 and node-1 with a 1 s deadline; bursts of random length and spacing from the
    // seed; after each SIGCONT the test waits until node-2 is Active again or has exited,
    // and restarts it under the same name when it exited.
    const BURSTS: usize = 3;
    const DEADLINE: Duration = Duration::from_secs(1);
    let timing = Timing {
        probe_period_ms: 200,
        probe_rtt_ms: 100,
        suspect_to_down_ms: 1_000,
    };
    let _slot = cluster_slot().await;
    let seed = chaos_seed("sigstop");
    let mut rng = StdRng::seed_from_u64(seed);
    let audit_dir = tempfile::tempdir().expect("audit directory");
    let mut cluster = start_audited(3, timing, audit_dir.path(), &[]).await;
    let clients = cluster.clients().await;
    let ledger = Ledger::new("s", GRAINS);
    activate_all(&ledger, &clients).await;
    let gateways = clients[..2].to_vec();
    let workload = Workload::start(&ledger, &gateways, 6, DEADLINE, seed);
    let seeds = [cluster.nodes[0].ready.gossip_addr];

    let mut pauses: Vec<(u64, u128, u128)> = Vec::new();
    for burst in 0..BURSTS {
        let before_ms = rng.random_range(300..1_000);
        let stopped_ms = rng.random_range(2_000..3_500);
        tokio::time::sleep(Duration::from_millis(before_ms)).await;
        let (pid, boot_id) = (cluster.nodes[2].pid(), cluster.nodes[2].ready.boot_id);
        let observers = cluster.clients().await;
        // The pause runs from `stop_ns` to `cont_ns` as the audit clock sees it. The process
        // stops some time after `kill` returns, so `stop_ns` is read once it is stopped, and
        // it cannot run before SIGCONT is sent, so `cont_ns` is read just before. A turn
        // that was running when the process stopped then starts before `stop_ns` and ends
        // after `cont_ns`.
        cluster.nodes[2].signal(Signal::SIGSTOP);
        cluster.nodes[2].wait_stopped().await;
        let stop_ns = now_ns();
        // The pause itself is the injected fault, so a fixed sleep is its length.
        tokio::time::sleep(Duration::from_millis(stopped_ms)).await;
        let cont_ns = now_ns();
        cluster.nodes[2].signal(Signal::SIGCONT);
        pauses.push((boot_id, stop_ns, cont_ns));
        let resumed = Instant::now();
        let outcome = match await_burst_outcome(&mut cluster, &observers).await {
            None => "refuted the suspicion, same boot id".to_owned(),
            Some(status) => {
                cluster.nodes[2] =
                    start_node("node-2", &seeds, timing, audit_dir.path(), &[]).await;
                cluster.wait_converged().await;
                format!("declared down and exited ({status}), restarted as a new incarnation")
            }
        };
        eprintln!(
            "injected: burst {} after {before_ms} ms: SIGSTOP to node-2 (pid {pid}, boot {boot_id:x}) for {stopped_ms} ms; {outcome}, converged {:?} after SIGCONT",
            burst + 1,
            resumed.elapsed()
        );
    }
    let log = workload.finish().await;
    assert!(log.hung.is_empty(), "calls hung: {:?}", log.hung);
    assert_eq!(log.untyped_errors(), 0, "untyped errors: {:?}", log.errors);
    assert!(log.replies > 0, "the workload got replies");

    cluster.wait_converged().await;
    let clients = cluster.clients().await;
    let wrong = counters_out_of_bounds(&ledger, &gateways).await;
    assert!(
        wrong.is_empty(),
        "{} counters wrong: {wrong:?}",
        wrong.len()
    );
    let took = wait_one_activation_each(&clients, "counter", &ledger.keys, SETTLE_WITHIN).await;
    eprintln!("measured: every grain had one activation {took:?} after the reads");

    // A turn that was running when SIGSTOP hit ends after SIGCONT, while the grain may
    // already run on another node: no runtime can stop a frozen process from finishing the
    // instruction it was in. Such a turn may overlap only if it lasted longer than the call
    // deadline, so its caller had given up and saw none of its effects. Its write is fenced
    // by the storage version check, which the counter bounds above verify. Any other
    // overlap means two live activations served calls at once.
    let turns = read_cluster_audit(audit_dir.path(), &["node-0", "node-1", "node-2"]);
    let frozen = |turn: &Turn| {
        let spans_pause = pauses.iter().any(|(boot, stop, cont)| {
            turn.boot_id == *boot && turn.start_ns <= *stop && turn.end_ns >= *cont
        });
        spans_pause && turn.end_ns - turn.start_ns > DEADLINE.as_nanos()
    };
    let overlaps = overlapping_activations(&turns);
    let (explained, live): (Vec<_>, Vec<_>) = overlaps
        .into_iter()
        .partition(|(_, first, second)| frozen(first) || frozen(second));
    let early = early_handoffs(&turns);
    let (early_explained, early_live): (Vec<_>, Vec<_>) = early
        .into_iter()
        .partition(|handoff| frozen(&handoff.last_old));
    let frozen_grains: BTreeSet<&String> = explained.iter().map(|(grain, _, _)| grain).collect();
    eprintln!(
        "measured: {} overlaps of a turn frozen by SIGSTOP with the next activation on grains {frozen_grains:?} ({} early hand-offs); {} other overlaps, {} other early hand-offs",
        explained.len(),
        early_explained.len(),
        live.len(),
        early_live.len()
    );
    assert!(
        live.is_empty(),
        "{} overlapping turns of two live activations, first: {:?}",
        live.len(),
        live.first()
    );
    assert!(
        early_live.is_empty(),
        "{} new activations started before the old one's last turn ended, first: {:?}",
        early_live.len(),
        early_live.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_sigstops_declare_no_node_down() {
    // Goal: pausing a node with SIGSTOP for less than the suspicion timeout, repeatedly,
    // never gets it declared down: it refutes each suspicion and keeps its incarnation, and
    // calls through the other nodes end by their deadline. Method: three nodes with a 3 s
    // suspicion timeout; increments through node-0 and node-1; five pauses of node-2 of
    // 200 to 900 ms. Each pause follows a gap of 1 to 2 s in which node-2 can refute a
    // suspicion, and the seed picks the lengths and gaps.
    const PAUSES: usize = 5;
    const DEADLINE: Duration = Duration::from_secs(3);
    let timing = Timing::LOADED;
    let _slot = cluster_slot().await;
    let seed = chaos_seed("short-sigstop");
    let mut rng = StdRng::seed_from_u64(seed);
    let audit_dir = tempfile::tempdir().expect("audit directory");
    let mut cluster = start_audited(3, timing, audit_dir.path(), &[]).await;
    let clients = cluster.clients().await;
    let ledger = Ledger::new("p", GRAINS);
    activate_all(&ledger, &clients).await;
    let gateways = clients[..2].to_vec();
    let workload = Workload::start(&ledger, &gateways, 4, DEADLINE, seed);
    let boot_id = cluster.nodes[2].ready.boot_id;

    for pause in 0..PAUSES {
        let gap_ms = rng.random_range(1_000..2_000);
        let stopped_ms = rng.random_range(200..900);
        // The gaps and pauses are the injected fault, so fixed sleeps are their lengths.
        tokio::time::sleep(Duration::from_millis(gap_ms)).await;
        cluster.nodes[2].signal(Signal::SIGSTOP);
        tokio::time::sleep(Duration::from_millis(stopped_ms)).await;
        cluster.nodes[2].signal(Signal::SIGCONT);
        eprintln!(
            "injected: pause {} after {gap_ms} ms: SIGSTOP to node-2 (boot {boot_id:x}) for {stopped_ms} ms",
            pause + 1
        );
    }
    let log = workload.finish().await;
    assert!(log.hung.is_empty(), "calls hung: {:?}", log.hung);
    assert_eq!(log.untyped_errors(), 0, "untyped errors: {:?}", log.errors);
    assert!(log.replies > 0, "the workload got replies");

    assert_eq!(
        cluster.nodes[2].exited(),
        None,
        "node-2 must not exit: it was never down"
    );
    // The views agree on the original incarnation of every node, node-2 included.
    cluster.wait_converged().await;
    for node in &cluster.nodes {
        let downs = node.log_lines("WARN", &["declared down by the failure detector"]);
        assert!(
            downs.is_empty(),
            "{} declared a healthy node down: {downs:?}",
            node.ready.node
        );
    }
    let wrong = counters_out_of_bounds(&ledger, &gateways).await;
    assert!(
        wrong.is_empty(),
        "{} counters wrong: {wrong:?}",
        wrong.len()
    );
    let turns = read_cluster_audit(audit_dir.path(), &["node-0", "node-1", "node-2"]);
    assert_one_activation_at_a_time(&turns);
}

/// Node settings of the scale-in scenario: the local orchestrator, grains that stay active,
/// a paused rebalancer so the skew stays, and a call-rate policy of 10 calls/s per node. The
/// scale-in window starts at 10 minutes, so no scale-in happens before the load phase.
const SCALE_IN_CONFIG: &str = "orchestrator = \"local\"\nidle_after_secs = 600\n\
     [rebalancer]\nstart_paused = true\n\
     [scaling]\nmin_nodes = 2\nmax_nodes = 3\nevaluation_interval = \"300ms\"\ncooldown = \"1s\"\n\
     [[scaling.policies]]\npolicy = \"call_rate\"\ncalls_per_sec_per_node = 10.0\n\
     [scaling.scale_out]\nstabilization_window = \"600ms\"\n\
     [scaling.scale_in]\nstabilization_window = \"600s\"\n\
     policies = [{ type = \"nodes\", value = 1, period = \"1s\" }]\n";

/// Activates every grain of `ledger` through `gateway` and migrates each one that did not land
/// on its node in `targets` (indexed like the ledger's keys) there.
async fn place_grains(ledger: &Ledger, targets: &[&str], gateway: &NodeClient) {
    for (index, target) in targets.iter().enumerate() {
        let mut client = gateway.clone();
        let key = &ledger.keys[index];
        let (_, served_by) = client
            .invoke("counter", key, "get", serde_json::Value::Null, 10_000)
            .await
            .unwrap_or_else(|status| panic!("activate {key}: {status}"));
        if served_by == *target {
            continue;
        }
        let request = pb::MigrateRequest {
            grain_type: "counter".into(),
            key: key.clone(),
            target_node: (*target).to_owned(),
            timeout_ms: 10_000,
        };
        client
            .grains
            .migrate(request)
            .await
            .unwrap_or_else(|status| panic!("migrate {key} to {target}: {status}"));
    }
}

/// Returns the activation count of each node in a decision's snapshot, by name.
fn snapshot_activations(decision: &pb::ScalingDecision) -> BTreeMap<String, u64> {
    decision
        .snapshot
        .iter()
        .filter(|node| node.state == pb::NodeState::Active as i32)
        .map(|node| {
            let activations = node.load.as_ref().map_or(0, |load| load.activations);
            (node.name.clone(), activations)
        })
        .collect()
}

fn is_scale_in(decision: &pb::ScalingDecision) -> bool {
    decision
        .action
        .as_ref()
        .is_some_and(|action| action.kind == pb::action::Kind::ScaleIn as i32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_in_spares_the_busy_node() {
    // Goal: when load drops while most activations sit on one node, scale-in drains and
    // removes a node with fewer activations, the removed node has none when it stops, and
    // no call of a steady stream fails meanwhile. Method: three nodes with the local
    // orchestrator and a call-rate policy; a heavy set of counters migrated onto node-1 and
    // small sets onto node-0 (the supervisor's node) and node-2. node-1 sorts before node-2,
    // so a choice that ignored activations would remove node-1. A load phase on the heavy
    // counters asks for three nodes; then the scale-in window is shortened to 2 s and the
    // load drops to a stream of five calls per second over the light counters, some of
    // which the drain moves.
    const HEAVY_NODE: &str = "node-1";
    const DEADLINE: Duration = Duration::from_secs(5);
    const STREAM_PERIOD: Duration = Duration::from_millis(200);
    let _slot = cluster_slot().await;
    let seed = chaos_seed("scale-in");
    let mut rng = StdRng::seed_from_u64(seed);
    let heavy_count = rng.random_range(30..50);
    let light_per_node = rng.random_range(2..6);

    let mut config = tempfile::NamedTempFile::new().expect("config file");
    config
        .write_all(SCALE_IN_CONFIG.as_bytes())
        .expect("write the config");
    let config_path = config.path().to_str().expect("utf-8 path").to_owned();
    let mut cluster = Cluster::start_with(3, Timing::LOADED, &["--config", &config_path]).await;
    let clients = cluster.clients().await;
    let scaling_channel = tonic::transport::Endpoint::from_shared(format!(
        "http://{}",
        cluster.nodes[0].ready.grpc_addr
    ))
    .expect("valid endpoint")
    .connect()
    .await
    .expect("connect to node-0");
    let scaling = ScalingClient::new(scaling_channel);
    wait_until("node-0's supervisor acts", Duration::from_secs(30), || {
        let mut scaling = scaling.clone();
        async move {
            let status = scaling
                .get_status(pb::GetScalingStatusRequest {})
                .await
                .map_err(|status| status.to_string())?;
            Ok(status.into_inner())
        }
    })
    .await;

    let heavy = Ledger::new("heavy", heavy_count);
    let light = Ledger::new("light", 2 * light_per_node);
    let heavy_targets = vec![HEAVY_NODE; heavy_count];
    let light_targets: Vec<&str> = (0..2 * light_per_node)
        .map(|index| if index % 2 == 0 { "node-0" } else { "node-2" })
        .collect();
    place_grains(&heavy, &heavy_targets, &clients[0]).await;
    place_grains(&light, &light_targets, &clients[0]).await;
    let mut placed = BTreeMap::new();
    for (node, client) in cluster.nodes.iter().zip(&clients) {
        let count = client.clone().activations("counter").await.len();
        placed.insert(node.ready.node.clone(), count);
    }
    eprintln!(
        "injected: {heavy_count} counters on {HEAVY_NODE}, {light_per_node} each on node-0 and node-2; activations {placed:?}"
    );
    assert_eq!(
        placed[HEAVY_NODE], heavy_count,
        "activations on {HEAVY_NODE}"
    );

    let load_started = Instant::now();
    let load = Workload::start(&heavy, &clients[..1], 4, DEADLINE, seed);
    let (asked, _) = wait_until(
        "the call rate asks for three nodes",
        Duration::from_secs(30),
        || async {
            let decisions = try_decisions(&mut scaling.clone()).await?;
            let latest = decisions.first().ok_or("no decision yet")?;
            let desired = latest.recommendations.first().map(|r| r.desired_nodes);
            match desired {
                Some(desired) if desired >= 3 => Ok(latest.clone()),
                _ => Err(format!("latest decision recommends {desired:?} nodes")),
            }
        },
    )
    .await;
    let scale_ins_under_load = try_decisions(&mut scaling.clone())
        .await
        .expect("decisions")
        .iter()
        .filter(|decision| is_scale_in(decision))
        .count();
    assert_eq!(scale_ins_under_load, 0, "a scale-in under load");
    let mut policy = scaling
        .clone()
        .get_status(pb::GetScalingStatusRequest {})
        .await
        .expect("GetStatus")
        .into_inner()
        .policy
        .expect("a policy");
    policy
        .scale_in
        .as_mut()
        .expect("scale-in rules")
        .stabilization_window_ms = 2_000;
    scaling
        .clone()
        .set_policy(pb::SetPolicyRequest {
            policy: Some(policy),
        })
        .await
        .expect("SetPolicy");
    let load_log = load.finish().await;
    eprintln!(
        "injected: load phase of {:?}, {:.0} calls/s seen by decision d{}; scale-in window set to 2 s",
        load_started.elapsed(),
        asked
            .load
            .as_ref()
            .map_or(0.0, |load| load.total_calls_per_sec),
        asked.id
    );
    assert_eq!(load_log.error_total(), 0, "calls failed under load");

    // The drop: five calls per second over the light counters through node-0.
    let stop = Arc::new(AtomicBool::new(false));
    let stream = {
        let (ledger, stop, mut client) = (light.clone(), stop.clone(), clients[0].clone());
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5ca1e);
        tokio::spawn(async move {
            let mut log = CallLog::default();
            let mut tick = tokio::time::interval(STREAM_PERIOD);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let index = rng.random_range(0..ledger.keys.len());
                increment(&mut client, &ledger, index, DEADLINE, &mut log).await;
            }
            log
        })
    };
    let dropped = Instant::now();
    let (decision, _) = wait_until(
        "a scale-in decision has ended",
        Duration::from_secs(45),
        || async {
            let decisions = try_decisions(&mut scaling.clone()).await?;
            let scale_in = decisions
                .into_iter()
                .find(is_scale_in)
                .ok_or("no scale-in decision yet")?;
            match scale_in.duration_ms {
                Some(_) => Ok(scale_in),
                None => Err(format!("the action of d{} is running", scale_in.id)),
            }
        },
    )
    .await;
    let removed = decision.action.clone().expect("an action").remove_nodes;
    let before = snapshot_activations(&decision);
    eprintln!(
        "measured: d{} {:?} after the drop removes {removed:?}; activations in its snapshot {before:?}; {}",
        decision.id,
        dropped.elapsed(),
        decision.summary
    );
    assert_eq!(removed.len(), 1, "one node removed: {removed:?}");
    let removed = removed[0].clone();
    assert_ne!(removed, HEAVY_NODE, "scale-in removed the busiest node");
    assert_ne!(
        removed, decision.supervisor,
        "scale-in removed the supervisor"
    );
    assert!(
        before[&removed] < before[HEAVY_NODE],
        "{removed} had {} activations, {HEAVY_NODE} {}",
        before[&removed],
        before[HEAVY_NODE]
    );

    let outcome = decision.outcome.clone().unwrap_or_default();
    assert_eq!(
        outcome.kind,
        pb::action_outcome::Kind::Succeeded as i32,
        "scale-in outcome: {}",
        outcome.error
    );
    let check = decision
        .removals
        .iter()
        .find(|removal| removal.node == removed)
        .unwrap_or_else(|| panic!("no check of {removed} in {:?}", decision.removals));
    assert_eq!(
        check.activations_before_stop, 0,
        "{removed} before its stop"
    );
    assert!(check.stopped, "{removed} is recorded as left in place");

    let index = cluster
        .nodes
        .iter()
        .position(|node| node.ready.node == removed)
        .expect("the removed node is one the test started");
    let exit = cluster.nodes[index]
        .wait_exit(Duration::from_secs(30))
        .await;
    assert!(exit.success(), "{removed} exited with {exit}");
    let log_path = &cluster.nodes[index].log_path;
    let node_log = std::fs::read_to_string(log_path).expect("read the removed node's log");
    let at_stop = activations_deactivated_at_stop(&node_log);
    eprintln!(
        "measured: {removed} exited {exit}; activations it deactivated at its stop: {at_stop:?}"
    );
    assert!(
        !at_stop.is_empty() && at_stop.iter().all(|&count| count == 0),
        "{removed} held activations at its stop: {at_stop:?}; log in {}",
        log_path.display()
    );

    // Let the stream run on for a moment past the removal, then stop it.
    let acknowledged = light.acknowledged_total();
    wait_acknowledged(&light, acknowledged, 5).await;
    stop.store(true, Ordering::Relaxed);
    let stream_log = stream.await.expect("stream task");
    eprintln!(
        "measured: steady stream {} replies, errors {:?} (first of each: {:?}), {} hung, slowest {:?}",
        stream_log.replies,
        stream_log.errors,
        stream_log.first_messages,
        stream_log.hung.len(),
        stream_log.max_latency
    );
    assert!(
        stream_log.hung.is_empty(),
        "calls hung: {:?}",
        stream_log.hung
    );
    assert_eq!(
        stream_log.error_total(),
        0,
        "calls of the steady stream failed: {:?}",
        stream_log.first_messages
    );
    let survivors: Vec<NodeClient> = cluster
        .nodes
        .iter()
        .zip(&clients)
        .filter(|(node, _)| node.ready.node != removed)
        .map(|(_, client)| client.clone())
        .collect();
    for ledger in [&heavy, &light] {
        let wrong = counters_out_of_bounds(ledger, &survivors).await;
        assert!(
            wrong.is_empty(),
            "{} counters wrong: {wrong:?}",
            wrong.len()
        );
    }
}
