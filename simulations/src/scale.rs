//! Membership at scale: many simulated nodes running only foca and the member view.
//!
//! The run joins every node through three seeds, waits until all views agree, measures the
//! gossip traffic in steady state, crashes one node and measures how long the cluster takes
//! to detect it and to agree again. Directory and calls are off, because their sync after
//! every membership change would dominate the cost without telling anything about SWIM.

use std::fmt;
use std::time::{Duration, Instant};

use gristmill::clock::Millis;

use crate::world::{SimConfig, World};

/// Longest virtual time each phase of the run waits.
const PHASE_LIMIT: Duration = Duration::from_secs(300);
/// Virtual time over which steady-state traffic is measured.
const TRAFFIC_WINDOW: Duration = Duration::from_secs(10);

/// What a membership run measured. Times are virtual.
#[derive(Clone, Debug)]
pub struct ScaleReport {
    /// Number of nodes.
    pub nodes: usize,
    /// Time from the last node's start until all views agreed; `None` if they did not
    /// within the phase limit.
    pub joined_after: Option<Duration>,
    /// Gossip datagrams each node sent per second in steady state.
    pub messages_per_node_per_sec: f64,
    /// Time from the crash until the first node declared the crashed node down.
    pub detected_after: Option<Duration>,
    /// Time from the crash until every view dropped the crashed node.
    pub agreed_after: Option<Duration>,
    /// Members declared down while their process was running and not stalled.
    pub false_downs: u64,
    /// Events handled.
    pub events: u64,
    /// Real time the run took.
    pub wall_time: Duration,
}

impl fmt::Display for ScaleReport {
    /// Writes one line per measure, with "never" for a phase that did not end in time.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = |time: Option<Duration>| match time {
            Some(time) => format!("{:.1} s", time.as_secs_f64()),
            None => format!("never (limit {} s)", PHASE_LIMIT.as_secs()),
        };
        writeln!(f, "nodes:                          {}", self.nodes)?;
        writeln!(
            f,
            "views agreed after last join:   {}",
            phase(self.joined_after)
        )?;
        writeln!(
            f,
            "gossip datagrams per node per s: {:.1}",
            self.messages_per_node_per_sec
        )?;
        writeln!(
            f,
            "crash detected after:           {}",
            phase(self.detected_after)
        )?;
        writeln!(
            f,
            "views agreed after crash:       {}",
            phase(self.agreed_after)
        )?;
        writeln!(f, "false Down events:              {}", self.false_downs)?;
        writeln!(f, "events handled:                 {}", self.events)?;
        write!(
            f,
            "wall time:                      {:.1} s",
            self.wall_time.as_secs_f64()
        )
    }
}

/// Runs membership of `nodes` simulated nodes with `seed`.
pub fn run_membership(nodes: usize, seed: u64) -> ScaleReport {
    let started = Instant::now();
    let mut config = SimConfig::new(seed);
    config.node.membership_only = true;
    let mut world = World::new(config);
    for _ in 0..nodes {
        world.add_node();
        world.run_for(Duration::from_millis(10));
    }
    let last_start = world.now();
    let poll = Duration::from_secs(1);
    let joined_after =
        wait_until(&mut world, poll, World::views_agree).map(|at| at.saturating_since(last_start));

    let before = world.stats().gossip_sent;
    world.run_for(TRAFFIC_WINDOW);
    let sent = world.stats().gossip_sent - before;
    let messages_per_node_per_sec = sent as f64 / nodes as f64 / TRAFFIC_WINDOW.as_secs_f64();

    // Crash a node that is not a seed, so joining stays possible.
    let victim = nodes - 1;
    let incarnation = world.slots()[victim]
        .node
        .as_ref()
        .map(|node| node.id().incarnation());
    let crashed_at = world.now();
    world.crash(victim);
    let agreed_at = wait_until(&mut world, Duration::from_millis(100), World::views_agree);
    let detected_after = incarnation
        .and_then(|incarnation| world.first_down(&incarnation))
        .map(|at| at.saturating_since(crashed_at));

    ScaleReport {
        nodes,
        joined_after,
        messages_per_node_per_sec,
        detected_after,
        agreed_after: agreed_at.map(|at| at.saturating_since(crashed_at)),
        false_downs: world.stats().false_downs,
        events: world.stats().events,
        wall_time: started.elapsed(),
    }
}

/// Runs until `done` holds, polling every `poll`; returns when it first held.
fn wait_until(world: &mut World, poll: Duration, done: fn(&World) -> bool) -> Option<Millis> {
    let give_up = world.now() + PHASE_LIMIT;
    while world.now() < give_up {
        if done(world) {
            return Some(world.now());
        }
        world.run_for(poll);
    }
    None
}
