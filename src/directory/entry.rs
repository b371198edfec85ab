//! The directory record of one activation: which incarnation hosts a grain, and at what epoch.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::grain::GrainId;
use crate::membership::Incarnation;

/// Location of the one activation of a grain.
///
/// Entries cross the network in hand-offs and lookup replies. The epoch rises by one on each
/// migration, so of two entries for the same grain the one with the higher epoch is the newer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DirectoryEntry {
    /// Grain the activation serves.
    pub grain: GrainId,
    /// Node process that hosts the activation.
    pub host: Incarnation,
    /// Id the host gave the activation; unique per host incarnation.
    pub activation_id: u64,
    /// Migration count of the grain's activation lineage, raised by one on each migration.
    pub epoch: u64,
}

impl DirectoryEntry {
    /// Returns whether both entries name the same activation (same host and activation id),
    /// whatever their epochs.
    pub fn is_same_activation(&self, other: &DirectoryEntry) -> bool {
        self.host == other.host && self.activation_id == other.activation_id
    }
}

impl fmt::Display for DirectoryEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {} (activation {}, epoch {})",
            self.grain, self.host, self.activation_id, self.epoch
        )
    }
}
