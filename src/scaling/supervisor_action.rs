//! Carrying out one scaling action: add nodes, or drain nodes one by one and then remove them.
//!
//! Scale-in follows the invariant that a node is removed only after it holds no activations:
//!
//! 1. Send `Cluster/DrainNode` without `leave_after` to this node's own gRPC API, which
//!    forwards it to the named node. That node becomes Draining and migrates every activation
//!    to the Active nodes. A reply with `remaining > 0` fails the action, and the node stays
//!    Draining and in place.
//! 2. Ask the drained node itself for its activation count (`Grains/ListActivations`). This
//!    check does not trust the drain reply, and its result goes into the decision record. A
//!    count other than 0, or a failed call, fails the action and leaves the node in place.
//! 3. Only then does the orchestrator stop the node: the local orchestrator asks it to leave
//!    and waits for its exit, and the Kubernetes orchestrator shrinks the StatefulSet, whose
//!    SIGTERM makes the node leave.
//!
//! A Draining node receives no new activations, so the count cannot rise between steps 2 and
//! 3. If one appeared anyway, the node would deactivate it when it leaves, and its state would
//! stay as last stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::runtime::Node;
use crate::scaling::decision::{Action, ActionOutcome, NodeRemoval};
use crate::scaling::node_calls;
use crate::scaling::orchestrator::Orchestrator;
use crate::scaling::supervisor_metrics::ScalingMetrics;

/// What carrying out an action needs.
#[derive(Clone)]
pub struct ActionContext {
    /// The orchestrator that adds and removes node processes.
    pub orchestrator: Arc<dyn Orchestrator>,
    /// The supervisor's node: its gRPC API forwards drains, and its view gives node addresses.
    pub node: Node,
    /// Time a node has to migrate its activations away before its drain counts as failed.
    pub drain_timeout: Duration,
    /// Where the outcome is counted.
    pub metrics: Arc<ScalingMetrics>,
}

/// The end of an action: its outcome and the check made on each node a scale-in drained.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionReport {
    /// The outcome.
    pub outcome: ActionOutcome,
    /// For a scale-in, each drained node's own activation count before its stop, in order.
    pub removals: Vec<NodeRemoval>,
    /// The orchestrator's backend steps during the action, oldest first.
    pub steps: Vec<String>,
}

impl From<ActionOutcome> for ActionReport {
    fn from(outcome: ActionOutcome) -> Self {
        Self {
            outcome,
            removals: Vec::new(),
            steps: Vec::new(),
        }
    }
}

/// Carries out `action` to its end and returns its report, with the orchestrator's steps
/// during it; remote failures become a failed outcome.
pub async fn carry_out(context: &ActionContext, action: &Action) -> ActionReport {
    // Steps from the evaluations before this action (size reads) belong to no action.
    context.orchestrator.take_steps();
    let mut report = carry_out_action(context, action).await;
    report.steps = context.orchestrator.take_steps();
    report
}

async fn carry_out_action(context: &ActionContext, action: &Action) -> ActionReport {
    match action {
        Action::None => ActionOutcome::Succeeded.into(),
        Action::ScaleOut { nodes } => scale_out(context, *nodes).await.into(),
        Action::ScaleIn { nodes } => {
            let mut removals = Vec::new();
            for (done, node) in nodes.iter().enumerate() {
                if let Err(error) = drain_and_remove(context, &node.name, &mut removals).await {
                    let outcome = ActionOutcome::Failed {
                        completed_nodes: done as u32,
                        error,
                    };
                    return ActionReport {
                        outcome,
                        removals,
                        steps: Vec::new(),
                    };
                }
            }
            let outcome = ActionOutcome::Succeeded;
            ActionReport {
                outcome,
                removals,
                steps: Vec::new(),
            }
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

/// Drains `name`, checks that it reports no activations, and removes it. Appends the check to
/// `removals`, and on failure returns the error sentence for the decision.
async fn drain_and_remove(
    context: &ActionContext,
    name: &str,
    removals: &mut Vec<NodeRemoval>,
) -> Result<(), String> {
    let started = Instant::now();
    let via = context.node.grpc_addr();
    let response = node_calls::drain(via, name, context.drain_timeout)
        .await
        .map_err(|status| {
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

    let activations = own_activation_count(context, name)
        .await
        .inspect_err(|_| context.metrics.failure("drain_failed"))?;
    let stopped = activations == 0;
    removals.push(NodeRemoval {
        node: name.to_owned(),
        activations_before_stop: activations,
        stopped,
    });
    if !stopped {
        context.metrics.failure("not_empty");
        tracing::error!(node = %name, activations, "drained node still has activations; not removed");
        return Err(format!(
            "{name} reports {activations} activations after a complete drain, so it stays"
        ));
    }
    context
        .orchestrator
        .remove_node(name)
        .await
        .map_err(|error| {
            context.metrics.failure("orchestrator");
            format!("removing drained node {name} failed: {error}")
        })
}

/// Asks the node `name` itself for its activation count.
async fn own_activation_count(context: &ActionContext, name: &str) -> Result<u64, String> {
    let checked = async {
        let addr = node_calls::grpc_addr_of(&context.node, name)?;
        node_calls::own_activation_count(addr, name).await
    };
    checked.await.map_err(|status| {
        format!(
            "cannot read the activation count of drained node {name}, so it stays: {}",
            status.message()
        )
    })
}
