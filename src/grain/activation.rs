//! The local actor that runs one activation: one turn at a time, deadlines, panics, idleness.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use tokio::sync::oneshot;

use super::methods::DispatchError;
use super::registry::{GrainFactory, LiveGrain};
use super::{CallError, GrainContext, GrainId, Payload};
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
}

impl ActivationShared {
    pub fn new(grain: GrainId, activation_id: u64, epoch: u64, idle_after: Duration) -> Self {
        Self {
            worker: false,
            turns: AtomicU64::new(0),
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

    fn touch(&self) {
        let elapsed = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(elapsed, Ordering::Relaxed);
    }
}

/// One call waiting for its turn.
pub(crate) struct Turn {
    pub method: String,
    pub payload: Payload,
    pub deadline: Instant,
    pub reply: oneshot::Sender<Result<Payload, TurnError>>,
}

/// The reason a turn produced no reply payload.
pub(crate) enum TurnError {
    /// The call ran, or was rejected, with this error.
    Failed(CallError),
    /// The activation stopped before the turn started; the caller gets its request back and
    /// resolves the grain again.
    Gone(Payload),
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

/// Messages of an activation actor. Local only: activations are never advertised to peers.
#[derive(RactorMessage)]
pub(crate) enum ActivationMsg {
    /// Run one call.
    Turn(Turn),
    /// Deactivate if the activation is idle and nothing is queued.
    CheckIdle,
    /// The named timer fired.
    Timer(String),
    /// Move to another node (see `crate::migration`).
    Migrate(MigrateOut),
    /// Deactivate now, whatever is queued; queued calls fail with `ShuttingDown`.
    Stop(StopReason, Option<oneshot::Sender<()>>),
}

/// Arguments of [`ActivationActor`].
pub(crate) struct ActivationArgs {
    pub factory: Arc<dyn GrainFactory>,
    pub ctx: GrainContext,
    pub shared: Arc<ActivationShared>,
}

pub(crate) struct ActivationState {
    grain: Box<dyn LiveGrain>,
    ctx: GrainContext,
    shared: Arc<ActivationShared>,
    stopping: bool,
}

/// The actor behind one activation.
pub(crate) struct ActivationActor;

impl Actor for ActivationActor {
    type Msg = ActivationMsg;
    type State = ActivationState;
    type Arguments = ActivationArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ActivationArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let ActivationArgs {
            factory,
            mut ctx,
            shared,
        } = args;
        ctx.set_actor(myself);
        let activated = AssertUnwindSafe(factory.activate(&mut ctx))
            .catch_unwind()
            .await;
        let grain = match activated {
            Ok(Ok(grain)) => grain,
            Ok(Err(error)) => return Err(Box::new(error)),
            Err(panic) => return Err(panic_message(&panic).into()),
        };
        shared.touch();
        Ok(ActivationState {
            grain,
            ctx,
            shared,
            stopping: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ActivationMsg::Turn(turn) => {
                state.shared.pending.fetch_sub(1, Ordering::AcqRel);
                if state.stopping {
                    let _ = turn.reply.send(Err(TurnError::Gone(turn.payload)));
                    maybe_stop(&myself, state);
                    return Ok(());
                }
                run_turn(&myself, state, turn).await;
            }
            ActivationMsg::Timer(name) => {
                if !state.stopping {
                    let tick = state.grain.timer(&mut state.ctx, &name);
                    match AssertUnwindSafe(tick).catch_unwind().await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => {
                            tracing::warn!(grain = %state.shared.grain, timer = %name, %error, "timer tick failed");
                        }
                        Err(panic) => {
                            tracing::error!(grain = %state.shared.grain, timer = %name, message = %panic_message(&panic), "timer tick panicked; deactivating");
                            let node = state.ctx.node().clone();
                            node.remove_activation(&state.shared);
                            state.stopping = true;
                            state.ctx.stop_all_timers();
                            node.unregister_activation(&state.shared);
                            maybe_stop(&myself, state);
                            return Ok(());
                        }
                    }
                    if state.ctx.take_deactivate_request() {
                        state.ctx.node().remove_activation(&state.shared);
                        deactivate(&myself, state, StopReason::Requested).await;
                    }
                }
            }
            ActivationMsg::Migrate(request) => {
                if state.stopping {
                    let grain = state.shared.grain.clone();
                    let _ = request.reply.send(Err(MigrationError::Stopped { grain }));
                    return Ok(());
                }
                let MigrateOut {
                    target,
                    deadline,
                    started,
                    reply,
                } = request;
                let outcome = migrate_out(&myself, state, target, deadline, started).await;
                let _ = reply.send(outcome);
            }
            ActivationMsg::CheckIdle => {
                let idle = state.shared.idle_for(Instant::now()) >= state.shared.idle_after;
                if idle && !state.stopping && state.ctx.node().maybe_remove_idle(&state.shared) {
                    deactivate(&myself, state, StopReason::Idle).await;
                }
            }
            ActivationMsg::Stop(reason, done) => {
                if !state.stopping {
                    state.ctx.node().remove_activation(&state.shared);
                    deactivate(&myself, state, reason).await;
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        }
        Ok(())
    }
}

async fn run_turn(myself: &ActorRef<ActivationMsg>, state: &mut ActivationState, turn: Turn) {
    let grain_id = state.shared.grain.clone();
    if Instant::now() >= turn.deadline {
        // The caller has already given up; running the turn could only surprise it.
        let error = CallError::DeadlineExceeded {
            grain: grain_id,
            after_ms: 0,
        };
        let _ = turn.reply.send(Err(TurnError::Failed(error)));
        return;
    }
    let started = Instant::now();
    let audit_started = std::time::SystemTime::now();
    let dispatch = state
        .grain
        .dispatch(&mut state.ctx, &turn.method, turn.payload);
    let outcome = AssertUnwindSafe(dispatch).catch_unwind().await;
    state.shared.touch();
    let node = state.ctx.node().clone();
    let reply = match outcome {
        Ok(Ok(payload)) => Ok(payload),
        Ok(Err(error)) => Err(dispatch_error(&grain_id, &turn.method, error)),
        Err(panic) => {
            let message = panic_message(&panic);
            tracing::error!(grain = %grain_id, method = %turn.method, %message, "grain panicked; deactivating");
            Err(CallError::GrainPanicked {
                grain: grain_id.clone(),
                message,
            })
        }
    };
    let panicked = matches!(reply, Err(CallError::GrainPanicked { .. }));
    node.record_turn(started.elapsed());
    state.shared.turns.fetch_add(1, Ordering::Relaxed);
    node.audit_turn(&state.shared, audit_started, std::time::SystemTime::now());
    let _ = turn.reply.send(reply.map_err(TurnError::Failed));
    if panicked {
        // The grain's in-memory state may be inconsistent after a panic: drop it without
        // running `on_deactivate`, and let the next call activate the grain afresh.
        node.remove_activation(&state.shared);
        state.stopping = true;
        state.ctx.stop_all_timers();
        if !state.shared.worker {
            node.unregister_activation(&state.shared);
        }
        maybe_stop(myself, state);
    } else if state.ctx.take_deactivate_request() {
        node.remove_activation(&state.shared);
        deactivate(myself, state, StopReason::Requested).await;
    }
}

/// Runs the source side of the migration protocol; no turn runs while it does.
async fn migrate_out(
    myself: &ActorRef<ActivationMsg>,
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
                target: target.name,
                detail,
                kept: true,
            });
        }
    };
    let entry = node.local_entry(&state.shared);
    let failed = |detail: String, kept: bool| MigrationError::Failed {
        grain: grain.clone(),
        target: target.name.clone(),
        detail,
        kept,
    };
    match node.hand_off(&entry, &target, dehydrated, deadline).await {
        HandOff::Accepted(new_entry) => {
            leave_after_migration(myself, state);
            Ok(MigrationReport {
                grain: grain.clone(),
                from_node: node.id().name.clone(),
                to_node: target.name.clone(),
                epoch: new_entry.epoch,
                duration: started.elapsed(),
            })
        }
        HandOff::Rejected(detail) => Err(MigrationError::Rejected {
            grain: grain.clone(),
            target: target.name.clone(),
            detail,
        }),
        HandOff::Unknown(detail) => {
            if node.still_registered(&entry).await {
                Err(failed(detail, true))
            } else {
                tracing::warn!(grain = %grain, target = %target.name, %detail, "migration outcome unknown and the directory moved on; dropping the source activation");
                leave_after_migration(myself, state);
                Err(failed(detail, false))
            }
        }
    }
}

/// Drops the source activation after a hand-off: no `on_deactivate`, no unregistration (the
/// directory names the target now), and queued calls go back to their callers to retry.
fn leave_after_migration(myself: &ActorRef<ActivationMsg>, state: &mut ActivationState) {
    let node = state.ctx.node().clone();
    node.remove_activation(&state.shared);
    state.stopping = true;
    state.ctx.stop_all_timers();
    maybe_stop(myself, state);
}

async fn deactivate(
    myself: &ActorRef<ActivationMsg>,
    state: &mut ActivationState,
    reason: StopReason,
) {
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
    maybe_stop(myself, state);
}

/// Stops the actor once no sent message waits in its mailbox.
///
/// The activation has already left the catalog, so no new message can arrive; each queued
/// turn is handed back to its caller as [`TurnError::Gone`] before the actor stops, so that no
/// caller waits for its deadline.
fn maybe_stop(myself: &ActorRef<ActivationMsg>, state: &mut ActivationState) {
    if state.shared.pending.load(Ordering::Acquire) == 0 {
        myself.stop(None);
    }
}

fn dispatch_error(grain: &GrainId, method: &str, error: DispatchError) -> CallError {
    match error {
        DispatchError::UnknownMethod => CallError::UnknownMethod {
            grain_type: grain.grain_type.clone(),
            method: method.to_string(),
            known: String::new(),
        },
        DispatchError::Decode(detail) => CallError::InvalidPayload {
            grain_type: grain.grain_type.clone(),
            method: method.to_string(),
            detail,
        },
        DispatchError::Encode(detail) => {
            CallError::Internal(format!("cannot encode reply of {grain}.{method}: {detail}"))
        }
        DispatchError::Grain(error) => CallError::Grain {
            grain: grain.clone(),
            error,
        },
    }
}

pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-text panic payload".to_string()
    }
}
