//! Interleaved turns on one node in this test process: they run beside each other, never beside
//! an exclusive turn, let call cycles through interleaved methods complete, and a reentrant
//! type lets them pass a waiting exclusive call.
//!
//! ractor keeps process-global registries, so this binary starts exactly one node and runs
//! every scenario against it in one test, each on grains of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use gristmill::grain::{
    CallError, Grain, GrainContext, GrainError, GrainRegistry, Handler, InterleavedHandler, Method,
    Methods, SharedContext,
};
use gristmill::membership::NodeState;
use gristmill::runtime::{Node, NodeConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;
use tokio::time::Instant;

/// Deadline of every grain call the node makes that sets none, such as calls between grains.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline of the test's own calls into a call cycle: shorter than [`CALL_TIMEOUT`], so that
/// the test's call, not a call inside the cycle, is the first to time out.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(1);
/// Time a grain waits at a barrier before it gives up with the error code `not_met`.
const MEET_WITHIN: Duration = Duration::from_secs(3);
/// Time the test waits for a state it polls for.
const POLL_WITHIN: Duration = Duration::from_secs(10);

/// Two-party barriers by name, shared between grains and the test.
static BARRIERS: LazyLock<Mutex<HashMap<String, Arc<Barrier>>>> = LazyLock::new(Mutex::default);

fn barrier(name: &str) -> Arc<Barrier> {
    let mut barriers = BARRIERS.lock().expect("barrier table lock");
    Arc::clone(
        barriers
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Barrier::new(2))),
    )
}

/// Waits at the barrier `name`; fails with the code `not_met` after [`MEET_WITHIN`].
async fn meet(name: &str) -> Result<(), GrainError> {
    match tokio::time::timeout(MEET_WITHIN, barrier(name).wait()).await {
        Ok(_) => Ok(()),
        Err(_) => Err(GrainError::new(
            "not_met",
            format!("nobody else reached barrier {name}"),
        )),
    }
}

/// Turns that entered a meeting method, by grain key.
static ENTERED: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(Mutex::default);

fn entered(key: &str) -> u64 {
    let entered = ENTERED.lock().expect("entered table lock");
    entered.get(key).copied().unwrap_or(0)
}

/// Counts a turn that entered a meeting method of the grain `key`, then waits at its barrier.
async fn enter_and_meet(key: &str) -> Result<(), GrainError> {
    *ENTERED
        .lock()
        .expect("entered table lock")
        .entry(key.to_string())
        .or_default() += 1;
    meet(key).await
}

/// A grain whose meeting methods wait at the barrier named by its key.
#[derive(Default)]
struct Gate {
    /// Calls of [`Ping`] this activation served.
    pings: AtomicU64,
}

/// Waits at the barrier in an interleaved turn.
#[derive(Serialize, Deserialize)]
struct MeetShared;

/// Waits at the barrier in an exclusive turn.
#[derive(Serialize, Deserialize)]
struct MeetExclusive;

/// Returns how many pings this activation served, this one included.
#[derive(Serialize, Deserialize)]
struct Ping;

/// Panics in an interleaved turn.
#[derive(Serialize, Deserialize)]
struct Explode;

impl Method for MeetShared {
    const NAME: &'static str = "meet_shared";
    type Response = ();
}

impl Method for MeetExclusive {
    const NAME: &'static str = "meet_exclusive";
    type Response = ();
}

impl Method for Ping {
    const NAME: &'static str = "ping";
    type Response = u64;
}

impl Method for Explode {
    const NAME: &'static str = "explode";
    type Response = ();
}

impl Grain for Gate {
    const TYPE_NAME: &'static str = "gate";

    async fn activate(_ctx: &mut GrainContext) -> Result<Self, GrainError> {
        Ok(Gate::default())
    }

    fn register(methods: &mut Methods<Self>) {
        methods
            .add_interleaved::<MeetShared>()
            .add::<MeetExclusive>()
            .add_interleaved::<Ping>()
            .add_interleaved::<Explode>();
    }
}

impl InterleavedHandler<MeetShared> for Gate {
    async fn handle(&self, _request: MeetShared, ctx: &SharedContext) -> Result<(), GrainError> {
        enter_and_meet(ctx.key()).await
    }
}

impl Handler<MeetExclusive> for Gate {
    async fn handle(
        &mut self,
        _request: MeetExclusive,
        ctx: &mut GrainContext,
    ) -> Result<(), GrainError> {
        enter_and_meet(ctx.key()).await
    }
}

impl InterleavedHandler<Ping> for Gate {
    async fn handle(&self, _request: Ping, _ctx: &SharedContext) -> Result<u64, GrainError> {
        Ok(self.pings.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

impl InterleavedHandler<Explode> for Gate {
    async fn handle(&self, _request: Explode, _ctx: &SharedContext) -> Result<(), GrainError> {
        panic!("gate exploded in an interleaved turn");
    }
}

/// A grain that calls another one, which calls it back: A -> B -> A. `REENTRANT` picks the
/// type-level opt-in; the two types have different names.
struct Cycle<const REENTRANT: bool>;

/// Starts a cycle from an interleaved turn: calls `via`'s [`Relay`], which calls back.
#[derive(Serialize, Deserialize)]
struct Outer {
    via: String,
    back_exclusive: bool,
    /// Meets the test at the barrier `<key>/go` before calling out.
    wait_for_go: bool,
}

/// Starts a cycle from an exclusive turn.
#[derive(Serialize, Deserialize)]
struct OuterExclusive {
    via: String,
    back_exclusive: bool,
}

/// Calls `back`'s inner method, exclusive or interleaved.
#[derive(Serialize, Deserialize)]
struct Relay {
    back: String,
    exclusive: bool,
}

/// The method the cycle re-enters, interleaved.
#[derive(Serialize, Deserialize)]
struct InnerShared;

/// The method the cycle re-enters, exclusive.
#[derive(Serialize, Deserialize)]
struct InnerExclusive;

impl Method for Outer {
    const NAME: &'static str = "outer";
    type Response = String;
}

impl Method for OuterExclusive {
    const NAME: &'static str = "outer_exclusive";
    type Response = String;
}

impl Method for Relay {
    const NAME: &'static str = "relay";
    type Response = String;
}

impl Method for InnerShared {
    const NAME: &'static str = "inner_shared";
    type Response = String;
}

impl Method for InnerExclusive {
    const NAME: &'static str = "inner_exclusive";
    type Response = String;
}

impl<const R: bool> Grain for Cycle<R> {
    const TYPE_NAME: &'static str = if R { "cycle_reentrant" } else { "cycle" };
    const REENTRANT: bool = R;

    async fn activate(_ctx: &mut GrainContext) -> Result<Self, GrainError> {
        Ok(Cycle)
    }

    fn register(methods: &mut Methods<Self>) {
        methods
            .add_interleaved::<Outer>()
            .add::<OuterExclusive>()
            .add::<Relay>()
            .add_interleaved::<InnerShared>()
            .add::<InnerExclusive>();
    }
}

/// Calls `via`'s relay, which calls back into `key`.
async fn call_around<const R: bool>(
    ctx: &SharedContext,
    via: String,
    back_exclusive: bool,
) -> Result<String, GrainError> {
    let relay = Relay {
        back: ctx.key().to_string(),
        exclusive: back_exclusive,
    };
    ctx.grain::<Cycle<R>>(via)
        .call(relay)
        .await
        .map_err(|error| GrainError::new("relay_failed", error.to_string()))
}

impl<const R: bool> InterleavedHandler<Outer> for Cycle<R> {
    async fn handle(&self, request: Outer, ctx: &SharedContext) -> Result<String, GrainError> {
        if request.wait_for_go {
            enter_and_meet(&format!("{}/go", ctx.key())).await?;
        }
        call_around::<R>(ctx, request.via, request.back_exclusive).await
    }
}

impl<const R: bool> Handler<OuterExclusive> for Cycle<R> {
    async fn handle(
        &mut self,
        request: OuterExclusive,
        ctx: &mut GrainContext,
    ) -> Result<String, GrainError> {
        call_around::<R>(ctx, request.via, request.back_exclusive).await
    }
}

impl<const R: bool> Handler<Relay> for Cycle<R> {
    async fn handle(
        &mut self,
        request: Relay,
        ctx: &mut GrainContext,
    ) -> Result<String, GrainError> {
        let back = ctx.grain::<Cycle<R>>(request.back);
        let reply = if request.exclusive {
            back.call(InnerExclusive).await
        } else {
            back.call(InnerShared).await
        };
        reply.map_err(|error| GrainError::new("call_back_failed", error.to_string()))
    }
}

impl<const R: bool> InterleavedHandler<InnerShared> for Cycle<R> {
    async fn handle(
        &self,
        _request: InnerShared,
        _ctx: &SharedContext,
    ) -> Result<String, GrainError> {
        Ok("inner_shared".into())
    }
}

impl<const R: bool> Handler<InnerExclusive> for Cycle<R> {
    async fn handle(
        &mut self,
        _request: InnerExclusive,
        _ctx: &mut GrainContext,
    ) -> Result<String, GrainError> {
        Ok("inner_exclusive".into())
    }
}

/// One entry of the [`Ledger`] log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Enter(Kind),
    Exit(Kind),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Exclusive,
    Interleaved,
}

/// The enter and exit steps of every [`Ledger`] turn, in the order they happened.
static LEDGER_LOG: LazyLock<Mutex<Vec<Step>>> = LazyLock::new(Mutex::default);

fn log(step: Step) {
    LEDGER_LOG.lock().expect("ledger log lock").push(step);
}

/// Logs entering and leaving a turn, with awaits between, so that overlapping turns show.
async fn logged_turn(kind: Kind) {
    log(Step::Enter(kind));
    for _ in 0..3 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    log(Step::Exit(kind));
}

/// A grain with an exclusive and an interleaved method that log their turns.
struct Ledger;

#[derive(Serialize, Deserialize)]
struct Write;

#[derive(Serialize, Deserialize)]
struct Read;

impl Method for Write {
    const NAME: &'static str = "write";
    type Response = ();
}

impl Method for Read {
    const NAME: &'static str = "read";
    type Response = ();
}

impl Grain for Ledger {
    const TYPE_NAME: &'static str = "ledger";

    async fn activate(_ctx: &mut GrainContext) -> Result<Self, GrainError> {
        Ok(Ledger)
    }

    fn register(methods: &mut Methods<Self>) {
        methods.add::<Write>().add_interleaved::<Read>();
    }
}

impl Handler<Write> for Ledger {
    async fn handle(&mut self, _request: Write, _ctx: &mut GrainContext) -> Result<(), GrainError> {
        logged_turn(Kind::Exclusive).await;
        Ok(())
    }
}

impl InterleavedHandler<Read> for Ledger {
    async fn handle(&self, _request: Read, _ctx: &SharedContext) -> Result<(), GrainError> {
        logged_turn(Kind::Interleaved).await;
        Ok(())
    }
}

fn config(data: &tempfile::TempDir) -> NodeConfig {
    let storage = gristmill::storage::StorageConfig {
        sqlite_path: data.path().join("state.sqlite3"),
        ..Default::default()
    };
    NodeConfig {
        storage,
        node_name: "solo".into(),
        cookie: "reentrancy-test-cookie".into(),
        idle_after_secs: 1,
        call_timeout_ms: u64::try_from(CALL_TIMEOUT.as_millis()).expect("small"),
        ..NodeConfig::default()
    }
}

async fn wait_active(node: &Node) {
    let mut state = node.watch_state();
    let active = state.wait_for(|s| *s == NodeState::Active);
    tokio::time::timeout(POLL_WITHIN, active)
        .await
        .expect("node became Active")
        .expect("state channel open");
}

/// Polls `probe` every 10 ms until it returns true; panics naming `what` after [`POLL_WITHIN`].
async fn wait_for(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + POLL_WITHIN;
    while !probe() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Returns the queued calls of the grain `key` of type `grain_type`, if it is active.
fn mailbox_depth(node: &Node, grain_type: &str, key: &str) -> Option<u64> {
    node.local_activation_loads()
        .into_iter()
        .find(|load| load.grain.grain_type == grain_type && load.grain.key == key)
        .map(|load| load.mailbox_depth)
}

/// Returns a reference to the cycle grain `key` whose calls time out after [`CYCLE_TIMEOUT`].
fn cycle_ref<const R: bool>(node: &Node, key: &str) -> gristmill::grain::GrainRef<Cycle<R>> {
    node.grain::<Cycle<R>>(key).with_timeout(CYCLE_TIMEOUT)
}

fn is_deadline(result: &Result<String, CallError>) -> bool {
    matches!(result, Err(CallError::DeadlineExceeded { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interleaved_turns_on_one_node() {
    let mut grains = GrainRegistry::new();
    grains
        .register::<Gate>()
        .register::<Cycle<false>>()
        .register::<Cycle<true>>()
        .register::<Ledger>();
    let data = tempfile::tempdir().expect("temporary directory");
    let node = Node::start(config(&data), grains)
        .await
        .expect("node starts");
    wait_active(&node).await;

    interleaved_calls_meet_at_a_barrier(&node).await;
    exclusive_calls_never_meet(&node).await;
    cycle_through_interleaved_methods_completes(&node).await;
    cycle_through_exclusive_methods_times_out(&node).await;
    reentrant_type_passes_a_waiting_exclusive_call(&node).await;
    exclusive_turns_never_overlap(&node).await;
    interleaved_panic_deactivates_the_grain(&node).await;
    interleaved_grain_deactivates_when_idle(&node).await;
}

async fn interleaved_calls_meet_at_a_barrier(node: &Node) {
    // Both calls wait at a two-party barrier: they return only if their turns overlap.
    let gate = node.grain::<Gate>("meet-shared");
    let (first, second) = tokio::join!(gate.call(MeetShared), gate.call(MeetShared));
    assert_eq!(first, Ok(()));
    assert_eq!(second, Ok(()));
}

async fn exclusive_calls_never_meet(node: &Node) {
    // The first call enters and waits at the barrier. The second waits for the first turn
    // until its deadline passes, and the first gives up at the barrier alone.
    let key = "meet-exclusive";
    let gate = node.grain::<Gate>(key);
    let first = tokio::spawn({
        let gate = gate.clone().with_timeout(2 * MEET_WITHIN);
        async move { gate.call(MeetExclusive).await }
    });
    wait_for("the first exclusive call entered", || entered(key) == 1).await;
    let second = gate
        .clone()
        .with_timeout(Duration::from_millis(500))
        .call(MeetExclusive)
        .await;
    assert!(
        matches!(second, Err(CallError::DeadlineExceeded { .. })),
        "second exclusive call: {second:?}"
    );
    let first = first.await.expect("first call task");
    assert!(
        matches!(first, Err(CallError::Grain { ref error, .. }) if error.code == "not_met"),
        "first exclusive call: {first:?}"
    );
    assert_eq!(entered(key), 1, "the second call never entered");
}

async fn cycle_through_interleaved_methods_completes(node: &Node) {
    let outer = Outer {
        via: "b-shared".into(),
        back_exclusive: false,
        wait_for_go: false,
    };
    let reply = node.grain::<Cycle<false>>("a-shared").call(outer).await;
    assert_eq!(reply.as_deref(), Ok("inner_shared"));
}

async fn cycle_through_exclusive_methods_times_out(node: &Node) {
    // Exclusive outer, exclusive inner: the classic deadlock, bounded by the deadline.
    let started = Instant::now();
    let outer = OuterExclusive {
        via: "b-exclusive".into(),
        back_exclusive: true,
    };
    let reply = cycle_ref::<false>(node, "a-exclusive").call(outer).await;
    assert!(is_deadline(&reply), "exclusive cycle: {reply:?}");
    assert!(
        started.elapsed() < CYCLE_TIMEOUT + Duration::from_secs(1),
        "the call ended {:?} after it started",
        started.elapsed()
    );

    // Exclusive turns are never re-entered, not even by an interleaved method.
    let outer = OuterExclusive {
        via: "b-mixed".into(),
        back_exclusive: false,
    };
    let reply = cycle_ref::<false>(node, "a-mixed").call(outer).await;
    assert!(
        is_deadline(&reply),
        "exclusive outer, interleaved inner: {reply:?}"
    );

    // An interleaved turn borrows the grain shared, so an exclusive call back waits for it.
    let outer = Outer {
        via: "b-back-exclusive".into(),
        back_exclusive: true,
        wait_for_go: false,
    };
    let reply = cycle_ref::<false>(node, "a-back-exclusive")
        .call(outer)
        .await;
    assert!(
        is_deadline(&reply),
        "interleaved outer, exclusive inner: {reply:?}"
    );
}

/// Runs the cycle A -> B -> A through interleaved methods of `Cycle<R>` while an exclusive
/// call to A waits; returns the cycle's reply and the exclusive call's.
async fn cycle_with_waiting_exclusive<const R: bool>(
    node: &Node,
    key: &str,
) -> (Result<String, CallError>, Result<String, CallError>) {
    let outer = tokio::spawn({
        let a = cycle_ref::<R>(node, key);
        let request = Outer {
            via: format!("{key}-via"),
            back_exclusive: false,
            wait_for_go: true,
        };
        async move { a.call(request).await }
    });
    let go = format!("{key}/go");
    wait_for("the outer turn runs", || entered(&go) == 1).await;
    let exclusive = tokio::spawn({
        let a = cycle_ref::<R>(node, key);
        async move { a.call(InnerExclusive).await }
    });
    // The outer turn waits for the go, so the exclusive call must queue behind it.
    let grain_type = Cycle::<R>::TYPE_NAME;
    wait_for("the exclusive call is queued", || {
        mailbox_depth(node, grain_type, key) == Some(1)
    })
    .await;
    barrier(&go).wait().await;
    let outer = outer.await.expect("outer call task");
    let exclusive = exclusive.await.expect("exclusive call task");
    (outer, exclusive)
}

async fn reentrant_type_passes_a_waiting_exclusive_call(node: &Node) {
    // In arrival order, the call back queues behind the exclusive call, which waits for the
    // outer turn: every call of the cycle ends with a deadline error.
    let (outer, exclusive) = cycle_with_waiting_exclusive::<false>(node, "fifo").await;
    assert!(
        is_deadline(&outer),
        "cycle on a non-reentrant type: {outer:?}"
    );
    assert!(
        is_deadline(&exclusive),
        "exclusive call on a non-reentrant type: {exclusive:?}"
    );

    // A reentrant type lets the call back pass the waiting exclusive call.
    let (outer, exclusive) = cycle_with_waiting_exclusive::<true>(node, "reentrant").await;
    assert_eq!(
        outer.as_deref(),
        Ok("inner_shared"),
        "cycle on a reentrant type"
    );
    assert_eq!(
        exclusive.as_deref(),
        Ok("inner_exclusive"),
        "exclusive call on a reentrant type"
    );
}

async fn exclusive_turns_never_overlap(node: &Node) {
    LEDGER_LOG.lock().expect("ledger log lock").clear();
    let ledger = node.grain::<Ledger>("log");
    let calls = (0..60).map(|i| {
        let ledger = ledger.clone();
        async move {
            if i % 4 == 0 {
                ledger.call(Write).await
            } else {
                ledger.call(Read).await
            }
        }
    });
    for result in futures::future::join_all(calls).await {
        assert_eq!(result, Ok(()));
    }

    let steps = LEDGER_LOG.lock().expect("ledger log lock").clone();
    assert_eq!(steps.len(), 120, "every turn entered and left once");
    let (mut exclusive, mut interleaved, mut max_interleaved) = (0, 0, 0);
    for (index, step) in steps.iter().enumerate() {
        match step {
            Step::Enter(Kind::Exclusive) => {
                assert_eq!(
                    (exclusive, interleaved),
                    (0, 0),
                    "step {index}: an exclusive turn entered beside running turns"
                );
                exclusive += 1;
            }
            Step::Enter(Kind::Interleaved) => {
                assert_eq!(
                    exclusive, 0,
                    "step {index}: an interleaved turn entered beside an exclusive one"
                );
                interleaved += 1;
                max_interleaved = max_interleaved.max(interleaved);
            }
            Step::Exit(Kind::Exclusive) => exclusive -= 1,
            Step::Exit(Kind::Interleaved) => interleaved -= 1,
        }
    }
    assert!(
        max_interleaved >= 2,
        "interleaved turns never overlapped: at most {max_interleaved} at once"
    );
}

async fn interleaved_panic_deactivates_the_grain(node: &Node) {
    let gate = node.grain::<Gate>("fragile");
    assert_eq!(gate.call(Ping).await, Ok(1));
    assert_eq!(gate.call(Ping).await, Ok(2));
    let exploded = gate.call(Explode).await;
    assert!(
        matches!(exploded, Err(CallError::GrainPanicked { .. })),
        "{exploded:?}"
    );
    // A new activation serves the next call: its count starts again.
    assert_eq!(gate.call(Ping).await, Ok(1));
}

async fn interleaved_grain_deactivates_when_idle(node: &Node) {
    let gate = node.grain::<Gate>("idle");
    assert_eq!(gate.call(Ping).await, Ok(1));
    wait_for("the idle gate is deactivated", || {
        mailbox_depth(node, Gate::TYPE_NAME, "idle").is_none()
    })
    .await;
}
