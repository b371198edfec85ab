//! Gristmill: distributed virtual actors ("grains") on a cluster that manages its own
//! membership and size.
//!
//! A grain is addressed by type and key, activated on its first call on some node, never
//! active twice at once, deactivated when idle, and keeps its state in a store. Nodes find each
//! other with SWIM gossip ([`membership`]), carry grain calls over ractor_cluster
//! ([`transport`]), map each grain to its one activation ([`directory`]), choose nodes for new
//! activations ([`placement`]), and size the cluster with the supervisor in [`scaling`].
//!
//! Protocol cores (membership view, directory, placement, scaling policy) are plain structs
//! with no I/O: time comes in as [`clock::Millis`] and randomness as an `Rng` argument, so the
//! simulator can drive them. The tokio, ractor, tonic and kube code around them is thin.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod clock;
pub mod directory;
mod duration_text;
mod first_byte;
pub mod grain;
pub mod membership;
pub mod metrics;
pub mod migration;
pub mod placement;
mod repeat_limit;
pub mod routing;
pub mod runtime;
pub mod scaling;
pub mod storage;
pub mod transport;
