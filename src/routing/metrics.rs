//! Prometheus metrics of one client: routing decisions, breakers, retries and hops.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

use super::balancer::Decision;
use super::breaker::BreakerState;
use super::retry::Failure;

/// Metrics of one [`GristmillClient`](super::GristmillClient), registered in its own registry.
#[derive(Clone, Debug)]
pub struct RoutingMetrics {
    registry: Registry,
    decisions: IntCounterVec,
    breaker_transitions: IntCounterVec,
    attempt_failures: IntCounterVec,
    retries: IntCounterVec,
    retries_denied: IntCounterVec,
    hops: Histogram,
    gateways: IntGauge,
}

/// Outcome of a retried attempt, as the `outcome` label of `gristmill_client_retries_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RetryOutcome {
    /// The retry returned a reply.
    Succeeded,
    /// The retry failed too.
    Failed,
}

/// The reason a failed attempt was not retried, as the `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RetryDenied {
    /// The call may have run and its method is not idempotent.
    MayHaveRun,
    /// Every node would return the same.
    Pointless,
    /// The retry budget had no token.
    Budget,
    /// The call used all its attempts or its deadline.
    Exhausted,
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter =
        IntCounterVec::new(Opts::new(name, help), labels).expect("metric options are valid");
    register(registry, counter)
}

impl RoutingMetrics {
    /// Creates the metrics in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let hops = HistogramOpts::new(
            "gristmill_client_call_hops",
            "Forwards between nodes per successful call",
        )
        .buckets(vec![0.0, 1.0, 2.0, 3.0, 4.0, 8.0]);
        Self {
            decisions: counter_vec(
                &registry,
                "gristmill_client_routing_decisions_total",
                "Attempts sent to each gateway, by strategy and reason",
                &["strategy", "node", "reason"],
            ),
            breaker_transitions: counter_vec(
                &registry,
                "gristmill_client_breaker_transitions_total",
                "Circuit breaker state changes, by gateway and new state",
                &["node", "state"],
            ),
            attempt_failures: counter_vec(
                &registry,
                "gristmill_client_attempt_failures_total",
                "Failed attempts, by gateway and kind of failure",
                &["node", "failure"],
            ),
            retries: counter_vec(
                &registry,
                "gristmill_client_retries_total",
                "Retried attempts, by outcome",
                &["outcome"],
            ),
            retries_denied: counter_vec(
                &registry,
                "gristmill_client_retries_denied_total",
                "Failed attempts that were not retried, by reason",
                &["reason"],
            ),
            hops: register(
                &registry,
                Histogram::with_opts(hops).expect("metric options are valid"),
            ),
            gateways: register(
                &registry,
                IntGauge::new(
                    "gristmill_client_gateways",
                    "Active nodes the client sends calls to",
                )
                .expect("metric name and help are valid"),
            ),
            registry,
        }
    }

    /// Returns the registry that contains these metrics, to scrape or to merge into another.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(super) fn record_decision(&self, decision: &Decision) {
        self.decisions
            .with_label_values(&[
                decision.strategy.as_str(),
                &decision.node,
                decision.reason.as_str(),
            ])
            .inc();
    }

    pub(super) fn record_breaker(&self, node: &str, state: BreakerState) {
        self.breaker_transitions
            .with_label_values(&[node, state.as_str()])
            .inc();
    }

    pub(super) fn record_failure(&self, node: &str, failure: Failure) {
        self.attempt_failures
            .with_label_values(&[node, failure.as_str()])
            .inc();
    }

    pub(super) fn record_retry(&self, outcome: RetryOutcome) {
        let label = match outcome {
            RetryOutcome::Succeeded => "succeeded",
            RetryOutcome::Failed => "failed",
        };
        self.retries.with_label_values(&[label]).inc();
    }

    pub(super) fn record_retry_denied(&self, reason: RetryDenied) {
        let label = match reason {
            RetryDenied::MayHaveRun => "may_have_run",
            RetryDenied::Pointless => "pointless",
            RetryDenied::Budget => "budget",
            RetryDenied::Exhausted => "exhausted",
        };
        self.retries_denied.with_label_values(&[label]).inc();
    }

    pub(super) fn record_hops(&self, hops: u32) {
        self.hops.observe(f64::from(hops));
    }

    pub(super) fn set_gateways(&self, count: usize) {
        self.gateways.set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}

impl Default for RoutingMetrics {
    fn default() -> Self {
        Self::new()
    }
}
