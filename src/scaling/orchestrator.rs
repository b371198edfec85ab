//! The interface through which the supervisor adds and removes node processes.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

/// A boxed future, so orchestrators can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Starts and stops node processes for the scaling supervisor.
///
/// The supervisor decides how many nodes the cluster needs and which node goes; the
/// orchestrator only carries that out. It never drains: the supervisor calls
/// [`Orchestrator::remove_node`] only after the node's drain and after the node itself
/// reported 0 activations.
pub trait Orchestrator: Send + Sync + 'static {
    /// Short name for logs and decision records, such as `local` or `kubernetes`.
    fn kind(&self) -> &'static str;

    /// Returns the number of nodes the orchestrator runs or has been asked to run.
    fn current_nodes(&self) -> BoxFuture<'_, Result<u32, OrchestratorError>>;

    /// Starts `count` new nodes and returns their names.
    fn add_nodes(&self, count: u32) -> BoxFuture<'_, Result<Vec<String>, OrchestratorError>>;

    /// Returns why this orchestrator cannot start nodes at all, or `None` if it can. A
    /// request that needs new nodes is then rejected before any decision is recorded.
    fn cannot_add_nodes(&self) -> Option<&str> {
        None
    }

    /// Stops the node `name`, which the supervisor has drained; the node is still a Draining
    /// member, so stopping it makes it leave the cluster.
    fn remove_node<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), OrchestratorError>>;

    /// Returns the node that the orchestrator must remove next, if it cannot remove any other.
    ///
    /// A StatefulSet always removes its highest ordinal, so the Kubernetes orchestrator names
    /// that pod; orchestrators that can remove any node return `None` and the supervisor picks
    /// the node that is cheapest to drain.
    fn forced_removal_candidate(&self, nodes: &[String]) -> Option<String>;

    /// Returns the nodes that the platform is stopping for reasons of its own, such as a
    /// Kubernetes eviction or node drain, now or since the last call.
    ///
    /// The supervisor records each such node and delays automatic actions while any is
    /// reported, so that it does not add a node in place of one the platform restarts.
    /// Orchestrators that cannot see such stops keep the default, which reports none.
    fn disrupted_nodes(&self) -> BoxFuture<'_, BTreeSet<String>> {
        Box::pin(async { BTreeSet::new() })
    }

    /// Removes and returns the backend steps since the last call, oldest first, as sentences
    /// for the decision record: API reads, patches, retries and failures. Orchestrators
    /// without such steps keep the default, which returns none.
    fn take_steps(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Failure of an orchestrator request.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// The request conflicted with a concurrent change; nothing changed and a retry can help.
    #[error("orchestrator conflict: {0}; retry after re-reading the current size")]
    Conflict(String),
    /// The orchestrator lacks a permission; nothing changed and a retry cannot help.
    #[error("orchestrator is not allowed to {action}: {detail}")]
    Forbidden {
        /// What was attempted, such as `patch statefulsets/scale`.
        action: String,
        /// The error returned by the orchestrator's backend.
        detail: String,
    },
    /// The backend could not be reached or failed; a retry can help.
    #[error("orchestrator backend unavailable: {0}")]
    Unavailable(String),
    /// The request itself was invalid, such as a node name the orchestrator does not run.
    #[error("invalid orchestrator request: {0}")]
    Invalid(String),
}
