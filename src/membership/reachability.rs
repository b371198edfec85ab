//! Since when this node has had no ready cluster session to each live peer, and the peers it
//! therefore reports as unreachable.
//!
//! Gossip runs over UDP and grain calls over the TCP sessions of ractor_cluster, so a peer can
//! acknowledge every probe while no node can open a session to it (a firewall on its cluster port,
//! a wedged listener). The failure detector keeps such a peer alive. This core measures, per
//! peer incarnation, how long the peer has been live without a ready session. The agent
//! broadcasts the peers past `unreachable_after` in its meta, and the `unreachable_votes`
//! module counts those reports. Only one side of a pair dials, but both sides see that no
//! session is ready, so both can report.

use std::collections::HashMap;
use std::time::Duration;

use super::Incarnation;
use super::lifecycle::MAX_UNREACHABLE_REPORT;
use crate::clock::Millis;

/// One live peer as the glue observes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSession {
    /// The peer's incarnation.
    pub peer: Incarnation,
    /// Whether a ready cluster session to the peer exists.
    pub ready: bool,
}

/// The time since which each live peer has had no ready session.
#[derive(Clone, Debug)]
pub struct Reachability {
    unreachable_after: Duration,
    /// Live peers without a ready session, with the time of the first observation without one.
    without_session_since: HashMap<Incarnation, Millis>,
}

impl Reachability {
    /// Creates a tracker that reports a peer after `unreachable_after` without a session.
    pub fn new(unreachable_after: Duration) -> Self {
        Self {
            unreachable_after,
            without_session_since: HashMap::new(),
        }
    }

    /// Records the live peers observed at `now` and whether each has a ready session.
    ///
    /// A peer's clock starts at the first observation without a session and restarts when a
    /// session is ready. Peers missing from `peers` (no longer live) are forgotten, so a
    /// restarted peer, which is a new incarnation, starts a new clock.
    pub fn observe(&mut self, peers: impl IntoIterator<Item = PeerSession>, now: Millis) {
        let mut without_session = HashMap::new();
        for PeerSession { peer, ready } in peers {
            if ready {
                continue;
            }
            let since = self
                .without_session_since
                .get(&peer)
                .copied()
                .unwrap_or(now);
            without_session.insert(peer, since);
        }
        self.without_session_since = without_session;
    }

    /// Returns how long `peer` has been observed without a ready session, or `None` if it had
    /// one at the last observation or is not live.
    pub fn without_session_for(&self, peer: &Incarnation, now: Millis) -> Option<Duration> {
        let since = self.without_session_since.get(peer)?;
        Some(now.saturating_since(*since))
    }

    /// Returns the peers without a ready session for at least `unreachable_after` at `now`:
    /// the longest without one first, then by name, at most [`MAX_UNREACHABLE_REPORT`].
    pub fn report(&self, now: Millis) -> Vec<Incarnation> {
        let mut overdue: Vec<(Millis, &Incarnation)> = self
            .without_session_since
            .iter()
            .filter(|(_, since)| now.saturating_since(**since) >= self.unreachable_after)
            .map(|(peer, since)| (*since, peer))
            .collect();
        overdue.sort();
        overdue
            .into_iter()
            .take(MAX_UNREACHABLE_REPORT)
            .map(|(_, peer)| peer.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(10);

    fn peer(name: &str, boot_id: u64) -> Incarnation {
        Incarnation {
            name: name.into(),
            boot_id,
        }
    }

    fn session(name: &str, boot_id: u64, ready: bool) -> PeerSession {
        PeerSession {
            peer: peer(name, boot_id),
            ready,
        }
    }

    #[test]
    fn report_follows_observations() {
        // Each step observes the peers at a time, then checks the report at that time.
        let steps: Vec<(u64, Vec<PeerSession>, Vec<Incarnation>)> = vec![
            // Clocks start at the first observation without a session.
            (
                0,
                vec![session("a", 1, false), session("b", 1, true)],
                vec![],
            ),
            (
                9_999,
                vec![session("a", 1, false), session("b", 1, true)],
                vec![],
            ),
            (
                10_000,
                vec![session("a", 1, false), session("b", 1, true)],
                vec![peer("a", 1)],
            ),
            // b loses its session: its clock starts now, a stays reported.
            (
                12_000,
                vec![session("a", 1, false), session("b", 1, false)],
                vec![peer("a", 1)],
            ),
            (
                22_000,
                vec![session("a", 1, false), session("b", 1, false)],
                vec![peer("a", 1), peer("b", 1)],
            ),
            // A ready session restarts a's clock.
            (
                22_500,
                vec![session("a", 1, true), session("b", 1, false)],
                vec![peer("b", 1)],
            ),
            (
                23_000,
                vec![session("a", 1, false), session("b", 1, false)],
                vec![peer("b", 1)],
            ),
            // b restarted: the new incarnation starts a new clock.
            (
                24_000,
                vec![session("a", 1, false), session("b", 2, false)],
                vec![],
            ),
            (
                33_000,
                vec![session("a", 1, false), session("b", 2, false)],
                vec![peer("a", 1)],
            ),
            // A peer that is no longer live is forgotten.
            (34_000, vec![session("b", 2, false)], vec![peer("b", 2)]),
        ];

        let mut reachability = Reachability::new(AFTER);
        for (at, peers, expected) in steps {
            reachability.observe(peers, Millis(at));
            assert_eq!(reachability.report(Millis(at)), expected, "at {at} ms");
        }
    }

    #[test]
    fn report_is_bounded_longest_first() {
        let mut reachability = Reachability::new(AFTER);
        let names: Vec<String> = (0..12).map(|index| format!("node-{index:02}")).collect();
        // node-11 is observed first, so it has been without a session the longest.
        reachability.observe([session("node-11", 1, false)], Millis(0));
        let all = names.iter().map(|name| session(name, 1, false));
        reachability.observe(all, Millis(1_000));

        let report = reachability.report(Millis(20_000));

        assert_eq!(report.len(), MAX_UNREACHABLE_REPORT);
        assert_eq!(report[0], peer("node-11", 1));
        assert_eq!(report[1], peer("node-00", 1));
        assert_eq!(report[7], peer("node-06", 1));
    }

    #[test]
    fn without_session_for_counts_from_first_miss() {
        let mut reachability = Reachability::new(AFTER);
        reachability.observe(
            [session("a", 1, false), session("b", 1, true)],
            Millis(1_000),
        );
        reachability.observe(
            [session("a", 1, false), session("b", 1, true)],
            Millis(4_000),
        );

        let a = reachability.without_session_for(&peer("a", 1), Millis(4_000));
        let b = reachability.without_session_for(&peer("b", 1), Millis(4_000));
        let gone = reachability.without_session_for(&peer("c", 1), Millis(4_000));

        assert_eq!(a, Some(Duration::from_secs(3)));
        assert_eq!(b, None);
        assert_eq!(gone, None);
    }
}
