//! SWIM membership through foca: node identity, lifecycle state, load gossip and events.

mod broadcast;
mod identity;
mod lifecycle;
mod view;

pub use broadcast::{MalformedMeta, MetaBroadcast, MetaHandler, MetaKey};
pub use identity::{Incarnation, NodeId};
pub use lifecycle::{NodeLoad, NodeMeta, NodeState};
pub use view::{DEFAULT_DEAD_RETENTION, LeaveReason, MemberInfo, MemberView, MembershipEvent};
