//! Storage settings, their validation, and opening the configured provider.

use std::fmt;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{PostgresStore, SqliteStore, StorageError, StorageProvider};

/// Shortest accepted timeout; anything shorter fails healthy databases.
const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Longest accepted timeout; a grain call waiting longer has long missed its deadline.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest accepted PostgreSQL pool; PostgreSQL's default `max_connections` is 100.
const MAX_POSTGRES_CONNECTIONS: usize = 1024;

/// Database behind grain state and reminders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Embedded SQLite file, shared by the node processes of one machine.
    #[default]
    Sqlite,
    /// PostgreSQL server, shared by every node of a cluster.
    Postgres,
}

impl ProviderKind {
    /// Names accepted in configuration files and on the command line.
    pub const NAMES: [&'static str; 2] = ["sqlite", "postgres"];

    /// Returns the configuration name, such as `sqlite`.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Sqlite => "sqlite",
            ProviderKind::Postgres => "postgres",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ProviderKind {
    type Err = StorageError;

    fn from_str(name: &str) -> Result<Self, StorageError> {
        match name {
            "sqlite" => Ok(ProviderKind::Sqlite),
            "postgres" => Ok(ProviderKind::Postgres),
            other => Err(StorageError::Config {
                field: "provider",
                reason: format!(
                    "unknown provider `{other}`; valid providers are {}",
                    ProviderKind::NAMES.join(", ")
                ),
            }),
        }
    }
}

/// Storage settings: the database that keeps grain state and reminders, and its limits.
///
/// Durations are written as human-readable strings in configuration files, such as `"5s"` or
/// `"250ms"`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Database to use: `sqlite` or `postgres`. Default: `sqlite`.
    pub provider: ProviderKind,
    /// SQLite database file, created if missing; node processes on one machine may share it.
    /// Default: `gristmill.sqlite3` in the working directory. Used only by `sqlite`.
    pub sqlite_path: PathBuf,
    /// Time a SQLite request waits for another connection's write lock before it fails as
    /// unavailable. Default: 5 s. Range: 10 ms to 10 min. Used only by `sqlite`.
    #[serde(with = "crate::duration_text")]
    pub sqlite_busy_timeout: Duration,
    /// PostgreSQL connection string, as a URI (`postgres://user:password@host:port/db`) or as
    /// `key=value` pairs. Required by `postgres`; there is no default server.
    pub postgres_url: Option<String>,
    /// Maximum number of PostgreSQL connections the node keeps open. Default: 8. Range: 1 to
    /// 1024. Used only by `postgres`.
    pub postgres_max_connections: NonZeroUsize,
    /// Time allowed to open a database connection before the request fails as unavailable.
    /// Default: 5 s. Range: 10 ms to 10 min.
    #[serde(with = "crate::duration_text")]
    pub connect_timeout: Duration,
    /// Time allowed for one PostgreSQL request, including the wait for a pooled connection,
    /// before it fails as unavailable. Default: 10 s. Range: 10 ms to 10 min. Used only by
    /// `postgres`; SQLite requests are bounded by `sqlite_busy_timeout`.
    #[serde(with = "crate::duration_text")]
    pub request_timeout: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            provider: ProviderKind::Sqlite,
            sqlite_path: PathBuf::from("gristmill.sqlite3"),
            sqlite_busy_timeout: Duration::from_secs(5),
            postgres_url: None,
            postgres_max_connections: NonZeroUsize::new(8).expect("8 is not zero"),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

// The connection string may contain a password, so Debug shows only whether it is set.
impl fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageConfig")
            .field("provider", &self.provider)
            .field("sqlite_path", &self.sqlite_path)
            .field("sqlite_busy_timeout", &self.sqlite_busy_timeout)
            .field("postgres_url", &self.postgres_url.as_ref().map(|_| "<set>"))
            .field("postgres_max_connections", &self.postgres_max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl StorageConfig {
    /// Checks every setting that the configured provider uses; the error names the field.
    pub fn validate(&self) -> Result<(), StorageError> {
        check_timeout("connect_timeout", self.connect_timeout)?;
        match self.provider {
            ProviderKind::Sqlite => {
                if self.sqlite_path.as_os_str().is_empty() {
                    return Err(StorageError::Config {
                        field: "sqlite_path",
                        reason: "empty path; name the SQLite database file".to_owned(),
                    });
                }
                check_timeout("sqlite_busy_timeout", self.sqlite_busy_timeout)
            }
            ProviderKind::Postgres => {
                check_timeout("request_timeout", self.request_timeout)?;
                if self.postgres_max_connections.get() > MAX_POSTGRES_CONNECTIONS {
                    return Err(StorageError::Config {
                        field: "postgres_max_connections",
                        reason: format!(
                            "{} is above the maximum of {MAX_POSTGRES_CONNECTIONS}",
                            self.postgres_max_connections
                        ),
                    });
                }
                self.postgres_connection().map(|_| ())
            }
        }
    }

    /// Parses `postgres_url` into a driver config.
    pub(super) fn postgres_connection(&self) -> Result<tokio_postgres::Config, StorageError> {
        let url = self
            .postgres_url
            .as_deref()
            .ok_or_else(|| StorageError::Config {
                field: "postgres_url",
                reason: "missing; the postgres provider needs a connection string such as \
                         postgres://user:password@host:5432/database"
                    .to_owned(),
            })?;
        let connection: tokio_postgres::Config =
            url.parse().map_err(|error| StorageError::Config {
                field: "postgres_url",
                // tokio-postgres 0.7 parse errors name the invalid option, not its value, so no password
                // reaches the message.
                reason: format!("invalid connection string: {error}"),
            })?;
        if connection.get_hosts().is_empty() {
            return Err(StorageError::Config {
                field: "postgres_url",
                reason: "names no host; add one, such as postgres://user@127.0.0.1:5432/db"
                    .to_owned(),
            });
        }
        Ok(connection)
    }
}

fn check_timeout(field: &'static str, value: Duration) -> Result<(), StorageError> {
    if (MIN_TIMEOUT..=MAX_TIMEOUT).contains(&value) {
        return Ok(());
    }
    Err(StorageError::Config {
        field,
        reason: format!("{value:?} is outside the range {MIN_TIMEOUT:?} to {MAX_TIMEOUT:?}"),
    })
}

/// Validates `config`, opens its provider and creates the schema if missing.
///
/// Fails with [`StorageError::Unavailable`] if the database cannot be reached, so a node can
/// retry at startup instead of running without storage.
pub async fn open(config: &StorageConfig) -> Result<Arc<dyn StorageProvider>, StorageError> {
    config.validate()?;
    Ok(match config.provider {
        ProviderKind::Sqlite => Arc::new(SqliteStore::open(config).await?),
        ProviderKind::Postgres => Arc::new(PostgresStore::open(config).await?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(error: StorageError) -> &'static str {
        match error {
            StorageError::Config { field, .. } => field,
            other => panic!("expected a config error, got {other}"),
        }
    }

    #[test]
    fn default_config_is_valid() {
        StorageConfig::default().validate().unwrap();
    }

    #[test]
    fn unknown_provider_lists_valid_names() {
        let error = "mysql".parse::<ProviderKind>().unwrap_err().to_string();
        assert!(error.contains("`mysql`"), "{error}");
        assert!(error.contains("sqlite, postgres"), "{error}");

        let error = serde_json::from_str::<StorageConfig>(r#"{"provider": "mysql"}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("sqlite"), "{error}");
        assert!(error.contains("postgres"), "{error}");
    }

    #[test]
    fn durations_read_as_human_text() {
        let config: StorageConfig =
            serde_json::from_str(r#"{"connect_timeout": "250ms", "sqlite_busy_timeout": "2s"}"#)
                .unwrap();
        assert_eq!(config.connect_timeout, Duration::from_millis(250));
        assert_eq!(config.sqlite_busy_timeout, Duration::from_secs(2));
    }

    #[test]
    fn invalid_settings_name_their_field() {
        let postgres = StorageConfig {
            provider: ProviderKind::Postgres,
            postgres_url: Some("postgres://gristmill@127.0.0.1:5432/db".to_owned()),
            ..StorageConfig::default()
        };
        postgres.validate().unwrap();

        let cases: Vec<(StorageConfig, &str)> = vec![
            (
                StorageConfig {
                    postgres_url: None,
                    ..postgres.clone()
                },
                "postgres_url",
            ),
            (
                StorageConfig {
                    postgres_url: Some("postgres://host:notaport/db".to_owned()),
                    ..postgres.clone()
                },
                "postgres_url",
            ),
            (
                StorageConfig {
                    postgres_url: Some("dbname=gristmill".to_owned()),
                    ..postgres.clone()
                },
                "postgres_url",
            ),
            (
                StorageConfig {
                    postgres_max_connections: NonZeroUsize::new(5000).unwrap(),
                    ..postgres.clone()
                },
                "postgres_max_connections",
            ),
            (
                StorageConfig {
                    request_timeout: Duration::ZERO,
                    ..postgres.clone()
                },
                "request_timeout",
            ),
            (
                StorageConfig {
                    connect_timeout: Duration::from_secs(3600),
                    ..postgres
                },
                "connect_timeout",
            ),
            (
                StorageConfig {
                    sqlite_path: PathBuf::new(),
                    ..StorageConfig::default()
                },
                "sqlite_path",
            ),
            (
                StorageConfig {
                    sqlite_busy_timeout: Duration::from_millis(1),
                    ..StorageConfig::default()
                },
                "sqlite_busy_timeout",
            ),
        ];
        for (config, field) in cases {
            let error = config.validate().unwrap_err();
            assert_eq!(field_of(error), field, "{config:?}");
        }
    }

    #[test]
    fn debug_hides_postgres_password() {
        let config = StorageConfig {
            postgres_url: Some("postgres://user:hunter2@127.0.0.1/db".to_owned()),
            ..StorageConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
