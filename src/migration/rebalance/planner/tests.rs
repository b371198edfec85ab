use std::collections::BTreeMap;
use std::num::NonZeroUsize;

use super::super::test_support::{idle_grains, member, member_with, sample};
use super::*;

const NOW: Millis = Millis(1_000_000);
const WINDOW: Duration = Duration::from_secs(10);

/// Defaults, except that the relative move limit does not bind.
fn config() -> RebalancerConfig {
    RebalancerConfig {
        max_move_fraction: 1.0,
        ..RebalancerConfig::default()
    }
}

fn plan_with(
    config: &RebalancerConfig,
    local: &str,
    members: &[MemberInfo],
    activations: &[ActivationSample],
    last_moved: &HashMap<GrainId, Millis>,
) -> RoundPlan {
    let input = RoundInput {
        local,
        members,
        activations,
        sample_window: WINDOW,
        last_moved,
        now: NOW,
    };
    plan_round(config, &input)
}

fn plan(local: &str, members: &[MemberInfo], activations: &[ActivationSample]) -> RoundPlan {
    plan_with(&config(), local, members, activations, &HashMap::new())
}

/// Counts the planned moves per target node.
fn moves_by_target(plan: &RoundPlan) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for planned in &plan.moves {
        *counts.entry(planned.target.as_str()).or_default() += 1;
    }
    counts
}

#[test]
fn node_score_weighs_each_figure() {
    // (activations, calls/s, mailbox depth, expected score under the default weights)
    let cases = [
        (0, 0.0, 0, 0.0),
        (10, 0.0, 0, 10.0),
        (0, 50.0, 0, 10.0),
        (0, 0.0, 7, 7.0),
        (10, 50.0, 7, 27.0),
    ];
    for (activations, calls_per_sec, mailbox_depth_total, expected) in cases {
        let load = NodeLoad {
            activations,
            calls_per_sec,
            mailbox_depth_total,
            ..NodeLoad::default()
        };
        let score = node_score(&RebalancerConfig::default(), &load);
        assert!(
            (score - expected).abs() < 1e-9,
            "{load:?}: score {score}, expected {expected}"
        );
    }
}

#[test]
fn grain_score_uses_sample_window() {
    // (turns, mailbox depth, window, expected score under the default weights)
    let cases = [
        (0, 0, WINDOW, 1.0),
        (100, 0, WINDOW, 3.0),
        (100, 0, Duration::from_secs(5), 5.0),
        (100, 0, Duration::ZERO, 1.0),
        (0, 4, WINDOW, 5.0),
    ];
    for (turns, mailbox_depth, window, expected) in cases {
        let grain = ActivationSample {
            mailbox_depth,
            ..sample("g", turns)
        };
        let score = grain_score(&RebalancerConfig::default(), &grain, window);
        assert!(
            (score - expected).abs() < 1e-9,
            "{turns} turns, mailbox {mailbox_depth}, window {window:?}: score {score}, expected {expected}"
        );
    }
}

#[test]
fn hot_node_sheds_down_to_mean() {
    let members = [member("a", 14), member("b", 6)];
    let plan = plan("a", &members, &idle_grains("g", 14));
    assert_eq!(plan.local_load, 14.0);
    assert_eq!(plan.mean_load, 10.0);
    assert_eq!(moves_by_target(&plan), BTreeMap::from([("b", 4)]));
    assert_eq!(plan.note, None);
}

#[test]
fn balanced_cluster_moves_nothing() {
    // Mean 10, band 9 to 11: `a` at the upper edge is still inside.
    let members = [member("a", 11), member("b", 10), member("c", 9)];
    for local in ["a", "b", "c"] {
        let plan = plan(local, &members, &idle_grains("g", 11));
        assert!(plan.moves.is_empty(), "{local} planned {:?}", plan.moves);
        assert_eq!(plan.note, Some(PlanNote::Balanced { tolerance: 0.10 }));
    }
}

#[test]
fn node_in_band_fills_node_below_band() {
    // Mean 100, band 90 to 110: `e` is below it, so every node above the mean sheds a quarter
    // of e's deficit.
    let members = [
        member("a", 105),
        member("b", 105),
        member("c", 105),
        member("d", 105),
        member("e", 80),
    ];
    let plan = plan("a", &members, &idle_grains("g", 105));
    assert_eq!(moves_by_target(&plan), BTreeMap::from([("e", 5)]));
    assert!(
        plan.moves[0]
            .reason
            .contains("e load 80.00 is below the band"),
        "reason: {}",
        plan.moves[0].reason
    );
}

#[test]
fn node_below_mean_never_sheds() {
    let members = [member("a", 30), member("b", 8), member("c", 2)];
    let plan = plan("b", &members, &idle_grains("g", 8));
    assert!(plan.moves.is_empty(), "b planned {:?}", plan.moves);
}

#[test]
fn coldest_target_first_without_overshoot() {
    // Mean 10: `c` has room for 8, `b` for 2.
    let members = [member("a", 20), member("b", 8), member("c", 2)];
    let plan = plan("a", &members, &idle_grains("g", 20));
    assert_eq!(plan.moves[0].target, "c");
    assert_eq!(moves_by_target(&plan), BTreeMap::from([("b", 2), ("c", 8)]));
}

#[test]
fn hot_nodes_split_cold_node_deficit() {
    // Mean 10: `c` lacks 10, and `a` and `b` each have half the excess.
    let members = [member("a", 15), member("b", 15), member("c", 0)];
    for local in ["a", "b"] {
        let plan = plan(local, &members, &idle_grains("g", 15));
        assert_eq!(
            moves_by_target(&plan),
            BTreeMap::from([("c", 5)]),
            "{local}"
        );
    }
}

#[test]
fn hottest_grain_moves_first() {
    let members = [member("a", 14), member("b", 6)];
    let mut grains = idle_grains("g", 12);
    grains.push(sample("warm", 50)); // 5 calls/s: score 2
    grains.push(sample("hot", 100)); // 10 calls/s: score 3
    let plan = plan("a", &members, &grains);

    let keys: Vec<&str> = plan.moves.iter().map(|m| m.grain.key.as_str()).collect();
    // Excess 4: `hot` leaves 1, too little for `warm`, enough for one idle grain.
    assert_eq!(keys, ["hot", "g-000"]);
    assert!(
        plan.moves[0]
            .reason
            .contains("grain load 3.00 (10.0 calls/s, mailbox 0)"),
        "reason: {}",
        plan.moves[0].reason
    );
}

#[test]
fn grain_heavier_than_excess_stays() {
    // Excess 2: the grain of score 3 would push `a` below the mean, so only idle ones move.
    let members = [member("a", 12), member("b", 8)];
    let mut grains = idle_grains("g", 11);
    grains.push(sample("hot", 100));
    let plan = plan("a", &members, &grains);
    assert!(plan.moves.iter().all(|m| m.grain.key != "hot"));
    assert_eq!(plan.moves.len(), 2);

    let plan = plan_with(
        &config(),
        "a",
        &members,
        &[sample("hot", 100)],
        &HashMap::new(),
    );
    assert!(plan.moves.is_empty());
    assert_eq!(plan.note, Some(PlanNote::NoFit));
}

#[test]
fn inactive_nodes_are_never_targets() {
    for state in [
        NodeState::Joining,
        NodeState::Draining,
        NodeState::Leaving,
        NodeState::Dead,
    ] {
        // `x` is the coldest, but not Active, so it is neither a target nor part of the mean.
        let members = [
            member("a", 20),
            member("b", 10),
            member_with("x", state, NodeLoad::default()),
        ];
        let plan = plan("a", &members, &idle_grains("g", 20));
        assert_eq!(plan.mean_load, 15.0, "{state:?}");
        assert_eq!(
            moves_by_target(&plan),
            BTreeMap::from([("b", 5)]),
            "{state:?}"
        );
    }
}

#[test]
fn round_stops_at_absolute_limit() {
    let config = RebalancerConfig {
        max_moves_per_round: NonZeroUsize::new(3).expect("not zero"),
        ..config()
    };
    let members = [member("a", 20), member("b", 0)];
    let plan = plan_with(
        &config,
        "a",
        &members,
        &idle_grains("g", 20),
        &HashMap::new(),
    );
    assert_eq!(plan.moves.len(), 3);
    assert_eq!(plan.note, Some(PlanNote::LimitReached { limit: 3 }));
}

#[test]
fn relative_limit_rounds_up() {
    // (activations, max_move_fraction, expected limit) with the absolute limit at 200.
    let cases = [
        (0, 0.1, 0),
        (5, 0.1, 1),
        (14, 0.1, 2),
        (100, 0.1, 10),
        (100, 0.25, 25),
        (3_000, 0.1, 200),
    ];
    for (activations, max_move_fraction, expected) in cases {
        let config = RebalancerConfig {
            max_move_fraction,
            ..RebalancerConfig::default()
        };
        assert_eq!(
            move_limit(&config, activations),
            expected,
            "{activations} activations at {max_move_fraction}"
        );
    }
}

#[test]
fn default_relative_limit_binds() {
    let members = [member("a", 100), member("b", 0)];
    let plan = plan_with(
        &RebalancerConfig::default(),
        "a",
        &members,
        &idle_grains("g", 100),
        &HashMap::new(),
    );
    assert_eq!(plan.moves.len(), 10);
    assert_eq!(plan.note, Some(PlanNote::LimitReached { limit: 10 }));
}

#[test]
fn recently_moved_grains_wait() {
    // (time since the grain's last move, whether it may move) with the default 60 s interval.
    let cases = [
        (Duration::ZERO, false),
        (Duration::from_secs(30), false),
        (Duration::from_millis(59_999), false),
        (Duration::from_secs(60), true),
        (Duration::from_secs(600), true),
    ];
    let members = [member("a", 12), member("b", 8)];
    for (since, movable) in cases {
        let grain = sample("only", 0);
        let last_moved = HashMap::from([(grain.grain.clone(), NOW - since)]);
        let plan = plan_with(&config(), "a", &members, &[grain], &last_moved);
        assert_eq!(plan.moves.len() == 1, movable, "moved {since:?} ago");
        if !movable {
            assert_eq!(plan.note, Some(PlanNote::NothingMovable));
        }
    }
}

#[test]
fn immovable_grains_stay() {
    let members = [member("a", 12), member("b", 8)];
    let mut grains = idle_grains("g", 12);
    for grain in &mut grains[..10] {
        grain.immovable = true;
    }
    let some_movable = plan("a", &members, &grains);
    let keys: Vec<&str> = some_movable
        .moves
        .iter()
        .map(|m| m.grain.key.as_str())
        .collect();
    assert_eq!(keys, ["g-010", "g-011"]);

    for grain in &mut grains {
        grain.immovable = true;
    }
    let none_movable = plan("a", &members, &grains);
    assert!(none_movable.moves.is_empty());
    assert_eq!(none_movable.note, Some(PlanNote::NothingMovable));
}

#[test]
fn inactive_local_node_moves_nothing() {
    let load = NodeLoad {
        activations: 50,
        ..NodeLoad::default()
    };
    let members = [member_with("a", NodeState::Draining, load), member("b", 0)];
    let plan = plan("a", &members, &idle_grains("g", 50));
    assert!(plan.moves.is_empty());
    assert_eq!(plan.note, Some(PlanNote::NotActive));
}

#[test]
fn single_node_moves_nothing() {
    let plan = plan("a", &[member("a", 50)], &idle_grains("g", 50));
    assert!(plan.moves.is_empty());
    assert_eq!(plan.note, Some(PlanNote::NoPeers));
}

#[test]
fn call_rate_and_mailbox_make_node_hot() {
    // Equal activation counts, but `a` serves 50 calls/s and has 5 queued messages: score 25
    // against 10, mean 17.5.
    let busy = NodeLoad {
        activations: 10,
        calls_per_sec: 50.0,
        mailbox_depth_total: 5,
        ..NodeLoad::default()
    };
    let members = [member_with("a", NodeState::Active, busy), member("b", 10)];
    let grains: Vec<ActivationSample> = (0..10)
        .map(|i| sample(&format!("g-{i}"), 50)) // 5 calls/s each: score 2
        .collect();
    let plan = plan("a", &members, &grains);
    assert_eq!(plan.local_load, 25.0);
    assert_eq!(plan.mean_load, 17.5);
    // Excess 7.5 and room 7.5 fit three grains of score 2.
    assert_eq!(moves_by_target(&plan), BTreeMap::from([("b", 3)]));
}

/// Goal: the scenario of the process test, on the planner alone. Three nodes hold 100 idle
/// grains each and a fourth is empty. Every round, each node plans on the same view and all
/// moves apply at once. The cluster must reach ±15% of the mean within ten rounds under the
/// default limits, then plan no moves for two rounds in a row.
#[test]
fn joining_node_converges_then_rounds_stop() {
    let config = RebalancerConfig::default();
    let names = ["node-0", "node-1", "node-2", "node-3"];
    let mut grains: BTreeMap<&str, Vec<ActivationSample>> = BTreeMap::new();
    for (index, name) in names.iter().enumerate().take(3) {
        let keys = (0..100).map(|i| sample(&format!("n{index}-{i:03}"), 0));
        grains.insert(name, keys.collect());
    }
    grains.insert("node-3", Vec::new());

    let mut quiet_rounds = 0;
    for round in 1..=12 {
        let members: Vec<MemberInfo> = names
            .iter()
            .map(|name| member(name, grains[name].len() as u64))
            .collect();
        let plans: Vec<(&str, RoundPlan)> = names
            .iter()
            .map(|name| {
                (
                    *name,
                    plan_with(&config, name, &members, &grains[name], &HashMap::new()),
                )
            })
            .collect();
        let moved: usize = plans.iter().map(|(_, plan)| plan.moves.len()).sum();
        for (source, plan) in plans {
            for planned in plan.moves {
                let list = grains.get_mut(source).expect("source exists");
                let index = list
                    .iter()
                    .position(|g| g.grain == planned.grain)
                    .expect("planned grain is on its source");
                let grain = list.remove(index);
                grains
                    .get_mut(planned.target.as_str())
                    .expect("target exists")
                    .push(grain);
            }
        }
        if moved == 0 {
            quiet_rounds += 1;
        } else {
            assert_eq!(
                quiet_rounds, 0,
                "round {round} moved {moved} after a quiet round"
            );
        }
        if quiet_rounds == 2 {
            for name in names {
                let count = grains[name].len() as f64;
                assert!(
                    (count - 75.0).abs() <= 75.0 * 0.15,
                    "{name} holds {count} grains after round {round}, mean 75"
                );
            }
            assert!(round <= 10, "took {round} rounds");
            return;
        }
    }
    let counts: Vec<usize> = names.iter().map(|name| grains[name].len()).collect();
    panic!("no two quiet rounds within 12 rounds; grains per node: {counts:?}");
}
