//! The metrics one node exports: activations, calls, mailboxes, members and rejected input.

use std::time::Duration;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use super::AtomicHistogram;
use crate::grain::CallError;
use crate::membership::{MemberInfo, NodeLoad, NodeState};

/// Latency buckets in seconds, from 50 µs to 10 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// The metrics of one node, registered in their own registry.
pub struct NodeMetrics {
    registry: Registry,
    /// Activations hosted on the node.
    pub activations: IntGauge,
    /// Activations started since the node started.
    pub activations_started: IntCounter,
    /// Activations stopped since the node started.
    pub activations_stopped: IntCounter,
    /// Calls that entered through this node, by outcome.
    pub calls: IntCounterVec,
    /// The `ok` series of `calls`, looked up once rather than per call.
    calls_ok: IntCounter,
    /// Latency of calls that entered through this node.
    pub call_duration: AtomicHistogram,
    /// Duration of grain turns run on this node.
    pub turn_duration: AtomicHistogram,
    /// Messages queued in all activation mailboxes.
    pub mailbox_depth_total: IntGauge,
    /// Messages queued in the fullest activation mailbox.
    pub mailbox_depth_max: IntGauge,
    /// Grain calls served per second, as last gossiped.
    pub calls_per_sec: Gauge,
    /// Members by lifecycle state, as this node sees them.
    pub members: IntGaugeVec,
    /// Cluster connections closed before they authenticated, by `reason`: the handshake
    /// failed (random bytes, a wrong cookie, an oversized frame), timed out, or too many
    /// connections were waiting to authenticate.
    pub rejected_frames: IntCounterVec,
    /// Gossip datagrams that could not be decoded.
    pub rejected_datagrams: IntCounter,
    /// Quorum sweeps of the membership lease started.
    pub quorum_sweeps: IntCounter,
    /// Times the node turned to the minority side, which fences its turns.
    pub minority_fences: IntCounter,
    /// Members this node declared down because members voted them unreachable.
    pub unreachable_declared_down: IntCounter,
    /// Cluster messages that could not be decoded.
    pub rejected_messages: IntCounter,
    /// Calls forwarded to another node.
    pub forwards: IntCounter,
    /// Calls from peers for which this node sent a reply envelope.
    pub inbound_call_replies: IntCounter,
    /// One-way grain messages sent with `GrainRef::send`, from this node.
    pub oneway_sent: IntCounter,
    /// One-way grain messages received from peers.
    pub oneway_received: IntCounter,
    /// Directory entries handed off to new partition owners.
    pub directory_handoffs: IntCounter,
    /// Migrations started on this node, by outcome.
    pub migrations: IntCounterVec,
    /// Duration of migrations started on this node.
    pub migration_duration: Histogram,
    /// Duration of drains of this node.
    pub drain_duration: Histogram,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::new(name, help).expect("metric name and help are valid");
    registry
        .register(Box::new(counter.clone()))
        .expect("metric names are unique");
    counter
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).expect("metric name and help are valid");
    registry
        .register(Box::new(gauge.clone()))
        .expect("metric names are unique");
    gauge
}

/// Registers a latency histogram for the call path, which takes durations in nanoseconds and
/// exports seconds.
fn call_path_histogram(registry: &Registry, name: &str, help: &str) -> AtomicHistogram {
    let histogram =
        AtomicHistogram::new(name, help, &LATENCY_BUCKETS, 1e-9).expect("metric options are valid");
    registry
        .register(Box::new(histogram.clone()))
        .expect("metric names are unique");
    histogram
}

fn histogram(registry: &Registry, name: &str, help: &str) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    let histogram = Histogram::with_opts(opts).expect("metric options are valid");
    registry
        .register(Box::new(histogram.clone()))
        .expect("metric names are unique");
    histogram
}

impl NodeMetrics {
    /// Creates the metrics of the node `node_name`, labelled with a constant `node` label.
    pub fn new(node_name: &str) -> Self {
        let labels = std::iter::once(("node".to_string(), node_name.to_string())).collect();
        let registry = Registry::new_custom(None, Some(labels)).expect("constant labels are valid");
        let calls = IntCounterVec::new(
            Opts::new(
                "gristmill_calls_total",
                "Grain calls that entered through this node, by outcome",
            ),
            &["outcome"],
        )
        .expect("metric options are valid");
        registry
            .register(Box::new(calls.clone()))
            .expect("metric names are unique");
        let members = IntGaugeVec::new(
            Opts::new(
                "gristmill_members",
                "Members by lifecycle state, as this node sees them",
            ),
            &["state"],
        )
        .expect("metric options are valid");
        registry
            .register(Box::new(members.clone()))
            .expect("metric names are unique");
        let calls_per_sec = Gauge::new(
            "gristmill_calls_per_second",
            "Grain calls served per second",
        )
        .expect("metric name and help are valid");
        registry
            .register(Box::new(calls_per_sec.clone()))
            .expect("metric names are unique");
        Self {
            activations: gauge(
                &registry,
                "gristmill_activations",
                "Activations hosted on this node",
            ),
            activations_started: counter(
                &registry,
                "gristmill_activations_started_total",
                "Activations started",
            ),
            activations_stopped: counter(
                &registry,
                "gristmill_activations_stopped_total",
                "Activations stopped",
            ),
            call_duration: call_path_histogram(
                &registry,
                "gristmill_call_duration_seconds",
                "Latency of calls that entered through this node, in seconds",
            ),
            turn_duration: call_path_histogram(
                &registry,
                "gristmill_turn_duration_seconds",
                "Duration of grain turns on this node, in seconds",
            ),
            mailbox_depth_total: gauge(
                &registry,
                "gristmill_mailbox_depth_total",
                "Messages queued in all activation mailboxes",
            ),
            mailbox_depth_max: gauge(
                &registry,
                "gristmill_mailbox_depth_max",
                "Messages queued in the fullest activation mailbox",
            ),
            rejected_frames: {
                let rejected = IntCounterVec::new(
                    Opts::new(
                        "gristmill_rejected_frames_total",
                        "Cluster connections closed before authenticating, by reason: handshake_failed (malformed or oversized frames, wrong cookies), handshake_timeout, pending_limit",
                    ),
                    &["reason"],
                )
                .expect("metric options are valid");
                registry
                    .register(Box::new(rejected.clone()))
                    .expect("metric names are unique");
                rejected
            },
            rejected_datagrams: counter(
                &registry,
                "gristmill_rejected_datagrams_total",
                "Gossip datagrams that could not be decoded",
            ),
            quorum_sweeps: counter(
                &registry,
                "gristmill_quorum_sweeps_total",
                "Quorum sweeps started: rounds of lease probes to every live member after a failed probe or a suspicion of this node",
            ),
            minority_fences: counter(
                &registry,
                "gristmill_minority_fences_total",
                "Times the node turned to the minority side of a partition, which fences its turns",
            ),
            unreachable_declared_down: counter(
                &registry,
                "gristmill_unreachable_declared_down_total",
                "Members this node declared down because enough members had no cluster session to them for membership.unreachable_after",
            ),
            rejected_messages: counter(
                &registry,
                "gristmill_rejected_messages_total",
                "Cluster messages that could not be decoded",
            ),
            forwards: counter(
                &registry,
                "gristmill_forwarded_calls_total",
                "Calls forwarded to another node",
            ),
            inbound_call_replies: counter(
                &registry,
                "gristmill_inbound_call_replies_total",
                "Calls from peers that this node answered with a reply",
            ),
            oneway_sent: counter(
                &registry,
                "gristmill_oneway_sent_total",
                "One-way grain messages sent from this node",
            ),
            oneway_received: counter(
                &registry,
                "gristmill_oneway_received_total",
                "One-way grain messages received from peers",
            ),
            directory_handoffs: counter(
                &registry,
                "gristmill_directory_handoffs_total",
                "Directory entries handed off to new partition owners",
            ),
            migrations: {
                let migrations = IntCounterVec::new(
                    Opts::new(
                        "gristmill_migrations_total",
                        "Migrations started on this node, by outcome",
                    ),
                    &["outcome"],
                )
                .expect("metric options are valid");
                registry
                    .register(Box::new(migrations.clone()))
                    .expect("metric names are unique");
                migrations
            },
            migration_duration: histogram(
                &registry,
                "gristmill_migration_duration_seconds",
                "Duration of migrations started on this node, in seconds",
            ),
            drain_duration: {
                let opts = HistogramOpts::new(
                    "gristmill_drain_duration_seconds",
                    "Duration of drains of this node, in seconds",
                )
                .buckets(vec![
                    0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                ]);
                let histogram = Histogram::with_opts(opts).expect("metric options are valid");
                registry
                    .register(Box::new(histogram.clone()))
                    .expect("metric names are unique");
                histogram
            },
            calls_ok: calls.with_label_values(&["ok"]),
            calls,
            calls_per_sec,
            members,
            registry,
        }
    }

    /// Returns the node's registry, in which other components of the node register the
    /// metrics they own, so `/metrics` serves them.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records a call that entered through this node.
    pub fn record_call(&self, elapsed: Duration, error: Option<&CallError>) {
        match error {
            None => self.calls_ok.inc(),
            Some(error) => self.calls.with_label_values(&[error.outcome_label()]).inc(),
        }
        self.call_duration.observe_duration(elapsed);
    }

    /// Records the node's sampled load.
    pub fn set_load(&self, load: &NodeLoad) {
        self.activations
            .set(i64::try_from(load.activations).unwrap_or(i64::MAX));
        self.mailbox_depth_total
            .set(i64::try_from(load.mailbox_depth_total).unwrap_or(i64::MAX));
        self.mailbox_depth_max
            .set(i64::try_from(load.mailbox_depth_max).unwrap_or(i64::MAX));
        self.calls_per_sec.set(load.calls_per_sec);
    }

    /// Records the members by state.
    pub fn set_members(&self, members: &[MemberInfo]) {
        for state in NodeState::ALL {
            let count = members.iter().filter(|m| m.state == state).count();
            self.members
                .with_label_values(&[state.as_str()])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Raises `counter` to `total`, for counts kept outside Prometheus.
    pub fn raise_to(counter: &IntCounter, total: u64) {
        let current = counter.get();
        if total > current {
            counter.inc_by(total - current);
        }
    }

    /// Returns the metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut buffer = Vec::new();
        let families = self.registry.gather();
        if let Err(error) = TextEncoder::new().encode(&families, &mut buffer) {
            tracing::warn!(%error, "cannot encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}
