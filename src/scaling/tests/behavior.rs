//! Stabilization windows and rate policies, as HPA's `behavior` defines them.

use std::num::NonZeroU32;
use std::time::Duration;

use crate::clock::Millis;
use crate::scaling::behavior::{
    Direction, RatePolicy, ScaleEvent, ScaleHistory, ScalingRules, SelectPolicy, Stabilizer,
};

fn rules(window_secs: u64, policies: Vec<RatePolicy>, select_policy: SelectPolicy) -> ScalingRules {
    ScalingRules {
        stabilization_window: Duration::from_secs(window_secs),
        policies,
        select_policy,
    }
}

fn nodes(value: u32, period_secs: u64) -> RatePolicy {
    RatePolicy::Nodes {
        value: NonZeroU32::new(value).unwrap(),
        period: Duration::from_secs(period_secs),
    }
}

fn percent(value: u32, period_secs: u64) -> RatePolicy {
    RatePolicy::Percent {
        value: NonZeroU32::new(value).unwrap(),
        period: Duration::from_secs(period_secs),
    }
}

fn secs(seconds: u64) -> Millis {
    Millis(seconds * 1_000)
}

#[test]
fn stabilization_keeps_most_conservative_recommendation() {
    let scale_out = rules(30, Vec::new(), SelectPolicy::Max);
    let scale_in = rules(300, Vec::new(), SelectPolicy::Max);
    // (earlier recommendations as (second, count), current, desired now at 400 s, expected)
    type Case = (&'static [(u64, u32)], u32, u32, u32);
    let cases: [Case; 7] = [
        (&[], 4, 8, 8),
        (&[(380, 5)], 4, 8, 5), // scale-out only as far as the lowest in 30 s
        (&[(380, 3)], 4, 8, 4), // a lower recommendation keeps the count
        (&[(360, 3)], 4, 8, 8), // 40 s ago is outside the scale-out window
        (&[(200, 6)], 4, 2, 4), // a higher recommendation in 300 s keeps the count
        (&[(200, 3)], 4, 2, 3), // scale-in only as far as the highest in 300 s
        (&[(99, 9)], 4, 2, 2),  // 301 s ago is outside the scale-in window
    ];
    for (history, current, desired, expected) in cases {
        let mut stabilizer = Stabilizer::default();
        for &(second, count) in history {
            stabilizer.record(count, secs(second), Duration::from_secs(300));
        }
        let result = stabilizer.stabilize(current, desired, secs(400), &scale_out, &scale_in);
        assert_eq!(
            result, expected,
            "history {history:?}, current {current}, desired {desired}"
        );
    }
}

#[test]
fn stabilizer_forgets_beyond_longest_window() {
    let scale_out = rules(0, Vec::new(), SelectPolicy::Max);
    let scale_in = rules(60, Vec::new(), SelectPolicy::Max);
    let mut stabilizer = Stabilizer::default();
    stabilizer.record(10, secs(0), Duration::from_secs(60));
    stabilizer.record(4, secs(61), Duration::from_secs(60));
    assert_eq!(
        stabilizer.stabilize(10, 2, secs(62), &scale_out, &scale_in),
        4
    );
}

#[test]
fn rate_policies_bound_change_per_period() {
    let out_default = rules(0, vec![nodes(4, 60), percent(100, 60)], SelectPolicy::Max);
    let out_min = rules(0, vec![nodes(4, 60), percent(100, 60)], SelectPolicy::Min);
    let out_disabled = rules(0, vec![nodes(4, 60)], SelectPolicy::Disabled);
    let in_one = rules(0, vec![nodes(1, 60)], SelectPolicy::Max);
    let in_percent = rules(0, vec![percent(50, 60), nodes(1, 60)], SelectPolicy::Max);
    let in_percent_min = rules(0, vec![percent(50, 60), nodes(1, 60)], SelectPolicy::Min);
    let unlimited = rules(0, Vec::new(), SelectPolicy::Max);
    // (rules, current, desired, expected)
    let cases = [
        (&out_default, 2, 20, 6),   // max(2 + 4, 2 * 2) = 6
        (&out_default, 10, 50, 20), // max(14, 20) = 20
        (&out_default, 3, 4, 4),    // within every bound
        (&out_min, 10, 50, 14),
        (&out_disabled, 3, 9, 3),
        (&in_one, 5, 1, 4),
        (&in_percent, 10, 1, 5), // 50 % removes more than 1 node
        (&in_percent_min, 10, 1, 9),
        (&in_percent, 1, 0, 0), // floor(1 * 0.5) = 0
        (&unlimited, 3, 30, 30),
        (&out_default, 5, 5, 5),
    ];
    let history = ScaleHistory::default();
    for (rules, current, desired, expected) in cases {
        let result = history.limit(current, desired, rules, secs(100));
        assert_eq!(
            result, expected,
            "{rules:?}, current {current}, desired {desired}"
        );
    }
}

#[test]
fn rate_policies_count_changes_in_period() {
    let scale_out = rules(0, vec![nodes(4, 60)], SelectPolicy::Max);
    let scale_in = rules(0, vec![nodes(1, 120)], SelectPolicy::Max);
    let mut history = ScaleHistory::default();
    let event = |second, direction, nodes| ScaleEvent {
        at: secs(second),
        direction,
        nodes,
    };
    history.record(event(10, Direction::ScaleOut, 3), &scale_out, &scale_in);

    // 3 of the 4 nodes per 60 s were added at 10 s, so only 1 more until 70 s.
    assert_eq!(history.limit(5, 10, &scale_out, secs(40)), 6);
    assert_eq!(history.limit(5, 10, &scale_out, secs(71)), 9);

    history.record(event(100, Direction::ScaleIn, 1), &scale_out, &scale_in);
    // The period started at 3 nodes; one removal already used the scale-in budget.
    assert_eq!(history.limit(2, 1, &scale_in, secs(150)), 2);
    assert_eq!(history.limit(2, 1, &scale_in, secs(221)), 1);
}
