//! Delivery of a call to an activation on this node, and the caller's wait for its turn.
//!
//! A call reaches a local activation through the catalog, or through the route that its
//! grain reference cached at an earlier call (see `super::local_route`). A caller that finds
//! the activation idle drives the turn on its own task (see `crate::grain::mailbox`).

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use tokio::sync::oneshot;

use super::catalog::ActivationHandle;
use super::local_route::LocalRoute;
use super::node::Node;
use super::router::{CachedRoute, CheckedMethod, MAX_ATTEMPTS};
use crate::grain::activation::{
    self, ActivationShared, Runner, Turn, TurnError, TurnOutcome, TurnReceiver, TurnReply,
};
use crate::grain::methods::MethodId;
use crate::grain::{CallError, GrainContext, GrainError, GrainId, Payload};

impl Node {
    /// Runs the call on the local activation. Gives the payload back if the grain is not
    /// active here (or its activation stopped before taking the call).
    pub(crate) async fn deliver_local(
        &self,
        grain: &GrainId,
        method: CheckedMethod,
        payload: Payload,
        sent_at: Instant,
        deadline: Instant,
    ) -> Result<Result<Payload, CallError>, Payload> {
        self.deliver_local_caching(grain, method, payload, sent_at, deadline, None)
            .await
    }

    /// [`Node::deliver_local`] that caches in `route` the activation it sent the turn to.
    pub(super) async fn deliver_local_caching(
        &self,
        grain: &GrainId,
        method: CheckedMethod,
        payload: Payload,
        sent_at: Instant,
        deadline: Instant,
        route: Option<&LocalRoute>,
    ) -> Result<Result<Payload, CallError>, Payload> {
        if let Some(max) = method.worker_limit {
            return Ok(self
                .deliver_worker(grain, method.id, payload, deadline, max)
                .await);
        }
        let make_turn = |payload, handle: &ActivationHandle| {
            let (turn, receive) = caller_turn(method, payload, sent_at, deadline);
            (turn, (receive, route.map(|_| handle.clone())))
        };
        let sent = self.inner.catalog.try_send(grain, payload, make_turn);
        let sent = sent.map(|(runner, (receive, handle))| {
            if let (Some(route), Some(handle)) = (route, handle) {
                route.cache_activation(handle);
            }
            (runner, receive)
        });
        let delivered = await_sent(grain, deadline, sent).await?;
        Ok(delivered.result)
    }

    /// Runs the call on the activation that `cached` names, without the catalog. Gives the
    /// payload back if the route caches none, or if the activation has left the catalog since,
    /// and the route then clears it.
    pub(super) async fn deliver_cached(
        &self,
        grain: &GrainId,
        cached: CachedRoute<'_>,
        payload: Payload,
        sent_at: Instant,
        deadline: Instant,
    ) -> Result<Delivered, Payload> {
        let sent = cached
            .route
            .try_send(cached.request, payload, |payload, method| {
                caller_turn(method, payload, sent_at, deadline)
            });
        let outcome = await_sent(grain, deadline, sent).await;
        if outcome.is_err() {
            // The route cached no activation, or the activation rejected the turn or gave it back
            // because it has left the catalog.
            cached.route.clear_activation();
        }
        outcome
    }

    /// Runs a call on a stateless worker activation of this node, starting one more worker
    /// while the pool has room and every worker is busy.
    async fn deliver_worker(
        &self,
        grain: &GrainId,
        method: MethodId,
        mut payload: Payload,
        deadline: Instant,
        max: usize,
    ) -> Result<Payload, CallError> {
        for _ in 0..MAX_ATTEMPTS {
            let (reply, receive) = TurnReply::channel();
            let turn = Turn {
                method,
                payload,
                deadline,
                sent_at: None,
                reply,
            };
            match self.inner.catalog.try_send_worker(grain, max, turn) {
                Ok(()) => match await_turn(grain, deadline, receive).await {
                    Ok(delivered) => return delivered.result,
                    Err(returned) => payload = returned,
                },
                Err(returned) => {
                    payload = returned.payload;
                    self.start_worker(grain, max).await?;
                }
            }
        }
        Err(CallError::TooManyHops {
            grain: grain.clone(),
            hops: MAX_ATTEMPTS,
        })
    }

    /// Starts one more worker activation of `grain` on this node if the pool has room.
    async fn start_worker(&self, grain: &GrainId, max: usize) -> Result<(), CallError> {
        if self.inner.catalog.worker_count(grain) >= max {
            return Ok(());
        }

        let factory = self.inner.registry.require(&grain.grain_type)?.clone();
        let activation_id = self
            .inner
            .next_activation_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let idle_after = factory
            .options()
            .idle_after
            .unwrap_or_else(|| self.inner.config.idle_after());
        let mut shared = ActivationShared::new(grain.clone(), activation_id, 0, idle_after);
        shared.worker = true;
        let shared = std::sync::Arc::new(shared);

        let ctx = GrainContext::new(grain.clone(), activation_id, 0, self.clone());
        let actor = activation::start(factory.as_ref(), ctx, std::sync::Arc::clone(&shared))
            .await
            .map_err(|message| CallError::Grain {
                grain: grain.clone(),
                error: GrainError::new("activation_failed", message),
            })?;

        let handle = super::catalog::ActivationHandle {
            actor: actor.clone(),
            shared,
        };
        if self.inner.catalog.insert_worker(handle, max) {
            self.inner.metrics.activations_started.inc();
        } else {
            // The pool filled meanwhile. This activation never ran a turn, so it stops without
            // `on_deactivate`.
            actor.stop();
        }
        Ok(())
    }
}

/// Returns a call's turn and the receiver of its reply. The caller drives the runner that a
/// send returns at once, so the turn may start with `sent_at` as its clock reading.
fn caller_turn(
    method: CheckedMethod,
    payload: Payload,
    sent_at: Instant,
    deadline: Instant,
) -> (Turn, TurnReceiver) {
    let (reply, receive) = TurnReply::channel();
    let turn = Turn {
        method: method.id,
        payload,
        deadline,
        sent_at: Some(sent_at),
        reply,
    };
    (turn, receive)
}

/// The result of a call that a local activation took.
pub(super) struct Delivered {
    pub result: Result<Payload, CallError>,
    /// The turn's clock reading at its end, if the turn ended within the caller's first poll.
    /// The caller may take it as the end of the call too, because only the reply's hand-over
    /// lies between the two.
    pub ended_inline: Option<Instant>,
}

/// Waits for the reply of a turn that a send to a local activation returned, driving its
/// runner if the activation was idle. Gives the request back if the send failed or the
/// activation stopped before running it.
async fn await_sent(
    grain: &GrainId,
    deadline: Instant,
    sent: Result<(Option<Runner>, TurnReceiver), Payload>,
) -> Result<Delivered, Payload> {
    match sent {
        Err(payload) => Err(payload),
        Ok((None, receive)) => await_turn(grain, deadline, receive).await,
        Ok((Some(runner), receive)) => await_turn_driving(grain, deadline, receive, runner).await,
    }
}

/// Waits for a turn's reply until `deadline`; gives the request back if the activation stopped
/// before running it.
async fn await_turn(
    grain: &GrainId,
    deadline: Instant,
    receive: TurnReceiver,
) -> Result<Delivered, Payload> {
    let outcome = tokio::time::timeout_at(deadline.into(), receive).await;
    let result = turn_outcome(grain, outcome)?;
    Ok(Delivered {
        result,
        ended_inline: None,
    })
}

/// Like [`await_turn`], for a caller that found the activation idle and got its runner: the
/// caller drives the runner until the reply arrives. A turn that completes without waiting
/// then runs on the caller's task, with no task spawned and no timer set. Whatever the runner
/// has left when the reply arrives, the deadline passes or the caller goes away, it finishes
/// on a task of its own (see `crate::grain::mailbox`).
async fn await_turn_driving(
    grain: &GrainId,
    deadline: Instant,
    mut receive: TurnReceiver,
    mut runner: Runner,
) -> Result<Delivered, Payload> {
    let mut reply = std::pin::pin!(std::future::poll_fn(|cx| {
        runner.poll_run(cx);
        Pin::new(&mut receive).poll(cx)
    }));
    // Most turns end within the first poll. Only a turn that waits needs the deadline's
    // timer, and creating the timer looks up the runtime's handle.
    let first = std::future::poll_fn(|cx| Poll::Ready(reply.as_mut().poll(cx))).await;
    let (outcome, ended_inline) = match first {
        Poll::Ready(received) => {
            let ended = received.as_ref().ok().and_then(|outcome| outcome.ended);
            (Ok(received), ended)
        }
        Poll::Pending => (tokio::time::timeout_at(deadline.into(), reply).await, None),
    };
    drop(runner);
    let result = turn_outcome(grain, outcome)?;
    Ok(Delivered {
        result,
        ended_inline,
    })
}

/// Maps what a caller got while waiting for a turn's reply to the call's result, or gives the
/// request back if the activation stopped before running it.
fn turn_outcome(
    grain: &GrainId,
    outcome: Result<Result<TurnOutcome, oneshot::error::RecvError>, tokio::time::error::Elapsed>,
) -> Result<Result<Payload, CallError>, Payload> {
    match outcome.map(|received| received.map(|outcome| outcome.result)) {
        Ok(Ok(Ok(payload))) => Ok(Ok(payload)),
        Ok(Ok(Err(TurnError::Failed(error)))) => Ok(Err(error)),
        Ok(Ok(Err(TurnError::Gone(payload)))) => Err(payload),
        Ok(Err(_)) => Ok(Err(CallError::Internal(format!(
            "activation of {grain} stopped during the call"
        )))),
        // The caller's `finish_call` replaces the 0 with the timeout it was given.
        Err(_) => Ok(Err(CallError::DeadlineExceeded {
            grain: grain.clone(),
            after_ms: 0,
        })),
    }
}
