//! Tests of the KEDA report: the metric and the activity rule read from dry runs of the core.

use crate::clock::Millis;
use crate::membership::NodeLoad;
use crate::scaling::evaluator::ScalingCore;
use crate::scaling::keda::{ScalerMetric, ScalerReading};

use super::{cpu_config, nodes_at_cpu, snapshot};

#[test]
fn readings_follow_dry_run_counts() {
    // Goal: `desired_nodes` reports the count after stabilization, `recommended_nodes` the
    // policies' count before it, and activity follows load or a wanted scale-out.
    // Method: dry runs of a fresh core with one CPU policy at 50 % per node; its 30 s
    // scale-out window holds a fresh core at the current count.
    let core = ScalingCore::new(cpu_config()).expect("test config is valid");
    let idle = |count: usize, cpu_percent: f64| {
        let mut nodes = nodes_at_cpu(count, cpu_percent);
        for node in &mut nodes {
            node.load = NodeLoad {
                cpu_percent,
                ..NodeLoad::default()
            };
        }
        nodes
    };
    // (nodes, metric, expected count, expected active)
    let cases = [
        (nodes_at_cpu(2, 100.0), ScalerMetric::DesiredNodes, 2, true),
        (
            nodes_at_cpu(2, 100.0),
            ScalerMetric::RecommendedNodes,
            4,
            true,
        ),
        (idle(2, 50.0), ScalerMetric::DesiredNodes, 2, false),
        (idle(2, 50.0), ScalerMetric::RecommendedNodes, 2, false),
        (idle(2, 100.0), ScalerMetric::DesiredNodes, 2, false),
        (idle(2, 100.0), ScalerMetric::RecommendedNodes, 4, true),
    ];
    for (nodes, metric, count, active) in cases {
        let label = format!("{} nodes, {metric}", nodes.len());
        let decision = core.dry_run(snapshot(nodes), Millis(1_000));
        let reading = ScalerReading::from_decision(&decision, metric);
        assert_eq!(reading.nodes, count, "{label}: count");
        assert_eq!(reading.active, active, "{label}: active");
    }
}
