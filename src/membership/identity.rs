//! Node identity as foca gossips it: a stable name, a boot id per process start, and addresses.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::NodeName;

/// Identity of one node process, carried in every gossip datagram.
///
/// The name is stable across restarts (a StatefulSet pod name, or `node-N` locally) and is
/// foca's address, so a restart under the same name shows up as a rename of the old identity.
/// The boot id changes on every process start: a restarted node is a new member, and every
/// activation of its previous incarnation is void. Mutable state and load travel in broadcasts,
/// never in the identity, because changing an identity declares the old one down.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId {
    /// Stable node name, with its hash that serves as foca's address.
    pub name: NodeName,
    /// Set once per process start by [`boot_id_at`], and never changed while the process runs.
    pub boot_id: u64,
    /// Counter foca raises when the node rejoins after being declared down in-process.
    pub bump: u32,
    /// Address that peers reach the node on.
    pub ip: IpAddr,
    /// UDP port of the SWIM gossip.
    pub gossip_port: u16,
    /// TCP port of the ractor_cluster node server.
    pub cluster_port: u16,
    /// TCP port of the gRPC API.
    pub grpc_port: u16,
}

/// Returns the boot id of a process that starts at `unix_ms` (milliseconds since the Unix
/// epoch), with `random` in the low 16 bits.
///
/// Boot ids must grow across restarts of one name, because foca keeps the identity with the
/// larger `(boot_id, bump)` when two share a name (see `win_addr_conflict`). With random boot
/// ids, a restarted node whose id is smaller loses to its dead incarnation, and peers declare
/// it down again on every join. The random bits separate two processes of one name that start
/// within the same millisecond.
pub fn boot_id_at(unix_ms: u64, random: u16) -> u64 {
    (unix_ms << 16) | u64::from(random)
}

impl NodeId {
    /// Returns the incarnation this identity belongs to (name plus boot id).
    pub fn incarnation(&self) -> Incarnation {
        Incarnation {
            name: self.name.to_string(),
            boot_id: self.boot_id,
        }
    }

    /// Returns the UDP address of the node's gossip socket.
    pub fn gossip_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.gossip_port)
    }

    /// Returns the TCP address of the node's ractor_cluster server.
    pub fn cluster_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.cluster_port)
    }

    /// Returns the TCP address of the node's gRPC API.
    pub fn grpc_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.grpc_port)
    }

    /// Returns the name the node uses as a ractor_cluster peer: `{name}-{boot_id}`.
    ///
    /// Including the boot id makes a restarted process a new peer, so it can never lose the
    /// session election against a stale session of its previous incarnation.
    pub fn cluster_node_name(&self) -> String {
        format!("{}-{:016x}", self.name, self.boot_id)
    }
}

impl foca::Identity for NodeId {
    /// The XXH3-128 hash of the node name, computed when the name was created. foca looks a
    /// member up by comparing the address of every member in its list, on every message, so
    /// the address must be cheap to copy and compare: a `String` costs two allocations per
    /// comparison. Two distinct names collide with a probability of about n² / 2¹²⁹ for n
    /// names, which is negligible.
    type Addr = u128;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    #[inline]
    fn addr(&self) -> u128 {
        self.name.hash128()
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.boot_id, self.bump) > (adversary.boot_id, adversary.bump)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{:016x}.{}", self.name, self.boot_id, self.bump)
    }
}

/// One lifetime of a node process: its stable name plus the boot id of that start.
///
/// Directory entries and activations point at an incarnation, so entries of a process that
/// restarted are recognisably stale even though the name is the same.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Incarnation {
    /// Stable node name.
    pub name: String,
    /// Boot id of this process start.
    pub boot_id: u64,
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{:016x}", self.name, self.boot_id)
    }
}

#[cfg(test)]
mod tests {
    use foca::Identity;

    use super::*;

    fn node(boot_id: u64, bump: u32) -> NodeId {
        NodeId {
            name: "node-1".into(),
            boot_id,
            bump,
            ip: IpAddr::from([127, 0, 0, 1]),
            gossip_port: 1,
            cluster_port: 2,
            grpc_port: 3,
        }
    }

    #[test]
    fn later_boot_wins_address_conflict() {
        assert!(node(2, 0).win_addr_conflict(&node(1, 9)));
        assert!(!node(1, 9).win_addr_conflict(&node(2, 0)));
    }

    #[test]
    fn later_start_wins_address_conflict() {
        let old = node(boot_id_at(1_000, u16::MAX), 0);
        let restarted = node(boot_id_at(1_001, 0), 0);
        assert!(restarted.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&restarted));
    }

    #[test]
    fn renew_keeps_incarnation() {
        let renewed = node(7, 0).renew().expect("renew always succeeds");
        assert_eq!(renewed.bump, 1);
        assert_eq!(renewed.incarnation(), node(7, 0).incarnation());
    }
}
