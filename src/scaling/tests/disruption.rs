//! Nodes the platform stops for its own reasons: recorded once, and not fought.

use std::collections::BTreeSet;
use std::num::NonZeroU32;

use crate::clock::Millis;
use crate::membership::NodeState;
use crate::scaling::config::ScalingConfig;
use crate::scaling::decision::{Action, AppliedLimit, Trigger};
use crate::scaling::disruption::RETURN_TIMEOUT;
use crate::scaling::evaluator::ScalingCore;
use crate::scaling::load::{ClusterSnapshot, NodeSnapshot};

use super::{cpu_config, nodes_at_cpu, snapshot};

fn config() -> ScalingConfig {
    ScalingConfig {
        min_nodes: NonZeroU32::new(3).unwrap(),
        ..cpu_config()
    }
}

/// Three nodes at the target CPU, with `node-2` in `state`, or missing for `None`.
fn cluster(node_2: Option<NodeState>) -> ClusterSnapshot {
    let mut nodes: Vec<NodeSnapshot> = nodes_at_cpu(3, 50.0);
    match node_2 {
        Some(state) => nodes[2].state = state,
        None => {
            nodes.pop();
        }
    }
    snapshot(nodes)
}

fn reported(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

#[test]
fn disruption_is_recorded_once() {
    let mut core = ScalingCore::new(config()).unwrap();
    let evicted = reported(&["node-2"]);
    let draining = cluster(Some(NodeState::Draining));

    let decision = core
        .handle_disruptions(
            draining.clone(),
            &evicted,
            "deleted by Kubernetes",
            Millis(0),
        )
        .expect("a first report is recorded");
    assert_eq!(decision.trigger, Trigger::Disruption);
    assert_eq!(decision.action, Action::None);
    assert_eq!(
        decision.limits,
        [AppliedLimit::Disruption {
            nodes: vec!["node-2".into()]
        }]
    );
    assert!(decision.summary.contains("node-2"), "{}", decision.summary);
    assert!(
        decision.summary.contains("deleted by Kubernetes"),
        "{}",
        decision.summary
    );
    assert!(decision.id.0 > 0, "the decision is in the history");

    let again =
        core.handle_disruptions(draining, &evicted, "deleted by Kubernetes", Millis(15_000));
    assert!(again.is_none(), "a node is recorded once per disruption");
}

#[test]
fn disrupted_node_is_not_replaced() {
    // Goal: with min_nodes 3, losing node-2 to an eviction would make the evaluator add a
    // node. While node-2 is disrupted and until it is Active again, nothing is added.
    // Method: the same snapshots with and without the report, on two cores.
    let mut control = ScalingCore::new(config()).unwrap();
    let below_min = control.handle_evaluation(cluster(Some(NodeState::Draining)), Millis(0));
    assert_eq!(
        below_min.action,
        Action::ScaleOut { nodes: 1 },
        "without the report the evaluator replaces the node"
    );

    let mut core = ScalingCore::new(config()).unwrap();
    let evicted = reported(&["node-2"]);
    let steps = [
        (cluster(Some(NodeState::Draining)), evicted.clone(), 0),
        (cluster(None), evicted.clone(), 15),
        // The pod is gone and no longer reported, but its replacement has not joined yet.
        (cluster(None), reported(&[]), 30),
        (cluster(Some(NodeState::Joining)), reported(&[]), 45),
    ];
    for (snapshot, report, second) in steps {
        let now = Millis(second * 1_000);
        core.handle_disruptions(snapshot.clone(), &report, "deleted by Kubernetes", now);
        let decision = core.handle_evaluation(snapshot, now);
        assert_eq!(decision.action, Action::None, "at {second} s");
        assert!(
            decision
                .limits
                .iter()
                .any(|limit| matches!(limit, AppliedLimit::Disruption { .. })),
            "at {second} s the disruption must be the recorded reason: {:?}",
            decision.limits
        );
    }

    let back = cluster(Some(NodeState::Active));
    core.handle_disruptions(
        back.clone(),
        &reported(&[]),
        "deleted by Kubernetes",
        Millis(60_000),
    );
    let decision = core.handle_evaluation(back, Millis(60_000));
    assert_eq!(decision.action, Action::None);
    assert!(
        !decision
            .limits
            .iter()
            .any(|limit| matches!(limit, AppliedLimit::Disruption { .. })),
        "the hold ends once node-2 is Active again: {:?}",
        decision.limits
    );
}

#[test]
fn hold_ends_after_return_timeout() {
    let mut core = ScalingCore::new(config()).unwrap();
    let gone = cluster(None);
    core.handle_disruptions(
        gone.clone(),
        &reported(&["node-2"]),
        "deleted by Kubernetes",
        Millis(0),
    );
    let timeout_ms = u64::try_from(RETURN_TIMEOUT.as_millis()).unwrap();

    let before = Millis(timeout_ms - 1);
    core.handle_disruptions(
        gone.clone(),
        &reported(&[]),
        "deleted by Kubernetes",
        before,
    );
    let held = core.handle_evaluation(gone.clone(), before);
    assert_eq!(held.action, Action::None);

    let after = Millis(timeout_ms);
    core.handle_disruptions(gone.clone(), &reported(&[]), "deleted by Kubernetes", after);
    let decision = core.handle_evaluation(gone, after);
    assert_eq!(
        decision.action,
        Action::ScaleOut { nodes: 1 },
        "a node that never came back is replaced after the timeout"
    );
}
