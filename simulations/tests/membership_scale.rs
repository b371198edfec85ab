//! Membership of 50, 300 and 1,000 simulated nodes: all views agree, a crash is detected and agreed
//! on, and no running member is declared down.
//!
//! Each test prints its report (run with `-- --nocapture` to see it). Run other sizes with
//! `cargo run --release -p gristmill-simulations -- scale --nodes N`.

use std::time::Duration;

use gristmill_simulations::scale::{
    JoinSchedule, ScaleOptions, ScaleReport, run_membership, run_membership_with,
};

/// Longest accepted time from the last join until every view lists exactly the running nodes.
/// A joining node pulls the whole member list, and every node pulls it again from a random
/// member every 15 to 45 s, which repairs the few join updates that gossip misses.
const JOIN_LIMIT: Duration = Duration::from_secs(90);
/// Longest accepted time from the crash until the first Down. With the default timings a
/// member probes the crashed node within about two probe periods of 1 s, the probe times out
/// after 300 ms and the suspicion after 3 s, so detection is estimated at about 5 s.
const DETECT_LIMIT: Duration = Duration::from_secs(15);
/// Longest accepted time from the crash until every view dropped the crashed node.
const AGREE_LIMIT: Duration = Duration::from_secs(30);
/// Largest accepted share of the nodes, in percent, that broadcast their meta within one
/// second. With re-broadcast waits drawn from 50 % to 150 % of a 13.5 s period, about 7 % of
/// the nodes fall due in any one second on average.
const MAX_META_BROADCAST_PERCENT: usize = 15;

fn check(report: &ScaleReport) {
    println!("{report}");

    let joined = report
        .joined_after
        .unwrap_or_else(|| panic!("views never agreed after the joins:\n{report}"));
    assert!(
        joined <= JOIN_LIMIT,
        "views agreed {joined:?} after the last join, limit {JOIN_LIMIT:?}:\n{report}"
    );
    let detected = report
        .detected_after
        .unwrap_or_else(|| panic!("crash never detected:\n{report}"));
    assert!(
        detected <= DETECT_LIMIT,
        "crash detected after {detected:?}, limit {DETECT_LIMIT:?}:\n{report}"
    );
    let agreed = report
        .agreed_after
        .unwrap_or_else(|| panic!("views never agreed after the crash:\n{report}"));
    assert!(
        agreed <= AGREE_LIMIT,
        "views agreed {agreed:?} after the crash, limit {AGREE_LIMIT:?}:\n{report}"
    );
    assert_eq!(
        report.false_downs, 0,
        "running members declared down:\n{report}"
    );
    assert!(
        report.messages_per_node_per_sec > 0.0,
        "no gossip measured:\n{report}"
    );
}

/// Checks that no node's member update backlog exceeded `max_updates` items and no meta
/// backlog `max_meta` items.
fn check_backlogs(report: &ScaleReport, max_updates: usize, max_meta: usize) {
    assert!(
        report.max_update_backlog <= max_updates,
        "a node's member update backlog reached {}, limit {max_updates}:\n{report}",
        report.max_update_backlog
    );
    assert!(
        report.max_meta_backlog <= max_meta,
        "a node's meta backlog reached {}, limit {max_meta}:\n{report}",
        report.max_meta_backlog
    );
}

#[test]
fn fifty_nodes_converge_and_detect_crash() {
    check(&run_membership(50, 1));
}

/// The traffic window covers three meta periods (13.5 s at 300 nodes), to check that the
/// nodes, which all joined within 3 s, do not re-broadcast their meta in step. Without the
/// jitter a third of them re-broadcast within one second.
#[test]
fn three_hundred_nodes_converge_and_detect_crash() {
    let options = ScaleOptions {
        traffic_window: Duration::from_secs(40),
        ..ScaleOptions::new(300, 1)
    };
    let report = run_membership_with(options);
    check(&report);

    let limit = report.nodes * MAX_META_BROADCAST_PERCENT / 100;
    assert!(
        report.max_meta_broadcasts_per_sec <= limit,
        "{} nodes broadcast their meta within one second, limit {limit}:\n{report}",
        report.max_meta_broadcasts_per_sec
    );
}

/// Nodes that start in waves of 50 every 5 s, as `scale` starts them by default, leave
/// foca's backlogs far smaller than nodes that start 10 ms apart. With 300 nodes in one wave,
/// one node's backlogs reached 208 member updates and 295 meta items, in waves 164 and 75
/// (release build).
#[test]
fn three_hundred_nodes_in_waves_keep_backlogs_small() {
    let options = ScaleOptions {
        schedule: JoinSchedule {
            size: 50,
            interval: Duration::from_secs(5),
        },
        ..ScaleOptions::new(300, 1)
    };
    let report = run_membership_with(options);
    check(&report);

    check_backlogs(&report, 200, 100);
}

/// The largest run in CI: 93 s of CPU time in the debug build on a shared 2-core machine.
#[test]
fn thousand_nodes_converge_and_detect_crash() {
    check(&run_membership(1_000, 1));
}

/// Nodes that start preloaded, as `scale --preloaded` starts 10,000 of them, agree from the
/// start, spread their meta re-broadcasts over the period, and detect a crash as joined nodes
/// do. The window covers three meta periods (13.5 s at 300 nodes). Preloading broadcasts
/// nothing, so the member update backlogs hold only the crash.
#[test]
fn three_hundred_preloaded_nodes_agree_from_the_start() {
    let options = ScaleOptions {
        traffic_window: Duration::from_secs(40),
        preloaded: true,
        ..ScaleOptions::new(300, 1)
    };
    let report = run_membership_with(options);
    check(&report);

    assert_eq!(
        report.joined_after,
        Some(Duration::ZERO),
        "preloaded views did not agree at the start:\n{report}"
    );
    let limit = report.nodes * MAX_META_BROADCAST_PERCENT / 100;
    assert!(
        (1..=limit).contains(&report.max_meta_broadcasts_per_sec),
        "{} nodes broadcast their meta within one second, expected 1 to {limit}:\n{report}",
        report.max_meta_broadcasts_per_sec
    );
    check_backlogs(&report, 10, 100);
}
