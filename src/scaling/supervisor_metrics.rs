//! Metrics of the scaling supervisor: decisions, failures, action and drain durations.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::scaling::decision::{ActionOutcome, Decision};

/// Buckets of action and drain durations in seconds, from 100 ms to 30 minutes.
const DURATION_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 600.0, 1800.0,
];

/// The supervisor's metrics, in a registry of their own labelled with the node name.
///
/// NOTE: `/metrics` serves only the node registry; until it also appends [`Self::encode`],
/// these metrics are visible only through this type.
pub struct ScalingMetrics {
    registry: Registry,
    /// Decisions that chose an action, by `direction` and `outcome` (`started`, `succeeded`,
    /// `failed`).
    pub decisions: IntCounterVec,
    /// Failed scaling steps by `reason`: `orchestrator`, `drain_failed`, `drain_timeout`,
    /// `lease_lost`.
    pub failures: IntCounterVec,
    /// Time from the start of an action to its outcome.
    pub action_duration: Histogram,
    /// Time to drain one node for scale-in.
    pub drain_duration: Histogram,
    /// Recommendations of each policy, by `policy` and `recommendation` (`scale_out`,
    /// `scale_in`, `none`).
    pub evaluations: IntCounterVec,
    /// Times this node's supervisor took the register over.
    pub takeovers: IntCounter,
}

impl ScalingMetrics {
    /// Creates the metrics of the supervisor of `node_name`.
    pub fn new(node_name: &str) -> Self {
        let labels = std::iter::once(("node".to_string(), node_name.to_string())).collect();
        let registry = Registry::new_custom(None, Some(labels)).expect("constant labels are valid");
        let decisions = counter_vec(
            &registry,
            "gristmill_scaling_decisions_total",
            "Scaling decisions that chose an action, by direction and outcome",
            &["direction", "outcome"],
        );
        let failures = counter_vec(
            &registry,
            "gristmill_scaling_failures_total",
            "Failed scaling steps, by reason",
            &["reason"],
        );
        let evaluations = counter_vec(
            &registry,
            "gristmill_scaling_policy_evaluations_total",
            "Policy recommendations, by policy and recommended direction",
            &["policy", "recommendation"],
        );
        let action_duration = histogram(
            &registry,
            "gristmill_scaling_duration_seconds",
            "Time from the start of a scaling action to its outcome, in seconds",
        );
        let drain_duration = histogram(
            &registry,
            "gristmill_drain_duration_seconds",
            "Time to drain one node before removing it, in seconds",
        );
        let takeovers = IntCounter::new(
            "gristmill_scaling_takeovers_total",
            "Times this node's supervisor took over acting for the cluster",
        )
        .expect("metric name and help are valid");
        registry
            .register(Box::new(takeovers.clone()))
            .expect("metric names are unique");
        Self {
            registry,
            decisions,
            failures,
            action_duration,
            drain_duration,
            evaluations,
            takeovers,
        }
    }

    /// Counts a failed step.
    pub fn failure(&self, reason: &str) {
        self.failures.with_label_values(&[reason]).inc();
    }

    /// Counts a recorded decision: its policies' recommendations and, if it acts, its start.
    pub fn record_decision(&self, decision: &Decision) {
        for recommendation in &decision.recommendations {
            let direction = crate::scaling::Direction::between(
                recommendation.current_nodes,
                recommendation.desired_nodes,
            )
            .map_or("none", |direction| direction.as_str());
            self.evaluations
                .with_label_values(&[recommendation.policy.as_str(), direction])
                .inc();
        }
        if let Some((direction, _)) = decision.action.change() {
            self.decisions
                .with_label_values(&[direction.as_str(), "started"])
                .inc();
        }
    }

    /// Counts the outcome of a decision's action.
    pub fn record_outcome(&self, decision: &Decision) {
        let Some((direction, _)) = decision.action.change() else {
            return;
        };
        let outcome = match decision.outcome {
            Some(ActionOutcome::Succeeded) => "succeeded",
            Some(ActionOutcome::Failed { .. }) => "failed",
            None => return,
        };
        self.decisions
            .with_label_values(&[direction.as_str(), outcome])
            .inc();
        if let Some(duration) = decision.duration {
            self.action_duration.observe(duration.as_secs_f64());
        }
    }

    /// Returns the metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "cannot encode scaling metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter =
        IntCounterVec::new(Opts::new(name, help), labels).expect("metric options are valid");
    registry
        .register(Box::new(counter.clone()))
        .expect("metric names are unique");
    counter
}

fn histogram(registry: &Registry, name: &str, help: &str) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec());
    let histogram = Histogram::with_opts(opts).expect("metric options are valid");
    registry
        .register(Box::new(histogram.clone()))
        .expect("metric names are unique");
    histogram
}
