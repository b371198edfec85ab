//! One turn of an activation: the call waiting for it, and running it with its deadline, panic
//! catching, counting and audit.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use futures::FutureExt;
use tokio::sync::oneshot;

use super::activation::ActivationShared;
use super::methods::{DispatchError, MethodId};
use super::{CallError, GrainId, Payload};
use crate::runtime::Node;

/// One call waiting for its turn.
pub(crate) struct Turn {
    pub method: MethodId,
    pub payload: Payload,
    pub deadline: Instant,
    /// The caller's clock reading when it sent the turn, set only by a caller that drives an
    /// idle activation's runner itself. The turn then starts without reading the clock again.
    /// The mailbox clears it when the turn has to wait in the queue.
    pub sent_at: Option<Instant>,
    pub reply: TurnReply,
}

/// The destination of a turn's outcome: the caller that waits for it, or nothing for a one-way
/// message, which then costs no channel.
pub(crate) struct TurnReply(Option<oneshot::Sender<TurnOutcome>>);

/// The receiver on which a caller waits for its turn's outcome.
pub(crate) type TurnReceiver = oneshot::Receiver<TurnOutcome>;

/// The message that the caller of a turn receives.
pub(crate) struct TurnOutcome {
    pub result: Result<Payload, TurnError>,
    /// The turn's own clock reading at its end, or `None` if the turn did not run.
    pub ended: Option<Instant>,
}

impl TurnReply {
    /// Returns a reply to a caller, and the receiver on which it waits.
    pub fn channel() -> (Self, TurnReceiver) {
        let (sender, receiver) = oneshot::channel();
        (Self(Some(sender)), receiver)
    }

    /// Returns the reply of a one-way message: the outcome is dropped.
    pub fn none() -> Self {
        Self(None)
    }

    /// Sends the result of a turn that did not run to the caller, if one waits.
    pub fn send(self, result: Result<Payload, TurnError>) {
        self.send_outcome(TurnOutcome {
            result,
            ended: None,
        });
    }

    /// Sends the result of a turn that ran until `ended` to the caller, if one waits.
    pub fn send_ran(self, result: Result<Payload, TurnError>, ended: Instant) {
        self.send_outcome(TurnOutcome {
            result,
            ended: Some(ended),
        });
    }

    fn send_outcome(self, outcome: TurnOutcome) {
        if let Some(sender) = self.0 {
            // A caller that gave up has dropped its receiver, and nothing else waits.
            let _ = sender.send(outcome);
        }
    }
}

/// The reason a turn produced no reply payload.
pub(crate) enum TurnError {
    /// The call ran, or was rejected, with this error.
    Failed(CallError),
    /// The activation stopped before the turn started; the caller gets its request back and
    /// resolves the grain again.
    Gone(Payload),
}

/// Replies with a deadline error to a turn whose caller has already given up by `now`, or
/// returns the turn to run.
pub(super) fn reject_late(grain: &GrainId, turn: Turn, now: Instant) -> Option<Turn> {
    if now < turn.deadline {
        return Some(turn);
    }
    // Running the turn could only surprise the caller.
    let error = CallError::DeadlineExceeded {
        grain: grain.clone(),
        after_ms: 0,
    };
    turn.reply.send(Err(TurnError::Failed(error)));
    None
}

/// Runs one dispatched turn that started at `started`, catching a panic, and counts and
/// audits it.
pub(super) async fn run_dispatch(
    node: &Node,
    shared: &ActivationShared,
    method: MethodId,
    started: Instant,
    dispatch: impl Future<Output = Result<Payload, DispatchError>>,
) -> Result<Payload, CallError> {
    let audit_started = audit_start(node);
    let (reply, finished) = run_uncounted(shared, method, dispatch).await;
    count_turn(node, shared, started, finished, audit_started);
    reply
}

/// Returns the wall clock reading at the start of a turn if turns are audited. The wall clock
/// is read only for the audit, which is usually off.
pub(super) fn audit_start(node: &Node) -> Option<SystemTime> {
    node.audits_turns().then(SystemTime::now)
}

/// Runs one dispatched turn, catching a panic, and returns its reply and when it finished.
/// The caller counts it with [`count_turn`], so that the dispatch may borrow the context that
/// contains the node.
pub(super) async fn run_uncounted(
    shared: &ActivationShared,
    method: MethodId,
    dispatch: impl Future<Output = Result<Payload, DispatchError>>,
) -> (Result<Payload, CallError>, Instant) {
    let outcome = AssertUnwindSafe(dispatch).catch_unwind().await;
    let finished = Instant::now();
    shared.touch_at(finished);
    let reply = match outcome {
        Ok(Ok(payload)) => Ok(payload),
        Ok(Err(error)) => Err(dispatch_error(&shared.grain, method.name, error)),
        Err(panic) => {
            let message = panic_message(&panic);
            tracing::error!(grain = %shared.grain, %method, %message, "grain panicked; deactivating");
            Err(CallError::GrainPanicked {
                grain: shared.grain.clone(),
                message,
            })
        }
    };
    (reply, finished)
}

/// Counts a turn that ran from `started` to `finished`, and audits it if `audit_started` is set.
pub(super) fn count_turn(
    node: &Node,
    shared: &ActivationShared,
    started: Instant,
    finished: Instant,
    audit_started: Option<SystemTime>,
) {
    node.record_turn(finished.saturating_duration_since(started));
    shared.turns.fetch_add(1, Ordering::Relaxed);
    if let Some(audit_started) = audit_started {
        node.audit_turn(shared, audit_started, SystemTime::now());
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
        DispatchError::Grain(error) => CallError::from_handler(grain.clone(), error),
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
