//! What a grain sees of the runtime during a turn: its identity and references to other grains.

use std::marker::PhantomData;

use super::{Grain, GrainId, GrainRef};
use crate::runtime::Node;

/// The runtime's side of one activation, passed to every turn.
pub struct GrainContext {
    id: GrainId,
    activation_id: u64,
    epoch: u64,
    node: Node,
}

impl GrainContext {
    pub(crate) fn new(id: GrainId, activation_id: u64, epoch: u64, node: Node) -> Self {
        Self {
            id,
            activation_id,
            epoch,
            node,
        }
    }

    /// Returns the id of this grain.
    pub fn id(&self) -> &GrainId {
        &self.id
    }

    /// Returns the key of this grain.
    pub fn key(&self) -> &str {
        &self.id.key
    }

    /// Returns the id of this activation, unique on its node.
    pub fn activation_id(&self) -> u64 {
        self.activation_id
    }

    /// Returns the directory epoch of this activation; a migration raises it by one.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Returns the name of the node that hosts this activation.
    pub fn node_name(&self) -> &str {
        &self.node.id().name
    }

    /// Returns a reference to the grain `key` of type `G`, for calls from this grain.
    pub fn grain<G: Grain>(&self, key: impl Into<String>) -> GrainRef<G> {
        GrainRef {
            id: GrainId::new(G::TYPE_NAME, key),
            node: self.node.clone(),
            timeout: None,
            grain_type: PhantomData,
        }
    }

    pub(crate) fn node(&self) -> &Node {
        &self.node
    }
}
