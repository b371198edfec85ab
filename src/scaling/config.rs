//! Configuration of the scaling supervisor: node bounds, policies, combiner and behaviour.

use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::scaling::behavior::{RatePolicy, ScalingRules, SelectPolicy};
use crate::scaling::combiner::CombinerKind;
use crate::scaling::load::HealthLimits;
use crate::scaling::policy::PolicyKind;

/// Shortest `evaluation_interval` allowed.
pub const MIN_EVALUATION_INTERVAL: Duration = Duration::from_millis(100);

/// Settings of the scaling supervisor, read from the `[scaling]` table of the node config.
///
/// Defaults follow the Kubernetes HorizontalPodAutoscaler (autoscaling/v2) where it has one:
/// 10 % tolerance, 300 s scale-in stabilization, the largest recommendation across metrics.
/// Gristmill departs from it where nodes differ from pods, and each field's doc names the difference.
/// `gristmill local` passes [`ScalingConfig::for_local_demo`], whose windows are seconds long.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScalingConfig {
    /// Fewest Active nodes the supervisor keeps. Default 1; at most `max_nodes`.
    pub min_nodes: NonZeroU32,
    /// Most Active nodes the supervisor runs. Default 10; at least `min_nodes`.
    pub max_nodes: NonZeroU32,
    /// Time between two evaluations, used by the supervisor's timer. Default 15 s (HPA's sync
    /// period); at least 100 ms, sane range 1 s to a few minutes.
    #[serde(with = "crate::duration_text")]
    pub evaluation_interval: Duration,
    /// Relative distance from a policy's target within which the policy recommends no change:
    /// no change when `|metric / target - 1| <= tolerance`. Default 0.1 (HPA's); range [0, 1).
    /// A policy may override it.
    pub tolerance: f64,
    /// Time after an action ends during which no automatic action starts. Default 60 s; zero
    /// disables it. HPA has no cooldown and relies on stabilization alone, but a Gristmill
    /// action moves grains, and the load it shifts needs time to settle in the gossip.
    #[serde(with = "crate::duration_text")]
    pub cooldown: Duration,
    /// The rule that combines the policies' recommendations into one. Default `most_aggressive`, which is what
    /// HPA does with several metrics.
    pub combiner: CombinerKind,
    /// Number of policies that must agree on a direction for the `consensus` combiner.
    /// Default 2; ignored by the other combiners.
    pub consensus_min_agree: NonZeroU32,
    /// The policies, each with its target, priority and weight. At least one must be enabled,
    /// and each kind may appear once. Default: CPU at 70 %, 1,000 activations per node, a max
    /// mailbox depth of 100, and cluster health.
    pub policies: Vec<ScalingPolicyConfig>,
    /// Limits for the per-node health score.
    pub health: HealthLimits,
    /// Stabilization window and rate policies for adding nodes. Default: 30 s window (HPA
    /// uses 0 s for pods, but a node takes longer to start), at most 4 nodes or 100 % per 60 s,
    /// whichever allows more.
    pub scale_out: ScalingRules,
    /// Stabilization window and rate policies for removing nodes. Default: 300 s window (as
    /// HPA), at most 1 node per 60 s, because every removal drains a node's grains first.
    pub scale_in: ScalingRules,
    /// Number of decisions the supervisor keeps for `ListDecisions`. Default 1,000.
    pub history_capacity: NonZeroUsize,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        Self {
            min_nodes: NonZeroU32::MIN,
            max_nodes: NonZeroU32::new(10).expect("10 is not zero"),
            evaluation_interval: Duration::from_secs(15),
            tolerance: 0.1,
            cooldown: Duration::from_secs(60),
            combiner: CombinerKind::MostAggressive,
            consensus_min_agree: NonZeroU32::new(2).expect("2 is not zero"),
            // NOTE: these targets are starting points, not measured on any workload.
            policies: vec![
                ScalingPolicyConfig::new(PolicyTarget::Cpu {
                    percent_per_node: 70.0,
                }),
                ScalingPolicyConfig::new(PolicyTarget::GrainDensity {
                    activations_per_node: 1_000.0,
                }),
                ScalingPolicyConfig::new(PolicyTarget::MailboxDepth {
                    depth: 100.0,
                    measure: MailboxMeasure::Max,
                }),
                ScalingPolicyConfig::new(PolicyTarget::ClusterHealth {
                    min_score: 0.3,
                    max_unhealthy_nodes: 0,
                }),
            ],
            health: HealthLimits::default(),
            scale_out: ScalingRules {
                stabilization_window: Duration::from_secs(30),
                policies: vec![
                    RatePolicy::Nodes {
                        value: NonZeroU32::new(4).expect("4 is not zero"),
                        period: Duration::from_secs(60),
                    },
                    RatePolicy::Percent {
                        value: NonZeroU32::new(100).expect("100 is not zero"),
                        period: Duration::from_secs(60),
                    },
                ],
                select_policy: SelectPolicy::Max,
            },
            scale_in: ScalingRules {
                stabilization_window: Duration::from_secs(300),
                policies: vec![RatePolicy::Nodes {
                    value: NonZeroU32::MIN,
                    period: Duration::from_secs(60),
                }],
                select_policy: SelectPolicy::Max,
            },
            history_capacity: NonZeroUsize::new(1_000).expect("1000 is not zero"),
        }
    }
}

impl ScalingConfig {
    /// Returns the defaults with windows short enough to watch on a laptop.
    ///
    /// `gristmill local` uses it: evaluation every 1 s, 5 s scale-out and 20 s scale-in
    /// stabilization, 5 s cooldown, rate periods of 10 s, and at most 5 nodes.
    pub fn for_local_demo() -> Self {
        let mut config = Self {
            max_nodes: NonZeroU32::new(5).expect("5 is not zero"),
            evaluation_interval: Duration::from_secs(1),
            cooldown: Duration::from_secs(5),
            ..Self::default()
        };
        config.scale_out.stabilization_window = Duration::from_secs(5);
        config.scale_in.stabilization_window = Duration::from_secs(20);
        for rule in config
            .scale_out
            .policies
            .iter_mut()
            .chain(config.scale_in.policies.iter_mut())
        {
            rule.set_period(Duration::from_secs(10));
        }
        config
    }

    /// Checks every field, returning the first invalid one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.min_nodes > self.max_nodes {
            return Err(ConfigError::MinAboveMax {
                min: self.min_nodes.get(),
                max: self.max_nodes.get(),
            });
        }
        check_fraction("tolerance", self.tolerance)?;
        check_positive("health.cpu_percent", self.health.cpu_percent)?;
        check_range(
            "health.unhealthy_below",
            self.health.unhealthy_below,
            0.0..=1.0,
            "[0, 1]",
        )?;
        if self.evaluation_interval < MIN_EVALUATION_INTERVAL {
            return Err(ConfigError::TooShort {
                field: "evaluation_interval".into(),
                value: self.evaluation_interval,
                min: MIN_EVALUATION_INTERVAL,
            });
        }
        self.scale_out.validate("scale_out")?;
        self.scale_in.validate("scale_in")?;
        self.validate_policies()
    }

    fn validate_policies(&self) -> Result<(), ConfigError> {
        let mut seen = Vec::new();
        for (index, policy) in self.policies.iter().enumerate() {
            let prefix = format!("policies[{index}]");
            let kind = policy.target.kind();
            if seen.contains(&kind) {
                return Err(ConfigError::DuplicatePolicy {
                    field: format!("{prefix}.policy"),
                    kind,
                });
            }
            seen.push(kind);
            policy.validate(&prefix, &self.health)?;
        }
        let enabled: Vec<&ScalingPolicyConfig> = self.enabled_policies().collect();
        if enabled.is_empty() {
            return Err(ConfigError::NoPolicyEnabled);
        }
        let all_weights_zero = enabled.iter().all(|policy| policy.weight == 0.0);
        if self.combiner == CombinerKind::WeightedAverage && all_weights_zero {
            return Err(ConfigError::AllWeightsZero);
        }
        Ok(())
    }

    /// Iterates over the policies whose `enabled` flag is set.
    pub fn enabled_policies(&self) -> impl Iterator<Item = &ScalingPolicyConfig> {
        self.policies.iter().filter(|policy| policy.enabled)
    }
}

/// One policy: what it measures, its target, and how it weighs against the others.
///
/// In TOML: `[[scaling.policies]]` with `policy = "cpu"`, the target fields of that policy,
/// and optionally `priority`, `weight`, `tolerance` and `enabled`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalingPolicyConfig {
    /// The policy and its target.
    #[serde(flatten)]
    pub target: PolicyTarget,
    /// Whether the policy takes part in evaluations. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Rank for the `highest_priority` combiner; the higher value wins. Default: the policy
    /// kind's own rank (see [`PolicyKind::default_priority`]).
    #[serde(default)]
    pub priority: Option<u32>,
    /// Share for the `weighted_average` combiner. Default 1; must not be negative.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Overrides [`ScalingConfig::tolerance`] for this policy. Range [0, 1).
    #[serde(default)]
    pub tolerance: Option<f64>,
}

fn default_true() -> bool {
    true
}

fn default_weight() -> f64 {
    1.0
}

impl ScalingPolicyConfig {
    /// Creates an enabled policy with default priority, weight 1 and the global tolerance.
    pub fn new(target: PolicyTarget) -> Self {
        Self {
            target,
            enabled: true,
            priority: None,
            weight: 1.0,
            tolerance: None,
        }
    }

    /// Returns the configured priority, or the kind's default rank.
    pub fn effective_priority(&self) -> u32 {
        self.priority
            .unwrap_or_else(|| self.target.kind().default_priority())
    }

    fn validate(&self, prefix: &str, health: &HealthLimits) -> Result<(), ConfigError> {
        if self.weight < 0.0 || !self.weight.is_finite() {
            return Err(ConfigError::NegativeWeight {
                field: format!("{prefix}.weight"),
                value: self.weight,
            });
        }
        if let Some(tolerance) = self.tolerance {
            check_fraction(&format!("{prefix}.tolerance"), tolerance)?;
        }
        match &self.target {
            PolicyTarget::GrainDensity {
                activations_per_node,
            } => check_positive(
                &format!("{prefix}.activations_per_node"),
                *activations_per_node,
            ),
            PolicyTarget::CallRate {
                calls_per_sec_per_node,
            } => check_positive(
                &format!("{prefix}.calls_per_sec_per_node"),
                *calls_per_sec_per_node,
            ),
            PolicyTarget::MailboxDepth { depth, .. } => {
                check_positive(&format!("{prefix}.depth"), *depth)
            }
            PolicyTarget::Cpu { percent_per_node } => {
                check_positive(&format!("{prefix}.percent_per_node"), *percent_per_node)
            }
            PolicyTarget::Memory {
                bytes_per_node,
                percent_per_node,
            } => match (bytes_per_node, percent_per_node) {
                (Some(bytes), None) => {
                    check_positive(&format!("{prefix}.bytes_per_node"), *bytes as f64)
                }
                (None, Some(percent)) => {
                    let field = format!("{prefix}.percent_per_node");
                    check_positive(&field, *percent)?;
                    if health.memory_bytes.is_none() {
                        return Err(ConfigError::MissingMemoryLimit { field });
                    }
                    Ok(())
                }
                _ => Err(ConfigError::AmbiguousMemoryTarget {
                    field: format!("{prefix}.bytes_per_node"),
                }),
            },
            PolicyTarget::ClusterHealth { min_score, .. } => check_range(
                &format!("{prefix}.min_score"),
                *min_score,
                0.0..=1.0,
                "[0, 1]",
            ),
        }
    }
}

/// A policy kind with its target, tagged in TOML by `policy = "<name>"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum PolicyTarget {
    /// Target activations per Active node.
    GrainDensity {
        /// Activations per node; greater than zero.
        activations_per_node: f64,
    },
    /// Target grain calls per second per Active node.
    CallRate {
        /// Calls per second per node; greater than zero.
        calls_per_sec_per_node: f64,
    },
    /// Target mailbox depth; this policy only ever adds nodes, because an empty queue shows
    /// nothing about how many nodes the work needs.
    MailboxDepth {
        /// Queued messages; greater than zero.
        depth: f64,
        /// The depth figure compared with the target. Default `max`.
        #[serde(default)]
        measure: MailboxMeasure,
    },
    /// Target CPU use per Active node.
    Cpu {
        /// Percent of one core; greater than zero.
        percent_per_node: f64,
    },
    /// Target resident memory per Active node; set exactly one of the two fields.
    Memory {
        /// Resident bytes per node; greater than zero.
        #[serde(default)]
        bytes_per_node: Option<u64>,
        /// Percent of `health.memory_bytes` per node, which must then be set.
        #[serde(default)]
        percent_per_node: Option<f64>,
    },
    /// Minimum cluster health; this policy only ever adds nodes.
    ClusterHealth {
        /// Mean health score below which the policy adds nodes; range [0, 1].
        min_score: f64,
        /// Most unhealthy nodes tolerated before the policy adds nodes. Default 0.
        #[serde(default)]
        max_unhealthy_nodes: u32,
    },
}

impl PolicyTarget {
    /// Returns the kind of policy this target belongs to.
    pub fn kind(&self) -> PolicyKind {
        match self {
            PolicyTarget::GrainDensity { .. } => PolicyKind::GrainDensity,
            PolicyTarget::CallRate { .. } => PolicyKind::CallRate,
            PolicyTarget::MailboxDepth { .. } => PolicyKind::MailboxDepth,
            PolicyTarget::Cpu { .. } => PolicyKind::Cpu,
            PolicyTarget::Memory { .. } => PolicyKind::Memory,
            PolicyTarget::ClusterHealth { .. } => PolicyKind::ClusterHealth,
        }
    }
}

/// Which mailbox depth the mailbox policy compares with its target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailboxMeasure {
    /// The fullest single mailbox on any Active node: catches one hot grain.
    #[default]
    Max,
    /// All queued messages divided by the Active node count: catches broad backlog.
    TotalPerNode,
}

/// Invalid scaling configuration. Nothing was applied; fix the named field and retry.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// `min_nodes` is above `max_nodes`.
    #[error("invalid scaling config: min_nodes ({min}) is above max_nodes ({max})")]
    MinAboveMax {
        /// The configured minimum.
        min: u32,
        /// The configured maximum.
        max: u32,
    },
    /// A target or limit that must be positive is zero, negative or not a number.
    #[error("invalid scaling config: {field} is {value}, but it must be greater than zero")]
    NotPositive {
        /// Path of the field, such as `policies[0].percent_per_node`.
        field: String,
        /// The configured value.
        value: f64,
    },
    /// A value lies outside its allowed range.
    #[error("invalid scaling config: {field} is {value}, but it must be in {range}")]
    OutOfRange {
        /// Path of the field.
        field: String,
        /// The configured value.
        value: f64,
        /// The allowed range in interval notation.
        range: &'static str,
    },
    /// A duration is below its minimum.
    #[error(
        "invalid scaling config: {field} is {value:?}, below the minimum of {min:?}; a shorter \
         interval only burns CPU and flushes the decision history"
    )]
    TooShort {
        /// Path of the field.
        field: String,
        /// The configured value.
        value: Duration,
        /// The smallest value allowed.
        min: Duration,
    },
    /// A duration that must be positive is zero.
    #[error("invalid scaling config: {field} is zero, but it must be positive")]
    ZeroDuration {
        /// Path of the field.
        field: String,
    },
    /// A policy weight is negative or not a number.
    #[error("invalid scaling config: {field} is {value}, but weights must not be negative")]
    NegativeWeight {
        /// Path of the field.
        field: String,
        /// The configured value.
        value: f64,
    },
    /// The weighted-average combiner is selected but every enabled policy has weight 0.
    #[error(
        "invalid scaling config: policies[*].weight is 0 for every enabled policy, so \
         weighted_average has nothing to average; give one policy a positive weight"
    )]
    AllWeightsZero,
    /// No policy is enabled, so no evaluation could recommend anything.
    #[error("invalid scaling config: policies has no enabled policy; enable at least one")]
    NoPolicyEnabled,
    /// The same policy kind appears twice.
    #[error("invalid scaling config: {field} repeats policy {kind}; each policy may appear once")]
    DuplicatePolicy {
        /// Path of the repeated entry's `policy` field.
        field: String,
        /// The repeated kind.
        kind: PolicyKind,
    },
    /// A memory percent target is set without `health.memory_bytes` to take the percent of.
    #[error("invalid scaling config: {field} needs health.memory_bytes to be set")]
    MissingMemoryLimit {
        /// Path of the percent field.
        field: String,
    },
    /// A memory policy sets both or neither of its two targets.
    #[error(
        "invalid scaling config: {field}: set exactly one of bytes_per_node and percent_per_node"
    )]
    AmbiguousMemoryTarget {
        /// Path of the policy's `bytes_per_node` field.
        field: String,
    },
    /// A policy, combiner or other name is unknown, as when converting a SetPolicy request.
    #[error(transparent)]
    UnknownName(#[from] UnknownName),
}

impl ConfigError {
    /// Returns the path of the offending field, such as `policies[2].weight`.
    pub fn field(&self) -> &str {
        match self {
            ConfigError::MinAboveMax { .. } => "min_nodes",
            ConfigError::NotPositive { field, .. }
            | ConfigError::OutOfRange { field, .. }
            | ConfigError::ZeroDuration { field }
            | ConfigError::TooShort { field, .. }
            | ConfigError::NegativeWeight { field, .. }
            | ConfigError::DuplicatePolicy { field, .. }
            | ConfigError::MissingMemoryLimit { field }
            | ConfigError::AmbiguousMemoryTarget { field } => field,
            ConfigError::AllWeightsZero => "policies[*].weight",
            ConfigError::NoPolicyEnabled => "policies",
            ConfigError::UnknownName(unknown) => unknown.what,
        }
    }
}

/// A name that matches no policy, combiner or other named choice; the message lists the
/// valid names. Nothing changed; retry with one of them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{name}`; valid names are: {}", .valid.join(", "))]
pub struct UnknownName {
    /// What was being named, such as `policy` or `combiner`.
    pub what: &'static str,
    /// The name given.
    pub name: String,
    /// Every valid name.
    pub valid: &'static [&'static str],
}

/// Parses `name` as the value at the same index in `values` as the name in `names`.
pub(crate) fn parse_name<T: Copy>(
    what: &'static str,
    name: &str,
    names: &'static [&'static str],
    values: &[T],
) -> Result<T, UnknownName> {
    names
        .iter()
        .position(|candidate| *candidate == name)
        .map(|index| values[index])
        .ok_or_else(|| UnknownName {
            what,
            name: name.to_owned(),
            valid: names,
        })
}

pub(crate) fn check_positive(field: &str, value: f64) -> Result<(), ConfigError> {
    if value > 0.0 && value.is_finite() {
        Ok(())
    } else {
        Err(ConfigError::NotPositive {
            field: field.to_owned(),
            value,
        })
    }
}

fn check_fraction(field: &str, value: f64) -> Result<(), ConfigError> {
    if (0.0..1.0).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            field: field.to_owned(),
            value,
            range: "[0, 1)",
        })
    }
}

fn check_range(
    field: &str,
    value: f64,
    range: std::ops::RangeInclusive<f64>,
    range_text: &'static str,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            field: field.to_owned(),
            value,
            range: range_text,
        })
    }
}

impl fmt::Display for PolicyTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyTarget::GrainDensity {
                activations_per_node,
            } => write!(f, "{activations_per_node} activations per node"),
            PolicyTarget::CallRate {
                calls_per_sec_per_node,
            } => write!(f, "{calls_per_sec_per_node} calls/s per node"),
            PolicyTarget::MailboxDepth { depth, measure } => match measure {
                MailboxMeasure::Max => write!(f, "max mailbox depth {depth}"),
                MailboxMeasure::TotalPerNode => write!(f, "{depth} queued messages per node"),
            },
            PolicyTarget::Cpu { percent_per_node } => write!(f, "{percent_per_node}% CPU per node"),
            PolicyTarget::Memory {
                bytes_per_node: Some(bytes),
                ..
            } => write!(f, "{bytes} bytes of memory per node"),
            PolicyTarget::Memory {
                percent_per_node, ..
            } => write!(
                f,
                "{}% of the memory limit per node",
                percent_per_node.unwrap_or(0.0)
            ),
            PolicyTarget::ClusterHealth {
                min_score,
                max_unhealthy_nodes,
            } => write!(
                f,
                "health score at least {min_score}, at most {max_unhealthy_nodes} unhealthy nodes"
            ),
        }
    }
}
