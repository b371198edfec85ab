//! Conversion of call deadlines between monotonic instants and Unix milliseconds, the form in
//! which they cross the network, without reading both clocks for every message.
//!
//! The process keeps one pairing of the two clocks: the Unix time, in milliseconds, at a fixed
//! base instant. A conversion is then arithmetic on the instant it is given. Each node
//! measures the pairing again every [`REFRESH_PERIOD`], so a step of the wall clock (a manual
//! change, an NTP step) reaches the conversions within that period. Between two measurements
//! the conversions follow the monotonic clock, which is what a deadline measures anyway.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Time between two measurements of the pairing, by each node's refresh task.
pub(crate) const REFRESH_PERIOD: Duration = Duration::from_secs(1);

/// The base instant, fixed at the first conversion.
static BASE: OnceLock<Instant> = OnceLock::new();
/// Unix time in milliseconds at `BASE`, as last measured.
static UNIX_MS_AT_BASE: AtomicU64 = AtomicU64::new(0);

fn base() -> Instant {
    *BASE.get_or_init(|| {
        let base = Instant::now();
        UNIX_MS_AT_BASE.store(measure(base), Ordering::Relaxed);
        base
    })
}

/// Reads both clocks and returns the Unix time in milliseconds at `base`.
fn measure(base: Instant) -> u64 {
    let since_base = millis(base.elapsed());
    let unix_now = millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    );
    unix_now.saturating_sub(since_base)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Measures the pairing of the two clocks again.
pub(crate) fn refresh() {
    let base = base();
    UNIX_MS_AT_BASE.store(measure(base), Ordering::Relaxed);
}

/// Returns `instant` as Unix time in milliseconds.
pub(crate) fn to_unix_ms(instant: Instant) -> u64 {
    let base = base();
    let at_base = UNIX_MS_AT_BASE.load(Ordering::Relaxed);
    if instant >= base {
        at_base.saturating_add(millis(instant - base))
    } else {
        at_base.saturating_sub(millis(base - instant))
    }
}

/// Returns the instant at Unix time `unix_ms`. A time that `Instant` cannot represent becomes
/// the base instant (past) or a year after it (future).
pub(crate) fn from_unix_ms(unix_ms: u64) -> Instant {
    let base = base();
    let at_base = UNIX_MS_AT_BASE.load(Ordering::Relaxed);
    if unix_ms >= at_base {
        let ahead = Duration::from_millis(unix_ms - at_base);
        base.checked_add(ahead)
            .unwrap_or(base + Duration::from_secs(86_400 * 365))
    } else {
        let behind = Duration::from_millis(at_base - unix_ms);
        base.checked_sub(behind).unwrap_or(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix_now_ms() -> u64 {
        millis(SystemTime::now().duration_since(UNIX_EPOCH).unwrap())
    }

    #[test]
    fn future_instant_maps_to_future_unix_time() {
        let before = unix_now_ms();
        let unix_ms = to_unix_ms(Instant::now() + Duration::from_secs(5));
        let after = unix_now_ms();
        // The pairing is measured in whole milliseconds, so allow one on either side.
        assert!(unix_ms + 1 >= before + 5_000, "{unix_ms} vs {before}");
        assert!(unix_ms <= after + 5_001, "{unix_ms} vs {after}");
    }

    #[test]
    fn round_trip_keeps_the_millisecond() {
        let deadline = Instant::now() + Duration::from_millis(1_234);
        let back = from_unix_ms(to_unix_ms(deadline));
        let error = if back > deadline {
            back - deadline
        } else {
            deadline - back
        };
        assert!(error < Duration::from_millis(2), "off by {error:?}");
    }

    #[test]
    fn past_unix_time_maps_to_past_instant() {
        let now = Instant::now();
        let past = from_unix_ms(unix_now_ms().saturating_sub(10_000));
        assert!(past < now);
    }

    #[test]
    fn far_future_unix_time_does_not_overflow() {
        let far = from_unix_ms(u64::MAX);
        assert!(far > Instant::now());
    }

    #[test]
    fn refresh_keeps_conversions_consistent() {
        let deadline = Instant::now() + Duration::from_secs(1);
        let first = to_unix_ms(deadline);
        refresh();
        let second = to_unix_ms(deadline);
        assert!(first.abs_diff(second) <= 2, "{first} then {second}");
    }
}
