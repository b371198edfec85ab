//! What a grain sees of the runtime during a turn: identity, persisted state, timers,
//! reminders and references to other grains, split into exclusive and shared parts.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::activation::ActivationMsg;
use super::mailbox::WeakActivationRef;
use super::{Grain, GrainError, GrainId, GrainRef};
use crate::runtime::Node;
use crate::storage::{ETag, Reminder, StorageError};

/// The runtime's side of one activation, passed to every exclusive turn.
///
/// It dereferences to the [`SharedContext`] that interleaved turns receive, so everything an
/// interleaved turn may do (identity, grain references, reminders) is available here too. What
/// needs the activation to itself lives only here: persisted state, whose writes are
/// compare-and-set on the version this activation last read, and timers.
pub struct GrainContext {
    shared: Arc<SharedContext>,
    /// Version of the stored state this activation last read or wrote; `None` if it has not
    /// touched storage yet.
    etag: Option<Option<ETag>>,
    timers: HashMap<String, tokio::task::AbortHandle>,
    /// The activation's own mailbox, which timer ticks go to. Weak, because the mailbox
    /// contains this context.
    actor: WeakActivationRef,
    migration_state: Option<Vec<u8>>,
}

/// The part of a [`GrainContext`] that concurrent interleaved turns share: identity, grain
/// references, reminders and the deactivation request.
///
/// [`InterleavedHandler`](super::InterleavedHandler) turns receive `&SharedContext` because
/// they run beside each other; state writes and timers need
/// the exclusive [`GrainContext`].
pub struct SharedContext {
    id: GrainId,
    activation_id: u64,
    epoch: u64,
    node: Node,
    deactivate_requested: AtomicBool,
}

/// Application error code of a state write that lost to a newer activation's write.
pub const STALE_STATE: &str = "stale_state";
/// Application error code of a storage request that failed.
pub const STORAGE_FAILED: &str = "storage_failed";

impl GrainContext {
    pub(crate) fn new(id: GrainId, activation_id: u64, epoch: u64, node: Node) -> Self {
        let shared = SharedContext {
            id,
            activation_id,
            epoch,
            node,
            deactivate_requested: AtomicBool::new(false),
        };
        Self {
            shared: Arc::new(shared),
            etag: None,
            timers: HashMap::new(),
            actor: WeakActivationRef::default(),
            migration_state: None,
        }
    }

    /// Returns a handle on the shared part, for an interleaved turn to keep.
    pub(crate) fn share(&self) -> Arc<SharedContext> {
        Arc::clone(&self.shared)
    }

    /// Returns the in-memory state that the previous activation's [`Grain::dehydrate`]
    /// carried over, when this activation was created by a migration.
    pub fn migration_state(&self) -> Option<&[u8]> {
        self.migration_state.as_deref()
    }

    pub(crate) fn set_migration_state(&mut self, state: Option<Vec<u8>>) {
        self.migration_state = state;
    }

    /// Reads the grain's persisted state, or `S::default()` if none was ever written.
    ///
    /// The state is stored as JSON, so fields may be added to `S` later (give them
    /// `#[serde(default)]`). The read remembers the stored version, which the next
    /// [`write_state`](Self::write_state) must still find.
    pub async fn read_state<S: DeserializeOwned + Default>(&mut self) -> Result<S, GrainError> {
        let stored = self
            .node
            .storage()
            .read(&self.id)
            .await
            .map_err(|e| self.storage_error(e))?;
        match stored {
            Some(stored) => {
                self.etag = Some(Some(stored.etag));
                if stored.data.is_empty() {
                    return Ok(S::default());
                }
                serde_json::from_slice(&stored.data).map_err(|error| {
                    GrainError::new(
                        STORAGE_FAILED,
                        format!("stored state of {} is not valid: {error}", self.id),
                    )
                })
            }
            None => {
                self.etag = Some(None);
                Ok(S::default())
            }
        }
    }

    /// Writes the grain's state, if no other activation wrote since this one last read or
    /// wrote it.
    ///
    /// A write that lost (error code [`STALE_STATE`]) changed nothing: another activation of
    /// the grain owns it now, so this activation deactivates after the current turn.
    pub async fn write_state<S: Serialize>(&mut self, state: &S) -> Result<(), GrainError> {
        let expected = match self.etag {
            Some(etag) => etag,
            None => self
                .node
                .storage()
                .read(&self.id)
                .await
                .map_err(|e| self.storage_error(e))?
                .map(|s| s.etag),
        };
        let data = serde_json::to_vec(state).map_err(|error| {
            GrainError::new(
                STORAGE_FAILED,
                format!("cannot encode state of {}: {error}", self.id),
            )
        })?;
        let etag = self
            .node
            .storage()
            .write(&self.id, data, expected)
            .await
            .map_err(|e| self.storage_error(e))?;
        self.etag = Some(Some(etag));
        Ok(())
    }

    /// Deletes the grain's persisted state; the next read returns the default.
    pub async fn clear_state(&mut self) -> Result<(), GrainError> {
        let expected = match self.etag {
            Some(etag) => etag,
            None => self
                .node
                .storage()
                .read(&self.id)
                .await
                .map_err(|e| self.storage_error(e))?
                .map(|s| s.etag),
        };
        if expected.is_none() {
            return Ok(());
        }
        self.node
            .storage()
            .clear(&self.id, expected)
            .await
            .map_err(|e| self.storage_error(e))?;
        self.etag = None;
        Ok(())
    }

    fn storage_error(&mut self, error: StorageError) -> GrainError {
        if let StorageError::StaleVersion { .. } = error {
            tracing::warn!(grain = %self.id, activation = self.activation_id, "state write lost to a newer activation; deactivating");
            self.deactivate_after_turn();
            return GrainError::new(STALE_STATE, error.to_string());
        }
        GrainError::new(STORAGE_FAILED, error.to_string())
    }

    /// Starts (or restarts) the timer `name`: [`Grain::on_timer`] runs after `due`, then every
    /// `period` if one is given, as a turn of its own.
    ///
    /// Timers belong to the activation: they stop when it deactivates and are not persisted.
    /// Use a reminder for work that must happen even when the grain is not active. Timer
    /// ticks do not count as activity, so they do not keep an idle grain active.
    pub fn start_timer(
        &mut self,
        name: impl Into<String>,
        due: Duration,
        period: Option<Duration>,
    ) {
        let name = name.into();
        if self.actor.upgrade().is_none() {
            tracing::warn!(grain = %self.id, timer = %name, "timers cannot start outside an activation");
            return;
        }
        let actor = self.actor.clone();
        let tick_name = name.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(due).await;
            loop {
                let Some(mailbox) = actor.upgrade() else {
                    return;
                };
                if mailbox
                    .cast(ActivationMsg::Timer(tick_name.clone()))
                    .is_err()
                {
                    return;
                }
                drop(mailbox);
                match period {
                    Some(period) => tokio::time::sleep(period).await,
                    None => return,
                }
            }
        });
        if let Some(previous) = self.timers.insert(name, task.abort_handle()) {
            previous.abort();
        }
    }

    /// Stops the timer `name`; returns whether it was running.
    pub fn stop_timer(&mut self, name: &str) -> bool {
        self.timers
            .remove(name)
            .map(|timer| timer.abort())
            .is_some()
    }

    pub(crate) fn stop_all_timers(&mut self) {
        for (_, timer) in self.timers.drain() {
            timer.abort();
        }
    }

    pub(crate) fn set_actor(&mut self, actor: WeakActivationRef) {
        self.actor = actor;
    }
}

impl std::ops::Deref for GrainContext {
    type Target = SharedContext;

    fn deref(&self) -> &SharedContext {
        &self.shared
    }
}

impl SharedContext {
    /// Returns the id of this grain.
    pub fn id(&self) -> &GrainId {
        &self.id
    }

    /// Returns the key of this grain.
    pub fn key(&self) -> &str {
        &self.id.key
    }

    /// Returns the id of this activation, unique on its node.
    pub fn activation_id(&self) -> u64 {
        self.activation_id
    }

    /// Returns the directory epoch of this activation; a migration raises it by one.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Returns the name of the node that hosts this activation.
    pub fn node_name(&self) -> &str {
        &self.node.id().name
    }

    /// Returns a reference to the grain `key` of type `G`, for calls from this grain.
    pub fn grain<G: Grain>(&self, key: impl Into<String>) -> GrainRef<G> {
        GrainRef::new(GrainId::new(G::TYPE_NAME, key), self.node.clone())
    }

    /// Asks the runtime to deactivate this activation once the current turn ends; from an
    /// interleaved turn, once every running turn has ended.
    pub fn deactivate_after_turn(&self) {
        self.deactivate_requested.store(true, Ordering::Release);
    }

    pub(crate) fn take_deactivate_request(&self) -> bool {
        // Checked before every turn ends, and rarely set: a load costs less than a swap.
        self.deactivate_requested.load(Ordering::Acquire)
            && self.deactivate_requested.swap(false, Ordering::AcqRel)
    }

    /// Registers (or replaces) the durable reminder `name`: [`Grain::on_reminder`] runs after
    /// `due`, then every `period` if one is given, whether or not the grain is active, on
    /// whichever node hosts it then.
    ///
    /// Reminders are stored in the node's database and keep firing after the node that
    /// registered them dies. They fire at most `reminder_poll_ms` late.
    pub async fn register_reminder(
        &self,
        name: impl Into<String>,
        due: Duration,
        period: Option<Duration>,
    ) -> Result<(), GrainError> {
        let due_at = crate::runtime::unix_now_ms()
            .saturating_add(u64::try_from(due.as_millis()).unwrap_or(u64::MAX));
        let period_ms =
            period.and_then(|p| NonZeroU64::new(u64::try_from(p.as_millis()).unwrap_or(u64::MAX)));
        let reminder = Reminder {
            grain: self.id.clone(),
            name: name.into(),
            due_at_unix_ms: due_at,
            period_ms,
        };
        self.node
            .storage()
            .upsert(reminder)
            .await
            .map_err(|e| GrainError::new(STORAGE_FAILED, e.to_string()))
    }

    /// Deletes the reminder `name`; returns whether it existed.
    pub async fn unregister_reminder(&self, name: &str) -> Result<bool, GrainError> {
        self.node
            .storage()
            .delete(&self.id, name)
            .await
            .map_err(|e| GrainError::new(STORAGE_FAILED, e.to_string()))
    }

    pub(crate) fn node(&self) -> &Node {
        &self.node
    }
}
