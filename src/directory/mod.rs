//! Grain directory: which node holds the one activation of each grain.

mod partition;

pub use partition::{partition_owner, rendezvous_max, rendezvous_score};
