//! A placement candidate: a node's identity, lifecycle state and load.

use serde::{Deserialize, Serialize};

use crate::membership::{Incarnation, NodeLoad, NodeState};

/// One node that placement may choose for a new activation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlacementCandidate {
    /// The node.
    pub node: Incarnation,
    /// Lifecycle state; only `Active` nodes are chosen.
    pub state: NodeState,
    /// Load figures from the node's latest gossip.
    pub load: NodeLoad,
    /// Activations that the choosing node placed on this node since that gossip was sent.
    ///
    /// Gossiped load lags by a gossip round. Without this count, every placement between two
    /// rounds would see the same least-loaded node and pile new grains onto it.
    pub recent_placements: u64,
}

impl PlacementCandidate {
    /// Creates an `Active` candidate with no recent placements.
    pub fn active(node: Incarnation, load: NodeLoad) -> Self {
        Self {
            node,
            state: NodeState::Active,
            load,
            recent_placements: 0,
        }
    }

    /// Returns the activation count including recent placements not yet in the gossip.
    pub fn activations(&self) -> u64 {
        self.load.activations.saturating_add(self.recent_placements)
    }
}
