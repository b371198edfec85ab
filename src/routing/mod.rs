//! Load-balanced routing of client calls over gateway nodes, with circuit breaking.
//!
//! Any node accepts any grain call and forwards it to the grain's node, so a client may send
//! each call to any Active node (a *gateway*). [`GristmillClient`] learns the gateways from one
//! node's `WatchMembership` stream and spreads calls over them.
//!
//! The parts, from the pure cores outwards:
//!
//! 1. [`Balancer`] tracks the gateways and, per call, picks one with a [`StrategyKind`]: round
//!    robin, least outstanding requests, smooth weighted round robin, power of two choices on a
//!    peak EWMA of response time, uniform random, or grain-aware (the node that served the grain
//!    last, then the grain's directory partition owner, then round robin).
//! 2. Each gateway has a [`CircuitBreaker`]: consecutive node failures open it, so calls skip
//!    the node until `open_for` passes; then one probe call decides between closing it and
//!    opening it again.
//! 3. A failed call is retried on another gateway only when that is safe (see
//!    [`retry_safety`]) and the [`RetryBudget`] has a token, so retries add at most a fixed
//!    fraction to the load.
//! 4. The client carries one deadline per call: every attempt sends the time left as
//!    `timeout_ms`, capped by `attempt_timeout`, so retries never extend the call.
//!
//! 5. Nodes use the same strategies and breakers towards each other: [`PeerTable`] keeps a
//!    breaker per peer for forwarded calls and balances spread stateless worker calls over
//!    the Active nodes (see [`ForwardingConfig`]).
//!
//! The cores take time as [`Millis`](crate::clock::Millis) and randomness as an `Rng`
//! argument; only `client.rs` and `watch.rs` touch tonic and tokio.

mod affinity;
mod balancer;
mod breaker;
mod budget;
mod client;
mod config;
mod error;
mod ewma;
mod forwarding;
mod metrics;
mod peer_table;
mod retry;
mod strategy;
mod watch;

#[cfg(test)]
mod tests;

pub use affinity::AffinityCache;
pub use balancer::{Balancer, CallOutcome, Decision, GatewayChange, MemberUpdate, PickReason};
pub use breaker::{BreakerState, CircuitBreaker};
pub use budget::RetryBudget;
pub use client::{ClientBuilder, GristmillClient, InvokeReply};
pub use config::{BreakerConfig, ClientConfig, ClientConfigError, RetryBudgetConfig};
pub use error::{AttemptDeadline, ClientError};
pub use ewma::PeakEwma;
pub use forwarding::{ForwardingConfig, ForwardingConfigError};
pub use metrics::RoutingMetrics;
pub use peer_table::{Admitted, BreakerOpen, PeerOutcome, PeerTable};
pub use retry::{Failure, RetrySafety, retry_safety};
pub use strategy::{Candidate, Picker, StrategyKind, UnknownStrategyError};
