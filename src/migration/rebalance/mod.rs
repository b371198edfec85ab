//! The load-weighted rebalancer: a pure planner, the loop that carries out its plans, and its
//! settings, history and metrics.

pub mod config;
pub mod driver;
pub mod history;
mod host;
pub mod metrics;
pub mod planner;
#[cfg(test)]
mod test_support;

pub(crate) use host::{shared_for, spawn};
