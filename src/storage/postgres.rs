//! The PostgreSQL provider: one database shared by every node of a cluster.
//!
//! # Schema (version 1)
//!
//! ```sql
//! CREATE TABLE gristmill_schema (version BIGINT NOT NULL PRIMARY KEY);
//!
//! -- One row per grain ever written. `data IS NULL` marks a cleared grain (a tombstone), which
//! -- keeps the etag counting so an etag from before the clear never matches again.
//! CREATE TABLE grain_state (
//!     grain_type TEXT   NOT NULL,
//!     grain_key  TEXT   NOT NULL,
//!     etag       BIGINT NOT NULL,
//!     data       BYTEA,
//!     PRIMARY KEY (grain_type, grain_key)
//! );
//!
//! -- One row per reminder. A lease is held while `lease_until_unix_ms` is in the future;
//! -- `lease_id` counts claims so a completed lease can be matched to its claim.
//! CREATE TABLE grain_reminder (
//!     grain_type          TEXT   NOT NULL,
//!     grain_key           TEXT   NOT NULL,
//!     name                TEXT   NOT NULL,
//!     due_at_unix_ms      BIGINT NOT NULL,
//!     period_ms           BIGINT,           -- NULL: fires once
//!     lease_owner         TEXT,
//!     lease_until_unix_ms BIGINT,
//!     lease_id            BIGINT NOT NULL DEFAULT 0,
//!     PRIMARY KEY (grain_type, grain_key, name)
//! );
//! CREATE INDEX grain_reminder_due ON grain_reminder (due_at_unix_ms);
//!
//! -- One row: the store id, 32 hex digits, created by the first open.
//! CREATE TABLE gristmill_store (
//!     singleton INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 1),
//!     id        TEXT    NOT NULL
//! );
//! ```
//!
//! Keys include the grain type, so grains of two types with the same key never share a row.
//! The tables live in the first schema of the connection's `search_path`.
//!
//! # Concurrency
//!
//! Every compare-and-set is one statement: `UPDATE ... WHERE etag = $n` or
//! `INSERT ... ON CONFLICT DO UPDATE ... WHERE data IS NULL`. Under READ COMMITTED, a
//! statement that waited for a concurrent writer's row lock re-checks its condition against
//! the committed row, so exactly one of two racing writers succeeds. Claims select due
//! reminders `FOR UPDATE SKIP LOCKED`, so concurrent claims on several nodes split the due
//! rows instead of waiting for each other. Schema creation holds a transaction-level advisory
//! lock, so nodes that start together do not race on `CREATE TABLE IF NOT EXISTS`.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
};
use tokio_postgres::config::Host;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::rows::{
    self, ClaimColumns, ReminderColumns, SCHEMA_VERSION, check_schema_version, etag_from_db,
    lease_from_db, reminder_from_db,
};
use super::{
    BoxFuture, ETag, Reminder, ReminderLease, ReminderStore, StateStore, StorageConfig,
    StorageError, StorageProvider, StoreId, StoredState,
};
use crate::grain::GrainId;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS gristmill_schema (version BIGINT NOT NULL PRIMARY KEY);
    CREATE TABLE IF NOT EXISTS grain_state (
        grain_type TEXT   NOT NULL,
        grain_key  TEXT   NOT NULL,
        etag       BIGINT NOT NULL,
        data       BYTEA,
        PRIMARY KEY (grain_type, grain_key)
    );
    CREATE TABLE IF NOT EXISTS grain_reminder (
        grain_type          TEXT   NOT NULL,
        grain_key           TEXT   NOT NULL,
        name                TEXT   NOT NULL,
        due_at_unix_ms      BIGINT NOT NULL,
        period_ms           BIGINT,
        lease_owner         TEXT,
        lease_until_unix_ms BIGINT,
        lease_id            BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (grain_type, grain_key, name)
    );
    CREATE INDEX IF NOT EXISTS grain_reminder_due ON grain_reminder (due_at_unix_ms);
    CREATE TABLE IF NOT EXISTS gristmill_store (
        singleton INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 1),
        id        TEXT    NOT NULL
    );
";

/// Key of the advisory lock held while creating the schema: "gristmil" in ASCII.
const SCHEMA_LOCK_KEY: i64 = 0x6772_6973_746d_696c;

const UNAVAILABLE_FIX: &str = "check that the PostgreSQL server named by postgres_url is \
                               running and accepts connections, then retry";

/// Grain state and reminders in PostgreSQL, over a pool of connections.
pub struct PostgresStore {
    pool: Pool,
    /// Description for errors, such as `postgres 127.0.0.1:5432/gristmill`; no credentials.
    database: String,
    connect_timeout: Duration,
    request_timeout: Duration,
    /// Read from the database at open; the placeholder 0 until then.
    store_id: StoreId,
}

impl PostgresStore {
    /// Connects to `config.postgres_url`, creates the schema if missing and reads the store
    /// id, creating a random one on the first open.
    ///
    /// Fails with [`StorageError::Unavailable`] if the server cannot be reached within
    /// `config.connect_timeout`.
    pub async fn open(config: &StorageConfig) -> Result<Self, StorageError> {
        let mut connection = config.postgres_connection()?;
        connection.connect_timeout(config.connect_timeout);
        let database = describe(&connection);
        let manager = Manager::from_config(
            connection,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.postgres_max_connections.get())
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|error| StorageError::Config {
                field: "postgres_max_connections",
                reason: format!("cannot build the connection pool: {error}"),
            })?;
        let mut store = Self {
            pool,
            database,
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            store_id: StoreId(0),
        };
        let candidate = StoreId(rand::random());
        store.store_id = store.bounded(store.create_schema(candidate)).await?;
        tracing::debug!(database = %store.database, store_id = %store.store_id, "storage opened");
        Ok(store)
    }

    /// Creates the schema if missing and returns the stored store id, storing `candidate` if
    /// the database has none yet.
    async fn create_schema(&self, candidate: StoreId) -> Result<StoreId, Failure> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        transaction
            .query_one("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK_KEY])
            .await?;
        transaction.batch_execute(SCHEMA).await?;
        transaction
            .execute(
                "INSERT INTO gristmill_schema (version) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&SCHEMA_VERSION],
            )
            .await?;
        let version: i64 = transaction
            .query_one("SELECT MAX(version) FROM gristmill_schema", &[])
            .await?
            .try_get(0)?;
        transaction
            .execute(
                "INSERT INTO gristmill_store (singleton, id) VALUES (1, $1) ON CONFLICT DO NOTHING",
                &[&candidate.to_string()],
            )
            .await?;
        let stored: String = transaction
            .query_one("SELECT id FROM gristmill_store", &[])
            .await?
            .try_get(0)?;
        transaction.commit().await?;
        check_schema_version(version, &self.database)?;
        Ok(rows::store_id_from_db(&stored, &self.database)?)
    }

    async fn client(&self) -> Result<Object, Failure> {
        self.pool.get().await.map_err(Failure::Pool)
    }

    async fn pooled_client(&self) -> Result<PooledClient, Failure> {
        Ok(PooledClient {
            object: Some(self.client().await?),
            broken: AtomicBool::new(false),
        })
    }

    /// Runs `request` within the request timeout and maps its failure.
    async fn bounded<T>(
        &self,
        request: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, StorageError> {
        match tokio::time::timeout(self.request_timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(failure)) => Err(self.map_failure(failure)),
            Err(_elapsed) => Err(self.unavailable(format!(
                "no answer within the request timeout of {:?}",
                self.request_timeout
            ))),
        }
    }

    /// Reads the etag of the live state of a grain.
    async fn live_etag(
        &self,
        client: &PooledClient,
        grain: &GrainId,
    ) -> Result<Option<ETag>, Failure> {
        let row = client
            .query_opt(
                "SELECT etag FROM grain_state
                 WHERE grain_type = $1 AND grain_key = $2 AND data IS NOT NULL",
                &[&grain.grain_type, &grain.key],
            )
            .await?;
        match row {
            Some(row) => Ok(Some(etag_from_db(row.try_get(0)?, &self.database)?)),
            None => Ok(None),
        }
    }

    fn unavailable(&self, reason: String) -> StorageError {
        StorageError::Unavailable {
            database: self.database.clone(),
            reason,
            fix: UNAVAILABLE_FIX,
        }
    }

    fn map_failure(&self, failure: Failure) -> StorageError {
        match failure {
            Failure::Storage(error) => error,
            Failure::Driver(error) => self.map_driver_error(&error),
            Failure::Pool(PoolError::Backend(error)) => self.map_driver_error(&error),
            Failure::Pool(PoolError::Timeout(TimeoutType::Wait)) => self.unavailable(
                "every pooled connection stayed busy for the request timeout".to_owned(),
            ),
            Failure::Pool(PoolError::Timeout(_)) => self.unavailable(format!(
                "no connection within the connect timeout of {:?}",
                self.connect_timeout
            )),
            Failure::Pool(other) => self.unavailable(other.to_string()),
        }
    }

    fn map_driver_error(&self, error: &tokio_postgres::Error) -> StorageError {
        let Some(db_error) = error.as_db_error() else {
            // No server error: the connection failed or broke.
            return self.unavailable(error.to_string());
        };
        let code = db_error.code().code();
        let detail = format!("{} (SQLSTATE {code})", db_error.message());
        match code {
            // invalid_authorization_specification, invalid_password, invalid_catalog_name
            _ if code.starts_with("28") || code == "3D000" => StorageError::Config {
                field: "postgres_url",
                reason: format!("the server rejected the connection: {detail}"),
            },
            // insufficient_resources, query_canceled, serialization_failure, deadlock_detected,
            // lock_not_available
            _ if is_connection_lost(error)
                || code.starts_with("53")
                || matches!(code, "57014" | "40001" | "40P01" | "55P03") =>
            {
                self.unavailable(detail)
            }
            _ => StorageError::Corrupt {
                database: self.database.clone(),
                detail,
            },
        }
    }
}

/// A pooled connection that is dropped instead of returned to the pool once it may be broken.
///
/// deadpool's fast recycling only checks whether the driver has noticed a closed socket, which
/// can lag behind a fatal server error such as `admin_shutdown`. Without this, the next request
/// would get the dead connection and fail a second time.
struct PooledClient {
    object: Option<Object>,
    /// Set while a request is in flight and after a connection-level error. A request whose
    /// future the timeout dropped leaves the connection in an unknown state, so it stays set.
    broken: AtomicBool,
}

impl PooledClient {
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Failure> {
        let client = self.object();
        self.track(async {
            client
                .query(&client.prepare_cached(sql).await?, params)
                .await
        })
        .await
    }

    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Failure> {
        let client = self.object();
        self.track(async {
            client
                .query_opt(&client.prepare_cached(sql).await?, params)
                .await
        })
        .await
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Failure> {
        let client = self.object();
        self.track(async {
            client
                .execute(&client.prepare_cached(sql).await?, params)
                .await
        })
        .await
    }

    fn object(&self) -> &Object {
        self.object
            .as_ref()
            .expect("the object is taken only on drop")
    }

    async fn track<T>(
        &self,
        request: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, Failure> {
        self.broken.store(true, Ordering::Relaxed);
        let result = request.await;
        let lost = result.as_ref().is_err_and(is_connection_lost);
        self.broken.store(lost, Ordering::Relaxed);
        Ok(result?)
    }
}

impl Drop for PooledClient {
    fn drop(&mut self) {
        if *self.broken.get_mut()
            && let Some(object) = self.object.take()
        {
            // Detaches the connection from the pool, so dropping it closes it.
            drop(Object::take(object));
        }
    }
}

/// Returns whether `error` leaves its connection unusable.
fn is_connection_lost(error: &tokio_postgres::Error) -> bool {
    match error.as_db_error() {
        // connection_exception, operator_intervention (such as admin_shutdown)
        Some(db_error) => {
            let code = db_error.code().code();
            code.starts_with("08") || code.starts_with("57P")
        }
        None => true,
    }
}

/// Describes the server and database of `connection` for errors, without credentials.
fn describe(connection: &tokio_postgres::Config) -> String {
    let ports = connection.get_ports();
    let hosts: Vec<String> = connection
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(index, host)| {
            let port = ports.get(index).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    let database = connection
        .get_dbname()
        .or(connection.get_user())
        .unwrap_or("postgres");
    format!("postgres {}/{database}", hosts.join(","))
}

/// Failure inside a request, mapped by [`PostgresStore::map_failure`] once the request ends.
enum Failure {
    Driver(tokio_postgres::Error),
    Pool(PoolError),
    Storage(StorageError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Self {
        Failure::Driver(error)
    }
}

impl From<StorageError> for Failure {
    fn from(error: StorageError) -> Self {
        Failure::Storage(error)
    }
}

impl StorageProvider for PostgresStore {
    fn store_id(&self) -> StoreId {
        self.store_id
    }
}

impl StateStore for PostgresStore {
    fn read<'a>(
        &'a self,
        grain: &'a GrainId,
    ) -> BoxFuture<'a, Result<Option<StoredState>, StorageError>> {
        Box::pin(self.bounded(async move {
            let client = self.pooled_client().await?;
            let Some(row) = client
                .query_opt(
                    "SELECT data, etag FROM grain_state
                     WHERE grain_type = $1 AND grain_key = $2 AND data IS NOT NULL",
                    &[&grain.grain_type, &grain.key],
                )
                .await?
            else {
                return Ok(None);
            };
            Ok(Some(StoredState {
                data: row.try_get(0)?,
                etag: etag_from_db(row.try_get(1)?, &self.database)?,
            }))
        }))
    }

    fn write<'a>(
        &'a self,
        grain: &'a GrainId,
        data: Vec<u8>,
        expected: Option<ETag>,
    ) -> BoxFuture<'a, Result<ETag, StorageError>> {
        Box::pin(self.bounded(async move {
            let client = self.pooled_client().await?;
            let row = match expected {
                // Inserts, or revives a tombstone; a live row fails the DO UPDATE condition.
                None => {
                    client
                        .query_opt(
                            "INSERT INTO grain_state (grain_type, grain_key, etag, data)
                             VALUES ($1, $2, 1, $3)
                             ON CONFLICT (grain_type, grain_key) DO UPDATE
                             SET etag = grain_state.etag + 1, data = EXCLUDED.data
                             WHERE grain_state.data IS NULL
                             RETURNING etag",
                            &[&grain.grain_type, &grain.key, &data],
                        )
                        .await?
                }
                Some(etag) => {
                    let etag = rows::to_db(etag.0, "etag")?;
                    client
                        .query_opt(
                            "UPDATE grain_state SET etag = etag + 1, data = $3
                             WHERE grain_type = $1 AND grain_key = $2 AND etag = $4
                               AND data IS NOT NULL
                             RETURNING etag",
                            &[&grain.grain_type, &grain.key, &data, &etag],
                        )
                        .await?
                }
            };
            let Some(row) = row else {
                // NOTE: read after the failed statement, so it may be newer than the etag that
                // failed the comparison. It only informs the caller.
                let actual = self.live_etag(&client, grain).await?;
                return Err(rows::stale(grain, expected, actual).into());
            };
            Ok(etag_from_db(row.try_get(0)?, &self.database)?)
        }))
    }

    fn clear<'a>(
        &'a self,
        grain: &'a GrainId,
        expected: Option<ETag>,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(self.bounded(async move {
            let client = self.pooled_client().await?;
            if let Some(etag) = expected {
                let etag = rows::to_db(etag.0, "etag")?;
                let cleared = client
                    .execute(
                        "UPDATE grain_state SET etag = etag + 1, data = NULL
                         WHERE grain_type = $1 AND grain_key = $2 AND etag = $3
                           AND data IS NOT NULL",
                        &[&grain.grain_type, &grain.key, &etag],
                    )
                    .await?;
                if cleared == 1 {
                    return Ok(());
                }
            }
            let actual = self.live_etag(&client, grain).await?;
            if actual != expected {
                return Err(rows::stale(grain, expected, actual).into());
            }
            Ok(())
        }))
    }
}

impl ReminderStore for PostgresStore {
    fn upsert(&self, reminder: Reminder) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(self.bounded(async move {
            let columns = ReminderColumns::new(&reminder)?;
            let client = self.pooled_client().await?;
            client
                .execute(
                    "INSERT INTO grain_reminder
                         (grain_type, grain_key, name, due_at_unix_ms, period_ms)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (grain_type, grain_key, name) DO UPDATE
                     SET due_at_unix_ms = EXCLUDED.due_at_unix_ms,
                         period_ms = EXCLUDED.period_ms,
                         lease_owner = NULL,
                         lease_until_unix_ms = NULL",
                    &[
                        &reminder.grain.grain_type,
                        &reminder.grain.key,
                        &reminder.name,
                        &columns.due_at,
                        &columns.period,
                    ],
                )
                .await?;
            Ok(())
        }))
    }

    fn delete<'a>(
        &'a self,
        grain: &'a GrainId,
        name: &'a str,
    ) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(self.bounded(async move {
            let client = self.pooled_client().await?;
            let deleted = client
                .execute(
                    "DELETE FROM grain_reminder
                     WHERE grain_type = $1 AND grain_key = $2 AND name = $3",
                    &[&grain.grain_type, &grain.key, &name],
                )
                .await?;
            Ok(deleted == 1)
        }))
    }

    fn list<'a>(
        &'a self,
        grain: &'a GrainId,
    ) -> BoxFuture<'a, Result<Vec<Reminder>, StorageError>> {
        Box::pin(self.bounded(async move {
            let client = self.pooled_client().await?;
            let rows = client
                .query(
                    "SELECT name, due_at_unix_ms, period_ms FROM grain_reminder
                     WHERE grain_type = $1 AND grain_key = $2
                     ORDER BY name",
                    &[&grain.grain_type, &grain.key],
                )
                .await?;
            let mut reminders = Vec::with_capacity(rows.len());
            for row in rows {
                reminders.push(reminder_from_db(
                    grain.clone(),
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    &self.database,
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
        Box::pin(self.bounded(async move {
            let claim = ClaimColumns::new(now_unix_ms, lease, limit.get())?;
            let client = self.pooled_client().await?;
            let rows = client
                .query(
                    "UPDATE grain_reminder AS r
                     SET lease_owner = $1, lease_until_unix_ms = $2, lease_id = r.lease_id + 1
                     FROM (
                         SELECT grain_type, grain_key, name FROM grain_reminder
                         WHERE due_at_unix_ms <= $3
                           AND (lease_until_unix_ms IS NULL OR lease_until_unix_ms <= $3)
                         ORDER BY due_at_unix_ms
                         LIMIT $4
                         FOR UPDATE SKIP LOCKED) AS due
                     WHERE r.grain_type = due.grain_type AND r.grain_key = due.grain_key
                       AND r.name = due.name
                     RETURNING r.grain_type, r.grain_key, r.name, r.due_at_unix_ms,
                               r.period_ms, r.lease_id",
                    &[&owner, &claim.lease_until, &claim.now, &claim.limit],
                )
                .await?;
            let mut leases = Vec::with_capacity(rows.len());
            for row in rows {
                let grain =
                    GrainId::new(row.try_get::<_, String>(0)?, row.try_get::<_, String>(1)?);
                let reminder = reminder_from_db(
                    grain,
                    row.try_get(2)?,
                    row.try_get(3)?,
                    row.try_get(4)?,
                    &self.database,
                )?;
                let lease_id = row.try_get(5)?;
                leases.push(lease_from_db(
                    reminder,
                    owner,
                    claim.lease_until,
                    lease_id,
                    &self.database,
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
        Box::pin(self.bounded(async move {
            let reminder = &lease.reminder;
            let lease_id = rows::to_db(lease.lease_id, "lease id")?;
            let client = self.pooled_client().await?;
            let lease_key: [&(dyn ToSql + Sync); 5] = [
                &reminder.grain.grain_type,
                &reminder.grain.key,
                &reminder.name,
                &lease.owner,
                &lease_id,
            ];
            let changed = match next_due_unix_ms {
                Some(next_due) => {
                    let next_due = rows::to_db(next_due, "reminder due time")?;
                    let mut params = lease_key.to_vec();
                    params.push(&next_due);
                    client
                        .execute(
                            "UPDATE grain_reminder
                             SET due_at_unix_ms = $6, lease_owner = NULL,
                                 lease_until_unix_ms = NULL
                             WHERE grain_type = $1 AND grain_key = $2 AND name = $3
                               AND lease_owner = $4 AND lease_id = $5",
                            &params,
                        )
                        .await?
                }
                None => {
                    client
                        .execute(
                            "DELETE FROM grain_reminder
                             WHERE grain_type = $1 AND grain_key = $2 AND name = $3
                               AND lease_owner = $4 AND lease_id = $5",
                            &lease_key,
                        )
                        .await?
                }
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
