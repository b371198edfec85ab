//! The fenced hand-off that moves one activation, with its in-memory state, to another node.
//!
//! Protocol, for a grain active on source S moving to target T:
//! 1. S's activation receives a migrate message. Messages run one at a time, so from here on
//!    no turn of the grain runs on S; calls that arrive meanwhile wait in S's mailbox.
//! 2. S dehydrates the grain ([`Grain::dehydrate`](crate::grain::Grain::dehydrate): optional
//!    in-memory state; persisted state is already in the store) and sends it to T with the
//!    directory entry it holds (host, activation id, epoch).
//! 3. T registers itself in the directory with compare-and-set on S's epoch, so the entry moves
//!    from S to T with epoch + 1 only if nobody changed it meanwhile. Only then does T start
//!    the activation and accept calls.
//! 4. S hands every queued call back to its caller, which resolves the grain again (now T) and
//!    retries transparently, and S drops its activation without running `on_deactivate`.
//!
//! Why two activations never process messages at once: S runs no turn from step 1 on, and T
//! runs none before step 3. Why the grain never ends with zero answering activations, or two:
//! - T rejects before registering (not Active, grain already active there, directory changed):
//!   nothing changed, and S resumes.
//! - The outcome is unknown (T died, the reply was lost, T's activation failed after the
//!   registration): S asks the directory. If the entry still names S's activation, S resumes;
//!   otherwise S drops its activation, and the grain reactivates from the store on its next
//!   call (in-memory state that was not persisted is lost, acknowledged writes are not).
//!
//! NOTE: the compare-and-set checks the epoch, not the activation id. An entry that was
//! dropped (its host declared dead) and re-created at epoch 0 while a migration of the old
//! activation was under way would let that migration win; the store's ETag still rejects the
//! stale activation's writes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::directory::DirectoryEntry;
use crate::grain::GrainId;

/// A migration request from the source to the target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MigrationEnvelope {
    /// The first version.
    V1(MigrationRequest),
}

/// Fields of a migration request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MigrationRequest {
    /// The directory entry of the source activation, whose epoch the target's registration
    /// must find.
    pub source: DirectoryEntry,
    /// In-memory state returned by `Grain::dehydrate`, if any.
    pub state: Option<Vec<u8>>,
    /// Deadline in milliseconds since the Unix epoch.
    pub deadline_unix_ms: u64,
}

/// The target's reply to a migration request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MigrationReply {
    /// The target registered and started the activation; this is its directory entry.
    Accepted(DirectoryEntry),
    /// The target changed nothing; the source keeps the grain.
    Rejected(String),
    /// The target registered but could not start the activation, and removed its entry.
    Failed(String),
    /// The deadline passed at the target before it registered; the source keeps the grain.
    Expired(String),
}

/// The record of a completed migration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationReport {
    /// The migrated grain.
    pub grain: GrainId,
    /// Node the activation left.
    pub from_node: String,
    /// Node that hosts the activation now.
    pub to_node: String,
    /// Directory epoch of the new activation.
    pub epoch: u64,
    /// Time from the migrate request to the target's acceptance.
    pub duration: Duration,
}

/// The reason a migration did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MigrationError {
    /// The grain has no activation on this node. Nothing changed.
    #[error("{grain} is not active on node {node}")]
    NotHere {
        /// The grain.
        grain: GrainId,
        /// This node.
        node: String,
    },
    /// The grain's type is immovable or a stateless worker. Nothing changed.
    #[error("{grain} cannot migrate: grain type {grain_type:?} is immovable or a stateless worker")]
    Immovable {
        /// The grain.
        grain: GrainId,
        /// Its type.
        grain_type: String,
    },
    /// No Active node other than the source can take the grain. Nothing changed.
    #[error("no target for {grain}: {detail}")]
    NoTarget {
        /// The grain.
        grain: GrainId,
        /// Why: the named node is unknown or not Active, or no other node is Active.
        detail: String,
    },
    /// The target rejected the grain; the source kept it. A retry can help.
    #[error("node {target} rejected {grain}: {detail}")]
    Rejected {
        /// The grain.
        grain: GrainId,
        /// The target node.
        target: String,
        /// The target's reason.
        detail: String,
    },
    /// The hand-off failed part-way. `kept` is true when the source still serves the grain.
    /// It is false when the directory no longer names the source activation; the grain then
    /// reactivates from the store on its next call.
    #[error("migration of {grain} to {target} failed ({detail}); source kept it: {kept}")]
    Failed {
        /// The grain.
        grain: GrainId,
        /// The target node.
        target: String,
        /// What failed.
        detail: String,
        /// Whether the source activation still serves the grain.
        kept: bool,
    },
    /// The activation stopped before it could migrate (idle, shutdown). Nothing moved.
    #[error("activation of {grain} stopped before it could migrate")]
    Stopped {
        /// The grain.
        grain: GrainId,
    },
    /// The deadline passed before the hand-off finished.
    #[error("migration of {grain} timed out")]
    TimedOut {
        /// The grain.
        grain: GrainId,
    },
}

impl MigrationError {
    /// Returns the label used in metrics for this outcome.
    pub fn outcome_label(&self) -> &'static str {
        match self {
            MigrationError::NotHere { .. } => "not_here",
            MigrationError::Immovable { .. } => "immovable",
            MigrationError::NoTarget { .. } => "no_target",
            MigrationError::Rejected { .. } => "rejected",
            MigrationError::Failed { .. } => "failed",
            MigrationError::Stopped { .. } => "stopped",
            MigrationError::TimedOut { .. } => "timed_out",
        }
    }
}
