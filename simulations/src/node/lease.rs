//! The membership lease of a simulated node: the real `LeaseTracker`, fed from the foca
//! packets the node sends and accepts, and the turn fence that the runtime builds on it.
//!
//! The runtime holds a turn while the lease has ended or the view is on the minority side,
//! and fails it with `DeadlineExceeded` when its deadline passes first. A simulated turn
//! waits in the activation's mailbox the same way: the flow's deadline timer fails the call,
//! and the held turns start as soon as an input makes the lease fresh again. The runtime
//! polls the fence every 5 ms, so it may start them up to 5 ms later than the simulator.
//! The runtime's second fence, a membership agent that lags behind its socket, is not
//! modeled: a simulated node handles its backlog in order, and after a stall longer than
//! the lease duration the lease has ended anyway.

use gristmill::clock::Millis;
use gristmill::grain::GrainId;
use gristmill::membership::{
    DEFAULT_DEAD_RETENTION, DeclaredDown, LeaseStatus, MembershipEvent, NodeId, acks_lease_probe,
};

use super::{NodeTimer, SimNode};
use crate::message::Message;

impl SimNode {
    /// Hands a received foca packet to foca and, if foca accepts it, to the lease, as the
    /// agent does.
    pub(super) fn handle_gossip(&mut self, packet: &[u8], now: Millis) {
        let input = self
            .keeps_lease()
            .then(|| self.lease.read_received(packet, &self.id));
        // Errors are rejected datagrams, counted by the real agent; nothing changed.
        let accepted = self.foca.handle_data(packet, &mut self.runtime).is_ok();
        if accepted && let Some(input) = input {
            self.lease.handle_received(input, now);
        }
        self.drain_runtime(now);
    }

    /// Records a foca packet that this node sends at `now`.
    pub(super) fn record_packet_sent(&mut self, packet: &[u8], now: Millis) {
        if self.keeps_lease() {
            self.lease.handle_packet_sent(packet, now);
        }
    }

    /// Returns whether the node keeps a lease. Membership-only runs start no turns, and
    /// reading every packet again for the lease would slow large runs down.
    fn keeps_lease(&self) -> bool {
        !self.config.membership_only
    }

    /// Tracks the members declared down in `events` for the minority check.
    pub(super) fn track_declared_down(&mut self, events: &[MembershipEvent], now: Millis) {
        if self.keeps_lease() && self.lease.handle_events(events, now) {
            self.update_minority();
        }
    }

    /// Counts the members that foca suspects for the minority check, as the agent does after
    /// every call into foca. Returns whether the count changed, after which
    /// [`Self::update_minority`] is due.
    pub(super) fn count_suspected(&mut self) -> bool {
        self.keeps_lease()
            && self
                .lease
                .count_suspected(self.foca.iter_membership_state(), &self.view)
    }

    /// Forgets members declared down longer ago than the dead retention, as the agent does
    /// at every meta tick.
    pub(super) fn forget_declared_down(&mut self, now: Millis) {
        if self.lease.forget_expired(now, DEFAULT_DEAD_RETENTION) {
            self.update_minority();
        }
    }

    /// Acks a probe of `prober`'s quorum sweep, sent by the node named `from`, as the agent
    /// does: unless the view lists the prober as dead or this node stopped.
    pub(super) fn answer_lease_probe(
        &mut self,
        from: &str,
        prober: &NodeId,
        sweep: u64,
        now: Millis,
    ) {
        if self.stopping || !acks_lease_probe(&self.view, prober) {
            return;
        }
        let ack = Message::LeaseProbeAck {
            from: self.id.clone(),
            sweep,
            declared_down: self.lease.declared_down_ages(now),
        };
        self.send(from, None, ack);
    }

    /// Counts an ack of this node's quorum sweep, and the members declared down that it hands
    /// on, as the agent does. The simulator does not model the agent's limit on the ack's
    /// length, which a cluster of five never reaches.
    pub(super) fn handle_lease_probe_ack(
        &mut self,
        acker: &NodeId,
        sweep: u64,
        declared_down: &[DeclaredDown],
        now: Millis,
    ) {
        if !self.keeps_lease() || !self.lease.awaits_sweep_ack(acker, sweep, now) {
            return;
        }
        let adopted =
            self.lease
                .adopt_declared_down(declared_down, &self.view, now, DEFAULT_DEAD_RETENTION);
        if adopted {
            self.update_minority();
        }
        if self.lease.handle_sweep_ack(acker, sweep, now).is_some() {
            self.update_minority();
        }
        self.drive_sweep(now);
    }

    /// Handles the timer that ends the running quorum sweep or starts the next one.
    pub(super) fn handle_sweep_timer(&mut self, now: Millis) {
        if self.sweep_timer_at.is_some_and(|at| at <= now) {
            self.sweep_timer_at = None;
        }
        self.drive_sweep(now);
    }

    /// Ends the running quorum sweep once its reply window has closed, starts the next one
    /// if it is due, and arms the timer for what comes next, as the agent does after every
    /// call into foca.
    pub(super) fn drive_sweep(&mut self, now: Millis) {
        if !self.keeps_lease() {
            return;
        }
        if self.lease.handle_sweep_tick(now).is_some() {
            self.update_minority();
        }
        if self.stopping {
            return;
        }
        if let Some(start) = self.lease.maybe_start_sweep(now, &self.view) {
            for target in start.targets {
                let probe = Message::LeaseProbe {
                    from: self.id.clone(),
                    sweep: start.sweep,
                };
                self.send(&target.name, None, probe);
            }
        }
        let Some(wake) = self.lease.next_sweep_wake() else {
            return;
        };
        if self.sweep_timer_at.is_some_and(|armed| armed <= wake) {
            return;
        }
        self.sweep_timer_at = Some(wake);
        let after = wake.saturating_since(now);
        self.timer(after, NodeTimer::QuorumSweep);
    }

    pub(super) fn update_minority(&mut self) {
        let live_members = self.view.live().count();
        self.lease.update_minority(live_members);
    }

    /// Returns what decides whether the lease lets turns start, as the agent publishes it.
    pub fn lease_status(&self) -> LeaseStatus {
        LeaseStatus {
            stopped: self.left,
            minority: self.lease.is_minority(),
            joined: self.view.is_connected(),
            expires_at: self.lease.expires_at(),
        }
    }

    /// Returns whether activations may start turns at `now`: always with the fence switched
    /// off, otherwise by the same rule as `MembershipHandle::lease_is_fresh`.
    pub fn may_start_turns_at(&self, now: Millis) -> bool {
        !self.config.fence_turns_by_lease || self.lease_status().is_fresh_at(now)
    }

    /// Starts the turns that waited behind the fence, once it lets them.
    pub(super) fn resume_held_turns(&mut self, now: Millis) {
        if !self.turns_held || self.stopping || !self.may_start_turns_at(now) {
            return;
        }
        self.turns_held = false;
        let waiting: Vec<GrainId> = self
            .catalog
            .iter()
            .filter(|(_, activation)| activation.has_waiting_turn())
            .map(|(grain, _)| grain.clone())
            .collect();
        for grain in waiting {
            self.maybe_start_turn(&grain);
        }
    }
}
