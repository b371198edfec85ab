//! The scaling supervisor over real node processes with the local orchestrator: scale-out on a
//! load step, drain and scale-in on a drop, no flapping, failover, policy validation, and the
//! KEDA external scaler served through a standby node.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{
    Cluster, NodeClient, Timing, activations_deactivated_at_stop, cluster_slot, config_file,
    describe, scaling_client, spread_counters, try_decisions, wait_supervisor, wait_until,
};
use gristmill::api::keda_pb::external_scaler_client::ExternalScalerClient;
use gristmill::api::keda_pb::{GetMetricsRequest, ScaledObjectRef};
use gristmill::api::pb;
use gristmill::api::pb::scaling_client::ScalingClient;
use tonic::transport::Channel;

/// Settings for fast tests: evaluation every 300 ms, short windows, density 100 per node.
fn fast_policy(min: u32, max: u32, scale_in_window_ms: u64) -> String {
    format!(
        "orchestrator = \"local\"\nidle_after_secs = 3\n\
         [scaling]\nmin_nodes = {min}\nmax_nodes = {max}\nevaluation_interval = \"300ms\"\n\
         cooldown = \"1s\"\n\
         [[scaling.policies]]\npolicy = \"grain_density\"\nactivations_per_node = 100.0\n\
         [scaling.scale_out]\nstabilization_window = \"600ms\"\n\
         policies = [{{ type = \"nodes\", value = 4, period = \"2s\" }}]\n\
         [scaling.scale_in]\nstabilization_window = \"{scale_in_window_ms}ms\"\n\
         policies = [{{ type = \"nodes\", value = 1, period = \"1s\" }}]\n"
    )
}

async fn active_names(client: &mut NodeClient) -> Result<BTreeSet<String>, String> {
    let members = client.members().await?;
    Ok(members
        .iter()
        .filter(|member| member.state == pb::NodeState::Active as i32)
        .map(|member| member.name.clone())
        .collect())
}

async fn start(count: usize, policy: &str, timing: Timing) -> (Cluster, tempfile::NamedTempFile) {
    let file = config_file(policy);
    let path = file.path().to_str().expect("utf-8 path").to_owned();
    let cluster = Cluster::start_with(count, timing, &["--config", &path]).await;
    let scaling = scaling_client(cluster.nodes[0].ready.grpc_addr).await;
    wait_until("a supervisor acts", Duration::from_secs(30), || {
        let mut scaling = scaling.clone();
        async move {
            let request = pb::GetScalingStatusRequest {};
            match scaling.get_status(request).await {
                Ok(_) => Ok(()),
                Err(status) => Err(status.to_string()),
            }
        }
    })
    .await;
    (cluster, file)
}

async fn decisions(client: &mut ScalingClient<Channel>) -> Vec<pb::ScalingDecision> {
    try_decisions(client)
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

/// Returns the first recorded scale-in once its action has ended, or describes what is seen.
async fn ended_scale_in(mut client: ScalingClient<Channel>) -> Result<pb::ScalingDecision, String> {
    let scale_in = try_decisions(&mut client)
        .await?
        .into_iter()
        .find(|decision| action_kind(decision) == pb::action::Kind::ScaleIn)
        .ok_or("no scale-in decision yet")?;
    match scale_in.duration_ms {
        Some(_) => Ok(scale_in),
        None => Err(format!("the action of d{} is running", scale_in.id)),
    }
}

fn action_kind(decision: &pb::ScalingDecision) -> pb::action::Kind {
    let kind = decision.action.as_ref().map_or(0, |action| action.kind);
    pb::action::Kind::try_from(kind).unwrap_or(pb::action::Kind::Unspecified)
}

// Goal: a load step scales out and the new nodes serve grains. Method: two nodes with a
// density target of 100 activations per node; 400 counters ask for four nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_step_adds_nodes_that_serve_grains() {
    let _slot = cluster_slot().await;
    let (cluster, _config) = start(2, &fast_policy(2, 4, 30_000), Timing::FAST).await;
    let mut clients = cluster.clients().await;
    let original: BTreeSet<String> = ["node-0".to_owned(), "node-1".to_owned()].into();

    let step = tokio::time::Instant::now();
    spread_counters(&mut clients, 400).await;
    let (grown, _) = wait_until(
        "the cluster has more than 2 Active nodes",
        Duration::from_secs(60),
        || {
            let mut client = clients[0].clone();
            async move {
                let active = active_names(&mut client).await?;
                if active.len() > 2 {
                    Ok(active)
                } else {
                    Err(format!("{active:?}"))
                }
            }
        },
    )
    .await;
    let new_nodes: BTreeSet<String> = grown.difference(&original).cloned().collect();
    assert!(!new_nodes.is_empty(), "no new node in {grown:?}");

    let (served_by, _) = wait_until("a new node serves a grain", Duration::from_secs(60), || {
        let mut client = clients[0].clone();
        let new_nodes = new_nodes.clone();
        async move {
            for index in 400..800 {
                let key = format!("c-{index}");
                let (_, served_by) = client
                    .invoke(
                        "counter",
                        &key,
                        "add",
                        serde_json::json!({ "amount": 1 }),
                        0,
                    )
                    .await
                    .map_err(|status| status.to_string())?;
                if new_nodes.contains(&served_by) {
                    return Ok(served_by);
                }
            }
            Err("no counter landed on a new node".to_owned())
        }
    })
    .await;
    eprintln!(
        "BENCHMARK load step to first grain served by new node {served_by}: {:?}",
        step.elapsed()
    );

    let mut scaling = scaling_client(cluster.nodes[1].ready.grpc_addr).await;
    let recorded = decisions(&mut scaling).await;
    let scale_out = recorded
        .iter()
        .find(|decision| action_kind(decision) == pb::action::Kind::ScaleOut)
        .expect("a scale-out decision is recorded");
    assert_eq!(scale_out.supervisor, "node-0", "the oldest node acts");
    assert!(
        scale_out
            .recommendations
            .iter()
            .any(|r| r.policy == "grain_density")
    );
}

// Goal: a drop in load drains and removes a node without failed calls or lost writes, and
// the removed node held no activation when it stopped. Method: three nodes at a density
// target of 100 and 150 counters written once each. The supervisor scales in to the minimum of
// 2 while a writer keeps adding to one counter. The removed node's own log line at its stop
// gives the count it held then, independent of the supervisor's check in the decision record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_drop_drains_and_removes_node_without_losses() {
    let _slot = cluster_slot().await;
    let (mut cluster, _config) = start(3, &fast_policy(2, 3, 2_000), Timing::LOADED).await;
    let mut clients = cluster.clients().await;
    let written = spread_counters(&mut clients[..1], 150).await;
    let keys: Vec<String> = written.values().flatten().cloned().collect();

    let writer_client = clients[0].clone();
    let writer = tokio::spawn(async move {
        let mut client = writer_client;
        let (mut acknowledged, mut failed) = (0u64, 0u64);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
        while tokio::time::Instant::now() < deadline {
            let reply = client
                .invoke(
                    "counter",
                    "steady",
                    "add",
                    serde_json::json!({ "amount": 1 }),
                    5_000,
                )
                .await;
            match reply {
                Ok(_) => acknowledged += 1,
                Err(_) => failed += 1,
            }
        }
        (acknowledged, failed)
    });

    let (active, took) = wait_until(
        "the cluster scales in to 2 Active nodes",
        Duration::from_secs(60),
        || {
            let mut client = clients[0].clone();
            async move {
                let members = client.members().await?;
                let active = active_names(&mut client).await?;
                if active.len() == 2 {
                    Ok(active)
                } else {
                    Err(describe(&members))
                }
            }
        },
    )
    .await;
    eprintln!("scale-in took {took:?}");
    let removed = cluster
        .nodes
        .iter()
        .position(|node| !active.contains(&node.ready.node))
        .expect("one of the started nodes is no longer Active");
    let removed_name = cluster.nodes[removed].ready.node.clone();
    let exit = cluster.nodes[removed]
        .wait_exit(Duration::from_secs(60))
        .await;
    assert!(exit.success(), "{removed_name} exited with {exit}");

    let (acknowledged, failed) = writer.await.expect("writer task");
    assert_eq!(failed, 0, "calls failed during scale-in");
    let (value, _) = clients[0]
        .invoke("counter", "steady", "get", serde_json::Value::Null, 5_000)
        .await
        .expect("read the steady counter");
    assert_eq!(
        value.as_u64(),
        Some(acknowledged),
        "acknowledged writes were lost"
    );
    for key in &keys {
        let (value, _) = clients[0]
            .invoke("counter", key, "get", serde_json::Value::Null, 5_000)
            .await
            .unwrap_or_else(|status| panic!("read {key}: {status}"));
        assert_eq!(value.as_u64(), Some(1), "counter {key} lost its write");
    }

    // The node logs how many activations it deactivated when it left, as it stopped.
    let log_path = &cluster.nodes[removed].log_path;
    let log = std::fs::read_to_string(log_path).expect("read the removed node's log");
    let at_stop = activations_deactivated_at_stop(&log);
    assert!(
        !at_stop.is_empty(),
        "{removed_name} logged no deactivation at its stop; log in {}",
        log_path.display()
    );
    assert!(
        at_stop.iter().all(|&count| count == 0),
        "{removed_name} still held activations when it stopped: {at_stop:?}; log in {}",
        log_path.display()
    );

    let scaling = scaling_client(cluster.nodes[0].ready.grpc_addr).await;
    let (scale_in, _) = wait_until(
        "the scale-in decision has an outcome",
        Duration::from_secs(30),
        || ended_scale_in(scaling.clone()),
    )
    .await;
    let outcome = scale_in.outcome.clone().unwrap_or_default();
    assert_eq!(
        outcome.kind,
        pb::action_outcome::Kind::Succeeded as i32,
        "scale-in outcome: {}",
        outcome.error
    );
    let checked = scale_in
        .removals
        .iter()
        .find(|removal| removal.node == removed_name)
        .unwrap_or_else(|| panic!("no check of {removed_name} in {:?}", scale_in.removals));
    assert_eq!(checked.activations_before_stop, 0);
    assert!(
        checked.stopped,
        "{removed_name} is recorded as left in place"
    );
}

/// Scale-in stabilization window of the oscillation tests: longer than the gap between a
/// burst's scale-out and the scale-in that its idle spell recommends.
const FLAP_WINDOW: Duration = Duration::from_secs(15);
/// New counters per burst of the oscillating load, round by round. The sizes vary so the
/// load is noisy, and each burst needs 3 nodes at 100 activations per node.
const BURSTS: [usize; 3] = [260, 230, 290];
/// Time from one burst's start to the next; the counters go idle 3 s after a burst and are
/// deactivated, so each period ends with a spell that needs only 2 nodes.
const BURST_PERIOD: Duration = Duration::from_secs(7);

/// Drives the oscillating load through `gateway`: one burst of new counters per period, and
/// between bursts a trickle of calls to one counter, the noise. Returns the failed calls; a
/// call fails when a scale-in stops the node that hosts its grain, so failures are counted,
/// not fatal.
async fn oscillate(mut gateway: NodeClient) -> u64 {
    let mut failed = 0;
    let started = tokio::time::Instant::now();
    for (round, size) in BURSTS.into_iter().enumerate() {
        for index in 0..size {
            let key = format!("osc-{round}-{index}");
            let payload = serde_json::json!({ "amount": 1 });
            if gateway
                .invoke("counter", &key, "add", payload, 0)
                .await
                .is_err()
            {
                failed += 1;
            }
        }
        let next = started + BURST_PERIOD * (round as u32 + 1);
        while tokio::time::Instant::now() < next {
            let payload = serde_json::json!({ "amount": 1 });
            if gateway
                .invoke("counter", "osc-noise", "add", payload, 0)
                .await
                .is_err()
            {
                failed += 1;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    failed
}

/// Returns the decisions that acted, as `(at_ms, kind)`, ordered by decision id.
fn actions(recorded: &[pb::ScalingDecision]) -> Vec<(u64, pb::action::Kind)> {
    let mut acted: Vec<&pb::ScalingDecision> = recorded
        .iter()
        .filter(|decision| action_kind(decision) != pb::action::Kind::None)
        .collect();
    acted.sort_by_key(|decision| decision.id);
    acted
        .iter()
        .map(|decision| (decision.at_ms, action_kind(decision)))
        .collect()
}

/// Returns the first scale-out and a scale-in decided less than `window` after it, as their
/// decision times in milliseconds, or `None` when the supervisor did not flap.
fn first_flap(recorded: &[pb::ScalingDecision], window: Duration) -> Option<(u64, u64)> {
    let acted = actions(recorded);
    let window_ms = window.as_millis() as u64;
    acted
        .iter()
        .enumerate()
        .find_map(|(index, &(out_at, kind))| {
            if kind != pb::action::Kind::ScaleOut {
                return None;
            }
            acted[index + 1..]
                .iter()
                .find(|&&(in_at, kind)| {
                    kind == pb::action::Kind::ScaleIn && in_at.saturating_sub(out_at) < window_ms
                })
                .map(|&(in_at, _)| (out_at, in_at))
        })
}

// Goal: show that the oscillating load of `oscillating_load_does_not_flap` does make the
// supervisor flap when nothing stabilizes scale-in, so that test can fail. Method: the same
// cluster, policy and load with a 0 ms scale-in window. The supervisor must scale out on a
// burst and scale in less than one window later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oscillating_load_flaps_without_window() {
    let _slot = cluster_slot().await;
    let (cluster, _config) = start(2, &fast_policy(2, 3, 0), Timing::LOADED).await;
    let gateway = cluster.nodes[0].client().await;
    let load = tokio::spawn(oscillate(gateway));

    let scaling = scaling_client(cluster.nodes[0].ready.grpc_addr).await;
    let ((out_at, in_at), took) = wait_until(
        "a scale-out followed by a scale-in within one window",
        Duration::from_secs(45),
        || {
            let mut scaling = scaling.clone();
            async move {
                let recorded = try_decisions(&mut scaling).await?;
                first_flap(&recorded, FLAP_WINDOW)
                    .ok_or_else(|| format!("actions: {:?}", actions(&recorded)))
            }
        },
    )
    .await;
    load.abort();
    eprintln!(
        "without a window: scale-out at {out_at} ms, scale-in at {in_at} ms, seen after {took:?}"
    );
}

// Goal: a noisy load that swings faster than the scale-in window causes no scale-out
// followed by a scale-in within that window. Method: bursts of new counters that need 3
// nodes, each followed by an idle spell that needs 2; the control test shows that this load
// flaps without a window. The supervisor must scale out and then keep the third node for at
// least one window, and its decisions must show the window holding back a scale-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oscillating_load_does_not_flap() {
    let _slot = cluster_slot().await;
    let window_ms = FLAP_WINDOW.as_millis() as u64;
    let (cluster, _config) = start(2, &fast_policy(2, 3, window_ms), Timing::LOADED).await;
    let gateway = cluster.nodes[0].client().await;
    let failed = oscillate(gateway).await;
    eprintln!("oscillating load done, {failed} calls failed");

    // Watch the supervisor's decisions until it has evaluated one full window past its last
    // scale-out, so a scale-in inside that window would be recorded.
    let scaling = scaling_client(cluster.nodes[0].ready.grpc_addr).await;
    let (recorded, _) = wait_until(
        "the supervisor evaluated one window past its last scale-out",
        FLAP_WINDOW + Duration::from_secs(30),
        || {
            let mut scaling = scaling.clone();
            async move {
                let recorded = try_decisions(&mut scaling).await?;
                let last_out = actions(&recorded)
                    .iter()
                    .rev()
                    .find(|(_, kind)| *kind == pb::action::Kind::ScaleOut)
                    .map(|(at, _)| *at)
                    .ok_or_else(|| format!("no scale-out yet: {:?}", actions(&recorded)))?;
                let latest = recorded.iter().map(|d| d.at_ms).max().unwrap_or(0);
                if latest >= last_out + window_ms {
                    Ok(recorded)
                } else {
                    Err(format!(
                        "last scale-out at {last_out} ms, latest decision at {latest} ms"
                    ))
                }
            }
        },
    )
    .await;

    let flap = first_flap(&recorded, FLAP_WINDOW);
    assert_eq!(
        flap,
        None,
        "scale-out then scale-in within {FLAP_WINDOW:?}; actions: {:?}",
        actions(&recorded)
    );
    let held_back = recorded.iter().any(|decision| {
        decision.limits.iter().any(|limit| {
            limit.kind == pb::applied_limit::Kind::Stabilization as i32
                && limit.direction == "scale_in"
                && limit.from_nodes < limit.to_nodes
        })
    });
    assert!(
        held_back,
        "the load never asked for a scale-in that the window held back; actions: {:?}",
        actions(&recorded)
    );
}

// Goal: when the acting supervisor's node dies, another node takes over, does not start the
// interrupted action again, and lists it as interrupted. Method: paused scaling, ScaleTo 4 on
// node-0, kill -9 of node-0 right away; node-1 must act and no further node may start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_failover_does_not_repeat_action() {
    let _slot = cluster_slot().await;
    let (mut cluster, _config) = start(3, &fast_policy(1, 5, 30_000), Timing::FAST).await;
    let mut scaling = scaling_client(cluster.nodes[2].ready.grpc_addr).await;
    let paused = scaling
        .pause(pb::PauseRequest {
            reason: "failover test".into(),
        })
        .await
        .expect("Pause through a standby node");
    assert!(paused.into_inner().changed);

    let decision = scaling
        .scale_to(pb::ScaleToRequest { nodes: 4 })
        .await
        .expect("ScaleTo")
        .into_inner()
        .decision
        .expect("a decision");
    assert_eq!(decision.supervisor, "node-0");
    cluster.nodes[0].kill9().await;

    let mut survivor = cluster.nodes[1].client().await;
    let mut scaling = scaling_client(cluster.nodes[1].ready.grpc_addr).await;
    wait_supervisor(&scaling, "node-1").await;
    let status = scaling
        .get_status(pb::GetScalingStatusRequest {})
        .await
        .expect("GetStatus")
        .into_inner();
    assert!(status.paused, "the pause survives the failover");

    // Give the new supervisor several evaluations in which it could repeat the action.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let members = survivor.members().await.expect("members");
    let started: BTreeSet<&str> = members
        .iter()
        .map(|member| member.name.as_str())
        .filter(|name| !["node-0", "node-1", "node-2"].contains(name))
        .collect();
    assert!(
        started.len() <= 1,
        "the interrupted action ran again: {}",
        describe(&members)
    );
    let live_new = members
        .iter()
        .filter(|member| started.contains(member.name.as_str()))
        .filter(|member| member.state != pb::NodeState::Dead as i32)
        .count();
    assert_eq!(
        live_new,
        0,
        "a node of the interrupted action is alive: {}",
        describe(&members)
    );
    let listed = decisions(&mut scaling).await;
    let repeated = listed
        .iter()
        .filter(|decision| decision.supervisor == "node-1")
        .any(|decision| action_kind(decision) != pb::action::Kind::None);
    assert!(!repeated, "the new supervisor started an action");

    // The action of node-0 is still listed, under its id, as interrupted.
    let earlier = listed
        .iter()
        .find(|listed| listed.id == decision.id)
        .unwrap_or_else(|| panic!("decision {} of node-0 is not listed", decision.id));
    assert_eq!(earlier.supervisor, "node-0");
    let outcome = earlier.outcome.as_ref().expect("an outcome");
    assert_eq!(
        outcome.kind,
        pb::action_outcome::Kind::Failed as i32,
        "{outcome:?}"
    );
    assert!(outcome.error.contains("interrupted"), "{outcome:?}");
}

// Goal: SetPolicy rejects invalid policies naming the field and keeps the running policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_policy_rejects_invalid_policy() {
    let _slot = cluster_slot().await;
    let (cluster, _config) = start(2, &fast_policy(2, 4, 30_000), Timing::FAST).await;
    let mut scaling = scaling_client(cluster.nodes[1].ready.grpc_addr).await;
    let running = scaling
        .get_status(pb::GetScalingStatusRequest {})
        .await
        .expect("GetStatus")
        .into_inner()
        .policy
        .expect("a policy");

    let mut min_above_max = running.clone();
    min_above_max.min_nodes = running.max_nodes + 1;
    let mut zero_target = running.clone();
    zero_target.policies[0].activations_per_node = Some(0.0);
    let mut unknown_policy = running.clone();
    unknown_policy.policies[0].policy = "queue_length".into();
    let cases = [
        ("min_nodes", min_above_max),
        ("policies[0].activations_per_node", zero_target),
        ("policies[0].policy", unknown_policy),
    ];
    for (field, policy) in cases {
        let status = scaling
            .set_policy(pb::SetPolicyRequest {
                policy: Some(policy),
            })
            .await
            .expect_err(field);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{field}: {status}"
        );
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    }

    let after = scaling
        .get_status(pb::GetScalingStatusRequest {})
        .await
        .expect("GetStatus")
        .into_inner()
        .policy;
    assert_eq!(after, Some(running), "the running policy changed");
}

// Goal: a node with an invalid scaling config does not start and names the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_scaling_config_fails_start() {
    let file = config_file("[scaling]\nmin_nodes = 5\nmax_nodes = 2\n");
    let output = tokio::process::Command::new(common::BIN)
        .args(["run", "--node-name", "bad", "--config"])
        .arg(file.path())
        .env("GRISTMILL_COOKIE", common::COOKIE)
        .output()
        .await
        .expect("run the binary");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("scaling.min_nodes"), "{stderr}");
}

// Measures the time to drain a node holding 10,000 grains through Scaling.DrainNode; run
// with `cargo test -p gristmill-node --test scaling -- --ignored --nocapture drain_of`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; takes about a minute"]
async fn drain_of_10000_grains() {
    let _slot = cluster_slot().await;
    // Grains stay active for the whole benchmark, so the drain moves every one of them.
    let policy = fast_policy(1, 3, 600_000).replace("idle_after_secs = 3", "idle_after_secs = 600");
    let (cluster, _config) = start(3, &policy, Timing::LOADED).await;
    let mut scaling = scaling_client(cluster.nodes[0].ready.grpc_addr).await;
    scaling
        .pause(pb::PauseRequest {
            reason: "benchmark".into(),
        })
        .await
        .expect("Pause");
    let mut gateway = cluster.nodes[2].client().await;
    let mut on_node_2 = 0;
    let mut index = 0;
    while on_node_2 < 10_000 {
        let key = format!("bench-{index}");
        index += 1;
        let (_, served_by) = gateway
            .invoke(
                "counter",
                &key,
                "add",
                serde_json::json!({ "amount": 1 }),
                0,
            )
            .await
            .unwrap_or_else(|status| panic!("counter {key}: {status}"));
        if served_by == "node-2" {
            on_node_2 += 1;
        }
    }
    let held = gateway.activations("counter").await.len();
    let started = tokio::time::Instant::now();
    scaling
        .drain_node(pb::DrainNodeRequest {
            name: "node-2".into(),
        })
        .await
        .expect("DrainNode");
    let (decision, _) = wait_until("the drain ends", Duration::from_secs(300), || {
        ended_scale_in(scaling.clone())
    })
    .await;
    eprintln!(
        "BENCHMARK drain of node-2 holding {held} counters: {:?} (action {} ms, outcome {:?})",
        started.elapsed(),
        decision.duration_ms.unwrap_or_default(),
        decision.outcome
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_without_orchestrator_is_rejected() {
    // Goal: with the default `orchestrator = none`, the supervisor only records decisions, so
    // Resume, which would let it act, is rejected and it stays paused.
    let _slot = cluster_slot().await;
    let cluster = Cluster::start(1, Timing::FAST).await;
    let scaling = scaling_client(cluster.nodes[0].ready.grpc_addr).await;
    let (status, _) = wait_until(
        "the supervisor answers Resume",
        Duration::from_secs(30),
        || {
            let mut scaling = scaling.clone();
            async move {
                match scaling.resume(pb::ResumeRequest {}).await {
                    Ok(reply) => Err(format!("Resume succeeded: {reply:?}")),
                    Err(status) if status.message().contains("orchestrator = none") => Ok(status),
                    Err(status) => Err(status.to_string()),
                }
            }
        },
    )
    .await;
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    let mut scaling = scaling.clone();
    let state = scaling
        .get_status(pb::GetScalingStatusRequest {})
        .await
        .expect("GetStatus")
        .into_inner();
    assert!(state.paused, "the supervisor stays paused: {state:?}");

    // ScaleTo above the Active count needs a node that `none` cannot start: it is rejected
    // before a decision is recorded.
    let decisions_before = decisions(&mut scaling).await.len();
    let status = scaling
        .scale_to(pb::ScaleToRequest { nodes: 2 })
        .await
        .expect_err("ScaleTo 2 with orchestrator none");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("cannot start nodes"),
        "{status:?}"
    );
    assert!(
        status.message().contains("gristmill run --seed"),
        "{status:?}"
    );
    let decisions_after = decisions(&mut scaling).await.len();
    assert_eq!(decisions_after, decisions_before, "no decision recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keda_scaler_forwards_to_supervisor() {
    // Goal: KEDA may reach any node through the client Service, and every node must report
    // the acting supervisor's count. Method: two nodes with orchestrator = none and
    // min_nodes 3, so the count (3) differs from the Active nodes (2); the standby node-1
    // must forward GetMetrics and IsActive to node-0 and return the same values.
    let _slot = cluster_slot().await;
    let policy = "[scaling]\nmin_nodes = 3\nmax_nodes = 5\nevaluation_interval = \"300ms\"\n";
    let (cluster, _config) = start(2, policy, Timing::FAST).await;
    let supervisor = wait_supervisor(
        &scaling_client(cluster.nodes[0].ready.grpc_addr).await,
        "node-0",
    )
    .await;
    assert_eq!(supervisor.orchestrator, "none");

    let scaled_object = ScaledObjectRef {
        name: "gristmill".into(),
        namespace: "gristmill".into(),
        scaler_metadata: [("scalerAddress".to_owned(), "gristmill:7948".to_owned())].into(),
    };
    let mut answers = Vec::new();
    for node in &cluster.nodes {
        let address = format!("http://{}", node.ready.grpc_addr);
        let mut keda = ExternalScalerClient::connect(address)
            .await
            .expect("connect");
        let metrics = keda
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(scaled_object.clone()),
                metric_name: "gristmill_desired_nodes".into(),
            })
            .await
            .unwrap_or_else(|status| panic!("GetMetrics on {}: {status}", node.ready.node))
            .into_inner();
        let active = keda
            .is_active(scaled_object.clone())
            .await
            .unwrap_or_else(|status| panic!("IsActive on {}: {status}", node.ready.node))
            .into_inner()
            .result;
        answers.push((
            node.ready.node.clone(),
            metrics.metric_values[0].metric_value,
            active,
        ));
    }
    println!("answers: {answers:?}");
    for (node, value, active) in &answers {
        assert_eq!(
            *value, 3,
            "{node}: two Active nodes below min_nodes 3 want 3"
        );
        assert!(*active, "{node}: the count is above the Active nodes");
    }
}

// Goal: `ctl scaling watch` ends with an error when the node it watches stops responding,
// instead of waiting forever, and does not blame the address it watched through. Method:
// watch a one-node cluster until a decision arrives, then SIGSTOP the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_watch_ends_on_paused_node() {
    use tokio::io::AsyncBufReadExt;

    let _slot = cluster_slot().await;
    let (cluster, _config) = start(1, &fast_policy(1, 1, 30_000), Timing::FAST).await;
    let node = &cluster.nodes[0];
    let addr = node.ready.grpc_addr.to_string();
    let args = [
        "ctl",
        "--addr",
        &addr,
        "--request-timeout",
        "2s",
        "scaling",
        "watch",
    ];
    let mut watch = tokio::process::Command::new(common::BIN)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start ctl scaling watch");
    let mut stdout = tokio::io::BufReader::new(watch.stdout.take().expect("stdout is piped"));
    let mut first = String::new();
    tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut first))
        .await
        .expect("a decision within 30 s")
        .expect("read the watch output");
    assert!(!first.is_empty(), "the watch ended before any decision");

    node.signal(nix::sys::signal::Signal::SIGSTOP);
    node.wait_stopped().await;
    let ended = tokio::time::timeout(Duration::from_secs(30), watch.wait_with_output()).await;
    node.signal(nix::sys::signal::Signal::SIGCONT);
    let output = ended
        .expect("the watch ends within 30 s of the pause")
        .expect("wait for ctl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("watch ended with {:?}: {stderr}", output.status.code());
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("hint:"), "stderr: {stderr}");
}
