//! Runs every scenario over a fixed seed set and fails with the seed and step of a violation.
//!
//! Goal: catch regressions of the protocol cores on every `cargo test`. Method: seeds 1 to 30
//! rotate through the built-in scenarios (seed modulo the scenario count picks one), so each
//! scenario runs four or five seeds. Seeds 17 and 24 reproduced gaps of the directory sync
//! (a re-assertion lost, and the view confirmed anyway), which are fixed. Seed 164 (`stall`)
//! drew random boot ids: a node declared down restarted with a smaller boot id than its dead
//! incarnation, lost foca's address conflict and was declared down on every join. Boot ids
//! are now time-ordered, as on a real node.

use gristmill_simulations::scenario::{SCENARIOS, Scenario, run};
use gristmill_simulations::{SimConfig, World};

const NODES: usize = 5;
/// Seeds that failed once, with the scenario they failed in, run on top of `1..=30`. The
/// scenario is fixed here because a new scenario shifts the rotation by seed.
const REGRESSION_SEEDS: [(u64, &str); 1] = [(164, "stall")];

fn scenario_for(seed: u64) -> Scenario {
    let name = SCENARIOS[(seed % SCENARIOS.len() as u64) as usize];
    Scenario::named(name, NODES).expect("built-in scenario")
}

fn ci_runs() -> impl Iterator<Item = (u64, Scenario)> {
    let rotation = (1..=30).map(|seed| (seed, scenario_for(seed)));
    let regressions = REGRESSION_SEEDS.into_iter().map(|(seed, name)| {
        let scenario = Scenario::named(name, NODES).expect("built-in scenario");
        (seed, scenario)
    });
    rotation.chain(regressions)
}

#[test]
fn ci_seeds_keep_every_invariant() {
    for (seed, scenario) in ci_runs() {
        let outcome = run(World::new(SimConfig::new(seed)), &scenario, seed);
        assert!(
            outcome.violations.is_empty(),
            "{}\nreplay: cargo run --release -p gristmill-simulations -- replay {seed} --scenario {}",
            outcome.violations[0],
            scenario.name
        );
        assert!(
            outcome.stats.calls_acked > 0,
            "seed {seed} ({}) acknowledged no call",
            scenario.name
        );
    }
}
