//! Settings of the rebalancer: load weights, tolerance band, move limits and loop timing.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of one node's rebalancer. Every field has a default, so an empty TOML table is a
/// valid config.
///
/// The load score of a node weighs call rate and queued messages, not only the activation
/// count:
///
/// ```text
/// score = activation_weight * activations
///       + calls_per_sec_weight * calls_per_sec
///       + mailbox_depth_weight * mailbox_depth_total
/// ```
///
/// The defaults make one idle activation, five calls per second and one queued message weigh
/// the same.
///
/// NOTE: the default weights are a starting point chosen by reasoning, not by measurement.
/// Tune them against the scaling policy's view of a busy node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RebalancerConfig {
    /// Time between two rounds. Default 10 s; valid range 100 ms to 1 hour. Keep it several
    /// times the membership broadcast period, because each round plans on the gossiped loads
    /// and those reflect the previous round's moves only after the next broadcast.
    #[serde(with = "crate::duration_text")]
    pub round_interval: Duration,
    /// Half-width of the balanced band around the mean load, as a fraction of the mean. A node
    /// sheds load when its score exceeds `mean * (1 + tolerance)`, or when it is above the
    /// mean while another Active node is below `mean * (1 - tolerance)`. Default 0.10; valid
    /// range 0.01 to 0.9.
    pub tolerance: f64,
    /// Score of one activation, in load units per activation. Default 1.0; finite and at
    /// least 0.
    pub activation_weight: f64,
    /// Score of one call per second, in load units per (call/s). Default 0.2; finite and at
    /// least 0.
    pub calls_per_sec_weight: f64,
    /// Score of one message queued in a mailbox, in load units per message. Default 1.0;
    /// finite and at least 0. At least one of the three weights must be positive.
    pub mailbox_depth_weight: f64,
    /// Maximum number of moves one round starts. Default 200; at least 1.
    pub max_moves_per_round: NonZeroUsize,
    /// Maximum number of moves one round starts, as a fraction of this node's activations.
    /// The product is rounded up, so a node with any activation may move at least one.
    /// Default 0.10; valid range 0.001 to 1.0. The smaller of this and `max_moves_per_round`
    /// applies.
    pub max_move_fraction: f64,
    /// Time after a move of a grain (succeeded or failed) before this node moves it again.
    /// Default 60 s; valid range 0 to 1 day.
    #[serde(with = "crate::duration_text")]
    pub min_move_interval: Duration,
    /// Maximum number of migrations of one round in flight at once. Default 4; 1 to 256.
    pub max_concurrent_moves: NonZeroUsize,
    /// Deadline of one migration, from its start. Default 10 s; valid range 100 ms to 10
    /// minutes.
    #[serde(with = "crate::duration_text")]
    pub move_timeout: Duration,
    /// Rounds kept in the history that `GetRebalancer` returns. Default 50; 1 to 10,000.
    pub history_rounds: NonZeroU32,
    /// Whether the rebalancer starts paused; `SetRebalancerPaused` changes it at run time.
    /// Default false.
    pub start_paused: bool,
}

impl Default for RebalancerConfig {
    fn default() -> Self {
        Self {
            round_interval: Duration::from_secs(10),
            tolerance: 0.10,
            activation_weight: 1.0,
            calls_per_sec_weight: 0.2,
            mailbox_depth_weight: 1.0,
            max_moves_per_round: NonZeroUsize::new(200).expect("200 is not zero"),
            max_move_fraction: 0.10,
            min_move_interval: Duration::from_secs(60),
            max_concurrent_moves: NonZeroUsize::new(4).expect("4 is not zero"),
            move_timeout: Duration::from_secs(10),
            history_rounds: NonZeroU32::new(50).expect("50 is not zero"),
            start_paused: false,
        }
    }
}

/// A rebalancer setting with an invalid value. Nothing was started; fix the named setting.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("invalid rebalancer setting {field} = {value}: {reason}")]
pub struct RebalancerConfigError {
    /// Name of the setting, as in the TOML table (such as `tolerance`).
    pub field: &'static str,
    /// The rejected value.
    pub value: String,
    /// The rule the value breaks, such as its valid range.
    pub reason: String,
}

impl RebalancerConfig {
    /// Checks every setting against its documented range and names the first one outside it.
    pub fn validate(&self) -> Result<(), RebalancerConfigError> {
        check_range(
            "round_interval",
            self.round_interval,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )?;
        check_range("tolerance", self.tolerance, 0.01, 0.9)?;
        for (field, weight) in [
            ("activation_weight", self.activation_weight),
            ("calls_per_sec_weight", self.calls_per_sec_weight),
            ("mailbox_depth_weight", self.mailbox_depth_weight),
        ] {
            if !weight.is_finite() || weight < 0.0 {
                return Err(invalid(field, weight, "must be finite and at least 0"));
            }
        }
        let weights =
            self.activation_weight + self.calls_per_sec_weight + self.mailbox_depth_weight;
        if weights <= 0.0 {
            return Err(invalid(
                "activation_weight",
                self.activation_weight,
                "at least one of the three load weights must be positive",
            ));
        }
        check_range("max_move_fraction", self.max_move_fraction, 0.001, 1.0)?;
        check_range(
            "min_move_interval",
            self.min_move_interval,
            Duration::ZERO,
            Duration::from_secs(86_400),
        )?;
        if self.max_concurrent_moves.get() > 256 {
            return Err(invalid(
                "max_concurrent_moves",
                self.max_concurrent_moves,
                "must be at most 256",
            ));
        }
        check_range(
            "move_timeout",
            self.move_timeout,
            Duration::from_millis(100),
            Duration::from_secs(600),
        )?;
        if self.history_rounds.get() > 10_000 {
            return Err(invalid(
                "history_rounds",
                self.history_rounds,
                "must be at most 10000",
            ));
        }
        Ok(())
    }
}

fn invalid(
    field: &'static str,
    value: impl std::fmt::Debug,
    reason: impl Into<String>,
) -> RebalancerConfigError {
    RebalancerConfigError {
        field,
        value: format!("{value:?}"),
        reason: reason.into(),
    }
}

/// Rejects `value` outside `min..=max`; NaN is outside every range.
fn check_range<T: Copy + PartialOrd + std::fmt::Debug>(
    field: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<(), RebalancerConfigError> {
    if !(min..=max).contains(&value) {
        let reason = format!("must be between {min:?} and {max:?}");
        return Err(invalid(field, value, reason));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(RebalancerConfig::default().validate(), Ok(()));
    }

    #[test]
    fn validate_names_invalid_field() {
        type Edit = fn(&mut RebalancerConfig);
        let cases: [(&str, Edit); 13] = [
            ("round_interval", |c| {
                c.round_interval = Duration::from_millis(99)
            }),
            ("round_interval", |c| {
                c.round_interval = Duration::from_secs(3601)
            }),
            ("tolerance", |c| c.tolerance = 0.0),
            ("tolerance", |c| c.tolerance = f64::NAN),
            ("activation_weight", |c| c.activation_weight = -1.0),
            ("calls_per_sec_weight", |c| {
                c.calls_per_sec_weight = f64::INFINITY
            }),
            ("mailbox_depth_weight", |c| {
                c.mailbox_depth_weight = f64::NAN
            }),
            ("activation_weight", |c| {
                c.activation_weight = 0.0;
                c.calls_per_sec_weight = 0.0;
                c.mailbox_depth_weight = 0.0;
            }),
            ("max_move_fraction", |c| c.max_move_fraction = 1.5),
            ("min_move_interval", |c| {
                c.min_move_interval = Duration::from_secs(86_401)
            }),
            ("max_concurrent_moves", |c| {
                c.max_concurrent_moves = NonZeroUsize::new(257).expect("not zero")
            }),
            ("move_timeout", |c| {
                c.move_timeout = Duration::from_millis(50)
            }),
            ("history_rounds", |c| {
                c.history_rounds = NonZeroU32::new(10_001).expect("not zero")
            }),
        ];
        for (field, edit) in cases {
            let mut config = RebalancerConfig::default();
            edit(&mut config);
            let error = config.validate().expect_err(field);
            assert_eq!(error.field, field, "{error}");
        }
    }

    #[test]
    fn empty_toml_table_takes_defaults() {
        let config: RebalancerConfig = toml::from_str("").expect("empty table parses");
        assert_eq!(config, RebalancerConfig::default());
    }

    #[test]
    fn toml_durations_use_humantime() {
        let text = "round_interval = \"500ms\"\nmin_move_interval = \"2s\"\n";
        let config: RebalancerConfig = toml::from_str(text).expect("durations parse");
        assert_eq!(config.round_interval, Duration::from_millis(500));
        assert_eq!(config.min_move_interval, Duration::from_secs(2));
    }
}
