//! Scaling policies: each turns one load figure into a recommended node count with a reason.
//!
//! The proportional policies use the HPA formula `desired = ceil(current * metric / target)`,
//! where `current` is the Active node count and `metric` the per-node mean. A policy whose
//! usage ratio `metric / target` lies within `1 ± tolerance` recommends `current` unchanged.
//! The mailbox depth and cluster health policies only ever recommend adding nodes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::scaling::config::{
    MailboxMeasure, PolicyTarget, ScalingPolicyConfig, UnknownName, parse_name,
};
use crate::scaling::load::{ClusterLoad, HealthLimits};

/// The kinds of scaling policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// Activations per node.
    GrainDensity,
    /// Calls per second per node.
    CallRate,
    /// Mailbox depth, max or per node.
    MailboxDepth,
    /// CPU percent per node.
    Cpu,
    /// Memory per node.
    Memory,
    /// Cluster health score and unhealthy node count.
    ClusterHealth,
}

impl PolicyKind {
    /// Every kind, in the order of [`Self::NAMES`].
    pub const ALL: [PolicyKind; 6] = [
        PolicyKind::GrainDensity,
        PolicyKind::CallRate,
        PolicyKind::MailboxDepth,
        PolicyKind::Cpu,
        PolicyKind::Memory,
        PolicyKind::ClusterHealth,
    ];

    /// The config names of every kind.
    pub const NAMES: [&'static str; 6] = [
        "grain_density",
        "call_rate",
        "mailbox_depth",
        "cpu",
        "memory",
        "cluster_health",
    ];

    /// Returns the config name, such as `grain_density`.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Returns whether the policy only ever recommends adding nodes: mailbox depth and cluster
    /// health signal distress, and their absence is no reason to remove a node.
    pub fn only_adds_nodes(self) -> bool {
        matches!(self, PolicyKind::MailboxDepth | PolicyKind::ClusterHealth)
    }

    /// Returns the priority used when the config sets none: the policies that signal distress
    /// (health 60, mailbox 50) outrank resource use (memory 40, CPU 30), which outranks demand
    /// (call rate 20, grain density 10).
    pub fn default_priority(self) -> u32 {
        match self {
            PolicyKind::ClusterHealth => 60,
            PolicyKind::MailboxDepth => 50,
            PolicyKind::Memory => 40,
            PolicyKind::Cpu => 30,
            PolicyKind::CallRate => 20,
            PolicyKind::GrainDensity => 10,
        }
    }
}

impl FromStr for PolicyKind {
    type Err = UnknownName;

    fn from_str(name: &str) -> Result<Self, UnknownName> {
        parse_name("policy", name, &Self::NAMES, &Self::ALL)
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One policy's recommended node count, with the inputs it used and the reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// The policy that made it.
    pub policy: PolicyKind,
    /// The policy's priority, for the `highest_priority` combiner.
    pub priority: u32,
    /// The policy's weight, for the `weighted_average` combiner.
    pub weight: f64,
    /// Active nodes when the policy ran.
    pub current_nodes: u32,
    /// Node count the policy recommends, before min/max; may be 0.
    pub desired_nodes: u32,
    /// The observed figure, in the target's unit.
    pub metric: f64,
    /// The configured target, in the same unit.
    pub target: f64,
    /// Tolerance the policy applied.
    pub tolerance: f64,
    /// Whether the policy held the count because `metric / target` was within tolerance.
    pub within_tolerance: bool,
    /// One sentence for operators, such as "mean CPU 91% per node is above the target 70%".
    pub reason: String,
}

impl Recommendation {
    /// Returns `metric / target`, the usage ratio of HPA.
    pub fn ratio(&self) -> f64 {
        self.metric / self.target
    }
}

/// Runs one policy against the cluster load.
///
/// `default_tolerance` applies unless the policy sets its own. With no Active nodes every
/// policy recommends 0, which min_nodes later raises. The supervisor itself runs on an Active
/// node, so only a snapshot built elsewhere has none.
pub fn recommend(
    policy: &ScalingPolicyConfig,
    load: &ClusterLoad,
    health: &HealthLimits,
    default_tolerance: f64,
) -> Recommendation {
    let current = load.active_nodes;
    let tolerance = policy.tolerance.unwrap_or(default_tolerance);
    let mut recommendation = Recommendation {
        policy: policy.target.kind(),
        priority: policy.effective_priority(),
        weight: policy.weight,
        current_nodes: current,
        desired_nodes: current,
        metric: 0.0,
        target: 0.0,
        tolerance,
        within_tolerance: false,
        reason: String::new(),
    };
    match &policy.target {
        PolicyTarget::GrainDensity {
            activations_per_node,
        } => {
            let metric = load.per_active_node(load.total_activations as f64);
            recommendation.proportional(metric, *activations_per_node, "activations per node");
        }
        PolicyTarget::CallRate {
            calls_per_sec_per_node,
        } => {
            let metric = load.per_active_node(load.total_calls_per_sec);
            recommendation.proportional(metric, *calls_per_sec_per_node, "calls/s per node");
        }
        PolicyTarget::Cpu { percent_per_node } => {
            let metric = load.per_active_node(load.total_cpu_percent);
            recommendation.proportional(metric, *percent_per_node, "% CPU per node");
        }
        PolicyTarget::Memory {
            bytes_per_node,
            percent_per_node,
        } => {
            let bytes = load.per_active_node(load.total_memory_bytes as f64);
            match (bytes_per_node, percent_per_node, health.memory_bytes) {
                (Some(target), _, _) => {
                    recommendation.proportional(bytes, *target as f64, "bytes of memory per node")
                }
                (None, Some(target), Some(limit)) => {
                    let percent = bytes / limit.get() as f64 * 100.0;
                    recommendation.proportional(percent, *target, "% of the memory limit per node")
                }
                // validate() rejects this, so only an unvalidated config gets here.
                _ => recommendation.reason = "memory target is not configured".into(),
            }
        }
        PolicyTarget::MailboxDepth { depth, measure } => {
            let (metric, unit) = match measure {
                MailboxMeasure::Max => (
                    load.max_mailbox_depth as f64,
                    "messages in the fullest mailbox",
                ),
                MailboxMeasure::TotalPerNode => (
                    load.per_active_node(load.total_mailbox_depth as f64),
                    "queued messages per node",
                ),
            };
            recommendation.proportional(metric, *depth, unit);
            recommendation.keep_scale_out_only();
        }
        PolicyTarget::ClusterHealth {
            min_score,
            max_unhealthy_nodes,
        } => recommendation.health(load, *min_score, *max_unhealthy_nodes),
    }
    recommendation
}

/// Rounds up, ignoring floating-point noise below one millionth of a node, so that exactly
/// 3 * 1.2 gives 4 rather than 5 when the product comes out as 3.6000000000000005.
fn ceil_nodes(nodes: f64) -> u32 {
    (nodes - 1e-6).ceil().max(0.0) as u32
}

impl Recommendation {
    fn proportional(&mut self, metric: f64, target: f64, unit: &str) {
        self.metric = metric;
        self.target = target;
        let ratio = metric / target;
        let current = self.current_nodes;
        if (ratio - 1.0).abs() <= self.tolerance {
            self.within_tolerance = true;
            self.reason = format!(
                "{metric:.1} {unit} is within {:.0}% of the target {target}; keep {current} nodes",
                self.tolerance * 100.0
            );
            return;
        }
        self.desired_nodes = ceil_nodes(f64::from(current) * ratio);
        let relation = if ratio > 1.0 { "above" } else { "below" };
        self.reason = format!(
            "{metric:.1} {unit} is {relation} the target {target}: ceil({current} * {ratio:.3}) = {} nodes",
            self.desired_nodes
        );
    }

    fn keep_scale_out_only(&mut self) {
        if self.desired_nodes < self.current_nodes {
            self.desired_nodes = self.current_nodes;
            self.reason = format!(
                "{:.1} is below the target {}; this policy only adds nodes, keep {}",
                self.metric, self.target, self.current_nodes
            );
        }
    }

    /// Adds one node per unhealthy node (at least one) when the mean score is below
    /// `min_score` or more than `max_unhealthy` nodes are unhealthy. Tolerance does not apply,
    /// because the thresholds are already limits rather than targets.
    fn health(&mut self, load: &ClusterLoad, min_score: f64, max_unhealthy: u32) {
        self.metric = load.health_score;
        self.target = min_score;
        let current = self.current_nodes;
        let unhealthy = load.unhealthy_nodes;
        let low_score = load.health_score < min_score;
        let too_many_unhealthy = unhealthy > max_unhealthy;
        if !low_score && !too_many_unhealthy {
            self.reason = format!(
                "health score {:.2} is at least {min_score} and {unhealthy} nodes are unhealthy \
                 (at most {max_unhealthy} allowed); keep {current} nodes",
                load.health_score
            );
            return;
        }
        self.desired_nodes = current + unhealthy.max(1);
        let cause = if low_score {
            format!("health score {:.2} is below {min_score}", load.health_score)
        } else {
            format!("{unhealthy} nodes are unhealthy, more than the {max_unhealthy} allowed")
        };
        self.reason = format!(
            "{cause}: add {} nodes to {} nodes",
            self.desired_nodes - current,
            self.desired_nodes
        );
    }
}
