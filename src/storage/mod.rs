//! Grain state persistence with optimistic concurrency (embedded SQLite, PostgreSQL).
//!
//! # Concurrency contract
//!
//! Every stored grain state carries an [`ETag`], a per-grain version that increases by one on
//! each write and clear. A writer passes the etag it read, and the provider applies the write
//! only if the stored etag still equals it, in one compare-and-set step inside the database.
//! A stale activation (one that lost a migration race, or a node partitioned away) therefore
//! cannot overwrite a newer state: it receives [`StorageError::StaleVersion`] and nothing
//! changes. This is how storage upholds "no acknowledged write is lost".
//!
//! Clearing a grain keeps a tombstone row that stores the next etag. A writer that still has
//! an etag from before the clear therefore fails even after someone else writes again (no ABA).
//!
//! # Reminders
//!
//! Reminders live in the same database, so they survive the death of every node. A node
//! periodically calls [`ReminderStore::claim_due`], which leases due reminders to that node in
//! one atomic statement. Two nodes never hold the lease of one reminder at once, and a lease
//! whose node died expires and can be claimed by another node. After firing, the node calls
//! [`ReminderStore::complete`] to schedule the next tick.

mod config;
mod error;
mod postgres;
mod rows;
mod sqlite;
mod store_id;
mod types;

use std::num::NonZeroU32;
use std::time::Duration;

pub use config::{ProviderKind, StorageConfig, open};
pub use error::StorageError;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use store_id::{InvalidStoreId, StoreId};
pub use types::{ETag, Reminder, ReminderLease, StoredState};

use crate::grain::GrainId;
pub use crate::scaling::orchestrator::BoxFuture;

/// Persists grain state with compare-and-set on its [`ETag`].
///
/// Implementations are shared as `Arc<dyn StateStore>` by every activation on a node.
pub trait StateStore: Send + Sync + 'static {
    /// Reads the state of `grain`, or `None` if it was never written or has been cleared.
    fn read<'a>(
        &'a self,
        grain: &'a GrainId,
    ) -> BoxFuture<'a, Result<Option<StoredState>, StorageError>>;

    /// Stores `data` as the state of `grain` and returns its new etag.
    ///
    /// `expected` is the etag of the state the caller read: `None` if it read nothing, in
    /// which case the write succeeds only while no state is stored. A mismatch returns
    /// [`StorageError::StaleVersion`] and changes nothing.
    fn write<'a>(
        &'a self,
        grain: &'a GrainId,
        data: Vec<u8>,
        expected: Option<ETag>,
    ) -> BoxFuture<'a, Result<ETag, StorageError>>;

    /// Removes the state of `grain` if its etag is still `expected`.
    ///
    /// With `expected = None` it succeeds, changing nothing, only while no state is stored.
    /// A mismatch returns [`StorageError::StaleVersion`] and changes nothing.
    fn clear<'a>(
        &'a self,
        grain: &'a GrainId,
        expected: Option<ETag>,
    ) -> BoxFuture<'a, Result<(), StorageError>>;
}

/// Persists grain reminders and leases due ones to one node at a time.
///
/// Times are wall-clock milliseconds since the Unix epoch, because a reminder's due time must
/// mean the same instant on every node and after restarts.
pub trait ReminderStore: Send + Sync + 'static {
    /// Creates the reminder, or replaces the one with the same grain and name.
    ///
    /// Replacing a reminder drops its lease, so the node that holds it can no longer complete
    /// the old schedule.
    fn upsert(&self, reminder: Reminder) -> BoxFuture<'_, Result<(), StorageError>>;

    /// Deletes the reminder `name` of `grain`; returns whether it existed.
    fn delete<'a>(
        &'a self,
        grain: &'a GrainId,
        name: &'a str,
    ) -> BoxFuture<'a, Result<bool, StorageError>>;

    /// Lists the reminders of `grain`, ordered by name.
    fn list<'a>(&'a self, grain: &'a GrainId)
    -> BoxFuture<'a, Result<Vec<Reminder>, StorageError>>;

    /// Leases to `owner` up to `limit` reminders that are due at `now_unix_ms` and not leased
    /// to anyone, earliest due first.
    ///
    /// Each lease lasts `lease` from `now_unix_ms`. The claim is one atomic statement, so two
    /// concurrent claims never return the same reminder. A lease that has expired counts as
    /// not leased.
    fn claim_due<'a>(
        &'a self,
        now_unix_ms: u64,
        owner: &'a str,
        lease: Duration,
        limit: NonZeroU32,
    ) -> BoxFuture<'a, Result<Vec<ReminderLease>, StorageError>>;

    /// Records that the leased reminder fired: it becomes due again at `next_due_unix_ms`
    /// without a lease, or is deleted when `next_due_unix_ms` is `None`.
    ///
    /// Returns [`StorageError::LeaseLost`], changing nothing, if the reminder was claimed
    /// again, replaced or deleted since `lease` was granted.
    fn complete<'a>(
        &'a self,
        lease: &'a ReminderLease,
        next_due_unix_ms: Option<u64>,
    ) -> BoxFuture<'a, Result<(), StorageError>>;
}

/// A database that stores both grain state and reminders; what [`open`] returns.
///
/// Coerce an `Arc<dyn StorageProvider>` to `Arc<dyn StateStore>` or `Arc<dyn ReminderStore>`
/// where only one half is needed.
pub trait StorageProvider: StateStore + ReminderStore {
    /// Returns the id stored in the database, the same for every node that opens it.
    fn store_id(&self) -> StoreId;
}
