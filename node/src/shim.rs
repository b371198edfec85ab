//! Temporary stand-ins for the library runtime API that has not landed yet.
//!
//! TODO: delete this file and import `gristmill::runtime::{Node, StartError}` and
//! `gristmill::grain::samples` in `run.rs` once the runtime exposes them. Until then every
//! `gristmill run` fails at start with [`StartError::RuntimeMissing`].

use std::convert::Infallible;
use std::net::SocketAddr;

use gristmill::membership::NodeId;
use gristmill::runtime::NodeConfig;

/// Stand-in for `gristmill::runtime::StartError`.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The library has no node runtime yet, so nothing started.
    #[error("the gristmill library in this build has no node runtime yet")]
    RuntimeMissing,
}

/// Stand-in for `gristmill::grain::GrainRegistry`.
pub struct GrainRegistry;

/// Stand-in for `gristmill::grain::samples`.
pub mod samples {
    /// Returns the registry of the sample grain types.
    pub fn registry() -> super::GrainRegistry {
        super::GrainRegistry
    }
}

/// Stand-in for `gristmill::runtime::Node`; no value of it can exist.
#[derive(Clone)]
pub struct Node {
    never: Infallible,
}

impl Node {
    /// Fails, because the runtime is missing.
    pub async fn start(_config: NodeConfig, _grains: GrainRegistry) -> Result<Node, StartError> {
        Err(StartError::RuntimeMissing)
    }

    /// Returns the node's identity.
    pub fn id(&self) -> &NodeId {
        match self.never {}
    }

    /// Returns the bound address of the `/metrics` endpoint.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        match self.never {}
    }

    /// Drains the node and leaves the cluster.
    pub async fn drain_and_leave(&self) {
        match self.never {}
    }

    /// Resolves when the node has stopped.
    pub async fn stopped(&self) {
        match self.never {}
    }
}
