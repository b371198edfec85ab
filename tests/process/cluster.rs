//! Membership of real node processes on loopback: convergence, failure detection, restart,
//! graceful leave, and call deadlines while a node is dead.

mod common;

use std::time::Duration;

use common::{
    Cluster, NodeProcess, Timing, cluster_slot, counters_on, describe, spread_counters, wait_gone,
    wait_until,
};
use gristmill::api::pb;
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Time the survivors have to declare a killed node down with [`Timing::FAST`]. The detector
/// needs about probe period + rtt + suspect-to-down (under 1 s); the rest is margin for a
/// loaded two-core machine.
const DETECT_WITHIN: Duration = Duration::from_secs(10);

/// Returns the name of the node whose view `members` is, from its `is_self` flag.
fn client_name(members: &[pb::Member]) -> String {
    let own = members.iter().find(|member| member.is_self);
    own.map_or_else(|| "?".to_owned(), |member| member.name.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_to_active() {
    let _slot = cluster_slot().await;
    let cluster = Cluster::start(3, Timing::FAST).await;

    for mut client in cluster.clients().await {
        let members = client.members().await.expect("ListMembers");
        assert_eq!(members.len(), 3, "members: {members:?}");
        for node in &cluster.nodes {
            let member = members
                .iter()
                .find(|member| member.name == node.ready.node)
                .unwrap_or_else(|| panic!("{} missing from {members:?}", node.ready.node));
            assert_eq!(member.state, pb::NodeState::Active as i32);
            assert_eq!(member.boot_id, node.ready.boot_id);
            assert_eq!(member.grpc_addr, node.ready.grpc_addr.to_string());
        }
        assert_eq!(members.iter().filter(|member| member.is_self).count(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_is_marked_dead_and_its_grains_reactivate() {
    let _slot = cluster_slot().await;
    let mut cluster = Cluster::start(3, Timing::FAST).await;
    let mut clients = cluster.clients().await;
    let victim_keys = counters_on(&mut clients, "node-2", 60).await;

    cluster.nodes[2].kill9().await;
    let survivors = &mut clients[..2];
    let took = wait_gone(survivors, "node-2", DETECT_WITHIN).await;
    eprintln!("survivors marked node-2 DEAD {took:?} after kill -9");
    for survivor in &cluster.nodes[..2] {
        let needles = [
            "member declared down by the failure detector",
            "member=node-2#",
        ];
        survivor
            .wait_log_line("WARN", &needles, DETECT_WITHIN)
            .await;
    }

    for key in &victim_keys {
        let (_, served_by) = survivors[0]
            .invoke("counter", key, "add", json!({ "amount": 1 }), 0)
            .await
            .unwrap_or_else(|status| panic!("counter {key} after node-2 died: {status}"));
        assert!(
            served_by == "node-0" || served_by == "node-1",
            "counter {key} served by {served_by}"
        );
    }
    let mut active = Vec::new();
    for client in survivors.iter_mut() {
        active.extend(client.activations("counter").await);
    }
    for key in &victim_keys {
        let count = active
            .iter()
            .filter(|activation| &activation.key == key)
            .count();
        assert_eq!(count, 1, "activations of counter {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_replaces_old_incarnation() {
    let _slot = cluster_slot().await;
    let mut cluster = Cluster::start(3, Timing::FAST).await;
    let old_boot_id = cluster.nodes[2].ready.boot_id;
    let seed = [cluster.nodes[0].ready.gossip_addr];

    // Restart at once, before the failure detector could declare the old process down.
    cluster.nodes[2].kill9().await;
    cluster.nodes[2] = NodeProcess::start("node-2", &seed, Timing::FAST, &[]).await;
    let new_boot_id = cluster.nodes[2].ready.boot_id;
    assert_ne!(new_boot_id, old_boot_id, "a restart must get a new boot id");
    eprintln!("node-2 restarted: old boot id {old_boot_id:x}, new boot id {new_boot_id:x}");

    let clients = cluster.clients().await;
    let (_, took) = wait_until(
        "every view has exactly one node-2, with the new boot id",
        DETECT_WITHIN,
        || {
            let mut clients = clients.clone();
            async move {
                for client in &mut clients {
                    let members = client.members().await?;
                    let node_2: Vec<&pb::Member> = members
                        .iter()
                        .filter(|member| member.name == "node-2")
                        .collect();
                    let replaced = members.len() == 3
                        && node_2.len() == 1
                        && node_2[0].boot_id == new_boot_id
                        && node_2[0].state == pb::NodeState::Active as i32;
                    if !replaced {
                        return Err(format!("{}: {}", client_name(&members), describe(&members)));
                    }
                }
                Ok(())
            }
        },
    )
    .await;
    eprintln!("new incarnation of node-2 replaced the old one everywhere after {took:?}");
    cluster.wait_converged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_before_failure_timeout() {
    // Goal: a graceful leave is visible to peers without the failure detector. Method: a
    // suspect-to-down of 5 s makes detection slow, and the peers must see the node gone well
    // within that time after it exits.
    const SUSPECT_TO_DOWN_MS: u64 = 5_000;
    let timing = Timing {
        suspect_to_down_ms: SUSPECT_TO_DOWN_MS,
        ..Timing::FAST
    };
    let _slot = cluster_slot().await;
    let mut cluster = Cluster::start(3, timing).await;
    let mut clients = cluster.clients().await;
    let served = spread_counters(&mut clients, 30).await;

    let signalled = Instant::now();
    cluster.nodes[2].terminate();
    let status = cluster.nodes[2].wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "node-2 exit status after SIGTERM: {status}"
    );
    let exited_after = signalled.elapsed();

    let survivors = &mut clients[..2];
    let within = Duration::from_millis(SUSPECT_TO_DOWN_MS / 2);
    let seen_after_exit = wait_gone(survivors, "node-2", within).await;
    eprintln!(
        "node-2 exited {exited_after:?} after SIGTERM; peers saw it gone {seen_after_exit:?} after the exit"
    );

    // A graceful leave is logged as one: "member left" at info level on the peers, and no
    // failure warning about node-2 on either side.
    for survivor in &cluster.nodes[..2] {
        let needles = ["member left", "member=node-2#"];
        survivor.wait_log_line("INFO", &needles, within).await;
        let warnings = survivor.log_lines("WARN", &["node-2"]);
        assert!(
            warnings.is_empty(),
            "{} warned about node-2's leave:\n{}",
            survivor.ready.node,
            warnings.join("\n")
        );
    }
    let own_warnings = cluster.nodes[2].log_lines("WARN", &["declared down"]);
    assert!(
        own_warnings.is_empty(),
        "node-2 warned about its own leave:\n{}",
        own_warnings.join("\n")
    );

    for key in served.values().flatten() {
        survivors[0]
            .invoke("counter", key, "get", json!(null), 0)
            .await
            .unwrap_or_else(|status| panic!("counter {key} after node-2 left: {status}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_dead_node_end_within_deadline() {
    // Goal: no call hangs while its grain's node is dead but not yet declared down. Method: a
    // 3 s suspect-to-down keeps node-2 in the views while calls with a 1 s deadline run.
    const CALL_TIMEOUT_MS: u32 = 1_000;
    let timing = Timing {
        suspect_to_down_ms: 3_000,
        ..Timing::FAST
    };
    let _slot = cluster_slot().await;
    let mut cluster = Cluster::start(3, timing).await;
    let mut clients = cluster.clients().await;
    let victim_keys = counters_on(&mut clients, "node-2", 60).await;

    cluster.nodes[2].kill9().await;
    let limit = Duration::from_millis(u64::from(CALL_TIMEOUT_MS)) + Duration::from_secs(1);
    let mut calls = JoinSet::new();
    for (index, key) in victim_keys.iter().enumerate() {
        let mut gateway = clients[index % 2].clone();
        let key = key.clone();
        calls.spawn(async move {
            let started = Instant::now();
            let call = gateway.invoke(
                "counter",
                &key,
                "add",
                json!({ "amount": 1 }),
                CALL_TIMEOUT_MS,
            );
            let outcome = tokio::time::timeout(limit, call).await;
            (key, started.elapsed(), outcome)
        });
    }
    let (mut replies, mut errors) = (0, 0);
    while let Some(joined) = calls.join_next().await {
        let (key, took, outcome) = joined.expect("call task");
        match outcome {
            Ok(Ok(_)) => replies += 1,
            Ok(Err(_)) => errors += 1,
            Err(_) => panic!("call to counter {key} hung for {took:?}, past its deadline plus 1 s"),
        }
    }
    eprintln!("calls to node-2's grains after kill -9: {replies} replies, {errors} errors");
    assert_eq!(replies + errors, victim_keys.len());
}

/// Returns the grpc.health.v1 status of the whole server (service `""`) at `addr`.
async fn health_status(addr: std::net::SocketAddr) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect()
        .await
        .unwrap_or_else(|error| panic!("connect to gRPC at {addr}: {error}"));
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let response = client.check(request).await.expect("health check");
    ServingStatus::try_from(response.into_inner().status).expect("known serving status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_seed_is_warned_and_not_serving() {
    // Goal: a node whose seed never replies warns and does not report itself ready.
    // Method: the seed is a UDP socket of this test that reads nothing; the node must warn
    // naming it, stay JOINING and keep its health NOT_SERVING, while a first node without
    // seeds serves.
    let _slot = cluster_slot().await;
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind the silent seed");
    let silent_addr = silent.local_addr().expect("silent seed address");
    let first = NodeProcess::start("first", &[], Timing::FAST, &[]).await;
    let lonely = NodeProcess::start("lonely", &[silent_addr], Timing::FAST, &[]).await;

    let needles = [
        "cannot join the cluster through the seeds",
        &silent_addr.to_string(),
    ];
    lonely.wait_log_line("WARN", &needles, DETECT_WITHIN).await;
    let members = lonely.client().await.members().await.expect("ListMembers");
    assert_eq!(members.len(), 1, "view: {}", describe(&members));
    assert_eq!(
        members[0].state,
        pb::NodeState::Joining as i32,
        "view: {}",
        describe(&members)
    );
    assert_eq!(
        health_status(lonely.ready.grpc_addr).await,
        ServingStatus::NotServing
    );
    let ((), _) = wait_until("the first node serves", DETECT_WITHIN, || async {
        match health_status(first.ready.grpc_addr).await {
            ServingStatus::Serving => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let warnings = first.log_lines("WARN", &["cannot join the cluster"]);
    assert!(
        warnings.is_empty(),
        "a node without seeds has nothing to join: {warnings:?}"
    );
}
