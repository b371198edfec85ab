//! Live migration of activations with a fenced hand-off, draining, and the rebalancer.

mod handoff;
pub mod rebalancer;

pub use handoff::{
    MigrationEnvelope, MigrationError, MigrationReply, MigrationReport, MigrationRequest,
};
