//! Gray failures between real node processes, each in its own network namespace: a node whose
//! gossip (UDP) works but whose cluster sessions (TCP) do not.
//!
//! The faults are nftables rules in one node's namespace (see `common::netns`) that reset TCP
//! on the cluster ports and let UDP pass, so the failure detector keeps the node alive. The
//! tests need root, `ip` and `nft`; without them each test prints SKIPPED with the reason and
//! passes. Each test prints what it injected and what it measured.

mod common;

use std::path::Path;
use std::time::Duration;

use common::netns::{Fault, NetLab};
use common::workload::{Ledger, activate_all};
use common::{Cluster, NodeClient, NodeProcess, Timing, cluster_slot, config_file, wait_until};
use gristmill::api::pb;
use serde_json::json;
use tokio::time::Instant;

/// Node names, by index in the lab. Each pair's session is dialed by the name that sorts
/// higher.
const NAMES: [&str; 4] = ["node-0", "node-1", "node-2", "node-3"];
/// `membership.unreachable_after` of the test nodes.
const UNREACHABLE_AFTER: Duration = Duration::from_secs(3);
/// `cluster_ack_timeout_ms` of the test nodes.
const ACK_TIMEOUT: Duration = Duration::from_secs(1);
/// Maximum wait between two ractor_cluster pings on a session (ractor_cluster 0.16.5 draws
/// it from 1 to 5 s).
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// The node config file of the test nodes.
const TEST_CONFIG: &str =
    "cluster_ack_timeout_ms = 1000\n[membership]\nunreachable_after = \"3s\"\n";
/// Counter grains activated before the fault.
const GRAINS: usize = 40;
/// Part of the warning of a node that declares a member down after the votes.
const VOTED_DOWN: &str = "declaring a member down";

/// Returns the time within which the members declare a node down after its packets stop.
///
/// A session ends when a ping stays unacknowledged for the ack timeout, so within one ping
/// interval and the ack timeout. The clock of each peer starts when the transport's session
/// table shows no ready session, which the node reads every 250 ms, and the agent checks its
/// report every 250 ms. The report then goes out at once with the meta broadcast. foca sends
/// it on its next datagrams (a probe period of 750 ms at the latest with the default timing),
/// and the receiving nodes count the votes within 250 ms. The down verdict spreads the same way. Two seconds cover those
/// steps; one more covers the test's polling and a loaded machine.
fn vote_bound() -> Duration {
    PING_INTERVAL + ACK_TIMEOUT + UNREACHABLE_AFTER + Duration::from_secs(3)
}

/// Starts a node in each namespace of the lab with the config file `config`, and waits until
/// every view lists all of them as ACTIVE.
async fn start_lab_cluster(lab: &NetLab, config: &Path) -> Cluster {
    let config = config.display().to_string();
    let args = ["--config", config.as_str()];
    let first =
        NodeProcess::start_on(&lab.host(0), NAMES[0], &[], Timing::DEFAULT, &args, &[]).await;
    let seeds = [first.ready.gossip_addr];
    let mut nodes = vec![first];
    for (index, name) in NAMES.iter().enumerate().skip(1) {
        let host = lab.host(index);
        nodes.push(NodeProcess::start_on(&host, name, &seeds, Timing::DEFAULT, &args, &[]).await);
    }
    let cluster = Cluster { nodes };
    cluster.wait_converged().await;
    cluster
}

/// Returns the cluster port of each node, by index.
fn cluster_ports(cluster: &Cluster) -> Vec<u16> {
    cluster
        .nodes
        .iter()
        .map(|node| node.ready.cluster_addr.port())
        .collect()
}

/// Returns the names in the `voters=[...]` field of a vote warning.
fn voters_of(line: &str) -> Vec<String> {
    let Some((_, rest)) = line.split_once("voters=[") else {
        return Vec::new();
    };
    let list = rest.split(']').next().unwrap_or_default();
    list.split(',')
        .map(|name| name.trim().trim_matches('"').to_owned())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Returns every node's warnings that declare `member` down after the votes, by node name.
fn vote_warnings(cluster: &Cluster, member: &str) -> Vec<(String, String)> {
    let needle = format!("member={member}#");
    cluster
        .nodes
        .iter()
        .flat_map(|node| {
            let lines = node.log_lines("WARN", &[VOTED_DOWN, &needle]);
            lines
                .into_iter()
                .map(|line| (node.ready.node.clone(), line))
        })
        .collect()
}

/// Returns the names that `client`'s view lists as ACTIVE.
async fn active_names(client: &NodeClient) -> Vec<String> {
    let members = client.clone().members().await.unwrap_or_default();
    let mut names: Vec<String> = members
        .into_iter()
        .filter(|member| member.state == pb::NodeState::Active as i32)
        .map(|member| member.name)
        .collect();
    names.sort();
    names
}

/// Waits until every client's view lists `name` as DEAD or not at all, and returns the
/// time since `since`; panics after `within`.
async fn wait_voted_out(
    clients: &[NodeClient],
    name: &str,
    since: Instant,
    within: Duration,
) -> Duration {
    let what = format!("every healthy view lists {name} DEAD or not at all");
    wait_until(&what, within, || async {
        for client in clients {
            let members = client.clone().members().await?;
            if !common::is_gone(&members, name) {
                return Err(common::describe(&members));
            }
        }
        Ok(())
    })
    .await;
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_without_sessions_is_voted_down() {
    // Goal: a node whose gossip works but whose cluster sessions all fail is declared down by
    // the others within `vote_bound`, on the votes of at least two nodes, and calls to the
    // grains it hosted succeed on the other nodes. No healthy node is declared down. Method:
    // four nodes with a 1 s ack timeout and a 3 s `unreachable_after`. node-2's namespace
    // rejects every TCP packet from or to any cluster port, while UDP gossip passes. The
    // rules also catch the resets they send in reply, so the peers see their packets vanish,
    // and only the ack timeout ends the established sessions.
    let _slot = cluster_slot().await;
    let Some(lab) = NetLab::create_or_skip(NAMES.len(), "session loss") else {
        return;
    };
    let config = config_file(TEST_CONFIG);
    let mut cluster = start_lab_cluster(&lab, config.path()).await;
    let clients = cluster.clients().await;
    let ledger = Ledger::new("gray", GRAINS);
    activate_all(&ledger, &clients).await;
    let on_cut_off: Vec<String> = clients[2]
        .clone()
        .activations("counter")
        .await
        .into_iter()
        .map(|activation| activation.key)
        .collect();
    assert!(!on_cut_off.is_empty(), "node-2 hosts some counters");

    let ports = cluster_ports(&cluster);
    let cut = Instant::now();
    lab.impose(2, &[Fault::ResetTcpPorts(ports.clone())]);
    eprintln!(
        "injected: node-2 ({} counters) resets TCP on the cluster ports {ports:?}; UDP passes",
        on_cut_off.len()
    );

    let healthy = [clients[0].clone(), clients[1].clone(), clients[3].clone()];
    let bound = vote_bound();
    let detected = wait_voted_out(&healthy, "node-2", cut, bound).await;
    eprintln!(
        "measured: node-0, node-1 and node-3 list node-2 DEAD {detected:?} after the cut (bound {bound:?})"
    );
    assert!(
        detected >= UNREACHABLE_AFTER,
        "node-2 was declared down {detected:?} after the cut, before unreachable_after"
    );

    let warnings = vote_warnings(&cluster, "node-2");
    eprintln!("measured: vote warnings {warnings:#?}");
    assert!(!warnings.is_empty(), "no node logged the vote on node-2");
    for (node, line) in &warnings {
        let voters = voters_of(line);
        assert!(
            voters.len() >= 2,
            "{node} declared node-2 down on the votes {voters:?}"
        );
        assert!(
            !voters.contains(&"node-2".to_owned()),
            "node-2 voted for itself: {line}"
        );
    }

    let key = &on_cut_off[0];
    let what = format!("a call to {key} succeeds on a healthy node");
    let (served_by, took) = wait_until(&what, Duration::from_secs(10), || {
        let mut client = clients[0].clone();
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
    eprintln!(
        "measured: {key}, which lived on node-2, served by {served_by} {took:?} after the vote"
    );
    assert_ne!(served_by, "node-2");

    for (index, client) in healthy.iter().enumerate() {
        let active = active_names(client).await;
        assert_eq!(
            active,
            ["node-0", "node-1", "node-3"],
            "ACTIVE in view {index}"
        );
    }
    for node in &mut cluster.nodes {
        if node.ready.node != "node-2" {
            assert!(node.exited().is_none(), "{} exited", node.ready.node);
        }
    }
    for other in ["node-0", "node-1", "node-3"] {
        let votes = vote_warnings(&cluster, other);
        assert!(votes.is_empty(), "healthy {other} voted down: {votes:?}");
    }
    drop(cluster);
    let mut lab = lab;
    let left = lab.tear_down();
    assert!(left.is_empty(), "namespaces left after the test: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_vote_declares_nobody_down() {
    // Goal: a node that cannot open sessions to one peer lists that peer, and the peer lists
    // it, but one vote each declares neither down. Method: four nodes with a 3 s
    // `unreachable_after`; node-1 dials only node-0 (the names that sort lower), and its
    // namespace resets what it sends to node-0's cluster port. The others dial node-1, which
    // works. The test waits until both nodes logged their reports, keeps the fault for three
    // times `unreachable_after`, and checks that no node voted anyone down.
    let _slot = cluster_slot().await;
    let Some(lab) = NetLab::create_or_skip(NAMES.len(), "single vote") else {
        return;
    };
    let config = config_file(TEST_CONFIG);
    let mut cluster = start_lab_cluster(&lab, config.path()).await;
    let clients = cluster.clients().await;
    let ports = cluster_ports(&cluster);

    let cut = Instant::now();
    lab.impose(1, &[Fault::ResetTcpTo(vec![ports[0]])]);
    eprintln!(
        "injected: node-1 resets TCP it sends to node-0's cluster port {}",
        ports[0]
    );

    let report = "unreachable report changed";
    let within = vote_bound();
    cluster.nodes[1]
        .wait_log_line("INFO", &[report, "\"node-0\""], within)
        .await;
    cluster.nodes[0]
        .wait_log_line("INFO", &[report, "\"node-1\""], within)
        .await;
    eprintln!(
        "measured: node-0 and node-1 report each other {:?} after the cut",
        cut.elapsed()
    );

    // The fault's length is the injected fault, so a fixed sleep is its length.
    let held = 3 * UNREACHABLE_AFTER;
    tokio::time::sleep(held).await;
    let mut views = Vec::new();
    for client in &clients {
        views.push(active_names(client).await);
    }
    lab.heal(1);
    eprintln!(
        "injected: heal after {:?}; ACTIVE views before it: {views:?}",
        cut.elapsed()
    );

    for node in &mut cluster.nodes {
        assert!(node.exited().is_none(), "{} exited", node.ready.node);
        let downs = node.down_warnings();
        assert!(downs.is_empty(), "{} logged {downs:?}", node.ready.node);
    }
    for name in NAMES {
        let votes = vote_warnings(&cluster, name);
        assert!(votes.is_empty(), "{name} voted down: {votes:?}");
    }
    for (index, view) in views.iter().enumerate() {
        assert_eq!(view, &NAMES, "ACTIVE in view {index}");
    }
    drop(cluster);
    let mut lab = lab;
    let left = lab.tear_down();
    assert!(left.is_empty(), "namespaces left after the test: {left:?}");
}
