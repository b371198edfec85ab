//! Choice of the nodes to drain on scale-in.

use crate::membership::NodeState;
use crate::scaling::load::ClusterSnapshot;
use crate::scaling::orchestrator::{BoxFuture, Orchestrator, OrchestratorError};
use crate::scaling::removal::choose_removal;

use super::{active, incarnation, snapshot};

fn names(snapshot: &ClusterSnapshot, count: u32) -> Vec<String> {
    let choice = choose_removal(snapshot, count).expect("a node can be chosen");
    choice.nodes.into_iter().map(|node| node.name).collect()
}

#[test]
fn removal_prefers_cheapest_to_drain() {
    let mut busy_calls = active("node-3", 5, 0.0);
    busy_calls.load.calls_per_sec = 90.0;
    let mut quiet_calls = active("node-4", 5, 0.0);
    quiet_calls.load.calls_per_sec = 1.0;
    let mut draining = active("node-5", 0, 0.0);
    draining.state = NodeState::Draining;
    let cluster = snapshot(vec![
        active("node-0", 0, 0.0), // the supervisor, emptiest of all
        active("node-1", 50, 0.0),
        active("node-2", 20, 0.0),
        busy_calls,
        quiet_calls,
        draining,
    ]);
    // (count, expected names in order)
    let cases: [(u32, &[&str]); 4] = [
        (1, &["node-4"]),
        (2, &["node-4", "node-3"]),
        (4, &["node-4", "node-3", "node-2", "node-1"]),
        (5, &["node-4", "node-3", "node-2", "node-1", "node-0"]),
    ];
    for (count, expected) in cases {
        assert_eq!(names(&cluster, count), expected, "count {count}");
    }
}

#[test]
fn removal_takes_supervisor_when_alone() {
    let cluster = snapshot(vec![active("node-0", 10, 0.0)]);
    assert_eq!(names(&cluster, 1), ["node-0"]);
}

#[test]
fn removal_follows_forced_order() {
    let mut cluster = snapshot(vec![
        active("pod-0", 0, 0.0),
        active("pod-1", 0, 0.0),
        active("pod-2", 900, 0.0),
    ]);
    cluster.forced_removal_order = vec!["pod-2".into(), "pod-1".into()];
    assert_eq!(names(&cluster, 1), ["pod-2"]);
    assert_eq!(names(&cluster, 2), ["pod-2", "pod-1"]);

    cluster.forced_removal_order = vec!["pod-7".into()];
    let error = choose_removal(&cluster, 1).unwrap_err();
    assert!(error.contains("pod-7"), "{error}");
}

/// Removes the highest ordinal first, as a StatefulSet does.
struct HighestOrdinal;

impl Orchestrator for HighestOrdinal {
    fn kind(&self) -> &'static str {
        "test"
    }
    fn current_nodes(&self) -> BoxFuture<'_, Result<u32, OrchestratorError>> {
        unimplemented!("not used by the core")
    }
    fn add_nodes(&self, _count: u32) -> BoxFuture<'_, Result<Vec<String>, OrchestratorError>> {
        unimplemented!("not used by the core")
    }
    fn remove_node<'a>(&'a self, _name: &'a str) -> BoxFuture<'a, Result<(), OrchestratorError>> {
        unimplemented!("not used by the core")
    }
    fn forced_removal_candidate(&self, nodes: &[String]) -> Option<String> {
        nodes.iter().max().cloned()
    }
}

#[test]
fn forced_order_comes_from_orchestrator() {
    let mut joining = active("pod-3", 0, 0.0);
    joining.state = NodeState::Joining;
    let cluster = snapshot(vec![
        active("pod-1", 0, 0.0),
        active("pod-0", 0, 0.0),
        active("pod-2", 0, 0.0),
        joining,
    ])
    .with_forced_removal_order(&HighestOrdinal);
    assert_eq!(cluster.forced_removal_order, ["pod-2", "pod-1", "pod-0"]);
    assert_eq!(cluster.supervisor, incarnation("node-0"));
}
