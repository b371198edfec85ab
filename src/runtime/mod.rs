//! Assembly of a node: membership, transport, grains, directory and API wired together.

mod catalog;
mod config;
mod directory_glue;
mod events;
mod forwarding;
mod inbound;
mod leave;
mod local_delivery;
mod local_route;
mod migrate;
mod node;
mod oneway;
mod reminders;
mod router;
mod upkeep;
mod wall_clock;

pub use config::{ConfigError, MembershipConfig, NodeConfig};
pub(crate) use directory_glue::DeactivationFence;
pub(crate) use local_route::LocalRoute;
pub(crate) use migrate::HandOff;
pub use migrate::{ActivationLoad, DrainReport};
pub(crate) use node::unix_now_ms;
pub use node::{Node, StartError};
pub(crate) use router::{CachedRoute, MAX_KEY_BYTES};
