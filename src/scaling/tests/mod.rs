//! Tests of the scaling policy core, one file per concept, with shared builders.

mod action_journal;
mod behavior;
mod combiner;
mod config;
mod decision;
mod disruption;
mod evaluator;
mod keda;
mod load;
mod policy;
mod removal;

use crate::membership::{Incarnation, NodeLoad, NodeState};
use crate::scaling::config::{PolicyTarget, ScalingConfig, ScalingPolicyConfig};
use crate::scaling::load::{ClusterSnapshot, NodeSnapshot};

/// Returns the incarnation of node `name` with boot id 1.
fn incarnation(name: &str) -> Incarnation {
    Incarnation {
        name: name.into(),
        boot_id: 1,
    }
}

/// Returns an Active node with the given activations and CPU, and otherwise idle.
fn active(name: &str, activations: u64, cpu_percent: f64) -> NodeSnapshot {
    NodeSnapshot {
        incarnation: incarnation(name),
        state: NodeState::Active,
        load: NodeLoad {
            activations,
            cpu_percent,
            ..NodeLoad::default()
        },
    }
}

/// Returns `count` Active nodes named `node-0`... each with `cpu_percent` CPU.
fn nodes_at_cpu(count: usize, cpu_percent: f64) -> Vec<NodeSnapshot> {
    (0..count)
        .map(|index| active(&format!("node-{index}"), 100, cpu_percent))
        .collect()
}

/// Returns a snapshot whose supervisor is `node-0`.
fn snapshot(nodes: Vec<NodeSnapshot>) -> ClusterSnapshot {
    ClusterSnapshot::new(nodes, incarnation("node-0"))
}

/// Returns a config with the single CPU policy at 50 % and no cooldown, leaving the other
/// behaviour at its defaults.
fn cpu_config() -> ScalingConfig {
    ScalingConfig {
        policies: vec![ScalingPolicyConfig::new(PolicyTarget::Cpu {
            percent_per_node: 50.0,
        })],
        cooldown: std::time::Duration::ZERO,
        ..ScalingConfig::default()
    }
}
