//! The supervisor register: one compare-and-set record in the state store that fences supervisors.
//!
//! Membership elects the supervisor (the oldest Active member), but two nodes can disagree
//! about membership for a while. The register makes sure that they never act at once:
//!
//! 1. A node that finds itself the oldest Active member reads the register. It takes over
//!    only when no holder is recorded, the holder is not a live Active member in its view, or
//!    the holder has not renewed within the lease. Taking over writes `epoch + 1` and its own
//!    incarnation with compare-and-set on the etag it read.
//! 2. The holder renews the record on every evaluation, again with compare-and-set. A failed
//!    write means another node took over: the holder steps down at once.
//! 3. Before an action starts, the holder records it as `last_action` (compare-and-set). So no
//!    action starts unless the register still names this holder, and every started action is
//!    known to the next holder.
//! 4. A new holder that finds an unfinished `last_action` marks it interrupted and does not
//!    run it again; its next evaluation decides from the membership as it is then.
//!
//! The running policy and the pause state also live here, so they survive a failover.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::grain::GrainId;
use crate::membership::Incarnation;
use crate::scaling::config::ScalingConfig;
use crate::scaling::decision::{Action, DecisionId};
use crate::storage::{ETag, StateStore, StorageError};

/// Grain type of the register's state-store row; no grain type may use it.
pub const REGISTER_GRAIN_TYPE: &str = "gristmill.supervisor";
/// Key of the register's state-store row.
pub const REGISTER_KEY: &str = "cluster";

/// The content of the register.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SupervisorRecord {
    /// Raised by one on every takeover; 0 before the first supervisor.
    pub epoch: u64,
    /// The node whose supervisor acts; `None` before the first takeover and after a release.
    pub holder: Option<Incarnation>,
    /// Last write by the holder, in milliseconds since the Unix epoch.
    pub renewed_at_unix_ms: u64,
    /// The latest action any supervisor started.
    pub last_action: Option<ActionRecord>,
    /// Number of actions started so far, over every epoch.
    pub actions_started: u64,
    /// The reason of a Pause request, or `None` while automatic actions run.
    pub paused: Option<String>,
    /// The policy set by SetPolicy; `None` keeps each node's configured `[scaling]` table.
    pub policy: Option<ScalingConfig>,
}

/// One action as recorded before it started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// Sequence number over every epoch, starting at 1.
    pub sequence: u64,
    /// Epoch of the supervisor that started it.
    pub epoch: u64,
    /// The decision of that supervisor; decision ids restart with each holder.
    pub decision: DecisionId,
    /// The action that was started.
    pub action: Action,
    /// Start time in milliseconds since the Unix epoch.
    pub started_at_unix_ms: u64,
    /// The action's outcome; `None` while it runs or when its supervisor died first.
    pub result: Option<String>,
}

/// The reason a node may take the register over, or `None` when it must stand by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TakeoverReason {
    /// No holder is recorded.
    Vacant,
    /// The holder is a member in this node's view, but no longer Active.
    HolderGone(Incarnation),
    /// The holder has not renewed within the lease.
    LeaseExpired(Incarnation),
    /// This node already has it, as after a failed renewal that did reach the store.
    AlreadyHeld,
}

/// The register holder's state in the view of a node that may take the register over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolderView {
    /// A live Active member.
    Active,
    /// A member in another state: Draining, Leaving or Dead.
    NotActive,
    /// Not a member in this view, as in a node that has just joined and not yet heard of it.
    Unknown,
}

/// Decides whether `me` may take the register over.
///
/// `holder_view` returns how an incarnation appears in `me`'s view. Only a holder seen as no
/// longer Active is taken over at once. A holder that `me` does not know is taken over only
/// once its lease expires, because a node that has just joined may not have heard of it yet.
/// Taking over then would restart the decision history and the stabilization windows.
pub fn takeover_reason(
    record: &SupervisorRecord,
    me: &Incarnation,
    holder_view: impl Fn(&Incarnation) -> HolderView,
    now_unix_ms: u64,
    lease: Duration,
) -> Option<TakeoverReason> {
    let Some(holder) = &record.holder else {
        return Some(TakeoverReason::Vacant);
    };
    if holder == me {
        return Some(TakeoverReason::AlreadyHeld);
    }
    if holder_view(holder) == HolderView::NotActive {
        return Some(TakeoverReason::HolderGone(holder.clone()));
    }
    let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    if now_unix_ms.saturating_sub(record.renewed_at_unix_ms) > lease_ms {
        return Some(TakeoverReason::LeaseExpired(holder.clone()));
    }
    None
}

/// Failure to read or write the register.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Another node wrote the register since this node read it; this node no longer has it.
    /// Nothing was written; re-read before acting again.
    #[error("the supervisor register changed since it was read; another node took over")]
    Lost,
    /// The store failed; whether the write happened is unknown, so re-read before acting.
    #[error("supervisor register storage failed: {0}")]
    Storage(#[from] StorageError),
    /// The stored record is not a valid register; nothing was changed.
    #[error("supervisor register holds an invalid record: {0}")]
    Invalid(#[from] serde_json::Error),
}

/// The register as this node last read or wrote it, with the etag for the next write.
#[derive(Clone, Debug, Default)]
pub struct Register {
    /// The record as last read or written.
    pub record: SupervisorRecord,
    etag: Option<ETag>,
}

impl Register {
    fn grain() -> GrainId {
        GrainId::new(REGISTER_GRAIN_TYPE, REGISTER_KEY)
    }

    /// Reads the register; a register never written reads as the default record.
    pub async fn read(store: &dyn StateStore) -> Result<Register, RegisterError> {
        let grain = Self::grain();
        match store.read(&grain).await? {
            Some(stored) => Ok(Register {
                record: serde_json::from_slice(&stored.data)?,
                etag: Some(stored.etag),
            }),
            None => Ok(Register::default()),
        }
    }

    /// Writes `record` if the register still has the etag of the last read or write.
    ///
    /// On success `self` contains `record` and the new etag. On [`RegisterError::Lost`] `self`
    /// is unchanged and the caller must re-read.
    pub async fn write(
        &mut self,
        store: &dyn StateStore,
        record: SupervisorRecord,
    ) -> Result<(), RegisterError> {
        let data = serde_json::to_vec(&record)?;
        match store.write(&Self::grain(), data, self.etag).await {
            Ok(etag) => {
                self.etag = Some(etag);
                self.record = record;
                Ok(())
            }
            Err(StorageError::StaleVersion { .. }) => Err(RegisterError::Lost),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Incarnation {
        Incarnation {
            name: name.into(),
            boot_id: 1,
        }
    }

    fn held_by(name: &str, renewed_at_unix_ms: u64) -> SupervisorRecord {
        SupervisorRecord {
            epoch: 3,
            holder: Some(node(name)),
            renewed_at_unix_ms,
            ..SupervisorRecord::default()
        }
    }

    const LEASE: Duration = Duration::from_secs(5);

    #[test]
    fn takeover_cases() {
        let me = node("node-1");
        let cases = [
            (
                "vacant",
                SupervisorRecord::default(),
                HolderView::Active,
                Some(TakeoverReason::Vacant),
            ),
            (
                "held by me",
                held_by("node-1", 10_000),
                HolderView::Active,
                Some(TakeoverReason::AlreadyHeld),
            ),
            (
                "holder gone",
                held_by("node-0", 10_000),
                HolderView::NotActive,
                Some(TakeoverReason::HolderGone(node("node-0"))),
            ),
            (
                "holder unknown and renewing",
                held_by("node-0", 8_000),
                HolderView::Unknown,
                None,
            ),
            (
                "holder unknown, lease expired",
                held_by("node-0", 4_000),
                HolderView::Unknown,
                Some(TakeoverReason::LeaseExpired(node("node-0"))),
            ),
            (
                "holder live and renewing",
                held_by("node-0", 8_000),
                HolderView::Active,
                None,
            ),
            (
                "lease expired",
                held_by("node-0", 4_000),
                HolderView::Active,
                Some(TakeoverReason::LeaseExpired(node("node-0"))),
            ),
        ];
        for (case, record, holder_view, expected) in cases {
            let reason = takeover_reason(&record, &me, |_| holder_view, 10_000, LEASE);
            assert_eq!(reason, expected, "{case}");
        }
    }

    #[test]
    fn record_round_trips_with_policy() {
        let record = SupervisorRecord {
            policy: Some(ScalingConfig::for_local_demo()),
            paused: Some("maintenance".into()),
            ..held_by("node-0", 1)
        };
        let bytes = serde_json::to_vec(&record).expect("encode");
        let decoded: SupervisorRecord = serde_json::from_slice(&bytes).expect("decode");
        assert_eq!(decoded, record);
    }
}
