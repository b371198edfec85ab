//! Grain state storage with ETag compare-and-set, as the real storage providers implement it.

use std::collections::{BTreeMap, BTreeSet};

use gristmill::grain::GrainId;

/// The state of one counter grain: the ids of the increments applied to it.
///
/// A set instead of a number makes a retried or duplicated increment harmless, and lets the
/// checks name the exact increment that was lost.
pub type Increments = BTreeSet<u64>;

/// A stored state and its ETag, which rises by one on every write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// Version of the state; `None` before the first write.
    pub etag: Option<u64>,
    /// The state.
    pub increments: Increments,
}

/// A write whose expected ETag was not the stored one. Nothing was written; the writer's state
/// is stale, and re-reading is the only way forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EtagMismatch {
    /// The ETag stored now.
    pub current: Option<u64>,
}

/// Durable grain state shared by every simulated node, like one PostgreSQL database.
///
/// Storage is always reachable: the simulator partitions nodes from each other, not from the
/// database, because the fence under test is the compare-and-set itself.
#[derive(Debug, Default)]
pub struct VersionedStore {
    grains: BTreeMap<GrainId, Stored>,
    rejected_writes: u64,
}

impl VersionedStore {
    /// Returns the stored state of `grain`; the default (no ETag) if it was never written.
    pub fn read(&self, grain: &GrainId) -> Stored {
        self.grains.get(grain).cloned().unwrap_or_default()
    }

    /// Stores `increments` if the stored ETag equals `expected`; returns the new ETag.
    pub fn write(
        &mut self,
        grain: &GrainId,
        expected: Option<u64>,
        increments: Increments,
    ) -> Result<u64, EtagMismatch> {
        let stored = self.grains.entry(grain.clone()).or_default();
        if stored.etag != expected {
            self.rejected_writes += 1;
            return Err(EtagMismatch {
                current: stored.etag,
            });
        }
        let etag = expected.map_or(1, |etag| etag + 1);
        *stored = Stored {
            etag: Some(etag),
            increments,
        };
        Ok(etag)
    }

    /// Returns how many writes lost their compare-and-set.
    pub fn rejected_writes(&self) -> u64 {
        self.rejected_writes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_with_stale_etag_is_rejected() {
        let mut store = VersionedStore::default();
        let grain = GrainId::new("counter", "c1");
        let first = store.write(&grain, None, Increments::from([1]));
        assert_eq!(first, Ok(1));

        let stale = store.write(&grain, None, Increments::from([2]));

        assert_eq!(stale, Err(EtagMismatch { current: Some(1) }));
        assert_eq!(store.read(&grain).increments, Increments::from([1]));
        assert_eq!(store.rejected_writes(), 1);
    }
}
