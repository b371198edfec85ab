//! The rebalancer of one node: moves activations from hotter to colder nodes.
//!
//! Every node runs its own rebalancer, and each moves only its own activations:
//! 1. Every `round_interval`, while the node is Active and the rebalancer is not paused, the
//!    loop samples the node's activations (turns since the last round, mailbox depth) and reads
//!    every member's gossiped load.
//! 2. The pure planner ([`plan_round`]) scores the nodes, decides whether this node is hot
//!    enough to shed load, and picks the hottest movable grains and the coldest Active targets.
//! 3. The loop migrates the planned grains through the fenced hand-off, a bounded number at
//!    once, and records the round (loads, moves with outcome, note) in a bounded history that
//!    `Grains.GetRebalancer` returns.
//!
//! Nodes need no coordination, because every hot node computes the same shares of each cold
//! node's deficit from the same gossip. The planner's module documentation gives the rules.

#[path = "rebalance/mod.rs"]
mod rebalance;

pub use rebalance::config::{RebalancerConfig, RebalancerConfigError};
pub use rebalance::driver::{RebalanceHost, Rebalancer, run};
pub use rebalance::history::{History, MoveOutcome, MoveRecord, RoundRecord};
pub use rebalance::metrics::RebalancerMetrics;
pub use rebalance::planner::{
    ActivationSample, PlanNote, PlannedMove, RoundInput, RoundPlan, grain_score, node_score,
    plan_round,
};
// TODO: drop the `allow` once `Node::start` calls `spawn`.
pub(crate) use rebalance::spawn;

use crate::api::pb;
use crate::runtime::Node;

/// Returns the rebalancer's status and its recent rounds.
pub fn status(node: &Node) -> pb::RebalancerStatus {
    let shared = rebalance::shared_for(node);
    pb::RebalancerStatus {
        node: node.id().name.to_string(),
        paused: shared.is_paused(),
        rounds: shared.rounds(),
    }
}

/// Pauses or resumes the rebalancer and returns its status.
pub fn set_paused(node: &Node, paused: bool) -> pb::RebalancerStatus {
    rebalance::shared_for(node).set_paused(paused);
    status(node)
}
