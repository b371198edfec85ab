//! The bounded record of the rebalancer's recent rounds, as `GetRebalancer` reports them.

use std::collections::VecDeque;
use std::num::NonZeroUsize;

use crate::api::pb;
use crate::grain::GrainId;

/// The result of one planned move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoveOutcome {
    /// The grain's activation now lives on the target.
    Succeeded,
    /// The migration failed; `outcome` is its metrics label (such as `rejected`), `message`
    /// the error.
    Failed {
        /// Metrics label of the failure.
        outcome: &'static str,
        /// The migration error as text.
        message: String,
    },
}

impl MoveOutcome {
    /// Returns the label of this outcome in the moves metric.
    pub fn label(&self) -> &'static str {
        match self {
            MoveOutcome::Succeeded => "succeeded",
            MoveOutcome::Failed { outcome, .. } => outcome,
        }
    }
}

/// One move that a round carried out.
#[derive(Clone, Debug, PartialEq)]
pub struct MoveRecord {
    /// The grain.
    pub grain: GrainId,
    /// Node the grain left (or was to leave).
    pub from_node: String,
    /// Node the grain was sent to.
    pub to_node: String,
    /// The planner's reason for the move, with its numbers.
    pub reason: String,
    /// The result of the migration.
    pub outcome: MoveOutcome,
}

/// One round of the rebalancer.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundRecord {
    /// Number of the round on this node, from 1.
    pub round: u64,
    /// Wall-clock start of the round, in milliseconds since the Unix epoch.
    pub started_at_unix_ms: u64,
    /// This node's load score when the round started.
    pub local_load: f64,
    /// Mean load score of the Active members when the round started.
    pub mean_load: f64,
    /// Moves the round carried out, in the planned order.
    pub moves: Vec<MoveRecord>,
    /// The reason the round moved nothing or stopped early, or empty when it did neither.
    pub note: String,
}

/// The most recent rounds, oldest first, up to a fixed capacity.
#[derive(Debug)]
pub struct History {
    rounds: VecDeque<RoundRecord>,
    capacity: NonZeroUsize,
}

impl History {
    /// Creates an empty history that keeps at most `capacity` rounds.
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            rounds: VecDeque::with_capacity(capacity.get().min(64)),
            capacity,
        }
    }

    /// Appends `round`, dropping the oldest round when the history is full.
    pub fn push(&mut self, round: RoundRecord) {
        debug_assert!(
            self.rounds
                .back()
                .is_none_or(|last| last.round < round.round),
            "round numbers must increase"
        );
        if self.rounds.len() == self.capacity.get() {
            self.rounds.pop_front();
        }
        self.rounds.push_back(round);
    }

    /// Returns the kept rounds, oldest first.
    pub fn rounds(&self) -> impl ExactSizeIterator<Item = &RoundRecord> {
        self.rounds.iter()
    }
}

impl From<&MoveRecord> for pb::RebalanceMove {
    fn from(record: &MoveRecord) -> Self {
        pb::RebalanceMove {
            grain_type: record.grain.grain_type.clone(),
            key: record.grain.key.clone(),
            from_node: record.from_node.clone(),
            to_node: record.to_node.clone(),
            reason: match &record.outcome {
                MoveOutcome::Succeeded => record.reason.clone(),
                MoveOutcome::Failed { message, .. } => {
                    format!("{}; failed: {message}", record.reason)
                }
            },
            succeeded: record.outcome == MoveOutcome::Succeeded,
        }
    }
}

impl From<&RoundRecord> for pb::RebalanceRound {
    fn from(record: &RoundRecord) -> Self {
        pb::RebalanceRound {
            round: record.round,
            started_at_unix_ms: record.started_at_unix_ms,
            local_load: record.local_load,
            mean_load: record.mean_load,
            moves: record.moves.iter().map(pb::RebalanceMove::from).collect(),
            note: record.note.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(number: u64) -> RoundRecord {
        RoundRecord {
            round: number,
            started_at_unix_ms: 1_000 * number,
            local_load: 12.0,
            mean_load: 10.0,
            moves: Vec::new(),
            note: String::new(),
        }
    }

    #[test]
    fn history_drops_oldest_when_full() {
        let mut history = History::new(NonZeroUsize::new(3).expect("not zero"));
        for number in 1..=5 {
            history.push(round(number));
        }
        let kept: Vec<u64> = history.rounds().map(|r| r.round).collect();
        assert_eq!(kept, [3, 4, 5]);
    }

    #[test]
    fn failed_move_reports_error_in_reason() {
        let record = MoveRecord {
            grain: GrainId::new("counter", "c-1"),
            from_node: "node-0".into(),
            to_node: "node-3".into(),
            reason: "node load 12.00 vs mean 10.00".into(),
            outcome: MoveOutcome::Failed {
                outcome: "rejected",
                message: "node node-3 rejected counter/c-1".into(),
            },
        };
        let reported = pb::RebalanceMove::from(&record);
        assert!(!reported.succeeded);
        assert_eq!(
            reported.reason,
            "node load 12.00 vs mean 10.00; failed: node node-3 rejected counter/c-1"
        );
        assert_eq!(reported.grain_type, "counter");
        assert_eq!(reported.key, "c-1");
    }
}
