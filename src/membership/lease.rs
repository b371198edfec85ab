//! The membership lease: whether this node may still run turns, given when its peers last
//! confirmed that they hear it.
//!
//! # Why a lease
//!
//! Other members declare this node down, and reactivate its grains, once their failure
//! detector has failed to reach it for a suspicion timeout. A node cut off from the others
//! learns nothing of that until the cut heals, so without a fence its activations would go on
//! running turns beside the new ones. As in Orleans, where a node that the others declared
//! dead stops itself, the node fences itself first: it runs turns only while its lease is
//! fresh, and the lease ends before the others can declare it down.
//!
//! # Protocol
//!
//! 1. Every request this node sends that a live peer replies to (a probe `Ping`, an indirect
//!    `PingReq` or `IndirectPing`, an `Announce`) is recorded with the time it was sent.
//! 2. A reply from that peer to that request (`Ack`, `ForwardedAck`, `IndirectAck`, `Feed`)
//!    confirms the node: the peer received the request after it was sent, and a peer that had
//!    declared this node down would not have replied. The lease then runs from the request's
//!    send time, not from the reply's arrival, so a reply that waited in a socket (during a
//!    pause, say) extends nothing.
//! 3. The lease is fresh while `now < send time of the latest confirmed request + duration`.
//! 4. A message that shows a peer suspecting this node drops the lease and the requests sent
//!    so far: only a request sent after the suspicion was seen, and so after foca refuted it,
//!    can confirm the node again.
//!
//! # Why the duration is safe
//!
//! Let `s` be the send time of the last confirmed request, and let the cut start at `c >= s`.
//! A peer declares the node down only after a probe of it fails, which it notices one probe
//! period after the probe started, and then a whole suspicion timeout later. A probe that
//! started before `c - probe_rtt` succeeds, so the earliest verdict comes at
//! `c - probe_rtt + probe_period + suspect_to_down`. [`lease_duration`] is `suspect_to_down`,
//! so the lease ends at least `probe_period - probe_rtt` before that verdict (500 ms with the
//! default settings). That margin is what a turn that started just before the lease ended
//! has to finish in.
//!
//! # A node on the minority side
//!
//! Once the failure detector of a node cut off from the others has declared them down, the
//! node has no peer left to confirm it, and a node with no live peer holds no lease (a lone
//! node must run turns). A group of two or more nodes cut off together is worse off: each
//! replies to the other's probes, so their leases stay fresh while the other side declares
//! them down. So a node is fenced as well while the members that its failure detector
//! suspects or declared down outnumber the live members it does not suspect, itself included
//! ([`is_minority`]): it is more likely the side that was cut off.
//!
//! Counting suspected members ends the group's turns before the other side's verdict in most
//! cases. The group's own probes of the other side fail from the cut on, and each failed probe
//! makes a member suspected one probe period after it started, which the group shares by
//! gossip. The other side's verdict on the group comes a whole suspicion timeout after its
//! own first failed probe. So the group is fenced in time if it suspects more than half the
//! cluster within about one suspicion timeout of its first failed probe. A group of `g` of
//! `n` members probes `g` members a period between them, so that takes at least
//! `n / (2 * g)` periods.
//!
//! The cost is fencing a node on the majority side, which this rule does only while it
//! suspects more than half of the other members at once, because the live members it does not
//! suspect include itself. A stalled peer of a three-node cluster leaves two members not
//! suspected against one suspected, so turns go on. The survivor of a two-node cluster whose
//! peer crashed counts one against one, first suspected and then declared down. It goes on
//! serving once the verdict has made it a lone node, and its lease ends meanwhile because its
//! probes get no reply. Suspicions that other members gossip count as well, so a healthy node is
//! fenced if more than half of the others are suspected before they refute it. In a partition
//! into two equal halves neither side is fenced.
//!
//! # Quorum sweep
//!
//! The minority rule alone does not fence a group of two or more cut off together in time.
//! Each node probes its members one a period, in a shuffled order that includes the rest of
//! its group and members it suspects already. So the group may take longer than the
//! suspicion timeout to suspect more than half the cluster. A quorum sweep probes every member
//! at once to learn whether it still hears this node (`quorum_sweep` module):
//!
//! 1. A node requests a sweep in three cases. A probe of its own gets no reply (foca then
//!    sends `PingReq`, one probe round-trip time after the `Ping`). A message shows a peer
//!    suspecting it. Or a member turns suspected, by its own probe or by gossip, while the
//!    members suspected or declared down are at least a tenth of all members.
//! 2. At most one sweep starts per probe period. It sends a `LeaseProbe` with a new sweep id
//!    to every member the view lists as live, suspected ones included, on the gossip socket
//!    and authenticated like the rest of the gossip.
//! 3. A member acks with a `LeaseProbeAck` unless its view lists the prober as dead. foca
//!    likewise ignores a member it declared down, and it replies to a member it does not know.
//!    The ack lists the members that the acking member counts as declared down, with each
//!    verdict's age, newest first, as many as fit in the probe's length.
//! 4. The sweep counts the acks of its id that arrive within the probe round-trip time of its
//!    start. It loses the quorum if the acks, the local node included, are fewer than the
//!    members that did not ack plus the members declared down, the count of [`is_minority`]. A
//!    tie keeps the quorum. The sweep ends early once its acks reach the quorum. The prober
//!    counts the declared-down members an ack lists as its own, unless its view lists them as
//!    live, until their verdict is older than the dead retention.
//! 5. While the last sweep lost the quorum, the node counts as the minority side and its turns
//!    wait. It sweeps again every probe period, and only a sweep that reaches the quorum lifts
//!    the fence.
//!
//! Handing on the verdicts matters for a node that joins after them. A pair node that learns
//! its verdict in a one-way partition stops, restarts and joins through its partner, whose
//! member list leaves out the members the partner declared down. Without the partner's list of
//! verdicts, the new node would count a smaller cluster whose quorum the pair reaches alone.
//!
//! A pair cut off from three others gets one ack, from its partner: two against three. A pair
//! node's first probe of the other side starts at most two probe periods after the cut, when
//! its shuffled order put its partner last in one round and first in the next. So the pair is
//! fenced at most `2 * probe_period + 2 * probe_rtt` after the cut, or as soon as its partner's
//! suspicion reaches it, while the other side's earliest verdict comes
//! `probe_period - probe_rtt + suspect_to_down` after the cut. The sweep is in time while
//! `suspect_to_down > probe_period + 3 * probe_rtt` (2.5 s against 1.5 s with the default
//! settings). A sweep on the other side gets three acks of five and fences nothing.
//!
//! Cost: a sweep of an `n`-node cluster sends `n - 1` probes of 512 bytes and receives up to
//! `n - 1` acks of about 100 bytes plus the declared-down members they list, at most 512
//! bytes each. Without failed probes or suspicions no node sweeps. One crashed member makes
//! the few nodes whose probes of it fail sweep, each at most once a probe period, until the
//! verdict. The suspicion rule of step 1 also makes every node sweep once per new suspicion in
//! clusters of up to ten members, and in larger clusters once a tenth of the members are
//! suspected or declared down. A node that lost the quorum sweeps every probe period until it
//! regains it, so a cut-off group sends `n - 1` probes per node and period until the
//! partition heals.
//!
//! In the simulator, five nodes had a pair cut off. Without the sweep, the pair started turns
//! after a verdict, or declared a majority node down while it could still start turns, in 14
//! of seeds 1 to 200 of a full partition and in 27 of a one-way partition. With the sweep,
//! none did. Before the acks handed on verdicts, 24 of the one-way runs still failed, all
//! after a pair node had restarted.
//!
//! NOTE: a sweep fences a node only once the node finds a probe unanswered or hears a
//! suspicion. A node of a larger group that keeps probing its own group for longer than
//! `suspect_to_down - probe_period - 3 * probe_rtt` after the cut, and hears no suspicion of
//! the other side from the rest of the group in that time, can still start turns after the
//! other side's verdict. Packet loss can also drop acks, and a majority node that gets too few
//! of them within the round-trip time waits one probe period for the next sweep.
//! An ack lists only the declared-down members that fit in 512 bytes, at least four
//! with names of 63 bytes, so a new node of a group that declared more members down may still
//! count too small a cluster.
//!
//! NOTE: the margin does not cover a suspicion that started before the cut and never reached
//! this node (a probe lost to packet loss just before a full partition). Then a peer may
//! declare the node down up to a suspicion timeout after that probe, while the lease still
//! runs. Turns longer than the margin are not fenced either: a turn is checked when it
//! starts, not while it runs. Only turns and timer ticks are fenced, so a grain's `activate`
//! hook, which reads its state, still runs on a fenced node.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use crate::clock::Millis;
use crate::runtime::MembershipConfig;

/// Most requests kept while they wait for a reply. Requests older than the lease duration can
/// no longer renew it and go first; past this count the oldest go too.
const MAX_PENDING_REQUESTS: usize = 256;

/// Returns the lease duration for `config`: the suspicion timeout. The module notes show why
/// that ends the lease at least `probe_period - probe_rtt` before a peer can declare the node
/// down. The settings require `probe_rtt < probe_period`, so that margin is positive.
pub fn lease_duration(config: &MembershipConfig) -> Duration {
    Duration::from_millis(config.suspect_to_down_ms)
}

/// Returns whether a view is on the minority side of a partition, whose turns stay fenced:
/// whether its `suspected` and `declared_down` members outnumber the rest of its
/// `live_members`. `live_members` counts the local node and the suspected members, which are
/// still live; members that left gracefully count nowhere.
pub fn is_minority(live_members: usize, suspected: usize, declared_down: usize) -> bool {
    live_members.saturating_sub(suspected) < suspected + declared_down
}

/// What decides whether this node's lease lets turns start: the agent's state and when the
/// lease ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseStatus {
    /// The agent stopped (it left, or every handle was dropped), so no lease is kept.
    pub stopped: bool,
    /// The node is on the minority side, by its view's counts (see [`is_minority`]) or by its
    /// last quorum sweep.
    pub minority: bool,
    /// The view lists a live peer. A node that never joined, or is alone, holds no lease.
    pub joined: bool,
    /// When the lease ends; `None` while no peer has confirmed this node.
    pub expires_at: Option<Millis>,
}

impl LeaseStatus {
    /// Returns whether turns may start at `now`. They may always once the agent stopped, and
    /// never on the minority side. Otherwise a node that has not joined holds no lease and may,
    /// and a joined node may only while its lease has not ended.
    pub fn is_fresh_at(&self, now: Millis) -> bool {
        if self.stopped {
            return true;
        }
        if self.minority {
            return false;
        }
        if !self.joined {
            return true;
        }
        self.expires_at.is_some_and(|end| now < end)
    }
}

/// The lease state of one node: requests that wait for a reply, and the send time of the
/// latest request a peer replied to. `K` names one request, such as the peer and the probe
/// number; the agent builds it from foca's headers.
#[derive(Debug)]
pub struct MembershipLease<K> {
    duration: Duration,
    /// Send time of each request that has no reply yet.
    pending: HashMap<K, Millis>,
    /// Send time of the latest request that got a reply, since the last suspicion.
    confirmed_at: Option<Millis>,
}

impl<K: Eq + Hash> MembershipLease<K> {
    /// Creates a lease of `duration` that has never been confirmed, so it is not fresh.
    pub fn new(duration: Duration) -> Self {
        Self {
            duration,
            pending: HashMap::new(),
            confirmed_at: None,
        }
    }

    /// Returns the lease duration.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Records that request `key` went out at `now`.
    pub fn handle_request_sent(&mut self, key: K, now: Millis) {
        if self.pending.len() >= MAX_PENDING_REQUESTS {
            let oldest_useful = now - self.duration;
            self.pending.retain(|_, sent_at| *sent_at > oldest_useful);
        }
        if self.pending.len() >= MAX_PENDING_REQUESTS
            && let Some(oldest) = self.pending.values().min().copied()
        {
            self.pending.retain(|_, sent_at| *sent_at > oldest);
        }
        self.pending.insert(key, now);
    }

    /// Handles a reply to request `key` and returns whether it moved the lease's start
    /// forward. A reply to a request that was never recorded, or that was sent before the
    /// last suspicion, changes nothing.
    pub fn handle_reply(&mut self, key: &K) -> bool {
        let Some(sent_at) = self.pending.remove(key) else {
            return false;
        };
        if self.confirmed_at.is_some_and(|at| at >= sent_at) {
            return false;
        }
        self.confirmed_at = Some(sent_at);
        true
    }

    /// Drops the lease, and every request sent so far, because a peer suspects this node.
    pub fn handle_self_suspected(&mut self) {
        self.confirmed_at = None;
        self.pending.clear();
    }

    /// Returns when the lease ends, or `None` if no request was confirmed since the last
    /// suspicion.
    pub fn expires_at(&self) -> Option<Millis> {
        self.confirmed_at.map(|at| at + self.duration)
    }

    /// Returns whether the lease is fresh at `now`.
    pub fn is_fresh(&self, now: Millis) -> bool {
        self.expires_at().is_some_and(|end| now < end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DURATION: Duration = Duration::from_millis(3_000);

    fn lease() -> MembershipLease<(&'static str, u8)> {
        MembershipLease::new(DURATION)
    }

    #[test]
    fn new_lease_is_not_fresh() {
        let lease = lease();
        assert!(!lease.is_fresh(Millis(0)));
        assert_eq!(lease.expires_at(), None);
    }

    #[test]
    fn reply_starts_lease_at_send_time() {
        let mut lease = lease();
        lease.handle_request_sent(("node-1", 1), Millis(1_000));
        assert!(lease.handle_reply(&("node-1", 1)));
        assert_eq!(lease.expires_at(), Some(Millis(4_000)));
        assert!(lease.is_fresh(Millis(3_999)));
        assert!(!lease.is_fresh(Millis(4_000)));
    }

    #[test]
    fn late_reply_extends_nothing() {
        // A reply that waited in the socket through a pause counts from its request.
        let mut lease = lease();
        lease.handle_request_sent(("node-1", 1), Millis(1_000));
        assert!(lease.handle_reply(&("node-1", 1)));
        assert!(!lease.is_fresh(Millis(10_000)));
    }

    #[test]
    fn unknown_reply_is_ignored() {
        let mut lease = lease();
        lease.handle_request_sent(("node-1", 1), Millis(1_000));
        assert!(!lease.handle_reply(&("node-2", 1)), "other peer");
        assert!(!lease.handle_reply(&("node-1", 2)), "other probe");
        assert!(!lease.is_fresh(Millis(1_500)));
    }

    #[test]
    fn duplicate_reply_counts_once() {
        let mut lease = lease();
        lease.handle_request_sent(("node-1", 1), Millis(1_000));
        assert!(lease.handle_reply(&("node-1", 1)));
        assert!(!lease.handle_reply(&("node-1", 1)));
    }

    #[test]
    fn older_reply_keeps_newer_start() {
        let mut lease = lease();
        lease.handle_request_sent(("node-1", 1), Millis(1_000));
        lease.handle_request_sent(("node-2", 1), Millis(2_000));
        assert!(lease.handle_reply(&("node-2", 1)));
        assert!(!lease.handle_reply(&("node-1", 1)));
        assert_eq!(lease.expires_at(), Some(Millis(5_000)));
    }

    #[test]
    fn suspicion_drops_lease_and_pending_requests() {
        let mut lease = lease();
        lease.handle_request_sent(("node-1", 1), Millis(1_000));
        lease.handle_request_sent(("node-2", 1), Millis(1_100));
        assert!(lease.handle_reply(&("node-1", 1)));
        lease.handle_self_suspected();
        assert!(!lease.is_fresh(Millis(1_200)));
        assert!(
            !lease.handle_reply(&("node-2", 1)),
            "a request sent before the suspicion confirms nothing"
        );
        lease.handle_request_sent(("node-2", 2), Millis(1_300));
        assert!(lease.handle_reply(&("node-2", 2)));
        assert!(lease.is_fresh(Millis(1_400)));
    }

    #[test]
    fn pending_requests_stay_bounded() {
        let mut lease: MembershipLease<u32> = MembershipLease::new(DURATION);
        for probe in 0..10_000u32 {
            lease.handle_request_sent(probe, Millis(u64::from(probe)));
        }
        assert!(lease.pending.len() <= MAX_PENDING_REQUESTS);
        assert!(lease.handle_reply(&9_999), "the newest request is kept");
    }

    #[test]
    fn minority_by_view_counts() {
        // (live members with the local node and the suspected ones, suspected, declared
        // down, minority)
        let cases = [
            (1, 0, 0, false),
            (1, 0, 1, false),
            (1, 0, 2, true),
            (2, 0, 1, false),
            (2, 0, 2, false),
            (2, 0, 3, true),
            (3, 0, 2, false),
            (3, 1, 1, false),
            (4, 1, 1, false),
            (4, 2, 1, true),
            (5, 3, 0, true),
            (5, 2, 0, false),
        ];
        for (live_members, suspected, declared_down, minority) in cases {
            assert_eq!(
                is_minority(live_members, suspected, declared_down),
                minority,
                "{live_members} live, {suspected} suspected, {declared_down} declared down"
            );
        }
    }

    #[test]
    fn stalled_peer_of_three_does_not_fence() {
        // Three live members, one of them suspected: two not suspected against one.
        assert!(!is_minority(3, 1, 0));
        // The verdict on the stalled peer: two live against one declared down.
        assert!(!is_minority(2, 0, 1));
    }

    #[test]
    fn survivor_of_two_keeps_serving() {
        // The crashed peer, suspected and then declared down, never outnumbers the survivor.
        assert!(!is_minority(2, 1, 0), "peer suspected");
        assert!(!is_minority(1, 0, 1), "peer declared down");
    }

    #[test]
    fn pair_cut_off_from_three_is_fenced() {
        // Each of the pair counts itself and the other as not suspected.
        assert!(!is_minority(5, 2, 0), "two of the three others suspected");
        assert!(is_minority(5, 3, 0), "all three others suspected");
        assert!(is_minority(4, 2, 1), "one of them declared down already");
        // The three on the other side suspect the pair, as the pair suspected two of them
        // above, and keep serving once they declared it down.
        assert!(!is_minority(3, 0, 2));
    }

    #[test]
    fn equal_halves_are_not_fenced() {
        assert!(!is_minority(4, 2, 0), "two of four suspected");
        assert!(!is_minority(2, 0, 2), "two of four declared down");
    }

    #[test]
    fn status_decides_turns_by_state() {
        let fresh_until = Some(Millis(2_000));
        // (stopped, minority, joined, expires_at, fresh at 1_000 ms)
        let cases = [
            (true, true, true, None, true),
            (false, true, true, fresh_until, false),
            (false, true, false, None, false),
            (false, false, false, None, true),
            (false, false, true, None, false),
            (false, false, true, fresh_until, true),
            (false, false, true, Some(Millis(1_000)), false),
        ];
        for (stopped, minority, joined, expires_at, fresh) in cases {
            let status = LeaseStatus {
                stopped,
                minority,
                joined,
                expires_at,
            };
            assert_eq!(status.is_fresh_at(Millis(1_000)), fresh, "{status:?}");
        }
    }

    #[test]
    fn lease_ends_before_earliest_verdict() {
        // The bound of the module notes, for the default settings and the fastest valid ones:
        // the lease ends no later than the earliest down verdict minus the margin.
        for (probe_period_ms, probe_rtt_ms, suspect_to_down_ms) in [
            (1_000, 300, 3_000),
            (200, 80, 600),
            (500, 200, 3_000),
            (50, 49, 1),
        ] {
            let config = MembershipConfig {
                probe_period_ms,
                probe_rtt_ms,
                suspect_to_down_ms,
                ..MembershipConfig::default()
            };
            let earliest_verdict = probe_period_ms - probe_rtt_ms + suspect_to_down_ms;
            let lease_ms = lease_duration(&config).as_millis() as u64;
            assert!(
                lease_ms < earliest_verdict,
                "lease of {lease_ms} ms against a verdict after {earliest_verdict} ms"
            );
        }
    }
}
