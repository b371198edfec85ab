//! The simulated network: per-link loss, delay, reordering, duplication and partitions.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::RngExt;
use rand::rngs::StdRng;

/// Faults of one directed link. Every field applies to each message independently.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkFaults {
    /// Probability in [0, 1] that a message is lost.
    pub loss: f64,
    /// Probability in [0, 1] that a message arrives twice.
    pub duplicate: f64,
    /// Shortest one-way delay.
    pub min_delay: Duration,
    /// Longest one-way delay; each message draws uniformly from `min_delay..=max_delay`, so
    /// messages of one link already overtake each other when the range is wide.
    pub max_delay: Duration,
    /// Probability in [0, 1] that a message is held back by an extra `reorder_delay`, so later
    /// messages overtake it.
    pub reorder: f64,
    /// Extra delay of a reordered message.
    pub reorder_delay: Duration,
}

impl LinkFaults {
    /// A clean LAN link: 1 to 5 ms, nothing lost, duplicated or reordered on purpose.
    pub const CLEAN: LinkFaults = LinkFaults {
        loss: 0.0,
        duplicate: 0.0,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        reorder: 0.0,
        reorder_delay: Duration::from_millis(50),
    };

    /// A bad link: 5 % loss, 2 % duplicates, 10 % reordered, 1 to 20 ms.
    pub const NOISY: LinkFaults = LinkFaults {
        loss: 0.05,
        duplicate: 0.02,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(20),
        reorder: 0.1,
        reorder_delay: Duration::from_millis(50),
    };

    /// Returns whether the link loses, duplicates or reorders messages.
    pub fn is_faulty(&self) -> bool {
        self.loss > 0.0 || self.duplicate > 0.0 || self.reorder > 0.0
    }
}

/// Links between node slots, with partitions on top.
#[derive(Debug)]
pub struct Network {
    default: LinkFaults,
    links: BTreeMap<(usize, usize), LinkFaults>,
    /// Directed cuts: a message from `.0` to `.1` is dropped.
    cuts: BTreeSet<(usize, usize)>,
}

impl Network {
    /// Creates a network whose links all have `default` faults and no partition.
    pub fn new(default: LinkFaults) -> Self {
        Self {
            default,
            links: BTreeMap::new(),
            cuts: BTreeSet::new(),
        }
    }

    /// Sets the faults of every link that has no override.
    pub fn set_default(&mut self, faults: LinkFaults) {
        self.default = faults;
    }

    /// Sets the faults of the directed link `from → to`.
    pub fn set_link(&mut self, from: usize, to: usize, faults: LinkFaults) {
        self.links.insert((from, to), faults);
    }

    /// Cuts every link from a node in `from` to a node in `to`; with `both_ways`, also back.
    pub fn cut(&mut self, from: &[usize], to: &[usize], both_ways: bool) {
        for &a in from {
            for &b in to {
                self.cuts.insert((a, b));
                if both_ways {
                    self.cuts.insert((b, a));
                }
            }
        }
    }

    /// Removes every partition and every per-link override, and makes links clean.
    pub fn heal(&mut self) {
        self.cuts.clear();
        self.links.clear();
        self.default = LinkFaults::CLEAN;
    }

    /// Returns whether any partition or faulty link remains.
    pub fn is_faulty(&self) -> bool {
        !self.cuts.is_empty()
            || self.default.is_faulty()
            || self.links.values().any(LinkFaults::is_faulty)
    }

    /// Returns the delay of a session message from `from` to `to`, or `None` if a partition
    /// cuts the link.
    ///
    /// Sessions run over TCP in the real system, which retransmits lost segments and keeps
    /// order, so session messages are never lost, duplicated or reordered here; only the
    /// delay range applies, and a partition or crash drops them.
    pub fn route_session(&self, from: usize, to: usize, rng: &mut StdRng) -> Option<Duration> {
        if from == to {
            return Some(Duration::ZERO);
        }
        if self.cuts.contains(&(from, to)) {
            return None;
        }
        let faults = self.links.get(&(from, to)).unwrap_or(&self.default);
        let min = faults.min_delay.as_millis() as u64;
        let max = faults.max_delay.as_millis().max(min as u128) as u64;
        Some(Duration::from_millis(rng.random_range(min..=max)))
    }

    /// Returns the delays after which copies of a message from `from` to `to` arrive: none if
    /// it is lost or cut, two if it is duplicated.
    pub fn route(&self, from: usize, to: usize, rng: &mut StdRng) -> Vec<Duration> {
        if from == to {
            return vec![Duration::ZERO];
        }
        if self.cuts.contains(&(from, to)) {
            return Vec::new();
        }
        let faults = self.links.get(&(from, to)).unwrap_or(&self.default);
        if faults.loss > 0.0 && rng.random_bool(faults.loss) {
            return Vec::new();
        }
        let copies = if faults.duplicate > 0.0 && rng.random_bool(faults.duplicate) {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                let min = faults.min_delay.as_millis() as u64;
                let max = faults.max_delay.as_millis().max(min as u128) as u64;
                let mut delay = Duration::from_millis(rng.random_range(min..=max));
                if faults.reorder > 0.0 && rng.random_bool(faults.reorder) {
                    delay += faults.reorder_delay;
                }
                delay
            })
            .collect()
    }
}
