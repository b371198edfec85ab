//! Membership at scale: many simulated nodes running only foca and the member view.
//!
//! The run joins every node through three seeds, waits until all views agree, measures the
//! gossip traffic in steady state, crashes one node and measures how long the cluster takes
//! to detect it and to agree again. Directory and calls are off, because their sync after
//! every membership change would dominate the cost without telling anything about SWIM.

use std::fmt;
use std::time::{Duration, Instant};

use gristmill::clock::Millis;
use gristmill::membership::{MetaJitter, meta_period};

use crate::world::{SimConfig, World};

/// Longest virtual time each phase of the run waits.
const PHASE_LIMIT: Duration = Duration::from_secs(300);
/// Virtual time between two progress lines.
const PROGRESS_PERIOD: Duration = Duration::from_secs(5);
/// Virtual time between the starts of two nodes of one wave.
const START_GAP: Duration = Duration::from_millis(10);

/// When the nodes of a run start: in waves of `size` nodes, 10 ms apart within a wave, one
/// wave every `interval`, as a rollout in batches starts them.
///
/// Each join adds a member update and a meta item to every node's gossip backlogs, and foca
/// keeps a backlog's peak capacity. Nodes that start 10 ms apart join faster than gossip
/// drains the backlogs, so at 1,000 nodes every node's backlogs held an item of almost every
/// member. Waves of 50 nodes every 5 s kept them below 180 items (see the README).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinSchedule {
    /// Nodes per wave; at least 1.
    pub size: usize,
    /// Virtual time from the start of one wave to the start of the next. A wave whose nodes
    /// take longer to start than this is followed at once by the next.
    pub interval: Duration,
}

impl JoinSchedule {
    /// Every node in one wave, 10 ms apart.
    pub const ALL_AT_ONCE: Self = Self {
        size: usize::MAX,
        interval: Duration::ZERO,
    };

    /// Returns the pause after the node with index `started` (counted from 0) started.
    fn pause_after(&self, started: usize) -> Duration {
        let size = self.size.max(1);
        let in_wave = started % size + 1;
        if in_wave < size {
            return START_GAP;
        }
        let gaps = u32::try_from(size - 1).unwrap_or(u32::MAX);
        let wave_took = START_GAP.saturating_mul(gaps);
        self.interval.saturating_sub(wave_took).max(START_GAP)
    }
}

/// Settings of a membership run.
#[derive(Clone, Copy, Debug)]
pub struct ScaleOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Seed of the run.
    pub seed: u64,
    /// Virtual time over which traffic is measured once the views agree. Nodes re-broadcast
    /// their meta every 60 s at 1,000 nodes (see `meta_period`), so a window shorter than that
    /// may miss the re-broadcasts.
    pub traffic_window: Duration,
    /// Print to standard error, every 5 s of virtual time, how far the views are from
    /// agreement and how full foca's backlogs are.
    pub progress: bool,
    /// When the nodes start; ignored when `preloaded` is set.
    pub schedule: JoinSchedule,
    /// Whether every node starts at once as a member of a cluster that formed long ago, with
    /// every member already in every member list and view (see
    /// [`World::add_preloaded_nodes`]), instead of joining. The run then measures only the
    /// steady state and the crash. It skips the join phase, whose cost grows faster than the
    /// square of the node count.
    pub preloaded: bool,
}

impl ScaleOptions {
    /// Returns the options of a run of `nodes` with `seed`, started all at once, with a 10 s
    /// traffic window and no progress lines. The `scale` command starts nodes in waves by
    /// default instead.
    pub fn new(nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            seed,
            traffic_window: Duration::from_secs(10),
            progress: false,
            schedule: JoinSchedule::ALL_AT_ONCE,
            preloaded: false,
        }
    }
}

/// What a membership run measured. Times are virtual.
#[derive(Clone, Debug)]
pub struct ScaleReport {
    /// Number of nodes.
    pub nodes: usize,
    /// Whether the nodes started preloaded instead of joining ([`ScaleOptions::preloaded`]).
    pub preloaded: bool,
    /// Time from the last node's start until all views agreed; `None` if they did not
    /// within the phase limit.
    pub joined_after: Option<Duration>,
    /// Gossip datagrams each node sent per second once the views agreed.
    pub messages_per_node_per_sec: f64,
    /// Virtual time over which `messages_per_node_per_sec` was measured.
    pub traffic_window: Duration,
    /// Maximum number of nodes that broadcast their meta within one second of the traffic
    /// window. Nodes that re-broadcast in step show up as a large share of the nodes.
    pub max_meta_broadcasts_per_sec: usize,
    /// Time from the crash until the first node declared the crashed node down.
    pub detected_after: Option<Duration>,
    /// Time from the crash until every view dropped the crashed node.
    pub agreed_after: Option<Duration>,
    /// Members declared down while their process was running and not stalled.
    pub false_downs: u64,
    /// Largest member update backlog of one node, sampled every second of virtual time.
    /// foca keeps the capacity of a backlog's peak, so this bounds its memory.
    pub max_update_backlog: usize,
    /// Largest node meta backlog of one node, sampled every second of virtual time.
    pub max_meta_backlog: usize,
    /// Events handled.
    pub events: u64,
    /// Hash over every handled event ([`World::trace_hash`]). Two builds whose runs of the
    /// same options give different hashes handled different events.
    pub trace_hash: u64,
    /// Real time the run took.
    pub wall_time: Duration,
    /// Real time until every node had started, preloading included.
    pub start_wall_time: Duration,
}

impl fmt::Display for ScaleReport {
    /// Writes one line per measure, with "never" for a phase that did not end in time.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = |time: Option<Duration>| match time {
            Some(time) => format!("{:.1} s", time.as_secs_f64()),
            None => format!("never (limit {} s)", PHASE_LIMIT.as_secs()),
        };
        writeln!(f, "nodes:                          {}", self.nodes)?;
        if self.preloaded {
            writeln!(
                f,
                "views agreed after start:       {} (nodes preloaded, no joins)",
                phase(self.joined_after)
            )?;
        } else {
            writeln!(
                f,
                "views agreed after last join:   {}",
                phase(self.joined_after)
            )?;
        }
        writeln!(
            f,
            "gossip datagrams per node per s: {:.1} (over {} s)",
            self.messages_per_node_per_sec,
            self.traffic_window.as_secs()
        )?;
        writeln!(
            f,
            "most meta broadcasts in 1 s:    {} ({:.1} % of nodes)",
            self.max_meta_broadcasts_per_sec,
            100.0 * self.max_meta_broadcasts_per_sec as f64 / self.nodes.max(1) as f64
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
        writeln!(
            f,
            "largest backlogs of one node:   {} member updates, {} meta items",
            self.max_update_backlog, self.max_meta_backlog
        )?;
        writeln!(f, "events handled:                 {}", self.events)?;
        writeln!(
            f,
            "trace hash:                     {:016x}",
            self.trace_hash
        )?;
        write!(
            f,
            "wall time:                      {:.1} s ({:.1} s until every node started)",
            self.wall_time.as_secs_f64(),
            self.start_wall_time.as_secs_f64()
        )
    }
}

/// Runs membership of `nodes` simulated nodes with `seed`, with a 10 s traffic window.
pub fn run_membership(nodes: usize, seed: u64) -> ScaleReport {
    run_membership_with(ScaleOptions::new(nodes, seed))
}

/// Runs membership with `options`.
pub fn run_membership_with(options: ScaleOptions) -> ScaleReport {
    let started = Instant::now();
    let ScaleOptions { nodes, seed, .. } = options;
    let mut config = SimConfig::new(seed);
    config.node.membership_only = true;
    let meta_base = Duration::from_millis(config.node.membership.meta_period_ms);
    let mut world = World::new(config);
    if options.preloaded {
        // The preloaded nodes place their last meta broadcast up to one stretched
        // re-broadcast period in the past, so the clock starts after that period.
        world.run_for(MetaJitter::UPPER_BOUND.delay(meta_period(meta_base, nodes)));
    }
    let mut monitor = Monitor::new(&world, options.progress);
    if options.preloaded {
        world.add_preloaded_nodes(nodes);
        world.run_for(START_GAP);
        monitor.observe(&world);
    } else {
        for started in 0..nodes {
            world.add_node();
            let last = started + 1 == nodes;
            let pause = if last {
                START_GAP
            } else {
                options.schedule.pause_after(started)
            };
            world.run_for(pause);
            monitor.observe(&world);
        }
    }
    let last_start = world.now();
    let start_wall_time = started.elapsed();
    let poll = Duration::from_secs(1);
    let joined_after = wait_until(&mut world, poll, World::views_agree, &mut monitor)
        .map(|at| at.saturating_since(last_start));

    let window = options.traffic_window;
    let before = world.stats().gossip_sent;
    let max_meta_broadcasts_per_sec =
        run_counting_meta_broadcasts(&mut world, window, &mut monitor);
    let sent = world.stats().gossip_sent - before;
    let messages_per_node_per_sec = sent as f64 / nodes as f64 / window.as_secs_f64();

    // Crash a node that is not a seed, so joining stays possible.
    let victim = nodes - 1;
    let incarnation = world.slots()[victim]
        .node
        .as_ref()
        .map(|node| node.id().incarnation());
    let crashed_at = world.now();
    world.crash(victim);
    let poll = Duration::from_millis(100);
    let agreed_at = wait_until(&mut world, poll, World::views_agree, &mut monitor);
    let detected_after = incarnation
        .and_then(|incarnation| world.first_down(&incarnation))
        .map(|at| at.saturating_since(crashed_at));

    ScaleReport {
        nodes,
        preloaded: options.preloaded,
        joined_after,
        messages_per_node_per_sec,
        traffic_window: window,
        max_meta_broadcasts_per_sec,
        detected_after,
        agreed_after: agreed_at.map(|at| at.saturating_since(crashed_at)),
        false_downs: world.stats().false_downs,
        max_update_backlog: monitor.max_update_backlog,
        max_meta_backlog: monitor.max_meta_backlog,
        events: world.stats().events,
        trace_hash: world.trace_hash(),
        wall_time: started.elapsed(),
        start_wall_time,
    }
}

/// Runs for `window` in steps of one second. Returns the maximum number of nodes that
/// broadcast their meta (their meta version rose) within one step.
fn run_counting_meta_broadcasts(
    world: &mut World,
    window: Duration,
    monitor: &mut Monitor,
) -> usize {
    let versions = |world: &World| -> Vec<Option<u64>> {
        world
            .slots()
            .iter()
            .map(|slot| {
                slot.node
                    .as_ref()
                    .map(|node| node.view().local().meta_version)
            })
            .collect()
    };
    let step = Duration::from_secs(1);
    let end = world.now() + window;
    let mut before = versions(world);
    let mut most = 0;
    while world.now() < end {
        world.run_for(step.min(end.saturating_since(world.now())));
        monitor.observe(world);
        let after = versions(world);
        let broadcast = before
            .iter()
            .zip(&after)
            .filter(|(old, new)| matches!((old, new), (Some(old), Some(new)) if new > old))
            .count();
        most = most.max(broadcast);
        before = after;
    }
    most
}

/// Runs until `done` holds, polling every `poll`; returns when it first held.
fn wait_until(
    world: &mut World,
    poll: Duration,
    done: fn(&World) -> bool,
    monitor: &mut Monitor,
) -> Option<Millis> {
    let give_up = world.now() + PHASE_LIMIT;
    while world.now() < give_up {
        if done(world) {
            return Some(world.now());
        }
        world.run_for(poll);
        monitor.observe(world);
    }
    None
}

/// Samples the largest backlogs once per second of virtual time, and prints progress lines
/// if asked to.
struct Monitor {
    progress: Option<Progress>,
    next_sample_at: Millis,
    max_update_backlog: usize,
    max_meta_backlog: usize,
}

impl Monitor {
    fn new(world: &World, print_progress: bool) -> Self {
        Self {
            progress: print_progress.then(|| Progress::new(world)),
            next_sample_at: world.now(),
            max_update_backlog: 0,
            max_meta_backlog: 0,
        }
    }

    fn observe(&mut self, world: &World) {
        if world.now() >= self.next_sample_at {
            let (updates, meta) = world.largest_backlogs();
            self.max_update_backlog = self.max_update_backlog.max(updates);
            self.max_meta_backlog = self.max_meta_backlog.max(meta);
            self.next_sample_at = world.now() + Duration::from_secs(1);
        }
        if let Some(progress) = self.progress.as_mut() {
            progress.maybe_print(world);
        }
    }
}

/// Prints how far the views are from agreement, every [`PROGRESS_PERIOD`] of virtual time.
struct Progress {
    next_at: Millis,
    gossip_sent: u64,
}

impl Progress {
    fn new(world: &World) -> Self {
        Self {
            next_at: world.now() + PROGRESS_PERIOD,
            gossip_sent: world.stats().gossip_sent,
        }
    }

    fn maybe_print(&mut self, world: &World) {
        if world.now() < self.next_at {
            return;
        }
        let gaps = world.view_gaps();
        let running = world.running().len().max(1);
        let sent = world.stats().gossip_sent - self.gossip_sent;
        eprintln!(
            "{:>9}: {} views miss {} running members (most {}, {} older than the viewer); \
             backlogs per node: {:.0} member updates (most {}), {:.0} meta items (most {}); \
             {:.1} gossip datagrams per node per s",
            world.now().to_string(),
            gaps.lagging_views,
            gaps.missing_members,
            gaps.max_missing,
            gaps.missing_older,
            gaps.update_backlog_total as f64 / running as f64,
            gaps.update_backlog_max,
            gaps.broadcast_backlog_total as f64 / running as f64,
            gaps.broadcast_backlog_max,
            sent as f64 / running as f64 / PROGRESS_PERIOD.as_secs_f64(),
        );
        self.gossip_sent = world.stats().gossip_sent;
        self.next_at = world.now() + PROGRESS_PERIOD;
    }
}
