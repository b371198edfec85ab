//! Live migration of activations with a fenced hand-off, draining, and the rebalancer.

pub mod rebalancer;
