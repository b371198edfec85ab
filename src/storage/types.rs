//! Values the storage providers store and return: etags, grain state and reminders.

use std::fmt;
use std::num::NonZeroU64;

use serde::{Deserialize, Serialize};

use crate::grain::GrainId;

/// Version of one grain's stored state; the first write stores 1 and every write or clear adds
/// one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ETag(pub u64);

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Grain state as read from a store, with the etag to pass to the next write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredState {
    /// Serialized state, opaque to the store.
    pub data: Vec<u8>,
    /// Version of `data`.
    pub etag: ETag,
}

/// A durable reminder: the grain runtime calls `grain` with `name` at `due_at_unix_ms`, even if
/// the grain is not active then.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reminder {
    /// Grain that the reminder calls.
    pub grain: GrainId,
    /// Name of the reminder, unique per grain.
    pub name: String,
    /// Next time the reminder fires, in milliseconds since the Unix epoch. At most `i64::MAX`,
    /// the largest value the databases store.
    pub due_at_unix_ms: u64,
    /// Time between two firings, in milliseconds; `None` fires once. The store keeps it for
    /// the firing node, which computes the next due time from it.
    pub period_ms: Option<NonZeroU64>,
}

/// A reminder leased to one node by [`claim_due`](super::ReminderStore::claim_due).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReminderLease {
    /// The reminder as stored when it was claimed.
    pub reminder: Reminder,
    /// Node that holds the lease.
    pub owner: String,
    /// End of the lease, in milliseconds since the Unix epoch. After it, another node may
    /// claim the reminder and fire it again.
    pub lease_until_unix_ms: u64,
    /// Claim counter of the reminder when it was leased; a later claim increases it, which
    /// voids this lease.
    pub lease_id: u64,
}
