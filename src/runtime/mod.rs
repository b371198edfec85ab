//! Assembly of a node: membership, transport, grains, directory and API wired together.

mod config;

pub use config::{ConfigError, MembershipConfig, NodeConfig};
