//! The pure round planner: which local grains move to which colder Active node, and why.
//!
//! Every node runs the planner for itself on the same gossiped view, so the plan is built to
//! stay correct when all hot nodes act at once:
//! 1. Score every Active member with the configured weights and take the mean.
//! 2. This node sheds load only when its score is above `mean * (1 + tolerance)`, or when it is
//!    above the mean while some Active node is below `mean * (1 - tolerance)`. The second
//!    trigger fills a new, empty node even after the hot nodes have dropped into the band.
//! 3. Each colder node's deficit (`mean - score`) is split among the shedding nodes in
//!    proportion to their excess, which every node computes alike. So the senders together
//!    fill a target up to the mean and not past it.
//! 4. The hottest movable grains go first, each to the coldest target with room for it. A grain
//!    heavier than the room left on this node (its excess) or on every target stays.
//!
//! NOTE: the scores come from gossip, which lags by up to one broadcast period. The loop's
//! round interval must exceed that period, or a round plans on loads from before the last
//! round's moves.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::clock::Millis;
use crate::grain::GrainId;
use crate::membership::{MemberInfo, NodeLoad, NodeState};

use super::config::RebalancerConfig;

/// Slack for comparing sums of floating-point scores.
const EPSILON: f64 = 1e-9;

/// Recent load of one activation on this node.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivationSample {
    /// The grain.
    pub grain: GrainId,
    /// Turns the activation ran during the sample window.
    pub turns: u64,
    /// Messages waiting in its mailbox when sampled.
    pub mailbox_depth: u64,
    /// Whether the grain may not migrate (an immovable type or a stateless worker).
    pub immovable: bool,
}

/// Everything one round's plan depends on.
#[derive(Clone, Copy, Debug)]
pub struct RoundInput<'a> {
    /// Name of the node that plans (and would send the grains).
    pub local: &'a str,
    /// Every member with its state and gossiped load, this node included.
    pub members: &'a [MemberInfo],
    /// This node's activations.
    pub activations: &'a [ActivationSample],
    /// Time over which the activations' `turns` were counted.
    pub sample_window: Duration,
    /// When this node last moved each grain; older entries may be missing.
    pub last_moved: &'a HashMap<GrainId, Millis>,
    /// Current time.
    pub now: Millis,
}

/// One grain the round moves.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedMove {
    /// The grain to move.
    pub grain: GrainId,
    /// Name of the node to move it to.
    pub target: String,
    /// The grain's load score.
    pub grain_load: f64,
    /// Why, with the numbers behind the decision.
    pub reason: String,
}

/// Reason a round moves nothing, or stops before it has shed all its excess.
#[derive(Clone, Debug, PartialEq)]
pub enum PlanNote {
    /// This node is not Active in its own view, so it moves nothing.
    NotActive,
    /// Fewer than two Active members, so there is nowhere to move to.
    NoPeers,
    /// This node is within the band, and no node is below it (or this node is below the mean).
    Balanced {
        /// The band's half-width as a fraction of the mean.
        tolerance: f64,
    },
    /// No Active node is below the mean.
    NoColderNode,
    /// Every activation is immovable or was moved within `min_move_interval`.
    NothingMovable,
    /// Every movable grain is heavier than the room left on this node or on every target.
    NoFit,
    /// The round reached its move limit.
    LimitReached {
        /// The smaller of the absolute and the relative limit.
        limit: usize,
    },
}

impl fmt::Display for PlanNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanNote::NotActive => write!(f, "this node is not Active"),
            PlanNote::NoPeers => write!(f, "fewer than two Active members"),
            PlanNote::Balanced { tolerance } => {
                write!(f, "balanced within ±{:.0}% of the mean", tolerance * 100.0)
            }
            PlanNote::NoColderNode => write!(f, "no Active node is below the mean"),
            PlanNote::NothingMovable => {
                write!(f, "every activation is immovable or was moved recently")
            }
            PlanNote::NoFit => write!(
                f,
                "every movable grain is heavier than the room left here or on every target"
            ),
            PlanNote::LimitReached { limit } => write!(f, "stopped at the limit of {limit} moves"),
        }
    }
}

/// The outcome of planning one round.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundPlan {
    /// This node's load score; 0 when it is not Active.
    pub local_load: f64,
    /// Mean load score of the Active members; 0 when there are none.
    pub mean_load: f64,
    /// Moves to carry out, hottest grain first.
    pub moves: Vec<PlannedMove>,
    /// Reason the plan moves nothing or stops early, if it does.
    pub note: Option<PlanNote>,
}

impl RoundPlan {
    fn idle(local_load: f64, mean_load: f64, note: PlanNote) -> Self {
        Self {
            local_load,
            mean_load,
            moves: Vec::new(),
            note: Some(note),
        }
    }
}

/// Returns the load score of a node's gossiped load under `config`'s weights.
pub fn node_score(config: &RebalancerConfig, load: &NodeLoad) -> f64 {
    config.activation_weight * load.activations as f64
        + config.calls_per_sec_weight * load.calls_per_sec
        + config.mailbox_depth_weight * load.mailbox_depth_total as f64
}

/// Returns the calls per second of one activation over `window`; 0 for an empty window.
fn calls_per_sec(sample: &ActivationSample, window: Duration) -> f64 {
    let seconds = window.as_secs_f64();
    if seconds > 0.0 {
        sample.turns as f64 / seconds
    } else {
        0.0
    }
}

/// Returns the load score of one activation, on the scale of [`node_score`].
pub fn grain_score(config: &RebalancerConfig, sample: &ActivationSample, window: Duration) -> f64 {
    config.activation_weight
        + config.calls_per_sec_weight * calls_per_sec(sample, window)
        + config.mailbox_depth_weight * sample.mailbox_depth as f64
}

/// A colder node the round may fill, with the room this node may use on it.
struct Target<'a> {
    name: &'a str,
    projected: f64,
    room: f64,
}

/// Plans one round for `input.local`: see the module documentation for the rules.
pub fn plan_round(config: &RebalancerConfig, input: &RoundInput<'_>) -> RoundPlan {
    let active: Vec<(&str, f64)> = input
        .members
        .iter()
        .filter(|member| member.state == NodeState::Active)
        .map(|member| (member.id.name.as_str(), node_score(config, &member.load)))
        .collect();
    let Some(&(_, local_load)) = active.iter().find(|(name, _)| *name == input.local) else {
        return RoundPlan::idle(0.0, 0.0, PlanNote::NotActive);
    };
    let mean = active.iter().map(|(_, load)| load).sum::<f64>() / active.len() as f64;
    if active.len() < 2 {
        return RoundPlan::idle(local_load, mean, PlanNote::NoPeers);
    }

    let upper = mean * (1.0 + config.tolerance);
    let lower = mean * (1.0 - config.tolerance);
    let coldest = active
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(b.0)))
        .filter(|(_, load)| *load < lower);
    let sheds = |load: f64| load > upper + EPSILON || (coldest.is_some() && load > mean + EPSILON);
    if !sheds(local_load) {
        let note = PlanNote::Balanced {
            tolerance: config.tolerance,
        };
        return RoundPlan::idle(local_load, mean, note);
    }

    // Every shedding node computes the same total, so the shares of all senders sum to one.
    let total_excess: f64 = active
        .iter()
        .filter(|(_, load)| sheds(*load))
        .map(|(_, load)| load - mean)
        .sum();
    let share = (local_load - mean) / total_excess;
    let mut targets: Vec<Target<'_>> = active
        .iter()
        .filter(|(name, load)| *name != input.local && *load < mean)
        .map(|&(name, load)| Target {
            name,
            projected: load,
            room: (mean - load) * share,
        })
        .collect();
    if targets.is_empty() {
        return RoundPlan::idle(local_load, mean, PlanNote::NoColderNode);
    }

    let window = input.sample_window;
    let mut candidates: Vec<(&ActivationSample, f64)> = input
        .activations
        .iter()
        .filter(|sample| !sample.immovable)
        .filter(|sample| match input.last_moved.get(&sample.grain) {
            Some(&moved_at) => input.now.saturating_since(moved_at) >= config.min_move_interval,
            None => true,
        })
        .map(|sample| (sample, grain_score(config, sample, window)))
        .collect();
    if candidates.is_empty() {
        return RoundPlan::idle(local_load, mean, PlanNote::NothingMovable);
    }
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.grain.cmp(&b.0.grain)));

    let limit = move_limit(config, input.activations.len());
    let trigger = match coldest {
        Some((name, load)) if local_load <= upper + EPSILON => {
            format!("{name} load {load:.2} is below the band")
        }
        _ => format!("above the ±{:.0}% band", config.tolerance * 100.0),
    };
    let mut excess = local_load - mean;
    let mut moves = Vec::new();
    let mut note = None;
    for (sample, grain_load) in candidates {
        if moves.len() == limit {
            note = Some(PlanNote::LimitReached { limit });
            break;
        }
        if grain_load > excess + EPSILON {
            continue;
        }
        let Some(target) = targets
            .iter_mut()
            .filter(|target| target.room + EPSILON >= grain_load)
            .min_by(|a, b| a.projected.total_cmp(&b.projected).then(a.name.cmp(b.name)))
        else {
            continue;
        };
        let reason = format!(
            "node load {local_load:.2} vs mean {mean:.2}, {trigger}; grain load {grain_load:.2} \
             ({:.1} calls/s, mailbox {}); {} load {:.2} -> {:.2}",
            calls_per_sec(sample, window),
            sample.mailbox_depth,
            target.name,
            target.projected,
            target.projected + grain_load,
        );
        target.projected += grain_load;
        target.room -= grain_load;
        excess -= grain_load;
        debug_assert!(
            target.projected <= mean + 1e-6,
            "a target must not be filled past the mean"
        );
        moves.push(PlannedMove {
            grain: sample.grain.clone(),
            target: target.name.to_owned(),
            grain_load,
            reason,
        });
    }
    if moves.is_empty() && note.is_none() {
        note = Some(PlanNote::NoFit);
    }
    RoundPlan {
        local_load,
        mean_load: mean,
        moves,
        note,
    }
}

/// Returns the most moves a round on a node with `activations` activations may start.
fn move_limit(config: &RebalancerConfig, activations: usize) -> usize {
    let relative = (config.max_move_fraction * activations as f64).ceil() as usize;
    relative.min(config.max_moves_per_round.get())
}

#[cfg(test)]
mod tests;
