//! Idle activations hold no task: a call resumes them with their in-memory state, idle
//! deactivation persists them, and calls that race a runner's end are each served once. Calls
//! through a reference's cached route reach only the current activation.
//!
//! One node in the lib test binary (ractor's registries are per process), so the checks run
//! in order in one test.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::grain::{
    Grain, GrainContext, GrainError, GrainId, GrainRef, GrainRegistry, GrainTypeOptions, Handler,
    Method, Methods,
};
use crate::membership::NodeState;
use crate::runtime::{Node, NodeConfig};

/// Activations of either notebook type since the process started.
static ACTIVATIONS: AtomicU64 = AtomicU64::new(0);
/// Notes that either notebook type ran since the process started.
static NOTES_RUN: AtomicU64 = AtomicU64::new(0);
/// Notes that ran on an activation after its `on_deactivate` had started.
static LATE_NOTES: AtomicU64 = AtomicU64::new(0);

/// A grain that keeps a sum in memory only, and stores it when it deactivates. `SHORT` types
/// deactivate after the node's idle age (1 s); the other after a minute.
struct Notebook<const SHORT: bool> {
    sum: u64,
    notes: u64,
    /// Set when `on_deactivate` starts: no turn may run on this activation after it.
    deactivated: bool,
}

#[derive(Default, Serialize, Deserialize)]
struct Stored {
    sum: u64,
}

/// Adds the value to the sum; returns how many notes this activation took.
#[derive(Serialize, Deserialize)]
struct Note(u64);

/// Returns the sum.
#[derive(Serialize, Deserialize)]
struct Sum;

/// Asks for the activation to be deactivated after this turn; returns the sum.
#[derive(Serialize, Deserialize)]
struct Retire;

impl Method for Note {
    const NAME: &'static str = "note";
    type Response = u64;
}

impl Method for Sum {
    const NAME: &'static str = "sum";
    type Response = u64;
}

impl Method for Retire {
    const NAME: &'static str = "retire";
    type Response = u64;
}

impl<const SHORT: bool> Grain for Notebook<SHORT> {
    const TYPE_NAME: &'static str = if SHORT { "diary" } else { "notebook" };

    async fn activate(ctx: &mut GrainContext) -> Result<Self, GrainError> {
        ACTIVATIONS.fetch_add(1, Ordering::SeqCst);
        let stored: Stored = ctx.read_state().await?;
        Ok(Self {
            sum: stored.sum,
            notes: 0,
            deactivated: false,
        })
    }

    fn register(methods: &mut Methods<Self>) {
        methods.add::<Note>().add::<Sum>().add::<Retire>();
    }

    async fn on_deactivate(&mut self, ctx: &mut GrainContext) {
        self.deactivated = true;
        // A slow store: a new activation that read the state now would miss this write.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let stored = Stored { sum: self.sum };
        if let Err(error) = ctx.write_state(&stored).await {
            tracing::error!(%error, "notebook state not stored");
        }
    }
}

impl<const SHORT: bool> Handler<Note> for Notebook<SHORT> {
    async fn handle(&mut self, request: Note, _ctx: &mut GrainContext) -> Result<u64, GrainError> {
        NOTES_RUN.fetch_add(1, Ordering::SeqCst);
        if self.deactivated {
            LATE_NOTES.fetch_add(1, Ordering::SeqCst);
        }
        self.sum += request.0;
        self.notes += 1;
        Ok(self.notes)
    }
}

impl<const SHORT: bool> Handler<Sum> for Notebook<SHORT> {
    async fn handle(&mut self, _request: Sum, _ctx: &mut GrainContext) -> Result<u64, GrainError> {
        Ok(self.sum)
    }
}

impl<const SHORT: bool> Handler<Retire> for Notebook<SHORT> {
    async fn handle(
        &mut self,
        _request: Retire,
        ctx: &mut GrainContext,
    ) -> Result<u64, GrainError> {
        ctx.deactivate_after_turn();
        Ok(self.sum)
    }
}

type LongNotebook = Notebook<false>;
type Diary = Notebook<true>;

async fn start_node(data: &tempfile::TempDir) -> Node {
    let mut grains = GrainRegistry::new();
    grains.register_with::<LongNotebook>(GrainTypeOptions {
        idle_after: Some(Duration::from_secs(60)),
        ..GrainTypeOptions::default()
    });
    grains.register::<Diary>();
    let config = NodeConfig {
        storage: crate::storage::StorageConfig {
            sqlite_path: data.path().join("state.sqlite3"),
            ..Default::default()
        },
        node_name: "mailbox-test".into(),
        cookie: "mailbox-test-cookie".into(),
        idle_after_secs: 1,
        ..NodeConfig::default()
    };
    let node = Node::start(config, grains).await.expect("node starts");
    let mut state = node.watch_state();
    tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| *s == NodeState::Active),
    )
    .await
    .expect("node became Active")
    .expect("state channel open");
    node
}

/// Polls `condition` every millisecond until it holds; panics naming `what` after 10 s.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Returns whether `book` caches a route to the activation that the catalog lists for `grain`.
fn caches_current(node: &Node, book: &GrainRef<LongNotebook>, grain: &GrainId) -> bool {
    let cached = book.route.cached_activation();
    let current = node.inner.catalog.get(grain);
    match (cached, current) {
        (Some(cached), Some(current)) => Arc::ptr_eq(&cached.shared, &current.shared),
        _ => false,
    }
}

fn is_idle(node: &Node, grain: &GrainId) -> bool {
    node.inner
        .catalog
        .get(grain)
        .is_some_and(|handle| handle.actor.is_idle())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_activation_resume_persist_race() {
    let data = tempfile::tempdir().expect("temporary directory");
    let node = start_node(&data).await;

    // An idle activation resumes with its in-memory state, without a second activation.
    let book = node.grain::<LongNotebook>("resume");
    let id = GrainId::new(LongNotebook::TYPE_NAME, "resume");
    let before = ACTIVATIONS.load(Ordering::SeqCst);
    assert_eq!(book.call(Note(5)).await.expect("first note"), 1);
    wait_until("the activation is idle", || is_idle(&node, &id)).await;
    assert_eq!(book.call(Note(7)).await.expect("second note"), 2);
    wait_until("the activation is idle again", || is_idle(&node, &id)).await;
    assert_eq!(book.call(Sum).await.expect("sum"), 12);
    assert_eq!(ACTIVATIONS.load(Ordering::SeqCst) - before, 1);

    // Calls that race the end of the runner are each served exactly once: every note
    // returns a distinct count, and none is lost or doubled. The calls go in rounds that end
    // with nothing else queued, so a call left behind by an ending runner times out.
    let racers = 8u64;
    let rounds = 200u64;
    let book = node
        .grain::<LongNotebook>("race")
        .with_timeout(Duration::from_secs(2));
    let mut counts = Vec::new();
    for _ in 0..rounds {
        let calls: Vec<_> = (0..racers)
            .map(|_| {
                let book = book.clone();
                tokio::spawn(async move { book.call(Note(1)).await })
            })
            .collect();
        for call in calls {
            counts.push(call.await.expect("racer ends").expect("racing note"));
        }
    }
    counts.sort_unstable();
    let expected: Vec<u64> = (1..=racers * rounds).collect();
    assert_eq!(counts, expected, "each note served exactly once");
    assert_eq!(book.call(Sum).await.expect("sum"), racers * rounds);

    // An idle activation is deactivated at its idle age, stores its state, and the next call
    // activates it again from what it stored.
    let diary = node.grain::<Diary>("persist");
    let id = GrainId::new(Diary::TYPE_NAME, "persist");
    let before = ACTIVATIONS.load(Ordering::SeqCst);
    diary.call(Note(3)).await.expect("note");
    diary.call(Note(4)).await.expect("note");
    wait_until("the idle diary is deactivated", || {
        !node.inner.catalog.contains(&id)
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let stored = loop {
        let stored = node.storage().read(&id).await.expect("storage read");
        if let Some(stored) = stored.filter(|s| !s.data.is_empty()) {
            break stored;
        }
        assert!(
            Instant::now() < deadline,
            "the diary's state was not stored"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let stored: Stored = serde_json::from_slice(&stored.data).expect("stored JSON");
    assert_eq!(stored.sum, 7);
    assert_eq!(diary.call(Sum).await.expect("sum after reactivation"), 7);
    assert_eq!(ACTIVATIONS.load(Ordering::SeqCst) - before, 2);

    // A reference caches the activation that served it. Once that activation deactivates, the
    // reference's next call reaches a new activation, which it caches from then on.
    let book = node.grain::<LongNotebook>("cached");
    let id = GrainId::new(LongNotebook::TYPE_NAME, "cached");
    let before = ACTIVATIONS.load(Ordering::SeqCst);
    book.call(Note(2)).await.expect("first note");
    assert!(
        caches_current(&node, &book, &id),
        "the first call caches its activation"
    );
    let retired = book.route.cached_activation().expect("a cached activation");
    assert_eq!(book.call(Retire).await.expect("retire"), 2);
    wait_until("the retired book leaves the catalog", || {
        !node.inner.catalog.contains(&id)
    })
    .await;
    assert_eq!(book.call(Sum).await.expect("sum after retiring"), 2);
    assert_eq!(ACTIVATIONS.load(Ordering::SeqCst) - before, 2);
    assert!(
        caches_current(&node, &book, &id),
        "the next call caches the new activation"
    );
    assert!(!Arc::ptr_eq(
        &retired.shared,
        &book
            .route
            .cached_activation()
            .expect("a cached activation")
            .shared
    ));

    // Calls through cached routes that race deactivations each run exactly once, never on an
    // activation after its `on_deactivate` started, and no note is lost: a new activation reads
    // the state only after the previous one's `on_deactivate` stored it.
    let racers = 4u64;
    let notes_per_racer = 5u64;
    let rounds = 40u64;
    let book = node
        .grain::<LongNotebook>("cached-race")
        .with_timeout(Duration::from_secs(5));
    book.call(Sum).await.expect("activate");
    let runs_before = NOTES_RUN.load(Ordering::SeqCst);
    let mut callers: Vec<_> = (0..racers).map(|_| book.clone()).collect();
    for _ in 0..rounds {
        let mut calls = Vec::new();
        for caller in callers.drain(..) {
            calls.push(tokio::spawn(async move {
                for _ in 0..notes_per_racer {
                    caller.call(Note(1)).await.expect("racing note");
                }
                caller
            }));
        }
        book.call(Retire).await.expect("retire while racing");
        for call in calls {
            callers.push(call.await.expect("racer ends"));
        }
    }
    assert_eq!(
        NOTES_RUN.load(Ordering::SeqCst) - runs_before,
        racers * notes_per_racer * rounds,
        "each acknowledged note ran once"
    );
    assert_eq!(
        LATE_NOTES.load(Ordering::SeqCst),
        0,
        "no note ran after its activation's on_deactivate started"
    );
    assert_eq!(
        book.call(Sum).await.expect("sum after the race"),
        racers * notes_per_racer * rounds,
        "every acknowledged note is in the sum"
    );
}
