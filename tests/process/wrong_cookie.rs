//! Nodes started with another cookie than the cluster's, over real node processes on
//! 127.0.0.1. The cookie authenticates cluster connections and signs every gossip datagram,
//! so a node with another cookie must not take part in the cluster. It must not become an
//! Active member that placement and the directory use, and it must not displace a member.

mod common;

use std::time::Duration;

use common::{Cluster, NodeProcess, Timing, cluster_slot, describe};

/// Cookie that differs from the one the test cluster uses.
const WRONG_COOKIE: &str = "another-cookie-0123456789abcdef";

/// Time a rejected node has to fail its handshakes and exit, with a margin for a loaded
/// machine.
const EXIT_WITHIN: Duration = Duration::from_secs(30);

/// Time an impostor gets to take a member's place. It is three times the default suspicion
/// timeout, and on main the real member exited well within it.
const DISPLACE_WITHIN: Duration = Duration::from_secs(9);

/// Starts node `name` with [`WRONG_COOKIE`], joining through `seed`, and waits until `seed`
/// rejected one of its gossip datagrams.
async fn start_with_wrong_cookie(name: &str, seed: &NodeProcess) -> NodeProcess {
    let node = NodeProcess::start_with_env(
        name,
        &[seed.ready.gossip_addr],
        Timing::DEFAULT,
        &[],
        &[("GRISTMILL_COOKIE", WRONG_COOKIE)],
    )
    .await;
    seed.wait_log_line(
        "WARN",
        &["rejected gossip datagram", "failed authentication"],
        EXIT_WITHIN,
    )
    .await;
    node
}

// Goal: a node with the wrong cookie stays out of the cluster's member list, and logs why it
// cannot join. Before gossip was signed, it became ACTIVE in every view, the directory gave
// it partitions and placement gave it grains, and calls to those grains timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_cookie_node_never_active() {
    let _slot = cluster_slot().await;
    let cluster = Cluster::start(1, Timing::DEFAULT).await;
    let client = cluster.nodes[0].client().await;

    let intruder = start_with_wrong_cookie("node-1", &cluster.nodes[0]).await;
    intruder
        .wait_log_line(
            "WARN",
            &[
                "cannot join the cluster through the seeds",
                "another cookie",
            ],
            EXIT_WITHIN,
        )
        .await;

    let members = client
        .clone()
        .members()
        .await
        .expect("node-0 lists members");
    assert!(
        members.iter().all(|member| member.name != "node-1"),
        "node-0 lists node-1, whose cookie differs: {}; node-1 log in {}",
        describe(&members),
        intruder.log_path.display()
    );
    let seen = intruder
        .client()
        .await
        .members()
        .await
        .expect("node-1 lists members");
    assert!(
        seen.iter().all(|member| member.name != "node-0"),
        "node-1 lists node-0: {}",
        describe(&seen)
    );
}

// Goal: a node with the wrong cookie and the name of a running member does not make that
// member exit. Before gossip was signed, the member was declared down and exited with code 3
// within seconds, as if a restarted node with the right cookie had replaced it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_cookie_node_keeps_member_alive() {
    let _slot = cluster_slot().await;
    let mut cluster = Cluster::start(2, Timing::DEFAULT).await;
    let impostor = start_with_wrong_cookie("node-1", &cluster.nodes[0]).await;

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
