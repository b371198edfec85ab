//! The membership lease of one node as its agent keeps it: fed from the foca packets it sends
//! and accepts, with the members suspected and declared down for the minority check, and its
//! quorum sweeps.
//!
//! The membership agent and the simulator both drive this core, so that a simulated node
//! fences its turns by the same rules as a real one. Both pass time in; neither the tracker
//! nor the `lease` core reads a clock.

use std::collections::HashMap;
use std::time::Duration;

use foca::{Member, State};
use serde::{Deserialize, Serialize};

use super::lease::{MembershipLease, is_minority, lease_duration};
use super::lease_input::{self, LeaseInput, RequestKey, RequestKind};
use super::quorum_sweep::{QuorumSweep, SweepResult, SweepStart};
use super::{LeaveReason, MemberView, MembershipEvent, NodeId, NodeName};
use crate::clock::Millis;
use crate::runtime::MembershipConfig;

/// A member newly suspected, by this node's probe or by gossip, requests a quorum sweep only
/// while the members suspected or declared down are at least one in this many members. In a
/// large cluster one crashed member, whose suspicion gossip brings to every node, then starts
/// sweeps only on the few nodes whose own probes of it failed, not on all of them.
const SUSPICION_SWEEP_SHARE: usize = 10;

/// A member that a node counts as declared down, as its sweep acks hand it on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredDown {
    /// The member's name.
    pub name: NodeName,
    /// Milliseconds from the verdict to the sending of the ack.
    pub age_ms: u64,
}

/// Change to the lease from one received packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseChange {
    /// The packet shows a peer suspecting this node, and the lease was fresh until then.
    pub lost_to_suspicion: bool,
    /// The lease's end moved: later on a reply, to none on a suspicion.
    pub expiry_changed: bool,
}

/// The lease state of one node: requests waiting for replies, the incarnation its last packet
/// carried, and the members its failure detector suspects or declared down.
#[derive(Debug)]
pub struct LeaseTracker {
    lease: MembershipLease<RequestKey>,
    /// Incarnation that the last packet this node sent carried. A suspicion of a lower
    /// incarnation is one that the node already refuted.
    sent_incarnation: foca::Incarnation,
    /// Members that the failure detector declared down, by name, with the time. They count
    /// against the minority check until they rejoin or their dead retention ends.
    declared_down_peers: HashMap<NodeName, Millis>,
    /// Live members that the failure detector suspects, as last counted.
    suspected: usize,
    /// The quorum sweeps, which fence the node while the last one lost the quorum.
    sweep: QuorumSweep<NodeId>,
    /// Result of the last [`Self::update_minority`].
    minority: bool,
}

impl LeaseTracker {
    /// Creates the tracker of a node that has sent nothing yet, whose lease is not fresh. The
    /// quorum sweep ids count up from `first_sweep`, which the caller draws at random.
    pub fn new(config: &MembershipConfig, first_sweep: u64) -> Self {
        Self {
            lease: MembershipLease::new(lease_duration(config)),
            sent_incarnation: 0,
            declared_down_peers: HashMap::new(),
            suspected: 0,
            sweep: QuorumSweep::new(config, first_sweep),
            minority: false,
        }
    }

    /// Records a foca packet that this node sent at `now`: the request in it, if it expects
    /// a reply, and the incarnation it carries. A `PingReq` means that a direct probe of this
    /// node's went unanswered, so it requests a quorum sweep.
    pub fn handle_packet_sent(&mut self, packet: &[u8], now: Millis) {
        if let Some(incarnation) = lease_input::sender_incarnation(packet) {
            self.sent_incarnation = incarnation;
        }
        if let Some(request) = lease_input::request_sent(packet) {
            if request.1 == RequestKind::IndirectRequest {
                self.sweep.request();
            }
            self.lease.handle_request_sent(request, now);
        }
    }

    /// Reads a received foca packet for `local`, this node's identity. Pass the result to
    /// [`Self::handle_received`] once foca has accepted the packet.
    pub fn read_received(&self, packet: &[u8], local: &NodeId) -> LeaseInput {
        lease_input::read_received(packet, local, self.sent_incarnation)
    }

    /// Applies what a received packet, which foca accepted at `now`, means for the lease.
    pub fn handle_received(&mut self, input: LeaseInput, now: Millis) -> LeaseChange {
        let mut change = LeaseChange::default();
        if input.suspects_local {
            change.lost_to_suspicion = self.lease.is_fresh(now);
            self.lease.handle_self_suspected();
            self.sweep.request();
        }
        let renewed = input
            .reply_to
            .is_some_and(|request| self.lease.handle_reply(&request));
        change.expiry_changed = renewed || input.suspects_local;
        change
    }

    /// Returns when the lease ends, or `None` if no peer confirmed this node since the last
    /// suspicion.
    pub fn expires_at(&self) -> Option<Millis> {
        self.lease.expires_at()
    }

    /// Tracks the members that the failure detector declares down in `events`, observed at
    /// `now`; a repeated verdict restarts its retention. Returns whether the set changed,
    /// after which [`Self::update_minority`] is due.
    pub fn handle_events(&mut self, events: &[MembershipEvent], now: Millis) -> bool {
        let mut changed = false;
        for event in events {
            match event {
                MembershipEvent::Left {
                    member,
                    reason: LeaveReason::DeclaredDown,
                } => {
                    let name = member.id.name.clone();
                    changed |= self.declared_down_peers.insert(name, now).is_none();
                }
                MembershipEvent::Joined(member) => {
                    changed |= self.declared_down_peers.remove(&member.id.name).is_some();
                }
                _ => {}
            }
        }
        self.sweep
            .handle_declared_down_count(self.declared_down_peers.len());
        changed
    }

    /// Returns the members this node counts as declared down, newest verdict first, with the
    /// verdict's age at `now`, for the acks of its peers' sweeps.
    pub fn declared_down_ages(&self, now: Millis) -> Vec<DeclaredDown> {
        let mut peers: Vec<DeclaredDown> = self
            .declared_down_peers
            .iter()
            .map(|(name, declared_at)| DeclaredDown {
                name: name.clone(),
                age_ms: now.0.saturating_sub(declared_at.0),
            })
            .collect();
        peers.sort_by(|a, b| a.age_ms.cmp(&b.age_ms).then_with(|| a.name.cmp(&b.name)));
        peers
    }

    /// Counts as declared down the members that a peer's sweep ack lists, received at `now`,
    /// so that a node that joined after the verdicts counts the cluster they left behind.
    /// Skips members that `view` lists as live (the local node among them) and verdicts
    /// `retention` or older. A verdict keeps its original time, so that handing it on does
    /// not extend its retention. Returns whether the set grew, after which
    /// [`Self::update_minority`] is due.
    pub fn adopt_declared_down(
        &mut self,
        peers: &[DeclaredDown],
        view: &MemberView,
        now: Millis,
        retention: Duration,
    ) -> bool {
        let mut grew = false;
        for peer in peers {
            let age = Duration::from_millis(peer.age_ms);
            let listed_live = view.by_name(&peer.name).is_some_and(|info| info.is_live());
            if age >= retention || listed_live {
                continue;
            }
            let declared_at = now - age;
            match self.declared_down_peers.get_mut(&peer.name) {
                Some(known) => *known = (*known).max(declared_at),
                None => {
                    self.declared_down_peers
                        .insert(peer.name.clone(), declared_at);
                    grew = true;
                }
            }
        }
        self.sweep
            .handle_declared_down_count(self.declared_down_peers.len());
        grew
    }

    /// Returns whether the running quorum sweep `sweep` waits for an ack from `from` at
    /// `now`. Only such acks hand on declared-down members, so a replayed ack cannot.
    pub fn awaits_sweep_ack(&self, from: &NodeId, sweep: u64, now: Millis) -> bool {
        self.sweep.awaits_ack(from, sweep, now)
    }

    /// Forgets members declared down `retention` or longer before `now`, unless the node is
    /// on the minority side. Returns whether any went, after which [`Self::update_minority`]
    /// is due.
    ///
    /// A node on the minority side keeps counting them until they rejoin. If it forgot them,
    /// a node cut off from the majority would count itself the whole cluster once the
    /// retention passed, and resume turns while the majority serves its grains.
    pub fn forget_expired(&mut self, now: Millis, retention: Duration) -> bool {
        if self.minority {
            return false;
        }
        let oldest_kept = now - retention;
        let before = self.declared_down_peers.len();
        self.declared_down_peers
            .retain(|_, declared_at| *declared_at > oldest_kept);
        self.sweep
            .handle_declared_down_count(self.declared_down_peers.len());
        self.declared_down_peers.len() != before
    }

    /// Counts the members that foca suspects (`members`, from `Foca::iter_membership_state`)
    /// among the live members of `view`. Returns whether the count changed, after which
    /// [`Self::update_minority`] is due.
    ///
    /// A rise of the count requests a quorum sweep while the members suspected or declared
    /// down are at least a tenth of all members (`SUSPICION_SWEEP_SHARE`). foca reports no
    /// notification when it suspects a member, so call this after every call into foca.
    pub fn count_suspected<'a>(
        &mut self,
        members: impl Iterator<Item = &'a Member<NodeId>>,
        view: &MemberView,
    ) -> bool {
        let suspected = members
            .filter(|member| member.state() == State::Suspect)
            .filter(|member| {
                view.get(&member.id().incarnation())
                    .is_some_and(|info| info.is_live())
            })
            .count();
        let before = std::mem::replace(&mut self.suspected, suspected);
        if suspected > before {
            let failed = suspected + self.declared_down_peers.len();
            let members = view.live().count() + self.declared_down_peers.len();
            if failed * SUSPICION_SWEEP_SHARE >= members {
                self.sweep.request();
            }
        }
        before != suspected
    }

    /// Decides again whether the node is on the minority side: whether the view, with
    /// `live_members` live members (the local node and the suspected members included), is
    /// (see `lease::is_minority`), or the last quorum sweep lost the quorum. Returns the new
    /// value if it changed.
    pub fn update_minority(&mut self, live_members: usize) -> Option<bool> {
        let minority = is_minority(live_members, self.suspected, self.declared_down_peers.len())
            || self.sweep.has_lost_quorum();
        let was = std::mem::replace(&mut self.minority, minority);
        (was != minority).then_some(minority)
    }

    /// Returns whether the last [`Self::update_minority`] found the node on the minority
    /// side.
    pub fn is_minority(&self) -> bool {
        self.minority
    }

    /// Starts a quorum sweep of the live members of `view` other than the local node, if one
    /// is due at `now` (see `QuorumSweep::maybe_start`). Returns the probes to send.
    pub fn maybe_start_sweep(
        &mut self,
        now: Millis,
        view: &MemberView,
    ) -> Option<SweepStart<NodeId>> {
        let local = view.local().id;
        let targets = view
            .live()
            .map(|member| member.id)
            .filter(|id| id.name != local.name);
        self.sweep
            .maybe_start(now, targets, self.declared_down_peers.len())
    }

    /// Handles an ack of quorum sweep `sweep` from `from`, received at `now`. Returns the
    /// sweep's result if the ack made it reach the quorum, after which
    /// [`Self::update_minority`] is due.
    pub fn handle_sweep_ack(
        &mut self,
        from: &NodeId,
        sweep: u64,
        now: Millis,
    ) -> Option<SweepResult> {
        self.sweep.handle_ack(from, sweep, now)
    }

    /// Ends the running quorum sweep if its reply window has closed by `now`. Returns its
    /// result, after which [`Self::update_minority`] is due.
    pub fn handle_sweep_tick(&mut self, now: Millis) -> Option<SweepResult> {
        self.sweep.handle_tick(now)
    }

    /// Returns when [`Self::handle_sweep_tick`] and [`Self::maybe_start_sweep`] are due next,
    /// or `None` while no sweep runs or is wanted.
    pub fn next_sweep_wake(&self) -> Option<Millis> {
        self.sweep.next_wake()
    }

    /// Returns the result of the last completed quorum sweep.
    pub fn last_sweep(&self) -> Option<SweepResult> {
        self.sweep.last_result()
    }

    /// Returns how many members the failure detector declared down and this node still counts.
    pub fn declared_down_count(&self) -> usize {
        self.declared_down_peers.len()
    }

    /// Returns how many live members the failure detector suspected at the last
    /// [`Self::count_suspected`].
    pub fn suspected_count(&self) -> usize {
        self.suspected
    }
}

/// Returns whether a node with `view` acks a lease probe from `from`: unless its view lists
/// that incarnation as dead, declared down or left. foca likewise ignores a member it declared
/// down, and the view keeps a dead member for its dead retention, longer than foca does. A
/// sender the view does not list is acked, as foca replies to a member it does not know.
pub fn acks_lease_probe(view: &MemberView, from: &NodeId) -> bool {
    view.get(&from.incarnation())
        .is_none_or(|member| member.is_live())
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use foca::OwnedNotification;

    use super::*;
    use crate::membership::{DEFAULT_DEAD_RETENTION, NodeIdFields, NodeMeta, NodeState};

    fn id(name: &str, boot_id: u64) -> NodeId {
        NodeId::new(NodeIdFields {
            name: name.into(),
            boot_id,
            bump: 0,
            ip: IpAddr::from([127, 0, 0, 1]),
            gossip_port: 1,
            cluster_port: 2,
            grpc_port: 3,
        })
    }

    fn view_of(local: NodeId) -> MemberView {
        let meta = NodeMeta {
            version: 1,
            state: NodeState::Active,
            load: Default::default(),
            started_at_unix_ms: 0,
            store_id: None,
            unreachable: Vec::new(),
        };
        MemberView::new(local, &meta, DEFAULT_DEAD_RETENTION)
    }

    fn down_event(name: &str) -> MembershipEvent {
        let view = view_of(id(name, 7));
        MembershipEvent::Left {
            member: view.local(),
            reason: LeaveReason::DeclaredDown,
        }
    }

    #[test]
    fn minority_follows_declared_down_members() {
        let mut tracker = LeaseTracker::new(&MembershipConfig::default(), 1);
        let events = [down_event("node-a"), down_event("node-b")];

        assert!(tracker.handle_events(&events, Millis(1_000)));
        assert!(
            !tracker.handle_events(&events, Millis(1_100)),
            "known already"
        );
        assert_eq!(tracker.declared_down_count(), 2);
        assert_eq!(tracker.update_minority(1), Some(true));
        assert!(tracker.is_minority());
        assert_eq!(tracker.update_minority(1), None, "unchanged");

        // On the minority side the verdicts outlive their retention.
        let retention = Duration::from_secs(10);
        assert!(!tracker.forget_expired(Millis(60_000), retention));
        assert_eq!(tracker.declared_down_count(), 2);
        assert_eq!(tracker.update_minority(1), None, "still fenced");

        // node-a rejoins: two live members against one declared down.
        let rejoined = MembershipEvent::Joined(view_of(id("node-a", 8)).local());
        assert!(tracker.handle_events(&[rejoined], Millis(61_000)));
        assert_eq!(tracker.update_minority(2), Some(false));

        // The repeated verdict at 1_100 ms restarted the retention.
        assert!(tracker.forget_expired(Millis(61_000), retention));
        assert_eq!(tracker.declared_down_count(), 0);
    }

    #[test]
    fn majority_side_forgets_after_retention() {
        let mut tracker = LeaseTracker::new(&MembershipConfig::default(), 1);
        tracker.handle_events(&[down_event("node-a")], Millis(1_000));
        assert_eq!(tracker.update_minority(3), None, "three live against one");

        let retention = Duration::from_secs(10);
        assert!(!tracker.forget_expired(Millis(10_999), retention));
        assert!(tracker.forget_expired(Millis(11_000), retention));
        assert_eq!(tracker.declared_down_count(), 0);
    }

    #[test]
    fn minority_counts_suspected_live_members() {
        let mut view = view_of(id("node-a", 7));
        for peer in ["node-b", "node-c", "node-d", "node-e"] {
            view.handle_notification(OwnedNotification::MemberUp(id(peer, 7)), Millis(0));
        }
        let live_members = view.live().count();
        assert_eq!(live_members, 5);
        let mut tracker = LeaseTracker::new(&MembershipConfig::default(), 1);

        let mut members = [
            Member::alive(id("node-b", 7)),
            Member::new(id("node-c", 7), 0, State::Suspect),
            Member::new(id("node-d", 7), 0, State::Suspect),
            Member::alive(id("node-e", 7)),
            // Neither is live in the view: an older incarnation and a member it never listed.
            Member::new(id("node-e", 6), 0, State::Suspect),
            Member::new(id("node-f", 7), 0, State::Suspect),
        ];
        assert!(tracker.count_suspected(members.iter(), &view));
        assert_eq!(tracker.suspected_count(), 2);
        assert_eq!(tracker.update_minority(live_members), None, "3 against 2");

        members[3] = Member::new(id("node-e", 7), 0, State::Suspect);
        assert!(tracker.count_suspected(members.iter(), &view));
        assert_eq!(tracker.suspected_count(), 3);
        assert_eq!(
            tracker.update_minority(live_members),
            Some(true),
            "2 against 3"
        );
        assert!(!tracker.count_suspected(members.iter(), &view), "unchanged");

        members[1] = Member::new(id("node-c", 7), 1, State::Alive);
        assert!(tracker.count_suspected(members.iter(), &view));
        assert_eq!(
            tracker.update_minority(live_members),
            Some(false),
            "c refuted"
        );
    }

    /// Returns a foca `PingReq` from `src` to `dst`: `src`'s direct probe of `target` failed.
    fn ping_req(src: &NodeId, dst: &NodeId, target: &NodeId) -> Vec<u8> {
        use foca::{Codec, Header, Message, PostcardCodec};
        let header = Header {
            src: src.clone(),
            src_incarnation: 0,
            dst: dst.clone(),
            message: Message::PingReq {
                target: target.clone(),
                probe_number: 1,
            },
        };
        let mut packet = Vec::new();
        PostcardCodec
            .encode_header(&header, &mut packet)
            .expect("header encodes");
        packet
    }

    #[test]
    fn failed_probe_sweeps_and_fences_pair() {
        // The pair a and b is cut off from c, d and e. a suspects no member yet, so the view
        // counts alone leave it serving. The sweep that a's failed probe of c starts gets an
        // ack from b only, two against three.
        let (a, b, c) = (id("node-a", 7), id("node-b", 7), id("node-c", 7));
        let mut view = view_of(a.clone());
        for peer in ["node-b", "node-c", "node-d", "node-e"] {
            view.handle_notification(OwnedNotification::MemberUp(id(peer, 7)), Millis(0));
        }
        let live_members = view.live().count();
        let mut tracker = LeaseTracker::new(&MembershipConfig::default(), 1);
        assert_eq!(tracker.maybe_start_sweep(Millis(1_000), &view), None);

        tracker.handle_packet_sent(&ping_req(&a, &b, &c), Millis(1_000));
        let start = tracker
            .maybe_start_sweep(Millis(1_000), &view)
            .expect("a failed probe starts a sweep");
        assert_eq!(start.targets.len(), 4, "every live member but a");
        assert!(!start.targets.contains(&a));
        assert_eq!(
            tracker.handle_sweep_ack(&b, start.sweep, Millis(1_010)),
            None
        );
        assert_eq!(tracker.update_minority(live_members), None, "window open");

        let result = tracker
            .handle_sweep_tick(Millis(1_250))
            .expect("the window is the probe round-trip time");
        assert_eq!((result.replies, result.missing), (2, 3));
        assert!(!is_minority(live_members, 0, 0), "the counts alone");
        assert_eq!(tracker.update_minority(live_members), Some(true));
        assert!(tracker.is_minority());
    }

    #[test]
    fn new_suspicion_sweeps_in_small_cluster_only() {
        let names: Vec<String> = (0..20).map(|index| format!("node-{index:02}")).collect();
        for (members, sweeps) in [(5, true), (10, true), (11, false), (20, false)] {
            let mut view = view_of(id(&names[0], 7));
            for name in &names[1..members] {
                view.handle_notification(OwnedNotification::MemberUp(id(name, 7)), Millis(0));
            }
            let mut tracker = LeaseTracker::new(&MembershipConfig::default(), 1);
            let suspected = [Member::new(id(&names[1], 7), 0, State::Suspect)];
            assert!(tracker.count_suspected(suspected.iter(), &view));

            let start = tracker.maybe_start_sweep(Millis(1_000), &view);
            assert_eq!(start.is_some(), sweeps, "one suspected of {members}");
        }
    }

    #[test]
    fn acks_hand_on_declared_down_members() {
        // b counts the verdicts on d and e. a joined after them and lists only b and c.
        let (a, b, c) = (id("node-a", 7), id("node-b", 7), id("node-c", 7));
        let mut view = view_of(a.clone());
        for peer in [&b, &c] {
            view.handle_notification(OwnedNotification::MemberUp(peer.clone()), Millis(0));
        }
        let retention = Duration::from_secs(10);
        let mut peer = LeaseTracker::new(&MembershipConfig::default(), 1);
        peer.handle_events(&[down_event("node-d"), down_event("node-a")], Millis(1_000));
        peer.handle_events(&[down_event("node-e")], Millis(3_000));
        let handed_on = peer.declared_down_ages(Millis(4_000));
        let names: Vec<&str> = handed_on.iter().map(|peer| peer.name.as_str()).collect();
        assert_eq!(names, ["node-e", "node-a", "node-d"], "newest first");
        assert_eq!(handed_on[0].age_ms, 1_000);

        let mut tracker = LeaseTracker::new(&MembershipConfig::default(), 1);
        assert_eq!(tracker.update_minority(3), None, "three live, none down");
        assert!(tracker.adopt_declared_down(&handed_on, &view, Millis(5_000), retention));
        assert_eq!(tracker.declared_down_count(), 2, "a lists itself as live");
        assert_eq!(tracker.update_minority(3), None, "three against two");
        assert!(
            !tracker.adopt_declared_down(&handed_on, &view, Millis(5_000), retention),
            "known already"
        );

        // The verdict on e keeps its time, 4_000 ms, so its retention is not extended.
        assert!(!tracker.forget_expired(Millis(11_999), retention));
        assert!(tracker.forget_expired(Millis(12_000), retention), "d went");
        assert!(tracker.forget_expired(Millis(14_000), retention), "e went");
        let stale = [DeclaredDown {
            name: NodeName::new("node-f"),
            age_ms: 10_000,
        }];
        assert!(!tracker.adopt_declared_down(&stale, &view, Millis(14_000), retention));
    }

    #[test]
    fn suspicion_of_local_sweeps() {
        let mut view = view_of(id("node-a", 7));
        view.handle_notification(OwnedNotification::MemberUp(id("node-b", 7)), Millis(0));
        let mut tracker = LeaseTracker::new(&MembershipConfig::default(), 1);
        let input = LeaseInput {
            reply_to: None,
            suspects_local: true,
        };
        tracker.handle_received(input, Millis(1_000));
        assert!(tracker.maybe_start_sweep(Millis(1_000), &view).is_some());
    }

    #[test]
    fn probe_from_dead_member_is_not_acked() {
        let (a, b) = (id("node-a", 7), id("node-b", 7));
        let mut view = view_of(a);
        assert!(acks_lease_probe(&view, &b), "not listed yet");
        view.handle_notification(OwnedNotification::MemberUp(b.clone()), Millis(0));
        assert!(acks_lease_probe(&view, &b), "live");
        view.handle_notification(OwnedNotification::MemberDown(b.clone()), Millis(10));
        assert!(!acks_lease_probe(&view, &b), "declared down");
        assert!(
            acks_lease_probe(&view, &id("node-b", 8)),
            "a later incarnation of the name"
        );
    }

    #[test]
    fn new_tracker_has_no_lease() {
        let tracker = LeaseTracker::new(&MembershipConfig::default(), 1);
        assert_eq!(tracker.expires_at(), None);
        assert!(!tracker.is_minority());
    }
}
