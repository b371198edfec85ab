//! Deterministic simulator of Gristmill's protocol cores, with seeded faults and invariants.
//!
//! The simulator runs the real membership view (over foca), directory partition, directory
//! cache and placement code on simulated nodes that exchange messages over a simulated
//! network in virtual time. Scenarios script joins, crashes, restarts, partitions, stalls,
//! load and scaling; invariant checks run after every event and every step. See the README
//! for what is modeled and what each invariant means.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod checks;
mod event_queue;
pub mod message;
pub mod network;
pub mod node;
pub mod scale;
pub mod scenario;
pub mod store;
pub mod world;

pub use checks::{Invariant, Violation};
pub use scenario::{Outcome, Scenario, Step, run_seed};
pub use world::{SimConfig, World};
