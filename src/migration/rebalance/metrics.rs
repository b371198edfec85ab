//! The rebalancer's Prometheus metrics: rounds run and moves by outcome.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use super::history::MoveOutcome;

/// Counters of one node's rebalancer.
#[derive(Clone, Debug)]
pub struct RebalancerMetrics {
    /// Rounds that ran the planner.
    pub rounds: IntCounter,
    /// Moves the rebalancer started, by outcome (`succeeded` or a migration failure label).
    pub moves: IntCounterVec,
}

impl RebalancerMetrics {
    /// Creates the counters, registered nowhere yet.
    pub fn new() -> Self {
        let rounds = IntCounter::new(
            "gristmill_rebalancer_rounds_total",
            "Rebalancer rounds that ran the planner on this node",
        )
        .expect("metric name and help are valid");
        let moves = IntCounterVec::new(
            Opts::new(
                "gristmill_rebalancer_moves_total",
                "Grain migrations the rebalancer started on this node, by outcome",
            ),
            &["outcome"],
        )
        .expect("metric options are valid");
        Self { rounds, moves }
    }

    /// Registers the counters in `registry`. Fails if the registry already has them.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.rounds.clone()))?;
        registry.register(Box::new(self.moves.clone()))
    }

    /// Counts one move that ended with `outcome`.
    pub fn record_move(&self, outcome: &MoveOutcome) {
        self.moves.with_label_values(&[outcome.label()]).inc();
    }
}

impl Default for RebalancerMetrics {
    fn default() -> Self {
        Self::new()
    }
}
