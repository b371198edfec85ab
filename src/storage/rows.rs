//! Conversions between the storage types and the signed 64-bit columns of both databases.
//!
//! SQLite `INTEGER` and PostgreSQL `BIGINT` are `i64`; etags, times and counters are `u64` in
//! the API. Values above `i64::MAX` are rejected on the way in, negative values on the way out.

use std::num::NonZeroU64;
use std::time::Duration;

use super::{ETag, Reminder, ReminderLease, StorageError, StoreId};
use crate::grain::GrainId;

/// Schema version this build creates and reads; stored in `gristmill_schema`.
pub(super) const SCHEMA_VERSION: i64 = 1;

/// Converts a value for an `i64` column, rejecting values above `i64::MAX`.
pub(super) fn to_db(value: u64, what: &str) -> Result<i64, StorageError> {
    i64::try_from(value).map_err(|_| {
        StorageError::Invalid(format!(
            "{what} {value} is above {}, the largest value the database stores",
            i64::MAX
        ))
    })
}

/// Converts a stored `i64` that must not be negative, such as a time or a counter.
pub(super) fn from_db(value: i64, column: &str, database: &str) -> Result<u64, StorageError> {
    u64::try_from(value).map_err(|_| StorageError::Corrupt {
        database: database.to_owned(),
        detail: format!("negative value {value} in column {column}"),
    })
}

/// Converts a stored etag.
pub(super) fn etag_from_db(value: i64, database: &str) -> Result<ETag, StorageError> {
    from_db(value, "etag", database).map(ETag)
}

/// Returns the error for a write or clear whose expected etag did not match.
pub(super) fn stale(grain: &GrainId, expected: Option<ETag>, actual: Option<ETag>) -> StorageError {
    debug_assert_ne!(
        expected, actual,
        "a matching etag must not be reported as stale"
    );
    StorageError::StaleVersion {
        grain: grain.clone(),
        expected,
        actual,
    }
}

/// Column values of a reminder to store.
pub(super) struct ReminderColumns {
    /// `due_at_unix_ms`.
    pub due_at: i64,
    /// `period_ms`; `NULL` fires once.
    pub period: Option<i64>,
}

impl ReminderColumns {
    /// Checks and converts `reminder` for storing.
    pub fn new(reminder: &Reminder) -> Result<Self, StorageError> {
        if reminder.name.is_empty() {
            return Err(StorageError::Invalid(format!(
                "reminder of grain {} has an empty name",
                reminder.grain
            )));
        }
        Ok(Self {
            due_at: to_db(reminder.due_at_unix_ms, "reminder due time")?,
            period: reminder
                .period_ms
                .map(|period| to_db(period.get(), "reminder period"))
                .transpose()?,
        })
    }
}

/// Builds a reminder from its stored columns.
pub(super) fn reminder_from_db(
    grain: GrainId,
    name: String,
    due_at: i64,
    period: Option<i64>,
    database: &str,
) -> Result<Reminder, StorageError> {
    let period_ms = match period {
        None => None,
        Some(value) => Some(
            NonZeroU64::new(from_db(value, "period_ms", database)?).ok_or_else(|| {
                StorageError::Corrupt {
                    database: database.to_owned(),
                    detail: format!("zero period of reminder {name} of grain {grain}"),
                }
            })?,
        ),
    };
    Ok(Reminder {
        due_at_unix_ms: from_db(due_at, "due_at_unix_ms", database)?,
        grain,
        name,
        period_ms,
    })
}

/// Column values of a claim: the time that decides what is due, and the lease end.
pub(super) struct ClaimColumns {
    /// `now_unix_ms`.
    pub now: i64,
    /// `lease_until_unix_ms` of the claimed rows.
    pub lease_until: i64,
    /// Maximum number of rows to claim.
    pub limit: i64,
}

impl ClaimColumns {
    /// Checks and converts the arguments of a claim.
    pub fn new(now_unix_ms: u64, lease: Duration, limit: u32) -> Result<Self, StorageError> {
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        if lease_ms == 0 {
            return Err(StorageError::Invalid(format!(
                "reminder lease of {lease:?} is shorter than one millisecond"
            )));
        }
        let now = to_db(now_unix_ms, "claim time")?;
        let lease_until = to_db(now_unix_ms.saturating_add(lease_ms), "reminder lease end")?;
        Ok(Self {
            now,
            lease_until,
            limit: i64::from(limit),
        })
    }
}

/// Builds the lease of a claimed row.
pub(super) fn lease_from_db(
    reminder: Reminder,
    owner: &str,
    lease_until: i64,
    lease_id: i64,
    database: &str,
) -> Result<ReminderLease, StorageError> {
    Ok(ReminderLease {
        reminder,
        owner: owner.to_owned(),
        lease_until_unix_ms: from_db(lease_until, "lease_until_unix_ms", database)?,
        lease_id: from_db(lease_id, "lease_id", database)?,
    })
}

/// Returns the error for a database whose schema is newer than this build.
pub(super) fn check_schema_version(version: i64, database: &str) -> Result<(), StorageError> {
    if version <= SCHEMA_VERSION {
        return Ok(());
    }
    Err(StorageError::Corrupt {
        database: database.to_owned(),
        detail: format!(
            "schema version {version} is newer than version {SCHEMA_VERSION} of this build; \
             upgrade gristmill on this node"
        ),
    })
}

/// Parses the store id read from the `gristmill_store` table.
pub(super) fn store_id_from_db(value: &str, database: &str) -> Result<StoreId, StorageError> {
    value.parse().map_err(|error| StorageError::Corrupt {
        database: database.to_owned(),
        detail: format!("{error} in table gristmill_store"),
    })
}
