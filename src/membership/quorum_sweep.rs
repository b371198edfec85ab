//! The quorum sweep: a round of lease probes to every live member that shows whether this node
//! still reaches a majority of the cluster, so that a group cut off together fences itself.
//!
//! The `lease` module docs give the protocol and why it closes the gap that the minority
//! check leaves. This core keeps one node's sweeps: when the next one is due, which members it
//! waits for, and the result of the last one. The glue sends the probes and acks and passes
//! the time in, so the agent and the simulator run the same rules.

use std::collections::HashSet;
use std::hash::Hash;
use std::time::Duration;

use crate::clock::Millis;
use crate::runtime::MembershipConfig;

/// The probes of a sweep that just started, for the glue to send.
#[derive(Debug, PartialEq, Eq)]
pub struct SweepStart<M> {
    /// Sweep id that the probes carry and the acks echo.
    pub sweep: u64,
    /// Members to send a probe to: every live member but the local node.
    pub targets: Vec<M>,
}

/// Counts of a completed sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SweepResult {
    /// Id of the sweep.
    pub sweep: u64,
    /// Members that acked in time, the local node included.
    pub replies: usize,
    /// Members swept that did not ack in time, plus the members declared down.
    pub missing: usize,
}

impl SweepResult {
    /// Returns whether the replies fall short of the members missing, which fences turns. A
    /// tie is no loss, as in `lease::is_minority`, so that neither half of a cluster split in
    /// two equal halves fences itself.
    pub fn lost_quorum(&self) -> bool {
        self.replies < self.missing
    }
}

/// A sweep whose reply window is still open.
#[derive(Debug)]
struct PendingSweep<M> {
    sweep: u64,
    started_at: Millis,
    /// Swept members that have not acked yet.
    waiting: HashSet<M>,
    /// Acks so far, the local node included.
    replies: usize,
    /// Members declared down, as last counted; they count as missing.
    declared_down: usize,
}

impl<M> PendingSweep<M> {
    fn result(&self) -> SweepResult {
        SweepResult {
            sweep: self.sweep,
            replies: self.replies,
            missing: self.waiting.len() + self.declared_down,
        }
    }
}

/// The quorum sweeps of one node. `M` names a member, such as its `NodeId`.
#[derive(Debug)]
pub struct QuorumSweep<M> {
    /// Shortest time from the start of one sweep to the start of the next: the probe period.
    period: Duration,
    /// How long after its start a sweep counts acks: the probe round-trip time.
    reply_window: Duration,
    next_sweep: u64,
    pending: Option<PendingSweep<M>>,
    last_started_at: Option<Millis>,
    /// Evidence that this node may be cut off arrived after the last sweep started.
    requested: bool,
    /// Result of the last completed sweep; `None` before the first.
    last_result: Option<SweepResult>,
}

impl<M: Clone + Eq + Hash> QuorumSweep<M> {
    /// Creates the sweeps of a node for `config`'s probe timings. Sweep ids count up from
    /// `first_sweep`, which the caller draws at random so that acks from an earlier process of
    /// the same node do not match.
    pub fn new(config: &MembershipConfig, first_sweep: u64) -> Self {
        Self {
            period: Duration::from_millis(config.probe_period_ms),
            reply_window: Duration::from_millis(config.probe_rtt_ms),
            next_sweep: first_sweep,
            pending: None,
            last_started_at: None,
            requested: false,
            last_result: None,
        }
    }

    /// Requests a sweep because this node may be cut off: a probe of its own failed, or a
    /// peer suspects it. The sweep starts at the next [`Self::maybe_start`] that the period
    /// allows.
    pub fn request(&mut self) {
        self.requested = true;
    }

    /// Starts a sweep of `targets`, the live members but the local node, if one is due at
    /// `now`: one was requested or the last one lost the quorum, none is running, and a probe
    /// period has passed since the last one started. `declared_down` members count as missing.
    /// Returns the probes to send.
    pub fn maybe_start(
        &mut self,
        now: Millis,
        targets: impl Iterator<Item = M>,
        declared_down: usize,
    ) -> Option<SweepStart<M>> {
        if !self.is_due(now) {
            return None;
        }
        let sweep = self.next_sweep;
        self.next_sweep = self.next_sweep.wrapping_add(1);
        self.requested = false;
        self.last_started_at = Some(now);
        let targets: Vec<M> = targets.collect();
        self.pending = Some(PendingSweep {
            sweep,
            started_at: now,
            waiting: targets.iter().cloned().collect(),
            replies: 1,
            declared_down,
        });
        Some(SweepStart { sweep, targets })
    }

    fn is_due(&self, now: Millis) -> bool {
        let needed = self.requested || self.has_lost_quorum();
        let period_passed = self
            .last_started_at
            .is_none_or(|at| now.saturating_since(at) >= self.period);
        needed && self.pending.is_none() && period_passed
    }

    /// Records that `count` members are declared down now, for the running sweep's result. A
    /// verdict learned while the sweep runs, from an ack that hands it on, counts at once.
    pub fn handle_declared_down_count(&mut self, count: usize) {
        if let Some(pending) = &mut self.pending {
            pending.declared_down = count;
        }
    }

    /// Returns whether the running sweep `sweep` waits for an ack from `from` at `now`: the
    /// member was swept, has not acked yet, and the reply window is open.
    pub fn awaits_ack(&self, from: &M, sweep: u64, now: Millis) -> bool {
        self.pending.as_ref().is_some_and(|pending| {
            pending.sweep == sweep
                && now < pending.started_at + self.reply_window
                && pending.waiting.contains(from)
        })
    }

    /// Handles an ack of sweep `sweep` from member `from`, received at `now`. An ack of
    /// another sweep, from a member not swept or after the reply window, and a repeated ack
    /// change nothing. Returns the result once the acks reach the quorum, which ends the
    /// sweep early.
    pub fn handle_ack(&mut self, from: &M, sweep: u64, now: Millis) -> Option<SweepResult> {
        let window = self.reply_window;
        let pending = self
            .pending
            .as_mut()
            .filter(|pending| pending.sweep == sweep && now < pending.started_at + window)?;
        if !pending.waiting.remove(from) {
            return None;
        }
        pending.replies += 1;
        let result = pending.result();
        if result.lost_quorum() {
            return None;
        }
        self.pending = None;
        self.last_result = Some(result);
        Some(result)
    }

    /// Ends the running sweep if its reply window has closed by `now`, and returns its result.
    pub fn handle_tick(&mut self, now: Millis) -> Option<SweepResult> {
        let pending = self.pending.as_ref()?;
        if now < pending.started_at + self.reply_window {
            return None;
        }
        let result = pending.result();
        self.pending = None;
        self.last_result = Some(result);
        Some(result)
    }

    /// Returns when the glue should call [`Self::handle_tick`] and [`Self::maybe_start`]
    /// next: at the end of the running sweep's reply window, or when the next requested sweep
    /// is due. `None` while no sweep runs or is due.
    pub fn next_wake(&self) -> Option<Millis> {
        if let Some(pending) = &self.pending {
            return Some(pending.started_at + self.reply_window);
        }
        if !self.requested && !self.has_lost_quorum() {
            return None;
        }
        Some(
            self.last_started_at
                .map_or(Millis(0), |at| at + self.period),
        )
    }

    /// Returns whether the last completed sweep lost the quorum, which fences turns until a
    /// later sweep reaches it.
    pub fn has_lost_quorum(&self) -> bool {
        self.last_result.is_some_and(|result| result.lost_quorum())
    }

    /// Returns the result of the last completed sweep.
    pub fn last_result(&self) -> Option<SweepResult> {
        self.last_result
    }
}

#[cfg(test)]
mod tests;
