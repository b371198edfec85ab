//! The membership lease of one node as its agent keeps it: fed from the foca packets it sends
//! and accepts, with the members suspected and declared down for the minority check.
//!
//! The membership agent and the simulator both drive this core, so that a simulated node
//! fences its turns by the same rules as a real one. Both pass time in; neither the tracker
//! nor the `lease` core reads a clock.

use std::collections::HashMap;
use std::time::Duration;

use foca::{Member, State};

use super::lease::{MembershipLease, is_minority, lease_duration};
use super::lease_input::{self, LeaseInput, RequestKey};
use super::{LeaveReason, MemberView, MembershipEvent, NodeId, NodeName};
use crate::clock::Millis;
use crate::runtime::MembershipConfig;

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
    /// Result of the last [`Self::update_minority`].
    minority: bool,
}

impl LeaseTracker {
    /// Creates the tracker of a node that has sent nothing yet, whose lease is not fresh.
    pub fn new(config: &MembershipConfig) -> Self {
        Self {
            lease: MembershipLease::new(lease_duration(config)),
            sent_incarnation: 0,
            declared_down_peers: HashMap::new(),
            suspected: 0,
            minority: false,
        }
    }

    /// Records a foca packet that this node sent at `now`: the request in it, if it expects
    /// a reply, and the incarnation it carries.
    pub fn handle_packet_sent(&mut self, packet: &[u8], now: Millis) {
        if let Some(incarnation) = lease_input::sender_incarnation(packet) {
            self.sent_incarnation = incarnation;
        }
        if let Some(request) = lease_input::request_sent(packet) {
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
        changed
    }

    /// Forgets members declared down `retention` or longer before `now`. Returns whether any
    /// went, after which [`Self::update_minority`] is due.
    pub fn forget_expired(&mut self, now: Millis, retention: Duration) -> bool {
        let oldest_kept = now - retention;
        let before = self.declared_down_peers.len();
        self.declared_down_peers
            .retain(|_, declared_at| *declared_at > oldest_kept);
        self.declared_down_peers.len() != before
    }

    /// Counts the members that foca suspects (`members`, from `Foca::iter_membership_state`)
    /// among the live members of `view`. Returns whether the count changed, after which
    /// [`Self::update_minority`] is due.
    ///
    /// foca reports no notification when it suspects a member, so call this after every call
    /// into foca.
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
        std::mem::replace(&mut self.suspected, suspected) != suspected
    }

    /// Decides again whether the view, with `live_members` live members (the local node and
    /// the suspected members included), is on the minority side (see `lease::is_minority`).
    /// Returns the new value if it changed.
    pub fn update_minority(&mut self, live_members: usize) -> Option<bool> {
        let minority = is_minority(live_members, self.suspected, self.declared_down_peers.len());
        let was = std::mem::replace(&mut self.minority, minority);
        (was != minority).then_some(minority)
    }

    /// Returns whether the last [`Self::update_minority`] found the view on the minority side.
    pub fn is_minority(&self) -> bool {
        self.minority
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
        let mut tracker = LeaseTracker::new(&MembershipConfig::default());
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

        // The repeated verdict at 1_100 ms restarted the retention.
        let retention = Duration::from_secs(10);
        assert!(!tracker.forget_expired(Millis(11_099), retention));
        assert!(tracker.forget_expired(Millis(11_100), retention));
        assert_eq!(tracker.declared_down_count(), 0);
        assert_eq!(tracker.update_minority(1), Some(false));
    }

    #[test]
    fn minority_counts_suspected_live_members() {
        let mut view = view_of(id("node-a", 7));
        for peer in ["node-b", "node-c", "node-d", "node-e"] {
            view.handle_notification(OwnedNotification::MemberUp(id(peer, 7)), Millis(0));
        }
        let live_members = view.live().count();
        assert_eq!(live_members, 5);
        let mut tracker = LeaseTracker::new(&MembershipConfig::default());

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

    #[test]
    fn new_tracker_has_no_lease() {
        let tracker = LeaseTracker::new(&MembershipConfig::default());
        assert_eq!(tracker.expires_at(), None);
        assert!(!tracker.is_minority());
    }
}
