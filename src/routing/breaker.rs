//! Circuit breaker per gateway: closed, open after repeated node failures, half-open probing.

use std::time::Duration;

use crate::clock::Millis;

/// State of one gateway's circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow; counts consecutive node failures.
    Closed {
        /// Node failures since the last success.
        failures: u32,
    },
    /// Calls skip the gateway until `until`.
    Open {
        /// When the breaker lets one probe call through.
        until: Millis,
    },
    /// One probe call decides: success closes the breaker, failure opens it again.
    HalfOpen {
        /// Whether the probe call is in flight, so no other call is admitted.
        probing: bool,
    },
}

impl BreakerState {
    /// Returns the state's name for logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed { .. } => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half_open",
        }
    }
}

/// Circuit breaker of one gateway. Node failures are the caller's call: unreachable node,
/// timed out attempt, node shutting down. Application errors are not node failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CircuitBreaker {
    state: BreakerState,
    failure_threshold: u32,
    open_for: Duration,
}

impl CircuitBreaker {
    /// Creates a closed breaker that opens after `failure_threshold` (at least 1) consecutive
    /// node failures and stays open for `open_for`.
    pub fn new(failure_threshold: u32, open_for: Duration) -> Self {
        debug_assert!(failure_threshold > 0, "a zero threshold would never close");
        Self {
            state: BreakerState::Closed { failures: 0 },
            failure_threshold: failure_threshold.max(1),
            open_for,
        }
    }

    /// Returns the current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Returns whether a call may go to the gateway at `now`, without changing state.
    pub fn is_available(&self, now: Millis) -> bool {
        match self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } => now >= until,
            BreakerState::HalfOpen { probing } => !probing,
        }
    }

    /// Records that a call goes to the gateway at `now`. An open breaker whose time is up
    /// becomes half-open with this call as its probe. Returns the new state when it changed.
    ///
    /// Call only after [`CircuitBreaker::is_available`] returned `true`.
    pub fn handle_call(&mut self, now: Millis) -> Option<BreakerState> {
        debug_assert!(self.is_available(now), "a call went through a closed gate");
        match self.state {
            BreakerState::Closed { .. } => None,
            BreakerState::Open { .. } => {
                self.become_state(BreakerState::HalfOpen { probing: true })
            }
            BreakerState::HalfOpen { .. } => {
                self.state = BreakerState::HalfOpen { probing: true };
                None
            }
        }
    }

    /// Records a successful call; closes a half-open breaker. Returns the new state when it
    /// changed.
    pub fn handle_success(&mut self) -> Option<BreakerState> {
        match self.state {
            BreakerState::Closed { .. } => {
                self.state = BreakerState::Closed { failures: 0 };
                None
            }
            // A success from a call sent before the breaker opened says nothing new.
            BreakerState::Open { .. } => None,
            BreakerState::HalfOpen { .. } => {
                self.become_state(BreakerState::Closed { failures: 0 })
            }
        }
    }

    /// Records a node failure at `now`; opens the breaker at the threshold, or again when the
    /// probe failed. Returns the new state when it changed.
    pub fn handle_failure(&mut self, now: Millis) -> Option<BreakerState> {
        match self.state {
            BreakerState::Closed { failures } if failures + 1 >= self.failure_threshold => {
                self.become_open(now)
            }
            BreakerState::Closed { failures } => {
                self.state = BreakerState::Closed {
                    failures: failures + 1,
                };
                None
            }
            BreakerState::Open { .. } => None,
            BreakerState::HalfOpen { .. } => self.become_open(now),
        }
    }

    /// Records that a call admitted at half-open ended without a verdict on the node (an
    /// application error), so the next call may probe.
    pub fn handle_neutral(&mut self) {
        if let BreakerState::HalfOpen { .. } = self.state {
            self.state = BreakerState::HalfOpen { probing: false };
        }
    }

    fn become_open(&mut self, now: Millis) -> Option<BreakerState> {
        self.become_state(BreakerState::Open {
            until: now + self.open_for,
        })
    }

    fn become_state(&mut self, state: BreakerState) -> Option<BreakerState> {
        self.state = state;
        Some(state)
    }
}
