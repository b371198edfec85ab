//! Per-peer routing state of a node: circuit breakers, calls in flight and response times.
//!
//! The server-side counterpart of [`Balancer`](super::Balancer). A node consults it before it
//! forwards a call to a peer, and picks the node for a spread stateless worker call with the
//! same [`Picker`] strategies that clients use. Plain data: time and randomness come in as
//! arguments.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rand::Rng;

use super::breaker::{BreakerState, CircuitBreaker};
use super::ewma::PeakEwma;
use super::forwarding::ForwardingConfig;
use super::strategy::{Candidate, Picker, StrategyKind};
use crate::clock::Millis;

/// Response time that a peer starts with in the peak EWMA.
const EWMA_INITIAL: Duration = Duration::from_millis(10);
/// Time constant of the peak EWMA.
const EWMA_DECAY: Duration = Duration::from_secs(10);

/// The end of one forwarded call, as it bears on the peer's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerOutcome {
    /// The peer replied (with a result or an application error) after `rtt`.
    Replied {
        /// Time from sending to the reply.
        rtt: Duration,
    },
    /// The peer could not be reached or did not reply by the deadline.
    NodeFailure {
        /// Time from sending to the failure.
        rtt: Duration,
    },
    /// The call ended without a verdict on the peer, such as a payload that failed to encode.
    Abandoned,
}

/// A call rejected because the peer's circuit breaker is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerOpen {
    /// When the breaker lets a probe call through; `None` while a probe is in flight.
    pub until: Option<Millis>,
}

/// A call admitted towards a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// The breaker's new state when this call is its half-open probe.
    pub breaker_change: Option<BreakerState>,
}

#[derive(Clone, Debug)]
struct PeerLoad {
    boot_id: u64,
    breaker: CircuitBreaker,
    outstanding: u32,
    ewma: PeakEwma,
}

/// Routing state of one node towards its peers, keyed by node name.
///
/// A peer that comes back with a new boot id starts over with a closed breaker, because the
/// failures of its previous incarnation do not apply to the new process.
#[derive(Debug)]
pub struct PeerTable {
    config: ForwardingConfig,
    peers: BTreeMap<String, PeerLoad>,
    pickers: HashMap<StrategyKind, Picker>,
}

impl PeerTable {
    /// Creates an empty table with `config`'s breaker settings and strategies.
    pub fn new(config: ForwardingConfig) -> Self {
        Self {
            config,
            peers: BTreeMap::new(),
            pickers: HashMap::new(),
        }
    }

    /// Returns the settings the table was created with.
    pub fn config(&self) -> &ForwardingConfig {
        &self.config
    }

    /// Returns the breaker state of `peer`, or `None` for a peer never called.
    pub fn breaker_state(&self, peer: &str) -> Option<BreakerState> {
        self.peers.get(peer).map(|load| load.breaker.state())
    }

    /// Returns the calls in flight to `peer`.
    pub fn outstanding(&self, peer: &str) -> u32 {
        self.peers.get(peer).map_or(0, |load| load.outstanding)
    }

    /// Forgets the peers for which `is_live` returns `false`, so departed nodes do not grow
    /// the table.
    pub fn retain(&mut self, mut is_live: impl FnMut(&str) -> bool) {
        self.peers.retain(|name, _| is_live(name));
    }

    /// Admits a call to incarnation `boot_id` of `peer` at `now`, and counts it in flight until
    /// [`PeerTable::handle_outcome`]; rejects it while the peer's breaker is open.
    pub fn admit(
        &mut self,
        peer: &str,
        boot_id: u64,
        now: Millis,
    ) -> Result<Admitted, BreakerOpen> {
        let load = self.load_mut(peer, boot_id, now);
        if !load.breaker.is_available(now) {
            let until = match load.breaker.state() {
                BreakerState::Open { until } => Some(until),
                _ => None,
            };
            return Err(BreakerOpen { until });
        }
        load.outstanding += 1;
        Ok(Admitted {
            breaker_change: load.breaker.handle_call(now),
        })
    }

    /// Records how an admitted call to `peer` ended at `now`. Returns the breaker's new state
    /// when it changed. An outcome for a peer forgotten since is ignored.
    pub fn handle_outcome(
        &mut self,
        peer: &str,
        outcome: PeerOutcome,
        now: Millis,
    ) -> Option<BreakerState> {
        let load = self.peers.get_mut(peer)?;
        load.outstanding = load.outstanding.saturating_sub(1);
        match outcome {
            PeerOutcome::Replied { rtt } => {
                load.ewma.observe(rtt, now);
                load.breaker.handle_success()
            }
            PeerOutcome::NodeFailure { rtt } => {
                load.ewma.observe(rtt, now);
                load.breaker.handle_failure(now)
            }
            PeerOutcome::Abandoned => {
                load.breaker.handle_neutral();
                None
            }
        }
    }

    /// Picks the node for a stateless worker call of `grain_type` among `nodes` (name and boot
    /// id of each Active node, this one included), with the type's strategy, and admits the
    /// call there. Nodes whose breaker is open are skipped, and so are the nodes in `avoid`
    /// unless no other node is eligible. Returns `None` when no node is eligible.
    pub fn pick_worker_node(
        &mut self,
        grain_type: &str,
        nodes: &[(String, u64)],
        avoid: &[String],
        now: Millis,
        rng: &mut impl Rng,
    ) -> Option<(String, Admitted)> {
        let mut sorted: Vec<&(String, u64)> = nodes.iter().collect();
        sorted.sort();
        sorted.dedup_by(|a, b| a.0 == b.0);
        for (name, boot_id) in &sorted {
            self.load_mut(name, *boot_id, now);
        }
        let available: Vec<&str> = sorted
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| self.peers[*name].breaker.is_available(now))
            .collect();
        let preferred: Vec<&str> = available
            .iter()
            .copied()
            .filter(|name| !avoid.iter().any(|avoided| avoided == name))
            .collect();
        let eligible = if preferred.is_empty() {
            available
        } else {
            preferred
        };
        let candidates: Vec<Candidate<'_>> = eligible
            .iter()
            .map(|name| Candidate {
                name,
                outstanding: self.peers[*name].outstanding,
                ewma_ms: self.peers[*name].ewma.value_ms(),
                weight: self.config.weight_of(name),
            })
            .collect();
        let strategy = self.config.strategy_for(grain_type);
        let index = self
            .pickers
            .entry(strategy)
            .or_default()
            .pick(strategy, &candidates, rng)?;
        let name = candidates[index].name.to_owned();
        let boot_id = sorted
            .iter()
            .find(|(candidate, _)| *candidate == name)
            .map(|(_, boot_id)| *boot_id)
            .expect("the picked node is one of the given nodes");
        let admitted = self
            .admit(&name, boot_id, now)
            .expect("the picked node's breaker was available");
        Some((name, admitted))
    }

    fn load_mut(&mut self, peer: &str, boot_id: u64, now: Millis) -> &mut PeerLoad {
        let breaker = &self.config.breaker;
        let fresh = || PeerLoad {
            boot_id,
            breaker: CircuitBreaker::new(breaker.failure_threshold, breaker.open_for),
            outstanding: 0,
            ewma: PeakEwma::new(EWMA_INITIAL, EWMA_DECAY, now),
        };
        let load = self.peers.entry(peer.to_owned()).or_insert_with(fresh);
        if load.boot_id != boot_id {
            *load = fresh();
        }
        load
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn config(threshold: u32, strategy: StrategyKind) -> ForwardingConfig {
        let mut config = ForwardingConfig {
            strategy,
            ..ForwardingConfig::default()
        };
        config.breaker.failure_threshold = threshold;
        config.breaker.open_for = Duration::from_secs(5);
        config
    }

    fn nodes(names: &[&str]) -> Vec<(String, u64)> {
        names.iter().map(|name| ((*name).to_owned(), 1)).collect()
    }

    fn fail(table: &mut PeerTable, peer: &str, now: Millis) -> Option<BreakerState> {
        table.admit(peer, 1, now).expect("admitted");
        table.handle_outcome(
            peer,
            PeerOutcome::NodeFailure {
                rtt: Duration::from_millis(100),
            },
            now,
        )
    }

    #[test]
    fn breaker_opens_at_threshold_and_rejects() {
        let mut table = PeerTable::new(config(3, StrategyKind::RoundRobin));
        let now = Millis(1_000);
        assert_eq!(fail(&mut table, "b", now), None);
        assert_eq!(fail(&mut table, "b", now), None);
        assert_eq!(
            fail(&mut table, "b", now),
            Some(BreakerState::Open {
                until: Millis(6_000)
            })
        );
        assert_eq!(
            table.admit("b", 1, Millis(2_000)),
            Err(BreakerOpen {
                until: Some(Millis(6_000))
            })
        );
        assert_eq!(table.outstanding("b"), 0);
    }

    #[test]
    fn half_open_probe_closes_on_reply() {
        let mut table = PeerTable::new(config(1, StrategyKind::RoundRobin));
        fail(&mut table, "b", Millis(0));
        let probe = table.admit("b", 1, Millis(5_000)).expect("probe admitted");
        assert_eq!(
            probe.breaker_change,
            Some(BreakerState::HalfOpen { probing: true })
        );
        assert_eq!(
            table.admit("b", 1, Millis(5_001)),
            Err(BreakerOpen { until: None }),
            "only the probe passes while half-open"
        );
        let change = table.handle_outcome(
            "b",
            PeerOutcome::Replied {
                rtt: Duration::from_millis(2),
            },
            Millis(5_010),
        );
        assert_eq!(change, Some(BreakerState::Closed { failures: 0 }));
        assert!(table.admit("b", 1, Millis(5_020)).is_ok());
    }

    #[test]
    fn failed_probe_opens_again() {
        let mut table = PeerTable::new(config(1, StrategyKind::RoundRobin));
        fail(&mut table, "b", Millis(0));
        let change = fail(&mut table, "b", Millis(5_000));
        assert_eq!(
            change,
            Some(BreakerState::Open {
                until: Millis(10_000)
            })
        );
    }

    #[test]
    fn abandoned_probe_lets_next_call_probe() {
        let mut table = PeerTable::new(config(1, StrategyKind::RoundRobin));
        fail(&mut table, "b", Millis(0));
        table.admit("b", 1, Millis(5_000)).expect("probe admitted");
        table.handle_outcome("b", PeerOutcome::Abandoned, Millis(5_001));
        assert!(table.admit("b", 1, Millis(5_002)).is_ok());
    }

    #[test]
    fn new_incarnation_starts_closed() {
        let mut table = PeerTable::new(config(1, StrategyKind::RoundRobin));
        fail(&mut table, "b", Millis(0));
        assert!(table.admit("b", 1, Millis(1)).is_err());
        assert!(table.admit("b", 2, Millis(1)).is_ok());
        assert_eq!(
            table.breaker_state("b"),
            Some(BreakerState::Closed { failures: 0 })
        );
    }

    #[test]
    fn retain_forgets_departed_peers() {
        let mut table = PeerTable::new(config(1, StrategyKind::RoundRobin));
        table.admit("a", 1, Millis(0)).expect("admitted");
        table.admit("b", 1, Millis(0)).expect("admitted");
        table.retain(|name| name == "a");
        assert!(table.breaker_state("a").is_some());
        assert_eq!(table.breaker_state("b"), None);
    }

    /// Picks `count` worker nodes, finishing each call at once, and returns the picked names.
    fn pick_many(table: &mut PeerTable, members: &[(String, u64)], count: usize) -> Vec<String> {
        let mut rng = StdRng::seed_from_u64(7);
        (0..count)
            .map(|_| {
                let (name, _) = table
                    .pick_worker_node("bank", members, &[], Millis(0), &mut rng)
                    .expect("a node is eligible");
                table.handle_outcome(
                    &name,
                    PeerOutcome::Replied {
                        rtt: Duration::from_millis(1),
                    },
                    Millis(0),
                );
                name
            })
            .collect()
    }

    #[test]
    fn worker_round_robin_visits_each_node_in_order() {
        let mut table = PeerTable::new(config(5, StrategyKind::RoundRobin));
        let picked = pick_many(&mut table, &nodes(&["c", "a", "b"]), 6);
        assert_eq!(picked, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn worker_weighted_follows_weights() {
        let mut config = config(5, StrategyKind::Weighted);
        config
            .weights
            .insert("a".into(), std::num::NonZeroU32::new(3).expect("3"));
        let mut table = PeerTable::new(config);
        let picked = pick_many(&mut table, &nodes(&["a", "b"]), 8);
        assert_eq!(picked.iter().filter(|name| *name == "a").count(), 6);
        assert_eq!(picked.iter().filter(|name| *name == "b").count(), 2);
    }

    #[test]
    fn worker_least_outstanding_avoids_busy_node() {
        let mut table = PeerTable::new(config(5, StrategyKind::LeastOutstanding));
        let members = nodes(&["a", "b"]);
        table.admit("a", 1, Millis(0)).expect("admitted");
        table.admit("a", 1, Millis(0)).expect("admitted");
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..2 {
            let (name, _) = table
                .pick_worker_node("bank", &members, &[], Millis(0), &mut rng)
                .expect("eligible");
            assert_eq!(name, "b");
        }
    }

    #[test]
    fn worker_p2c_prefers_fast_node() {
        let mut table = PeerTable::new(config(5, StrategyKind::P2cEwma));
        let members = nodes(&["fast", "slow"]);
        table.admit("slow", 1, Millis(0)).expect("admitted");
        table.handle_outcome(
            "slow",
            PeerOutcome::Replied {
                rtt: Duration::from_millis(500),
            },
            Millis(0),
        );
        let picked = pick_many(&mut table, &members, 20);
        assert!(picked.iter().all(|name| name == "fast"), "{picked:?}");
    }

    #[test]
    fn worker_pick_skips_open_breaker_and_avoided_nodes() {
        let mut table = PeerTable::new(config(1, StrategyKind::RoundRobin));
        let members = nodes(&["a", "b", "c"]);
        fail(&mut table, "b", Millis(0));
        let mut rng = StdRng::seed_from_u64(3);
        let mut seen = BTreeSet::new();
        for _ in 0..6 {
            let (name, _) = table
                .pick_worker_node("bank", &members, &["c".to_owned()], Millis(1), &mut rng)
                .expect("eligible");
            table.handle_outcome(&name, PeerOutcome::Abandoned, Millis(1));
            seen.insert(name);
        }
        assert_eq!(seen, BTreeSet::from(["a".to_owned()]));
    }

    #[test]
    fn worker_pick_falls_back_to_avoided() {
        let mut table = PeerTable::new(config(1, StrategyKind::Random));
        let members = nodes(&["a", "b"]);
        fail(&mut table, "b", Millis(0));
        let mut rng = StdRng::seed_from_u64(3);
        let (name, _) = table
            .pick_worker_node("bank", &members, &["a".to_owned()], Millis(1), &mut rng)
            .expect("a is still eligible");
        assert_eq!(name, "a");
    }

    #[test]
    fn worker_pick_none_when_all_open() {
        let mut table = PeerTable::new(config(1, StrategyKind::RoundRobin));
        let members = nodes(&["a"]);
        fail(&mut table, "a", Millis(0));
        let mut rng = StdRng::seed_from_u64(3);
        assert!(
            table
                .pick_worker_node("bank", &members, &[], Millis(1), &mut rng)
                .is_none()
        );
    }
}
