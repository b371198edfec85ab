//! The invariants the simulator checks, and how a violation is reported.

use std::fmt;

use gristmill::clock::Millis;

/// An invariant of the architecture that the simulator checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invariant {
    /// At most one activation per grain exists on the running nodes while the cluster is
    /// settled.
    SingleActivation,
    /// Every acknowledged increment stays in the stored state.
    LostIncrement,
    /// Every call ends, with a reply or an error, by its deadline.
    CallDeadline,
    /// The orchestrator removes only nodes that hold no activations.
    RemovedWithActivations,
    /// No node starts a turn after another node declared it down.
    TurnAfterDown,
    /// Once faults stop, every running node's view lists exactly the running nodes.
    ViewsConverge,
}

/// A broken invariant, with what is needed to replay the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Seed of the run.
    pub seed: u64,
    /// Scenario step that was running.
    pub step: String,
    /// Virtual time of the violation.
    pub at: Millis,
    /// The invariant.
    pub invariant: Invariant,
    /// What broke, with grain, node and call ids.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} step `{}` at {}: {:?} violated: {}",
            self.seed, self.step, self.at, self.invariant, self.detail
        )
    }
}
