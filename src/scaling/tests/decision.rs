//! The bounded decision history.

use std::num::NonZeroUsize;

use crate::clock::Millis;
use crate::scaling::decision::{Action, Decision, DecisionHistory, DecisionId, Trigger};
use crate::scaling::load::ClusterLoad;

use super::snapshot;

fn decision(at: u64) -> Decision {
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
        history.push(decision(at));
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
        history.push(decision(at));
    }
    history.set_capacity(NonZeroUsize::new(2).unwrap());
    assert_eq!(history.len(), 2);
    history.push(decision(6));
    assert_eq!(history.last_id(), Some(DecisionId(7)), "ids never restart");
}

#[test]
fn later_epoch_ids_follow_earlier_ones() {
    assert_eq!(DecisionId::epoch_base(0), DecisionId(0));
    assert_eq!(DecisionId::epoch_base(1), DecisionId(0));
    assert_eq!(DecisionId::epoch_base(3), DecisionId(2_000_000));

    let mut history = DecisionHistory::new(NonZeroUsize::new(4).unwrap());
    history.continue_after(DecisionId::epoch_base(2));
    history.push(decision(0));
    assert_eq!(history.last_id(), Some(DecisionId(1_000_001)));

    history.continue_after(DecisionId(5));
    history.push(decision(1));
    assert_eq!(
        history.last_id(),
        Some(DecisionId(1_000_002)),
        "ids never go back"
    );
}
