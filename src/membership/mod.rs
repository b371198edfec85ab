//! SWIM membership through foca: node identity, lifecycle state, load gossip and events.

mod agent;
mod broadcast;
mod handle;
mod identity;
mod lifecycle;
mod refuted_suspicion;
mod view;
mod wire;

pub use agent::{MembershipAgent, foca_config};
pub use broadcast::{MalformedMeta, MetaBroadcast, MetaHandler, MetaKey};
pub use handle::{MembershipError, MembershipHandle};
pub use identity::{Incarnation, NodeId};
pub use lifecycle::{NodeLoad, NodeMeta, NodeState};
pub use view::{DEFAULT_DEAD_RETENTION, LeaveReason, MemberInfo, MemberView, MembershipEvent};
