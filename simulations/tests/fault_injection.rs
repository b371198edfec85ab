//! Shows that the checks catch a broken directory: with compare-and-set skipped, racing
//! placements both win and the single-activation check fails within the CI seed set.

use gristmill::directory::DirectoryFault;
use gristmill_simulations::scenario::{Scenario, run};
use gristmill_simulations::{Invariant, SimConfig, World};

#[test]
fn skipped_compare_and_set_is_caught() {
    let scenario = Scenario::named("race", 5).expect("built-in scenario");
    let caught = (1..=30).find_map(|seed| {
        let mut world = World::new(SimConfig::new(seed));
        world.set_partition_hook(|partition| {
            partition.inject_fault(DirectoryFault::SkipCompareAndSet)
        });
        let outcome = run(world, &scenario, seed);
        outcome.violations.into_iter().next()
    });

    let violation = caught.expect("no seed caught the skipped compare-and-set");
    assert_eq!(
        violation.invariant,
        Invariant::SingleActivation,
        "{violation}"
    );
}

#[test]
fn race_without_fault_keeps_one_activation() {
    let scenario = Scenario::named("race", 5).expect("built-in scenario");
    for seed in 1..=3 {
        let outcome = run(World::new(SimConfig::new(seed)), &scenario, seed);
        assert!(outcome.violations.is_empty(), "{}", outcome.violations[0]);
    }
}
