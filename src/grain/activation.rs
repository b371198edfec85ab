//! How one activation handles its messages: exclusive and interleaved turns, deadlines,
//! panics, idleness. Its mailbox (`super::mailbox`) runs the handler one message at a time.
//!
//! # Turns
//!
//! An exclusive turn ([`Handler`](super::Handler)), a timer tick, migration and deactivation
//! each have the grain to themselves: the handler runs them inline, so the activation takes no
//! other message until they end. An interleaved turn
//! ([`InterleavedHandler`](super::InterleavedHandler)) is spawned as a task that holds a read
//! guard on the grain, and the activation goes on taking messages, so interleaved turns run
//! beside each other. The task reports its end with [`ActivationMsg::InterleavedEnded`].
//!
//! Work that needs the grain to itself while interleaved turns run waits in the activation's
//! own queue, in arrival order, until the count of running interleaved turns drops to zero.
//! Interleaved turns that arrive behind it wait too, unless the type is
//! [reentrant](super::Grain::REENTRANT) and the waiting work is a turn or timer tick. The
//! read-write lock around the grain is never contended, because the activation never runs
//! exclusive work while an interleaved turn runs. The lock is how the borrow checker accepts
//! the sharing.
//!
//! # Why migration and removal stay fenced
//!
//! 1. Migration and deactivation are barriers in the queue: they start only once no
//!    interleaved turn runs, and nothing queued after them starts before them.
//! 2. While they run, the activation is busy, so no turn of any kind starts.
//! 3. The mailbox stops, and an activation dropped after a panic leaves the directory, only
//!    when no interleaved turn runs. So no turn of this activation runs once a migration
//!    hands the grain off or a new activation may be registered.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::oneshot;

use super::live::LiveGrain;
pub(crate) use super::mailbox::{ActivationRef, Runner};
use super::registry::GrainFactory;
pub(crate) use super::turn::{Turn, TurnError, TurnOutcome, TurnReceiver, TurnReply};
use super::turn::{
    audit_start, count_turn, panic_message, reject_late, run_dispatch, run_uncounted,
};
use super::{CallError, GrainContext, GrainId};
use crate::migration::{MigrationError, MigrationReport};
use crate::runtime::HandOff;

/// State of an activation that the node reads without messaging it.
#[derive(Debug)]
pub(crate) struct ActivationShared {
    pub grain: GrainId,
    pub activation_id: u64,
    pub epoch: u64,
    /// Messages sent to the activation and not yet taken from its mailbox.
    pub pending: AtomicU64,
    /// Milliseconds since `created` at which the last turn ended.
    pub last_active_ms: AtomicU64,
    pub created: Instant,
    pub idle_after: Duration,
    /// A stateless worker activation: one of several per grain, with no directory entry.
    pub worker: bool,
    /// Turns run since the rebalancer last read this count.
    pub turns: AtomicU64,
    /// True while the activation hands itself off to another node. The target's
    /// compare-and-set replaces its directory entry, so a conflict with it is no duplicate.
    pub migrating: AtomicBool,
}

impl ActivationShared {
    pub fn new(grain: GrainId, activation_id: u64, epoch: u64, idle_after: Duration) -> Self {
        Self {
            worker: false,
            turns: AtomicU64::new(0),
            migrating: AtomicBool::new(false),
            grain,
            activation_id,
            epoch,
            pending: AtomicU64::new(0),
            last_active_ms: AtomicU64::new(0),
            created: Instant::now(),
            idle_after,
        }
    }

    /// Returns how long the activation has been idle at `now`.
    pub fn idle_for(&self, now: Instant) -> Duration {
        let last =
            self.created + Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }

    pub(super) fn touch(&self) {
        self.touch_at(Instant::now());
    }

    /// Records `now` as the activation's last activity.
    pub(super) fn touch_at(&self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.created).as_millis();
        self.last_active_ms.store(
            u64::try_from(elapsed).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// A request to move this activation to another node.
pub(crate) struct MigrateOut {
    pub target: crate::membership::NodeId,
    pub deadline: Instant,
    pub started: Instant,
    pub reply: oneshot::Sender<Result<MigrationReport, MigrationError>>,
}

/// The reason an activation stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// Idle longer than its idle age.
    Idle,
    /// The node is shutting down or draining.
    Shutdown,
    /// The node was declared down by the cluster; its activations are void.
    DeclaredDown,
    /// Lost a directory race: another activation of the grain is registered.
    Superseded,
    /// The grain asked for it, or its state write lost to a newer activation.
    Requested,
}

/// Messages of an activation's mailbox. Local only: activations are never advertised to peers.
pub(crate) enum ActivationMsg {
    /// Run one call.
    Turn(Turn),
    /// Deactivate if the activation is idle and nothing is queued.
    CheckIdle,
    /// The named timer fired.
    Timer(String),
    /// Move to another node (see `crate::migration`).
    Migrate(MigrateOut),
    /// Deactivate once running interleaved turns end, whatever is queued. Queued calls go back
    /// to their callers, who resolve the grain again.
    Stop(StopReason, Option<oneshot::Sender<()>>),
    /// An interleaved turn ended (sent by its task).
    InterleavedEnded,
}

/// The state of one activation, kept in its mailbox while it is idle and owned by the runner
/// task while it handles messages.
pub(crate) struct ActivationState {
    grain: Box<dyn LiveGrain>,
    ctx: GrainContext,
    shared: Arc<ActivationShared>,
    stopping: bool,
    /// Interleaved turns spawned and not yet reported ended.
    running_interleaved: usize,
    /// Work taken from the mailbox that waits for running interleaved turns to end. Turns in
    /// it still count in `shared.pending`, so the mailbox depth includes them.
    queued: VecDeque<ActivationMsg>,
    /// Remove the directory entry once the last running interleaved turn has ended.
    unregister_when_idle: bool,
}

/// The access that queued work needs to the grain.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// An interleaved turn: starts beside running ones.
    Interleaved,
    /// An exclusive turn or a timer tick: starts once no interleaved turn runs.
    Exclusive,
    /// Migration or deactivation: like `Exclusive`, and nothing queued behind it overtakes it.
    Barrier,
}

/// Activates a grain: runs its `activate` with a context whose timers send to the returned
/// mailbox, and hands the mailbox the activation's state. Nothing of the activation remains if
/// it fails, and the error describes the failure.
pub(crate) async fn start(
    factory: &dyn GrainFactory,
    mut ctx: GrainContext,
    shared: Arc<ActivationShared>,
) -> Result<ActivationRef, String> {
    let mailbox = ActivationRef::starting();
    ctx.set_actor(mailbox.downgrade());
    let activated = AssertUnwindSafe(factory.activate(&mut ctx))
        .catch_unwind()
        .await;
    let grain = match activated {
        Ok(Ok(grain)) => grain,
        Ok(Err(error)) => {
            mailbox.stop();
            return Err(error.to_string());
        }
        Err(panic) => {
            mailbox.stop();
            return Err(format!("activate panicked: {}", panic_message(&panic)));
        }
    };
    shared.touch();
    mailbox.start(ActivationState {
        grain,
        ctx,
        shared,
        stopping: false,
        running_interleaved: 0,
        queued: VecDeque::new(),
        unregister_when_idle: false,
    });
    Ok(mailbox)
}

impl ActivationState {
    pub(super) fn grain_id(&self) -> &GrainId {
        &self.shared.grain
    }

    /// Drops the activation from the catalog after its runner panicked outside a turn. The
    /// directory entry stays until a caller that reaches this node gets `NotHere` and removes
    /// it.
    // NOTE: an interleaved turn of this activation may still run when that happens, so a
    // second activation could overlap it. Grain code panics inside turns are caught earlier;
    // only a bug in the runtime's own handling gets here.
    pub(super) fn abandon_after_panic(&mut self) {
        self.stopping = true;
        self.ctx.stop_all_timers();
        self.ctx.node().remove_activation(&self.shared);
    }
}

/// Handles one message of the activation's mailbox; the mailbox's runner calls it, one message
/// at a time.
pub(super) async fn handle_message(
    myself: &ActivationRef,
    message: ActivationMsg,
    state: &mut ActivationState,
) {
    let arrived = match message {
        ActivationMsg::InterleavedEnded => {
            debug_assert!(
                state.running_interleaved > 0,
                "an interleaved turn ended that never started"
            );
            state.running_interleaved = state.running_interleaved.saturating_sub(1);
            if !state.stopping && state.ctx.take_deactivate_request() {
                // Deactivate before anything queued, once the other running turns end.
                state.ctx.node().remove_activation(&state.shared);
                let stop = ActivationMsg::Stop(StopReason::Requested, None);
                state.queued.push_front(stop);
            }
            None
        }
        ActivationMsg::CheckIdle => {
            let idle = state.shared.idle_for(Instant::now()) >= state.shared.idle_after;
            let quiet = state.running_interleaved == 0 && state.queued.is_empty();
            if idle && quiet && !state.stopping {
                let fence = fence_unless_worker(state.ctx.node(), &state.shared).await;
                if state.ctx.node().maybe_remove_idle(&state.shared) {
                    Box::pin(deactivate(state, StopReason::Idle)).await;
                }
                drop(fence);
            }
            None
        }
        other => Some(other),
    };
    if myself.is_poisoned() {
        become_abandoned(state);
    }
    if let Some(work) = arrived {
        // Most messages find nothing queued and start at once, without a queue buffer.
        if state.queued.is_empty() && may_start_alone(state, &work) {
            run_queued(myself, state, work).await;
        } else {
            state.queued.push_back(work);
        }
    }
    while let Some(index) = next_runnable(state) {
        let work = state.queued.remove(index).expect("index within the queue");
        run_queued(myself, state, work).await;
    }
    if state.queued.is_empty() && state.queued.capacity() > 0 {
        // An idle activation keeps no buffer.
        state.queued = VecDeque::new();
    }
    if state.stopping {
        maybe_stop(myself, state);
    }
}

/// Returns the position of the queued work that may start now, if any.
///
/// With nothing running, that is the head of the queue. While interleaved turns run, only an
/// interleaved turn may start beside them, in arrival order. A reentrant type lets it pass
/// exclusive work that waits. Nothing passes a barrier.
fn next_runnable(state: &ActivationState) -> Option<usize> {
    if state.stopping || state.running_interleaved == 0 {
        return (!state.queued.is_empty()).then_some(0);
    }
    let reentrant = state.grain.is_reentrant();
    for (index, work) in state.queued.iter().enumerate() {
        match access_of(state, work) {
            Access::Interleaved => return Some(index),
            Access::Exclusive if reentrant => continue,
            Access::Exclusive | Access::Barrier => return None,
        }
    }
    None
}

/// Returns whether `work` may start now when nothing else is queued: the case of
/// [`next_runnable`] with a queue of one.
fn may_start_alone(state: &ActivationState, work: &ActivationMsg) -> bool {
    state.stopping
        || state.running_interleaved == 0
        || access_of(state, work) == Access::Interleaved
}

fn access_of(state: &ActivationState, work: &ActivationMsg) -> Access {
    match work {
        ActivationMsg::Turn(turn) if state.grain.is_interleaved(turn.method) => Access::Interleaved,
        ActivationMsg::Turn(_) | ActivationMsg::Timer(_) => Access::Exclusive,
        _ => Access::Barrier,
    }
}

/// Runs one piece of queued work, or rejects it if the activation is stopping.
async fn run_queued(myself: &ActivationRef, state: &mut ActivationState, work: ActivationMsg) {
    match work {
        ActivationMsg::Turn(turn) => {
            state.shared.pending.fetch_sub(1, Ordering::AcqRel);
            // A node declared down may already have its grains running elsewhere, so its
            // activations run no turn from the moment it learns that, even before they stop.
            // A node that may be declared down soon (its lease ended) or that may not have
            // read the news yet (its membership agent lags) holds the turn until it knows.
            // The one clock reading at the start of the turn serves the fence, the deadline
            // check and the turn's duration. A turn that went straight to this runner, driven by
            // its caller, reuses the caller's reading from a moment ago.
            let may_start_at = if state.stopping {
                None
            } else {
                let node = state.ctx.node();
                let now = turn.sent_at.unwrap_or_else(Instant::now);
                match node.may_start_turn_at(now) {
                    Some(may_start) => may_start.then_some(now),
                    // Boxed: the wait is rare, and its timer would enlarge every runner's future.
                    None => Box::pin(node.await_turn_fence(turn.deadline, now)).await,
                }
            };
            if state.stopping || state.ctx.node().is_declared_down() {
                turn.reply.send(Err(TurnError::Gone(turn.payload)));
            } else if let Some(now) = may_start_at {
                if state.grain.is_interleaved(turn.method) {
                    start_interleaved(myself, state, turn, now);
                } else {
                    run_turn(state, turn, now).await;
                }
            } else {
                let error = CallError::DeadlineExceeded {
                    grain: state.shared.grain.clone(),
                    after_ms: 0,
                };
                turn.reply.send(Err(TurnError::Failed(error)));
            }
        }
        ActivationMsg::Timer(name) => {
            let node = state.ctx.node();
            // A tick that falls due behind the membership fence is skipped, not delayed.
            if !state.stopping && node.may_start_turns() && !node.is_declared_down() {
                run_timer(state, &name).await;
            }
        }
        ActivationMsg::Migrate(request) => {
            let MigrateOut {
                target,
                deadline,
                started,
                reply,
            } = request;
            let outcome = if state.stopping {
                let grain = state.shared.grain.clone();
                Err(MigrationError::Stopped { grain })
            } else if Instant::now() >= deadline {
                Err(MigrationError::Failed {
                    grain: state.shared.grain.clone(),
                    target: target.name.to_string(),
                    detail: "the deadline passed while running turns ended".into(),
                    kept: true,
                })
            } else {
                // Boxed: a rare path whose future would otherwise enlarge every runner task.
                Box::pin(migrate_out(state, target, deadline, started)).await
            };
            let _ = reply.send(outcome);
        }
        ActivationMsg::Stop(reason, done) => {
            if !state.stopping {
                state.ctx.node().remove_activation(&state.shared);
                Box::pin(deactivate(state, reason)).await;
            }
            if let Some(done) = done {
                let _ = done.send(());
            }
        }
        ActivationMsg::CheckIdle | ActivationMsg::InterleavedEnded => {
            debug_assert!(false, "handled without queueing");
        }
    }
}

async fn run_timer(state: &mut ActivationState, name: &str) {
    let tick = state.grain.timer(&mut state.ctx, name);
    match AssertUnwindSafe(tick).catch_unwind().await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(grain = %state.shared.grain, timer = %name, %error, "timer tick failed");
        }
        Err(panic) => {
            tracing::error!(grain = %state.shared.grain, timer = %name, message = %panic_message(&panic), "timer tick panicked; deactivating");
            become_abandoned(state);
            return;
        }
    }
    if state.ctx.take_deactivate_request() {
        state.ctx.node().remove_activation(&state.shared);
        Box::pin(deactivate(state, StopReason::Requested)).await;
    }
}

/// Runs one exclusive turn that may start at `now`.
async fn run_turn(state: &mut ActivationState, turn: Turn, now: Instant) {
    if let Some(turn) = reject_late(&state.shared.grain, turn, now) {
        let audit_started = audit_start(state.ctx.node());
        // The dispatch borrows the context, which contains the node, so the turn is counted
        // after the dispatch ends. A copy of the node would cost two atomic operations per turn.
        let dispatch = state
            .grain
            .dispatch(&mut state.ctx, turn.method, turn.payload);
        let (reply, finished) = run_uncounted(&state.shared, turn.method, dispatch).await;
        count_turn(
            state.ctx.node(),
            &state.shared,
            now,
            finished,
            audit_started,
        );
        let panicked = matches!(reply, Err(CallError::GrainPanicked { .. }));
        turn.reply
            .send_ran(reply.map_err(TurnError::Failed), finished);
        if panicked {
            become_abandoned(state);
        } else if state.ctx.take_deactivate_request() {
            let fence = Box::pin(fence_unless_worker(state.ctx.node(), &state.shared)).await;
            state.ctx.node().remove_activation(&state.shared);
            Box::pin(deactivate(state, StopReason::Requested)).await;
            drop(fence);
        }
    }
}

/// Spawns an interleaved turn, which reports its end to the activation with
/// [`ActivationMsg::InterleavedEnded`].
fn start_interleaved(
    myself: &ActivationRef,
    state: &mut ActivationState,
    turn: Turn,
    now: Instant,
) {
    let Some(turn) = reject_late(&state.shared.grain, turn, now) else {
        return;
    };
    let Turn {
        method,
        payload,
        reply,
        ..
    } = turn;
    let dispatch = state
        .grain
        .dispatch_interleaved(state.ctx.share(), method, payload);
    state.running_interleaved += 1;
    let node = state.ctx.node().clone();
    let shared = Arc::clone(&state.shared);
    let actor = myself.clone();
    tokio::spawn(async move {
        let outcome = run_dispatch(&node, &shared, method, Instant::now(), dispatch).await;
        if matches!(outcome, Err(CallError::GrainPanicked { .. })) {
            // Leave the catalog before replying, so that a caller who retries at once does
            // not reach this activation again.
            actor.poison();
            node.remove_activation(&shared);
        }
        reply.send(outcome.map_err(TurnError::Failed));
        // The mailbox waits for this message before it stops, so the cast reaches it.
        let _ = actor.cast(ActivationMsg::InterleavedEnded);
    });
}

/// Drops the activation after a panic without running `on_deactivate`, because the grain's
/// in-memory state may be inconsistent; the next call activates the grain afresh. Running
/// interleaved turns finish first, and the directory entry goes only after them, so that no
/// new activation runs beside them.
fn become_abandoned(state: &mut ActivationState) {
    if state.stopping {
        return;
    }
    state.ctx.node().remove_activation(&state.shared);
    state.stopping = true;
    state.ctx.stop_all_timers();
    state.unregister_when_idle = !state.shared.worker;
}

/// Runs the source side of the migration protocol; no turn runs while it does.
async fn migrate_out(
    state: &mut ActivationState,
    target: crate::membership::NodeId,
    deadline: Instant,
    started: Instant,
) -> Result<MigrationReport, MigrationError> {
    let grain = state.shared.grain.clone();
    let node = state.ctx.node().clone();
    let dehydrated = match AssertUnwindSafe(state.grain.dehydrate(&mut state.ctx))
        .catch_unwind()
        .await
    {
        Ok(dehydrated) => dehydrated,
        Err(panic) => {
            let detail = format!("dehydrate panicked: {}", panic_message(&panic));
            return Err(MigrationError::Failed {
                grain,
                target: target.name.to_string(),
                detail,
                kept: true,
            });
        }
    };
    let entry = node.local_entry(&state.shared);
    state.shared.migrating.store(true, Ordering::Relaxed);
    let outcome = node.hand_off(&entry, &target, dehydrated, deadline).await;
    if !matches!(outcome, HandOff::Accepted(_)) {
        // The source keeps (or gives up) the grain itself; the repair may see it again.
        state.shared.migrating.store(false, Ordering::Relaxed);
    }
    let failed = |detail: String, kept: bool| MigrationError::Failed {
        grain: grain.clone(),
        target: target.name.to_string(),
        detail,
        kept,
    };
    match outcome {
        HandOff::Accepted(new_entry) => {
            leave_after_migration(state);
            Ok(MigrationReport {
                grain: grain.clone(),
                from_node: node.id().name.to_string(),
                to_node: target.name.to_string(),
                epoch: new_entry.epoch,
                duration: started.elapsed(),
            })
        }
        HandOff::Expired => Err(MigrationError::TimedOut {
            grain: grain.clone(),
        }),
        HandOff::Rejected(detail) => Err(MigrationError::Rejected {
            grain: grain.clone(),
            target: target.name.to_string(),
            detail,
        }),
        HandOff::Unknown(detail) => {
            if node.still_registered(&entry).await {
                Err(failed(detail, true))
            } else {
                tracing::warn!(grain = %grain, target = %target.name, %detail, "migration outcome unknown and the directory moved on; dropping the source activation");
                leave_after_migration(state);
                Err(failed(detail, false))
            }
        }
    }
}

/// Drops the source activation after a hand-off: no `on_deactivate`, no unregistration (the
/// directory names the target now), and queued calls go back to their callers to retry.
fn leave_after_migration(state: &mut ActivationState) {
    let node = state.ctx.node().clone();
    node.remove_activation(&state.shared);
    state.stopping = true;
    state.ctx.stop_all_timers();
}

/// Fences a deactivation that is about to start (see `Node::fence_deactivation`). Stateless
/// workers need no fence: they have no directory entry and no stored state of their own.
async fn fence_unless_worker(
    node: &crate::runtime::Node,
    shared: &ActivationShared,
) -> Option<crate::runtime::DeactivationFence> {
    if shared.worker {
        return None;
    }
    Some(node.fence_deactivation(&shared.grain).await)
}

async fn deactivate(state: &mut ActivationState, reason: StopReason) {
    state.stopping = true;
    state.ctx.stop_all_timers();
    tracing::debug!(grain = %state.shared.grain, activation = state.shared.activation_id, ?reason, "deactivating");
    if reason != StopReason::DeclaredDown {
        let hook = state.grain.deactivate(&mut state.ctx);
        if let Err(panic) = AssertUnwindSafe(hook).catch_unwind().await {
            tracing::error!(grain = %state.shared.grain, message = %panic_message(&panic), "on_deactivate panicked");
        }
    }
    if reason != StopReason::Superseded
        && reason != StopReason::DeclaredDown
        && !state.shared.worker
    {
        state.ctx.node().unregister_activation(&state.shared);
    }
}

/// Stops the mailbox once no interleaved turn runs and no sent turn waits in it.
///
/// The activation has already left the catalog, so no new turn can arrive. Each queued turn
/// goes back to its caller as [`TurnError::Gone`] before the mailbox stops, so that no caller
/// waits for its deadline. An abandoned activation leaves the directory here, after its last
/// running turn.
fn maybe_stop(myself: &ActivationRef, state: &mut ActivationState) {
    if state.running_interleaved > 0 {
        return;
    }
    if std::mem::take(&mut state.unregister_when_idle) {
        state.ctx.node().unregister_activation(&state.shared);
    }
    if state.shared.pending.load(Ordering::Acquire) == 0 {
        myself.stop();
    }
}
