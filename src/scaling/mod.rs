//! The scaling supervisor: load model, policies, combiners, decisions and orchestrators.
//!
//! The policy core ([`ScalingCore`]) is plain Rust with no I/O: the supervisor's glue feeds it
//! a [`ClusterSnapshot`] from the membership gossip and the current [`Millis`], carries out the
//! returned [`Decision`]'s action through an [`orchestrator::Orchestrator`], and reports the
//! outcome back.
//!
//! [`Millis`]: crate::clock::Millis

pub mod action_journal;
pub mod behavior;
pub mod combiner;
pub mod config;
pub mod decision;
pub mod disruption;
pub mod evaluator;
pub mod keda;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod load;
pub mod local_orchestrator;
pub mod node_calls;
pub mod orchestrator;
pub mod policy;
pub mod proto_convert;
pub mod removal;
pub mod supervisor;
pub mod supervisor_action;
pub mod supervisor_metrics;
pub mod supervisor_register;

pub use self::behavior::{Direction, RatePolicy, ScalingRules, SelectPolicy};
pub use self::combiner::{Combined, CombinerKind};
pub use self::config::{
    ConfigError, MailboxMeasure, PolicyTarget, ScalingConfig, ScalingPolicyConfig, UnknownName,
};
pub use self::decision::{
    Action, ActionOutcome, AppliedLimit, Decision, DecisionHistory, DecisionId, NodeRemoval,
    Trigger,
};
pub use self::evaluator::{RequestError, ScalingCore, ScalingStatus};
pub use self::load::{ClusterLoad, ClusterSnapshot, HealthLimits, HealthScore, NodeSnapshot};
pub use self::policy::{PolicyKind, Recommendation};
pub use self::removal::RemovalChoice;

#[cfg(test)]
mod tests;
