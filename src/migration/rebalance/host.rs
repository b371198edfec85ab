//! The runtime side of the rebalancer: `Node` as its host, and where each node's state lives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::time::Instant;

use super::config::RebalancerConfig;
use super::driver::{RebalanceHost, Rebalancer, run};
use super::history::MoveOutcome;
use super::metrics::RebalancerMetrics;
use super::planner::ActivationSample;
use crate::grain::GrainId;
use crate::membership::{Incarnation, MemberInfo, NodeState};
use crate::runtime::Node;
use crate::scaling::orchestrator::BoxFuture;

impl RebalanceHost for Node {
    fn name(&self) -> String {
        self.id().name.to_string()
    }

    fn state(&self) -> NodeState {
        Node::state(self)
    }

    fn members(&self) -> Vec<MemberInfo> {
        Node::members(self)
    }

    fn activation_samples(&self) -> Vec<ActivationSample> {
        self.local_activation_loads()
            .into_iter()
            .map(|load| ActivationSample {
                grain: load.grain,
                turns: load.turns_since_last,
                mailbox_depth: load.mailbox_depth,
                immovable: !load.movable,
            })
            .collect()
    }

    fn migrate(
        &self,
        grain: GrainId,
        target: String,
        deadline: Instant,
    ) -> BoxFuture<'static, MoveOutcome> {
        let node = self.clone();
        Box::pin(async move {
            match Node::migrate(&node, &grain, Some(&target), deadline.into_std()).await {
                Ok(_) => MoveOutcome::Succeeded,
                Err(error) => MoveOutcome::Failed {
                    outcome: error.outcome_label(),
                    message: error.to_string(),
                },
            }
        })
    }

    fn unix_now_ms(&self) -> u64 {
        crate::runtime::unix_now_ms()
    }
}

/// Returns the rebalancer settings of `node`.
fn config_for(node: &Node) -> RebalancerConfig {
    node.inner.config.rebalancer.clone()
}

/// Returns the rebalancer state of `node`, creating it on first use.
pub(crate) fn shared_for(node: &Node) -> Arc<Rebalancer> {
    // TODO: keep the state in a `NodeInner` field created in `Node::start`. Until then this
    // process-wide map stands in, and it keeps the entries of stopped nodes.
    static BY_NODE: OnceLock<Mutex<HashMap<Incarnation, Arc<Rebalancer>>>> = OnceLock::new();
    let mut by_node = BY_NODE
        .get_or_init(Mutex::default)
        .lock()
        .expect("rebalancer map lock poisoned");
    let shared = by_node.entry(node.id().incarnation()).or_insert_with(|| {
        let metrics = RebalancerMetrics::new();
        if let Err(error) = metrics.register(node.metrics().registry()) {
            tracing::warn!(node = %node.id().name, %error, "cannot register the rebalancer metrics");
        }
        Arc::new(Rebalancer::new(&config_for(node), metrics))
    });
    Arc::clone(shared)
}

/// Starts the rebalancer loop of `node`, which runs until the node is Dead.
///
/// Call it once per node, in `Node::start` next to the other periodic loops. The loop waits
/// for the node to become Active by itself.
pub(crate) fn spawn(node: Node) {
    let config = config_for(&node);
    if let Err(error) = config.validate() {
        tracing::error!(node = %node.id().name, %error, "rebalancer not started");
        return;
    }
    let shared = shared_for(&node);
    tokio::spawn(run(node, config, shared));
}
