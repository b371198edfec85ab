//! Combiners over tables of recommendations.

use std::num::NonZeroU32;

use crate::scaling::combiner::{CombinerKind, combine};
use crate::scaling::policy::{PolicyKind, Recommendation};

const CURRENT: u32 = 4;

fn recommendation(
    policy: PolicyKind,
    desired_nodes: u32,
    priority: u32,
    weight: f64,
) -> Recommendation {
    Recommendation {
        policy,
        priority,
        weight,
        current_nodes: CURRENT,
        desired_nodes,
        metric: 0.0,
        target: 1.0,
        tolerance: 0.1,
        within_tolerance: desired_nodes == CURRENT,
        reason: String::new(),
    }
}

/// Returns recommendations of CPU, grain density and call rate, in that order.
fn three(cpu: u32, density: u32, calls: u32) -> Vec<Recommendation> {
    vec![
        recommendation(PolicyKind::Cpu, cpu, 30, 2.0),
        recommendation(PolicyKind::GrainDensity, density, 10, 1.0),
        recommendation(PolicyKind::CallRate, calls, 20, 1.0),
    ]
}

fn run(combiner: CombinerKind, min_agree: u32, recommendations: &[Recommendation]) -> u32 {
    let min_agree = NonZeroU32::new(min_agree).unwrap();
    combine(combiner, min_agree, recommendations, CURRENT).desired_nodes
}

#[test]
fn most_aggressive_ignores_keep_of_add_only_policies() {
    // (cpu, density, mailbox, health); expected result. Mailbox depth and cluster health only
    // add nodes, so their recommendation of the current 4 does not block a scale-in.
    let cases = [
        ((2, 3, 4, 4), 3),
        ((2, 3, 6, 4), 6),
        ((2, 3, 4, 5), 5),
        ((2, 4, 4, 4), 4),
    ];
    for ((cpu, density, mailbox, health), expected) in cases {
        let recommendations = [
            recommendation(PolicyKind::Cpu, cpu, 30, 1.0),
            recommendation(PolicyKind::GrainDensity, density, 10, 1.0),
            recommendation(PolicyKind::MailboxDepth, mailbox, 50, 1.0),
            recommendation(PolicyKind::ClusterHealth, health, 60, 1.0),
        ];
        let result = run(CombinerKind::MostAggressive, 2, &recommendations);
        assert_eq!(
            result, expected,
            "cpu {cpu}, density {density}, mailbox {mailbox}, health {health}"
        );
    }
}

#[test]
fn most_aggressive_add_only_policies_keep() {
    let recommendations = [
        recommendation(PolicyKind::MailboxDepth, CURRENT, 50, 1.0),
        recommendation(PolicyKind::ClusterHealth, CURRENT, 60, 1.0),
    ];
    let combined = combine(
        CombinerKind::MostAggressive,
        NonZeroU32::new(2).unwrap(),
        &recommendations,
        CURRENT,
    );
    assert_eq!(combined.desired_nodes, CURRENT);
    assert!(combined.deciding_policies.is_empty());
}

#[test]
fn highest_priority_picks_top_changing_policy() {
    // (cpu, density, calls) with priorities 30, 10, 20; expected result
    let cases = [
        ((6, 2, 3), 6),
        ((4, 2, 7), 7), // CPU holds, so call rate (20) outranks density (10)
        ((4, 2, 4), 2),
        ((4, 4, 4), 4),
        ((3, 9, 9), 3),
    ];
    for ((cpu, density, calls), expected) in cases {
        let result = run(
            CombinerKind::HighestPriority,
            2,
            &three(cpu, density, calls),
        );
        assert_eq!(
            result, expected,
            "cpu {cpu}, density {density}, calls {calls}"
        );
    }
}

#[test]
fn highest_priority_ties_go_to_first_listed() {
    let recommendations = vec![
        recommendation(PolicyKind::Cpu, 6, 10, 1.0),
        recommendation(PolicyKind::Memory, 2, 10, 1.0),
    ];
    let combined = combine(
        CombinerKind::HighestPriority,
        NonZeroU32::MIN,
        &recommendations,
        CURRENT,
    );
    assert_eq!(combined.desired_nodes, 6);
    assert_eq!(combined.deciding_policies, vec![PolicyKind::Cpu]);
}

#[test]
fn most_aggressive_takes_largest_like_hpa() {
    let cases = [
        ((6, 2, 3), 6),
        ((3, 2, 3), 3), // every policy scales in: the smallest step wins
        ((4, 2, 1), 4), // CPU holds, so nothing scales in
        ((5, 9, 7), 9),
    ];
    for ((cpu, density, calls), expected) in cases {
        let result = run(CombinerKind::MostAggressive, 2, &three(cpu, density, calls));
        assert_eq!(
            result, expected,
            "cpu {cpu}, density {density}, calls {calls}"
        );
    }
}

#[test]
fn consensus_needs_enough_agreeing_policies() {
    // (min_agree, (cpu, density, calls), expected)
    let cases = [
        (2, (6, 8, 4), 6), // two agree on scale-out, the smaller applies
        (2, (6, 2, 4), 4), // one each way
        (2, (2, 3, 9), 3), // two agree on scale-in, the larger applies
        (3, (6, 8, 4), 4),
        (3, (5, 8, 7), 5),
        (1, (6, 2, 4), 6), // scale-out is checked first
    ];
    for (min_agree, (cpu, density, calls), expected) in cases {
        let result = run(
            CombinerKind::Consensus,
            min_agree,
            &three(cpu, density, calls),
        );
        assert_eq!(
            result, expected,
            "k {min_agree}, cpu {cpu}, density {density}, calls {calls}"
        );
    }
}

#[test]
fn weighted_average_rounds_to_nearest() {
    // weights: cpu 2, density 1, calls 1
    let cases = [
        ((6, 2, 4), 5), // (12 + 2 + 4) / 4 = 4.5, rounded away from zero
        ((4, 4, 4), 4),
        ((8, 4, 4), 6),
        ((2, 2, 3), 2), // 9 / 4 = 2.25
        ((1, 9, 9), 5), // 20 / 4 = 5
    ];
    for ((cpu, density, calls), expected) in cases {
        let result = run(
            CombinerKind::WeightedAverage,
            2,
            &three(cpu, density, calls),
        );
        assert_eq!(
            result, expected,
            "cpu {cpu}, density {density}, calls {calls}"
        );
    }
}

#[test]
fn weighted_average_skips_zero_weights() {
    let mut recommendations = three(8, 2, 2);
    recommendations[1].weight = 0.0;
    recommendations[2].weight = 0.0;
    let combined = combine(
        CombinerKind::WeightedAverage,
        NonZeroU32::MIN,
        &recommendations,
        CURRENT,
    );
    assert_eq!(combined.desired_nodes, 8);
    assert_eq!(combined.deciding_policies, vec![PolicyKind::Cpu]);
}

#[test]
fn combiners_hold_without_recommendations() {
    for combiner in CombinerKind::ALL {
        assert_eq!(run(combiner, 1, &[]), CURRENT, "{combiner}");
    }
}

#[test]
fn combiner_kind_parses_names() {
    for combiner in CombinerKind::ALL {
        assert_eq!(combiner.as_str().parse::<CombinerKind>(), Ok(combiner));
    }
    let error = "average".parse::<CombinerKind>().unwrap_err().to_string();
    assert!(error.contains("unknown combiner `average`"), "{error}");
    assert!(
        error.contains("highest_priority, most_aggressive, consensus, weighted_average"),
        "{error}"
    );
}
