//! Resource-optimized placement: a weighted score of CPU, memory, activations and call rate.
//!
//! Modelled on Orleans' `ResourceOptimizedPlacement` (weights relative to each other, and a
//! local-node preference margin), with Gristmill's own figures and defaults:
//!
//! 1. Each figure (CPU percent, resident memory bytes, activations including recent
//!    placements, calls per second) is divided by its maximum over the `Active` candidates, so
//!    it lies in 0 to 1. A figure that is 0 on every candidate contributes 0.
//! 2. The score is the weighted sum of the four figures divided by the sum of the weights, so
//!    it lies in 0 (idlest) to 1. The lowest score wins; equal scores are broken at random.
//! 3. If the local node is `Active` and its score is at most the best score plus
//!    `local_preference_margin`, the local node wins, which saves a remote activation call.
//!
//! NOTE: CPU is gossiped as percent of one core and memory in bytes, so a node with more cores
//! or more memory than the others scores as busier than it is. Negative, infinite or NaN
//! figures from a faulty gossip count as 0.

use rand::{Rng, RngExt};

use super::{PlacementCandidate, PlacementConfig};
use crate::membership::Incarnation;

/// Chooses among `active` by resource score; `active` must not be empty.
pub(super) fn choose_resource_optimized<'a>(
    config: &PlacementConfig,
    local: &Incarnation,
    active: &[&'a PlacementCandidate],
    rng: &mut impl Rng,
) -> &'a PlacementCandidate {
    let scores = resource_scores(config, active);
    let best = scores.iter().copied().fold(f64::INFINITY, f64::min);

    let local_index = active.iter().position(|candidate| candidate.node == *local);
    if let Some(index) = local_index
        && scores[index] <= best + config.local_preference_margin
    {
        return active[index];
    }

    let best_indices: Vec<usize> = (0..active.len()).filter(|&i| scores[i] == best).collect();
    active[best_indices[rng.random_range(0..best_indices.len())]]
}

/// Returns the score of each candidate, from 0 (idlest) to 1, in the order of `active`.
pub(super) fn resource_scores(
    config: &PlacementConfig,
    active: &[&PlacementCandidate],
) -> Vec<f64> {
    let weight_sum = config.weight_sum();
    if !(weight_sum.is_finite() && weight_sum > 0.0) {
        // An unvalidated config without usable weights ranks every candidate alike.
        return vec![0.0; active.len()];
    }
    let figures: Vec<[f64; 4]> = active
        .iter()
        .map(|candidate| {
            [
                sanitize(candidate.load.cpu_percent),
                candidate.load.memory_bytes as f64,
                candidate.activations() as f64,
                sanitize(candidate.load.calls_per_sec),
            ]
        })
        .collect();
    let weights = [
        config.cpu_weight,
        config.memory_weight,
        config.activations_weight,
        config.calls_weight,
    ];
    let mut maxima = [0.0_f64; 4];
    for figure in &figures {
        for (max, value) in maxima.iter_mut().zip(figure) {
            *max = max.max(*value);
        }
    }

    figures
        .iter()
        .map(|figure| {
            let weighted: f64 = (0..4)
                .filter(|&i| maxima[i] > 0.0)
                .map(|i| weights[i] * figure[i] / maxima[i])
                .sum();
            weighted / weight_sum
        })
        .collect()
}

/// Returns `value`, or 0 if it is negative, infinite or NaN.
fn sanitize(value: f64) -> f64 {
    if value.is_finite() && value > 0.0 {
        value
    } else {
        0.0
    }
}
