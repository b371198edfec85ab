//! Operator mistakes with `gristmill run` and `gristmill ctl`, over real node processes on
//! 127.0.0.1. The cluster must reject each mistake or survive it, and must keep serving calls.

mod common;

use std::time::Duration;

use common::{
    Cluster, NodeProcess, Timing, cluster_slot, config_file, describe, scaling_client,
    wait_supervisor, wait_until,
};
use gristmill::api::pb;

/// Time a node that lost its process needs to be declared down with `Timing::DEFAULT`
/// (750 ms probes, 2.5 s suspicion), with a margin for a loaded machine.
const DOWN_WITHIN: Duration = Duration::from_secs(15);

fn state_of(members: &[pb::Member], name: &str) -> Option<pb::NodeState> {
    members
        .iter()
        .find(|member| member.name == name)
        .and_then(|member| pb::NodeState::try_from(member.state).ok())
}

// Goal: `gristmill ctl drain` of the only Active node is rejected, as `ctl scaling drain` of
// it is ("would leave 0 Active nodes, below min_nodes 1"). Were Cluster/DrainNode to accept
// it, the node would turn Draining, every call would fail with "no gateway known", and no
// RPC would make the node Active again, so only a restart would recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_of_last_node_is_rejected() {
    let _slot = cluster_slot().await;
    let cluster = Cluster::start(1, Timing::DEFAULT).await;
    let mut client = cluster.nodes[0].client().await;
    client
        .invoke(
            "counter",
            "c-1",
            "add",
            serde_json::json!({ "amount": 1 }),
            0,
        )
        .await
        .expect("a call before the drain");

    let drained = client
        .cluster
        .drain_node(pb::NodeDrainRequest {
            node: "node-0".into(),
            timeout_ms: 10_000,
            leave_after: false,
        })
        .await;
    let members = client.members().await.expect("members after the drain");
    eprintln!(
        "measured: DrainNode of the last node returned {drained:?}; view {}",
        describe(&members)
    );

    let status = drained.expect_err("draining the only Active node must be rejected");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        state_of(&members, "node-0"),
        Some(pb::NodeState::Active),
        "the rejected drain leaves the node Active: {}",
        describe(&members)
    );
    let after = client
        .invoke("counter", "c-1", "get", serde_json::Value::Null, 0)
        .await;
    assert!(after.is_ok(), "a call after the rejected drain: {after:?}");
}

// Goal: the orchestrator can be set through `GRISTMILL_ORCHESTRATOR`, as every other setting
// can through a `GRISTMILL_*` variable. deploy/base/statefulset.yaml sets
// GRISTMILL_ORCHESTRATOR=kubernetes and its ConfigMap names no orchestrator, so if the
// variable is ignored the supervisor on Kubernetes runs with `none` and never scales.
// Method: one node with GRISTMILL_ORCHESTRATOR=local and a config file without the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_env_variable_is_read() {
    let _slot = cluster_slot().await;
    let config = config_file("[scaling]\nevaluation_interval = \"300ms\"\n");
    let path = config.path().to_str().expect("utf-8 path").to_owned();
    let node = NodeProcess::start_with_env(
        "node-0",
        &[],
        Timing::DEFAULT,
        &["--config", &path],
        &[("GRISTMILL_ORCHESTRATOR", "local")],
    )
    .await;
    let scaling = scaling_client(node.ready.grpc_addr).await;
    let status = wait_supervisor(&scaling, "node-0").await;
    eprintln!(
        "measured: orchestrator {:?}, paused {} ({:?})",
        status.orchestrator, status.paused, status.pause_reason
    );
    assert_eq!(status.orchestrator, "local", "{status:?}");
}

// Goal: `ctl scaling drain` of one node removes that node only. Nodes that the local
// orchestrator added must not die with the node that started them. Otherwise a drain of
// that node kills them without draining them: the decision records "3 -> 2 nodes", but the
// cluster ends with 1 Active node and the child's activations are dropped.
// Method: two nodes, paused scaling, ScaleTo 3 (node-0 acts and starts node-2), DrainNode
// node-0; node-2 must stay Active for DOWN_WITHIN after node-0 has left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_of_parent_keeps_children() {
    let _slot = cluster_slot().await;
    let config = config_file(
        "orchestrator = \"local\"\n[scaling]\nmin_nodes = 1\nmax_nodes = 4\n\
         evaluation_interval = \"300ms\"\ncooldown = \"1s\"\n",
    );
    let path = config.path().to_str().expect("utf-8 path").to_owned();
    let cluster = Cluster::start_with(2, Timing::DEFAULT, &["--config", &path]).await;
    let mut scaling = scaling_client(cluster.nodes[1].ready.grpc_addr).await;
    wait_supervisor(&scaling, "node-0").await;
    scaling
        .pause(pb::PauseRequest {
            reason: "drain of a parent".into(),
        })
        .await
        .expect("Pause");
    let decision = scaling
        .scale_to(pb::ScaleToRequest { nodes: 3 })
        .await
        .expect("ScaleTo 3")
        .into_inner()
        .decision
        .expect("a decision");
    assert_eq!(decision.supervisor, "node-0", "{decision:?}");

    let mut observer = cluster.nodes[1].client().await;
    let (child, _) = wait_until("a third node is Active", Duration::from_secs(30), || {
        let mut observer = observer.clone();
        async move {
            let members = observer.members().await?;
            members
                .iter()
                .find(|member| {
                    !["node-0", "node-1"].contains(&member.name.as_str())
                        && member.state == pb::NodeState::Active as i32
                })
                .map(|member| member.name.clone())
                .ok_or_else(|| describe(&members))
        }
    })
    .await;

    wait_until(
        "the ScaleTo action has ended",
        Duration::from_secs(30),
        || {
            let mut scaling = scaling.clone();
            async move {
                let status = scaling
                    .get_status(pb::GetScalingStatusRequest {})
                    .await
                    .map_err(|status| status.to_string())?
                    .into_inner();
                if status.running_decision == 0 {
                    Ok(())
                } else {
                    Err(format!("decision d{} is running", status.running_decision))
                }
            }
        },
    )
    .await;
    scaling
        .drain_node(pb::DrainNodeRequest {
            name: "node-0".into(),
        })
        .await
        .expect("DrainNode node-0");
    wait_until("node-0 has left", Duration::from_secs(60), || {
        let mut observer = observer.clone();
        async move {
            let members = observer.members().await?;
            match state_of(&members, "node-0") {
                Some(pb::NodeState::Dead) | None => Ok(()),
                _ => Err(describe(&members)),
            }
        }
    })
    .await;

    // Watch the child for as long as the failure detector needs to declare a killed process
    // down; it must stay Active the whole time.
    let watch_until = tokio::time::Instant::now() + DOWN_WITHIN;
    let mut last = Vec::new();
    while tokio::time::Instant::now() < watch_until {
        last = observer.members().await.expect("members");
        assert_eq!(
            state_of(&last, &child),
            Some(pb::NodeState::Active),
            "{child}, started by node-0, must survive the drain of node-0: {}",
            describe(&last)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "measured: {child} stayed Active for {DOWN_WITHIN:?} after node-0 left; view {}",
        describe(&last)
    );
}
