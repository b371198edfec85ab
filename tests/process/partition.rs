//! Network faults between real node processes, each in its own network namespace: a full
//! partition of one node and its heal, a one-way partition, and packet loss.
//!
//! The faults are nftables rules in the nodes' namespaces (see `common::netns`). The tests
//! need root, `ip` and `nft`; without them each test prints SKIPPED with the reason and
//! passes. Each scenario prints its seed, what it injected and what it measured.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::audit::{assert_one_activation_at_a_time, audit_path, read_cluster_audit};
use common::netns::{Fault, NetLab};
use common::workload::{
    CallLog, Ledger, Workload, activate_all, chaos_seed, counters_out_of_bounds, now_ns,
    wait_acknowledged,
};
use common::{
    Cluster, NodeClient, NodeProcess, Timing, cluster_slot, describe, wait_gone,
    wait_one_activation_each, wait_until,
};
use gristmill::api::pb;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use tokio::time::Instant;

/// Node names, by index in the lab.
const NAMES: [&str; 3] = ["node-0", "node-1", "node-2"];
/// Counter grains each scenario increments.
const GRAINS: usize = 60;
/// Deadline of each call of the workloads.
const DEADLINE: Duration = Duration::from_secs(2);
/// Time the cluster has to settle after a heal: views agree and every grain has one
/// activation.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);

/// Returns the time within which the failure detector with `timing` declares an unreachable
/// node down. foca probes the members in a shuffled round-robin order, so with two peers a
/// prober reaches a given member within three probe periods. The failed probe and its indirect
/// probes take one more period, and then the suspicion runs out. One second of margin covers
/// the gossip that spreads the verdict and the polling.
fn detection_bound(timing: Timing) -> Duration {
    Duration::from_millis(4 * timing.probe_period_ms + timing.suspect_to_down_ms + 1_000)
}

/// Starts node `index` of the lab, with a turn audit in `audit_dir`.
async fn start_in_lab(
    lab: &NetLab,
    index: usize,
    seeds: &[std::net::SocketAddr],
    timing: Timing,
    audit_dir: &Path,
) -> NodeProcess {
    let name = NAMES[index];
    let audit = audit_path(audit_dir, name).display().to_string();
    let args = ["--turn-audit", audit.as_str()];
    NodeProcess::start_on(&lab.host(index), name, seeds, timing, &args, &[]).await
}

/// Starts a node in each namespace of the lab and waits until every view lists all of them.
async fn start_lab_cluster(lab: &NetLab, timing: Timing, audit_dir: &Path) -> Cluster {
    let first = start_in_lab(lab, 0, &[], timing, audit_dir).await;
    let seeds = [first.ready.gossip_addr];
    let mut nodes = vec![first];
    for index in 1..NAMES.len() {
        nodes.push(start_in_lab(lab, index, &seeds, timing, audit_dir).await);
    }
    let cluster = Cluster { nodes };
    cluster.wait_converged().await;
    cluster
}

/// Returns each node's view of the cluster, for reports.
async fn views(clients: &[NodeClient]) -> BTreeMap<String, String> {
    let mut views = BTreeMap::new();
    for (name, client) in NAMES.iter().zip(clients) {
        let view = match client.clone().members().await {
            Ok(members) => describe(&members),
            Err(error) => error,
        };
        views.insert((*name).to_owned(), view);
    }
    views
}

/// Returns the lines of every node's log that declare a peer down, by node.
fn down_declarations(cluster: &Cluster) -> BTreeMap<String, Vec<String>> {
    cluster
        .nodes
        .iter()
        .map(|node| (node.ready.node.clone(), node.down_warnings()))
        .filter(|(_, lines)| !lines.is_empty())
        .collect()
}

/// Deletes the lab and asserts that none of its namespaces is left.
fn tear_down(mut lab: NetLab, cluster: Cluster) {
    drop(cluster);
    let left = lab.tear_down();
    assert!(left.is_empty(), "namespaces left after the test: {left:?}");
}

/// Calls `get` on `key` through `client` until a call succeeds, and returns the serving node.
async fn serving_node(client: &NodeClient, key: &str, within: Duration) -> String {
    let what = format!("a call to {key} succeeds");
    let (served_by, _) = wait_until(&what, within, || {
        let mut client = client.clone();
        async move {
            match client
                .invoke("counter", key, "get", json!(null), 1_000)
                .await
            {
                Ok((_, served_by)) => Ok(served_by),
                Err(status) => Err(status.to_string()),
            }
        }
    })
    .await;
    served_by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_partition_moves_grains_and_heals() {
    // Goal: when one node is cut off from the other two, the majority declares it down
    // within the failure-detector bound and its grains reactivate on the majority side, and
    // the cut-off node stops taking turns before that (its membership lease ends). After
    // the heal the views converge, with the node back either as the same incarnation or as a
    // new one, no grain ever has two activations running turns, and no call hangs. Method:
    // three audited nodes with the default failure-detector timing and increments through
    // all three nodes. node-2's namespace drops every packet from and to the other two for
    // a time from the seed. A node-2 that exits after the heal is started again under the
    // same name.
    let timing = Timing::DEFAULT;
    let _slot = cluster_slot().await;
    let Some(lab) = NetLab::create_or_skip(NAMES.len(), "full partition") else {
        return;
    };
    let seed = chaos_seed("full-partition");
    let mut rng = StdRng::seed_from_u64(seed);
    let audit_dir = tempfile::tempdir().expect("audit directory");
    let mut cluster = start_lab_cluster(&lab, timing, audit_dir.path()).await;
    let clients = cluster.clients().await;
    let ledger = Ledger::new("part", GRAINS);
    activate_all(&ledger, &clients).await;
    let on_isolated: Vec<String> = clients[2]
        .clone()
        .activations("counter")
        .await
        .into_iter()
        .map(|activation| activation.key)
        .collect();
    assert!(!on_isolated.is_empty(), "node-2 hosts some counters");

    let majority = clients[..2].to_vec();
    let workload = Workload::start(&ledger, &majority, 4, DEADLINE, seed);
    // Increments through node-2 itself go on during the partition. Its grains must stop
    // taking turns before the majority reactivates them, which the turn audit checks.
    let isolated_workload = Workload::start(&ledger, &clients[2..], 4, DEADLINE, !seed);
    wait_acknowledged(&ledger, ledger.acknowledged_total(), 100).await;

    let held_ms = rng.random_range(8_000..12_000);
    let boot_id = cluster.nodes[2].ready.boot_id;
    let cut_ns = now_ns();
    let cut = Instant::now();
    lab.impose(2, &[Fault::DropFrom(vec![0, 1]), Fault::DropTo(vec![0, 1])]);
    eprintln!(
        "injected: node-2 (boot {boot_id:x}, {} counters) cut off from node-0 and node-1 at {cut_ns} ns, for {held_ms} ms",
        on_isolated.len()
    );

    let detected = wait_gone(&majority, "node-2", detection_bound(timing)).await;
    eprintln!(
        "measured: node-0 and node-1 see node-2 down {detected:?} after the cut (bound {:?})",
        detection_bound(timing)
    );
    let key = &on_isolated[0];
    let served_by = serving_node(&clients[0], key, Duration::from_secs(10)).await;
    eprintln!(
        "measured: {key}, which lived on node-2, served by {served_by} {:?} after the cut",
        cut.elapsed()
    );
    assert!(
        served_by == "node-0" || served_by == "node-1",
        "{key} served by {served_by} during the partition"
    );
    eprintln!("views during the partition: {:?}", views(&clients).await);

    // The partition's length is the injected fault, so a fixed sleep is its length.
    tokio::time::sleep(Duration::from_millis(held_ms).saturating_sub(cut.elapsed())).await;
    lab.heal(2);
    let healed = Instant::now();
    eprintln!("injected: heal after {:?}", cut.elapsed());

    let outcome = wait_for_rejoin(&mut cluster, &clients, boot_id).await;
    let seeds = [cluster.nodes[0].ready.gossip_addr];
    let outcome = match outcome {
        Rejoin::SameIncarnation => "refuted, same boot id".to_owned(),
        Rejoin::Exited(status) => {
            cluster.nodes[2] = start_in_lab(&lab, 2, &seeds, timing, audit_dir.path()).await;
            format!("exited ({status}) and was started again")
        }
    };
    wait_converged_alive(&mut cluster).await;
    eprintln!(
        "measured: node-2 {outcome}; views agreed {:?} after the heal",
        healed.elapsed()
    );
    wait_acknowledged(&ledger, ledger.acknowledged_total(), 100).await;
    let log = workload.finish().await;
    // node-2's own calls fail untyped once its process is gone, so only hangs count there.
    let isolated_log = isolated_workload.finish().await;
    assert!(
        isolated_log.hung.is_empty(),
        "calls through node-2 hung: {:?}",
        isolated_log.hung
    );
    assert!(log.hung.is_empty(), "calls hung: {:?}", log.hung);
    assert_eq!(log.untyped_errors(), 0, "untyped errors: {:?}", log.errors);

    let clients = cluster.clients().await;
    let wrong = counters_out_of_bounds(&ledger, &clients[..2]).await;
    assert!(
        wrong.is_empty(),
        "{} counters wrong: {wrong:?}",
        wrong.len()
    );
    let took = wait_one_activation_each(&clients, "counter", &ledger.keys, SETTLE_WITHIN).await;
    eprintln!("measured: every grain had one activation {took:?} after the reads");
    let turns = read_cluster_audit(audit_dir.path(), &NAMES);
    assert_one_activation_at_a_time(&turns);
    tear_down(lab, cluster);
}

/// Waits until every view lists the cluster's nodes as ACTIVE with their boot ids; panics as soon as a node exits, naming its down warnings, or when the
/// views still differ after [`SETTLE_WITHIN`].
async fn wait_converged_alive(cluster: &mut Cluster) {
    let started = Instant::now();
    loop {
        for node in &mut cluster.nodes {
            if let Some(status) = node.exited() {
                panic!(
                    "{} exited ({status}) after the heal; its warnings: {:?}; log in {}",
                    node.ready.node,
                    node.down_warnings(),
                    node.log_path.display()
                );
            }
        }
        let mut clients = Vec::new();
        let mut seen = Ok(());
        for node in &cluster.nodes {
            let netns = node.host.client_netns.as_deref();
            match NodeClient::try_connect_from(netns, node.ready.grpc_addr).await {
                Ok(client) => clients.push(client),
                Err(error) => seen = Err(error),
            }
        }
        if seen.is_ok() {
            seen = cluster.check_converged(&clients).await;
        }
        match seen {
            Ok(()) => return,
            Err(seen) => assert!(
                started.elapsed() < SETTLE_WITHIN,
                "views differ {SETTLE_WITHIN:?} after the heal; last seen: {seen}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How a node that the others declared down came back.
enum Rejoin {
    /// It refuted the suspicion and every view lists it Active with its old boot id.
    SameIncarnation,
    /// Its process exited.
    Exited(std::process::ExitStatus),
}

/// Waits until node-2 is Active with `boot_id` in every view or has exited; panics when
/// neither happens within [`SETTLE_WITHIN`].
async fn wait_for_rejoin(cluster: &mut Cluster, clients: &[NodeClient], boot_id: u64) -> Rejoin {
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        if let Some(status) = cluster.nodes[2].exited() {
            return Rejoin::Exited(status);
        }
        let mut disagree = Vec::new();
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
                disagree.push(describe(&members));
            }
        }
        if disagree.is_empty() {
            return Rejoin::SameIncarnation;
        }
        assert!(
            Instant::now() < deadline,
            "node-2 neither rejoined nor exited within {SETTLE_WITHIN:?}; views: {disagree:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a workload through all three nodes while `faults` hold for a time from the seed, then
/// heals and asserts that no node was declared down. So every node still runs with its first
/// boot id, no log declares a peer down, and the views converge.
async fn assert_no_false_down(scenario: &str, faults: &[(usize, Vec<Fault>)]) {
    let timing = Timing::DEFAULT;
    let _slot = cluster_slot().await;
    let Some(lab) = NetLab::create_or_skip(NAMES.len(), scenario) else {
        return;
    };
    let seed = chaos_seed(scenario);
    let mut rng = StdRng::seed_from_u64(seed);
    let audit_dir = tempfile::tempdir().expect("audit directory");
    let mut cluster = start_lab_cluster(&lab, timing, audit_dir.path()).await;
    let clients = cluster.clients().await;
    let ledger = Ledger::new(scenario, GRAINS);
    activate_all(&ledger, &clients).await;
    let workload = Workload::start(&ledger, &clients, 3, DEADLINE, seed);
    wait_acknowledged(&ledger, ledger.acknowledged_total(), 50).await;

    // At least twice the detection bound, so a false verdict has time to happen.
    let held = 2 * detection_bound(timing) + Duration::from_millis(rng.random_range(0..2_000));
    let started = Instant::now();
    for (node, node_faults) in faults {
        lab.impose(*node, node_faults);
        eprintln!("injected: {node_faults:?} on node-{node}");
    }
    eprintln!("injected: faults held for {held:?}");
    // The fault's length is the injected fault, so a fixed sleep is its length.
    tokio::time::sleep(held).await;
    let during = views(&clients).await;
    for (node, _) in faults {
        lab.heal(*node);
    }
    eprintln!(
        "injected: heal after {:?}; views just before it: {during:?}",
        started.elapsed()
    );
    let acknowledged = ledger.acknowledged_total();
    wait_acknowledged(&ledger, acknowledged, 50).await;
    let log: CallLog = workload.finish().await;

    let exited: Vec<String> = cluster
        .nodes
        .iter_mut()
        .filter_map(|node| {
            let status = node.exited()?;
            Some(format!("{} ({status})", node.ready.node))
        })
        .collect();
    let downs = down_declarations(&cluster);
    eprintln!("measured: exited nodes {exited:?}; down declarations {downs:?}");
    assert!(exited.is_empty(), "nodes exited: {exited:?}");
    assert!(downs.is_empty(), "healthy nodes declared down: {downs:?}");
    cluster.wait_converged().await;
    assert!(log.hung.is_empty(), "calls hung: {:?}", log.hung);
    assert_eq!(log.untyped_errors(), 0, "untyped errors: {:?}", log.errors);
    let wrong = counters_out_of_bounds(&ledger, &clients).await;
    assert!(
        wrong.is_empty(),
        "{} counters wrong: {wrong:?}",
        wrong.len()
    );
    let turns = read_cluster_audit(audit_dir.path(), &NAMES);
    assert_one_activation_at_a_time(&turns);
    tear_down(lab, cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_way_partition_declares_no_node_down() {
    // Goal: when packets from node-0 to node-1 are lost but the reverse path and every path
    // through node-2 work, the indirect probes through node-2 keep both nodes alive with the
    // default timing. Method: node-1's namespace drops every packet from node-0 for twice
    // the detection bound, under a workload through all nodes.
    assert_no_false_down("one-way", &[(1, vec![Fault::DropFrom(vec![0])])]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn packet_loss_declares_no_node_down() {
    // Goal: 20% loss of the packets a node receives from its peers slows calls but gets no
    // node declared down with the default timing. Method: node-2's namespace drops a random
    // 20% of the packets from node-0 and node-1 for twice the detection bound, under a
    // workload through all nodes.
    assert_no_false_down("loss", &[(2, vec![Fault::LoseFrom(vec![0, 1], 20)])]).await;
}
