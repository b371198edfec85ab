//! The node's cluster sessions as ractor_cluster reports them, and why each one ended.
//!
//! A session that closes before it authenticates can be bad input (a wrong cookie, junk
//! bytes), which the node warns about. In a healthy cluster it can also be a duplicate. The
//! dialing node connects again while its first connection is still authenticating.
//! ractor_cluster keeps one connection per pair of nodes and closes the other, before or
//! right after its authentication. This table recognizes such a duplicate by another open
//! session to the same peer.

use std::collections::{HashMap, HashSet};

/// Open sessions and the peers with a ready session. It does no I/O.
#[derive(Debug, Default)]
pub(super) struct SessionTable {
    /// Open sessions by ractor_cluster node id, from open until they end.
    open: HashMap<u64, OpenSession>,
    /// Cluster node names (without `@host`) with a ready session.
    pub(super) ready: HashSet<String>,
}

/// One open session.
#[derive(Debug)]
struct OpenSession {
    /// Whether this node dialed it.
    outbound: bool,
    /// The peer address that ractor_cluster reports: the dialed address of an outbound
    /// session, a unique label of an inbound one.
    peer_addr: String,
    /// The peer's full ractor_cluster name, once the session has authenticated.
    authenticated_as: Option<String>,
}

/// The way a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SessionEnd {
    /// The session had authenticated.
    Authenticated,
    /// The session closed before it authenticated while another session to the same peer was
    /// open: an authenticated one to the peer name it gave, or, for a session this node
    /// dialed, another dial to the same address. Harmless.
    Duplicate,
    /// The session closed before it authenticated, with no other session to its peer: a wrong
    /// cookie, junk bytes, a handshake timeout, or a peer that closed it.
    Unauthenticated,
}

impl SessionTable {
    /// Records a session that opened: dialed by this node (`outbound`) or accepted.
    pub(super) fn opened(&mut self, node_id: u64, outbound: bool, peer_addr: String) {
        self.open.insert(
            node_id,
            OpenSession {
                outbound,
                peer_addr,
                authenticated_as: None,
            },
        );
    }

    /// Records that the session authenticated with the peer's full name `peer_name`.
    pub(super) fn authenticated(&mut self, node_id: u64, peer_name: String) {
        if let Some(session) = self.open.get_mut(&node_id) {
            session.authenticated_as = Some(peer_name);
        }
    }

    /// Forgets the session that ended and returns how it ended. `claimed_name` is the full
    /// name that the peer gave, if the handshake got that far; before authentication it is
    /// unverified.
    ///
    /// NOTE: a peer with a wrong cookie that gives the name of a peer with an authenticated
    /// session counts as a duplicate, so the node neither warns about it nor counts it as
    /// rejected. Names contain a random boot id, so only a sender that has learned a live
    /// name can do that.
    pub(super) fn ended(&mut self, node_id: u64, claimed_name: Option<&str>) -> SessionEnd {
        let Some(session) = self.open.remove(&node_id) else {
            return SessionEnd::Unauthenticated;
        };
        if session.authenticated_as.is_some() {
            return SessionEnd::Authenticated;
        }
        let duplicate = self.open.values().any(|other| {
            let same_peer =
                claimed_name.is_some() && other.authenticated_as.as_deref() == claimed_name;
            let same_dial =
                session.outbound && other.outbound && other.peer_addr == session.peer_addr;
            same_peer || same_dial
        });
        if duplicate {
            SessionEnd::Duplicate
        } else {
            SessionEnd::Unauthenticated
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "node-1-01a2@127.0.0.1";

    #[test]
    fn authenticated_session_ends_as_authenticated() {
        let mut table = SessionTable::default();
        table.opened(0, true, "127.0.0.1:7001".into());
        table.authenticated(0, PEER.into());
        assert_eq!(table.ended(0, Some(PEER)), SessionEnd::Authenticated);
    }

    #[test]
    fn second_dial_is_duplicate() {
        // The first dial is still authenticating when the second one is closed.
        let mut table = SessionTable::default();
        table.opened(0, true, "127.0.0.1:7001".into());
        table.opened(1, true, "127.0.0.1:7001".into());
        assert_eq!(table.ended(1, None), SessionEnd::Duplicate);
        assert_eq!(table.ended(0, None), SessionEnd::Unauthenticated);
    }

    #[test]
    fn extra_inbound_connection_is_duplicate() {
        // The peer's second connection loses to its authenticated first one.
        let mut table = SessionTable::default();
        table.opened(0, false, "127.0.0.1:40001 (connection 0)".into());
        table.authenticated(0, PEER.into());
        table.opened(1, false, "127.0.0.1:40002 (connection 1)".into());
        assert_eq!(table.ended(1, Some(PEER)), SessionEnd::Duplicate);
    }

    #[test]
    fn lone_or_unnamed_rejects_are_unauthenticated() {
        let mut table = SessionTable::default();
        table.opened(0, false, "127.0.0.1:40001 (connection 0)".into());
        table.authenticated(0, PEER.into());

        // Junk bytes give no name, even while a session to a peer is open.
        table.opened(1, false, "127.0.0.1:40002 (connection 1)".into());
        assert_eq!(table.ended(1, None), SessionEnd::Unauthenticated);

        // A name without an authenticated session, as a peer with a wrong cookie gives.
        table.opened(2, false, "127.0.0.1:40003 (connection 2)".into());
        assert_eq!(
            table.ended(2, Some("node-7-99@127.0.0.1")),
            SessionEnd::Unauthenticated
        );

        // A dial to an address that no other dial of this node uses.
        table.opened(3, true, "127.0.0.1:7002".into());
        assert_eq!(table.ended(3, None), SessionEnd::Unauthenticated);

        // A session that was never reported open.
        assert_eq!(table.ended(9, Some(PEER)), SessionEnd::Unauthenticated);
    }
}
