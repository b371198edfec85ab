//! Nodes started with another cookie than the cluster's, over real node processes on
//! 127.0.0.1. The cookie authenticates cluster connections, so a node that fails the cookie
//! handshake must not take part in the cluster. It must not become an Active member that
//! placement and the directory use, and it must not displace a member.
//!
//! NOTE: both tests fail on main. The SWIM gossip carries no cookie, so a node with a wrong
//! cookie joins the membership and becomes Active.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Cluster, NodeProcess, Timing, cluster_slot, describe, wait_until};
use gristmill::api::pb;

/// Cookie that differs from the one the test cluster uses.
const WRONG_COOKIE: &str = "another-cookie-0123456789abcdef";

/// Time a rejected node has to fail its handshakes and exit, with a margin for a loaded
/// machine.
const EXIT_WITHIN: Duration = Duration::from_secs(30);

/// Time an impostor gets to take a member's place. It is three times the default suspicion
/// timeout, and on main the real member exited well within it.
const DISPLACE_WITHIN: Duration = Duration::from_secs(9);

/// Starts node `name` with [`WRONG_COOKIE`], joining through `seed`, and waits until its first
/// cookie handshake with a member has failed.
async fn start_with_wrong_cookie(name: &str, seed: SocketAddr) -> NodeProcess {
    let node = NodeProcess::start_with_env(
        name,
        &[seed],
        Timing::DEFAULT,
        &[],
        &[("GRISTMILL_COOKIE", WRONG_COOKIE)],
    )
    .await;
    node.wait_log_line("WARN", &["handshake_failed"], EXIT_WITHIN)
        .await;
    node
}

// Goal: a node with the wrong cookie either exits or stays out of the cluster's member list.
// On main it becomes ACTIVE in every view, the directory gives it partitions and placement
// gives it grains, and calls from the other nodes to those grains time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_cookie_node_never_active() {
    let _slot = cluster_slot().await;
    let cluster = Cluster::start(1, Timing::DEFAULT).await;
    let seed = cluster.nodes[0].ready.gossip_addr;
    let client = cluster.nodes[0].client().await;

    let mut intruder = start_with_wrong_cookie("node-1", seed).await;

    let outcome = wait_until(
        "node-1 exits or node-0 lists it ACTIVE",
        EXIT_WITHIN,
        || {
            let mut client = client.clone();
            let exited = intruder.exited();
            async move {
                if let Some(status) = exited {
                    return Ok(Err(status));
                }
                let members = client.members().await?;
                let active = members.iter().any(|member| {
                    member.name == "node-1" && member.state == pb::NodeState::Active as i32
                });
                if active {
                    Ok(Ok(describe(&members)))
                } else {
                    Err(format!("node-0 lists {}", describe(&members)))
                }
            }
        },
    )
    .await
    .0;
    if let Ok(members) = outcome {
        panic!(
            "node-0 lists node-1, whose cookie differs, as ACTIVE: {members}; node-1 log in {}",
            intruder.log_path.display()
        );
    }
}

// Goal: a node with the wrong cookie and the name of a running member does not make that
// member exit. On main the member is declared down and exits with code 3 within seconds, as
// if a restarted node with the right cookie had replaced it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_cookie_node_keeps_member_alive() {
    let _slot = cluster_slot().await;
    let mut cluster = Cluster::start(2, Timing::DEFAULT).await;
    let seed = cluster.nodes[0].ready.gossip_addr;

    let impostor = start_with_wrong_cookie("node-1", seed).await;

    let member = &mut cluster.nodes[1];
    if let Some(status) = member.exit_within(DISPLACE_WITHIN).await {
        panic!(
            "node-1 exited with {status} after a node with another cookie took its name; \
             node-1 log in {}, impostor log in {}",
            member.log_path.display(),
            impostor.log_path.display()
        );
    }
}
