//! Choosing the node for a new activation with the strategy of the grain's type.

use rand::{Rng, RngExt};

use super::resource::choose_resource_optimized;
use super::{PlacementCandidate, PlacementConfig, PlacementStrategy};
use crate::directory::rendezvous_max;
use crate::grain::GrainId;
use crate::membership::Incarnation;

/// Placement found no node to choose. Nothing changed; a retry helps once a node becomes
/// `Active`, such as after a join or a scale-out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// None of the candidates is `Active`.
    #[error("no Active node among {candidates} placement candidates")]
    NoActiveNode {
        /// Number of candidates, in any state.
        candidates: usize,
    },
}

/// Chooses the node for a new activation of `grain` with `strategy`.
///
/// Only `Active` candidates are chosen. `local` is the node that places the activation; it
/// matters to `prefer-local` and `resource-optimized` only if it is among the candidates.
pub fn choose(
    strategy: PlacementStrategy,
    config: &PlacementConfig,
    grain: &GrainId,
    local: &Incarnation,
    candidates: &[PlacementCandidate],
    rng: &mut impl Rng,
) -> Result<Incarnation, PlacementError> {
    let active: Vec<&PlacementCandidate> = candidates
        .iter()
        .filter(|candidate| candidate.state.accepts_activations())
        .collect();
    if active.is_empty() {
        return Err(PlacementError::NoActiveNode {
            candidates: candidates.len(),
        });
    }

    let chosen = match strategy {
        PlacementStrategy::Random => random(&active, rng),
        PlacementStrategy::PreferLocal => active
            .iter()
            .copied()
            .find(|candidate| candidate.node == *local)
            .unwrap_or_else(|| random(&active, rng)),
        PlacementStrategy::Hash => {
            rendezvous_max(grain.stable_hash(), active.iter().copied(), |candidate| {
                &candidate.node
            })
            .expect("active candidates are not empty")
        }
        PlacementStrategy::LeastLoaded => least_loaded_of_two(&active, rng),
        PlacementStrategy::ResourceOptimized => {
            choose_resource_optimized(config, local, &active, rng)
        }
    };
    Ok(chosen.node.clone())
}

/// Returns a uniformly random candidate; `active` must not be empty.
pub(super) fn random<'a>(
    active: &[&'a PlacementCandidate],
    rng: &mut impl Rng,
) -> &'a PlacementCandidate {
    active[rng.random_range(0..active.len())]
}

/// Returns the candidate with fewer activations of two distinct random ones (the "power of
/// two choices"), which spreads load nearly as well as the global minimum without herding every
/// placer onto the same node. Ties go to the first pick.
fn least_loaded_of_two<'a>(
    active: &[&'a PlacementCandidate],
    rng: &mut impl Rng,
) -> &'a PlacementCandidate {
    if active.len() == 1 {
        return active[0];
    }
    let first = rng.random_range(0..active.len());
    let mut second = rng.random_range(0..active.len() - 1);
    if second >= first {
        second += 1;
    }
    let (first, second) = (active[first], active[second]);
    if second.activations() < first.activations() {
        second
    } else {
        first
    }
}
