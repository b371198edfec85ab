//! The load model the policies read: per-node figures from gossip, cluster totals and health.

use std::num::NonZeroU64;

use serde::{Deserialize, Serialize};

use crate::membership::{Incarnation, NodeLoad, NodeState};
use crate::scaling::orchestrator::Orchestrator;

/// One node's state and load, as the membership gossip reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeSnapshot {
    /// The node's name and boot id.
    pub incarnation: Incarnation,
    /// Lifecycle state from the node's latest broadcast.
    pub state: NodeState,
    /// Load figures from the node's latest broadcast.
    pub load: NodeLoad,
}

/// Everything one evaluation reads: every known node and who runs the supervisor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterSnapshot {
    /// Every node in the membership view, in any lifecycle state.
    pub nodes: Vec<NodeSnapshot>,
    /// The node that runs the supervisor; scale-in picks it only when no other node can go.
    pub supervisor: Incarnation,
    /// Names the orchestrator must remove first, in order, such as the highest StatefulSet
    /// ordinals; empty when the orchestrator can remove any node.
    pub forced_removal_order: Vec<String>,
}

impl ClusterSnapshot {
    /// Creates a snapshot for an orchestrator that can remove any node.
    pub fn new(nodes: Vec<NodeSnapshot>, supervisor: Incarnation) -> Self {
        Self {
            nodes,
            supervisor,
            forced_removal_order: Vec::new(),
        }
    }

    /// Fills [`Self::forced_removal_order`] by asking the orchestrator repeatedly which Active
    /// node it must remove next, until it names none or an unknown node.
    pub fn with_forced_removal_order(mut self, orchestrator: &dyn Orchestrator) -> Self {
        let mut remaining: Vec<String> = self
            .active_nodes()
            .map(|node| node.incarnation.name.clone())
            .collect();
        let mut order = Vec::new();
        while let Some(name) = orchestrator.forced_removal_candidate(&remaining) {
            let Some(position) = remaining.iter().position(|candidate| *candidate == name) else {
                order.push(name);
                break;
            };
            order.push(remaining.remove(position));
        }
        self.forced_removal_order = order;
        self
    }

    /// Iterates over the nodes in the Active state.
    pub fn active_nodes(&self) -> impl Iterator<Item = &NodeSnapshot> {
        self.nodes
            .iter()
            .filter(|node| node.state == NodeState::Active)
    }
}

/// Limits against which a node's health is scored.
///
/// Each figure is turned into a pressure in [0, 1]: the figure divided by its limit, capped
/// at 1. A node's health score is `1 - max(pressures)`, so the worst resource alone decides
/// it. A node at its CPU limit scores 0 however empty its mailboxes are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthLimits {
    /// Depth of the fullest mailbox at which mailbox pressure reaches 1, in messages.
    /// Default 1,000; any positive value.
    pub mailbox_depth: NonZeroU64,
    /// CPU use at which CPU pressure reaches 1, in percent of one core. Default 100 (one busy
    /// core); must be greater than zero, and may exceed 100 on nodes with several cores.
    pub cpu_percent: f64,
    /// Resident memory at which memory pressure reaches 1, in bytes. Default `None`, which
    /// leaves memory out of the health score; the `memory` policy's percent target needs it.
    pub memory_bytes: Option<NonZeroU64>,
    /// Health score below which a node counts as unhealthy. Default 0.25; range [0, 1].
    pub unhealthy_below: f64,
}

impl Default for HealthLimits {
    fn default() -> Self {
        Self {
            mailbox_depth: NonZeroU64::new(1_000).expect("1000 is not zero"),
            cpu_percent: 100.0,
            memory_bytes: None,
            unhealthy_below: 0.25,
        }
    }
}

impl HealthLimits {
    /// Scores one node's load against these limits.
    pub fn score(&self, load: &NodeLoad) -> HealthScore {
        let mailbox = pressure(
            load.mailbox_depth_max as f64,
            self.mailbox_depth.get() as f64,
        );
        let cpu = pressure(load.cpu_percent, self.cpu_percent);
        let memory = self
            .memory_bytes
            .map(|limit| pressure(load.memory_bytes as f64, limit.get() as f64));
        let worst = mailbox.max(cpu).max(memory.unwrap_or(0.0));
        let score = 1.0 - worst;
        HealthScore {
            score,
            mailbox_pressure: mailbox,
            cpu_pressure: cpu,
            memory_pressure: memory,
            unhealthy: score < self.unhealthy_below,
        }
    }
}

/// Returns `value / limit` capped to [0, 1]; a non-positive limit counts as fully used.
fn pressure(value: f64, limit: f64) -> f64 {
    if limit <= 0.0 {
        return 1.0;
    }
    (value / limit).clamp(0.0, 1.0)
}

/// A node's health score and the pressures it came from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthScore {
    /// `1 - max(pressures)`, in [0, 1]; 1 is idle.
    pub score: f64,
    /// Fullest mailbox divided by [`HealthLimits::mailbox_depth`], capped at 1.
    pub mailbox_pressure: f64,
    /// CPU use divided by [`HealthLimits::cpu_percent`], capped at 1.
    pub cpu_pressure: f64,
    /// Memory divided by [`HealthLimits::memory_bytes`], capped at 1; `None` without a limit.
    pub memory_pressure: Option<f64>,
    /// Whether the score is below [`HealthLimits::unhealthy_below`].
    pub unhealthy: bool,
}

/// Health of one Active node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeHealth {
    /// The node scored.
    pub incarnation: Incarnation,
    /// Its score and pressures.
    pub health: HealthScore,
}

/// Cluster totals over the Active nodes, which are the ones that serve new activations.
///
/// Draining nodes are counted but their load is left out, because it is moving to the Active
/// nodes and would otherwise be counted twice once it arrives.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterLoad {
    /// Nodes in the Active state; the "current" node count of every policy.
    pub active_nodes: u32,
    /// Nodes in the Joining state, which will soon be Active.
    pub joining_nodes: u32,
    /// Nodes in the Draining state, which are on their way out.
    pub draining_nodes: u32,
    /// Activations over all Active nodes.
    pub total_activations: u64,
    /// Calls per second over all Active nodes.
    pub total_calls_per_sec: f64,
    /// Queued messages over all Active nodes.
    pub total_mailbox_depth: u64,
    /// Depth of the fullest mailbox on any Active node, in messages.
    pub max_mailbox_depth: u64,
    /// CPU use summed over Active nodes, in percent of one core.
    pub total_cpu_percent: f64,
    /// Resident memory summed over Active nodes, in bytes.
    pub total_memory_bytes: u64,
    /// Health of each Active node.
    pub node_health: Vec<NodeHealth>,
    /// Mean health score over Active nodes, in [0, 1]; 1 when there are none.
    pub health_score: f64,
    /// Active nodes whose score is below [`HealthLimits::unhealthy_below`].
    pub unhealthy_nodes: u32,
}

impl ClusterLoad {
    /// Aggregates a snapshot, scoring each Active node against `limits`.
    pub fn from_snapshot(snapshot: &ClusterSnapshot, limits: &HealthLimits) -> Self {
        let mut cluster = ClusterLoad::default();
        for node in &snapshot.nodes {
            match node.state {
                NodeState::Active => cluster.add_active(node, limits),
                NodeState::Joining => cluster.joining_nodes += 1,
                NodeState::Draining => cluster.draining_nodes += 1,
                NodeState::Leaving | NodeState::Dead => {}
            }
        }
        cluster.health_score = if cluster.node_health.is_empty() {
            1.0
        } else {
            let sum: f64 = cluster
                .node_health
                .iter()
                .map(|node| node.health.score)
                .sum();
            sum / cluster.node_health.len() as f64
        };
        cluster
    }

    fn add_active(&mut self, node: &NodeSnapshot, limits: &HealthLimits) {
        let load = &node.load;
        self.active_nodes += 1;
        self.total_activations += load.activations;
        self.total_calls_per_sec += load.calls_per_sec;
        self.total_mailbox_depth += load.mailbox_depth_total;
        self.max_mailbox_depth = self.max_mailbox_depth.max(load.mailbox_depth_max);
        self.total_cpu_percent += load.cpu_percent;
        self.total_memory_bytes += load.memory_bytes;
        let health = limits.score(load);
        if health.unhealthy {
            self.unhealthy_nodes += 1;
        }
        self.node_health.push(NodeHealth {
            incarnation: node.incarnation.clone(),
            health,
        });
    }

    /// Returns `total` divided by the Active node count, or 0 when there are none.
    pub fn per_active_node(&self, total: f64) -> f64 {
        if self.active_nodes == 0 {
            0.0
        } else {
            total / f64::from(self.active_nodes)
        }
    }
}
