//! SWIM membership through foca: node identity, lifecycle state, load gossip and events.

mod identity;
mod lifecycle;

pub use identity::{Incarnation, NodeId};
pub use lifecycle::{NodeLoad, NodeMeta, NodeState};
