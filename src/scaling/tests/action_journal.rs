//! The action journal in a real SQLite store: stored for later readers, bounded, fenced by etag.

use crate::scaling::action_journal::{ActionJournal, JOURNAL_CAPACITY, JournalError};
use crate::scaling::decision::{Action, ActionOutcome, Decision, DecisionId};
use crate::storage::{ProviderKind, StorageConfig, StorageProvider};

use super::decision::decision_at;

async fn store(directory: &tempfile::TempDir) -> std::sync::Arc<dyn StorageProvider> {
    let config = StorageConfig {
        provider: ProviderKind::Sqlite,
        sqlite_path: directory.path().join("journal.sqlite3"),
        ..StorageConfig::default()
    };
    crate::storage::open(&config).await.expect("open SQLite")
}

fn scale_out(id: u64) -> Decision {
    let mut decision = decision_at(id);
    decision.id = DecisionId(id);
    decision.action = Action::ScaleOut { nodes: 1 };
    decision
}

#[tokio::test]
async fn later_reader_sees_actions_and_outcomes() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = store(&directory).await;
    let mut journal = ActionJournal::read(store.as_ref()).await.expect("read");
    journal
        .record(store.as_ref(), &scale_out(1))
        .await
        .expect("record");
    let mut ended = scale_out(1);
    ended.outcome = Some(ActionOutcome::Succeeded);
    journal
        .record(store.as_ref(), &ended)
        .await
        .expect("record outcome");
    journal
        .record(store.as_ref(), &scale_out(2))
        .await
        .expect("record");

    let mut later = ActionJournal::read(store.as_ref())
        .await
        .expect("read again");
    let stored: Vec<(u64, bool)> = later
        .decisions()
        .map(|decision| (decision.id.0, decision.outcome.is_some()))
        .collect();
    assert_eq!(stored, [(1, true), (2, false)], "one entry per decision id");

    later.mark_unfinished_interrupted(7);
    let interrupted = later.decisions().last().and_then(|d| d.outcome.clone());
    assert!(
        matches!(interrupted, Some(ActionOutcome::Failed { ref error, .. }) if error.contains("epoch 7")),
        "{interrupted:?}"
    );
}

#[tokio::test]
async fn journal_keeps_newest_within_capacity() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = store(&directory).await;
    let mut journal = ActionJournal::default();
    let total = JOURNAL_CAPACITY as u64 + 5;
    for id in 1..=total {
        journal
            .record(store.as_ref(), &scale_out(id))
            .await
            .expect("record");
    }

    let read = ActionJournal::read(store.as_ref()).await.expect("read");
    let ids: Vec<u64> = read.decisions().map(|d| d.id.0).collect();
    assert_eq!(ids.len(), JOURNAL_CAPACITY);
    assert_eq!(ids.first(), Some(&6));
    assert_eq!(ids.last(), Some(&total));
}

#[tokio::test]
async fn stale_writer_is_fenced() {
    // Goal: a supervisor that lost the register cannot overwrite what its successor stored.
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = store(&directory).await;
    let mut old = ActionJournal::read(store.as_ref()).await.expect("read");
    let mut new = ActionJournal::read(store.as_ref()).await.expect("read");
    new.record(store.as_ref(), &scale_out(1_000_001))
        .await
        .expect("record");

    let result = old.record(store.as_ref(), &scale_out(1)).await;
    assert!(matches!(result, Err(JournalError::Lost)), "{result:?}");
    let read = ActionJournal::read(store.as_ref()).await.expect("read");
    let ids: Vec<u64> = read.decisions().map(|d| d.id.0).collect();
    assert_eq!(ids, [1_000_001]);
}
