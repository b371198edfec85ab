use super::*;

/// Probe period 750 ms and round-trip time 250 ms, the default settings.
fn sweeps() -> QuorumSweep<&'static str> {
    QuorumSweep::new(&MembershipConfig::default(), 100)
}

const OTHERS: [&str; 4] = ["b", "c", "d", "e"];

/// Returns sweeps with one started at 1_000 ms over `targets`, and that sweep's id.
fn started(targets: &[&'static str], declared_down: usize) -> (QuorumSweep<&'static str>, u64) {
    let mut sweeps = sweeps();
    sweeps.request();
    let start = sweeps
        .maybe_start(Millis(1_000), targets.iter().copied(), declared_down)
        .expect("requested");
    (sweeps, start.sweep)
}

#[test]
fn no_sweep_without_request() {
    let mut sweeps = sweeps();
    assert_eq!(sweeps.next_wake(), None);
    assert_eq!(
        sweeps.maybe_start(Millis(1_000), OTHERS.into_iter(), 0),
        None
    );
    assert!(!sweeps.has_lost_quorum());
}

#[test]
fn request_starts_one_sweep_of_every_target() {
    let mut sweeps = sweeps();
    sweeps.request();
    assert_eq!(sweeps.next_wake(), Some(Millis(0)), "due at once");

    let start = sweeps.maybe_start(Millis(1_000), OTHERS.into_iter(), 0);
    assert_eq!(
        start,
        Some(SweepStart {
            sweep: 100,
            targets: OTHERS.to_vec()
        })
    );
    assert_eq!(sweeps.next_wake(), Some(Millis(1_250)), "end of the window");
    assert_eq!(
        sweeps.maybe_start(Millis(1_001), OTHERS.into_iter(), 0),
        None,
        "one sweep runs at a time"
    );
}

#[test]
fn pair_cut_off_from_three_loses_quorum() {
    // Only the partner acks: two against three.
    let (mut sweeps, sweep) = started(&OTHERS, 0);
    assert_eq!(
        sweeps.handle_ack(&"b", sweep, Millis(1_100)),
        None,
        "two of five"
    );
    assert_eq!(sweeps.handle_tick(Millis(1_249)), None, "window still open");
    assert!(
        !sweeps.has_lost_quorum(),
        "no result before the window closes"
    );

    let result = sweeps.handle_tick(Millis(1_250)).expect("window closed");
    assert_eq!(
        result,
        SweepResult {
            sweep: 100,
            replies: 2,
            missing: 3
        }
    );
    assert!(sweeps.has_lost_quorum());
}

#[test]
fn majority_ends_sweep_early() {
    let (mut sweeps, sweep) = started(&OTHERS, 0);
    assert_eq!(
        sweeps.handle_ack(&"c", sweep, Millis(1_100)),
        None,
        "two of five"
    );
    let result = sweeps
        .handle_ack(&"d", sweep, Millis(1_100))
        .expect("three of five");
    assert_eq!(result.replies, 3);
    assert_eq!(result.missing, 2);
    assert!(!result.lost_quorum());
    assert_eq!(sweeps.next_wake(), None, "nothing running or wanted");
    assert_eq!(
        sweeps.handle_ack(&"e", sweep, Millis(1_100)),
        None,
        "sweep ended"
    );
}

#[test]
fn stray_acks_count_nothing() {
    let (mut sweeps, sweep) = started(&OTHERS, 0);
    assert_eq!(
        sweeps.handle_ack(&"b", sweep + 1, Millis(1_100)),
        None,
        "other sweep"
    );
    assert_eq!(
        sweeps.handle_ack(&"f", sweep, Millis(1_100)),
        None,
        "not swept"
    );
    assert_eq!(
        sweeps.handle_ack(&"b", sweep, Millis(1_100)),
        None,
        "first ack"
    );
    assert_eq!(
        sweeps.handle_ack(&"b", sweep, Millis(1_100)),
        None,
        "repeated ack"
    );

    let result = sweeps.handle_tick(Millis(1_250)).expect("window closed");
    assert_eq!(result.replies, 2, "the local node and b");
}

#[test]
fn late_ack_counts_nothing() {
    let (mut sweeps, sweep) = started(&OTHERS, 0);
    assert_eq!(sweeps.handle_ack(&"b", sweep, Millis(1_250)), None);
    assert_eq!(sweeps.handle_ack(&"c", sweep, Millis(1_300)), None);
    assert!(sweeps.handle_tick(Millis(1_300)).is_some());
    assert!(sweeps.has_lost_quorum(), "one against four");
}

#[test]
fn declared_down_members_count_as_missing() {
    // Two live members left of five: both ack, against three declared down.
    let (mut sweeps, sweep) = started(&["b"], 3);
    assert_eq!(sweeps.handle_ack(&"b", sweep, Millis(1_100)), None);
    let result = sweeps.handle_tick(Millis(1_250)).expect("window closed");
    assert_eq!(result.missing, 3);
    assert!(result.lost_quorum());
}

#[test]
fn tie_keeps_quorum() {
    // Two of four reply, the local node included: equal halves do not fence.
    let (mut sweeps, sweep) = started(&["b", "c", "d"], 0);
    let result = sweeps
        .handle_ack(&"b", sweep, Millis(1_100))
        .expect("a tie ends it");
    assert!(!result.lost_quorum());

    // The survivor of a two-node cluster whose peer crashed.
    let (mut survivor, _) = started(&["b"], 0);
    let result = survivor.handle_tick(Millis(1_250)).expect("window closed");
    assert_eq!((result.replies, result.missing), (1, 1));
    assert!(!survivor.has_lost_quorum());
}

#[test]
fn lost_quorum_sweeps_every_period_until_regained() {
    let (mut sweeps, first) = started(&OTHERS, 0);
    sweeps.handle_tick(Millis(1_250));
    assert!(sweeps.has_lost_quorum());

    // No new request: the lost quorum alone keeps the sweeps going, one per probe period.
    assert_eq!(sweeps.next_wake(), Some(Millis(1_750)));
    assert_eq!(
        sweeps.maybe_start(Millis(1_749), OTHERS.into_iter(), 0),
        None
    );
    let second = sweeps
        .maybe_start(Millis(1_750), OTHERS.into_iter(), 0)
        .expect("lost quorum");
    assert_eq!(second.sweep, first + 1);
    assert!(sweeps.has_lost_quorum(), "fenced while the next sweep runs");

    sweeps.handle_ack(&"b", second.sweep, Millis(1_800));
    let result = sweeps
        .handle_ack(&"c", second.sweep, Millis(1_800))
        .expect("regained");
    assert!(!result.lost_quorum());
    assert!(!sweeps.has_lost_quorum());
    assert_eq!(sweeps.next_wake(), None);
}

#[test]
fn request_during_sweep_waits_for_period() {
    let (mut sweeps, first) = started(&OTHERS, 0);
    sweeps.request();
    sweeps.handle_ack(&"b", first, Millis(1_100));
    sweeps.handle_ack(&"c", first, Millis(1_100));
    assert!(!sweeps.has_lost_quorum());

    assert_eq!(sweeps.next_wake(), Some(Millis(1_750)));
    assert_eq!(
        sweeps.maybe_start(Millis(1_100), OTHERS.into_iter(), 0),
        None
    );
    assert!(
        sweeps
            .maybe_start(Millis(1_750), OTHERS.into_iter(), 0)
            .is_some()
    );
}

#[test]
fn lone_node_keeps_quorum() {
    let (mut sweeps, _) = started(&[], 0);
    let result = sweeps.handle_tick(Millis(1_250)).expect("window closed");
    assert_eq!((result.replies, result.missing), (1, 0));
    assert!(!sweeps.has_lost_quorum());
}

#[test]
fn verdict_learned_during_sweep_counts() {
    // A node that joined after its group's verdicts learns two of them from the first ack.
    let (mut sweeps, sweep) = started(&["b", "c", "d"], 0);
    // The glue counts the verdicts that b's ack hands on before the ack itself, which alone
    // would make a tie of two against two.
    sweeps.handle_declared_down_count(2);
    assert_eq!(sweeps.handle_ack(&"b", sweep, Millis(1_100)), None);
    let result = sweeps.handle_tick(Millis(1_250)).expect("window closed");
    assert_eq!((result.replies, result.missing), (2, 4));
    assert!(sweeps.has_lost_quorum());
}
