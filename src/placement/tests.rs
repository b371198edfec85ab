//! Choices of every placement strategy on given loads and lifecycle states.

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::resource::resource_scores;
use super::*;
use crate::directory::partition_owner;
use crate::grain::GrainId;
use crate::membership::{Incarnation, NodeLoad, NodeState};

const GIB: u64 = 1 << 30;

fn node(name: &str) -> Incarnation {
    Incarnation {
        name: name.into(),
        boot_id: 1,
    }
}

fn candidate(name: &str, state: NodeState, load: NodeLoad) -> PlacementCandidate {
    PlacementCandidate {
        node: node(name),
        state,
        load,
        recent_placements: 0,
    }
}

fn active(name: &str, load: NodeLoad) -> PlacementCandidate {
    candidate(name, NodeState::Active, load)
}

fn load(cpu_percent: f64, memory_bytes: u64, activations: u64, calls_per_sec: f64) -> NodeLoad {
    NodeLoad {
        activations,
        calls_per_sec,
        cpu_percent,
        memory_bytes,
        ..NodeLoad::default()
    }
}

fn grain() -> GrainId {
    GrainId::new("counter", "c1")
}

/// Runs `strategy` with seeds 0 to 199 and returns the chosen node names.
fn choices(
    strategy: PlacementStrategy,
    local: &str,
    candidates: &[PlacementCandidate],
) -> Vec<String> {
    (0..200)
        .map(|seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            choose(
                strategy,
                &PlacementConfig::default(),
                &grain(),
                &node(local),
                candidates,
                &mut rng,
            )
            .expect("an Active candidate exists")
            .name
        })
        .collect()
}

#[test]
fn only_active_nodes_are_chosen() {
    // The inactive nodes are idle and include the local node, so every strategy would prefer
    // them if it ignored the lifecycle state.
    let idle = NodeLoad::default();
    let candidates = [
        candidate("local", NodeState::Draining, idle),
        candidate("joining", NodeState::Joining, idle),
        candidate("leaving", NodeState::Leaving, idle),
        candidate("dead", NodeState::Dead, idle),
        active("busy", load(190.0, 8 * GIB, 50_000, 900.0)),
    ];
    for strategy in PlacementStrategy::ALL {
        let chosen = choices(strategy, "local", &candidates);
        assert!(
            chosen.iter().all(|name| name == "busy"),
            "{strategy} chose {chosen:?}"
        );
    }
}

#[test]
fn no_active_node_is_an_error() {
    let idle = NodeLoad::default();
    let inactive = [
        candidate("a", NodeState::Joining, idle),
        candidate("b", NodeState::Draining, idle),
    ];
    let cases: [(&[PlacementCandidate], usize); 2] = [(&[], 0), (&inactive, 2)];
    for strategy in PlacementStrategy::ALL {
        for (candidates, count) in cases {
            let mut rng = StdRng::seed_from_u64(1);
            let result = choose(
                strategy,
                &PlacementConfig::default(),
                &grain(),
                &node("a"),
                candidates,
                &mut rng,
            );
            assert_eq!(
                result,
                Err(PlacementError::NoActiveNode { candidates: count }),
                "{strategy} with {count} candidates"
            );
        }
    }
}

#[test]
fn random_spreads_over_active_nodes() {
    let candidates = [
        active("a", NodeLoad::default()),
        active("b", NodeLoad::default()),
        active("c", NodeLoad::default()),
        candidate("d", NodeState::Draining, NodeLoad::default()),
    ];
    let chosen = choices(PlacementStrategy::Random, "a", &candidates);
    // 200 draws over three nodes: the expected count is 67, and 40 is over 4 sigma below it.
    for name in ["a", "b", "c"] {
        let count = chosen.iter().filter(|chosen| *chosen == name).count();
        assert!(count >= 40, "{name} chosen {count} times of 200");
    }
}

#[test]
fn prefer_local_cases() {
    let idle = NodeLoad::default();
    let cases = [
        // (local node, candidates, nodes allowed to be chosen)
        ("a", vec![active("a", idle), active("b", idle)], vec!["a"]),
        (
            "a",
            vec![
                candidate("a", NodeState::Draining, idle),
                active("b", idle),
                active("c", idle),
            ],
            vec!["b", "c"],
        ),
        (
            "x",
            vec![active("b", idle), active("c", idle)],
            vec!["b", "c"],
        ),
    ];
    for (local, candidates, allowed) in cases {
        let chosen = choices(PlacementStrategy::PreferLocal, local, &candidates);
        for name in &chosen {
            assert!(
                allowed.contains(&name.as_str()),
                "local {local} chose {name}"
            );
        }
        for name in &allowed {
            assert!(
                chosen.contains(&name.to_string()),
                "local {local} never chose {name}"
            );
        }
    }
}

#[test]
fn hash_matches_rendezvous_over_active_nodes() {
    let idle = NodeLoad::default();
    let candidates = [
        active("a", idle),
        candidate("b", NodeState::Draining, idle),
        active("c", idle),
        active("d", idle),
    ];
    let active_nodes = [node("a"), node("c"), node("d")];
    let mut reversed = candidates.to_vec();
    reversed.reverse();
    for key in 0..100 {
        let grain = GrainId::new("counter", format!("c{key}"));
        let expected = partition_owner(&grain, &active_nodes).cloned();
        for (order, list) in [("given", &candidates[..]), ("reversed", &reversed[..])] {
            let mut rng = StdRng::seed_from_u64(key);
            let chosen = choose(
                PlacementStrategy::Hash,
                &PlacementConfig::default(),
                &grain,
                &node("a"),
                list,
                &mut rng,
            )
            .ok();
            assert_eq!(chosen, expected, "grain {grain}, {order} order");
        }
    }
}

#[test]
fn least_loaded_of_two_picks_fewer_activations() {
    let cases = [
        // (activations and recent placements of a, of b, expected choice)
        ((10, 0), (20, 0), "a"),
        ((20, 0), (10, 0), "b"),
        // Recent placements count as activations until the next gossip shows them.
        ((5, 10), (10, 0), "b"),
        ((0, 0), (0, 1), "a"),
    ];
    for ((a_activations, a_recent), (b_activations, b_recent), expected) in cases {
        let mut a = active("a", load(0.0, 0, a_activations, 0.0));
        a.recent_placements = a_recent;
        let mut b = active("b", load(0.0, 0, b_activations, 0.0));
        b.recent_placements = b_recent;
        let chosen = choices(PlacementStrategy::LeastLoaded, "a", &[a, b]);
        assert!(
            chosen.iter().all(|name| name == expected),
            "a {a_activations}+{a_recent}, b {b_activations}+{b_recent}: chose {chosen:?}"
        );
    }
}

#[test]
fn least_loaded_never_picks_the_busiest_of_three() {
    let candidates = [
        active("a", load(0.0, 0, 10, 0.0)),
        active("b", load(0.0, 0, 20, 0.0)),
        active("c", load(0.0, 0, 30, 0.0)),
    ];
    let chosen = choices(PlacementStrategy::LeastLoaded, "a", &candidates);
    assert!(!chosen.iter().any(|name| name == "c"), "chose {chosen:?}");
    assert!(
        chosen.iter().any(|name| name == "b"),
        "b must win against c"
    );
}

#[test]
fn resource_optimized_cases() {
    let cases = [
        (
            "lower CPU wins",
            "x",
            vec![
                active("b", load(80.0, GIB, 10, 5.0)),
                active("c", load(20.0, GIB, 10, 5.0)),
            ],
            "c",
        ),
        (
            "lower memory wins",
            "x",
            vec![
                active("b", load(50.0, 4 * GIB, 10, 5.0)),
                active("c", load(50.0, GIB, 10, 5.0)),
            ],
            "c",
        ),
        (
            "lower call rate wins",
            "x",
            vec![
                active("b", load(50.0, GIB, 10, 500.0)),
                active("c", load(50.0, GIB, 10, 5.0)),
            ],
            "c",
        ),
        (
            // Scores 0.4 and 0.4 * 80 / 84 + 0.6 differ by 0.019, inside the 0.05 margin.
            "local within margin wins",
            "a",
            vec![
                active("a", load(84.0, GIB, 10, 5.0)),
                active("b", load(80.0, GIB, 10, 5.0)),
            ],
            "a",
        ),
        (
            // Scores differ by 0.4 * 0.5 = 0.2, beyond the margin.
            "local beyond margin loses",
            "a",
            vec![
                active("a", load(100.0, GIB, 10, 5.0)),
                active("b", load(50.0, GIB, 10, 5.0)),
            ],
            "b",
        ),
        (
            "idle cluster prefers local",
            "a",
            vec![
                active("a", NodeLoad::default()),
                active("b", NodeLoad::default()),
            ],
            "a",
        ),
    ];
    for (case, local, candidates, expected) in cases {
        let chosen = choices(PlacementStrategy::ResourceOptimized, local, &candidates);
        assert!(
            chosen.iter().all(|name| name == expected),
            "{case}: chose {chosen:?}"
        );
    }
}

#[test]
fn resource_optimized_counts_recent_placements() {
    let b = active("b", load(50.0, GIB, 10, 5.0));
    let mut c = active("c", load(50.0, GIB, 0, 5.0));
    c.recent_placements = 20;
    let chosen = choices(PlacementStrategy::ResourceOptimized, "x", &[b, c]);
    assert!(chosen.iter().all(|name| name == "b"), "chose {chosen:?}");
}

#[test]
fn resource_scores_table() {
    let base = PlacementConfig::default();
    let cpu_only = PlacementConfig {
        cpu_weight: 2.0,
        memory_weight: 0.0,
        activations_weight: 0.0,
        calls_weight: 0.0,
        ..base
    };
    let cases = [
        (
            "each figure over its maximum",
            base,
            vec![load(50.0, GIB, 10, 0.0), load(100.0, 2 * GIB, 0, 0.0)],
            // 0.4 * 0.5 + 0.2 * 0.5 + 0.3 * 1 and 0.4 * 1 + 0.2 * 1 + 0.3 * 0.
            vec![0.6, 0.6],
        ),
        (
            "weights are relative",
            cpu_only,
            vec![load(25.0, GIB, 10, 1.0), load(100.0, 0, 0, 0.0)],
            vec![0.25, 1.0],
        ),
        (
            "idle nodes score zero",
            base,
            vec![NodeLoad::default(), NodeLoad::default()],
            vec![0.0, 0.0],
        ),
        (
            "faulty figures count as zero",
            base,
            vec![load(f64::NAN, 0, 1, -3.0), load(50.0, 0, 1, 0.0)],
            vec![0.3, 0.7],
        ),
    ];
    for (case, config, loads, expected) in cases {
        let candidates: Vec<PlacementCandidate> = loads
            .into_iter()
            .enumerate()
            .map(|(i, load)| active(&format!("n{i}"), load))
            .collect();
        let refs: Vec<&PlacementCandidate> = candidates.iter().collect();
        let scores = resource_scores(&config, &refs);
        assert_eq!(scores.len(), expected.len(), "{case}");
        for (score, expected) in scores.iter().zip(&expected) {
            assert!(
                (score - expected).abs() < 1e-9,
                "{case}: scores {scores:?}, expected {expected}"
            );
        }
    }
}
