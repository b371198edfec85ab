//! Gossip rates that grow with the cluster: meta re-broadcast period, foca's transmissions and
//! the member-list pull period.
//!
//! Every node re-broadcasts its meta (state and load) so that late joiners learn it, and foca
//! transmits each broadcast item `max_transmissions` times from every node that accepted it.
//! With `n` members re-broadcasting every `P`, each node forwards about `n × tx / P` meta
//! items per second, so with a fixed period the traffic per node grows with `n`. Beyond a few
//! hundred members, meta fills every datagram and delays member updates such as a `Down`. This module keeps the forwarded meta items per node near
//! [`META_ITEMS_PER_SECOND`] by stretching the period, and raises `max_transmissions` with
//! the cluster size as memberlist and foca's own `Config::new_lan` do (4 × log10(n + 1)).
//! State changes (Joining, Active, Draining, Leaving, Dead) are broadcast at once and do not
//! wait for the period; only the periodic repeat and the load figures slow down.

use std::num::NonZeroU8;
use std::time::Duration;

use rand::{Rng, RngExt};

/// Meta items each node forwards per second that the period aims at. At about 70 bytes per
/// item this is about 14 KB/s, half of what foca's default gossip of about 20 datagrams of
/// 1,400 bytes per second carries.
pub const META_ITEMS_PER_SECOND: u64 = 200;

/// Member-list entries each node receives per second that the pull period aims at. At about 70
/// bytes per entry (identity and meta) this is about 3.5 KB/s, a sixth of foca's gossip.
pub const MEMBER_LIST_ENTRIES_PER_SECOND: u64 = 50;

/// Minimum transmissions of each broadcast, the value foca's `Config::new_lan(32)` gives.
const MIN_TRANSMISSIONS: u8 = 6;

/// Returns how many times foca transmits each update or broadcast in a cluster of `members`:
/// 4 × log10(members + 1), at least 6 and at most 255.
pub fn max_transmissions(members: usize) -> NonZeroU8 {
    let target = 4.0 * ((members as f64) + 1.0).log10();
    let clamped = target.clamp(f64::from(MIN_TRANSMISSIONS), f64::from(u8::MAX));
    NonZeroU8::new(clamped as u8).unwrap_or(NonZeroU8::MIN)
}

/// Returns the period between re-broadcasts of the local meta in a cluster of `members`:
/// `base`, or longer when `members` nodes re-broadcasting every `base` would make each node
/// forward more than [`META_ITEMS_PER_SECOND`] items.
pub fn meta_period(base: Duration, members: usize) -> Duration {
    let transmissions = u64::from(max_transmissions(members).get());
    let items_per_period = (members as u64).saturating_mul(transmissions);
    let needed =
        Duration::from_millis(items_per_period.saturating_mul(1_000) / META_ITEMS_PER_SECOND);
    base.max(needed)
}

/// A random factor of 0.5 to 1.5 that stretches one meta re-broadcast period, drawn at each
/// broadcast of the local meta.
///
/// Nodes that joined within seconds of each other re-broadcast in step when every node waits
/// exactly the period. A 1,000-node simulation sent its re-broadcasts in waves every 60 s,
/// and each node's meta backlog then held 500 to 900 items for about 20 s. A factor drawn
/// per broadcast spreads the re-broadcasts over the period and keeps the mean wait at the
/// period, so the meta items sent per second do not change on average.
///
/// NOTE: foca gossips periodically while its backlog is not empty, so spread re-broadcasts
/// keep it gossiping all the time, with datagrams that carry fewer items. In the 300-node
/// simulation (seed 1, 40 s window) each node sent 17 datagrams per second instead of 7.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetaJitter(f64);

impl MetaJitter {
    /// The factor 1: the re-broadcast falls due after exactly the period.
    pub const NONE: Self = Self(1.0);

    /// The bound that every drawn factor stays below: 1.5.
    pub const UPPER_BOUND: Self = Self(1.5);

    /// Draws a factor from `rng`, uniform in 0.5 to 1.5.
    pub fn draw(rng: &mut (impl Rng + ?Sized)) -> Self {
        Self(rng.random_range(0.5..Self::UPPER_BOUND.0))
    }

    /// Returns the wait from the last broadcast to the next re-broadcast, for `period` as
    /// [`meta_period`] returns it for the current cluster size.
    pub fn delay(self, period: Duration) -> Duration {
        period.mul_f64(self.0)
    }
}

/// Returns the mean period between two member-list pulls in a cluster of `members`: `base`, or
/// longer when pulling `members` entries every `base` would exceed
/// [`MEMBER_LIST_ENTRIES_PER_SECOND`].
pub fn member_list_period(base: Duration, members: usize) -> Duration {
    let needed = Duration::from_millis(
        (members as u64).saturating_mul(1_000) / MEMBER_LIST_ENTRIES_PER_SECOND,
    );
    base.max(needed)
}

/// Keeps foca's `max_transmissions` in step with the cluster size.
///
/// foca offers no read access to its configuration, so the tuner keeps the copy it last
/// handed to `Foca::set_config`.
#[derive(Debug)]
pub struct TransmissionTuner {
    config: foca::Config,
}

impl TransmissionTuner {
    /// Starts from the configuration foca was created with.
    pub fn new(config: foca::Config) -> Self {
        Self { config }
    }

    /// Returns the configuration to hand to `Foca::set_config` when a cluster of `members`
    /// calls for a different `max_transmissions`, or `None` when it does not.
    pub fn retune(&mut self, members: usize) -> Option<foca::Config> {
        let target = max_transmissions(members);
        if target == self.config.max_transmissions {
            return None;
        }
        self.config.max_transmissions = target;
        Some(self.config.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(1);

    #[test]
    fn small_clusters_keep_base_period() {
        for members in [1, 3, 10, 32] {
            assert_eq!(meta_period(BASE, members), BASE, "{members} members");
        }
    }

    #[test]
    fn large_clusters_stretch_period() {
        // 200 members × 9 transmissions / 200 per second.
        assert_eq!(meta_period(BASE, 200), Duration::from_millis(9_000));
        // 1,000 members × 12 transmissions / 200 per second.
        assert_eq!(meta_period(BASE, 1_000), Duration::from_secs(60));
    }

    #[test]
    fn period_bounds_forwarded_items() {
        for members in [50, 200, 1_000, 10_000] {
            let period = meta_period(BASE, members).as_secs_f64();
            let per_node = members as f64 * f64::from(max_transmissions(members).get()) / period;
            assert!(
                per_node <= META_ITEMS_PER_SECOND as f64 + 1.0,
                "{members} members forward {per_node} items/s each"
            );
        }
    }

    #[test]
    fn member_list_period_bounds_received_entries() {
        let base = Duration::from_secs(30);
        let cases = [
            (3, 30_000),
            (1_000, 30_000),
            (1_500, 30_000),
            (2_000, 40_000),
            (10_000, 200_000),
        ];

        for (members, expected_ms) in cases {
            let period = member_list_period(base, members);
            assert_eq!(
                period,
                Duration::from_millis(expected_ms),
                "{members} members"
            );
        }
    }

    #[test]
    fn meta_jitter_spreads_over_period() {
        use rand::SeedableRng;

        let period = Duration::from_secs(60);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let delays: Vec<Duration> = (0..1_000)
            .map(|_| MetaJitter::draw(&mut rng).delay(period))
            .collect();

        let shortest = delays.iter().min().expect("delays drawn");
        let longest = delays.iter().max().expect("delays drawn");
        let mean = delays.iter().sum::<Duration>() / 1_000;
        assert!(
            *shortest >= Duration::from_secs(30),
            "shortest {shortest:?}"
        );
        assert!(*shortest < Duration::from_secs(33), "shortest {shortest:?}");
        assert!(*longest < Duration::from_secs(90), "longest {longest:?}");
        assert!(*longest > Duration::from_secs(87), "longest {longest:?}");
        assert!(
            mean.abs_diff(period) < Duration::from_secs(3),
            "mean {mean:?}"
        );
    }

    #[test]
    fn meta_jitter_none_keeps_period() {
        let period = Duration::from_millis(13_500);
        assert_eq!(MetaJitter::NONE.delay(period), period);
    }

    #[test]
    fn longer_base_period_wins() {
        let base = Duration::from_secs(30);
        assert_eq!(meta_period(base, 200), base);
    }

    #[test]
    fn tuner_reports_only_changes() {
        let mut tuner = TransmissionTuner::new(foca::Config::new_lan(32.try_into().unwrap()));
        assert!(
            tuner.retune(3).is_none(),
            "new_lan(32) already transmits 6 times"
        );
        let grown = tuner
            .retune(200)
            .expect("200 members need more transmissions");
        assert_eq!(grown.max_transmissions.get(), 9);
        assert!(tuner.retune(201).is_none());
        let shrunk = tuner.retune(3).expect("back to the minimum");
        assert_eq!(shrunk.max_transmissions.get(), 6);
    }

    #[test]
    fn transmissions_grow_with_log_of_size() {
        assert_eq!(max_transmissions(0).get(), 6);
        assert_eq!(max_transmissions(32).get(), 6);
        assert_eq!(max_transmissions(200).get(), 9);
        assert_eq!(max_transmissions(1_000).get(), 12);
        assert_eq!(max_transmissions(10_000).get(), 16);
        assert_eq!(max_transmissions(usize::MAX).get(), 77);
    }
}
