//! The action journal: the latest decisions that started an action, kept in the state store so
//! that a supervisor that takes over lists its predecessors' actions and their outcomes.
//!
//! Only the register holder writes the journal, and it writes with compare-and-set on the etag
//! it last read or wrote. A write that finds another etag means that another node took the
//! register over. The journal then keeps what that node wrote, and this node steps down at its
//! next register write. Decisions that changed nothing are not kept: the journal is for the
//! actions an operator asks about after a failover, and it stays small.

use std::collections::VecDeque;

use crate::grain::GrainId;
use crate::scaling::decision::{ActionOutcome, Decision};
use crate::scaling::supervisor_register::REGISTER_GRAIN_TYPE;
use crate::storage::{ETag, StateStore, StorageError};

/// Key of the journal's state-store row, beside the supervisor register.
pub const JOURNAL_KEY: &str = "actions";

/// Most decisions the journal keeps; older ones are dropped first.
pub const JOURNAL_CAPACITY: usize = 50;

/// Failure to read or write the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Another node wrote the journal since this node read it; nothing was written.
    #[error("the action journal changed since it was read; another node took over")]
    Lost,
    /// The store failed.
    #[error("action journal storage failed: {0}")]
    Storage(#[from] StorageError),
    /// The stored journal does not decode; nothing was changed.
    #[error("the action journal holds an invalid record: {0}")]
    Invalid(#[from] serde_json::Error),
}

/// The journal as this node last read or wrote it, with the etag for the next write.
#[derive(Clone, Debug, Default)]
pub struct ActionJournal {
    decisions: VecDeque<Decision>,
    etag: Option<ETag>,
}

impl ActionJournal {
    fn grain() -> GrainId {
        GrainId::new(REGISTER_GRAIN_TYPE, JOURNAL_KEY)
    }

    /// Reads the journal; a journal never written reads as empty.
    pub async fn read(store: &dyn StateStore) -> Result<ActionJournal, JournalError> {
        match store.read(&Self::grain()).await? {
            Some(stored) => Ok(ActionJournal {
                decisions: serde_json::from_slice(&stored.data)?,
                etag: Some(stored.etag),
            }),
            None => Ok(ActionJournal::default()),
        }
    }

    /// Returns the kept decisions, oldest first.
    pub fn decisions(&self) -> impl DoubleEndedIterator<Item = &Decision> {
        self.decisions.iter()
    }

    /// Marks every kept action that has no outcome as interrupted by the end of its
    /// supervisor. Only this copy changes, and the next [`Self::record`] stores it.
    pub fn mark_unfinished_interrupted(&mut self, epoch: u64) {
        for decision in &mut self.decisions {
            if decision.outcome.is_none() {
                decision.outcome = Some(ActionOutcome::Failed {
                    completed_nodes: 0,
                    error: format!(
                        "interrupted: its supervisor stopped before the action ended, and \
                         epoch {epoch} did not run it again (nodes it changed before are not \
                         counted)"
                    ),
                });
            }
        }
    }

    /// Stores `decision`, replacing the kept decision with its id or adding it as the newest,
    /// and writes the journal if it still has the etag of the last read or write.
    ///
    /// On [`JournalError::Lost`] `self` is unchanged.
    pub async fn record(
        &mut self,
        store: &dyn StateStore,
        decision: &Decision,
    ) -> Result<(), JournalError> {
        let mut decisions = self.decisions.clone();
        match decisions.iter_mut().find(|kept| kept.id == decision.id) {
            Some(kept) => *kept = decision.clone(),
            None => decisions.push_back(decision.clone()),
        }
        while decisions.len() > JOURNAL_CAPACITY {
            decisions.pop_front();
        }
        let data = serde_json::to_vec(&decisions)?;
        match store.write(&Self::grain(), data, self.etag).await {
            Ok(etag) => {
                self.etag = Some(etag);
                self.decisions = decisions;
                Ok(())
            }
            Err(StorageError::StaleVersion { .. }) => Err(JournalError::Lost),
            Err(error) => Err(error.into()),
        }
    }
}
