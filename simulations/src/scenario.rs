//! Scenarios as readable scripts of steps, and the runner that checks invariants throughout.
//!
//! Each step runs to completion in virtual time; after every step the runner checks that no
//! acknowledged increment is lost and that no open call is past its deadline, and, while the
//! cluster is settled, that every grain has at most one activation. Steps that inject faults
//! mark the cluster turbulent; [`Step::Settle`] waits until the views converge and the
//! directory had time to resolve conflicts, then marks it settled again.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use gristmill::clock::Millis;
use gristmill::grain::GrainId;
use gristmill::membership::{Incarnation, NodeState};
use gristmill::scaling::{
    Action, ActionOutcome, ClusterSnapshot, NodeSnapshot, ScalingConfig, ScalingCore,
};

use crate::checks::{Invariant, Violation};
use crate::network::LinkFaults;
use crate::world::{SimConfig, Stats, World};

/// Longest time [`Step::Settle`] waits for the views to converge. Foca re-announces to down
/// members every 65 s in its LAN preset, so a healed partition may take that long to merge.
const CONVERGE_WITHIN: Duration = Duration::from_secs(150);
/// How often the runner polls conditions while it waits.
const POLL: Duration = Duration::from_millis(100);
/// Longest time a scaling step waits for its nodes to join or drain.
const SCALE_WITHIN: Duration = Duration::from_secs(60);

/// Which node a fault step targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRef {
    /// The node with this index (`node-{index}`).
    Index(usize),
    /// A running node chosen with the run's RNG.
    Random,
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeRef::Index(index) => write!(f, "node-{index}"),
            NodeRef::Random => f.write_str("a random node"),
        }
    }
}

/// One step of a scenario.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Start `nodes` nodes and wait until all are Active and agree on the membership.
    Start {
        /// Number of nodes.
        nodes: usize,
    },
    /// Start a stream of increment calls in the background: `calls_per_sec` calls spread at
    /// random over `duration`, each to one of `grains` grains.
    Load {
        /// Calls per second.
        calls_per_sec: u32,
        /// Length of the stream.
        duration: Duration,
        /// Number of distinct grains.
        grains: u32,
    },
    /// Let time pass.
    Run(Duration),
    /// Kill a node's process without warning.
    Crash(NodeRef),
    /// Restart a crashed node under its name, with a new boot id.
    Restart(NodeRef),
    /// Freeze a node's process.
    Stall {
        /// The node.
        node: NodeRef,
        /// How long it handles no event.
        duration: Duration,
    },
    /// Cut `minority` random running nodes off from the rest.
    Partition {
        /// Size of the cut-off group.
        minority: usize,
        /// Cut only the direction from the group to the rest.
        one_way: bool,
    },
    /// Make every link lossy, duplicating and reordering.
    Noise(LinkFaults),
    /// Remove every partition and link fault.
    Heal,
    /// Move to `nodes` Active nodes through the scaling core, draining before removal.
    ScaleTo(u32),
    /// Wait until faults have stopped and the cluster converged, then check it strictly.
    Settle,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Start { nodes } => write!(f, "start {nodes} nodes"),
            Step::Load {
                calls_per_sec,
                duration,
                grains,
            } => write!(
                f,
                "load {calls_per_sec} calls/s for {duration:?} over {grains} grains"
            ),
            Step::Run(duration) => write!(f, "run {duration:?}"),
            Step::Crash(node) => write!(f, "crash {node}"),
            Step::Restart(node) => write!(f, "restart {node}"),
            Step::Stall { node, duration } => write!(f, "stall {node} for {duration:?}"),
            Step::Partition { minority, one_way } => {
                let kind = if *one_way { "one-way" } else { "full" };
                write!(f, "{kind} partition of {minority} nodes")
            }
            Step::Noise(faults) => write!(
                f,
                "noise: {:.0}% loss, {:.0}% duplicates, {:.0}% reordered",
                faults.loss * 100.0,
                faults.duplicate * 100.0,
                faults.reorder * 100.0
            ),
            Step::Heal => f.write_str("heal the network"),
            Step::ScaleTo(nodes) => write!(f, "scale to {nodes} nodes"),
            Step::Settle => f.write_str("settle"),
        }
    }
}

/// A named script of steps.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Name used on the command line.
    pub name: &'static str,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// Names of the built-in scenarios.
pub const SCENARIOS: [&str; 7] = [
    "crash-restart",
    "partition",
    "one-way-partition",
    "stall",
    "noise",
    "scale",
    "race",
];

impl Scenario {
    /// Returns the built-in scenario `name` for a cluster of `nodes` nodes.
    pub fn named(name: &str, nodes: usize) -> Option<Scenario> {
        let nodes = nodes.max(3);
        let load = |seconds| Step::Load {
            calls_per_sec: 40,
            duration: Duration::from_secs(seconds),
            grains: 24,
        };
        let secs = Duration::from_secs;
        let steps = match name {
            "crash-restart" => vec![
                Step::Start { nodes },
                load(40),
                Step::Run(secs(5)),
                Step::Crash(NodeRef::Random),
                Step::Run(secs(10)),
                Step::Restart(NodeRef::Random),
                Step::Run(secs(5)),
                Step::Settle,
                Step::Run(secs(10)),
            ],
            "partition" | "one-way-partition" => vec![
                Step::Start { nodes },
                load(45),
                Step::Run(secs(5)),
                Step::Partition {
                    minority: nodes / 2,
                    one_way: name == "one-way-partition",
                },
                Step::Run(secs(15)),
                Step::Heal,
                Step::Settle,
                Step::Run(secs(10)),
            ],
            "stall" => vec![
                Step::Start { nodes },
                load(40),
                Step::Run(secs(5)),
                Step::Stall {
                    node: NodeRef::Random,
                    duration: secs(8),
                },
                Step::Run(secs(10)),
                Step::Settle,
                Step::Run(secs(10)),
            ],
            "noise" => vec![
                Step::Start { nodes },
                load(40),
                Step::Run(secs(5)),
                Step::Noise(LinkFaults::NOISY),
                Step::Run(secs(20)),
                Step::Heal,
                Step::Settle,
                Step::Run(secs(10)),
            ],
            "scale" => vec![
                Step::Start { nodes },
                load(60),
                Step::Run(secs(3)),
                Step::ScaleTo(nodes as u32 + 2),
                Step::Settle,
                Step::Run(secs(3)),
                Step::ScaleTo(nodes as u32 - 1),
                Step::Settle,
                Step::Run(secs(5)),
            ],
            // No faults: many callers race to activate the same few grains, which only the
            // directory's compare-and-set keeps to one activation each.
            "race" => vec![
                Step::Start { nodes },
                Step::Load {
                    calls_per_sec: 200,
                    duration: secs(10),
                    grains: 8,
                },
                Step::Run(secs(12)),
            ],
            _ => return None,
        };
        let name = SCENARIOS.iter().find(|known| **known == name)?;
        Some(Scenario { name, steps })
    }
}

/// The result of one seeded run.
#[derive(Debug)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// The scenario's name.
    pub scenario: &'static str,
    /// Violations, in the order found; the run stops at the step of the first.
    pub violations: Vec<Violation>,
    /// Hash over every handled event.
    pub trace_hash: u64,
    /// Running totals.
    pub stats: Stats,
    /// Virtual time at the end.
    pub ended_at: Millis,
    /// Readable log, if the config asked for one.
    pub log: Vec<String>,
}

/// Runs `scenario` with `seed` and default settings.
pub fn run_seed(scenario: &Scenario, seed: u64) -> Outcome {
    run(World::new(SimConfig::new(seed)), scenario, seed)
}

/// Runs `scenario` in `world`, which the caller may have configured (a fault hook, a log).
pub fn run(mut world: World, scenario: &Scenario, seed: u64) -> Outcome {
    let mut runner = Runner {
        world: &mut world,
        load_ends_at: Millis(0),
    };
    for (index, step) in scenario.steps.iter().enumerate() {
        runner
            .world
            .set_step(format!("{} #{}: {step}", scenario.name, index + 1));
        runner.run_step(step);
        runner.check_after_step();
        if !runner.world.violations().is_empty() {
            break;
        }
    }
    if runner.world.violations().is_empty() {
        runner.world.set_step(format!("{} end", scenario.name));
        runner.finish();
    }
    Outcome {
        seed,
        scenario: scenario.name,
        violations: world.violations().to_vec(),
        trace_hash: world.trace_hash(),
        stats: world.stats(),
        ended_at: world.now(),
        log: world.take_log(),
    }
}

struct Runner<'a> {
    world: &'a mut World,
    load_ends_at: Millis,
}

impl Runner<'_> {
    fn run_step(&mut self, step: &Step) {
        match step {
            Step::Start { nodes } => {
                for _ in 0..*nodes {
                    self.world.add_node();
                    self.world.run_for(Duration::from_millis(200));
                }
                self.settle();
            }
            Step::Load {
                calls_per_sec,
                duration,
                grains,
            } => {
                let total = u64::from(*calls_per_sec) * duration.as_secs().max(1);
                let span = duration.as_millis() as u64;
                for _ in 0..total {
                    let key = self.world.random_below(u64::from(*grains));
                    let after = Duration::from_millis(self.world.random_below(span));
                    let grain = GrainId::new("counter", format!("g{key}"));
                    self.world.schedule_call(grain, after);
                }
                self.load_ends_at = self.load_ends_at.max(self.world.now() + *duration);
            }
            Step::Run(duration) => self.world.run_for(*duration),
            Step::Crash(node) => {
                self.world.set_turbulent(true);
                if let Some(slot) = self.pick(*node, true) {
                    self.world.crash(slot);
                }
            }
            Step::Restart(node) => {
                self.world.set_turbulent(true);
                if let Some(slot) = self.pick(*node, false) {
                    self.world.restart(slot);
                }
            }
            Step::Stall { node, duration } => {
                self.world.set_turbulent(true);
                if let Some(slot) = self.pick(*node, true) {
                    self.world.stall(slot, *duration);
                }
            }
            Step::Partition { minority, one_way } => {
                self.world.set_turbulent(true);
                let mut running = self.running_slots();
                let mut group = Vec::new();
                while group.len() < *minority && !running.is_empty() {
                    let index = self.world.random_below(running.len() as u64) as usize;
                    group.push(running.remove(index));
                }
                let rest: Vec<usize> = (0..self.world.slots().len())
                    .filter(|slot| !group.contains(slot))
                    .collect();
                self.world.network_mut().cut(&group, &rest, !one_way);
            }
            Step::Noise(faults) => {
                self.world.set_turbulent(true);
                self.world.network_mut().set_default(*faults);
            }
            Step::Heal => self.world.network_mut().heal(),
            Step::ScaleTo(nodes) => {
                self.world.set_turbulent(true);
                self.scale_to(*nodes);
            }
            Step::Settle => self.settle(),
        }
    }

    fn running_slots(&self) -> Vec<usize> {
        (0..self.world.slots().len())
            .filter(|&slot| self.world.slots()[slot].node.is_some())
            .collect()
    }

    /// Resolves a node reference: among running nodes, or among crashed ones to restart.
    fn pick(&mut self, node: NodeRef, running: bool) -> Option<usize> {
        match node {
            NodeRef::Index(index) => Some(index).filter(|&i| i < self.world.slots().len()),
            NodeRef::Random => {
                let candidates: Vec<usize> = (0..self.world.slots().len())
                    .filter(|&slot| {
                        let slot = &self.world.slots()[slot];
                        slot.node.is_some() == running && !slot.removed
                    })
                    .collect();
                if candidates.is_empty() {
                    return None;
                }
                let index = self.world.random_below(candidates.len() as u64) as usize;
                Some(candidates[index])
            }
        }
    }

    /// Waits until the cluster converged, lets the directory resolve conflicts, and checks
    /// the strict invariants.
    fn settle(&mut self) {
        if self.world.network_mut().is_faulty() {
            self.world.violate(
                Invariant::ViewsConverge,
                "settle needs the faults healed first; the scenario is wrong".into(),
            );
            return;
        }
        let give_up = self.world.now() + CONVERGE_WITHIN;
        while !self.is_converged() {
            if self.world.now() >= give_up {
                let detail = format!(
                    "views did not converge within {CONVERGE_WITHIN:?}: {}",
                    self.world.view_differences().join("; ")
                );
                self.world.violate(Invariant::ViewsConverge, detail);
                return;
            }
            self.world.run_for(POLL);
        }
        // Hand-offs, re-assertions and the readiness window need this long after the last
        // view change; conflicts found then deactivate the losers.
        let grace = self.world_grace() + Duration::from_secs(2);
        self.world.run_for(grace);
        self.world.set_turbulent(false);
        self.world.check_single_activation();
    }

    fn world_grace(&self) -> Duration {
        SimConfig::new(0).node.directory.handoff_grace
    }

    /// Returns whether every running node is Active or Draining and the views agree.
    fn is_converged(&self) -> bool {
        let all_ready = self.world.slots().iter().all(|slot| match &slot.node {
            Some(node) => matches!(node.state(), NodeState::Active | NodeState::Draining),
            None => slot.removed || slot.crashed,
        });
        all_ready && self.world.views_agree()
    }

    fn check_after_step(&mut self) {
        self.world.check_call_deadlines();
        self.world.check_acknowledged_increments();
        if !self.world.is_turbulent() {
            self.world.check_single_activation();
        }
    }

    /// Lets the load end and every call finish, then checks everything once more.
    fn finish(&mut self) {
        let until = self.load_ends_at.max(self.world.now());
        self.world.run_until(until);
        let deadline = SimConfig::new(0).call_deadline + Duration::from_millis(100);
        self.world.run_for(deadline);
        self.world.drop_orphaned_calls();
        self.check_after_step();
    }

    /// Carries out one `ScaleTo` decision of the scaling core, as the supervisor would.
    fn scale_to(&mut self, nodes: u32) {
        let config = ScalingConfig {
            max_nodes: NonZeroU32::new(64).expect("64 is not zero"),
            ..ScalingConfig::default()
        };
        let mut core = ScalingCore::new(config).expect("the default scaling config is valid");
        let Some(snapshot) = self.snapshot() else {
            return;
        };
        let now = self.world.now();
        let decision = match core.handle_scale_to(snapshot, nodes, now) {
            Ok(decision) => decision,
            Err(_) => return,
        };
        let outcome = match &decision.action {
            Action::None => return,
            Action::ScaleOut { nodes } => self.scale_out(*nodes),
            Action::ScaleIn { nodes } => self.scale_in(nodes),
        };
        let now = self.world.now();
        let _ = core.handle_action_outcome(decision.id, outcome, Vec::new(), Vec::new(), now);
    }

    /// Returns the supervisor's view: the oldest Active node's members and loads.
    fn snapshot(&self) -> Option<ClusterSnapshot> {
        let supervisor = self
            .world
            .slots()
            .iter()
            .filter_map(|slot| slot.node.as_ref())
            .filter(|node| node.state() == NodeState::Active)
            .min_by_key(|node| node.view().local().started_at_unix_ms)?;
        let nodes = supervisor
            .view()
            .live()
            .map(|member| NodeSnapshot {
                incarnation: member.incarnation(),
                state: member.state,
                load: member.load,
            })
            .collect();
        Some(ClusterSnapshot::new(nodes, supervisor.id().incarnation()))
    }

    fn scale_out(&mut self, count: u32) -> ActionOutcome {
        for _ in 0..count {
            self.world.add_node();
        }
        let give_up = self.world.now() + SCALE_WITHIN;
        while self.world.now() < give_up {
            self.world.run_for(POLL);
            if self.is_converged() {
                return ActionOutcome::Succeeded;
            }
        }
        ActionOutcome::Failed {
            completed_nodes: 0,
            error: "new nodes did not become Active in time".into(),
        }
    }

    /// Drains each node, waits until the supervisor's view reports it empty, then removes it.
    fn scale_in(&mut self, nodes: &[Incarnation]) -> ActionOutcome {
        let mut removed = 0;
        for incarnation in nodes {
            let Some(slot) = self.world.slot_of(&incarnation.name) else {
                continue;
            };
            self.world.set_state(slot, NodeState::Draining);
            let give_up = self.world.now() + SCALE_WITHIN;
            loop {
                self.world.run_for(POLL);
                if self.reported_empty(incarnation) {
                    break;
                }
                if self.world.now() >= give_up {
                    return ActionOutcome::Failed {
                        completed_nodes: removed,
                        error: format!("{incarnation} did not drain in time"),
                    };
                }
            }
            self.world.set_state(slot, NodeState::Leaving);
            self.world.run_for(Duration::from_millis(500));
            self.world.leave(slot);
            self.world.run_for(Duration::from_millis(500));
            self.world.remove(slot);
            removed += 1;
        }
        ActionOutcome::Succeeded
    }

    /// Returns whether the supervisor's view shows `incarnation` draining with no activations.
    fn reported_empty(&self, incarnation: &Incarnation) -> bool {
        self.snapshot().is_some_and(|snapshot| {
            snapshot.nodes.iter().any(|node| {
                node.incarnation == *incarnation
                    && node.state == NodeState::Draining
                    && node.load.activations == 0
            })
        })
    }
}
