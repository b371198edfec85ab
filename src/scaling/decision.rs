//! Decision records: what each evaluation saw, recommended, limited and did, in a bounded log.

use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroUsize;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::membership::Incarnation;
use crate::scaling::behavior::Direction;
use crate::scaling::combiner::Combined;
use crate::scaling::load::{ClusterLoad, ClusterSnapshot};

/// Returns `count` with the noun it counts, such as `1 node` or `3 nodes`, for summaries.
pub(crate) fn node_count(count: u32) -> String {
    match count {
        1 => "1 node".to_owned(),
        _ => format!("{count} nodes"),
    }
}
use crate::scaling::policy::{PolicyKind, Recommendation};

/// Identifier of a decision; ids increase by one per recorded decision. A supervisor of
/// register epoch `e` starts after `(e - 1) * DECISION_IDS_PER_EPOCH`, so the first one counts
/// from 1 and ids keep increasing across failovers.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct DecisionId(pub u64);

/// Ids reserved for the decisions of one supervisor epoch.
pub const DECISION_IDS_PER_EPOCH: u64 = 1_000_000;

impl DecisionId {
    /// Returns the id after which the supervisor of register `epoch` numbers its decisions.
    pub fn epoch_base(epoch: u64) -> DecisionId {
        DecisionId(
            epoch
                .saturating_sub(1)
                .saturating_mul(DECISION_IDS_PER_EPOCH),
        )
    }

    /// The id of a dry run, which is never recorded.
    pub const DRY_RUN: DecisionId = DecisionId(0);
}

impl fmt::Display for DecisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{}", self.0)
    }
}

/// The cause of an evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The supervisor's periodic timer.
    Periodic,
    /// An `Evaluate` request; nothing is recorded or carried out.
    DryRun,
    /// A `ScaleTo` request.
    ScaleTo,
    /// A `DrainNode` request.
    DrainNode,
    /// The orchestrator reported nodes that the platform stops for reasons of its own, such
    /// as a Kubernetes eviction or node drain. Recorded with no action.
    Disruption,
}

/// The supervisor's next step after a decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Nothing.
    None,
    /// Ask the orchestrator for `nodes` more nodes.
    ScaleOut {
        /// Number of nodes to add.
        nodes: u32,
    },
    /// Drain these nodes one after another, then ask the orchestrator to remove each.
    ScaleIn {
        /// Nodes to drain and remove, in order.
        nodes: Vec<Incarnation>,
    },
}

impl Action {
    /// Returns the direction and node count of the change, or `None` for no action.
    pub fn change(&self) -> Option<(Direction, u32)> {
        match self {
            Action::None => None,
            Action::ScaleOut { nodes } => Some((Direction::ScaleOut, *nodes)),
            Action::ScaleIn { nodes } => Some((Direction::ScaleIn, nodes.len() as u32)),
        }
    }
}

/// A rule that held back or changed the recommended node count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AppliedLimit {
    /// A policy recommended no change because its metric was within tolerance of its target.
    Tolerance {
        /// The policy.
        policy: PolicyKind,
        /// Its `metric / target`.
        ratio: f64,
        /// The tolerance it applied.
        tolerance: f64,
    },
    /// The stabilization window held the count back.
    Stabilization {
        /// Direction whose window applied.
        direction: Direction,
        /// Window length.
        window: Duration,
        /// Count before stabilization.
        from: u32,
        /// Count after.
        to: u32,
    },
    /// A rate policy bounded the change.
    Rate {
        /// Direction whose rules applied.
        direction: Direction,
        /// Count before the rate policies.
        from: u32,
        /// Count they allow.
        to: u32,
    },
    /// The count was raised to `min_nodes`.
    MinNodes {
        /// The configured minimum.
        min: u32,
        /// Count before.
        from: u32,
    },
    /// The count was lowered to `max_nodes`.
    MaxNodes {
        /// The configured maximum.
        max: u32,
        /// Count before.
        from: u32,
    },
    /// An earlier action ended too recently.
    Cooldown {
        /// Time left until actions may start again.
        remaining: Duration,
    },
    /// An earlier action has not reported its outcome yet.
    ActionInProgress {
        /// The decision whose action is running.
        decision: DecisionId,
    },
    /// Automatic scaling is paused.
    Paused {
        /// The reason given when pausing.
        reason: String,
    },
    /// A scale-in was due but no node could be chosen.
    NoRemovalCandidate {
        /// Why.
        reason: String,
    },
    /// Nodes that the platform stops for reasons of its own have not come back yet.
    Disruption {
        /// The disrupted nodes, in name order.
        nodes: Vec<String>,
    },
}

/// The result of an action, as reported by the supervisor's glue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ActionOutcome {
    /// Every node was added, or drained and removed.
    Succeeded,
    /// The action stopped with an error; `completed_nodes` changed before it did.
    Failed {
        /// Nodes that were added or removed before the failure.
        completed_nodes: u32,
        /// The error, for operators.
        error: String,
    },
}

/// The check a scale-in makes on a drained node right before it stops it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRemoval {
    /// The drained node.
    pub node: String,
    /// Activations the node itself reported after its drain, independent of the drain reply.
    pub activations_before_stop: u64,
    /// Whether the node was stopped; `false` when the count was not 0.
    pub stopped: bool,
}

/// One evaluation, everything it used, and what came of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Identifier; [`DecisionId::DRY_RUN`] for dry runs.
    pub id: DecisionId,
    /// When the evaluation ran.
    pub at: Millis,
    /// Its cause.
    pub trigger: Trigger,
    /// The membership and load it read.
    pub snapshot: ClusterSnapshot,
    /// The aggregates computed from the snapshot.
    pub load: ClusterLoad,
    /// Each enabled policy's recommendation; empty for manual requests.
    pub recommendations: Vec<Recommendation>,
    /// The combiner's result; `None` for manual requests.
    pub combined: Option<Combined>,
    /// Rules that held back or changed the count, in the order they applied.
    pub limits: Vec<AppliedLimit>,
    /// Active nodes at the evaluation.
    pub current_nodes: u32,
    /// Node count after every limit; what the action moves towards.
    pub target_nodes: u32,
    /// The step to carry out.
    pub action: Action,
    /// One sentence for operators explaining the action or lack of one.
    pub summary: String,
    /// The action's result; `None` while it runs or when there is no action.
    pub outcome: Option<ActionOutcome>,
    /// How long the action took; `None` until it ends.
    pub duration: Option<Duration>,
    /// For a scale-in, the check on each node it drained, in order; empty otherwise.
    #[serde(default)]
    pub removals: Vec<NodeRemoval>,
    /// The orchestrator's backend steps during the action (API reads, patches, retries),
    /// oldest first; empty for orchestrators without such steps.
    #[serde(default)]
    pub orchestrator_steps: Vec<String>,
}

/// The most recent decisions, oldest first, bounded by a capacity.
#[derive(Clone, Debug)]
pub struct DecisionHistory {
    capacity: NonZeroUsize,
    last_id: DecisionId,
    decisions: VecDeque<Decision>,
}

impl DecisionHistory {
    /// Creates an empty history that keeps at most `capacity` decisions.
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            capacity,
            last_id: DecisionId(0),
            decisions: VecDeque::new(),
        }
    }

    /// Assigns the next id to `decision`, stores it, and drops the oldest beyond capacity.
    pub fn push(&mut self, mut decision: Decision) -> &Decision {
        self.last_id = DecisionId(self.last_id.0 + 1);
        decision.id = self.last_id;
        self.decisions.push_back(decision);
        self.trim();
        self.decisions.back().expect("a decision was just pushed")
    }

    /// Makes the next id follow `id` if it is above the last one, so a history that replaces
    /// another's never reuses its ids.
    pub fn continue_after(&mut self, id: DecisionId) {
        self.last_id = self.last_id.max(id);
    }

    /// Changes the capacity, dropping the oldest decisions if there are now too many.
    pub fn set_capacity(&mut self, capacity: NonZeroUsize) {
        self.capacity = capacity;
        self.trim();
    }

    fn trim(&mut self) {
        while self.decisions.len() > self.capacity.get() {
            self.decisions.pop_front();
        }
    }

    /// Returns the id of the latest recorded decision, or `None` if there is none yet.
    pub fn last_id(&self) -> Option<DecisionId> {
        (self.last_id.0 > 0).then_some(self.last_id)
    }

    /// Returns a stored decision, or `None` if it was never recorded or was dropped.
    pub fn get(&self, id: DecisionId) -> Option<&Decision> {
        let index = self.index_of(id)?;
        self.decisions.get(index)
    }

    pub(crate) fn get_mut(&mut self, id: DecisionId) -> Option<&mut Decision> {
        let index = self.index_of(id)?;
        self.decisions.get_mut(index)
    }

    /// Finds `id` among the decisions, which are in id order but need not be contiguous: a
    /// history restored after a failover starts with the ids of earlier supervisors.
    fn index_of(&self, id: DecisionId) -> Option<usize> {
        self.decisions
            .binary_search_by_key(&id, |decision| decision.id)
            .ok()
    }

    /// Adds decisions recorded by earlier supervisors, with their own ids, before the ones
    /// recorded here. A decision whose id is not below every stored one, or is above the last
    /// id given out, is skipped to keep the ids in order. The oldest go beyond capacity.
    pub fn restore<'a>(&mut self, earlier: impl DoubleEndedIterator<Item = &'a Decision>) {
        for decision in earlier.rev() {
            let below = self
                .decisions
                .front()
                .is_none_or(|first| decision.id < first.id);
            if below && decision.id <= self.last_id {
                self.decisions.push_front(decision.clone());
            }
        }
        self.trim();
    }

    /// Iterates over stored decisions with ids above `after`, oldest first.
    pub fn after(&self, after: DecisionId) -> impl Iterator<Item = &Decision> {
        self.decisions
            .iter()
            .filter(move |decision| decision.id > after)
    }

    /// Iterates over every stored decision, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Decision> {
        self.decisions.iter()
    }

    /// Returns the number of stored decisions.
    pub fn len(&self) -> usize {
        self.decisions.len()
    }

    /// Returns whether no decision is stored.
    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty()
    }
}
