//! The scaling evaluator: runs one evaluation from a snapshot and `now`, and tracks actions.
//!
//! An evaluation takes these steps, each recorded in the [`Decision`]:
//!
//! 1. Aggregate the snapshot into a [`ClusterLoad`]; `current` is the Active node count.
//! 2. Run every enabled policy; each applies its tolerance.
//! 3. Combine the recommendations with the configured combiner.
//! 4. If `current` lies outside `[min_nodes, max_nodes]`, move it inside and skip step 5, as
//!    HPA does.
//! 5. Stabilize over the windows, bound by the rate policies, clamp to `[min_nodes, max_nodes]`.
//! 6. If the count still changes, act unless paused, an action is running, a node that the
//!    platform stopped for its own reasons has not come back (see
//!    [`disruption`](crate::scaling::disruption)), or the cooldown since the last action has
//!    not passed. A scale-in chooses its nodes here.
//!
//! The raw combined count of every periodic evaluation enters the stabilization window, even
//! when paused, so that resuming acts on the recent past. Manual requests (`ScaleTo`,
//! `DrainNode`) skip steps 2 to 5, the pause and the cooldown, but never overlap a running
//! action and never leave `[min_nodes, max_nodes]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::scaling::behavior::{Direction, ScaleEvent, ScaleHistory, Stabilizer};
use crate::scaling::combiner::combine;
use crate::scaling::config::{ConfigError, ScalingConfig};
use crate::scaling::decision::{
    Action, ActionOutcome, AppliedLimit, Decision, DecisionHistory, DecisionId, NodeRemoval,
    Trigger, node_count,
};
use crate::scaling::disruption::DisruptionHold;
use crate::scaling::load::{ClusterLoad, ClusterSnapshot};
use crate::scaling::policy::recommend;
use crate::scaling::removal::choose_removal;

/// The scaling supervisor's policy state: config, windows, the running action and history.
#[derive(Clone, Debug)]
pub struct ScalingCore {
    config: ScalingConfig,
    stabilizer: Stabilizer,
    scale_history: ScaleHistory,
    running: Option<RunningAction>,
    last_action_ended_at: Option<Millis>,
    paused: Option<String>,
    disruptions: DisruptionHold,
    history: DecisionHistory,
}

#[derive(Clone, Copy, Debug)]
struct RunningAction {
    decision: DecisionId,
    started_at: Millis,
    direction: Direction,
    nodes: u32,
}

/// The supervisor's state for `GetStatus`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalingStatus {
    /// The reason given when pausing, or `None` when automatic scaling runs.
    pub paused: Option<String>,
    /// The decision whose action has not reported its outcome, if any.
    pub running_action: Option<DecisionId>,
    /// Time until automatic actions may start again; zero when they may start now.
    pub cooldown_remaining: Duration,
    /// The latest recorded decision, if any.
    pub last_decision: Option<DecisionId>,
}

/// A manual request or outcome report that the core rejected; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The requested node count lies outside the configured bounds; change them first.
    #[error("requested {requested} nodes, outside min_nodes {min} and max_nodes {max}")]
    OutOfBounds {
        /// The requested count.
        requested: u32,
        /// The configured minimum.
        min: u32,
        /// The configured maximum.
        max: u32,
    },
    /// Another action is running; retry after it reports its outcome.
    #[error("action of decision {decision} is still running; retry when it has ended")]
    ActionInProgress {
        /// The decision whose action runs.
        decision: DecisionId,
    },
    /// The node to drain is not in the Active state (or not known at all).
    #[error("node {name:?} is not an Active node; list the nodes with gristmill ctl members")]
    NodeNotActive {
        /// The requested node name.
        name: String,
    },
    /// Draining the node would leave fewer than `min_nodes` Active nodes.
    #[error("draining {name} would leave {remaining} Active nodes, below min_nodes {min}")]
    BelowMinimum {
        /// The requested node name.
        name: String,
        /// Active nodes that would remain.
        remaining: u32,
        /// The configured minimum.
        min: u32,
    },
    /// The orchestrator can only remove a different node next.
    #[error("the orchestrator cannot remove {name}; it must remove {required} first")]
    RemovalNotAllowed {
        /// The requested node name.
        name: String,
        /// The node the orchestrator must remove next.
        required: String,
    },
    /// A scale-in found no node to remove.
    #[error("no node can be removed: {reason}")]
    NoRemovalCandidate {
        /// Why not.
        reason: String,
    },
    /// An outcome was reported for a decision whose action is not running.
    #[error("decision {decision} has no running action")]
    NotRunning {
        /// The reported decision.
        decision: DecisionId,
    },
}

impl ScalingCore {
    /// Creates a core with no history; fails if the config is invalid.
    pub fn new(config: ScalingConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            history: DecisionHistory::new(config.history_capacity),
            config,
            stabilizer: Stabilizer::default(),
            scale_history: ScaleHistory::default(),
            running: None,
            last_action_ended_at: None,
            paused: None,
            disruptions: DisruptionHold::default(),
        })
    }

    /// Returns the config in force.
    pub fn config(&self) -> &ScalingConfig {
        &self.config
    }

    /// Replaces the config; on error the running config stays unchanged.
    ///
    /// Windows, rate history, the running action and the decision history carry over, so a
    /// new config does not reset stabilization.
    pub fn set_config(&mut self, config: ScalingConfig) -> Result<(), ConfigError> {
        config.validate()?;
        self.history.set_capacity(config.history_capacity);
        self.config = config;
        Ok(())
    }

    /// Numbers the following decisions after `id`; see `DecisionHistory::continue_after`.
    pub fn continue_ids_after(&mut self, id: DecisionId) {
        self.history.continue_after(id);
    }

    /// Adds decisions of earlier supervisors before the ones recorded here (see
    /// [`DecisionHistory::restore`]).
    pub fn restore_history<'a>(&mut self, earlier: impl DoubleEndedIterator<Item = &'a Decision>) {
        self.history.restore(earlier);
    }

    /// Returns the recorded decisions.
    pub fn history(&self) -> &DecisionHistory {
        &self.history
    }

    /// Returns the state shown by `GetStatus`.
    pub fn status(&self, now: Millis) -> ScalingStatus {
        ScalingStatus {
            paused: self.paused.clone(),
            running_action: self.running.map(|running| running.decision),
            cooldown_remaining: self.cooldown_remaining(now),
            last_decision: self.history.last_id(),
        }
    }

    /// Pauses automatic actions; returns false if already paused, keeping the first reason.
    pub fn maybe_pause(&mut self, reason: String) -> bool {
        if self.paused.is_some() {
            return false;
        }
        tracing::info!(%reason, "scaling paused");
        self.paused = Some(reason);
        true
    }

    /// Resumes automatic actions; returns false if not paused.
    pub fn maybe_resume(&mut self) -> bool {
        let resumed = self.paused.take().is_some();
        if resumed {
            tracing::info!("scaling resumed");
        }
        resumed
    }

    /// Runs a periodic evaluation, records it, and marks its action as running.
    ///
    /// The caller carries out [`Decision::action`] and then reports with
    /// [`Self::handle_action_outcome`]; until then no other action starts.
    pub fn handle_evaluation(&mut self, snapshot: ClusterSnapshot, now: Millis) -> Decision {
        self.note_cluster_size(&snapshot, now);
        let decision = self.plan(snapshot, now, Trigger::Periodic);
        if let Some(combined) = &decision.combined {
            self.stabilizer
                .record(combined.desired_nodes, now, self.stabilization_memory());
        }
        self.commit(decision, now)
    }

    /// Runs an evaluation without recording it or changing any state, for `Evaluate`.
    pub fn dry_run(&self, snapshot: ClusterSnapshot, now: Millis) -> Decision {
        let current = snapshot.active_nodes().count() as u32;
        if self.stabilizer.would_note(current) {
            let mut noted = self.clone();
            noted.note_cluster_size(&snapshot, now);
            return noted.plan(snapshot, now, Trigger::DryRun);
        }
        self.plan(snapshot, now, Trigger::DryRun)
    }

    /// Records the active node count as a recommendation at the first evaluation and whenever
    /// it grew since the last one (see [`Stabilizer::note_current`]).
    fn note_cluster_size(&mut self, snapshot: &ClusterSnapshot, now: Millis) {
        let current = snapshot.active_nodes().count() as u32;
        self.stabilizer
            .note_current(current, now, self.stabilization_memory());
    }

    fn stabilization_memory(&self) -> Duration {
        self.config
            .scale_out
            .stabilization_window
            .max(self.config.scale_in.stabilization_window)
    }

    /// Takes the nodes that the orchestrator reports as stopped by the platform for reasons
    /// of its own, and records a decision with no action when one is reported for the first
    /// time. `reason` names who stopped them, such as `deleted by Kubernetes`.
    ///
    /// Automatic actions wait while any such node is held (see
    /// [`DisruptionHold::handle_report`]); manual requests do not.
    pub fn handle_disruptions(
        &mut self,
        snapshot: ClusterSnapshot,
        reported: &std::collections::BTreeSet<String>,
        reason: &str,
        now: Millis,
    ) -> Option<Decision> {
        let first_reports = self.disruptions.handle_report(&snapshot, reported, now);
        if first_reports.is_empty() {
            return None;
        }
        let current = snapshot.active_nodes().count() as u32;
        let mut decision = self.manual_decision(snapshot, now, Trigger::Disruption, current);
        decision.limits.push(AppliedLimit::Disruption {
            nodes: first_reports.clone(),
        });
        decision.summary = format!(
            "{} terminating without a request from the supervisor ({reason}); it drains on \
             SIGTERM, is not replaced, and automatic actions wait until it is Active again",
            first_reports.join(", ")
        );
        tracing::info!(
            nodes = %first_reports.join(","),
            reason,
            "nodes stopped by the platform; automatic scaling waits for them"
        );
        Some(self.commit(decision, now))
    }

    /// Records a request to move to `nodes` Active nodes and returns its decision.
    pub fn handle_scale_to(
        &mut self,
        snapshot: ClusterSnapshot,
        nodes: u32,
        now: Millis,
    ) -> Result<Decision, RequestError> {
        let (min, max) = (self.config.min_nodes.get(), self.config.max_nodes.get());
        if !(min..=max).contains(&nodes) {
            return Err(RequestError::OutOfBounds {
                requested: nodes,
                min,
                max,
            });
        }
        self.check_idle()?;
        let mut decision = self.manual_decision(snapshot, now, Trigger::ScaleTo, nodes);
        let current = decision.current_nodes;
        let action = self.choose_action(&decision.snapshot, current, nodes, now, false);
        let action = action.map_err(|reason| RequestError::NoRemovalCandidate { reason })?;
        decision.summary = summarize(&action, current, nodes, "requested by ScaleTo");
        decision.action = action;
        Ok(self.commit(decision, now))
    }

    /// Records a request to drain and remove the Active node `name`.
    pub fn handle_drain_request(
        &mut self,
        snapshot: ClusterSnapshot,
        name: &str,
        now: Millis,
    ) -> Result<Decision, RequestError> {
        let node = snapshot
            .active_nodes()
            .find(|node| node.incarnation.name == name)
            .map(|node| node.incarnation.clone())
            .ok_or_else(|| RequestError::NodeNotActive { name: name.into() })?;
        if let Some(required) = snapshot.forced_removal_order.first()
            && required != name
        {
            return Err(RequestError::RemovalNotAllowed {
                name: name.into(),
                required: required.clone(),
            });
        }
        let current = snapshot.active_nodes().count() as u32;
        let min = self.config.min_nodes.get();
        if current - 1 < min {
            return Err(RequestError::BelowMinimum {
                name: name.into(),
                remaining: current - 1,
                min,
            });
        }
        self.check_idle()?;
        let mut decision = self.manual_decision(snapshot, now, Trigger::DrainNode, current - 1);
        decision.action = Action::ScaleIn { nodes: vec![node] };
        decision.summary = summarize(
            &decision.action,
            current,
            current - 1,
            "requested by DrainNode",
        );
        Ok(self.commit(decision, now))
    }

    /// Records how the action of decision `id` ended, with the checks a scale-in made on the
    /// nodes it drained and the orchestrator's steps, which starts the cooldown.
    ///
    /// Nodes that changed count against the rate policies from the time the action started.
    pub fn handle_action_outcome(
        &mut self,
        id: DecisionId,
        outcome: ActionOutcome,
        removals: Vec<NodeRemoval>,
        orchestrator_steps: Vec<String>,
        now: Millis,
    ) -> Result<&Decision, RequestError> {
        let running = match self.running {
            Some(running) if running.decision == id => running,
            _ => return Err(RequestError::NotRunning { decision: id }),
        };
        let changed = match &outcome {
            ActionOutcome::Succeeded => running.nodes,
            ActionOutcome::Failed {
                completed_nodes, ..
            } => (*completed_nodes).min(running.nodes),
        };
        if changed > 0 {
            let event = ScaleEvent {
                at: running.started_at,
                direction: running.direction,
                nodes: changed,
            };
            self.scale_history
                .record(event, &self.config.scale_out, &self.config.scale_in);
        }
        self.running = None;
        self.last_action_ended_at = Some(now);
        let duration = now.saturating_since(running.started_at);
        match &outcome {
            ActionOutcome::Succeeded => {
                tracing::info!(decision = %id, ?duration, "scaling action succeeded")
            }
            ActionOutcome::Failed { error, .. } => {
                tracing::warn!(decision = %id, %error, changed, "scaling action failed")
            }
        }
        let decision = self
            .history
            .get_mut(id)
            .ok_or(RequestError::NotRunning { decision: id })?;
        decision.outcome = Some(outcome);
        decision.duration = Some(duration);
        decision.removals = removals;
        decision.orchestrator_steps = orchestrator_steps;
        Ok(decision)
    }

    fn check_idle(&self) -> Result<(), RequestError> {
        match self.running {
            Some(running) => Err(RequestError::ActionInProgress {
                decision: running.decision,
            }),
            None => Ok(()),
        }
    }

    fn cooldown_remaining(&self, now: Millis) -> Duration {
        self.last_action_ended_at
            .map(|ended| (ended + self.config.cooldown).saturating_since(now))
            .unwrap_or_default()
    }

    fn commit(&mut self, decision: Decision, now: Millis) -> Decision {
        let decision = self.history.push(decision).clone();
        if let Some((direction, nodes)) = decision.action.change() {
            tracing::info!(
                decision = %decision.id,
                %direction,
                nodes,
                current = decision.current_nodes,
                target = decision.target_nodes,
                summary = %decision.summary,
                "scaling action started"
            );
            self.running = Some(RunningAction {
                decision: decision.id,
                started_at: now,
                direction,
                nodes,
            });
        }
        decision
    }

    fn manual_decision(
        &self,
        snapshot: ClusterSnapshot,
        now: Millis,
        trigger: Trigger,
        target: u32,
    ) -> Decision {
        let load = ClusterLoad::from_snapshot(&snapshot, &self.config.health);
        Decision {
            id: DecisionId::DRY_RUN,
            at: now,
            trigger,
            current_nodes: load.active_nodes,
            target_nodes: target,
            snapshot,
            load,
            recommendations: Vec::new(),
            combined: None,
            limits: Vec::new(),
            action: Action::None,
            summary: String::new(),
            outcome: None,
            duration: None,
            removals: Vec::new(),
            orchestrator_steps: Vec::new(),
        }
    }

    fn plan(&self, snapshot: ClusterSnapshot, now: Millis, trigger: Trigger) -> Decision {
        let config = &self.config;
        let load = ClusterLoad::from_snapshot(&snapshot, &config.health);
        let current = load.active_nodes;
        let recommendations: Vec<_> = config
            .enabled_policies()
            .map(|policy| recommend(policy, &load, &config.health, config.tolerance))
            .collect();
        let combined = combine(
            config.combiner,
            config.consensus_min_agree,
            &recommendations,
            current,
        );
        let mut limits: Vec<AppliedLimit> = recommendations
            .iter()
            .filter(|recommendation| recommendation.within_tolerance)
            .map(|recommendation| AppliedLimit::Tolerance {
                policy: recommendation.policy,
                ratio: recommendation.ratio(),
                tolerance: recommendation.tolerance,
            })
            .collect();
        let target = self.limit_count(current, combined.desired_nodes, now, &mut limits);

        // Joining nodes are on their way to Active, as when nodes were started by hand or the
        // cluster is still forming: adding nodes for them too would overshoot, and the
        // scale-in that follows would drain one of them again.
        // A limit that blocks every automatic action is the reason recorded instead.
        let joining = if self.running.is_some() || self.automatic_blocked(now) {
            0
        } else {
            load.joining_nodes
        };
        let joining_nodes = if joining == 1 { "node" } else { "nodes" };
        let (action, summary) = if target > current && current + joining >= target {
            let summary = format!(
                "scale out from {current} to {} is held back: {joining} joining {joining_nodes} \
                 count once Active",
                node_count(target)
            );
            (Action::None, summary)
        } else if target > current && joining > 0 {
            // Only the nodes that no joining node stands for are added.
            let pending = current + joining;
            let (action, summary) = self.plan_action(
                &snapshot,
                pending,
                target,
                now,
                &combined.reason,
                &mut limits,
            );
            let summary =
                format!("{summary} ({current} Active and {joining} joining {joining_nodes})");
            (action, summary)
        } else {
            self.plan_action(
                &snapshot,
                current,
                target,
                now,
                &combined.reason,
                &mut limits,
            )
        };
        Decision {
            id: DecisionId::DRY_RUN,
            at: now,
            trigger,
            snapshot,
            load,
            recommendations,
            combined: Some(combined),
            limits,
            current_nodes: current,
            target_nodes: target,
            action,
            summary,
            outcome: None,
            duration: None,
            removals: Vec::new(),
            orchestrator_steps: Vec::new(),
        }
    }

    /// Chooses the automatic action from `current` to `target` nodes and its summary, and adds
    /// the limit that held it back, if one did.
    fn plan_action(
        &self,
        snapshot: &ClusterSnapshot,
        current: u32,
        target: u32,
        now: Millis,
        reason: &str,
        limits: &mut Vec<AppliedLimit>,
    ) -> (Action, String) {
        match self.choose_action(snapshot, current, target, now, true) {
            Ok(Action::None) if target != current => {
                let blocked_by = self.blocking_limit(now);
                let summary = format!(
                    "{} from {current} to {} is held back: {}",
                    direction_verb(current, target),
                    node_count(target),
                    describe_limit(&blocked_by)
                );
                limits.push(blocked_by);
                (Action::None, summary)
            }
            Ok(action) => {
                // The limits that moved the count away from the policies' recommendation.
                let mut reason = reason.to_owned();
                for limit in limits.iter() {
                    reason = format!("{reason}; {}", describe_limit(limit));
                }
                let summary = summarize(&action, current, target, &reason);
                (action, summary)
            }
            Err(reason) => {
                let summary = format!(
                    "scale in from {current} to {} is held back: {reason}",
                    node_count(target)
                );
                limits.push(AppliedLimit::NoRemovalCandidate { reason });
                (Action::None, summary)
            }
        }
    }

    /// Applies step 4 or 5 of the evaluation to the combined count `desired`.
    fn limit_count(
        &self,
        current: u32,
        desired: u32,
        now: Millis,
        limits: &mut Vec<AppliedLimit>,
    ) -> u32 {
        let config = &self.config;
        let (min, max) = (config.min_nodes.get(), config.max_nodes.get());
        if !(min..=max).contains(&current) {
            return clamp_nodes(current, min, max, limits);
        }

        let stabilized =
            self.stabilizer
                .stabilize(current, desired, now, &config.scale_out, &config.scale_in);
        if stabilized != desired {
            let direction = Direction::between(current, desired).unwrap_or(Direction::ScaleIn);
            let window = match direction {
                Direction::ScaleOut => config.scale_out.stabilization_window,
                Direction::ScaleIn => config.scale_in.stabilization_window,
            };
            limits.push(AppliedLimit::Stabilization {
                direction,
                window,
                from: desired,
                to: stabilized,
            });
        }

        let Some(direction) = Direction::between(current, stabilized) else {
            return current;
        };
        let rules = match direction {
            Direction::ScaleOut => &config.scale_out,
            Direction::ScaleIn => &config.scale_in,
        };
        let rated = self.scale_history.limit(current, stabilized, rules, now);
        if rated != stabilized {
            limits.push(AppliedLimit::Rate {
                direction,
                from: stabilized,
                to: rated,
            });
        }
        clamp_nodes(rated, min, max, limits)
    }

    /// Returns the action that moves from `current` to `target`, or the reason no node can be
    /// removed. Returns `Action::None` when a pause, running action or cooldown blocks it.
    fn choose_action(
        &self,
        snapshot: &ClusterSnapshot,
        current: u32,
        target: u32,
        now: Millis,
        automatic: bool,
    ) -> Result<Action, String> {
        let Some(direction) = Direction::between(current, target) else {
            return Ok(Action::None);
        };
        let blocked = self.running.is_some() || (automatic && self.automatic_blocked(now));
        if blocked {
            return Ok(Action::None);
        }
        match direction {
            Direction::ScaleOut => Ok(Action::ScaleOut {
                nodes: target - current,
            }),
            Direction::ScaleIn => {
                let choice = choose_removal(snapshot, current - target)?;
                Ok(Action::ScaleIn {
                    nodes: choice.nodes,
                })
            }
        }
    }

    /// Returns whether a pause, a disruption or the cooldown blocks automatic actions.
    fn automatic_blocked(&self, now: Millis) -> bool {
        self.paused.is_some()
            || self.disruptions.is_holding()
            || !self.cooldown_remaining(now).is_zero()
    }

    /// Returns the limit that blocks an automatic action; call only when one does.
    fn blocking_limit(&self, now: Millis) -> AppliedLimit {
        if let Some(running) = self.running {
            AppliedLimit::ActionInProgress {
                decision: running.decision,
            }
        } else if let Some(reason) = &self.paused {
            AppliedLimit::Paused {
                reason: reason.clone(),
            }
        } else if self.disruptions.is_holding() {
            AppliedLimit::Disruption {
                nodes: self.disruptions.nodes(),
            }
        } else {
            AppliedLimit::Cooldown {
                remaining: self.cooldown_remaining(now),
            }
        }
    }
}

fn clamp_nodes(nodes: u32, min: u32, max: u32, limits: &mut Vec<AppliedLimit>) -> u32 {
    if nodes < min {
        limits.push(AppliedLimit::MinNodes { min, from: nodes });
        min
    } else if nodes > max {
        limits.push(AppliedLimit::MaxNodes { max, from: nodes });
        max
    } else {
        nodes
    }
}

fn direction_verb(current: u32, target: u32) -> &'static str {
    match Direction::between(current, target) {
        Some(Direction::ScaleOut) => "scale out",
        Some(Direction::ScaleIn) => "scale in",
        None => "keep",
    }
}

fn summarize(action: &Action, current: u32, target: u32, reason: &str) -> String {
    match action {
        Action::None => format!("keep {}: {reason}", node_count(current)),
        Action::ScaleOut { nodes } => {
            format!(
                "scale out from {current} to {}, adding {nodes}: {reason}",
                node_count(target)
            )
        }
        Action::ScaleIn { nodes } => {
            let names: Vec<String> = nodes.iter().map(ToString::to_string).collect();
            format!(
                "scale in from {current} to {}, draining {}: {reason}",
                node_count(target),
                names.join(", ")
            )
        }
    }
}

fn describe_limit(limit: &AppliedLimit) -> String {
    match limit {
        AppliedLimit::ActionInProgress { decision } => {
            format!("the action of decision {decision} is still running")
        }
        AppliedLimit::Paused { reason } => format!("scaling is paused ({reason})"),
        AppliedLimit::Disruption { nodes } => format!(
            "{} stopped by the platform and not Active again yet",
            nodes.join(", ")
        ),
        AppliedLimit::Cooldown { remaining } => {
            format!("cooldown has {} ms left", remaining.as_millis())
        }
        AppliedLimit::Tolerance {
            policy,
            ratio,
            tolerance,
        } => format!(
            "{policy} is within its tolerance ({ratio:.2} of target, tolerance {tolerance})"
        ),
        AppliedLimit::Stabilization {
            direction,
            window,
            from,
            to,
        } => format!(
            "the {direction} stabilization window of {window:?} gives {to} instead of {from}"
        ),
        AppliedLimit::Rate {
            direction,
            from,
            to,
        } => format!("the {direction} rate policies allow {to} instead of {from}"),
        AppliedLimit::MinNodes { min, from } => {
            format!("raised from {from} to min_nodes {min}")
        }
        AppliedLimit::MaxNodes { max, from } => {
            format!("lowered from {from} to max_nodes {max}")
        }
        AppliedLimit::NoRemovalCandidate { reason } => format!("no node can be removed: {reason}"),
    }
}
