//! One storage provider test suite, run against embedded SQLite and against PostgreSQL.
//!
//! Every test opens its own database: a fresh SQLite file in a temporary directory, or a fresh
//! PostgreSQL schema named after the test. Tests that model two nodes open two providers on
//! the same database, which is what two node processes do.
//!
//! PostgreSQL tests read the server from `GRISTMILL_TEST_POSTGRES_URL`, which
//! `eval "$(bash .ci/postgres.sh)"` sets. Without it they print a skip line and pass, unless
//! `CI` is `true`, where a missing server fails them.

use std::collections::BTreeSet;
use std::num::{NonZeroU32, NonZeroU64};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gristmill::grain::GrainId;
use gristmill::storage::{
    ETag, ProviderKind, Reminder, ReminderLease, StorageConfig, StorageError, StorageProvider,
    StoredState, open,
};
use tempfile::TempDir;

const POSTGRES_URL_ENV: &str = "GRISTMILL_TEST_POSTGRES_URL";

/// A database for one test, on which the test opens one provider per simulated node.
struct Fixture {
    config: StorageConfig,
    /// Config that points at a database that cannot be reached.
    unreachable: StorageConfig,
    /// Keeps the SQLite directory until the test ends.
    _directory: Option<TempDir>,
}

impl Fixture {
    async fn open(&self) -> Arc<dyn StorageProvider> {
        open(&self.config).await.expect("open the test database")
    }
}

async fn sqlite_fixture(_test: &str) -> Option<Fixture> {
    let directory = tempfile::tempdir().expect("create a temporary directory");
    let config = StorageConfig {
        provider: ProviderKind::Sqlite,
        sqlite_path: directory.path().join("state.sqlite3"),
        ..StorageConfig::default()
    };
    let unreachable = StorageConfig {
        sqlite_path: directory.path().join("missing-directory/state.sqlite3"),
        ..config.clone()
    };
    Some(Fixture {
        config,
        unreachable,
        _directory: Some(directory),
    })
}

async fn postgres_fixture(test: &str) -> Option<Fixture> {
    let Ok(url) = std::env::var(POSTGRES_URL_ENV) else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{POSTGRES_URL_ENV} is not set but CI is true; run eval \"$(bash .ci/postgres.sh)\" \
             before the tests"
        );
        eprintln!(
            "skipping postgres::{test}: {POSTGRES_URL_ENV} is not set; run \
             eval \"$(bash .ci/postgres.sh)\" to start a loopback server"
        );
        return None;
    };
    let schema = format!("test_{test}");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("connect to {POSTGRES_URL_ENV}: {error}"));
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
        ))
        .await
        .expect("create the test schema");

    let separator = if url.contains('?') { '&' } else { '?' };
    let config = StorageConfig {
        provider: ProviderKind::Postgres,
        postgres_url: Some(format!(
            "{url}{separator}options=-csearch_path%3D{schema}&application_name={schema}"
        )),
        connect_timeout: Duration::from_secs(5),
        ..StorageConfig::default()
    };
    let unreachable = StorageConfig {
        postgres_url: Some(format!(
            "postgres://gristmill@127.0.0.1:{}/gristmill",
            closed_port()
        )),
        ..config.clone()
    };
    Some(Fixture {
        config,
        unreachable,
        _directory: None,
    })
}

/// Returns a loopback port that nothing listens on: one the OS chose for a socket now closed.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("read the bound port").port()
}

fn grain(key: &str) -> GrainId {
    GrainId::new("counter", key)
}

fn assert_stale<T: std::fmt::Debug>(
    result: Result<T, StorageError>,
    expected: Option<ETag>,
    actual: Option<ETag>,
) {
    match result {
        Err(StorageError::StaleVersion {
            expected: got_expected,
            actual: got_actual,
            ..
        }) => {
            assert_eq!(got_expected, expected, "expected etag in the error");
            assert_eq!(got_actual, actual, "actual etag in the error");
        }
        other => panic!("expected a stale version error, got {other:?}"),
    }
}

/// Writes `data` and returns the new etag; any error fails the test.
async fn write_ok(
    store: &Arc<dyn StorageProvider>,
    id: &GrainId,
    data: Vec<u8>,
    expected: Option<ETag>,
) -> ETag {
    store
        .write(id, data, expected)
        .await
        .unwrap_or_else(|error| panic!("write to {id} failed: {error}"))
}

fn state(data: &[u8], etag: u64) -> Option<StoredState> {
    Some(StoredState {
        data: data.to_vec(),
        etag: ETag(etag),
    })
}

fn reminder(key: &str, name: &str, due_at_unix_ms: u64) -> Reminder {
    Reminder {
        grain: grain(key),
        name: name.to_owned(),
        due_at_unix_ms,
        period_ms: NonZeroU64::new(60_000),
    }
}

fn limit(value: u32) -> NonZeroU32 {
    NonZeroU32::new(value).expect("limit is positive")
}

fn names(leases: &[ReminderLease]) -> Vec<String> {
    leases
        .iter()
        .map(|lease| format!("{}:{}", lease.reminder.grain.key, lease.reminder.name))
        .collect()
}

const LEASE: Duration = Duration::from_secs(1);
const T0: u64 = 1_700_000_000_000;

// ---------------------------------------------------------------------------------------------
// Grain state.

async fn read_missing_returns_none(fixture: Fixture) {
    let store = fixture.open().await;
    assert_eq!(store.read(&grain("absent")).await.unwrap(), None);
}

async fn first_write_stores_etag_one(fixture: Fixture) {
    let store = fixture.open().await;
    let etag = write_ok(&store, &grain("c1"), b"one".to_vec(), None).await;
    assert_eq!(etag, ETag(1));
    assert_eq!(store.read(&grain("c1")).await.unwrap(), state(b"one", 1));
}

async fn write_with_current_etag_advances_it(fixture: Fixture) {
    let store = fixture.open().await;
    let first = write_ok(&store, &grain("c1"), b"one".to_vec(), None).await;
    let second = write_ok(&store, &grain("c1"), b"two".to_vec(), Some(first)).await;
    assert_eq!(second, ETag(2));
    let third = write_ok(&store, &grain("c1"), Vec::new(), Some(second)).await;
    assert_eq!(third, ETag(3));
    assert_eq!(store.read(&grain("c1")).await.unwrap(), state(b"", 3));
}

async fn stale_write_is_rejected_and_changes_nothing(fixture: Fixture) {
    let store = fixture.open().await;
    let first = write_ok(&store, &grain("c1"), b"one".to_vec(), None).await;
    let second = write_ok(&store, &grain("c1"), b"two".to_vec(), Some(first)).await;

    let stale = store
        .write(&grain("c1"), b"stale".to_vec(), Some(first))
        .await;
    assert_stale(stale, Some(first), Some(second));
    let blind = store.write(&grain("c1"), b"blind".to_vec(), None).await;
    assert_stale(blind, None, Some(second));
    let future = store
        .write(&grain("c1"), b"future".to_vec(), Some(ETag(9)))
        .await;
    assert_stale(future, Some(ETag(9)), Some(second));
    let missing = store
        .write(&grain("c2"), b"missing".to_vec(), Some(first))
        .await;
    assert_stale(missing, Some(first), None);

    assert_eq!(store.read(&grain("c1")).await.unwrap(), state(b"two", 2));
    assert_eq!(store.read(&grain("c2")).await.unwrap(), None);
}

async fn concurrent_writers_have_one_winner(fixture: Fixture) {
    // Goal: two nodes that read the same etag and write at once never both succeed.
    // Method: two providers on one database race 20 rounds, first from "nothing stored",
    // then from the etag of the previous round's winner.
    let node_a = fixture.open().await;
    let node_b = fixture.open().await;
    let id = grain("contended");
    let mut expected = None;
    for round in 0..20u64 {
        let data_a = format!("a{round}").into_bytes();
        let data_b = format!("b{round}").into_bytes();
        let (result_a, result_b) = tokio::join!(
            node_a.write(&id, data_a.clone(), expected),
            node_b.write(&id, data_b.clone(), expected),
        );
        let (winner_data, etag, loser) = match (result_a, result_b) {
            (Ok(etag), Err(loser)) => (data_a, etag, loser),
            (Err(loser), Ok(etag)) => (data_b, etag, loser),
            other => panic!("round {round}: expected exactly one winner, got {other:?}"),
        };
        assert!(
            matches!(loser, StorageError::StaleVersion { .. }),
            "round {round}: loser failed with {loser}"
        );
        assert_eq!(etag, ETag(round + 1), "round {round}");
        let stored = node_a.read(&id).await.unwrap();
        assert_eq!(
            stored,
            Some(StoredState {
                data: winner_data,
                etag
            }),
            "round {round}"
        );
        expected = Some(etag);
    }
}

async fn clear_removes_state_and_keeps_counting(fixture: Fixture) {
    let store = fixture.open().await;
    let id = grain("c1");
    store.clear(&id, None).await.unwrap();
    let first = write_ok(&store, &id, b"one".to_vec(), None).await;
    assert_stale(store.clear(&id, None).await, None, Some(first));
    assert_stale(
        store.clear(&id, Some(ETag(7))).await,
        Some(ETag(7)),
        Some(first),
    );
    assert_eq!(store.read(&id).await.unwrap(), state(b"one", 1));

    store.clear(&id, Some(first)).await.unwrap();
    assert_eq!(store.read(&id).await.unwrap(), None);
    assert_stale(store.clear(&id, Some(first)).await, Some(first), None);
    store.clear(&id, None).await.unwrap();

    // An etag from before the clear never matches again, even after a new write.
    let revived = write_ok(&store, &id, b"again".to_vec(), None).await;
    assert_eq!(revived, ETag(3));
    let stale = store.write(&id, b"stale".to_vec(), Some(first)).await;
    assert_stale(stale, Some(first), Some(revived));
    assert_eq!(store.read(&id).await.unwrap(), state(b"again", 3));
}

async fn grain_types_do_not_share_state(fixture: Fixture) {
    let store = fixture.open().await;
    let counter = GrainId::new("counter", "k");
    let account = GrainId::new("account", "k");
    write_ok(&store, &counter, b"counter".to_vec(), None).await;
    assert_eq!(store.read(&account).await.unwrap(), None);
    let etag = write_ok(&store, &account, b"account".to_vec(), None).await;
    assert_eq!(etag, ETag(1));
    assert_eq!(store.read(&counter).await.unwrap(), state(b"counter", 1));
    assert_eq!(store.read(&account).await.unwrap(), state(b"account", 1));
}

async fn schema_creation_twice_is_harmless(fixture: Fixture) {
    let first = fixture.open().await;
    write_ok(&first, &grain("c1"), b"kept".to_vec(), None).await;
    first.upsert(reminder("c1", "tick", T0)).await.unwrap();
    let second = fixture.open().await;
    let third = fixture.open().await;
    assert_eq!(second.read(&grain("c1")).await.unwrap(), state(b"kept", 1));
    assert_eq!(
        third.list(&grain("c1")).await.unwrap(),
        vec![reminder("c1", "tick", T0)]
    );
}

/// Every open of one database, concurrent ones included, reads the store id that the first
/// open created, which is how nodes tell that they share a database.
async fn store_id_is_shared_by_opens(fixture: Fixture) {
    let first = fixture.open().await.store_id();
    let opens = futures::future::join_all((0..4).map(|_| fixture.open())).await;
    let reopened = fixture.open().await.store_id();

    for store in &opens {
        assert_eq!(store.store_id(), first, "store id of a concurrent open");
    }
    assert_eq!(reopened, first, "store id after reopening");
}

async fn unreachable_database_is_unavailable(fixture: Fixture) {
    let error = match open(&fixture.unreachable).await {
        Ok(_) => panic!("opening an unreachable database succeeded"),
        Err(error) => error,
    };
    assert!(
        matches!(error, StorageError::Unavailable { .. }),
        "expected unavailable, got {error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("retry"), "message names no fix: {message}");
}

// ---------------------------------------------------------------------------------------------
// Reminders.

async fn reminders_upsert_list_and_delete(fixture: Fixture) {
    let store = fixture.open().await;
    let once = Reminder {
        period_ms: None,
        ..reminder("c1", "once", T0 + 5)
    };
    store.upsert(reminder("c1", "tick", T0)).await.unwrap();
    store.upsert(once.clone()).await.unwrap();
    store.upsert(reminder("c2", "tick", T0)).await.unwrap();
    store.upsert(reminder("c1", "tick", T0 + 9)).await.unwrap();

    let listed = store.list(&grain("c1")).await.unwrap();
    assert_eq!(listed, vec![once, reminder("c1", "tick", T0 + 9)]);
    assert!(store.delete(&grain("c1"), "once").await.unwrap());
    assert!(!store.delete(&grain("c1"), "once").await.unwrap());
    assert_eq!(
        store.list(&grain("c1")).await.unwrap(),
        vec![reminder("c1", "tick", T0 + 9)]
    );
    assert_eq!(store.list(&grain("c2")).await.unwrap().len(), 1);

    let unnamed = store.upsert(reminder("c1", "", T0)).await;
    assert!(
        matches!(unnamed, Err(StorageError::Invalid(_))),
        "{unnamed:?}"
    );
}

async fn claim_returns_due_reminders_earliest_first(fixture: Fixture) {
    let store = fixture.open().await;
    store.upsert(reminder("c1", "late", T0 + 30)).await.unwrap();
    store
        .upsert(reminder("c1", "early", T0 + 10))
        .await
        .unwrap();
    store
        .upsert(reminder("c2", "middle", T0 + 20))
        .await
        .unwrap();
    store
        .upsert(reminder("c3", "future", T0 + 1_000))
        .await
        .unwrap();

    let first = store
        .claim_due(T0 + 30, "node-a", LEASE, limit(2))
        .await
        .unwrap();
    assert_eq!(names(&first), ["c1:early", "c2:middle"]);
    for lease in &first {
        assert_eq!(lease.owner, "node-a");
        assert_eq!(lease.lease_until_unix_ms, T0 + 30 + 1_000);
    }
    let rest = store
        .claim_due(T0 + 30, "node-a", LEASE, limit(10))
        .await
        .unwrap();
    assert_eq!(names(&rest), ["c1:late"]);
    let none = store
        .claim_due(T0 + 30, "node-a", LEASE, limit(10))
        .await
        .unwrap();
    assert_eq!(names(&none), Vec::<String>::new());
}

async fn concurrent_claims_never_share_a_reminder(fixture: Fixture) {
    // Goal: two nodes polling at once never fire the same tick.
    // Method: 40 due reminders, two providers claim concurrently, then a third claim runs.
    let setup = fixture.open().await;
    for index in 0..40 {
        setup
            .upsert(reminder(&format!("g{index}"), "tick", T0 + index))
            .await
            .unwrap();
    }

    let node_a = fixture.open().await;
    let node_b = fixture.open().await;
    let (claimed_a, claimed_b) = tokio::join!(
        node_a.claim_due(T0 + 100, "node-a", LEASE, limit(40)),
        node_b.claim_due(T0 + 100, "node-b", LEASE, limit(40)),
    );
    let (claimed_a, claimed_b) = (names(&claimed_a.unwrap()), names(&claimed_b.unwrap()));

    let set_a: BTreeSet<_> = claimed_a.iter().cloned().collect();
    let set_b: BTreeSet<_> = claimed_b.iter().cloned().collect();
    assert_eq!(set_a.len(), claimed_a.len(), "node-a got a reminder twice");
    assert_eq!(set_b.len(), claimed_b.len(), "node-b got a reminder twice");
    let shared: Vec<_> = set_a.intersection(&set_b).collect();
    assert!(shared.is_empty(), "both nodes claimed {shared:?}");
    assert_eq!(
        set_a.len() + set_b.len(),
        40,
        "a due reminder was claimed by neither node"
    );

    let again = setup
        .claim_due(T0 + 100, "node-c", LEASE, limit(40))
        .await
        .unwrap();
    assert_eq!(names(&again), Vec::<String>::new());
}

async fn expired_lease_moves_to_another_node(fixture: Fixture) {
    let node_a = fixture.open().await;
    let node_b = fixture.open().await;
    node_a.upsert(reminder("c1", "tick", T0)).await.unwrap();

    let lease_a = node_a
        .claim_due(T0, "node-a", LEASE, limit(1))
        .await
        .unwrap();
    assert_eq!(names(&lease_a), ["c1:tick"]);
    let before_expiry = node_b
        .claim_due(T0 + 999, "node-b", LEASE, limit(1))
        .await
        .unwrap();
    assert_eq!(names(&before_expiry), Vec::<String>::new());

    let lease_b = node_b
        .claim_due(T0 + 1_000, "node-b", LEASE, limit(1))
        .await
        .unwrap();
    assert_eq!(names(&lease_b), ["c1:tick"]);
    assert!(lease_b[0].lease_id > lease_a[0].lease_id);

    let late = node_a.complete(&lease_a[0], Some(T0 + 60_000)).await;
    assert!(
        matches!(late, Err(StorageError::LeaseLost { .. })),
        "{late:?}"
    );
    node_b
        .complete(&lease_b[0], Some(T0 + 60_000))
        .await
        .unwrap();
    assert_eq!(
        node_a.list(&grain("c1")).await.unwrap(),
        vec![reminder("c1", "tick", T0 + 60_000)]
    );

    let not_due = node_a
        .claim_due(T0 + 59_999, "node-a", LEASE, limit(1))
        .await
        .unwrap();
    assert_eq!(names(&not_due), Vec::<String>::new());
    let due_again = node_a
        .claim_due(T0 + 60_000, "node-a", LEASE, limit(1))
        .await
        .unwrap();
    assert_eq!(names(&due_again), ["c1:tick"]);
}

async fn complete_without_next_due_deletes(fixture: Fixture) {
    let store = fixture.open().await;
    store.upsert(reminder("c1", "once", T0)).await.unwrap();
    let leases = store
        .claim_due(T0, "node-a", LEASE, limit(1))
        .await
        .unwrap();
    store.complete(&leases[0], None).await.unwrap();
    assert_eq!(store.list(&grain("c1")).await.unwrap(), Vec::new());
    let again = store.complete(&leases[0], None).await;
    assert!(
        matches!(again, Err(StorageError::LeaseLost { .. })),
        "{again:?}"
    );
}

async fn upsert_voids_the_current_lease(fixture: Fixture) {
    let store = fixture.open().await;
    store.upsert(reminder("c1", "tick", T0)).await.unwrap();
    let leases = store
        .claim_due(T0, "node-a", LEASE, limit(1))
        .await
        .unwrap();
    store.upsert(reminder("c1", "tick", T0 + 5)).await.unwrap();

    let completed = store.complete(&leases[0], Some(T0 + 60_000)).await;
    assert!(
        matches!(completed, Err(StorageError::LeaseLost { .. })),
        "{completed:?}"
    );
    assert_eq!(
        store.list(&grain("c1")).await.unwrap(),
        vec![reminder("c1", "tick", T0 + 5)]
    );
    // The replaced reminder is claimable at once, though the old lease has not expired.
    let reclaimed = store
        .claim_due(T0 + 5, "node-b", LEASE, limit(1))
        .await
        .unwrap();
    assert_eq!(names(&reclaimed), ["c1:tick"]);
}

async fn claim_rejects_out_of_range_input(fixture: Fixture) {
    let store = fixture.open().await;
    let zero_lease = store
        .claim_due(T0, "node-a", Duration::ZERO, limit(1))
        .await;
    assert!(
        matches!(zero_lease, Err(StorageError::Invalid(_))),
        "{zero_lease:?}"
    );
    let far_future = store.upsert(reminder("c1", "tick", u64::MAX)).await;
    assert!(
        matches!(far_future, Err(StorageError::Invalid(_))),
        "{far_future:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The same tests for each provider.

macro_rules! provider_suite {
    ($provider:ident, $fixture:path, [$($test:ident),* $(,)?]) => {
        mod $provider {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(fixture) = $fixture(stringify!($test)).await {
                        super::$test(fixture).await;
                    }
                }
            )*
        }
    };
}

macro_rules! both_providers {
    ($($test:ident),* $(,)?) => {
        provider_suite!(sqlite, super::sqlite_fixture, [$($test),*]);
        provider_suite!(postgres, super::postgres_fixture, [$($test),*]);
    };
}

both_providers!(
    read_missing_returns_none,
    first_write_stores_etag_one,
    write_with_current_etag_advances_it,
    stale_write_is_rejected_and_changes_nothing,
    concurrent_writers_have_one_winner,
    clear_removes_state_and_keeps_counting,
    grain_types_do_not_share_state,
    schema_creation_twice_is_harmless,
    store_id_is_shared_by_opens,
    unreachable_database_is_unavailable,
    reminders_upsert_list_and_delete,
    claim_returns_due_reminders_earliest_first,
    concurrent_claims_never_share_a_reminder,
    expired_lease_moves_to_another_node,
    complete_without_next_due_deletes,
    upsert_voids_the_current_lease,
    claim_rejects_out_of_range_input,
);

// ---------------------------------------------------------------------------------------------
// Provider-specific failures.

/// Two SQLite files have different store ids, so nodes that use them do not form a cluster.
#[tokio::test]
async fn sqlite_files_have_distinct_store_ids() {
    let first = sqlite_fixture("first")
        .await
        .expect("sqlite needs no server");
    let second = sqlite_fixture("second")
        .await
        .expect("sqlite needs no server");

    let first_id = first.open().await.store_id();
    let second_id = second.open().await.store_id();

    assert_ne!(first_id, second_id);
}

/// A stored store id that is not 32 hex digits fails the open as corrupt, naming the value.
#[tokio::test]
async fn sqlite_invalid_store_id_is_corrupt() {
    let fixture = sqlite_fixture("corrupt")
        .await
        .expect("sqlite needs no server");
    drop(fixture.open().await);
    let connection = rusqlite::Connection::open(&fixture.config.sqlite_path).expect("open file");
    connection
        .execute("UPDATE gristmill_store SET id = 'not-an-id'", [])
        .expect("overwrite the store id");

    let error = match open(&fixture.config).await {
        Ok(_) => panic!("opening a database with an invalid store id succeeded"),
        Err(error) => error,
    };

    match &error {
        StorageError::Corrupt { detail, .. } => {
            assert!(detail.contains("\"not-an-id\""), "{detail}");
        }
        other => panic!("expected a corrupt database error, got {other:?}"),
    }
}

/// A write that waits past the busy timeout for another process's write lock fails as
/// unavailable and changes nothing.
#[tokio::test]
async fn sqlite_locked_file_write_is_unavailable() {
    let fixture = sqlite_fixture("locked")
        .await
        .expect("sqlite needs no server");
    let config = StorageConfig {
        sqlite_busy_timeout: Duration::from_millis(50),
        ..fixture.config.clone()
    };
    let store = open(&config).await.unwrap();
    let etag = write_ok(&store, &grain("c1"), b"one".to_vec(), None).await;

    let path: PathBuf = config.sqlite_path.clone();
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let blocked = store.write(&grain("c1"), b"two".to_vec(), Some(etag)).await;
    assert!(
        matches!(blocked, Err(StorageError::Unavailable { .. })),
        "expected unavailable, got {blocked:?}"
    );
    // WAL readers are not blocked by the writer.
    assert_eq!(store.read(&grain("c1")).await.unwrap(), state(b"one", 1));
    holder.execute_batch("ROLLBACK").unwrap();

    let retried = write_ok(&store, &grain("c1"), b"two".to_vec(), Some(etag)).await;
    assert_eq!(retried, ETag(2));
}

/// Killing the provider's server connections fails at most the requests in flight; the next
/// requests reconnect and the stored state is intact.
#[tokio::test]
async fn postgres_recovers_after_connections_are_killed() {
    let Some(fixture) = postgres_fixture("killed").await else {
        return;
    };
    let store = fixture.open().await;
    let etag = write_ok(&store, &grain("c1"), b"one".to_vec(), None).await;

    let url = std::env::var(POSTGRES_URL_ENV).unwrap();
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let killed = admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = 'test_killed'",
            &[],
        )
        .await
        .unwrap();
    assert!(killed >= 1, "no provider connection was found to kill");

    // The first request may see the dead connection; it must fail as unavailable, not hang.
    match store.write(&grain("c1"), b"two".to_vec(), Some(etag)).await {
        Ok(written) => assert_eq!(written, ETag(2)),
        Err(StorageError::Unavailable { .. }) => {
            let written = write_ok(&store, &grain("c1"), b"two".to_vec(), Some(etag)).await;
            assert_eq!(written, ETag(2));
        }
        Err(other) => panic!("expected success or unavailable, got {other}"),
    }
    assert_eq!(store.read(&grain("c1")).await.unwrap(), state(b"two", 2));
}
