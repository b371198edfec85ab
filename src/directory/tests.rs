//! Behaviour of the directory partition: compare-and-set, hand-offs and readiness windows.

use std::time::Duration;

use super::*;
use crate::clock::Millis;
use crate::grain::GrainId;
use crate::membership::Incarnation;

const GRACE: Duration = Duration::from_secs(2);

/// Creates the incarnation `name` with `boot_id`, for the tests of every directory file.
pub(super) fn incarnation(name: &str, boot_id: u64) -> Incarnation {
    Incarnation {
        name: name.into(),
        boot_id,
    }
}

fn node(name: &str) -> Incarnation {
    incarnation(name, 7)
}

fn entry(grain: &GrainId, host: &Incarnation, activation_id: u64, epoch: u64) -> DirectoryEntry {
    DirectoryEntry {
        grain: grain.clone(),
        host: host.clone(),
        activation_id,
        epoch,
    }
}

/// Returns the first grain whose owner is `owner_now` among `now` and, if `before` is given,
/// `owner_before` among `before`.
fn grain_where(
    now: &[Incarnation],
    owner_now: &Incarnation,
    before: Option<(&[Incarnation], &Incarnation)>,
) -> GrainId {
    (0..10_000)
        .map(|key| GrainId::new("counter", format!("c{key}")))
        .find(|grain| {
            partition_owner(grain, now) == Some(owner_now)
                && before
                    .is_none_or(|(members, owner)| partition_owner(grain, members) == Some(owner))
        })
        .expect("10 000 keys cover every owner combination")
}

/// Creates a partition of node `a` that is settled in the view {a, b}.
fn settled_partition() -> (DirectoryPartition, Vec<Incarnation>) {
    let members = vec![node("a"), node("b")];
    let mut partition = DirectoryPartition::new(node("a"), DirectoryConfig::default());
    partition.handle_membership_change(&members, Millis(0));
    let view = partition.view();
    for member in &members {
        partition.handle_sync_complete(member, view, Millis(0));
    }
    assert!(partition.is_ready(Millis(0)), "test setup must be settled");
    (partition, members)
}

#[test]
fn registration_race_keeps_first() {
    let (mut partition, members) = settled_partition();
    let grain = grain_where(&members, &node("a"), None);
    let first = entry(&grain, &node("a"), 1, 0);
    let second = entry(&grain, &node("b"), 9, 0);

    let won = partition.handle_register(first.clone(), Expect::Absent, Millis(10));
    let lost = partition.handle_register(second, Expect::Absent, Millis(10));

    assert_eq!(won, RegisterOutcome::Registered(first.clone()));
    assert_eq!(lost, RegisterOutcome::Conflict(first.clone()));
    assert_eq!(
        partition.handle_lookup(&grain, Millis(10)),
        LookupOutcome::Found(first)
    );
    assert_eq!(partition.counters().registrations, 1);
    assert_eq!(partition.counters().conflicts, 1);
}

#[test]
fn identical_registration_is_idempotent() {
    let (mut partition, members) = settled_partition();
    let grain = grain_where(&members, &node("a"), None);
    let first = entry(&grain, &node("b"), 1, 0);

    partition.handle_register(first.clone(), Expect::Absent, Millis(10));
    let repeated = partition.handle_register(first.clone(), Expect::Absent, Millis(11));

    assert_eq!(repeated, RegisterOutcome::Registered(first));
    assert_eq!(partition.counters().conflicts, 0);
}

#[test]
fn lookup_of_unregistered_grain_is_not_found() {
    let (mut partition, members) = settled_partition();
    let grain = grain_where(&members, &node("a"), None);
    assert_eq!(
        partition.handle_lookup(&grain, Millis(10)),
        LookupOutcome::NotFound
    );
}

#[test]
fn request_for_other_owner_is_redirected() {
    let (mut partition, members) = settled_partition();
    let grain = grain_where(&members, &node("b"), None);
    let owner = Some(node("b"));

    let lookup = partition.handle_lookup(&grain, Millis(10));
    let register =
        partition.handle_register(entry(&grain, &node("a"), 1, 0), Expect::Absent, Millis(10));

    assert_eq!(
        lookup,
        LookupOutcome::NotOwner {
            owner: owner.clone()
        }
    );
    assert_eq!(register, RegisterOutcome::NotOwner { owner });
    assert!(partition.is_empty());
}

#[test]
fn migration_registers_next_epoch() {
    let (mut partition, members) = settled_partition();
    let grain = grain_where(&members, &node("a"), None);
    partition.handle_register(entry(&grain, &node("a"), 1, 4), Expect::Absent, Millis(10));

    // The request's epoch is ignored: the stored epoch is the expected one plus one.
    let target = entry(&grain, &node("b"), 2, 0);
    let outcome = partition.handle_register(target, Expect::Epoch(4), Millis(20));

    let expected = entry(&grain, &node("b"), 2, 5);
    assert_eq!(outcome, RegisterOutcome::Registered(expected.clone()));
    assert_eq!(
        partition.handle_lookup(&grain, Millis(20)),
        LookupOutcome::Found(expected)
    );
    assert_eq!(partition.counters().migrations, 1);
}

#[test]
fn migration_retry_is_idempotent() {
    let (mut partition, members) = settled_partition();
    let grain = grain_where(&members, &node("a"), None);
    partition.handle_register(entry(&grain, &node("a"), 1, 4), Expect::Absent, Millis(10));
    let target = entry(&grain, &node("b"), 2, 5);
    partition.handle_register(target.clone(), Expect::Epoch(4), Millis(20));

    let retried = partition.handle_register(target.clone(), Expect::Epoch(4), Millis(21));

    assert_eq!(retried, RegisterOutcome::Registered(target));
    assert_eq!(partition.counters().migrations, 1);
}

#[test]
fn migration_with_stale_epoch_conflicts() {
    let (mut partition, members) = settled_partition();
    let grain = grain_where(&members, &node("a"), None);
    let current = entry(&grain, &node("a"), 1, 4);
    partition.handle_register(current.clone(), Expect::Absent, Millis(10));

    let outcome = partition.handle_register(
        entry(&grain, &node("b"), 2, 4),
        Expect::Epoch(3),
        Millis(20),
    );

    assert_eq!(outcome, RegisterOutcome::Conflict(current));
}

#[test]
fn migration_without_entry_is_missing() {
    let (mut partition, members) = settled_partition();
    let grain = grain_where(&members, &node("a"), None);

    let outcome = partition.handle_register(
        entry(&grain, &node("b"), 2, 1),
        Expect::Epoch(0),
        Millis(20),
    );

    assert_eq!(outcome, RegisterOutcome::Missing);
    assert!(partition.is_empty());
}

#[test]
fn late_unregister_keeps_newer_activation() {
    let (mut partition, members) = settled_partition();
    let grain = grain_where(&members, &node("a"), None);
    partition.handle_register(entry(&grain, &node("a"), 1, 0), Expect::Absent, Millis(10));
    partition.handle_unregister(&grain, &node("a"), 1, Millis(11));
    let newer = entry(&grain, &node("a"), 2, 0);
    partition.handle_register(newer.clone(), Expect::Absent, Millis(12));

    let late = partition.handle_unregister(&grain, &node("a"), 1, Millis(13));

    assert_eq!(late, UnregisterOutcome::Superseded(newer.clone()));
    assert_eq!(
        partition.handle_lookup(&grain, Millis(13)),
        LookupOutcome::Found(newer)
    );
}

#[test]
fn unregister_needs_matching_host() {
    // Activation ids are unique per host only, so the same id on another host is another
    // activation.
    let (mut partition, members) = settled_partition();
    let grain = grain_where(&members, &node("a"), None);
    let current = entry(&grain, &node("a"), 1, 0);
    partition.handle_register(current.clone(), Expect::Absent, Millis(10));

    let outcome = partition.handle_unregister(&grain, &node("b"), 1, Millis(11));

    assert_eq!(outcome, UnregisterOutcome::Superseded(current));
    assert_eq!(partition.len(), 1);
}

#[test]
fn unregister_of_current_activation_removes() {
    let (mut partition, members) = settled_partition();
    let grain = grain_where(&members, &node("a"), None);
    let current = entry(&grain, &node("b"), 3, 0);
    partition.handle_register(current.clone(), Expect::Absent, Millis(10));

    let outcome = partition.handle_unregister(&grain, &node("b"), 3, Millis(11));

    assert_eq!(outcome, UnregisterOutcome::Removed(current));
    assert_eq!(
        partition.handle_lookup(&grain, Millis(11)),
        LookupOutcome::NotFound
    );
    assert_eq!(partition.counters().unregistrations, 1);
}

#[test]
fn dead_host_entries_are_dropped() {
    let members = vec![node("a"), node("b"), node("c")];
    let mut partition = DirectoryPartition::new(node("a"), DirectoryConfig::default());
    partition.handle_membership_change(&members, Millis(0));
    let survivors = vec![node("a"), node("b")];
    // Owned by `a` both before and after `c` leaves, so only the host's death matters.
    let on_dead = grain_where(&survivors, &node("a"), Some((&members, &node("a"))));
    let on_live = (0..10_000)
        .map(|key| GrainId::new("other", format!("g{key}")))
        .find(|grain| partition_owner(grain, &members) == Some(&node("a")))
        .expect("some grain is owned by a");
    partition.handle_reassert(entry(&on_dead, &node("c"), 1, 0), Millis(1));
    partition.handle_reassert(entry(&on_live, &node("b"), 1, 0), Millis(1));

    let commands = partition.handle_membership_change(&survivors, Millis(10));

    assert!(commands.is_empty(), "unexpected commands {commands:?}");
    assert_eq!(partition.len(), 1);
    assert_eq!(partition.counters().dead_host_entries_dropped, 1);
    assert!(matches!(
        partition.handle_lookup(&on_live, Millis(10)),
        LookupOutcome::Found(found) if found.host == node("b")
    ));
}

#[test]
fn lost_grains_are_handed_off_to_new_owner() {
    let (mut partition, members) = settled_partition();
    let grown = vec![node("a"), node("b"), node("c")];
    let moving = grain_where(&grown, &node("c"), Some((&members, &node("a"))));
    let staying = grain_where(&grown, &node("a"), Some((&members, &node("a"))));
    let moving_entry = entry(&moving, &node("b"), 1, 0);
    partition.handle_register(moving_entry.clone(), Expect::Absent, Millis(10));
    partition.handle_register(
        entry(&staying, &node("b"), 2, 0),
        Expect::Absent,
        Millis(10),
    );

    let commands = partition.handle_membership_change(&grown, Millis(20));

    assert_eq!(
        commands,
        vec![DirectoryCommand::HandOff {
            to: node("c"),
            entries: vec![moving_entry],
        }]
    );
    assert_eq!(partition.len(), 1);
    assert_eq!(partition.counters().handoff_entries_sent, 1);
}

#[test]
fn repeated_view_changes_nothing() {
    let (mut partition, members) = settled_partition();
    let mut reordered = members.clone();
    reordered.reverse();

    let commands = partition.handle_membership_change(&reordered, Millis(10));

    assert!(commands.is_empty());
    assert!(
        partition.is_ready(Millis(10)),
        "a repeated view must not open a window"
    );
}

/// Node `c` joins {a, b}; returns `c`'s partition right after the change and a gained grain.
fn joined_partition() -> (DirectoryPartition, Vec<Incarnation>, GrainId) {
    let before = vec![node("a"), node("b")];
    let after = vec![node("a"), node("b"), node("c")];
    let mut partition = DirectoryPartition::new(node("c"), DirectoryConfig::default());
    partition.handle_membership_change(&after, Millis(1_000));
    let gained = grain_where(&after, &node("c"), Some((&before, &node("a"))));
    (partition, after, gained)
}

#[test]
fn gained_grains_not_ready_until_sync() {
    let (mut partition, members, gained) = joined_partition();
    let view = partition.view();

    assert_eq!(
        partition.handle_lookup(&gained, Millis(1_000)),
        LookupOutcome::NotReady
    );
    let early = partition.handle_register(
        entry(&gained, &node("c"), 1, 0),
        Expect::Absent,
        Millis(1_000),
    );
    assert_eq!(early, RegisterOutcome::NotReady);

    for member in &members[..2] {
        partition.handle_sync_complete(member, view, Millis(1_100));
    }
    assert_eq!(
        partition.handle_lookup(&gained, Millis(1_100)),
        LookupOutcome::NotReady
    );

    partition.handle_sync_complete(&members[2], view, Millis(1_200));
    assert_eq!(
        partition.handle_lookup(&gained, Millis(1_200)),
        LookupOutcome::NotFound
    );
    assert_eq!(partition.counters().not_ready_replies, 3);
}

#[test]
fn joiner_alone_at_first_still_waits_for_sync() {
    // A joining node has only itself in its view until gossip brings the others, and it
    // settles that view on its own. Its solo view must not count as having owned every grain before the join.
    let alone = vec![node("c")];
    let after = vec![node("a"), node("b"), node("c")];
    let mut partition = DirectoryPartition::new(node("c"), DirectoryConfig::default());
    partition.handle_membership_change(&alone, Millis(0));
    partition.handle_sync_complete(&node("c"), partition.view(), Millis(0));
    assert!(
        partition.is_ready(Millis(0)),
        "a node alone settles at once"
    );

    partition.handle_membership_change(&after, Millis(1_000));
    let gained = grain_where(&after, &node("c"), None);
    assert_eq!(
        partition.handle_lookup(&gained, Millis(1_000)),
        LookupOutcome::NotReady
    );
    let view = partition.view();
    for member in &after {
        partition.handle_sync_complete(member, view, Millis(1_100));
    }
    assert_eq!(
        partition.handle_lookup(&gained, Millis(1_100)),
        LookupOutcome::NotFound
    );
}

#[test]
fn gained_grains_ready_after_grace() {
    let (mut partition, _, gained) = joined_partition();
    let closes_at = Millis(1_000) + GRACE;

    assert_eq!(
        partition.handle_lookup(&gained, closes_at - Duration::from_millis(1)),
        LookupOutcome::NotReady
    );
    assert_eq!(
        partition.handle_lookup(&gained, closes_at),
        LookupOutcome::NotFound
    );
}

#[test]
fn sync_for_other_view_does_not_close_window() {
    let (mut partition, members, gained) = joined_partition();
    let stale = ViewId::of(&members[..2]);

    for member in &members {
        partition.handle_sync_complete(member, stale, Millis(1_100));
    }

    assert_eq!(
        partition.handle_lookup(&gained, Millis(1_100)),
        LookupOutcome::NotReady
    );
}

#[test]
fn sync_received_before_view_change_counts() {
    let after = vec![node("a"), node("b"), node("c")];
    let view = ViewId::of(&after);
    let mut partition = DirectoryPartition::new(node("c"), DirectoryConfig::default());
    // `a` and `b` learned of `c` first and confirmed before `c` applied its own view.
    partition.handle_sync_complete(&node("a"), view, Millis(900));
    partition.handle_sync_complete(&node("b"), view, Millis(900));

    partition.handle_membership_change(&after, Millis(1_000));
    partition.handle_sync_complete(&node("c"), view, Millis(1_000));

    assert!(partition.is_ready(Millis(1_000)));
}

#[test]
fn grains_owned_before_stay_ready_during_window() {
    let (mut partition, members) = settled_partition();
    let grown = vec![node("a"), node("b"), node("c")];
    let kept = grain_where(&grown, &node("a"), Some((&members, &node("a"))));

    partition.handle_membership_change(&grown, Millis(10));

    assert!(!partition.is_ready(Millis(10)));
    assert_eq!(
        partition.handle_lookup(&kept, Millis(10)),
        LookupOutcome::NotFound
    );
}

#[test]
fn reassert_is_accepted_during_window() {
    let (mut partition, _, gained) = joined_partition();
    let existing = entry(&gained, &node("a"), 4, 2);

    let outcome = partition.handle_reassert(existing.clone(), Millis(1_001));

    assert_eq!(outcome, RegisterOutcome::Registered(existing.clone()));
    assert_eq!(
        partition.handle_lookup(&gained, Millis(1_001)),
        LookupOutcome::Found(existing)
    );
}

#[test]
fn reassert_conflict_keeps_first() {
    let (mut partition, _, gained) = joined_partition();
    let first = entry(&gained, &node("a"), 4, 0);
    partition.handle_reassert(first.clone(), Millis(1_001));

    let second = partition.handle_reassert(entry(&gained, &node("b"), 5, 0), Millis(1_002));
    let repeated = partition.handle_reassert(first.clone(), Millis(1_003));

    assert_eq!(second, RegisterOutcome::Conflict(first.clone()));
    assert_eq!(repeated, RegisterOutcome::Registered(first));
}

#[test]
fn handoff_fills_gained_grains() {
    let (mut partition, _, gained) = joined_partition();
    let handed = entry(&gained, &node("b"), 4, 1);

    let commands = partition.handle_handoff(&node("a"), vec![handed.clone()], Millis(1_001));

    assert!(commands.is_empty(), "unexpected commands {commands:?}");
    assert_eq!(
        partition.handle_lookup(&gained, Millis(1_001)),
        LookupOutcome::Found(handed)
    );
    assert_eq!(partition.counters().handoff_entries_accepted, 1);
}

#[test]
fn handoff_conflict_keeps_higher_epoch() {
    let (mut partition, _, gained) = joined_partition();
    let reasserted = entry(&gained, &node("a"), 4, 0);
    let migrated = entry(&gained, &node("b"), 5, 1);
    partition.handle_reassert(reasserted.clone(), Millis(1_001));

    let commands = partition.handle_handoff(&node("a"), vec![migrated.clone()], Millis(1_002));

    assert_eq!(
        commands,
        vec![DirectoryCommand::Deactivate { entry: reasserted }]
    );
    assert_eq!(
        partition.handle_lookup(&gained, Millis(1_002)),
        LookupOutcome::Found(migrated)
    );
    assert_eq!(partition.counters().handoff_conflicts, 1);
}

#[test]
fn handoff_conflict_on_equal_epoch_keeps_existing() {
    let (mut partition, _, gained) = joined_partition();
    let reasserted = entry(&gained, &node("a"), 4, 0);
    let handed = entry(&gained, &node("b"), 5, 0);
    partition.handle_reassert(reasserted.clone(), Millis(1_001));

    let commands = partition.handle_handoff(&node("a"), vec![handed.clone()], Millis(1_002));

    assert_eq!(
        commands,
        vec![DirectoryCommand::Deactivate { entry: handed }]
    );
    assert_eq!(
        partition.handle_lookup(&gained, Millis(1_002)),
        LookupOutcome::Found(reasserted)
    );
}

#[test]
fn handoff_of_same_activation_raises_epoch() {
    let (mut partition, _, gained) = joined_partition();
    partition.handle_reassert(entry(&gained, &node("a"), 4, 0), Millis(1_001));

    let commands = partition.handle_handoff(
        &node("a"),
        vec![entry(&gained, &node("a"), 4, 1)],
        Millis(1_002),
    );

    assert!(commands.is_empty(), "unexpected commands {commands:?}");
    assert_eq!(
        partition.handle_lookup(&gained, Millis(1_002)),
        LookupOutcome::Found(entry(&gained, &node("a"), 4, 1))
    );
}

#[test]
fn handoff_of_unowned_entry_is_forwarded() {
    let (mut partition, members, _) = joined_partition();
    let elsewhere = grain_where(&members, &node("b"), None);
    let handed = entry(&elsewhere, &node("a"), 4, 0);

    let commands = partition.handle_handoff(&node("a"), vec![handed.clone()], Millis(1_001));

    assert_eq!(
        commands,
        vec![DirectoryCommand::HandOff {
            to: node("b"),
            entries: vec![handed],
        }]
    );
    assert!(partition.is_empty());
}

#[test]
fn handoff_entry_of_dead_host_is_dropped() {
    let (mut partition, _, gained) = joined_partition();

    partition.handle_handoff(
        &node("a"),
        vec![entry(&gained, &node("gone"), 4, 0)],
        Millis(1_001),
    );

    assert!(partition.is_empty());
    assert_eq!(partition.counters().dead_host_entries_dropped, 1);
}

#[test]
fn unregister_during_window_discards_late_handoff() {
    let (mut partition, _, gained) = joined_partition();

    // The host deactivated before the previous owner's hand-off arrived.
    let outcome = partition.handle_unregister(&gained, &node("a"), 4, Millis(1_001));
    partition.handle_handoff(
        &node("a"),
        vec![entry(&gained, &node("a"), 4, 0)],
        Millis(1_002),
    );

    assert_eq!(outcome, UnregisterOutcome::Absent);
    assert!(partition.is_empty());
}

#[test]
fn node_outside_view_owns_nothing() {
    let (mut partition, _) = settled_partition();
    let others = vec![node("b"), node("c")];
    let grain = GrainId::new("counter", "c1");
    partition.handle_register(entry(&grain, &node("b"), 1, 0), Expect::Absent, Millis(5));

    partition.handle_membership_change(&others, Millis(10));

    assert!(partition.is_empty());
    assert!(matches!(
        partition.handle_lookup(&grain, Millis(10)),
        LookupOutcome::NotOwner { owner: Some(_) }
    ));
}
