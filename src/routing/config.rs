//! Settings of the cluster-aware client: seeds, strategies, deadlines, breaker and retries.

use std::collections::{BTreeMap, BTreeSet};
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::strategy::StrategyKind;

/// Settings of a [`GristmillClient`](super::GristmillClient).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientConfig {
    /// gRPC addresses (`host:port`) to learn the members from. The client watches membership
    /// through one of them, or through any Active gateway once it has learned some. Default: none;
    /// at least one is required.
    pub seeds: Vec<String>,
    /// Strategy for grain types without an entry in `strategy_by_grain_type`. Default
    /// `round-robin`.
    pub strategy: StrategyKind,
    /// Strategy per grain type, overriding `strategy`. Default: empty.
    pub strategy_by_grain_type: BTreeMap<String, StrategyKind>,
    /// Weight per node name for the `weighted` strategy. Default: empty.
    ///
    /// NOTE: members do not announce a capacity yet, so weights come only from here.
    pub weights: BTreeMap<String, NonZeroU32>,
    /// Weight of nodes missing from `weights`. Default 1.
    pub default_weight: NonZeroU32,
    /// Methods that are safe to run twice, as `grain_type.method` (such as `counter.get`).
    /// Only these are retried after a failure where the call may have run. Default: empty.
    pub idempotent_methods: BTreeSet<String>,
    /// Deadline of a call whose caller gives none, from the first attempt to the last reply.
    /// Default 5 s; valid range 1 ms to 1 hour (the nodes' maximum).
    #[serde(with = "crate::duration_text")]
    pub call_timeout: Duration,
    /// Maximum duration of one attempt. Each attempt sends the smaller of this and the time left in
    /// the call's deadline, so a stuck gateway leaves time for a retry. Default: none (an
    /// attempt may use the whole deadline); when set, 1 ms to 1 hour.
    #[serde(with = "crate::duration_text::option")]
    pub attempt_timeout: Option<Duration>,
    /// Maximum number of attempts per call, the first included. Default 3; 1 disables retries.
    pub max_attempts: NonZeroU32,
    /// Time allowed to open a connection to a gateway or seed. Default 2 s; valid range
    /// 1 ms to 60 s.
    #[serde(with = "crate::duration_text")]
    pub connect_timeout: Duration,
    /// Pause before watching membership again after the stream failed. Default 500 ms;
    /// valid range 1 ms to 60 s.
    #[serde(with = "crate::duration_text")]
    pub resubscribe_after: Duration,
    /// Response time that new gateways start with in the peak EWMA of `p2c-ewma`. Lower
    /// values send new nodes more trial traffic. Default 10 ms.
    #[serde(with = "crate::duration_text")]
    pub ewma_initial: Duration,
    /// Time constant of the peak EWMA: how fast a gateway's average recovers after a slow
    /// reply. Default 10 s; valid range 1 ms to 10 minutes.
    #[serde(with = "crate::duration_text")]
    pub ewma_decay: Duration,
    /// Most grains whose serving node the `grain-aware` strategy remembers. Default 100 000;
    /// each entry costs roughly 100 bytes plus the grain id's strings.
    pub grain_cache_capacity: NonZeroUsize,
    /// Circuit breaker of each gateway.
    pub breaker: BreakerConfig,
    /// Budget that bounds retries.
    pub retry_budget: RetryBudgetConfig,
}

/// Settings of each gateway's circuit breaker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BreakerConfig {
    /// Consecutive gateway failures (no connection, no response, shutting down) that open the
    /// breaker. Default 5; must be at least 1.
    pub failure_threshold: u32,
    /// Time an open breaker keeps calls away before one probe call may pass. Default 5 s;
    /// valid range 1 ms to 10 minutes.
    #[serde(with = "crate::duration_text")]
    pub open_for: Duration,
}

/// Settings of the retry budget (see [`RetryBudget`](super::RetryBudget)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryBudgetConfig {
    /// Retries allowed per call, on average. Default 0.2 (retries add at most 20 % load);
    /// valid range 0 to 1.
    pub ratio: f64,
    /// Retries allowed per second regardless of the call rate, so a client with few calls can
    /// still retry. Default 10.
    pub min_per_sec: u32,
    /// Most retry tokens the budget stores, which bounds a burst of retries. Default 100.
    pub max_tokens: NonZeroU32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            seeds: Vec::new(),
            strategy: StrategyKind::RoundRobin,
            strategy_by_grain_type: BTreeMap::new(),
            weights: BTreeMap::new(),
            default_weight: NonZeroU32::MIN,
            idempotent_methods: BTreeSet::new(),
            call_timeout: Duration::from_secs(5),
            attempt_timeout: None,
            max_attempts: NonZeroU32::new(3).expect("3 is not zero"),
            connect_timeout: Duration::from_secs(2),
            resubscribe_after: Duration::from_millis(500),
            ewma_initial: Duration::from_millis(10),
            ewma_decay: Duration::from_secs(10),
            grain_cache_capacity: NonZeroUsize::new(100_000).expect("100 000 is not zero"),
            breaker: BreakerConfig::default(),
            retry_budget: RetryBudgetConfig::default(),
        }
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(5),
        }
    }
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_sec: 10,
            max_tokens: NonZeroU32::new(100).expect("100 is not zero"),
        }
    }
}

/// Maximum call deadline the nodes accept.
const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(3600);
const ONE_MS: Duration = Duration::from_millis(1);

impl ClientConfig {
    /// Returns the strategy for calls to `grain_type`.
    pub fn strategy_for(&self, grain_type: &str) -> StrategyKind {
        self.strategy_by_grain_type
            .get(grain_type)
            .copied()
            .unwrap_or(self.strategy)
    }

    /// Returns whether `grain_type.method` is marked idempotent.
    pub fn is_idempotent(&self, grain_type: &str, method: &str) -> bool {
        self.idempotent_methods
            .iter()
            .any(|entry| entry.split_once('.') == Some((grain_type, method)))
    }

    /// Returns the weight of node `name` for the `weighted` strategy.
    pub fn weight_of(&self, name: &str) -> u32 {
        self.weights.get(name).unwrap_or(&self.default_weight).get()
    }

    /// Checks every field against its valid range.
    pub fn validate(&self) -> Result<(), ClientConfigError> {
        if self.seeds.is_empty() {
            return Err(ClientConfigError::NoSeeds);
        }
        if let Some(seed) = self.seeds.iter().find(|seed| !is_host_port(seed)) {
            return Err(ClientConfigError::InvalidSeed { seed: seed.clone() });
        }
        if let Some(entry) = self.idempotent_methods.iter().find(|entry| {
            entry
                .split_once('.')
                .is_none_or(|(grain_type, method)| grain_type.is_empty() || method.is_empty())
        }) {
            return Err(ClientConfigError::InvalidIdempotentMethod {
                entry: entry.clone(),
            });
        }

        check_range("call_timeout", self.call_timeout, ONE_MS, MAX_CALL_TIMEOUT)?;
        if let Some(attempt_timeout) = self.attempt_timeout {
            check_range("attempt_timeout", attempt_timeout, ONE_MS, MAX_CALL_TIMEOUT)?;
        }
        let minute = Duration::from_secs(60);
        let ten_minutes = Duration::from_secs(600);
        check_range("connect_timeout", self.connect_timeout, ONE_MS, minute)?;
        check_range("resubscribe_after", self.resubscribe_after, ONE_MS, minute)?;
        check_range("ewma_decay", self.ewma_decay, ONE_MS, ten_minutes)?;
        check_range(
            "breaker.open_for",
            self.breaker.open_for,
            ONE_MS,
            ten_minutes,
        )?;
        if self.breaker.failure_threshold == 0 {
            return Err(ClientConfigError::ZeroFailureThreshold);
        }
        let ratio = self.retry_budget.ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(ClientConfigError::RetryRatioOutOfRange { value: ratio });
        }
        Ok(())
    }
}

fn is_host_port(seed: &str) -> bool {
    seed.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

fn check_range(
    field: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), ClientConfigError> {
    if value < min || value > max {
        return Err(ClientConfigError::DurationOutOfRange {
            field,
            value,
            min,
            max,
        });
    }
    Ok(())
}

/// An invalid [`ClientConfig`] field. No client was built; fix the value and build again.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ClientConfigError {
    /// `seeds` is empty.
    #[error("invalid client seeds: expected at least one gRPC address as host:port")]
    NoSeeds,
    /// An entry of `seeds` is not `host:port` with a non-zero port.
    #[error("invalid client seed {seed:?}: expected a gRPC address as host:port")]
    InvalidSeed {
        /// The rejected entry.
        seed: String,
    },
    /// An entry of `idempotent_methods` is not `grain_type.method`.
    #[error("invalid idempotent_methods entry {entry:?}: expected grain_type.method")]
    InvalidIdempotentMethod {
        /// The rejected entry.
        entry: String,
    },
    /// A duration field is outside its valid range.
    #[error("invalid client {field} {value:?}: expected {min:?} to {max:?}")]
    DurationOutOfRange {
        /// The field's name, such as `breaker.open_for`.
        field: &'static str,
        /// The rejected value.
        value: Duration,
        /// Smallest valid value.
        min: Duration,
        /// Largest valid value.
        max: Duration,
    },
    /// `breaker.failure_threshold` is zero, which would keep every breaker open.
    #[error("invalid client breaker.failure_threshold 0: expected at least 1")]
    ZeroFailureThreshold,
    /// `retry_budget.ratio` is outside 0 to 1.
    #[error("invalid client retry_budget.ratio {value}: expected 0 to 1")]
    RetryRatioOutOfRange {
        /// The rejected value.
        value: f64,
    },
}
