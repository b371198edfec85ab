//! Shows that one seed always produces the same run, event for event.

use gristmill_simulations::scale::{ScaleOptions, run_membership_with};
use gristmill_simulations::scenario::{Scenario, run_seed};

#[test]
fn same_seed_gives_same_trace_hash() {
    let scenario = Scenario::named("crash-restart", 5).expect("built-in scenario");

    let first = run_seed(&scenario, 7);
    let second = run_seed(&scenario, 7);

    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first.stats.events, second.stats.events);
    assert_eq!(first.stats.calls_acked, second.stats.calls_acked);
}

#[test]
fn different_seeds_give_different_traces() {
    let scenario = Scenario::named("crash-restart", 5).expect("built-in scenario");

    let first = run_seed(&scenario, 7);
    let second = run_seed(&scenario, 8);

    assert_ne!(first.trace_hash, second.trace_hash);
}

/// A preloaded scale run hands every node the whole cluster in one step, and that step must
/// depend on the seed alone too.
#[test]
fn same_seed_gives_same_preloaded_scale_run() {
    let options = ScaleOptions {
        preloaded: true,
        ..ScaleOptions::new(60, 3)
    };

    let first = run_membership_with(options);
    let second = run_membership_with(options);

    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first.events, second.events);
}
