//! Placement strategies that choose a node for a new activation.
