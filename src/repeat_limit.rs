//! Rate limit for log lines about an event that can repeat many times a second.

use std::time::{Duration, Instant};

/// Lets the first occurrence of a repeated event in each interval be logged and counts the
/// rest, so a flood (a port scan, garbage datagrams, a seed that never answers) costs one log
/// line per interval instead of one per occurrence.
///
/// NOTE: occurrences suppressed after the last logged one are reported only with the next
/// occurrence after the interval; the caller's metric counts every occurrence at once.
#[derive(Debug)]
pub(crate) struct RepeatLimit {
    interval: Duration,
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl RepeatLimit {
    /// Creates a limit of one log line per `interval`.
    pub(crate) const fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_logged: None,
            suppressed: 0,
        }
    }

    /// Counts one occurrence at `now`. Returns `Some(suppressed)` when this occurrence should
    /// be logged, with the number of occurrences suppressed since the previous log line, and
    /// `None` when it should not.
    pub(crate) fn record(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last_logged
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if !due {
            self.suppressed += 1;
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_occurrence_per_interval_is_logged() {
        let interval = Duration::from_secs(10);
        let start = Instant::now();
        let mut limit = RepeatLimit::new(interval);
        let cases = [
            (Duration::ZERO, Some(0)),
            (Duration::from_secs(1), None),
            (Duration::from_secs(9), None),
            (Duration::from_secs(10), Some(2)),
            (Duration::from_secs(11), None),
            (Duration::from_secs(25), Some(1)),
            (Duration::from_secs(40), Some(0)),
        ];

        for (offset, expected) in cases {
            assert_eq!(limit.record(start + offset), expected, "at {offset:?}");
        }
    }
}
