//! Routing strategies: how a client picks one gateway among the healthy Active nodes.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

/// How a client spreads calls over gateways. Selectable per client and per grain type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StrategyKind {
    /// Each gateway in turn.
    RoundRobin,
    /// The gateway with the fewest calls in flight from this client; ties go round robin.
    LeastOutstanding,
    /// Smooth weighted round robin (as in nginx): gateway `i` gets `weight_i / sum` of the
    /// calls, interleaved rather than in bursts.
    Weighted,
    /// Power of two choices: two distinct random gateways, and the one with the lower cost,
    /// where cost is the peak EWMA of response time times (calls in flight + 1).
    P2cEwma,
    /// A uniformly random gateway.
    Random,
    /// The node that served the grain last, else the grain's directory partition owner, else
    /// round robin. Saves the forward between nodes when the cache is right.
    GrainAware,
}

impl StrategyKind {
    /// Every strategy, in the order their names are listed in messages.
    pub const ALL: [StrategyKind; 6] = [
        StrategyKind::RoundRobin,
        StrategyKind::LeastOutstanding,
        StrategyKind::Weighted,
        StrategyKind::P2cEwma,
        StrategyKind::Random,
        StrategyKind::GrainAware,
    ];

    /// Returns the name used in settings and metric labels, such as `p2c-ewma`.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::RoundRobin => "round-robin",
            StrategyKind::LeastOutstanding => "least-outstanding",
            StrategyKind::Weighted => "weighted",
            StrategyKind::P2cEwma => "p2c-ewma",
            StrategyKind::Random => "random",
            StrategyKind::GrainAware => "grain-aware",
        }
    }
}

impl FromStr for StrategyKind {
    type Err = UnknownStrategyError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        StrategyKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| UnknownStrategyError {
                name: name.to_owned(),
            })
    }
}

impl TryFrom<String> for StrategyKind {
    type Error = UnknownStrategyError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

impl From<StrategyKind> for String {
    fn from(kind: StrategyKind) -> String {
        kind.as_str().to_owned()
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A routing strategy name that matches no strategy. Nothing was configured; fix the name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid routing strategy {name:?}: expected one of round-robin, least-outstanding, \
     weighted, p2c-ewma, random, grain-aware"
)]
pub struct UnknownStrategyError {
    /// The rejected name.
    pub name: String,
}

/// What a strategy sees of one eligible gateway.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate<'a> {
    /// Node name.
    pub name: &'a str,
    /// Calls this client has in flight to the gateway.
    pub outstanding: u32,
    /// Peak EWMA of the gateway's response time, in milliseconds.
    pub ewma_ms: f64,
    /// Relative share for [`StrategyKind::Weighted`]; at least 1.
    pub weight: u32,
}

impl Candidate<'_> {
    /// Cost for [`StrategyKind::P2cEwma`]: expected wait if this call queues behind the
    /// calls already in flight.
    fn cost(&self) -> f64 {
        self.ewma_ms * f64::from(self.outstanding.saturating_add(1))
    }
}

/// Mutable state of the balancing strategies: the round-robin cursor and the smooth weighted
/// round-robin credits.
///
/// Grain-aware routing falls back to this picker's round robin; the grain cache lives in
/// [`AffinityCache`](super::AffinityCache).
#[derive(Clone, Debug, Default)]
pub struct Picker {
    next: usize,
    credits: HashMap<String, i64>,
}

impl Picker {
    /// Picks the index of one of `candidates` with `kind`, or `None` when there are none.
    ///
    /// Candidates must come in a stable order (the balancer sorts them by name), because
    /// round robin and tie breaks count positions.
    pub fn pick(
        &mut self,
        kind: StrategyKind,
        candidates: &[Candidate<'_>],
        rng: &mut impl Rng,
    ) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        let index = match kind {
            StrategyKind::RoundRobin | StrategyKind::GrainAware => self.round_robin(candidates),
            StrategyKind::LeastOutstanding => self.least_outstanding(candidates),
            StrategyKind::Weighted => self.smooth_weighted(candidates),
            StrategyKind::P2cEwma => power_of_two(candidates, rng),
            StrategyKind::Random => rng.random_range(0..candidates.len()),
        };
        Some(index)
    }

    fn round_robin(&mut self, candidates: &[Candidate<'_>]) -> usize {
        let index = self.next % candidates.len();
        self.next = self.next.wrapping_add(1);
        index
    }

    /// Picks the fewest calls in flight; among equals, the first at or after the cursor.
    fn least_outstanding(&mut self, candidates: &[Candidate<'_>]) -> usize {
        let start = self.next % candidates.len();
        self.next = self.next.wrapping_add(1);
        (0..candidates.len())
            .map(|offset| (start + offset) % candidates.len())
            .min_by_key(|&index| candidates[index].outstanding)
            .expect("candidates is not empty")
    }

    /// Smooth weighted round robin: every candidate earns its weight in credit, the richest
    /// wins and pays back the total. Over `sum` picks each candidate wins exactly `weight`
    /// times, and no candidate wins twice in a row unless its weight demands it.
    fn smooth_weighted(&mut self, candidates: &[Candidate<'_>]) -> usize {
        self.credits
            .retain(|name, _| candidates.iter().any(|c| c.name == name));
        let mut total = 0_i64;
        let mut best: Option<(usize, i64)> = None;
        for (index, candidate) in candidates.iter().enumerate() {
            let weight = i64::from(candidate.weight.max(1));
            total += weight;
            let credit = self.credits.entry(candidate.name.to_owned()).or_default();
            *credit += weight;
            if best.is_none_or(|(_, best_credit)| *credit > best_credit) {
                best = Some((index, *credit));
            }
        }
        let (index, _) = best.expect("candidates is not empty");
        *self
            .credits
            .get_mut(candidates[index].name)
            .expect("every candidate has a credit entry") -= total;
        index
    }
}

/// Draws two distinct candidates and keeps the cheaper one; the first drawn wins ties.
fn power_of_two(candidates: &[Candidate<'_>], rng: &mut impl Rng) -> usize {
    if candidates.len() == 1 {
        return 0;
    }
    let first = rng.random_range(0..candidates.len());
    let mut second = rng.random_range(0..candidates.len() - 1);
    if second >= first {
        second += 1;
    }
    if candidates[second].cost() < candidates[first].cost() {
        second
    } else {
        first
    }
}
