//! HPA-style behaviour: stabilization windows and rate policies per scaling direction.
//!
//! Both follow the Kubernetes HorizontalPodAutoscaler (autoscaling/v2, `behavior` field):
//!
//! 1. Stabilization keeps every raw recommendation with its time. A scale-out may go only as
//!    high as the lowest recommendation within the scale-out window, and a scale-in only as low
//!    as the highest recommendation within the scale-in window. So the most conservative
//!    recommendation in the window wins, and load that oscillates faster than the window causes
//!    no change at all.
//! 2. Rate policies bound the change per period. Each policy allows a number of nodes or a
//!    percentage relative to the node count at the start of its period (the current count
//!    minus the changes recorded in that period). `select_policy = "max"` takes the policy that
//!    allows the largest change, `min` the smallest, and `disabled` forbids the direction.

use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::scaling::config::ConfigError;

/// Direction of a node count change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Adding nodes.
    ScaleOut,
    /// Removing nodes.
    ScaleIn,
}

impl Direction {
    /// Returns the direction from `current` to `desired`, or `None` if they are equal.
    pub fn between(current: u32, desired: u32) -> Option<Direction> {
        match desired.cmp(&current) {
            std::cmp::Ordering::Greater => Some(Direction::ScaleOut),
            std::cmp::Ordering::Less => Some(Direction::ScaleIn),
            std::cmp::Ordering::Equal => None,
        }
    }

    /// Returns `scale_out` or `scale_in`, as in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ScaleOut => "scale_out",
            Direction::ScaleIn => "scale_in",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rule that combines several rate policies of one direction, as HPA's `selectPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectPolicy {
    /// The policy that allows the largest change wins (HPA's default).
    #[default]
    Max,
    /// The policy that allows the smallest change wins.
    Min,
    /// No automatic change in this direction.
    Disabled,
}

/// One limit on the change per period, as an HPA `HPAScalingPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RatePolicy {
    /// At most `value` nodes per `period`.
    Nodes {
        /// Node count; at least 1.
        value: NonZeroU32,
        /// Length of the sliding period; positive.
        #[serde(with = "crate::duration_text")]
        period: Duration,
    },
    /// At most `value` percent of the node count at the period's start per `period`.
    Percent {
        /// Percent; at least 1. Scale-out rounds the allowed count up, scale-in down.
        value: NonZeroU32,
        /// Length of the sliding period; positive.
        #[serde(with = "crate::duration_text")]
        period: Duration,
    },
}

impl RatePolicy {
    /// Returns the length of the policy's period.
    pub fn period(&self) -> Duration {
        match self {
            RatePolicy::Nodes { period, .. } | RatePolicy::Percent { period, .. } => *period,
        }
    }

    /// Replaces the length of the policy's period.
    pub fn set_period(&mut self, new_period: Duration) {
        match self {
            RatePolicy::Nodes { period, .. } | RatePolicy::Percent { period, .. } => {
                *period = new_period
            }
        }
    }

    /// Returns the node count this policy allows, starting from `period_start` nodes.
    fn bound(&self, direction: Direction, period_start: u32) -> u32 {
        let start = f64::from(period_start);
        match (self, direction) {
            (RatePolicy::Nodes { value, .. }, Direction::ScaleOut) => {
                period_start.saturating_add(value.get())
            }
            (RatePolicy::Nodes { value, .. }, Direction::ScaleIn) => {
                period_start.saturating_sub(value.get())
            }
            // Rounded up, as HPA does, so a small cluster can still grow by one.
            (RatePolicy::Percent { value, .. }, Direction::ScaleOut) => {
                (start * (1.0 + f64::from(value.get()) / 100.0)).ceil() as u32
            }
            (RatePolicy::Percent { value, .. }, Direction::ScaleIn) => {
                (start * (1.0 - f64::from(value.get()) / 100.0))
                    .max(0.0)
                    .floor() as u32
            }
        }
    }
}

/// Stabilization window and rate policies for one direction, as HPA's `HPAScalingRules`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingRules {
    /// How far back recommendations count; zero acts on the latest alone.
    #[serde(with = "crate::duration_text")]
    pub stabilization_window: Duration,
    /// Limits on the change per period; empty means no limit.
    #[serde(default)]
    pub policies: Vec<RatePolicy>,
    /// The rule that combines the policies. Default `max`.
    #[serde(default)]
    pub select_policy: SelectPolicy,
}

impl ScalingRules {
    pub(crate) fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        for (index, policy) in self.policies.iter().enumerate() {
            if policy.period().is_zero() {
                return Err(ConfigError::ZeroDuration {
                    field: format!("{prefix}.policies[{index}].period"),
                });
            }
        }
        Ok(())
    }

    fn longest_period(&self) -> Duration {
        self.policies
            .iter()
            .map(RatePolicy::period)
            .max()
            .unwrap_or_default()
    }
}

/// The raw recommendations of the recent past, for stabilization.
#[derive(Clone, Debug, Default)]
pub struct Stabilizer {
    recommendations: VecDeque<(Millis, u32)>,
    seeded: bool,
    /// Active node count at the last [`Self::note_current`].
    last_current: u32,
}

impl Stabilizer {
    /// Returns the node count to aim for: `desired` held back by the windows of both rules.
    ///
    /// `desired` itself counts as a recommendation made now, whether or not it is recorded.
    pub fn stabilize(
        &self,
        current: u32,
        desired: u32,
        now: Millis,
        scale_out: &ScalingRules,
        scale_in: &ScalingRules,
    ) -> u32 {
        let mut out_bound = desired;
        let mut in_bound = desired;
        for &(at, recommendation) in &self.recommendations {
            let age = now.saturating_since(at);
            if age < scale_out.stabilization_window {
                out_bound = out_bound.min(recommendation);
            }
            if age < scale_in.stabilization_window {
                in_bound = in_bound.max(recommendation);
            }
        }
        current.max(out_bound).min(in_bound)
    }

    /// Returns whether [`Self::note_current`] would record `current`: before the first
    /// recommendation, and whenever the active node count grew since the last note.
    pub fn would_note(&self, current: u32) -> bool {
        !self.seeded || current > self.last_current
    }

    /// Records the active node count as a recommendation when [`Self::would_note`] returns true.
    ///
    /// As HPA does when it first reads a target, a freshly started supervisor then does not act
    /// on a single sample. A node that joined since (started by an operator, or still joining
    /// when the supervisor took over) also starts a new scale-in window, so it is not removed
    /// before the window has seen lower recommendations for its whole length.
    pub fn note_current(&mut self, current: u32, now: Millis, keep: Duration) {
        if self.would_note(current) {
            self.record(current, now, keep);
        }
        self.last_current = current;
    }

    /// Records a raw recommendation and drops those at least `keep` old.
    pub fn record(&mut self, desired: u32, now: Millis, keep: Duration) {
        self.seeded = true;
        while self
            .recommendations
            .front()
            .is_some_and(|&(at, _)| now.saturating_since(at) >= keep)
        {
            self.recommendations.pop_front();
        }
        self.recommendations.push_back((now, desired));
    }
}

/// A change of the node count that took effect, for rate policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleEvent {
    /// When the action started.
    pub at: Millis,
    /// Direction of the change.
    pub direction: Direction,
    /// How many nodes were added or removed.
    pub nodes: u32,
}

/// The changes of the recent past, for rate policies.
#[derive(Clone, Debug, Default)]
pub struct ScaleHistory {
    events: VecDeque<ScaleEvent>,
}

impl ScaleHistory {
    /// Records a change and drops changes older than the longest period of either rule.
    pub fn record(&mut self, event: ScaleEvent, scale_out: &ScalingRules, scale_in: &ScalingRules) {
        let keep = scale_out.longest_period().max(scale_in.longest_period());
        self.events
            .retain(|past| event.at.saturating_since(past.at) < keep);
        self.events.push_back(event);
    }

    /// Returns the nodes changed in `direction` within `period` before `now`.
    fn changed_within(&self, direction: Direction, period: Duration, now: Millis) -> u32 {
        self.events
            .iter()
            .filter(|event| event.direction == direction && now.saturating_since(event.at) < period)
            .map(|event| event.nodes)
            .sum()
    }

    /// Returns the node count closest to `desired` that the rules allow from `current`.
    pub fn limit(&self, current: u32, desired: u32, rules: &ScalingRules, now: Millis) -> u32 {
        let Some(direction) = Direction::between(current, desired) else {
            return current;
        };
        if rules.policies.is_empty() {
            return desired;
        }
        let bounds = rules.policies.iter().map(|policy| {
            let added = self.changed_within(Direction::ScaleOut, policy.period(), now);
            let removed = self.changed_within(Direction::ScaleIn, policy.period(), now);
            let period_start = current.saturating_sub(added).saturating_add(removed);
            policy.bound(direction, period_start)
        });
        // "max" allows the largest change: the highest bound out, the lowest bound in.
        let bound =
            match (rules.select_policy, direction) {
                (SelectPolicy::Disabled, _) => return current,
                (SelectPolicy::Max, Direction::ScaleOut)
                | (SelectPolicy::Min, Direction::ScaleIn) => bounds.max(),
                (SelectPolicy::Min, Direction::ScaleOut)
                | (SelectPolicy::Max, Direction::ScaleIn) => bounds.min(),
            }
            .unwrap_or(desired);
        match direction {
            Direction::ScaleOut => desired.min(bound.max(current)),
            Direction::ScaleIn => desired.max(bound.min(current)),
        }
    }
}
