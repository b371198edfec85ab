//! Live migration of activations with a fenced hand-off, and the rebalancer.
