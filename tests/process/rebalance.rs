//! The rebalancer over real node processes: a node that joins a loaded cluster receives its
//! share of the grains, and then the rebalancers stop moving them.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use common::{Cluster, NodeClient, NodeProcess, Timing, cluster_slot, spread_counters, wait_until};
use gristmill::api::pb;

/// Counter grains spread over the first three nodes.
const COUNTERS: usize = 240;
/// Time between two rebalancer rounds. It is several times the broadcast period below, so a
/// round plans on loads that include the previous round's moves.
const ROUND_INTERVAL: &str = "2s";
/// Membership broadcast period of the test nodes, in milliseconds.
const META_PERIOD_MS: u64 = 250;
/// Time the cluster has to balance after the fourth node joins and go quiet.
const BALANCE_WITHIN: Duration = Duration::from_secs(120);
/// Maximum number of rounds with moves that one node may need. A node with about 80 grains
/// sheds about 20, at most 10% of its activations a round, so three rounds suffice. The rest
/// is slack for gossip lag.
const MAX_MOVING_ROUNDS: usize = 10;
/// Largest distance from the mean activation count a balanced node may have, as a fraction.
const BALANCE_BAND: f64 = 0.15;

/// Writes a node config file with short rebalancer and broadcast intervals.
fn config_file() -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("create the config file");
    write!(
        file,
        "[membership]\nmeta_period_ms = {META_PERIOD_MS}\n\n\
         [rebalancer]\nround_interval = \"{ROUND_INTERVAL}\"\nmin_move_interval = \"10s\"\n"
    )
    .expect("write the config file");
    file
}

/// Returns the number of counter activations on each node, by node name.
async fn activation_counts(
    clients: &mut [NodeClient],
    names: &[String],
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (client, name) in clients.iter_mut().zip(names) {
        counts.insert(name.clone(), client.activations("counter").await.len());
    }
    counts
}

/// Returns each node's rebalancer status, by node name.
async fn rebalancer_statuses(clients: &mut [NodeClient]) -> BTreeMap<String, pb::RebalancerStatus> {
    let mut statuses = BTreeMap::new();
    for client in clients {
        let status = client
            .grains
            .get_rebalancer(pb::GetRebalancerRequest {})
            .await
            .expect("GetRebalancer")
            .into_inner();
        statuses.insert(status.node.clone(), status);
    }
    statuses
}

/// Returns why `counts` are not all within [`BALANCE_BAND`] of their mean, if they are not.
fn imbalance(counts: &BTreeMap<String, usize>) -> Option<String> {
    let mean = counts.values().sum::<usize>() as f64 / counts.len() as f64;
    let outside: Vec<String> = counts
        .iter()
        .filter(|(_, count)| (**count as f64 - mean).abs() > mean * BALANCE_BAND)
        .map(|(name, count)| format!("{name} holds {count}"))
        .collect();
    (!outside.is_empty()).then(|| format!("mean {mean:.1}, outside ±15%: {outside:?}"))
}

/// Returns whether the last two rounds of `status` moved nothing.
fn ends_quiet(status: &pb::RebalancerStatus) -> bool {
    let rounds = &status.rounds;
    rounds.len() >= 2
        && rounds[rounds.len() - 2..]
            .iter()
            .all(|r| r.moves.is_empty())
}

/// Goal: a joining node gets its share, in few rounds, and the rebalancers then go quiet.
/// Method: three nodes host 240 counters, and a fourth joins empty. The test polls activation
/// counts and `GetRebalancer` on every node until all counts are within ±15% of the mean and
/// every node's last two rounds moved nothing. Then it checks that no grain was lost or
/// doubled, that no node needed more than a few moving rounds, and that two more rounds move
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_node_gets_share_then_quiet() {
    let _slot = cluster_slot().await;
    let config = config_file();
    let config_path = config.path().to_str().expect("temp paths are UTF-8");
    let args = ["--config", config_path];
    let mut cluster = Cluster::start_with(3, Timing::FAST, &args).await;
    let mut clients = cluster.clients().await;
    spread_counters(&mut clients, COUNTERS).await;

    let seed = [cluster.nodes[0].ready.gossip_addr];
    let joining = NodeProcess::start("node-3", &seed, Timing::FAST, &args).await;
    cluster.nodes.push(joining);
    cluster.wait_converged().await;
    let clients = cluster.clients().await;
    let names: Vec<String> = cluster.nodes.iter().map(|n| n.ready.node.clone()).collect();

    let condition = "every node holds ±15% of the mean and its last two rounds moved nothing";
    let ((counts, statuses), took) = wait_until(condition, BALANCE_WITHIN, || {
        let mut clients = clients.clone();
        let names = names.clone();
        async move {
            let counts = activation_counts(&mut clients, &names).await;
            if let Some(imbalance) = imbalance(&counts) {
                return Err(imbalance);
            }
            let statuses = rebalancer_statuses(&mut clients).await;
            let busy: Vec<&String> = statuses
                .iter()
                .filter(|(_, status)| !ends_quiet(status))
                .map(|(name, _)| name)
                .collect();
            if !busy.is_empty() {
                return Err(format!("counts {counts:?}; still moving: {busy:?}"));
            }
            Ok((counts, statuses))
        }
    })
    .await;
    eprintln!("balanced in {took:?}: {counts:?}");

    let total: usize = counts.values().sum();
    assert_eq!(total, COUNTERS, "activations after rebalancing: {counts:?}");
    assert!(counts["node-3"] > 0, "node-3 received nothing: {counts:?}");
    for (name, status) in &statuses {
        let moving = status.rounds.iter().filter(|r| !r.moves.is_empty()).count();
        assert!(
            moving <= MAX_MOVING_ROUNDS,
            "{name} moved grains in {moving} rounds"
        );
        let failed: Vec<&pb::RebalanceMove> = status
            .rounds
            .iter()
            .flat_map(|r| &r.moves)
            .filter(|m| !m.succeeded)
            .collect();
        assert!(failed.is_empty(), "{name} had failed moves: {failed:?}");
    }

    // Two more rounds on every node: still no moves, and the counts stay where they were.
    let last_round: BTreeMap<String, u64> = statuses
        .iter()
        .map(|(name, status)| (name.clone(), status.rounds.last().map_or(0, |r| r.round)))
        .collect();
    let condition = "every node ran two more rounds";
    let (later, _) = wait_until(condition, BALANCE_WITHIN, || {
        let mut clients = clients.clone();
        let last_round = last_round.clone();
        async move {
            let statuses = rebalancer_statuses(&mut clients).await;
            for (name, status) in &statuses {
                let newest = status.rounds.last().map_or(0, |r| r.round);
                if newest < last_round[name] + 2 {
                    return Err(format!("{name} is at round {newest}"));
                }
            }
            Ok(statuses)
        }
    })
    .await;
    for (name, status) in &later {
        let moved: Vec<&pb::RebalanceRound> = status
            .rounds
            .iter()
            .filter(|r| r.round > last_round[name] && !r.moves.is_empty())
            .collect();
        assert!(
            moved.is_empty(),
            "{name} moved grains after balancing: {moved:?}"
        );
    }
    let mut clients = clients;
    assert_eq!(activation_counts(&mut clients, &names).await, counts);
}
