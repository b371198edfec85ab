//! Carrying out one scaling action: add nodes, or drain nodes one by one and then remove them.
//!
//! Scale-in follows the invariant that a node is removed only after it holds no activations:
//!
//! 1. Send `Cluster/DrainNode` with `leave_after` to this node's own gRPC API, which forwards
//!    it to the named node. That node becomes Draining, migrates every activation to the Active
//!    nodes, and leaves the cluster once it holds none.
//! 2. Only a response with `remaining == 0` lets the orchestrator remove the node. A drain that
//!    times out leaves the node Draining and in place, and the action fails naming it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::pb;
use crate::api::pb::cluster_client::ClusterClient;
use crate::scaling::decision::{Action, ActionOutcome};
use crate::scaling::orchestrator::Orchestrator;
use crate::scaling::supervisor_metrics::ScalingMetrics;

/// Extra time the gRPC deadline of a drain allows beyond the drain timeout for the reply.
const DRAIN_REPLY_MARGIN: Duration = Duration::from_secs(10);

/// What carrying out an action needs.
#[derive(Clone)]
pub struct ActionContext {
    /// The orchestrator that adds and removes node processes.
    pub orchestrator: Arc<dyn Orchestrator>,
    /// gRPC address of a node that forwards `DrainNode` to the drained node.
    pub drain_via: SocketAddr,
    /// Time a node has to migrate its activations away before its drain counts as failed.
    pub drain_timeout: Duration,
    /// Where the outcome is counted.
    pub metrics: Arc<ScalingMetrics>,
}

/// Carries out `action` to its end and returns its outcome; never panics on remote failures.
pub async fn carry_out(context: &ActionContext, action: &Action) -> ActionOutcome {
    match action {
        Action::None => ActionOutcome::Succeeded,
        Action::ScaleOut { nodes } => scale_out(context, *nodes).await,
        Action::ScaleIn { nodes } => {
            for (done, node) in nodes.iter().enumerate() {
                if let Err(error) = drain_and_remove(context, &node.name).await {
                    return ActionOutcome::Failed {
                        completed_nodes: done as u32,
                        error,
                    };
                }
            }
            ActionOutcome::Succeeded
        }
    }
}

async fn scale_out(context: &ActionContext, nodes: u32) -> ActionOutcome {
    match context.orchestrator.add_nodes(nodes).await {
        Ok(names) if names.len() as u32 >= nodes => {
            tracing::info!(nodes = ?names, "nodes added");
            ActionOutcome::Succeeded
        }
        Ok(names) => {
            context.metrics.failure("orchestrator");
            ActionOutcome::Failed {
                completed_nodes: names.len() as u32,
                error: format!("the orchestrator added {} of {nodes} nodes", names.len()),
            }
        }
        Err(error) => {
            context.metrics.failure("orchestrator");
            ActionOutcome::Failed {
                completed_nodes: 0,
                error: error.to_string(),
            }
        }
    }
}

/// Drains `name` and removes it; returns the error sentence for the decision on failure.
async fn drain_and_remove(context: &ActionContext, name: &str) -> Result<(), String> {
    let started = Instant::now();
    let response = drain(context, name).await.map_err(|status| {
        context.metrics.failure("drain_failed");
        format!("draining {name} failed: {}", status.message())
    })?;
    context
        .metrics
        .drain_duration
        .observe(started.elapsed().as_secs_f64());
    if response.remaining > 0 {
        context.metrics.failure("drain_timeout");
        return Err(format!(
            "draining {name} did not finish within {} s: {} activations remain, so it stays",
            context.drain_timeout.as_secs(),
            response.remaining
        ));
    }
    tracing::info!(node = %name, migrated = response.migrated, "node drained");
    context
        .orchestrator
        .remove_node(name)
        .await
        .map_err(|error| {
            context.metrics.failure("orchestrator");
            format!("removing drained node {name} failed: {error}")
        })
}

async fn drain(
    context: &ActionContext,
    name: &str,
) -> Result<pb::NodeDrainResponse, tonic::Status> {
    let via = context.drain_via;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{via}"))
        .map_err(|error| tonic::Status::internal(error.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(context.drain_timeout + DRAIN_REPLY_MARGIN);
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let request = pb::NodeDrainRequest {
        node: name.to_owned(),
        timeout_ms: u32::try_from(context.drain_timeout.as_millis()).unwrap_or(u32::MAX),
        leave_after: true,
    };
    let response = ClusterClient::new(channel).drain_node(request).await?;
    Ok(response.into_inner())
}
