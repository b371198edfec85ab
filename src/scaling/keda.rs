//! Gristmill's report to KEDA as an external scaler: the trigger options, the metric and
//! the activity rule, computed from a supervisor decision without I/O.
//!
//! KEDA's HPA reads one external metric per trigger. Gristmill reports a node count with a
//! target of 1 per replica, so with KEDA's default `metricType: AverageValue` the HPA's
//! formula `ceil(metric / target)` gives `replicas = nodes`. Two counts can be reported:
//!
//! - `desired_nodes` (the default): the count a dry run of the acting supervisor moves
//!   towards, after Gristmill's stabilization windows, rate policies and `min_nodes` /
//!   `max_nodes`. A pause, a cooldown or a running action does not hold it back.
//! - `recommended_nodes`: the combined recommendation of the policies before those limits,
//!   for a ScaledObject that leaves stabilization and rate limits to the HPA's `behavior`.
//!
//! NOTE: the HPA keeps the replica count when `metric / (target * replicas)` lies within its
//! tolerance of 1 (0.1 by default), so at 10 replicas or more a change of one node can be
//! held back by the HPA although Gristmill requests it.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::scaling::decision::Decision;

/// Trigger metadata keys that KEDA itself reads and passes on with the rest of the trigger
/// metadata (KEDA v2, `pkg/scalers/external_scaler.go`). They are accepted and ignored.
pub const KEDA_KEYS: [&str; 3] = ["scalerAddress", "enableTLS", "unsafeSsl"];

/// The trigger metadata key that selects the metric.
pub const METRIC_KEY: &str = "metric";

/// HPA target per replica: one node per replica.
pub const TARGET_PER_REPLICA: i64 = 1;

/// The node count reported as the metric.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScalerMetric {
    /// The dry run's target node count, after every Gristmill limit.
    #[default]
    DesiredNodes,
    /// The combined policy recommendation, before stabilization, rate policies and bounds.
    RecommendedNodes,
}

impl ScalerMetric {
    /// Every metric, in the order of [`Self::NAMES`].
    pub const ALL: [ScalerMetric; 2] = [ScalerMetric::DesiredNodes, ScalerMetric::RecommendedNodes];

    /// The values of the `metric` key.
    pub const NAMES: [&'static str; 2] = ["desired_nodes", "recommended_nodes"];

    /// Returns the value of the `metric` key, such as `desired_nodes`.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Returns the metric name reported to KEDA, such as `gristmill_desired_nodes`.
    pub fn metric_name(self) -> String {
        format!("gristmill_{}", self.as_str())
    }

    /// Returns the node count this metric reads from `decision`. A manual decision has no
    /// combined recommendation, so `recommended_nodes` falls back to its target.
    pub fn read(self, decision: &Decision) -> u32 {
        match self {
            ScalerMetric::DesiredNodes => decision.target_nodes,
            ScalerMetric::RecommendedNodes => decision
                .combined
                .as_ref()
                .map_or(decision.target_nodes, |combined| combined.desired_nodes),
        }
    }
}

impl fmt::Display for ScalerMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The options a ScaledObject's trigger metadata sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScalerOptions {
    /// The reported count; key `metric`, default `desired_nodes`.
    pub metric: ScalerMetric,
}

/// Trigger metadata that Gristmill cannot use. Nothing was evaluated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScalerOptionsError {
    /// A key that neither Gristmill nor KEDA reads, often a misspelling.
    #[error(
        "unknown trigger metadata key {key:?}; Gristmill reads \"metric\" and ignores KEDA's \
         own keys ({})", KEDA_KEYS.join(", ")
    )]
    UnknownKey {
        /// The key as written in the ScaledObject.
        key: String,
    },
    /// A value outside the accepted ones.
    #[error("invalid trigger metadata {key:?} = {value:?}; use one of: {}", accepted.join(", "))]
    InvalidValue {
        /// The key.
        key: &'static str,
        /// The value as written in the ScaledObject.
        value: String,
        /// The values the key accepts.
        accepted: &'static [&'static str],
    },
    /// `GetMetrics` asked for a metric other than the one the trigger selects.
    #[error("metric {requested:?} is not served for this trigger; its metadata selects {served:?}")]
    MetricMismatch {
        /// The requested metric name.
        requested: String,
        /// The metric name the trigger's options select.
        served: String,
    },
}

impl ScalerOptions {
    /// Parses the trigger metadata, rejecting unknown keys and invalid values.
    pub fn parse(metadata: &HashMap<String, String>) -> Result<Self, ScalerOptionsError> {
        let mut options = ScalerOptions::default();
        let mut keys: Vec<&String> = metadata.keys().collect();
        // Sorted, so that the first reported error does not depend on the map's order.
        keys.sort();
        for key in keys {
            let value = &metadata[key];
            if key == METRIC_KEY {
                options.metric = parse_metric(value)?;
            } else if !KEDA_KEYS.contains(&key.as_str()) {
                return Err(ScalerOptionsError::UnknownKey { key: key.clone() });
            }
        }
        Ok(options)
    }

    /// Checks that `requested`, the metric name of a `GetMetrics` request, is the one these
    /// options serve. KEDA sends the name from `GetMetricSpec` without its `s<index>-` prefix;
    /// an empty name is accepted as the served metric.
    pub fn check_metric_name(&self, requested: &str) -> Result<(), ScalerOptionsError> {
        let served = self.metric.metric_name();
        if requested.is_empty() || requested == served {
            return Ok(());
        }
        Err(ScalerOptionsError::MetricMismatch {
            requested: requested.to_owned(),
            served,
        })
    }
}

fn parse_metric(value: &str) -> Result<ScalerMetric, ScalerOptionsError> {
    ScalerMetric::ALL
        .into_iter()
        .find(|metric| metric.as_str() == value)
        .ok_or_else(|| ScalerOptionsError::InvalidValue {
            key: METRIC_KEY,
            value: value.to_owned(),
            accepted: &ScalerMetric::NAMES,
        })
}

/// The report for KEDA derived from a decision: the metric value and whether the cluster is active.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScalerReading {
    /// The selected node count.
    pub nodes: u32,
    /// Whether the cluster has work: an Active node hosts an activation or serves calls, or
    /// the metric requests more nodes than are Active.
    ///
    /// KEDA scales a target whose triggers are all inactive to `minReplicaCount` (or
    /// `idleReplicaCount`) after its cooldown period, bypassing the HPA.
    pub active: bool,
}

impl ScalerReading {
    /// Reads `metric` and the activity rule from `decision`.
    pub fn from_decision(decision: &Decision, metric: ScalerMetric) -> Self {
        let nodes = metric.read(decision);
        let load = &decision.load;
        let has_work = load.total_activations > 0 || load.total_calls_per_sec > 0.0;
        Self {
            nodes,
            active: has_work || nodes > decision.current_nodes,
        }
    }
}

/// Settings of the KEDA external scaler service, table `[keda]` in the node's TOML file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KedaConfig {
    /// Interval at which an open `StreamIsActive` stream re-evaluates the activity, in
    /// milliseconds. A change is sent at the next check. Default: 5000. Range: 100 to 600,000.
    pub active_check_interval_ms: u64,
    /// Maximum time an open `StreamIsActive` stream goes without a message, in milliseconds;
    /// the unchanged activity is sent again after it. Default: 60,000. Range:
    /// `active_check_interval_ms` to 3,600,000.
    pub active_resend_interval_ms: u64,
}

impl Default for KedaConfig {
    fn default() -> Self {
        Self {
            active_check_interval_ms: 5_000,
            active_resend_interval_ms: 60_000,
        }
    }
}

/// A `[keda]` setting with an invalid value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `keda.{field}` = {value}: {reason}")]
pub struct KedaConfigError {
    /// The field name within `[keda]`.
    pub field: &'static str,
    /// The rejected value.
    pub value: u64,
    /// The accepted range.
    pub reason: String,
}

impl KedaConfig {
    /// Checks both intervals and returns the first invalid one.
    pub fn validate(&self) -> Result<(), KedaConfigError> {
        if !(100..=600_000).contains(&self.active_check_interval_ms) {
            return Err(KedaConfigError {
                field: "active_check_interval_ms",
                value: self.active_check_interval_ms,
                reason: "use 100 to 600000 milliseconds".into(),
            });
        }
        if !(self.active_check_interval_ms..=3_600_000).contains(&self.active_resend_interval_ms) {
            return Err(KedaConfigError {
                field: "active_resend_interval_ms",
                value: self.active_resend_interval_ms,
                reason: format!(
                    "use active_check_interval_ms ({}) to 3600000 milliseconds",
                    self.active_check_interval_ms
                ),
            });
        }
        Ok(())
    }

    /// Returns the check interval as a duration.
    pub fn active_check_interval(&self) -> Duration {
        Duration::from_millis(self.active_check_interval_ms)
    }

    /// Returns the resend interval as a duration.
    pub fn active_resend_interval(&self) -> Duration {
        Duration::from_millis(self.active_resend_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn options_parse_metric_and_ignore_keda_keys() {
        let cases: [(&[(&str, &str)], ScalerMetric); 4] = [
            (&[], ScalerMetric::DesiredNodes),
            (
                &[("scalerAddress", "gristmill:7948")],
                ScalerMetric::DesiredNodes,
            ),
            (&[("metric", "desired_nodes")], ScalerMetric::DesiredNodes),
            (
                &[("metric", "recommended_nodes"), ("enableTLS", "false")],
                ScalerMetric::RecommendedNodes,
            ),
        ];
        for (pairs, expected) in cases {
            let options = ScalerOptions::parse(&metadata(pairs));
            assert_eq!(options.map(|o| o.metric), Ok(expected), "{pairs:?}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let error = ScalerOptions::parse(&metadata(&[("metrik", "desired_nodes")])).unwrap_err();
        assert_eq!(
            error,
            ScalerOptionsError::UnknownKey {
                key: "metrik".into()
            }
        );
        let message = error.to_string();
        assert!(message.contains("\"metrik\""), "{message}");
        assert!(message.contains("scalerAddress"), "{message}");
    }

    #[test]
    fn invalid_metric_lists_accepted_values() {
        let error = ScalerOptions::parse(&metadata(&[("metric", "cpu")])).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("\"metric\" = \"cpu\""), "{message}");
        assert!(
            message.contains("desired_nodes, recommended_nodes"),
            "{message}"
        );
    }

    #[test]
    fn metric_name_must_match_selection() {
        let options = ScalerOptions {
            metric: ScalerMetric::RecommendedNodes,
        };
        assert_eq!(options.check_metric_name(""), Ok(()));
        assert_eq!(
            options.check_metric_name("gristmill_recommended_nodes"),
            Ok(())
        );
        let error = options
            .check_metric_name("gristmill_desired_nodes")
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("\"gristmill_recommended_nodes\""),
            "{error}"
        );
    }

    #[test]
    fn config_validate_names_the_field() {
        assert_eq!(KedaConfig::default().validate(), Ok(()));
        let cases = [
            (99, 60_000, "active_check_interval_ms"),
            (600_001, 600_001, "active_check_interval_ms"),
            (5_000, 4_999, "active_resend_interval_ms"),
            (5_000, 3_600_001, "active_resend_interval_ms"),
        ];
        for (check, resend, field) in cases {
            let config = KedaConfig {
                active_check_interval_ms: check,
                active_resend_interval_ms: resend,
            };
            let error = config.validate().unwrap_err();
            assert_eq!(error.field, field, "check {check} ms, resend {resend} ms");
        }
    }
}
