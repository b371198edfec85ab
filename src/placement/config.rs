//! Weights and margin of resource-optimized placement.

use serde::{Deserialize, Serialize};

/// Settings of placement that apply to every grain type.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlacementConfig {
    /// Weight of CPU use in the resource-optimized score. Weights are relative to each other.
    /// Default 0.4 (a Gristmill default); valid range: finite and not negative.
    pub cpu_weight: f64,
    /// Weight of resident memory. Default 0.2; valid range: finite and not negative.
    pub memory_weight: f64,
    /// Weight of the activation count, recent placements included. Default 0.3; valid range:
    /// finite and not negative.
    pub activations_weight: f64,
    /// Weight of the call rate. Default 0.1; valid range: finite and not negative.
    pub calls_weight: f64,
    /// Score difference within which resource-optimized placement chooses the local node over
    /// a better-scoring remote one. Scores range from 0 (idlest) to 1, so 0.05 means 5% of the
    /// range. 0 always chooses the best score; 1 always chooses the local node while it is
    /// `Active`. Default 0.05; valid range 0 to 1.
    pub local_preference_margin: f64,
}

impl PlacementConfig {
    /// Checks every field against its valid range.
    pub fn validate(&self) -> Result<(), PlacementConfigError> {
        for (field, value) in self.weights_by_name() {
            if !value.is_finite() || value < 0.0 {
                return Err(PlacementConfigError::InvalidWeight { field, value });
            }
        }
        if self.weight_sum() <= 0.0 {
            return Err(PlacementConfigError::AllWeightsZero);
        }
        let margin = self.local_preference_margin;
        if !(0.0..=1.0).contains(&margin) {
            return Err(PlacementConfigError::LocalPreferenceMarginOutOfRange { value: margin });
        }
        Ok(())
    }

    /// Returns the sum of the four weights.
    pub(super) fn weight_sum(&self) -> f64 {
        self.weights_by_name()
            .iter()
            .map(|(_, weight)| weight)
            .sum()
    }

    fn weights_by_name(&self) -> [(&'static str, f64); 4] {
        [
            ("cpu_weight", self.cpu_weight),
            ("memory_weight", self.memory_weight),
            ("activations_weight", self.activations_weight),
            ("calls_weight", self.calls_weight),
        ]
    }
}

impl Default for PlacementConfig {
    fn default() -> Self {
        Self {
            cpu_weight: 0.4,
            memory_weight: 0.2,
            activations_weight: 0.3,
            calls_weight: 0.1,
            local_preference_margin: 0.05,
        }
    }
}

/// An invalid [`PlacementConfig`] field. Nothing was applied; fix the value and retry.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PlacementConfigError {
    /// A weight is negative, infinite or not a number.
    #[error("invalid placement {field} {value}: expected a finite number of at least 0")]
    InvalidWeight {
        /// Name of the weight field.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// Every weight is zero, so no score could tell nodes apart.
    #[error(
        "invalid placement weights: cpu_weight, memory_weight, activations_weight and \
         calls_weight are all 0; set at least one above 0"
    )]
    AllWeightsZero,
    /// `local_preference_margin` is outside 0 to 1.
    #[error("invalid placement local_preference_margin {value}: expected 0 to 1")]
    LocalPreferenceMarginOutOfRange {
        /// The rejected value.
        value: f64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert_eq!(PlacementConfig::default().validate(), Ok(()));
    }

    #[test]
    fn validate_names_rejected_field() {
        let base = PlacementConfig::default();
        let cases = [
            (
                PlacementConfig {
                    cpu_weight: -0.1,
                    ..base
                },
                Err(PlacementConfigError::InvalidWeight {
                    field: "cpu_weight",
                    value: -0.1,
                }),
            ),
            (
                PlacementConfig {
                    calls_weight: f64::INFINITY,
                    ..base
                },
                Err(PlacementConfigError::InvalidWeight {
                    field: "calls_weight",
                    value: f64::INFINITY,
                }),
            ),
            (
                PlacementConfig {
                    cpu_weight: 0.0,
                    memory_weight: 0.0,
                    activations_weight: 0.0,
                    calls_weight: 0.0,
                    ..base
                },
                Err(PlacementConfigError::AllWeightsZero),
            ),
            (
                PlacementConfig {
                    local_preference_margin: 1.5,
                    ..base
                },
                Err(PlacementConfigError::LocalPreferenceMarginOutOfRange { value: 1.5 }),
            ),
            (
                PlacementConfig {
                    local_preference_margin: 1.0,
                    ..base
                },
                Ok(()),
            ),
            (
                PlacementConfig {
                    memory_weight: 0.0,
                    ..base
                },
                Ok(()),
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(config.validate(), expected, "{config:?}");
        }
    }

    #[test]
    fn nan_weight_is_invalid() {
        let config = PlacementConfig {
            memory_weight: f64::NAN,
            ..PlacementConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(PlacementConfigError::InvalidWeight {
                field: "memory_weight",
                ..
            })
        ));
    }
}
