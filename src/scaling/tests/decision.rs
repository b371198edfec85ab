//! The bounded decision history.

use std::num::NonZeroUsize;

use crate::clock::Millis;
use crate::scaling::decision::{Action, Decision, DecisionHistory, DecisionId, Trigger};
use crate::scaling::load::ClusterLoad;

use super::snapshot;

/// Returns a dry-run decision that changes nothing, made at `at`.
pub(super) fn decision_at(at: u64) -> Decision {
    Decision {
        id: DecisionId::DRY_RUN,
        at: Millis(at),
        trigger: Trigger::Periodic,
        snapshot: snapshot(Vec::new()),
        load: ClusterLoad::default(),
        recommendations: Vec::new(),
        combined: None,
        limits: Vec::new(),
        current_nodes: 1,
        target_nodes: 1,
        action: Action::None,
        summary: String::new(),
        outcome: None,
        duration: None,
        removals: Vec::new(),
        orchestrator_steps: Vec::new(),
    }
}

#[test]
fn history_ids_increase_and_oldest_drop() {
    let mut history = DecisionHistory::new(NonZeroUsize::new(3).unwrap());
    assert_eq!(history.last_id(), None);
    for at in 0..5 {
        history.push(decision_at(at));
    }
    let ids: Vec<u64> = history.iter().map(|d| d.id.0).collect();
    assert_eq!(ids, [3, 4, 5]);
    assert_eq!(history.last_id(), Some(DecisionId(5)));
    assert!(history.get(DecisionId(2)).is_none());
    assert_eq!(history.get(DecisionId(4)).map(|d| d.at), Some(Millis(3)));
    let after: Vec<u64> = history.after(DecisionId(4)).map(|d| d.id.0).collect();
    assert_eq!(after, [5]);
}

#[test]
fn history_shrinks_to_new_capacity() {
    let mut history = DecisionHistory::new(NonZeroUsize::new(10).unwrap());
    for at in 0..6 {
        history.push(decision_at(at));
    }
    history.set_capacity(NonZeroUsize::new(2).unwrap());
    assert_eq!(history.len(), 2);
    history.push(decision_at(6));
    assert_eq!(history.last_id(), Some(DecisionId(7)), "ids never restart");
}

#[test]
fn later_epoch_ids_follow_earlier_ones() {
    assert_eq!(DecisionId::epoch_base(0), DecisionId(0));
    assert_eq!(DecisionId::epoch_base(1), DecisionId(0));
    assert_eq!(DecisionId::epoch_base(3), DecisionId(2_000_000));

    let mut history = DecisionHistory::new(NonZeroUsize::new(4).unwrap());
    history.continue_after(DecisionId::epoch_base(2));
    history.push(decision_at(0));
    assert_eq!(history.last_id(), Some(DecisionId(1_000_001)));

    history.continue_after(DecisionId(5));
    history.push(decision_at(1));
    assert_eq!(
        history.last_id(),
        Some(DecisionId(1_000_002)),
        "ids never go back"
    );
}

#[test]
fn restored_decisions_keep_their_ids() {
    // Goal: after a failover the history lists the earlier supervisor's decisions under their
    // own ids, before the new ones, and finds each by id although the ids jump.
    let mut earlier = DecisionHistory::new(NonZeroUsize::new(10).unwrap());
    earlier.continue_after(DecisionId::epoch_base(1));
    for at in 0..3 {
        earlier.push(decision_at(at));
    }
    let mut history = DecisionHistory::new(NonZeroUsize::new(4).unwrap());
    history.continue_after(DecisionId::epoch_base(2));
    history.restore(earlier.iter());
    history.push(decision_at(10));
    history.push(decision_at(11));

    let ids: Vec<u64> = history.iter().map(|d| d.id.0).collect();
    assert_eq!(
        ids,
        [2, 3, 1_000_001, 1_000_002],
        "the oldest beyond capacity go"
    );
    assert_eq!(history.get(DecisionId(3)).map(|d| d.at), Some(Millis(2)));
    assert_eq!(
        history.get(DecisionId(1_000_002)).map(|d| d.at),
        Some(Millis(11))
    );
    assert!(history.get(DecisionId(1)).is_none());
}

#[test]
fn restore_skips_ids_out_of_order() {
    let mut history = DecisionHistory::new(NonZeroUsize::new(10).unwrap());
    history.continue_after(DecisionId(5));
    let mut later = decision_at(0);
    later.id = DecisionId(9);
    let mut earlier = decision_at(1);
    earlier.id = DecisionId(4);
    history.restore([earlier, later].iter());

    let ids: Vec<u64> = history.iter().map(|d| d.id.0).collect();
    assert_eq!(
        ids,
        [4],
        "an id above the last one given out would break the order"
    );
}
