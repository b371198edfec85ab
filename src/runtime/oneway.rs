//! One-way grain messages: queued in the grain's mailbox or cast to its host, with no reply.
//!
//! A sender delivers a message in the first of these ways that applies:
//! 1. the grain is active on this node: the turn goes straight into its mailbox;
//! 2. the route cache names a live peer as the host: the message is cast to that peer's
//!    gateway, which queues it in the activation's mailbox without a task or a reply;
//! 3. otherwise the call path (directory, placement, activation) runs the message as a call
//!    and drops the reply, which also fills the route cache for the next message.
//!
//! A sender waits for each step, so messages from one sender to one grain keep their order
//! while the activation stays on its node. Nothing retries a message once it is handed
//! over, so it runs at most once. A receiver that no longer hosts the grain routes it again
//! from there, and a message queued in an activation that stops before running it is lost.

use std::time::Instant;

use super::node::Node;
use super::router::{
    CheckedMethod, Target, deadline_to_unix_ms, encode_payload, unix_ms_to_deadline,
};
use crate::grain::activation::{Turn, TurnReply};
use crate::grain::{CallError, GrainId, Payload};
use crate::transport::{CallEnvelope, Envelope, Route};

impl Node {
    /// Sends `method` of `grain` with `payload` one way, from this node; the message is
    /// dropped if it has not started running by `deadline`.
    pub(crate) async fn send_oneway(
        &self,
        grain: GrainId,
        method: &str,
        payload: Payload,
        deadline: Instant,
    ) -> Result<(), CallError> {
        let checked = self.check_method(&grain, method)?;
        if self.is_declared_down() {
            return Err(CallError::ShuttingDown {
                node: self.inner.id.name.to_string(),
            });
        }
        let payload = match self.queue_local(&grain, checked, payload, deadline) {
            Ok(()) => {
                self.inner.metrics.oneway_sent.inc();
                return Ok(());
            }
            Err(payload) => payload,
        };
        let payload = match self
            .cast_to_cached_host(&grain, method, payload, deadline)
            .await?
        {
            None => {
                self.inner.metrics.oneway_sent.inc();
                return Ok(());
            }
            Some(payload) => payload,
        };
        // Boxed, because the call path's future is large: inline, it would enlarge the future
        // of every one-way message and slow down its creation.
        match Box::pin(self.invoke(grain, method, payload, deadline)).await {
            // The turn ran; its outcome is not the sender's business.
            Ok(_)
            | Err(
                CallError::Grain { .. }
                | CallError::InvalidRequest { .. }
                | CallError::GrainPanicked { .. },
            ) => {
                self.inner.metrics.oneway_sent.inc();
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Queues a turn with no reply in the local activation of `grain`. Gives the payload back
    /// if the grain is not active here, or is a stateless worker, whose pool the call path
    /// grows.
    fn queue_local(
        &self,
        grain: &GrainId,
        method: CheckedMethod,
        payload: Payload,
        deadline: Instant,
    ) -> Result<(), Payload> {
        if method.worker_limit.is_some() {
            return Err(payload);
        }
        let make_turn = |payload, _: &super::catalog::ActivationHandle| {
            let turn = Turn {
                method: method.id,
                payload,
                deadline,
                sent_at: None,
                reply: TurnReply::none(),
            };
            (turn, ())
        };
        let (runner, ()) = self.inner.catalog.try_send(grain, payload, make_turn)?;
        // Nothing waits for a one-way message, so the runner goes on a task of its own.
        if let Some(runner) = runner {
            runner.spawn();
        }
        Ok(())
    }

    /// Casts the message to the host that the route cache names. Returns `None` once it is
    /// handed to the transport, or the payload if no live host is cached or the cast failed.
    async fn cast_to_cached_host(
        &self,
        grain: &GrainId,
        method: &str,
        payload: Payload,
        deadline: Instant,
    ) -> Result<Option<Payload>, CallError> {
        let Some(Target::Host(entry, peer)) = self.cached_target(grain) else {
            return Ok(Some(payload));
        };
        let (format, bytes) = encode_payload(payload, grain, method)?;
        self.check_frame(grain, method, bytes.len())?;
        let envelope = Envelope::V1(CallEnvelope {
            grain: grain.clone(),
            method: method.to_string(),
            format,
            payload: bytes,
            deadline_unix_ms: deadline_to_unix_ms(deadline),
            trace_parent: None,
            hops: 1,
            route: Route::Deliver,
        });
        match self.transport().cast(&peer, envelope, deadline).await {
            Ok(()) => Ok(None),
            Err(not_sent) => {
                let error = &not_sent.error;
                tracing::debug!(grain = %grain, peer = %peer.name, %error, "one-way cast failed; resolving the grain");
                self.inner
                    .cache
                    .lock()
                    .expect("cache lock poisoned")
                    .handle_not_here(grain, &entry.host);
                let Envelope::V1(call) = not_sent.envelope;
                Ok(Some(Payload::Encoded {
                    format: call.format,
                    bytes: call.payload,
                }))
            }
        }
    }

    /// Takes a one-way message from a peer: queues it in the local activation, or else routes
    /// it from this node in a task of its own, dropping the reply.
    pub(super) fn receive_oneway(&self, call: CallEnvelope) {
        self.inner.metrics.oneway_received.inc();
        let checked = match self.check_method(&call.grain, &call.method) {
            Ok(checked) => checked,
            Err(error) => {
                tracing::warn!(grain = %call.grain, method = %call.method, %error, "dropped a one-way message");
                return;
            }
        };
        let deadline = unix_ms_to_deadline(call.deadline_unix_ms);
        let payload = Payload::Encoded {
            format: call.format,
            bytes: call.payload,
        };
        let Err(payload) = self.queue_local(&call.grain, checked, payload, deadline) else {
            return;
        };
        // The sender's route cache was stale, or the activation is starting: the call path
        // waits for it, or finds the grain's host, or activates the grain.
        let node = self.clone();
        tokio::spawn(async move {
            let _serving = node.inner.inbound.begin();
            let outcome = node
                .invoke(call.grain.clone(), &call.method, payload, deadline)
                .await;
            if let Err(error) = outcome {
                tracing::debug!(grain = %call.grain, method = %call.method, %error, "one-way message not delivered");
            }
        });
    }
}
