//! Turns that a caller drives on its own task (an idle activation's runner) and that outlive
//! the caller: one whose call passes its deadline, and one whose caller is dropped. Each turn
//! must still complete on a task of its own, and the activation must keep its state.
//!
//! ractor keeps process-global registries, so this binary starts exactly one node.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use gristmill::grain::{
    CallError, Grain, GrainContext, GrainError, GrainRegistry, Handler, Method, Methods,
};
use gristmill::membership::NodeState;
use gristmill::runtime::{Node, NodeConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// Permits that let waiting turns finish, one permit per turn.
static RELEASE: Semaphore = Semaphore::const_new(0);

/// Turns of [`Gate`] that started to wait for [`RELEASE`].
static WAITING: AtomicU32 = AtomicU32::new(0);

/// A grain whose `pass` turn waits for a permit of [`RELEASE`] and then counts itself.
struct Gate {
    passed: u32,
}

#[derive(Serialize, Deserialize)]
struct Pass;

impl Method for Pass {
    const NAME: &'static str = "pass";
    type Response = ();
}

#[derive(Serialize, Deserialize)]
struct Passed;

impl Method for Passed {
    const NAME: &'static str = "passed";
    type Response = u32;
}

impl Grain for Gate {
    const TYPE_NAME: &'static str = "gate";

    async fn activate(_ctx: &mut GrainContext) -> Result<Self, GrainError> {
        Ok(Gate { passed: 0 })
    }

    fn register(methods: &mut Methods<Self>) {
        methods.add::<Pass>();
        methods.add::<Passed>();
    }
}

impl Handler<Pass> for Gate {
    async fn handle(&mut self, _request: Pass, _ctx: &mut GrainContext) -> Result<(), GrainError> {
        WAITING.fetch_add(1, Ordering::SeqCst);
        RELEASE
            .acquire()
            .await
            .expect("the semaphore is never closed")
            .forget();
        self.passed += 1;
        Ok(())
    }
}

impl Handler<Passed> for Gate {
    async fn handle(
        &mut self,
        _request: Passed,
        _ctx: &mut GrainContext,
    ) -> Result<u32, GrainError> {
        Ok(self.passed)
    }
}

/// Waits until `count` turns of [`Gate`] have started to wait, yielding between checks.
async fn wait_for_waiting(count: u32) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while WAITING.load(Ordering::SeqCst) < count {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the turn starts within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_outlive_their_callers() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = NodeConfig {
        node_name: "inline".into(),
        cookie: "inline-turns-test-cookie".into(),
        metrics_port: None,
        ..NodeConfig::default()
    };
    config.storage.sqlite_path = data.path().join("state.sqlite3");
    let mut grains = GrainRegistry::new();
    grains.register::<Gate>();
    let node = Node::start(config, grains).await.expect("node starts");
    let mut state = node.watch_state();
    tokio::time::timeout(
        Duration::from_secs(30),
        state.wait_for(|state| *state == NodeState::Active),
    )
    .await
    .expect("the node becomes Active")
    .expect("the state channel stays open");

    let gate = node.grain::<Gate>("g");
    assert_eq!(gate.call(Passed).await.expect("activates the gate"), 0);

    // The activation is idle, so this caller drives the turn itself until its deadline.
    let timed_out = gate
        .clone()
        .with_timeout(Duration::from_millis(200))
        .call(Pass)
        .await;
    assert!(
        matches!(
            timed_out,
            Err(CallError::DeadlineExceeded { after_ms: 200, .. })
        ),
        "a waiting turn ends its call at the deadline: {timed_out:?}"
    );
    RELEASE.add_permits(1);
    assert_eq!(
        gate.call(Passed).await.expect("the gate answers"),
        1,
        "the turn whose caller gave up completed"
    );

    // This caller is dropped while its turn waits.
    let dropped = tokio::spawn({
        let gate = gate.clone();
        async move { gate.call(Pass).await }
    });
    wait_for_waiting(2).await;
    dropped.abort();
    assert!(dropped.await.is_err_and(|error| error.is_cancelled()));
    RELEASE.add_permits(1);
    assert_eq!(
        gate.call(Passed).await.expect("the gate answers"),
        2,
        "the turn whose caller was dropped completed"
    );
    node.leave().await;
}
