//! Placement strategies that choose a node for a new activation.

mod candidate;
mod choose;
mod config;
mod resource;
mod strategy;
#[cfg(test)]
mod tests;

pub use candidate::PlacementCandidate;
pub use choose::{PlacementError, choose};
pub use config::{PlacementConfig, PlacementConfigError};
pub use strategy::{PlacementStrategy, UnknownStrategyError};
