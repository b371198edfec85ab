//! Settings of the directory partition and the caller-side directory cache.

use std::num::NonZeroUsize;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of the grain directory on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DirectoryConfig {
    /// Readiness window: how long a node that gained directory partitions in a membership
    /// change replies `NotReady` for those grains, unless every live member confirms its
    /// re-registration earlier. It must cover a gossip round plus the time previous owners take to send their
    /// hand-offs and hosts to re-register. Default 2 s; valid range 1 ms to 60 s; typical
    /// 1 s to 10 s. Longer values delay new activations of moved grains after churn.
    pub handoff_grace: Duration,
    /// Maximum number of grain locations a node caches for its outgoing calls. The least
    /// recently used entry is evicted first. Default 100 000; any non-zero value is valid.
    /// Each entry costs roughly 150 bytes plus the grain id's strings.
    pub cache_capacity: NonZeroUsize,
}

impl DirectoryConfig {
    /// Upper bound of [`DirectoryConfig::handoff_grace`].
    pub const MAX_HANDOFF_GRACE: Duration = Duration::from_secs(60);

    /// Checks every field against its valid range.
    pub fn validate(&self) -> Result<(), DirectoryConfigError> {
        let grace = self.handoff_grace;
        if grace < Duration::from_millis(1) || grace > Self::MAX_HANDOFF_GRACE {
            return Err(DirectoryConfigError::HandoffGraceOutOfRange { value: grace });
        }
        Ok(())
    }
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self {
            handoff_grace: Duration::from_secs(2),
            cache_capacity: NonZeroUsize::new(100_000).expect("100 000 is not zero"),
        }
    }
}

/// An invalid [`DirectoryConfig`] field. Nothing was applied; fix the value and retry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryConfigError {
    /// `handoff_grace` is shorter than 1 ms or longer than 60 s.
    #[error("invalid directory handoff_grace {value:?}: expected 1 ms to 60 s")]
    HandoffGraceOutOfRange {
        /// The rejected value.
        value: Duration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert_eq!(DirectoryConfig::default().validate(), Ok(()));
    }

    #[test]
    fn handoff_grace_bounds() {
        let cases = [
            (Duration::ZERO, false),
            (Duration::from_micros(999), false),
            (Duration::from_millis(1), true),
            (Duration::from_secs(60), true),
            (Duration::from_millis(60_001), false),
        ];
        for (handoff_grace, valid) in cases {
            let config = DirectoryConfig {
                handoff_grace,
                ..DirectoryConfig::default()
            };
            assert_eq!(
                config.validate().is_ok(),
                valid,
                "handoff_grace {handoff_grace:?}"
            );
        }
    }
}
