//! Settings of the Kubernetes orchestrator, with their units, defaults and validation.

use std::num::NonZeroU32;
use std::time::Duration;

use super::ordinal;

/// Settings of the Kubernetes orchestrator.
///
/// The node binary fills these from its own configuration. `pod_name` normally comes from the
/// downward API (`GRISTMILL_NODE_NAME`), so a default config finds the StatefulSet that the
/// node runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// Namespace of the StatefulSet. Default: `None`, which uses the client's default
    /// namespace (in a pod, the namespace of its service account). Must be a DNS-1123 label.
    pub namespace: Option<String>,
    /// Name of the StatefulSet whose size the orchestrator sets. Default: `None`, which
    /// derives it from `pod_name` by removing the `-<ordinal>` suffix. Must be a DNS-1123
    /// label.
    pub statefulset: Option<String>,
    /// Name of the pod this node runs in, such as `gristmill-2`. Default: `None`. Required
    /// when `statefulset` is `None`.
    pub pod_name: Option<String>,
    /// Minimum replicas the orchestrator will set. Default: 1. Must not exceed `max_replicas`.
    pub min_replicas: NonZeroU32,
    /// Maximum replicas the orchestrator will set. Default: 10. Range: `min_replicas` to
    /// 2,147,483,647 (the StatefulSet field is a signed 32-bit integer).
    pub max_replicas: NonZeroU32,
    /// How often and how long failed API requests are retried.
    pub retry: RetryPolicy,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            namespace: None,
            statefulset: None,
            pod_name: None,
            min_replicas: NonZeroU32::MIN,
            max_replicas: NonZeroU32::new(10).expect("10 is not zero"),
            retry: RetryPolicy::default(),
        }
    }
}

/// Bounded exponential backoff for API requests that fail with a conflict, a server error or
/// a connection error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Maximum number of API requests that one orchestrator operation makes, counting the
    /// first.
    /// Default: 5. Range: 1 to 100.
    pub max_attempts: NonZeroU32,
    /// Wait after the first failed request; each further failure doubles it. Default: 200 ms.
    /// Must be positive.
    pub initial_backoff: Duration,
    /// Maximum wait between two requests. Default: 5 s. Must be at least `initial_backoff`.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: NonZeroU32::new(5).expect("5 is not zero"),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Returns the wait before the next request after `failed_attempts` failed ones, or `None`
    /// when the attempts are used up.
    pub fn backoff_after(&self, failed_attempts: u32) -> Option<Duration> {
        if failed_attempts == 0 || failed_attempts >= self.max_attempts.get() {
            return None;
        }
        let doublings = (failed_attempts - 1).min(31);
        let backoff = self.initial_backoff.saturating_mul(1 << doublings);
        Some(backoff.min(self.max_backoff))
    }
}

/// A setting with an invalid value. The message names the setting, the value and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `kubernetes.{setting}` = {value:?}: {reason}")]
pub struct KubernetesConfigError {
    /// Name of the setting within the Kubernetes settings, such as `max_replicas`.
    pub setting: &'static str,
    /// The rejected value, as text.
    pub value: String,
    /// The form a valid value takes.
    pub reason: String,
}

impl KubernetesConfigError {
    fn new(setting: &'static str, value: impl ToString, reason: impl Into<String>) -> Self {
        Self {
            setting,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

impl KubernetesConfig {
    /// Checks every setting and returns the first invalid one.
    pub fn validate(&self) -> Result<(), KubernetesConfigError> {
        if let Some(namespace) = &self.namespace
            && !is_dns_label(namespace)
        {
            return Err(KubernetesConfigError::new(
                "namespace",
                namespace,
                "use 1 to 63 lowercase letters, digits or '-', starting and ending alphanumeric",
            ));
        }
        self.statefulset_name()?;
        if self.max_replicas < self.min_replicas {
            return Err(KubernetesConfigError::new(
                "max_replicas",
                self.max_replicas,
                format!("use at least min_replicas ({})", self.min_replicas),
            ));
        }
        if i32::try_from(self.max_replicas.get()).is_err() {
            return Err(KubernetesConfigError::new(
                "max_replicas",
                self.max_replicas,
                "use at most 2147483647, the largest StatefulSet size",
            ));
        }
        self.retry.validate()
    }

    /// Returns the StatefulSet name: `statefulset` if set, else `pod_name` without its
    /// `-<ordinal>` suffix.
    pub fn statefulset_name(&self) -> Result<String, KubernetesConfigError> {
        if let Some(name) = &self.statefulset {
            if !is_dns_label(name) {
                return Err(KubernetesConfigError::new(
                    "statefulset",
                    name,
                    "use 1 to 63 lowercase letters, digits or '-', starting and ending \
                     alphanumeric",
                ));
            }
            return Ok(name.clone());
        }
        let Some(pod_name) = &self.pod_name else {
            return Err(KubernetesConfigError::new(
                "statefulset",
                "(unset)",
                "set statefulset, or set pod_name to this pod's name (GRISTMILL_NODE_NAME)",
            ));
        };
        match ordinal::split_pod_name(pod_name) {
            Some((statefulset, _)) if is_dns_label(statefulset) => Ok(statefulset.to_owned()),
            _ => Err(KubernetesConfigError::new(
                "pod_name",
                pod_name,
                "use a StatefulSet pod name such as gristmill-0, or set statefulset",
            )),
        }
    }
}

impl RetryPolicy {
    fn validate(&self) -> Result<(), KubernetesConfigError> {
        if self.max_attempts.get() > 100 {
            return Err(KubernetesConfigError::new(
                "retry.max_attempts",
                self.max_attempts,
                "use 1 to 100 attempts",
            ));
        }
        if self.initial_backoff.is_zero() {
            return Err(KubernetesConfigError::new(
                "retry.initial_backoff",
                format!("{:?}", self.initial_backoff),
                "use a positive duration",
            ));
        }
        if self.max_backoff < self.initial_backoff {
            return Err(KubernetesConfigError::new(
                "retry.max_backoff",
                format!("{:?}", self.max_backoff),
                format!("use at least initial_backoff ({:?})", self.initial_backoff),
            ));
        }
        Ok(())
    }
}

/// Returns whether `name` is a DNS-1123 label, the form of namespace and StatefulSet names.
fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    (1..=63).contains(&bytes.len())
        && bytes.iter().all(allowed)
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_pod(pod_name: &str) -> KubernetesConfig {
        KubernetesConfig {
            pod_name: Some(pod_name.to_owned()),
            ..KubernetesConfig::default()
        }
    }

    #[test]
    fn statefulset_name_derives_from_pod_name() {
        let cases = [
            ("gristmill-0", Some("gristmill")),
            ("gristmill-12", Some("gristmill")),
            ("grist-mill-3", Some("grist-mill")),
            ("gristmill", None),
            ("gristmill-", None),
            ("gristmill-01", None),
            ("-3", None),
            ("Gristmill-3", None),
        ];
        for (pod_name, expected) in cases {
            let derived = config_with_pod(pod_name).statefulset_name().ok();
            assert_eq!(derived.as_deref(), expected, "pod name {pod_name:?}");
        }
    }

    #[test]
    fn explicit_statefulset_wins_over_pod_name() {
        let config = KubernetesConfig {
            statefulset: Some("silos".into()),
            ..config_with_pod("gristmill-0")
        };
        assert_eq!(config.statefulset_name(), Ok("silos".to_owned()));
    }

    #[test]
    fn default_config_needs_statefulset_or_pod_name() {
        let error = KubernetesConfig::default().validate().unwrap_err();
        assert_eq!(error.setting, "statefulset");
        assert!(config_with_pod("gristmill-0").validate().is_ok());
    }

    #[test]
    fn validate_names_the_invalid_setting() {
        let valid = config_with_pod("gristmill-0");
        let cases: [(&str, KubernetesConfig); 6] = [
            (
                "namespace",
                KubernetesConfig {
                    namespace: Some("Prod_1".into()),
                    ..valid.clone()
                },
            ),
            (
                "max_replicas",
                KubernetesConfig {
                    min_replicas: NonZeroU32::new(5).unwrap(),
                    max_replicas: NonZeroU32::new(4).unwrap(),
                    ..valid.clone()
                },
            ),
            (
                "max_replicas",
                KubernetesConfig {
                    max_replicas: NonZeroU32::MAX,
                    ..valid.clone()
                },
            ),
            (
                "retry.max_attempts",
                KubernetesConfig {
                    retry: RetryPolicy {
                        max_attempts: NonZeroU32::new(101).unwrap(),
                        ..RetryPolicy::default()
                    },
                    ..valid.clone()
                },
            ),
            (
                "retry.initial_backoff",
                KubernetesConfig {
                    retry: RetryPolicy {
                        initial_backoff: Duration::ZERO,
                        ..RetryPolicy::default()
                    },
                    ..valid.clone()
                },
            ),
            (
                "retry.max_backoff",
                KubernetesConfig {
                    retry: RetryPolicy {
                        max_backoff: Duration::from_millis(100),
                        ..RetryPolicy::default()
                    },
                    ..valid.clone()
                },
            ),
        ];
        for (setting, config) in cases {
            let error = config.validate().unwrap_err();
            assert_eq!(error.setting, setting, "{error}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_stops() {
        let policy = RetryPolicy {
            max_attempts: NonZeroU32::new(6).unwrap(),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_millis(1_000),
        };
        let cases = [
            (0, None),
            (1, Some(200)),
            (2, Some(400)),
            (3, Some(800)),
            (4, Some(1_000)),
            (5, Some(1_000)),
            (6, None),
            (7, None),
        ];
        for (failed_attempts, expected_ms) in cases {
            let expected = expected_ms.map(Duration::from_millis);
            assert_eq!(
                policy.backoff_after(failed_attempts),
                expected,
                "after {failed_attempts} failed attempts"
            );
        }
    }
}
