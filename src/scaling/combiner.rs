//! Combiners: how the recommendations of several policies become one node count.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::scaling::behavior::Direction;
use crate::scaling::config::{UnknownName, parse_name};
use crate::scaling::decision::node_count;
use crate::scaling::policy::{PolicyKind, Recommendation};

/// The ways to combine recommendations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CombinerKind {
    /// Of the policies that recommend a change, the one with the highest priority wins; ties go
    /// to the policy listed first in the config.
    HighestPriority,
    /// The largest recommendation wins, as HPA does across metrics. A scale-out therefore wins
    /// over everything else, and a scale-in happens only when every policy that can remove
    /// nodes recommends one, and then by the smallest step among them. Policies that only add
    /// nodes take part only when they recommend a scale-out, so their "keep" does not block
    /// every scale-in.
    MostAggressive,
    /// A direction wins when at least `consensus_min_agree` policies recommend it, and then the
    /// most conservative of those recommendations applies. Scale-out is checked first.
    Consensus,
    /// The weighted mean of all recommendations, rounded to the nearest node (half away from
    /// zero). Policies within tolerance count with the current node count.
    WeightedAverage,
}

impl CombinerKind {
    /// Every combiner, in the order of [`Self::NAMES`].
    pub const ALL: [CombinerKind; 4] = [
        CombinerKind::HighestPriority,
        CombinerKind::MostAggressive,
        CombinerKind::Consensus,
        CombinerKind::WeightedAverage,
    ];

    /// The config names of every combiner.
    pub const NAMES: [&'static str; 4] = [
        "highest_priority",
        "most_aggressive",
        "consensus",
        "weighted_average",
    ];

    /// Returns the config name, such as `most_aggressive`.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl FromStr for CombinerKind {
    type Err = UnknownName;

    fn from_str(name: &str) -> Result<Self, UnknownName> {
        parse_name("combiner", name, &Self::NAMES, &Self::ALL)
    }
}

impl fmt::Display for CombinerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The combined recommendation and how it came about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Combined {
    /// The combiner that ran.
    pub combiner: CombinerKind,
    /// Node count it recommends, before stabilization, rate policies and min/max.
    pub desired_nodes: u32,
    /// The policies whose recommendations decided the result; empty when none did.
    pub deciding_policies: Vec<PolicyKind>,
    /// One sentence for operators.
    pub reason: String,
}

/// Combines `recommendations` made at `current` Active nodes.
pub fn combine(
    combiner: CombinerKind,
    consensus_min_agree: NonZeroU32,
    recommendations: &[Recommendation],
    current: u32,
) -> Combined {
    let hold = |reason: String| Combined {
        combiner,
        desired_nodes: current,
        deciding_policies: Vec::new(),
        reason,
    };
    if recommendations.is_empty() {
        return hold(format!(
            "no policy is enabled; keep {}",
            node_count(current)
        ));
    }
    match combiner {
        CombinerKind::HighestPriority => {
            let mut changing = recommendations
                .iter()
                .filter(|recommendation| recommendation.desired_nodes != current);
            let first = changing.next();
            let winner = changing.fold(first, |best, candidate| match best {
                Some(best) if best.priority >= candidate.priority => Some(best),
                _ => Some(candidate),
            });
            match winner {
                Some(winner) => decided(
                    combiner,
                    winner.desired_nodes,
                    vec![winner],
                    format!(
                        "{} has the highest priority ({}) of the policies that recommend a change",
                        winner.policy, winner.priority
                    ),
                ),
                None => hold(format!(
                    "no policy recommends a change; keep {}",
                    node_count(current)
                )),
            }
        }
        CombinerKind::MostAggressive => {
            let voting: Vec<&Recommendation> = recommendations
                .iter()
                .filter(|recommendation| {
                    !recommendation.policy.only_adds_nodes()
                        || recommendation.desired_nodes > current
                })
                .collect();
            let Some(desired) = voting
                .iter()
                .map(|recommendation| recommendation.desired_nodes)
                .max()
            else {
                return hold(format!(
                    "only policies that add nodes are enabled, and none recommends it; keep {}",
                    node_count(current)
                ));
            };
            let deciding: Vec<&Recommendation> = voting
                .into_iter()
                .filter(|recommendation| recommendation.desired_nodes == desired)
                .collect();
            decided(
                combiner,
                desired,
                deciding,
                "the largest recommendation wins".into(),
            )
        }
        CombinerKind::Consensus => {
            let min_agree = consensus_min_agree.get() as usize;
            for direction in [Direction::ScaleOut, Direction::ScaleIn] {
                let agreeing: Vec<&Recommendation> = recommendations
                    .iter()
                    .filter(|recommendation| {
                        Direction::between(current, recommendation.desired_nodes) == Some(direction)
                    })
                    .collect();
                if agreeing.len() < min_agree {
                    continue;
                }
                let counts = agreeing
                    .iter()
                    .map(|recommendation| recommendation.desired_nodes);
                let conservative = match direction {
                    Direction::ScaleOut => counts.min(),
                    Direction::ScaleIn => counts.max(),
                }
                .unwrap_or(current);
                let reason = format!(
                    "{} policies agree on {direction} (at least {min_agree} needed); the most \
                     conservative of them applies",
                    agreeing.len()
                );
                let deciding = agreeing
                    .into_iter()
                    .filter(|recommendation| recommendation.desired_nodes == conservative)
                    .collect();
                return decided(combiner, conservative, deciding, reason);
            }
            hold(format!(
                "fewer than {min_agree} policies agree on a direction; keep {}",
                node_count(current)
            ))
        }
        CombinerKind::WeightedAverage => {
            let total_weight: f64 = recommendations.iter().map(|r| r.weight).sum();
            if total_weight <= 0.0 {
                return hold(format!("every weight is 0; keep {}", node_count(current)));
            }
            let weighted: f64 = recommendations
                .iter()
                .map(|r| r.weight * f64::from(r.desired_nodes))
                .sum();
            let mean = weighted / total_weight;
            let deciding = recommendations.iter().filter(|r| r.weight > 0.0).collect();
            decided(
                combiner,
                mean.round() as u32,
                deciding,
                format!("weighted mean of the recommendations is {mean:.2} nodes"),
            )
        }
    }
}

fn decided(
    combiner: CombinerKind,
    desired_nodes: u32,
    deciding: Vec<&Recommendation>,
    reason: String,
) -> Combined {
    Combined {
        combiner,
        desired_nodes,
        deciding_policies: deciding.iter().map(|r| r.policy).collect(),
        reason: format!("{reason}: {}", node_count(desired_nodes)),
    }
}
