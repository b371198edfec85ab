//! Names of the placement strategies, as configured per grain type.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Placement strategy of a grain type: the rule that chooses a node for a new activation.
///
/// Every strategy considers only `Active` nodes. The configuration names are the kebab-case
/// strings of [`PlacementStrategy::as_str`], for `FromStr`, `Display` and serde alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlacementStrategy {
    /// A uniformly random node (`random`); Gristmill's default.
    #[default]
    Random,
    /// The local node if it is `Active`, otherwise a random node (`prefer-local`).
    PreferLocal,
    /// Rendezvous hashing of the grain id over the candidates (`hash`), so a grain picks the
    /// same node while membership and lifecycle states stay the same.
    Hash,
    /// The less loaded of two random nodes by activation count (`least-loaded`).
    LeastLoaded,
    /// The node with the lowest weighted score of CPU, memory, activations and call rate
    /// (`resource-optimized`), preferring the local node within a margin.
    ResourceOptimized,
}

impl PlacementStrategy {
    /// All strategies, in the order of their documentation.
    pub const ALL: [PlacementStrategy; 5] = [
        PlacementStrategy::Random,
        PlacementStrategy::PreferLocal,
        PlacementStrategy::Hash,
        PlacementStrategy::LeastLoaded,
        PlacementStrategy::ResourceOptimized,
    ];

    /// Returns the configuration name of the strategy.
    pub fn as_str(self) -> &'static str {
        match self {
            PlacementStrategy::Random => "random",
            PlacementStrategy::PreferLocal => "prefer-local",
            PlacementStrategy::Hash => "hash",
            PlacementStrategy::LeastLoaded => "least-loaded",
            PlacementStrategy::ResourceOptimized => "resource-optimized",
        }
    }
}

impl fmt::Display for PlacementStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PlacementStrategy {
    type Err = UnknownStrategyError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        PlacementStrategy::ALL
            .into_iter()
            .find(|strategy| strategy.as_str() == name)
            .ok_or_else(|| UnknownStrategyError {
                name: name.to_owned(),
            })
    }
}

/// A placement strategy name that matches no strategy. Nothing was configured; fix the name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown placement strategy {name:?}: expected one of random, prefer-local, hash, \
     least-loaded, resource-optimized"
)]
pub struct UnknownStrategyError {
    /// The rejected name.
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_display_and_serialize_alike() {
        let cases = [
            ("random", PlacementStrategy::Random),
            ("prefer-local", PlacementStrategy::PreferLocal),
            ("hash", PlacementStrategy::Hash),
            ("least-loaded", PlacementStrategy::LeastLoaded),
            ("resource-optimized", PlacementStrategy::ResourceOptimized),
        ];
        assert_eq!(cases.len(), PlacementStrategy::ALL.len());
        for (name, strategy) in cases {
            assert_eq!(name.parse(), Ok(strategy), "parse {name}");
            assert_eq!(strategy.to_string(), name);
            let json = serde_json::to_string(&strategy).expect("a strategy serializes");
            assert_eq!(json, format!("\"{name}\""));
            let back: PlacementStrategy = serde_json::from_str(&json).expect("its name parses");
            assert_eq!(back, strategy);
        }
    }

    #[test]
    fn unknown_name_lists_valid_names() {
        let error = "fastest"
            .parse::<PlacementStrategy>()
            .expect_err("no such strategy");
        let message = error.to_string();
        assert!(message.contains("\"fastest\""), "{message}");
        for strategy in PlacementStrategy::ALL {
            assert!(message.contains(strategy.as_str()), "{message}");
        }
    }
}
