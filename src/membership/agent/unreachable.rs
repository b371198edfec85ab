//! The agent's glue for gray failures, built on the `reachability` and `unreachable_votes`
//! modules.
//!
//! The agent lists the live peers without a ready cluster session in the local meta and
//! counts the lists of all members. It declares down through foca a member that enough other
//! members cannot reach.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use foca::Member;
use tracing::{info, warn};

use super::MembershipAgent;
use crate::membership::unreachable_votes::{Ballot, Verdict, count_votes};
use crate::membership::{Incarnation, NodeState, PeerSession};

impl MembershipAgent {
    /// Stores the cluster node names of the peers with a ready session, which the node's
    /// transport reports, and checks the report and the votes at once.
    ///
    /// A session whose packets vanish stays ready until the transport's ack timeout
    /// (`cluster_ack_timeout_ms`) closes it, because ractor_cluster itself never closes a
    /// session whose pings go unanswered.
    pub(super) fn set_ready_sessions(&mut self, ready: HashSet<String>) {
        self.ready_sessions = Some(ready);
        self.check_reachability();
    }

    /// Updates the local unreachable report, broadcasting the meta when the report changed,
    /// and declares down the members that the latest reports vote unreachable.
    ///
    /// Nothing is reported before the transport first reported its sessions, and nothing
    /// while this node leaves or was declared down.
    pub(super) fn check_reachability(&mut self) {
        let now = self.clock.now();
        let reporting = !self.declared_down
            && matches!(
                self.meta.state,
                NodeState::Joining | NodeState::Active | NodeState::Draining
            );
        let report = match (&self.ready_sessions, reporting) {
            (Some(ready), true) => {
                let local = &self.foca.identity().name;
                // A Leaving peer has no grains and may already have stopped its transport.
                let peers: Vec<PeerSession> = self
                    .view
                    .live()
                    .filter(|member| member.id.name != *local)
                    .filter(|member| member.state != NodeState::Leaving)
                    .map(|member| PeerSession {
                        ready: ready.contains(member.id.cluster_node_name()),
                        peer: member.incarnation(),
                    })
                    .collect();
                self.reachability.observe(peers, now);
                self.reachability.report(now)
            }
            _ => {
                self.reachability.observe([], now);
                Vec::new()
            }
        };
        if report != self.meta.unreachable {
            info!(node = %self.foca.identity(), unreachable = ?report, "unreachable report changed: these peers have had no ready cluster session for membership.unreachable_after");
            self.meta.unreachable = report;
            self.publish_local_meta();
        }
        if !self.declared_down {
            self.apply_unreachable_votes();
        }
    }

    /// Counts the unreachable reports of the live members and declares each member voted
    /// unreachable down, once per incarnation.
    fn apply_unreachable_votes(&mut self) {
        let required = self.config.unreachable_votes as usize;
        let any_report = self
            .view
            .metas_by_name()
            .any(|(_, meta)| meta.is_some_and(|meta| !meta.unreachable.is_empty()));
        if required == 0 || !any_report {
            return;
        }
        let view = &self.view;
        let ballots = view.metas_by_name().filter_map(|(id, meta)| {
            let meta = meta.filter(|meta| !meta.unreachable.is_empty())?;
            Some(Ballot {
                voter: id.incarnation(),
                unreachable: &meta.unreachable,
            })
        });
        let is_live = |member: &Incarnation| view.get(member).is_some_and(|info| info.is_live());
        let verdicts = count_votes(ballots, is_live, required);

        let local = self.foca.identity().incarnation();
        // Incarnations that are no longer live need no entry: the view never revives them.
        self.declared_unreachable
            .retain(|member| self.view.get(member).is_some_and(|info| info.is_live()));
        for verdict in verdicts {
            // The others declare this node down, and it learns that through gossip.
            if verdict.member != local && self.declared_unreachable.insert(verdict.member.clone()) {
                self.declare_unreachable_down(verdict);
            }
        }
    }

    /// Declares `verdict.member` down through foca, which gossips the verdict, and logs it.
    fn declare_unreachable_down(&mut self, verdict: Verdict) {
        let target = self
            .foca
            .iter_members()
            .map(Member::id)
            .find(|id| id.is_incarnation(&verdict.member))
            .cloned();
        let Some(target) = target else {
            // foca counts it down already, through another node's verdict or its own probes.
            return;
        };
        let now = self.clock.now();
        let without_session_ms = self
            .reachability
            .without_session_for(&verdict.member, now)
            .map(|duration| duration.as_millis() as u64);
        warn!(
            node = %self.foca.identity(),
            member = %target,
            voters = ?verdict.voters,
            required = self.config.unreachable_votes,
            without_session_ms,
            unreachable_after_ms = self.config.unreachable_after.as_millis() as u64,
            "declaring a member down: members that gossip with it have had no cluster session to it for too long"
        );
        let down = std::iter::once(Member::down(target));
        if let Err(error) = self.foca.apply_many(down, true, &mut self.runtime) {
            warn!(%error, member = %verdict.member, "foca failed to apply the unreachable member's down verdict");
            return;
        }
        self.status
            .unreachable_declared_down
            .fetch_add(1, Ordering::Relaxed);
    }
}
