//! Cluster connections that have not authenticated yet: their deadlines and their cap.
//!
//! ractor_cluster 0.16 has no handshake timeout, so a connection that never sends a valid
//! handshake would keep its session (about 67 KiB measured on a debug build) until the peer
//! closes it. This table tracks every accepted connection from accept to authentication,
//! and reports the sessions whose deadline passed, so the glue can stop them. Time is passed
//! in, so the table does no I/O.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Limits on connections that have not authenticated yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Time an accepted connection has to authenticate before the node closes it.
    pub timeout: Duration,
    /// Connections that may wait to authenticate at once; the node closes further ones at once.
    pub max_pending: usize,
}

/// The reason the node closed an inbound cluster connection before it authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The handshake failed: a malformed or oversized frame, a wrong cookie, a duplicate
    /// session, or the peer closed the connection.
    HandshakeFailed,
    /// The connection did not authenticate before the handshake deadline.
    HandshakeTimeout,
    /// Too many connections were already waiting to authenticate.
    PendingLimit,
}

impl RejectReason {
    /// Every reason, in the order the metrics list them.
    pub const ALL: [RejectReason; 3] = [
        RejectReason::HandshakeFailed,
        RejectReason::HandshakeTimeout,
        RejectReason::PendingLimit,
    ];

    /// Returns the value of the `reason` label of `gristmill_rejected_frames_total`.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::HandshakeFailed => "handshake_failed",
            RejectReason::HandshakeTimeout => "handshake_timeout",
            RejectReason::PendingLimit => "pending_limit",
        }
    }
}

/// Counts of cluster connections closed before they authenticated, by reason.
#[derive(Debug, Default)]
pub struct RejectedConnections {
    failed: AtomicU64,
    timed_out: AtomicU64,
    over_limit: AtomicU64,
}

impl RejectedConnections {
    fn slot(&self, reason: RejectReason) -> &AtomicU64 {
        match reason {
            RejectReason::HandshakeFailed => &self.failed,
            RejectReason::HandshakeTimeout => &self.timed_out,
            RejectReason::PendingLimit => &self.over_limit,
        }
    }

    /// Counts one connection closed for `reason` and returns the new count of that reason.
    pub fn record(&self, reason: RejectReason) -> u64 {
        self.slot(reason).fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Returns how many connections were closed for `reason`.
    pub fn get(&self, reason: RejectReason) -> u64 {
        self.slot(reason).load(Ordering::Relaxed)
    }

    /// Returns how many connections were closed for any reason.
    pub fn total(&self) -> u64 {
        RejectReason::ALL
            .iter()
            .map(|reason| self.get(*reason))
            .sum()
    }
}

/// A connection admitted to wait for authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// Label to hand to ractor_cluster as the peer label. ractor_cluster reports it back as
    /// the session's `peer_addr`, which ties the session to this entry. It contains the peer
    /// address and a sequence number, so it is unique even if a peer port is reused.
    pub label: String,
}

/// The connection was not admitted, because `pending` connections already wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingLimitReached {
    pub pending: usize,
}

/// How a tracked session ended, as far as the table knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The node stopped it because its deadline passed.
    TimedOut,
    /// It ended before its deadline without authenticating.
    BeforeDeadline,
    /// The table did not track it: an outbound session, or one that authenticated.
    Untracked,
}

#[derive(Debug)]
struct Pending<S> {
    label: String,
    deadline: Instant,
    /// ractor_cluster's node id of the session, once the session has opened.
    node_id: Option<u64>,
    session: Option<S>,
}

/// Accepted connections from accept until they authenticate or close. `S` is the handle
/// that stops a session (an actor reference in the node, a plain value in tests).
#[derive(Debug)]
pub(crate) struct HandshakeTable<S> {
    limits: HandshakeLimits,
    next_sequence: u64,
    /// Connections before their deadline, by sequence number. All share one timeout, so
    /// accept order is deadline order.
    waiting: BTreeMap<u64, Pending<S>>,
    /// Connections past their deadline whose session has not ended yet.
    expired: HashMap<u64, Pending<S>>,
    sequence_by_label: HashMap<String, u64>,
    sequence_by_node: HashMap<u64, u64>,
}

impl<S: Clone> HandshakeTable<S> {
    pub(crate) fn new(limits: HandshakeLimits) -> Self {
        Self {
            limits,
            next_sequence: 0,
            waiting: BTreeMap::new(),
            expired: HashMap::new(),
            sequence_by_label: HashMap::new(),
            sequence_by_node: HashMap::new(),
        }
    }

    /// Returns how many connections wait to authenticate or to close after their deadline.
    pub(crate) fn pending(&self) -> usize {
        self.waiting.len() + self.expired.len()
    }

    /// Admits a connection from `peer` accepted at `now`, unless the cap is reached.
    pub(crate) fn admit(
        &mut self,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<Admitted, PendingLimitReached> {
        let pending = self.pending();
        if pending >= self.limits.max_pending {
            return Err(PendingLimitReached { pending });
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let label = format!("{peer} (connection {sequence})");
        self.sequence_by_label.insert(label.clone(), sequence);
        self.waiting.insert(
            sequence,
            Pending {
                label: label.clone(),
                deadline: now + self.limits.timeout,
                node_id: None,
                session: None,
            },
        );
        Ok(Admitted { label })
    }

    fn entry_mut(&mut self, sequence: u64) -> Option<&mut Pending<S>> {
        match self.waiting.get_mut(&sequence) {
            Some(entry) => Some(entry),
            None => self.expired.get_mut(&sequence),
        }
    }

    fn remove(&mut self, sequence: u64) -> Option<(Pending<S>, bool)> {
        let (entry, was_expired) = match self.waiting.remove(&sequence) {
            Some(entry) => (entry, false),
            None => (self.expired.remove(&sequence)?, true),
        };
        self.sequence_by_label.remove(&entry.label);
        if let Some(node_id) = entry.node_id {
            self.sequence_by_node.remove(&node_id);
        }
        Some((entry, was_expired))
    }

    /// Records that the session labelled `label` opened as `node_id`. Returns the session
    /// when its deadline has already passed, so the caller stops it at once.
    pub(crate) fn opened(&mut self, label: &str, node_id: u64, session: S) -> Option<S> {
        let sequence = *self.sequence_by_label.get(label)?;
        self.sequence_by_node.insert(node_id, sequence);
        let overdue = self.expired.contains_key(&sequence);
        let entry = self.entry_mut(sequence)?;
        entry.node_id = Some(node_id);
        entry.session = Some(session.clone());
        overdue.then_some(session)
    }

    /// Forgets the session `node_id`, because it authenticated.
    pub(crate) fn authenticated(&mut self, node_id: u64) {
        if let Some(sequence) = self.sequence_by_node.get(&node_id).copied() {
            self.remove(sequence);
        }
    }

    /// Forgets the session `node_id`, which ended, and returns how it ended.
    pub(crate) fn ended(&mut self, node_id: u64) -> Ended {
        let Some(sequence) = self.sequence_by_node.get(&node_id).copied() else {
            return Ended::Untracked;
        };
        match self.remove(sequence) {
            Some((_, true)) => Ended::TimedOut,
            Some((_, false)) => Ended::BeforeDeadline,
            None => Ended::Untracked,
        }
    }

    /// Forgets the connection labelled `label` if no session was opened for it, because its
    /// stream was dropped. That happens when ractor_cluster fails to start the session, or
    /// when the session ends before it is reported as opened. A session that was reported
    /// is forgotten when it ends or authenticates instead.
    pub(crate) fn stream_dropped(&mut self, label: &str) {
        let Some(sequence) = self.sequence_by_label.get(label).copied() else {
            return;
        };
        let opened = self
            .entry_mut(sequence)
            .is_some_and(|entry| entry.node_id.is_some());
        if !opened {
            self.remove(sequence);
        }
    }

    /// Moves every connection whose deadline is at or before `now` to the expired set and
    /// returns the sessions to stop. A connection whose session has not opened yet is
    /// stopped when it opens.
    pub(crate) fn expire_due(&mut self, now: Instant) -> Vec<(String, S)> {
        let mut to_stop = Vec::new();
        while let Some(entry) = self.waiting.first_entry() {
            if entry.get().deadline > now {
                break;
            }
            let (sequence, entry) = entry.remove_entry();
            if let Some(session) = &entry.session {
                to_stop.push((entry.label.clone(), session.clone()));
            }
            self.expired.insert(sequence, entry);
        }
        to_stop
    }

    /// Returns the earliest deadline of a connection still waiting, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.waiting.values().next().map(|entry| entry.deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn table(max_pending: usize) -> HandshakeTable<&'static str> {
        HandshakeTable::new(HandshakeLimits {
            timeout: TIMEOUT,
            max_pending,
        })
    }

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn session_past_deadline_is_stopped() {
        let start = Instant::now();
        let mut table = table(8);
        let admitted = table.admit(peer(1000), start).expect("below the cap");
        assert_eq!(table.opened(&admitted.label, 7, "session-7"), None);

        assert!(table.expire_due(start + TIMEOUT / 2).is_empty());
        let stopped = table.expire_due(start + TIMEOUT);

        assert_eq!(stopped, vec![(admitted.label.clone(), "session-7")]);
        assert_eq!(table.pending(), 1, "counted until the session ends");
        assert_eq!(table.ended(7), Ended::TimedOut);
        assert_eq!(table.pending(), 0);
    }

    #[test]
    fn authenticated_session_is_not_stopped() {
        let start = Instant::now();
        let mut table = table(8);
        let admitted = table.admit(peer(1000), start).expect("below the cap");
        table.opened(&admitted.label, 3, "session-3");

        table.authenticated(3);

        assert!(table.expire_due(start + TIMEOUT * 2).is_empty());
        assert_eq!(table.pending(), 0);
        assert_eq!(table.ended(3), Ended::Untracked);
    }

    #[test]
    fn session_opened_after_deadline_is_stopped_at_once() {
        let start = Instant::now();
        let mut table = table(8);
        let admitted = table.admit(peer(1000), start).expect("below the cap");

        assert!(table.expire_due(start + TIMEOUT).is_empty());
        let overdue = table.opened(&admitted.label, 4, "session-4");

        assert_eq!(overdue, Some("session-4"));
        assert_eq!(table.ended(4), Ended::TimedOut);
    }

    #[test]
    fn session_ending_before_deadline_is_not_a_timeout() {
        let start = Instant::now();
        let mut table = table(8);
        let admitted = table.admit(peer(1000), start).expect("below the cap");
        table.opened(&admitted.label, 5, "session-5");

        assert_eq!(table.ended(5), Ended::BeforeDeadline);
        assert_eq!(table.pending(), 0);
        assert!(table.expire_due(start + TIMEOUT).is_empty());
    }

    #[test]
    fn cap_rejects_until_a_slot_frees() {
        let start = Instant::now();
        let mut table = table(2);
        let first = table.admit(peer(1000), start).expect("first is admitted");
        table.admit(peer(1001), start).expect("second is admitted");

        let rejected = table.admit(peer(1002), start);
        assert_eq!(rejected, Err(PendingLimitReached { pending: 2 }));

        table.opened(&first.label, 1, "session-1");
        table.authenticated(1);
        assert!(
            table.admit(peer(1002), start).is_ok(),
            "a slot is free again"
        );
    }

    #[test]
    fn expired_sessions_count_against_cap_until_they_end() {
        let start = Instant::now();
        let mut table = table(1);
        let admitted = table.admit(peer(1000), start).expect("below the cap");
        table.opened(&admitted.label, 9, "session-9");
        table.expire_due(start + TIMEOUT);

        assert!(table.admit(peer(1001), start + TIMEOUT).is_err());
        table.ended(9);
        assert!(table.admit(peer(1001), start + TIMEOUT).is_ok());
    }

    #[test]
    fn dropped_stream_without_session_frees_its_slot() {
        let start = Instant::now();
        let mut table = table(1);
        let admitted = table.admit(peer(1000), start).expect("below the cap");

        table.stream_dropped(&admitted.label);

        assert_eq!(table.pending(), 0);
        assert_eq!(table.opened(&admitted.label, 2, "session-2"), None);
        assert_eq!(table.ended(2), Ended::Untracked);
    }

    #[test]
    fn dropped_stream_of_open_session_waits_for_its_end() {
        let start = Instant::now();
        let mut table = table(4);
        let admitted = table.admit(peer(1000), start).expect("below the cap");
        table.opened(&admitted.label, 6, "session-6");

        table.stream_dropped(&admitted.label);

        assert_eq!(table.pending(), 1);
        assert_eq!(table.ended(6), Ended::BeforeDeadline);
    }

    #[test]
    fn labels_stay_unique_for_a_reused_peer_port() {
        let start = Instant::now();
        let mut table = table(4);
        let first = table.admit(peer(1000), start).expect("below the cap");
        let second = table.admit(peer(1000), start).expect("below the cap");

        assert_ne!(first.label, second.label);
        assert!(first.label.starts_with("127.0.0.1:1000"), "{}", first.label);
    }

    #[test]
    fn deadlines_expire_in_accept_order() {
        let start = Instant::now();
        let mut table = table(4);
        let first = table.admit(peer(1000), start).expect("below the cap");
        let later = start + Duration::from_secs(1);
        let second = table.admit(peer(1001), later).expect("below the cap");
        table.opened(&first.label, 1, "session-1");
        table.opened(&second.label, 2, "session-2");

        assert_eq!(table.next_deadline(), Some(start + TIMEOUT));
        assert_eq!(table.expire_due(start + TIMEOUT).len(), 1);
        assert_eq!(table.next_deadline(), Some(later + TIMEOUT));
        assert_eq!(
            table.expire_due(later + TIMEOUT),
            vec![(second.label, "session-2")]
        );
        assert_eq!(table.next_deadline(), None);
    }

    #[test]
    fn counts_are_kept_per_reason() {
        let counts = RejectedConnections::default();
        counts.record(RejectReason::HandshakeTimeout);
        counts.record(RejectReason::HandshakeTimeout);
        let failed = counts.record(RejectReason::HandshakeFailed);

        assert_eq!(failed, 1);
        assert_eq!(counts.get(RejectReason::HandshakeTimeout), 2);
        assert_eq!(counts.get(RejectReason::PendingLimit), 0);
        assert_eq!(counts.total(), 3);
    }
}
