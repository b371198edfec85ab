//! Scale-in target choice: which Active nodes to drain and remove.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::membership::Incarnation;
use crate::scaling::load::{ClusterSnapshot, NodeSnapshot};

/// The nodes chosen for removal and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemovalChoice {
    /// Nodes to drain and remove, in that order.
    pub nodes: Vec<Incarnation>,
    /// One sentence for operators.
    pub reason: String,
}

/// Chooses up to `count` Active nodes to remove.
///
/// When the snapshot carries a forced removal order (a StatefulSet removes its highest ordinal),
/// the first names of that order are taken, and choosing fails if the first one is not Active.
/// Otherwise the nodes cheapest to drain go first: fewest activations, then lowest call rate,
/// then name. The supervisor's own node comes last, so it is chosen only when no other node is
/// left. Returns an error sentence when no node can be chosen.
pub fn choose_removal(snapshot: &ClusterSnapshot, count: u32) -> Result<RemovalChoice, String> {
    let count = count as usize;
    if !snapshot.forced_removal_order.is_empty() {
        return choose_forced(snapshot, count);
    }

    let mut candidates: Vec<&NodeSnapshot> = snapshot.active_nodes().collect();
    if candidates.is_empty() {
        return Err("no Active node to remove".into());
    }
    candidates.sort_by(|a, b| drain_cost_order(a, b, &snapshot.supervisor));
    let nodes: Vec<Incarnation> = candidates
        .iter()
        .take(count)
        .map(|node| node.incarnation.clone())
        .collect();
    let first = candidates[0];
    let reason = format!(
        "{} is cheapest to drain: {} activations, {:.1} calls/s",
        first.incarnation, first.load.activations, first.load.calls_per_sec
    );
    Ok(RemovalChoice { nodes, reason })
}

fn choose_forced(snapshot: &ClusterSnapshot, count: usize) -> Result<RemovalChoice, String> {
    let mut nodes = Vec::new();
    for name in snapshot.forced_removal_order.iter().take(count) {
        let active = snapshot
            .active_nodes()
            .find(|node| node.incarnation.name == *name);
        match active {
            Some(node) => nodes.push(node.incarnation.clone()),
            None if nodes.is_empty() => {
                return Err(format!(
                    "the orchestrator must remove {name} next, but it is not an Active node"
                ));
            }
            // Remove the Active prefix now; the rest waits for a later evaluation.
            None => break,
        }
    }
    let reason = format!(
        "the orchestrator can only remove {} next",
        snapshot.forced_removal_order[0]
    );
    Ok(RemovalChoice { nodes, reason })
}

fn drain_cost_order(a: &NodeSnapshot, b: &NodeSnapshot, supervisor: &Incarnation) -> Ordering {
    let is_supervisor = |node: &NodeSnapshot| node.incarnation == *supervisor;
    is_supervisor(a)
        .cmp(&is_supervisor(b))
        .then(a.load.activations.cmp(&b.load.activations))
        .then(a.load.calls_per_sec.total_cmp(&b.load.calls_per_sec))
        .then_with(|| a.incarnation.cmp(&b.incarnation))
}
