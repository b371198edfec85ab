//! The rebalancer loop: runs the planner every round and carries out its moves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use super::config::RebalancerConfig;
use super::history::{History, MoveOutcome, MoveRecord, RoundRecord};
use super::metrics::RebalancerMetrics;
use super::planner::{ActivationSample, PlannedMove, RoundInput, plan_round};
use crate::api::pb;
use crate::clock::Millis;
use crate::grain::GrainId;
use crate::membership::{MemberInfo, NodeState};
use crate::scaling::orchestrator::BoxFuture;

/// The node operations the loop uses. The runtime's `Node` implements them, and tests use a fake.
pub trait RebalanceHost: Clone + Send + Sync + 'static {
    /// Returns this node's name.
    fn name(&self) -> String;
    /// Returns this node's lifecycle state.
    fn state(&self) -> NodeState;
    /// Returns every member with its state and gossiped load, this node included.
    fn members(&self) -> Vec<MemberInfo>;
    /// Returns this node's activations, with the turns each ran since the previous call.
    fn activation_samples(&self) -> Vec<ActivationSample>;
    /// Migrates `grain` to the node named `target`, fenced, ending by `deadline`.
    fn migrate(
        &self,
        grain: GrainId,
        target: String,
        deadline: Instant,
    ) -> BoxFuture<'static, MoveOutcome>;
    /// Returns the wall-clock time in milliseconds since the Unix epoch.
    fn unix_now_ms(&self) -> u64;
}

/// The rebalancer state that the loop and the gRPC API share.
#[derive(Debug)]
pub struct Rebalancer {
    paused: watch::Sender<bool>,
    history: Mutex<History>,
    metrics: RebalancerMetrics,
}

impl Rebalancer {
    /// Creates the state of a rebalancer that has run no round yet.
    pub fn new(config: &RebalancerConfig, metrics: RebalancerMetrics) -> Self {
        let capacity = usize::try_from(config.history_rounds.get())
            .ok()
            .and_then(std::num::NonZeroUsize::new)
            .expect("a non-zero u32 fits a non-zero usize");
        Self {
            paused: watch::Sender::new(config.start_paused),
            history: Mutex::new(History::new(capacity)),
            metrics,
        }
    }

    /// Returns whether rounds are paused.
    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Pauses or resumes rounds. A round in progress finishes its moves.
    pub fn set_paused(&self, paused: bool) {
        let changed = self.paused.send_if_modified(|current| {
            let changed = *current != paused;
            *current = paused;
            changed
        });
        if changed {
            tracing::info!(paused, "rebalancer pause changed");
        }
    }

    /// Returns the kept rounds in the gRPC form, oldest first.
    pub fn rounds(&self) -> Vec<pb::RebalanceRound> {
        let history = self
            .history
            .lock()
            .expect("rebalancer history lock poisoned");
        history.rounds().map(pb::RebalanceRound::from).collect()
    }

    /// Returns the kept rounds, oldest first.
    pub fn round_records(&self) -> Vec<RoundRecord> {
        let history = self
            .history
            .lock()
            .expect("rebalancer history lock poisoned");
        history.rounds().cloned().collect()
    }

    fn record(&self, round: RoundRecord) {
        self.metrics.rounds.inc();
        for record in &round.moves {
            self.metrics.record_move(&record.outcome);
        }
        let mut history = self
            .history
            .lock()
            .expect("rebalancer history lock poisoned");
        history.push(round);
    }
}

/// Runs rounds every `config.round_interval` while the node is Active and the rebalancer is
/// not paused, until the node is Dead.
///
/// The first round starts one interval after the call, so a node that just became Active
/// has received gossiped loads before it plans.
pub async fn run<H: RebalanceHost>(host: H, config: RebalancerConfig, shared: Arc<Rebalancer>) {
    let started = Instant::now();
    let mut tick = tokio::time::interval_at(started + config.round_interval, config.round_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Reset the per-activation turn counters, so the first round's window starts here.
    drop(host.activation_samples());
    let mut sampled_at = started;
    let mut last_moved: HashMap<GrainId, Millis> = HashMap::new();
    let mut round = 0u64;
    loop {
        tick.tick().await;
        match host.state() {
            NodeState::Dead => return,
            NodeState::Active => {}
            NodeState::Joining | NodeState::Draining | NodeState::Leaving => continue,
        }
        if shared.is_paused() {
            continue;
        }
        round += 1;
        let record = run_round(
            &host,
            &config,
            round,
            started,
            &mut sampled_at,
            &mut last_moved,
        )
        .await;
        shared.record(record);
    }
}

/// Plans one round and carries out its moves, at most `max_concurrent_moves` at once.
async fn run_round<H: RebalanceHost>(
    host: &H,
    config: &RebalancerConfig,
    round: u64,
    started: Instant,
    sampled_at: &mut Instant,
    last_moved: &mut HashMap<GrainId, Millis>,
) -> RoundRecord {
    let started_at_unix_ms = host.unix_now_ms();
    let instant = Instant::now();
    let now = Millis(u64::try_from((instant - started).as_millis()).unwrap_or(u64::MAX));
    let activations = host.activation_samples();
    let sample_window = instant - *sampled_at;
    *sampled_at = instant;
    last_moved.retain(|_, moved_at| now.saturating_since(*moved_at) < config.min_move_interval);

    let name = host.name();
    let members = host.members();
    let input = RoundInput {
        local: &name,
        members: &members,
        activations: &activations,
        sample_window,
        last_moved,
        now,
    };
    let plan = plan_round(config, &input);
    for planned in &plan.moves {
        last_moved.insert(planned.grain.clone(), now);
    }

    let moves: Vec<MoveRecord> = futures::stream::iter(plan.moves)
        .map(|planned| carry_out(host, config, &name, planned))
        .buffered(config.max_concurrent_moves.get())
        .collect()
        .await;
    let failed = moves
        .iter()
        .filter(|record| record.outcome != MoveOutcome::Succeeded)
        .count();
    let note = plan.note.map(|note| note.to_string()).unwrap_or_default();
    if moves.is_empty() {
        tracing::debug!(node = %name, round, local_load = plan.local_load, mean_load = plan.mean_load, %note, "rebalancer round moved nothing");
    } else {
        tracing::info!(node = %name, round, local_load = plan.local_load, mean_load = plan.mean_load, moves = moves.len(), failed, %note, "rebalancer round done");
    }
    RoundRecord {
        round,
        started_at_unix_ms,
        local_load: plan.local_load,
        mean_load: plan.mean_load,
        moves,
        note,
    }
}

/// Migrates one planned grain, unless the node stopped being Active since the round began.
async fn carry_out<H: RebalanceHost>(
    host: &H,
    config: &RebalancerConfig,
    name: &str,
    planned: PlannedMove,
) -> MoveRecord {
    let outcome = if host.state() == NodeState::Active {
        let deadline = Instant::now() + config.move_timeout;
        // NOTE: the loop trusts `migrate` to end by its deadline and does not cancel it, because
        // dropping a hand-off half-way is the runtime's decision to make, not the loop's.
        host.migrate(planned.grain.clone(), planned.target.clone(), deadline)
            .await
    } else {
        MoveOutcome::Failed {
            outcome: "skipped",
            message: "this node stopped being Active during the round".into(),
        }
    };
    match &outcome {
        MoveOutcome::Succeeded => {
            tracing::debug!(node = %name, grain = %planned.grain, target = %planned.target, "rebalancer moved grain");
        }
        MoveOutcome::Failed { outcome, message } => {
            tracing::debug!(node = %name, grain = %planned.grain, target = %planned.target, outcome, error = %message, "rebalancer move failed");
        }
    }
    MoveRecord {
        grain: planned.grain,
        from_node: name.to_owned(),
        to_node: planned.target,
        reason: planned.reason,
        outcome,
    }
}

#[cfg(test)]
mod tests;
