//! Settings of server-side forwarding: the strategy and breakers a node uses towards its peers.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::BreakerConfig;
use super::strategy::StrategyKind;

/// Settings of a node's forwarding to its peers: the `[forwarding]` table of the node settings.
///
/// A call for a grain hosted elsewhere goes to that host, past the host's circuit breaker.
/// After `breaker.failure_threshold` consecutive node failures (no connection, no reply by the
/// deadline), calls to the host fail at once with `UNAVAILABLE` until `breaker.open_for` has
/// passed, instead of each waiting for its deadline. Calls to the stateless worker types in
/// `spread_workers` are balanced over every Active node with `strategy`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardingConfig {
    /// Strategy that balances spread stateless worker calls over the Active nodes, for types
    /// without an entry in `strategy_by_grain_type`. `grain-aware` acts as `round-robin` here,
    /// because any node can serve a worker call. Default: `round-robin`.
    pub strategy: StrategyKind,
    /// Strategy per grain type, overriding `strategy`. Default: empty.
    pub strategy_by_grain_type: BTreeMap<String, StrategyKind>,
    /// Weight per node name for the `weighted` strategy; nodes not listed weigh 1. Default:
    /// empty.
    pub weights: BTreeMap<String, NonZeroU32>,
    /// Stateless worker types whose calls run on any Active node, chosen by the strategy,
    /// rather than on the node that received the call. Each node keeps its own pool of worker
    /// activations. Default: empty, so worker calls stay on the receiving node, as in Orleans.
    pub spread_workers: BTreeSet<String>,
    /// Circuit breaker of each peer. Default: opens after 5 consecutive node failures, for 5 s.
    pub breaker: BreakerConfig,
}

impl Default for ForwardingConfig {
    fn default() -> Self {
        Self {
            strategy: StrategyKind::RoundRobin,
            strategy_by_grain_type: BTreeMap::new(),
            weights: BTreeMap::new(),
            spread_workers: BTreeSet::new(),
            breaker: BreakerConfig::default(),
        }
    }
}

/// An invalid `[forwarding]` field, with the field's name, the value and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid forwarding.{field} {value}: {fix}")]
pub struct ForwardingConfigError {
    /// The field's name below `forwarding`, such as `breaker.failure_threshold`.
    pub field: &'static str,
    /// The rejected value.
    pub value: String,
    /// The valid values, as advice to the operator.
    pub fix: String,
}

impl ForwardingConfig {
    /// Returns the strategy for calls to `grain_type`.
    pub fn strategy_for(&self, grain_type: &str) -> StrategyKind {
        self.strategy_by_grain_type
            .get(grain_type)
            .copied()
            .unwrap_or(self.strategy)
    }

    /// Returns the weight of node `name` for the `weighted` strategy.
    pub fn weight_of(&self, name: &str) -> u32 {
        self.weights.get(name).map_or(1, |weight| weight.get())
    }

    /// Checks the breaker settings. Grain type names are checked against the registered types
    /// when the node starts, with [`ForwardingConfig::check_spread_workers`].
    pub fn validate(&self) -> Result<(), ForwardingConfigError> {
        if self.breaker.failure_threshold == 0 {
            return Err(ForwardingConfigError {
                field: "breaker.failure_threshold",
                value: "0".into(),
                fix: "use at least 1 consecutive failure".into(),
            });
        }
        let open_for = self.breaker.open_for;
        if open_for < Duration::from_millis(1) || open_for > Duration::from_secs(600) {
            return Err(ForwardingConfigError {
                field: "breaker.open_for",
                value: format!("{open_for:?}"),
                fix: "use 1ms to 10m".into(),
            });
        }
        Ok(())
    }

    /// Checks that every entry of `spread_workers` names one of `worker_types`, the stateless
    /// worker types registered on this node.
    pub fn check_spread_workers(&self, worker_types: &[&str]) -> Result<(), ForwardingConfigError> {
        match self
            .spread_workers
            .iter()
            .find(|name| !worker_types.contains(&name.as_str()))
        {
            Some(name) => Err(ForwardingConfigError {
                field: "spread_workers",
                value: name.clone(),
                fix: format!(
                    "name a registered stateless worker type; registered worker types: [{}]",
                    worker_types.join(", ")
                ),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert_eq!(ForwardingConfig::default().validate(), Ok(()));
    }

    #[test]
    fn zero_failure_threshold_is_rejected() {
        let mut config = ForwardingConfig::default();
        config.breaker.failure_threshold = 0;
        let error = config.validate().expect_err("a zero threshold is invalid");
        assert_eq!(error.field, "breaker.failure_threshold");
        assert!(
            error
                .to_string()
                .contains("forwarding.breaker.failure_threshold 0")
        );
    }

    #[test]
    fn zero_open_for_is_rejected() {
        let mut config = ForwardingConfig::default();
        config.breaker.open_for = Duration::ZERO;
        let error = config.validate().expect_err("a zero open time is invalid");
        assert_eq!(error.field, "breaker.open_for");
    }

    #[test]
    fn unknown_spread_worker_type_is_named() {
        let config = ForwardingConfig {
            spread_workers: BTreeSet::from(["counter".to_owned()]),
            ..ForwardingConfig::default()
        };
        let error = config
            .check_spread_workers(&["bank"])
            .expect_err("counter is not a worker type");
        assert_eq!(error.field, "spread_workers");
        assert!(
            error.to_string().contains("spread_workers counter"),
            "{error}"
        );
        assert!(error.to_string().contains("[bank]"), "{error}");
        assert_eq!(
            ForwardingConfig {
                spread_workers: BTreeSet::from(["bank".to_owned()]),
                ..ForwardingConfig::default()
            }
            .check_spread_workers(&["bank"]),
            Ok(())
        );
    }

    #[test]
    fn unknown_strategy_name_fails_to_parse() {
        let error = toml::from_str::<ForwardingConfig>("strategy = \"fastest\"")
            .expect_err("fastest is no strategy");
        assert!(error.to_string().contains("fastest"), "{error}");
    }

    #[test]
    fn strategy_per_grain_type_overrides_default() {
        let config: ForwardingConfig = toml::from_str(
            "strategy = \"random\"\n[strategy_by_grain_type]\nbank = \"least-outstanding\"\n",
        )
        .expect("valid settings");
        assert_eq!(config.strategy_for("bank"), StrategyKind::LeastOutstanding);
        assert_eq!(config.strategy_for("other"), StrategyKind::Random);
    }
}
