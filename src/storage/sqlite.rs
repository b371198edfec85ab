//! The embedded SQLite provider: one database file shared by the node processes of a machine.
//!
//! # Schema (version 1)
//!
//! ```sql
//! CREATE TABLE gristmill_schema (version INTEGER NOT NULL PRIMARY KEY);
//!
//! -- One row per grain ever written. `data IS NULL` marks a cleared grain (a tombstone), which
//! -- keeps the etag counting so an etag from before the clear never matches again.
//! CREATE TABLE grain_state (
//!     grain_type TEXT NOT NULL,
//!     grain_key  TEXT NOT NULL,
//!     etag       INTEGER NOT NULL,
//!     data       BLOB,
//!     PRIMARY KEY (grain_type, grain_key)
//! );
//!
//! -- One row per reminder. A lease is held while `lease_until_unix_ms` is in the future;
//! -- `lease_id` counts claims so a completed lease can be matched to its claim.
//! CREATE TABLE grain_reminder (
//!     grain_type          TEXT NOT NULL,
//!     grain_key           TEXT NOT NULL,
//!     name                TEXT NOT NULL,
//!     due_at_unix_ms      INTEGER NOT NULL,
//!     period_ms           INTEGER,          -- NULL: fires once
//!     lease_owner         TEXT,
//!     lease_until_unix_ms INTEGER,
//!     lease_id            INTEGER NOT NULL DEFAULT 0,
//!     PRIMARY KEY (grain_type, grain_key, name)
//! );
//! CREATE INDEX grain_reminder_due ON grain_reminder (due_at_unix_ms);
//!
//! -- One row: the store id, 32 hex digits, created by the first open.
//! CREATE TABLE gristmill_store (
//!     singleton INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 1),
//!     id        TEXT NOT NULL
//! );
//! ```
//!
//! Keys include the grain type, so grains of two types with the same key never share a row.
//!
//! # Concurrency
//!
//! The file is in WAL mode, so readers do not block the writer. Every write runs in a
//! `BEGIN IMMEDIATE` transaction, which takes the file's write lock at once and waits up to the
//! busy timeout for it. Compare-and-set is a single `UPDATE ... WHERE etag = ?` or
//! `INSERT ... ON CONFLICT DO UPDATE ... WHERE data IS NULL`, so concurrent writers in any
//! process see exactly one winner. All calls run on tokio's blocking pool.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior};

use super::rows::{
    self, ClaimColumns, ReminderColumns, SCHEMA_VERSION, check_schema_version, etag_from_db,
    lease_from_db, reminder_from_db,
};
use super::{
    BoxFuture, ETag, Reminder, ReminderLease, ReminderStore, StateStore, StorageConfig,
    StorageError, StorageProvider, StoreId, StoredState,
};
use crate::grain::GrainId;

/// Idle connections kept per store; more are opened under load and closed afterwards.
const MAX_IDLE_CONNECTIONS: usize = 4;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS gristmill_schema (version INTEGER NOT NULL PRIMARY KEY);
    CREATE TABLE IF NOT EXISTS grain_state (
        grain_type TEXT NOT NULL,
        grain_key  TEXT NOT NULL,
        etag       INTEGER NOT NULL,
        data       BLOB,
        PRIMARY KEY (grain_type, grain_key)
    );
    CREATE TABLE IF NOT EXISTS grain_reminder (
        grain_type          TEXT NOT NULL,
        grain_key           TEXT NOT NULL,
        name                TEXT NOT NULL,
        due_at_unix_ms      INTEGER NOT NULL,
        period_ms           INTEGER,
        lease_owner         TEXT,
        lease_until_unix_ms INTEGER,
        lease_id            INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (grain_type, grain_key, name)
    );
    CREATE INDEX IF NOT EXISTS grain_reminder_due ON grain_reminder (due_at_unix_ms);
    CREATE TABLE IF NOT EXISTS gristmill_store (
        singleton INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 1),
        id        TEXT NOT NULL
    );
";

/// Grain state and reminders in a SQLite file.
pub struct SqliteStore {
    shared: Arc<Shared>,
    store_id: StoreId,
}

struct Shared {
    path: PathBuf,
    /// Description for errors, such as `sqlite /var/lib/gristmill/state.sqlite3`.
    database: String,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl SqliteStore {
    /// Opens or creates the file `config.sqlite_path`, creates the schema if missing and reads
    /// the store id, creating a random one on the first open.
    ///
    /// Safe to call from several processes at once: schema creation is idempotent and runs
    /// under the file's write lock.
    pub async fn open(config: &StorageConfig) -> Result<Self, StorageError> {
        let shared = Arc::new(Shared {
            path: config.sqlite_path.clone(),
            database: format!("sqlite {}", config.sqlite_path.display()),
            busy_timeout: config.sqlite_busy_timeout,
            idle: Mutex::new(Vec::new()),
        });
        let mut store = Self {
            shared,
            store_id: StoreId(0),
        };
        let candidate = StoreId(rand::random());
        store.store_id = store
            .run(move |connection, database| create_schema(connection, database, candidate))
            .await?;
        tracing::debug!(database = %store.shared.database, store_id = %store.store_id, "storage opened");
        Ok(store)
    }

    /// Runs `operation` with a connection on tokio's blocking pool.
    async fn run<T, F>(&self, operation: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &str) -> Result<T, Failure> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let task = tokio::task::spawn_blocking(move || {
            let mut connection = shared.take_connection()?;
            let result = operation(&mut connection, &shared.database);
            shared.return_connection(connection);
            result.map_err(|failure| match failure {
                Failure::Driver(error) => shared.map_error(error),
                Failure::Storage(error) => error,
            })
        });
        match task.await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => Err(StorageError::Unavailable {
                database: self.shared.database.clone(),
                reason: error.to_string(),
                fix: "the tokio runtime is shutting down; no retry is possible",
            }),
        }
    }
}

impl Shared {
    fn take_connection(&self) -> Result<Connection, StorageError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(connection) => Ok(connection),
            None => self.connect().map_err(|error| self.map_error(error)),
        }
    }

    fn return_connection(&self, connection: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_CONNECTIONS {
            idle.push(connection);
        }
    }

    fn connect(&self) -> Result<Connection, rusqlite::Error> {
        let connection = Connection::open(&self.path)?;
        connection.busy_timeout(self.busy_timeout)?;
        // Switching to WAL needs a moment of exclusive access; the busy timeout covers it.
        let mode: String =
            connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(database = %self.database, mode, "sqlite did not switch to WAL journal mode");
        }
        // In WAL mode, NORMAL syncs the log at checkpoints instead of at every commit. A
        // committed write then survives a crash of any process (kill -9 included); only a crash
        // of the operating system or a power loss can roll back the last commits. FULL would
        // cost one fsync per grain state write.
        // NOTE: deployments that must survive power loss without a replicated database should
        // use PostgreSQL.
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(connection)
    }

    fn map_error(&self, error: rusqlite::Error) -> StorageError {
        let database = self.database.clone();
        let code = error.sqlite_error_code();
        match code {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                StorageError::Unavailable {
                    database,
                    reason: format!(
                        "the file stayed locked by another connection for the busy timeout of {:?}",
                        self.busy_timeout
                    ),
                    fix: "retry; if it persists, look for a process that holds a long write \
                      transaction on the file, or raise sqlite_busy_timeout",
                }
            }
            Some(
                ErrorCode::CannotOpen
                | ErrorCode::PermissionDenied
                | ErrorCode::ReadOnly
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::OutOfMemory,
            ) => StorageError::Unavailable {
                database,
                reason: error.to_string(),
                fix: "check that the directory of sqlite_path exists and is writable and that \
                      the disk has space, then retry",
            },
            _ => StorageError::Corrupt {
                database,
                detail: error.to_string(),
            },
        }
    }
}

/// Creates the schema if missing and returns the stored store id, storing `candidate` if the
/// database has none yet.
fn create_schema(
    connection: &mut Connection,
    database: &str,
    candidate: StoreId,
) -> Result<StoreId, Failure> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    transaction.execute_batch(SCHEMA)?;
    transaction.execute(
        "INSERT INTO gristmill_schema (version) VALUES (?1) ON CONFLICT DO NOTHING",
        [SCHEMA_VERSION],
    )?;
    let version: i64 =
        transaction.query_row("SELECT MAX(version) FROM gristmill_schema", [], |row| {
            row.get(0)
        })?;
    transaction.execute(
        "INSERT INTO gristmill_store (singleton, id) VALUES (1, ?1) ON CONFLICT DO NOTHING",
        [candidate.to_string()],
    )?;
    let stored: String =
        transaction.query_row("SELECT id FROM gristmill_store", [], |row| row.get(0))?;
    transaction.commit()?;
    check_schema_version(version, database)?;
    Ok(rows::store_id_from_db(&stored, database)?)
}

/// Reads the etag of the live state of a grain.
fn live_etag(
    transaction: &Transaction<'_>,
    grain: &GrainId,
    database: &str,
) -> Result<Option<ETag>, Failure> {
    let etag: Option<i64> = transaction
        .prepare_cached(
            "SELECT etag FROM grain_state
             WHERE grain_type = ?1 AND grain_key = ?2 AND data IS NOT NULL",
        )?
        .query_row((&grain.grain_type, &grain.key), |row| row.get(0))
        .optional()?;
    Ok(etag.map(|etag| etag_from_db(etag, database)).transpose()?)
}

/// Failure inside a blocking operation: a driver error, mapped by [`Shared::map_error`] once
/// the operation ends, or a storage error to return as it is.
enum Failure {
    Driver(rusqlite::Error),
    Storage(StorageError),
}

impl From<rusqlite::Error> for Failure {
    fn from(error: rusqlite::Error) -> Self {
        Failure::Driver(error)
    }
}

impl From<StorageError> for Failure {
    fn from(error: StorageError) -> Self {
        Failure::Storage(error)
    }
}

impl StorageProvider for SqliteStore {
    fn store_id(&self) -> StoreId {
        self.store_id
    }
}

impl StateStore for SqliteStore {
    fn read<'a>(
        &'a self,
        grain: &'a GrainId,
    ) -> BoxFuture<'a, Result<Option<StoredState>, StorageError>> {
        let grain = grain.clone();
        Box::pin(self.run(move |connection, database| {
            let row: Option<(Vec<u8>, i64)> = connection
                .prepare_cached(
                    "SELECT data, etag FROM grain_state
                     WHERE grain_type = ?1 AND grain_key = ?2 AND data IS NOT NULL",
                )?
                .query_row((&grain.grain_type, &grain.key), |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()?;
            let Some((data, etag)) = row else {
                return Ok(None);
            };
            let etag = etag_from_db(etag, database)?;
            Ok(Some(StoredState { data, etag }))
        }))
    }

    fn write<'a>(
        &'a self,
        grain: &'a GrainId,
        data: Vec<u8>,
        expected: Option<ETag>,
    ) -> BoxFuture<'a, Result<ETag, StorageError>> {
        let grain = grain.clone();
        Box::pin(self.run(move |connection, database| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let written: Option<i64> = match expected {
                // Inserts, or revives a tombstone; a live row fails the DO UPDATE condition.
                None => transaction
                    .prepare_cached(
                        "INSERT INTO grain_state (grain_type, grain_key, etag, data)
                         VALUES (?1, ?2, 1, ?3)
                         ON CONFLICT (grain_type, grain_key) DO UPDATE
                         SET etag = grain_state.etag + 1, data = excluded.data
                         WHERE grain_state.data IS NULL
                         RETURNING etag",
                    )?
                    .query_row((&grain.grain_type, &grain.key, &data), |row| row.get(0))
                    .optional()?,
                Some(etag) => transaction
                    .prepare_cached(
                        "UPDATE grain_state SET etag = etag + 1, data = ?3
                         WHERE grain_type = ?1 AND grain_key = ?2 AND etag = ?4
                           AND data IS NOT NULL
                         RETURNING etag",
                    )?
                    .query_row(
                        (
                            &grain.grain_type,
                            &grain.key,
                            &data,
                            rows::to_db(etag.0, "etag")?,
                        ),
                        |row| row.get(0),
                    )
                    .optional()?,
            };
            let Some(written) = written else {
                let actual = live_etag(&transaction, &grain, database)?;
                return Err(rows::stale(&grain, expected, actual).into());
            };
            transaction.commit()?;
            Ok(etag_from_db(written, database)?)
        }))
    }

    fn clear<'a>(
        &'a self,
        grain: &'a GrainId,
        expected: Option<ETag>,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        let grain = grain.clone();
        Box::pin(self.run(move |connection, database| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let cleared = match expected {
                None => false,
                Some(etag) => {
                    transaction
                        .prepare_cached(
                            "UPDATE grain_state SET etag = etag + 1, data = NULL
                             WHERE grain_type = ?1 AND grain_key = ?2 AND etag = ?3
                               AND data IS NOT NULL",
                        )?
                        .execute((&grain.grain_type, &grain.key, rows::to_db(etag.0, "etag")?))?
                        == 1
                }
            };
            if !cleared {
                let actual = live_etag(&transaction, &grain, database)?;
                if actual != expected {
                    return Err(rows::stale(&grain, expected, actual).into());
                }
            }
            transaction.commit()?;
            Ok(())
        }))
    }
}

impl ReminderStore for SqliteStore {
    fn upsert(&self, reminder: Reminder) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(self.run(move |connection, _| {
            let columns = ReminderColumns::new(&reminder)?;
            connection
                .prepare_cached(
                    "INSERT INTO grain_reminder
                         (grain_type, grain_key, name, due_at_unix_ms, period_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (grain_type, grain_key, name) DO UPDATE
                     SET due_at_unix_ms = excluded.due_at_unix_ms,
                         period_ms = excluded.period_ms,
                         lease_owner = NULL,
                         lease_until_unix_ms = NULL",
                )?
                .execute((
                    &reminder.grain.grain_type,
                    &reminder.grain.key,
                    &reminder.name,
                    columns.due_at,
                    columns.period,
                ))?;
            Ok(())
        }))
    }

    fn delete<'a>(
        &'a self,
        grain: &'a GrainId,
        name: &'a str,
    ) -> BoxFuture<'a, Result<bool, StorageError>> {
        let grain = grain.clone();
        let name = name.to_owned();
        Box::pin(self.run(move |connection, _| {
            let deleted = connection
                .prepare_cached(
                    "DELETE FROM grain_reminder
                     WHERE grain_type = ?1 AND grain_key = ?2 AND name = ?3",
                )?
                .execute((&grain.grain_type, &grain.key, &name))?;
            Ok(deleted == 1)
        }))
    }

    fn list<'a>(
        &'a self,
        grain: &'a GrainId,
    ) -> BoxFuture<'a, Result<Vec<Reminder>, StorageError>> {
        let grain = grain.clone();
        Box::pin(self.run(move |connection, database| {
            let mut statement = connection.prepare_cached(
                "SELECT name, due_at_unix_ms, period_ms FROM grain_reminder
                 WHERE grain_type = ?1 AND grain_key = ?2
                 ORDER BY name",
            )?;
            let rows = statement.query_map((&grain.grain_type, &grain.key), |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?;
            let mut reminders = Vec::new();
            for row in rows {
                let (name, due_at, period) = row?;
                reminders.push(reminder_from_db(
                    grain.clone(),
                    name,
                    due_at,
                    period,
                    database,
                )?);
            }
            Ok(reminders)
        }))
    }

    fn claim_due<'a>(
        &'a self,
        now_unix_ms: u64,
        owner: &'a str,
        lease: Duration,
        limit: NonZeroU32,
    ) -> BoxFuture<'a, Result<Vec<ReminderLease>, StorageError>> {
        let owner = owner.to_owned();
        Box::pin(self.run(move |connection, database| {
            let claim = ClaimColumns::new(now_unix_ms, lease, limit.get())?;
            // One statement under the write lock, so no other connection can claim the same
            // rows between the selection and the update.
            let mut statement = connection.prepare_cached(
                "UPDATE grain_reminder
                 SET lease_owner = ?1, lease_until_unix_ms = ?2, lease_id = lease_id + 1
                 WHERE rowid IN (
                     SELECT rowid FROM grain_reminder
                     WHERE due_at_unix_ms <= ?3
                       AND (lease_until_unix_ms IS NULL OR lease_until_unix_ms <= ?3)
                     ORDER BY due_at_unix_ms
                     LIMIT ?4)
                 RETURNING grain_type, grain_key, name, due_at_unix_ms, period_ms, lease_id",
            )?;
            let rows = statement.query_map(
                (&owner, claim.lease_until, claim.now, claim.limit),
                |row| {
                    Ok((
                        GrainId::new(row.get::<_, String>(0)?, row.get::<_, String>(1)?),
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                    ))
                },
            )?;
            let mut leases = Vec::new();
            for row in rows {
                let (grain, name, due_at, period, lease_id) = row?;
                let reminder = reminder_from_db(grain, name, due_at, period, database)?;
                leases.push(lease_from_db(
                    reminder,
                    &owner,
                    claim.lease_until,
                    lease_id,
                    database,
                )?);
            }
            leases.sort_by_key(|lease| lease.reminder.due_at_unix_ms);
            Ok(leases)
        }))
    }

    fn complete<'a>(
        &'a self,
        lease: &'a ReminderLease,
        next_due_unix_ms: Option<u64>,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        let lease = lease.clone();
        Box::pin(self.run(move |connection, _| {
            let reminder = &lease.reminder;
            let lease_id = rows::to_db(lease.lease_id, "lease id")?;
            let key = (
                &reminder.grain.grain_type,
                &reminder.grain.key,
                &reminder.name,
                &lease.owner,
                lease_id,
            );
            let changed = match next_due_unix_ms {
                Some(next_due) => {
                    let next_due = rows::to_db(next_due, "reminder due time")?;
                    connection
                        .prepare_cached(
                            "UPDATE grain_reminder
                             SET due_at_unix_ms = ?6, lease_owner = NULL,
                                 lease_until_unix_ms = NULL
                             WHERE grain_type = ?1 AND grain_key = ?2 AND name = ?3
                               AND lease_owner = ?4 AND lease_id = ?5",
                        )?
                        .execute((key.0, key.1, key.2, key.3, key.4, next_due))?
                }
                None => connection
                    .prepare_cached(
                        "DELETE FROM grain_reminder
                         WHERE grain_type = ?1 AND grain_key = ?2 AND name = ?3
                           AND lease_owner = ?4 AND lease_id = ?5",
                    )?
                    .execute(key)?,
            };
            if changed == 0 {
                return Err(StorageError::LeaseLost {
                    grain: reminder.grain.clone(),
                    name: reminder.name.clone(),
                }
                .into());
            }
            Ok(())
        }))
    }
}
