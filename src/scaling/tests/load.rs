//! Load aggregation and the per-node health score.

use std::num::NonZeroU64;

use crate::membership::{NodeLoad, NodeState};
use crate::scaling::load::{ClusterLoad, HealthLimits};

use super::{active, incarnation, snapshot};

fn load(mailbox_depth_max: u64, cpu_percent: f64, memory_bytes: u64) -> NodeLoad {
    NodeLoad {
        mailbox_depth_max,
        cpu_percent,
        memory_bytes,
        ..NodeLoad::default()
    }
}

#[test]
fn health_score_is_one_minus_worst_pressure() {
    let limits = HealthLimits {
        mailbox_depth: NonZeroU64::new(100).unwrap(),
        cpu_percent: 200.0,
        memory_bytes: NonZeroU64::new(1_000),
        unhealthy_below: 0.25,
    };
    // (mailbox max, cpu %, memory bytes, expected score, expected unhealthy)
    let cases = [
        (0, 0.0, 0, 1.0, false),
        (50, 0.0, 0, 0.5, false),
        (0, 150.0, 0, 0.25, false),
        (0, 160.0, 0, 0.2, true),
        (10, 20.0, 900, 0.1, true),
        (500, 0.0, 0, 0.0, true),
        (0, 400.0, 5_000, 0.0, true),
    ];
    for (mailbox, cpu, memory, score, unhealthy) in cases {
        let health = limits.score(&load(mailbox, cpu, memory));
        assert!(
            (health.score - score).abs() < 1e-9,
            "mailbox {mailbox}, cpu {cpu}, memory {memory}: score {} != {score}",
            health.score
        );
        assert_eq!(health.unhealthy, unhealthy, "mailbox {mailbox}, cpu {cpu}");
    }
}

#[test]
fn health_score_ignores_memory_without_limit() {
    let limits = HealthLimits::default();
    let health = limits.score(&load(0, 0.0, u64::MAX));
    assert_eq!(health.memory_pressure, None);
    assert_eq!(health.score, 1.0);
}

#[test]
fn cluster_load_counts_only_active_nodes() {
    let mut draining = active("node-2", 500, 90.0);
    draining.state = NodeState::Draining;
    let mut joining = active("node-3", 0, 0.0);
    joining.state = NodeState::Joining;
    let mut dead = active("node-4", 0, 0.0);
    dead.state = NodeState::Dead;
    let mut node_1 = active("node-1", 30, 40.0);
    node_1.load.mailbox_depth_max = 7;
    node_1.load.mailbox_depth_total = 9;
    node_1.load.calls_per_sec = 12.5;
    let nodes = vec![active("node-0", 10, 20.0), node_1, draining, joining, dead];

    let load = ClusterLoad::from_snapshot(&snapshot(nodes), &HealthLimits::default());

    assert_eq!(load.active_nodes, 2);
    assert_eq!(load.joining_nodes, 1);
    assert_eq!(load.draining_nodes, 1);
    assert_eq!(load.total_activations, 40);
    assert_eq!(load.total_cpu_percent, 60.0);
    assert_eq!(load.total_calls_per_sec, 12.5);
    assert_eq!(load.max_mailbox_depth, 7);
    assert_eq!(load.total_mailbox_depth, 9);
    assert_eq!(load.node_health.len(), 2);
    assert_eq!(load.node_health[0].incarnation, incarnation("node-0"));
    assert!(
        (load.health_score - 0.7).abs() < 1e-9,
        "mean of 0.8 and 0.6"
    );
    assert_eq!(load.unhealthy_nodes, 0);
}

#[test]
fn cluster_load_without_active_nodes_is_healthy() {
    let load = ClusterLoad::from_snapshot(&snapshot(Vec::new()), &HealthLimits::default());
    assert_eq!(load.active_nodes, 0);
    assert_eq!(load.health_score, 1.0);
    assert_eq!(load.per_active_node(100.0), 0.0);
}
