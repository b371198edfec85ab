//! Retry budget: a token bucket that caps retries at a fraction of calls plus a floor.

use crate::clock::Millis;

/// Token bucket that bounds retries, so retries cannot multiply the load on a failing cluster.
///
/// Every call deposits `ratio` tokens, every second deposits `min_per_sec` tokens, and every
/// retry withdraws one. The balance never exceeds `max_tokens`. Over any interval of `t`
/// seconds that holds `n` calls, retries are therefore at most
/// `max_tokens + ratio * n + min_per_sec * t`. This is the budget of Finagle and linkerd,
/// without their time-to-live on deposits.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryBudget {
    ratio: f64,
    min_per_sec: f64,
    max_tokens: f64,
    tokens: f64,
    refilled_at: Millis,
}

impl RetryBudget {
    /// Creates a full budget at `now`. `ratio` is in 0 to 1; `max_tokens` is at least 1.
    pub fn new(ratio: f64, min_per_sec: u32, max_tokens: u32, now: Millis) -> Self {
        let max_tokens = f64::from(max_tokens.max(1));
        Self {
            ratio,
            min_per_sec: f64::from(min_per_sec),
            max_tokens,
            tokens: max_tokens,
            refilled_at: now,
        }
    }

    /// Returns the tokens available, for tests and metrics.
    pub fn tokens(&self) -> f64 {
        self.tokens
    }

    /// Deposits the share of one new call (not a retry).
    pub fn handle_call(&mut self) {
        self.deposit(self.ratio);
    }

    /// Withdraws one token for a retry at `now`; returns whether the retry may go ahead.
    /// Without a token nothing changes.
    pub fn maybe_withdraw(&mut self, now: Millis) -> bool {
        let elapsed = now.saturating_since(self.refilled_at);
        self.refilled_at = self.refilled_at.max(now);
        self.deposit(self.min_per_sec * elapsed.as_secs_f64());
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }

    fn deposit(&mut self, tokens: f64) {
        self.tokens = (self.tokens + tokens).min(self.max_tokens);
    }
}
