//! Requests, replies and commands that a directory partition exchanges with its glue.

use serde::{Deserialize, Serialize};

use super::DirectoryEntry;
use crate::membership::Incarnation;

/// Condition a registration must meet to win; registration is compare-and-set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// A new activation: wins only if the grain has no entry.
    Absent,
    /// A migration hand-off: wins only if the current entry has this epoch. The stored entry
    /// then gets the epoch plus one, whatever epoch the request carried.
    Epoch(u64),
}

/// Reply to a registration or re-assertion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegisterOutcome {
    /// The entry is registered, as stored. Repeating an identical registration returns this too.
    Registered(DirectoryEntry),
    /// Another activation is registered, so the requesting activation must deactivate (or,
    /// for a migration, the source keeps the grain). Carries the winning entry.
    Conflict(DirectoryEntry),
    /// A migration expected an epoch but the grain has no entry; the migration must abort.
    Missing,
    /// This node gained the grain in a recent membership change and cannot yet rule out an
    /// existing activation. Nothing changed; retry after a short delay.
    NotReady,
    /// Another member owns the grain in this node's view. Nothing changed; retry there.
    NotOwner {
        /// Owner in this node's view, or `None` if the view is empty.
        owner: Option<Incarnation>,
    },
}

/// Reply to a lookup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LookupOutcome {
    /// The grain's activation.
    Found(DirectoryEntry),
    /// The grain has no activation; the caller may place one.
    NotFound,
    /// This node gained the grain in a recent membership change and cannot yet tell whether it
    /// has an activation. Retry after a short delay.
    NotReady,
    /// Another member owns the grain in this node's view. Retry there.
    NotOwner {
        /// Owner in this node's view, or `None` if the view is empty.
        owner: Option<Incarnation>,
    },
}

/// Reply to an unregistration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnregisterOutcome {
    /// The entry was removed.
    Removed(DirectoryEntry),
    /// A different activation is registered and stays. Carries it.
    Superseded(DirectoryEntry),
    /// The grain has no entry here and this node owns it; nothing to do.
    Absent,
    /// The grain has no entry here and another member owns it in this node's view.
    NotOwner {
        /// Owner in this node's view, or `None` if the view is empty.
        owner: Option<Incarnation>,
    },
}

/// Work for the glue that a directory partition cannot do without I/O.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirectoryCommand {
    /// Send these entries to `to`, which owns them now; the sender no longer stores them.
    HandOff {
        /// The new owner.
        to: Incarnation,
        /// Entries for grains that `to` owns.
        entries: Vec<DirectoryEntry>,
    },
    /// Tell `entry.host` to deactivate `entry`'s activation: it lost a conflict against another
    /// activation of the same grain when two partitions' entries met in a hand-off.
    Deactivate {
        /// The losing entry.
        entry: DirectoryEntry,
    },
}
