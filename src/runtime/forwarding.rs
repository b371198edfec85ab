//! Glue between the call path and the [`PeerTable`]: breaker checks around forwarded calls,
//! the node choice for spread stateless worker calls, and their metrics and logs.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, Opts, Registry};
use rand::Rng;

use super::node::Node;
use super::router::{CheckedMethod, InvokeReply};
use crate::clock::Millis;
use crate::grain::{CallError, GrainId, Payload, PayloadFormat};
use crate::membership::{NodeId, NodeState};
use crate::metrics::AtomicHistogram;
use crate::routing::{BreakerOpen, BreakerState, ForwardingConfig, PeerOutcome, PeerTable};
use crate::transport::Route;

/// Upper bounds of the forwarded-hops histogram.
const HOP_BUCKETS: [f64; 5] = [0.0, 1.0, 2.0, 3.0, 4.0];

/// Forwarding state of one node, shared by every call.
pub(crate) struct Forwarding {
    table: Mutex<PeerTable>,
    metrics: ForwardingMetrics,
}

struct ForwardingMetrics {
    decisions: IntCounterVec,
    breaker_changes: IntCounterVec,
    rejected: IntCounterVec,
    hops: AtomicHistogram,
}

impl ForwardingMetrics {
    fn new(registry: &Registry) -> Self {
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("metric name and labels are valid");
            registry
                .register(Box::new(vec.clone()))
                .expect("metric names are unique");
            vec
        };
        let hops = AtomicHistogram::new(
            "gristmill_call_hops",
            "Forwards between nodes per call that this node received and served",
            &HOP_BUCKETS,
            1.0,
        )
        .expect("metric options are valid");
        registry
            .register(Box::new(hops.clone()))
            .expect("metric names are unique");
        Self {
            decisions: counter_vec(
                "gristmill_worker_routing_decisions_total",
                "Spread stateless worker calls by strategy and chosen node",
                &["strategy", "target"],
            ),
            breaker_changes: counter_vec(
                "gristmill_peer_breaker_transitions_total",
                "Circuit breaker state changes towards a peer, by peer and new state",
                &["peer", "state"],
            ),
            rejected: counter_vec(
                "gristmill_peer_breaker_rejections_total",
                "Forwards rejected at once because the peer's circuit breaker was open",
                &["peer"],
            ),
            hops,
        }
    }
}

impl Forwarding {
    /// Creates the forwarding state and registers its metrics in `registry`.
    pub(crate) fn new(config: ForwardingConfig, registry: &Registry) -> Self {
        Self {
            table: Mutex::new(PeerTable::new(config)),
            metrics: ForwardingMetrics::new(registry),
        }
    }

    /// Returns whether calls to `grain_type` are balanced over the Active nodes.
    pub(crate) fn is_spread_worker(&self, grain_type: &str) -> bool {
        self.lock().config().spread_workers.contains(grain_type)
    }

    /// Admits a call to `peer` at `now`, or returns the error that the caller gets at once
    /// because the peer's breaker is open.
    pub(crate) fn admit(
        &self,
        peer: &NodeId,
        grain: &GrainId,
        now: Millis,
    ) -> Result<(), CallError> {
        let admitted = self.lock().admit(&peer.name, peer.boot_id, now);
        match admitted {
            Ok(admitted) => {
                self.report_change(&peer.name, admitted.breaker_change);
                Ok(())
            }
            Err(open) => {
                self.metrics.rejected.with_label_values(&[&peer.name]).inc();
                let threshold = self.lock().config().breaker.failure_threshold;
                Err(breaker_open_error(peer, grain, open, threshold, now))
            }
        }
    }

    /// Records how an admitted call to the node `peer` ended at `now`.
    pub(crate) fn finish(&self, peer: &str, outcome: PeerOutcome, now: Millis) {
        let change = self.lock().handle_outcome(peer, outcome, now);
        self.report_change(peer, change);
    }

    /// Picks and admits the node for a spread worker call of `grain_type` among `nodes` (name
    /// and boot id of each Active node), avoiding the nodes in `avoid` where possible.
    pub(crate) fn pick_worker_node(
        &self,
        grain_type: &str,
        nodes: &[(String, u64)],
        avoid: &[String],
        now: Millis,
        rng: &mut impl Rng,
    ) -> Option<String> {
        let mut table = self.lock();
        let strategy = table.config().strategy_for(grain_type);
        let (node, admitted) = table.pick_worker_node(grain_type, nodes, avoid, now, rng)?;
        drop(table);
        self.metrics
            .decisions
            .with_label_values(&[strategy.as_str(), node.as_str()])
            .inc();
        self.report_change(&node, admitted.breaker_change);
        Some(node)
    }

    /// Forgets peers that are no longer members.
    pub(crate) fn retain(&self, is_member: impl FnMut(&str) -> bool) {
        self.lock().retain(is_member);
    }

    /// Counts the forwards that a call served by this node took.
    pub(crate) fn record_hops(&self, hops: u32) {
        self.metrics.hops.observe_units(u64::from(hops));
    }

    fn report_change(&self, peer: &str, change: Option<BreakerState>) {
        let Some(state) = change else {
            return;
        };
        self.metrics
            .breaker_changes
            .with_label_values(&[peer, state.as_str()])
            .inc();
        match state {
            BreakerState::Open { .. } => {
                tracing::warn!(peer, state = state.as_str(), "peer circuit breaker opened");
            }
            _ => tracing::info!(peer, state = state.as_str(), "peer circuit breaker changed"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PeerTable> {
        self.table.lock().expect("peer table lock poisoned")
    }
}

/// Builds the error of a call rejected by `peer`'s open breaker. Nothing was sent.
fn breaker_open_error(
    peer: &NodeId,
    grain: &GrainId,
    open: BreakerOpen,
    threshold: u32,
    now: Millis,
) -> CallError {
    let detail = match open.until {
        Some(until) => format!(
            "circuit breaker open after {threshold} consecutive failures (no connection or no \
             reply by the deadline); a probe call may pass in {} ms",
            until.saturating_since(now).as_millis()
        ),
        None => "circuit breaker half-open; a probe call is in flight".to_owned(),
    };
    CallError::NodeUnavailable {
        node: peer.name.to_string(),
        grain: grain.clone(),
        detail,
        before_send: true,
    }
}

/// Classifies a forwarded call's end for the peer's breaker. A reply of any kind shows that
/// the peer is alive, and no connection or no reply by the deadline counts against it.
pub(crate) fn peer_outcome(
    result: &Result<crate::transport::CallReply, crate::transport::PeerError>,
    rtt: Duration,
) -> PeerOutcome {
    match result {
        Ok(_) => PeerOutcome::Replied { rtt },
        Err(_) => PeerOutcome::NodeFailure { rtt },
    }
}

impl Node {
    /// Runs a call of a spread stateless worker type on the Active node that the type's
    /// strategy picks, this one included. A node that cannot be reached before the call is sent
    /// is avoided and another is picked; with no eligible node the call runs here.
    pub(super) async fn invoke_spread_worker(
        &self,
        grain: &GrainId,
        checked: CheckedMethod,
        payload: Payload,
        deadline: Instant,
    ) -> Result<InvokeReply, CallError> {
        let method = checked.id.name;
        let me = self.inner.id.name.clone();
        let active: Vec<NodeId> = self
            .members()
            .into_iter()
            .filter(|member| member.state == NodeState::Active)
            .map(|member| member.id)
            .collect();
        let nodes: Vec<(String, u64)> = active
            .iter()
            .map(|id| (id.name.to_string(), id.boot_id))
            .collect();
        let mut avoid: Vec<String> = Vec::new();
        let mut payload = Some(payload);
        let mut encoded: Option<(PayloadFormat, Vec<u8>)> = None;
        for _ in 0..=nodes.len() {
            let picked = {
                let mut rng = self.inner.rng.lock().expect("rng lock poisoned");
                self.inner.forwarding.pick_worker_node(
                    &grain.grain_type,
                    &nodes,
                    &avoid,
                    self.inner.clock.now(),
                    &mut *rng,
                )
            };
            let peer = match &picked {
                Some(name) if *name != me => active.iter().find(|id| id.name == *name),
                _ => None,
            };
            let Some(peer) = peer else {
                return self
                    .run_worker_here(grain, checked, payload, encoded, deadline, picked.is_some())
                    .await;
            };
            let bytes = super::router::encode_once(&mut payload, &mut encoded, grain, method)?;
            match self
                .send_forward(grain, method, bytes, peer, Route::Deliver, 0, deadline)
                .await
            {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => avoid.push(peer.name.to_string()),
                Err(CallError::NodeUnavailable {
                    before_send: true, ..
                }) => avoid.push(peer.name.to_string()),
                // A peer that announced Leaving cannot have run the call.
                Err(error) if self.may_retry_forward(peer, &error) => {
                    avoid.push(peer.name.to_string());
                }
                Err(error) => return Err(error),
            }
        }
        Err(CallError::NoActiveNode {
            grain: grain.clone(),
        })
    }

    /// Runs a spread worker call on this node's pool. `admitted` is true when the peer table
    /// counted the call in flight, so that its end must be recorded.
    async fn run_worker_here(
        &self,
        grain: &GrainId,
        method: CheckedMethod,
        payload: Option<Payload>,
        encoded: Option<(PayloadFormat, Vec<u8>)>,
        deadline: Instant,
        admitted: bool,
    ) -> Result<InvokeReply, CallError> {
        let payload = match (payload, encoded) {
            (Some(payload), _) => payload,
            (None, Some((format, bytes))) => Payload::Encoded { format, bytes },
            (None, None) => {
                return Err(CallError::Internal("payload lost between attempts".into()));
            }
        };
        let started = Instant::now();
        let result = match self
            .deliver_local(grain, method, payload, started, deadline)
            .await
        {
            Ok(result) => result,
            Err(_) => Err(CallError::Internal(format!(
                "the worker pool of {grain} returned the call"
            ))),
        };
        if admitted {
            self.inner.forwarding.finish(
                &self.inner.id.name,
                PeerOutcome::Replied {
                    rtt: started.elapsed(),
                },
                self.inner.clock.now(),
            );
        }
        result.map(|payload| self.local_reply(payload, 0))
    }
}
