//! The clock of the progress lines of `gristmill local`: one line a second, no second twice.

use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

/// A ticker of one tick a period, with the window of calls that each progress line covers.
pub struct ProgressClock {
    started: Instant,
    ticker: Interval,
    window_start: Instant,
}

/// The span of one progress line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgressWindow {
    /// Time from the start of the workload to the end of the window.
    pub elapsed: Duration,
    /// Length of the window: the time since the previous window ended.
    pub length: Duration,
}

impl ProgressClock {
    /// Starts a clock whose first tick comes one `period` after `started`.
    pub fn new(started: Instant, period: Duration) -> Self {
        let mut ticker = tokio::time::interval_at(started + period, period);
        // A tick's work can overrun the next tick, such as a slow gateway refresh or activation
        // counts from nodes that do not reply. The missed ticks would then fire at once and
        // print lines with the same second and windows of a few milliseconds.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        Self {
            started,
            ticker,
            window_start: started,
        }
    }

    /// Waits for the next tick and returns the instant it was due.
    pub async fn tick(&mut self) -> Instant {
        self.ticker.tick().await
    }

    /// Ends the current window now and starts the next one.
    ///
    /// The clock skips the ticks that a slow line overran, so the next tick is due a whole
    /// number of periods after the start and after this window's end. Called right after
    /// [`ProgressClock::tick`], no two windows then end in the same whole second of `elapsed`
    /// when the period is 1 s.
    pub fn end_window(&mut self) -> ProgressWindow {
        let now = Instant::now();
        let window = ProgressWindow {
            elapsed: now.duration_since(self.started),
            length: now.duration_since(self.window_start),
        };
        self.window_start = now;
        window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slow_tick_skips_its_seconds() {
        let period = Duration::from_secs(1);
        let mut clock = ProgressClock::new(Instant::now(), period);
        let mut windows = Vec::new();
        for line in 0..6 {
            clock.tick().await;
            windows.push(clock.end_window());
            if line == 2 {
                // The work of the third line takes 2.5 s, past the fourth and fifth ticks.
                tokio::time::sleep(Duration::from_millis(2_500)).await;
            }
        }

        let seconds: Vec<u64> = windows.iter().map(|w| w.elapsed.as_secs()).collect();
        assert_eq!(seconds, [1, 2, 3, 5, 6, 7], "{windows:?}");
        let lengths: Vec<u128> = windows.iter().map(|w| w.length.as_millis()).collect();
        assert_eq!(lengths, [1_000, 1_000, 1_000, 2_500, 500, 1_000]);
    }
}
