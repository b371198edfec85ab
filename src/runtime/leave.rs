//! Graceful leave from both sides: the steps a leaving node takes, and how callers treat a
//! call that failed at a peer which left.
//!
//! A leaving node takes these steps (see [`Node::leave`]):
//! 1. It refuses new activations (`stopping`), becomes Draining and deactivates whatever the
//!    drain left behind. Each deactivation waits for the activation's running turn, and
//!    queued turns come back to their forwarded calls, which reply `NotHere`.
//! 2. It becomes Leaving. From then on it hosts no activation and starts none, so a call that
//!    reaches it cannot run a turn: it gets `NotHere` (or, for a placement request, is
//!    refused with `NotHere`), and the caller resolves the grain again.
//! 3. Quiet period: it keeps its transport open while peers learn the Leaving state and while
//!    the inbound requests in flight finish, so their replies reach the callers. Both waits
//!    are bounded (see [`Node::leave_budget`]).
//! 4. It announces its departure through membership (state Dead), stops the transport, and
//!    reports itself stopped.
//!
//! The race that remains: a peer that forwards a call just before the transport stops gets a
//! transport error instead of `NotHere`. The caller then looks the peer up in its membership
//! view. A peer that announced Leaving (step 2) could not have run the call,
//! so the caller resolves the grain again and retries. A call that was never sent is retried
//! the same way when the peer is no longer Active. Any other transport error reaches the
//! caller, because the call may have run.
//!
//! NOTE: step 1 waits for each activation to stop for a bounded time only. An activation
//! whose turn outlasts that wait still runs while the node is Leaving. The turn's reply goes
//! out during the quiet period, but a caller whose session breaks before it arrives would
//! retry a call that ran.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::node::Node;
use crate::grain::CallError;
use crate::membership::{Incarnation, NodeId, NodeState};

/// Upper bound of the quiet period in which a leaving node waits for peers to learn that it
/// is leaving.
const MAX_QUIET_PERIOD: Duration = Duration::from_secs(5);
/// Upper bound of the wait for inbound requests in flight after the quiet period.
const MAX_INBOUND_WAIT: Duration = Duration::from_secs(5);

impl Node {
    /// Stops serving gracefully (the SIGTERM path): drains the node, moving every activation
    /// to other Active nodes (see [`Node::drain`]), deactivates what could not move, announces the
    /// leave to the cluster, and stops. The whole takes at most the drain timeout plus the
    /// bounded deactivation wait.
    pub async fn drain_and_leave(&self) {
        if self.inner.stopping.load(Ordering::Acquire) {
            self.stopped().await;
            return;
        }
        let drain_timeout = self.inner.config.drain_timeout();
        let report = self
            .drain(drain_timeout.saturating_sub(self.leave_budget()))
            .await;
        if report.remaining > 0 {
            tracing::warn!(node = %self.inner.id.name, remaining = report.remaining, "drain timed out; deactivating the rest");
        }
        self.leave().await;
    }

    /// Leaves the cluster: deactivates whatever is still active here, announces the leave,
    /// keeps replying to peers until they have had time to learn it, and stops. The steps are
    /// at the top of this module. [`Node::stopped`] resolves afterwards and
    /// [`Node::left_gracefully`] returns true.
    pub async fn leave(&self) {
        if self.inner.stopping.swap(true, Ordering::AcqRel) {
            self.stopped().await;
            return;
        }
        let deadline = Instant::now() + self.leave_budget();
        self.set_state(NodeState::Draining);
        super::upkeep::deactivate_all(self, crate::grain::activation::StopReason::Shutdown).await;
        self.set_state(NodeState::Leaving);
        self.wait_quiet(deadline).await;
        if let Err(error) = self.inner.membership.leave().await {
            tracing::warn!(node = %self.inner.id.name, %error, "leave announcement failed");
        }
        self.transport().stop();
        self.set_state(NodeState::Dead);
        self.inner.left_gracefully.store(true, Ordering::Release);
        // `send` would drop the value while no receiver waits in `Node::stopped`.
        self.inner.stopped.send_replace(true);
        tracing::info!(node = %self.inner.id.name, "node left the cluster");
    }

    /// Returns whether the node stopped by leaving the cluster, rather than being declared down.
    pub fn left_gracefully(&self) -> bool {
        self.inner.left_gracefully.load(Ordering::Acquire)
    }

    /// Returns the time that leaving may take after the drain: the quiet period plus the wait
    /// for inbound requests, together at most half the drain timeout.
    pub(crate) fn leave_budget(&self) -> Duration {
        (self.quiet_period() + MAX_INBOUND_WAIT).min(self.inner.config.drain_timeout() / 2)
    }

    /// Returns how long a leaving node keeps serving after it announced Leaving: two meta
    /// periods or two probe periods, whichever is longer, at most [`MAX_QUIET_PERIOD`].
    ///
    /// The state change goes out at once to up to `indirect_probes` members, rides on the
    /// gossip of every probe period, and is sent again every meta period. Two periods
    /// therefore cover one lost datagram in a small cluster. This is an estimate, not an
    /// acknowledgement: a peer that learns it later gets a transport error, which it retries
    /// (see the module notes).
    fn quiet_period(&self) -> Duration {
        let membership = &self.inner.config.membership;
        let period = membership.meta_period_ms.max(membership.probe_period_ms);
        (2 * Duration::from_millis(period)).min(MAX_QUIET_PERIOD)
    }

    /// Keeps serving until the quiet period has passed and no inbound request is in flight,
    /// or until `deadline`.
    async fn wait_quiet(&self, deadline: Instant) {
        let has_peers = {
            let members = self.inner.members.read().expect("members lock poisoned");
            let local = self.inner.id.incarnation();
            members.live.iter().any(|incarnation| *incarnation != local)
        };
        // Without live peers no one forwards here, so only the requests in flight matter.
        let quiet_period = if has_peers {
            self.quiet_period()
        } else {
            Duration::ZERO
        };
        let quiet_until = (Instant::now() + quiet_period).min(deadline);
        let idle = self.inner.inbound.wait_idle(quiet_until).await;
        tokio::time::sleep_until(quiet_until.into()).await;
        if !idle && !self.inner.inbound.wait_idle(deadline).await {
            tracing::warn!(
                node = %self.inner.id.name,
                in_flight = self.inner.inbound.in_flight(),
                "inbound requests still in flight when leaving; their callers get an error"
            );
        }
    }

    /// Records that the member `incarnation` announced that it is leaving, so that it hosts
    /// no activation any more.
    pub(crate) fn record_departure(&self, incarnation: Incarnation) {
        self.inner
            .departed
            .lock()
            .expect("departed lock poisoned")
            .insert(incarnation);
    }

    /// Returns whether the member `incarnation` announced that it is leaving.
    pub(crate) fn has_departed(&self, incarnation: &Incarnation) -> bool {
        self.inner
            .departed
            .lock()
            .expect("departed lock poisoned")
            .contains(incarnation)
    }

    /// Returns whether this node has begun to leave or stop, so it starts no activation.
    pub(crate) fn is_stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::Acquire)
    }

    /// Forgets departures of incarnations that the membership view no longer lists.
    pub(crate) fn forget_departures(&self, is_member: impl Fn(&Incarnation) -> bool) {
        self.inner
            .departed
            .lock()
            .expect("departed lock poisoned")
            .retain(|incarnation| is_member(incarnation));
    }

    /// Returns whether a forward to `peer` that failed with `error` is known not to have run,
    /// so that the call may resolve the grain again and retry.
    ///
    /// That holds when the peer announced Leaving (it runs no turns from then on), or when
    /// nothing was sent and the peer is no longer Active in this node's view.
    pub(crate) fn may_retry_forward(&self, peer: &NodeId, error: &CallError) -> bool {
        let CallError::NodeUnavailable { before_send, .. } = error else {
            return false;
        };
        let incarnation = peer.incarnation();
        let departed = self.has_departed(&incarnation);
        let state = {
            let members = self.inner.members.read().expect("members lock poisoned");
            members.by_incarnation.get(&incarnation).map(|m| m.state)
        };
        forward_failure_is_retryable(*before_send, departed, state)
    }
}

/// Returns whether a forward that failed in transport is known not to have run. That holds
/// when the peer announced Leaving (`departed`). It also holds when nothing was sent
/// (`before_send`) and the peer is not Active in this node's view (`None`: no longer listed).
fn forward_failure_is_retryable(
    before_send: bool,
    departed: bool,
    state: Option<NodeState>,
) -> bool {
    departed || (before_send && state != Some(NodeState::Active))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_failure_retry_cases() {
        use NodeState::*;
        // (before_send, departed, state in the view, retryable)
        let cases = [
            (false, true, Some(Leaving), true),
            (false, true, Some(Dead), true),
            (false, true, None, true),
            (true, true, Some(Leaving), true),
            (true, false, Some(Draining), true),
            (true, false, Some(Dead), true),
            (true, false, None, true),
            (true, false, Some(Active), false),
            (false, false, Some(Active), false),
            (false, false, Some(Draining), false),
            (false, false, Some(Dead), false),
            (false, false, None, false),
        ];
        for (before_send, departed, state, expected) in cases {
            assert_eq!(
                forward_failure_is_retryable(before_send, departed, state),
                expected,
                "before_send {before_send}, departed {departed}, state {state:?}"
            );
        }
    }
}
