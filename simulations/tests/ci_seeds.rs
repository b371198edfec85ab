//! Runs every scenario over a fixed seed set and fails with the seed and step of a violation.
//!
//! Goal: catch regressions of the protocol cores on every `cargo test`. Method: seeds 1 to 30
//! rotate through the built-in scenarios (seed modulo the scenario count picks one), so each
//! scenario runs four or five seeds. Seeds 17 and 24 are left out: they reproduce known gaps
//! of the directory glue (see the README), and `known_glue_gaps` keeps them, ignored, until
//! the fix.

use gristmill_simulations::scenario::{SCENARIOS, Scenario, run_seed};

const NODES: usize = 5;
const KNOWN_GAP_SEEDS: [u64; 2] = [17, 24];

fn scenario_for(seed: u64) -> Scenario {
    let name = SCENARIOS[(seed % SCENARIOS.len() as u64) as usize];
    Scenario::named(name, NODES).expect("built-in scenario")
}

#[test]
fn ci_seeds_keep_every_invariant() {
    for seed in (1..=30).filter(|seed| !KNOWN_GAP_SEEDS.contains(seed)) {
        let scenario = scenario_for(seed);
        let outcome = run_seed(&scenario, seed);
        assert!(
            outcome.violations.is_empty(),
            "{}\nreplay: cargo run --release -p gristmill-simulations -- replay {seed}",
            outcome.violations[0]
        );
        assert!(
            outcome.stats.calls_acked > 0,
            "seed {seed} ({}) acknowledged no call",
            scenario.name
        );
    }
}

/// Seeds that violate single activation because of gaps in the directory glue, not in the
/// simulator. Seed 24: a re-assertion rejected with `NotOwner` is never retried. Seed 17: a
/// re-assertion sent to an owner that has just died is lost, and the host sends it again only
/// at its next membership change, after the new owner's readiness window closed on its grace
/// period. Run with `--ignored`.
#[test]
#[ignore = "reproduces a known directory glue gap; see simulations/README.md"]
fn known_glue_gaps() {
    for seed in KNOWN_GAP_SEEDS {
        let outcome = run_seed(&scenario_for(seed), seed);
        assert!(outcome.violations.is_empty(), "{}", outcome.violations[0]);
    }
}
