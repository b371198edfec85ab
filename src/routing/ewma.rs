//! Peak EWMA of response time: a load signal that rises at once and decays over time.

use std::time::Duration;

use crate::clock::Millis;

/// Exponentially weighted moving average of response time that jumps to any slower sample.
///
/// This is the "peak EWMA" of Finagle and linkerd: a sample above the average replaces it, so
/// a gateway that slows down is avoided at once; a faster sample pulls the average down with
/// weight `1 - exp(-elapsed / decay)`, so recovery shows over about one `decay`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeakEwma {
    value_ms: f64,
    updated_at: Millis,
    decay: Duration,
}

impl PeakEwma {
    /// Starts at `initial`, as if observed at `now`, with time constant `decay` (non-zero).
    pub fn new(initial: Duration, decay: Duration, now: Millis) -> Self {
        debug_assert!(!decay.is_zero(), "the EWMA decay must be positive");
        Self {
            value_ms: initial.as_secs_f64() * 1000.0,
            updated_at: now,
            decay,
        }
    }

    /// Returns the current average in milliseconds.
    pub fn value_ms(&self) -> f64 {
        self.value_ms
    }

    /// Adds one response time observed at `now`.
    pub fn observe(&mut self, rtt: Duration, now: Millis) {
        let sample_ms = rtt.as_secs_f64() * 1000.0;
        let elapsed = now.saturating_since(self.updated_at);
        self.updated_at = self.updated_at.max(now);
        if sample_ms > self.value_ms {
            self.value_ms = sample_ms;
            return;
        }
        let keep = (-elapsed.as_secs_f64() / self.decay.as_secs_f64()).exp();
        self.value_ms = self.value_ms * keep + sample_ms * (1.0 - keep);
    }
}
