//! Failures of storage providers, typed by what the caller can do about them.

use crate::grain::GrainId;

use super::ETag;

/// Failure of a storage request.
///
/// Only [`StorageError::Unavailable`] leaves the outcome of a write unknown; every other
/// variant means nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The stored etag of `grain` was not the expected one, so nothing changed. A retry with
    /// the same etag cannot succeed: the caller's state is stale and must be re-read.
    #[error(
        "stale write to grain {grain}: expected etag {}, stored etag is {}; nothing was \
         written, re-read the state before retrying",
        show_etag(.expected),
        show_etag(.actual)
    )]
    StaleVersion {
        /// Grain whose state was written or cleared.
        grain: GrainId,
        /// Etag the caller passed; `None` means it expected no stored state.
        expected: Option<ETag>,
        /// Etag stored when the write was rejected; `None` means no state is stored. It may
        /// already be out of date when the caller sees it.
        actual: Option<ETag>,
    },

    /// The reminder was claimed again, replaced or deleted after this lease was granted, so
    /// completing it changed nothing. A retry cannot succeed; the new holder fires it.
    #[error("lease of reminder {name} of grain {grain} was lost; another claim or update won")]
    LeaseLost {
        /// Grain of the reminder.
        grain: GrainId,
        /// Name of the reminder.
        name: String,
    },

    /// The database could not be reached or did not respond in time. A retry can help. If the
    /// connection broke during a write, the write may or may not have been applied, so re-read
    /// before retrying it.
    #[error("storage database {database} is unavailable: {reason}; {fix}")]
    Unavailable {
        /// Database that failed, such as `sqlite gristmill.sqlite3` or
        /// `postgres 127.0.0.1:5432/gristmill`; never contains a password.
        database: String,
        /// Failure reported by the database driver.
        reason: String,
        /// Action an operator can take, such as checking that the server runs.
        fix: &'static str,
    },

    /// The database holds data or a schema that this build cannot use, such as a negative
    /// etag or a schema version from a newer release. Nothing changed; a retry cannot help.
    #[error("storage database {database} is corrupt or incompatible: {detail}")]
    Corrupt {
        /// Database that failed.
        database: String,
        /// Description of the data or schema that was rejected.
        detail: String,
    },

    /// The request cannot be stored, such as a time beyond what the database holds. Nothing
    /// changed; a retry cannot help.
    #[error("invalid storage request: {0}")]
    Invalid(String),

    /// A storage setting is invalid, or the database rejected the configured credentials.
    /// Nothing changed; fix the named setting and restart.
    #[error("invalid storage setting `{field}`: {reason}")]
    Config {
        /// Name of the [`StorageConfig`](super::StorageConfig) field, such as `postgres_url`.
        field: &'static str,
        /// Reason the value is invalid, and the expected form.
        reason: String,
    },
}

fn show_etag(etag: &Option<ETag>) -> String {
    match etag {
        Some(etag) => etag.to_string(),
        None => "none".to_owned(),
    }
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<StorageError>();
};
