//! The rebalancer of one node: moves activations from hotter to colder nodes.

use crate::api::pb;
use crate::runtime::Node;

/// Returns the rebalancer's status and its recent rounds.
pub fn status(node: &Node) -> pb::RebalancerStatus {
    // TODO: report real rounds once the rebalancer loop lands.
    pb::RebalancerStatus {
        node: node.id().name.clone(),
        paused: false,
        rounds: Vec::new(),
    }
}

/// Pauses or resumes the rebalancer and returns its status.
pub fn set_paused(node: &Node, _paused: bool) -> pb::RebalancerStatus {
    status(node)
}
