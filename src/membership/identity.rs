//! Node identity as foca gossips it: a stable name, a boot id per process start, and addresses.

use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::NodeName;
use super::interner;

/// The fields of a [`NodeId`], which shares them behind an `Arc`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdFields {
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

/// Identity of one node process, carried in every gossip datagram.
///
/// The name is stable across restarts (a StatefulSet pod name, or `node-N` locally) and is
/// foca's address, so a restart under the same name shows up as a rename of the old identity.
/// The boot id changes on every process start: a restarted node is a new member, and every
/// activation of its previous incarnation is void. Mutable state and load travel in broadcasts,
/// never in the identity, because changing an identity declares the old one down.
///
/// The fields are immutable and shared: every `NodeId` with equal fields in the process points
/// at one allocation (see `interner`), whether it was created here or decoded from a datagram.
/// foca, the member view and the member list therefore keep 24 bytes per member instead of a
/// copy of every field and of the name. Fields read through `Deref`, as in `id.boot_id`. The
/// wire format is that of [`NodeIdFields`].
#[derive(Clone)]
pub struct NodeId {
    /// foca's address (the name's XXH3-128 hash) as high and low halves, kept inline so that
    /// foca's scans of its member list compare addresses without following the pointer.
    addr: [u64; 2],
    shared: Arc<SharedIdentity>,
}

/// The fields of a [`NodeId`] and the names derived from them, computed once per interned
/// identity.
pub(super) struct SharedIdentity {
    pub(super) fields: NodeIdFields,
    /// The ractor_cluster node name, `{name}-{boot_id}` (see [`NodeId::cluster_node_name`]).
    /// The transport looks peers up by it several times per message, so it is formatted once.
    cluster_node_name: Arc<str>,
}

impl SharedIdentity {
    pub(super) fn new(fields: NodeIdFields) -> Self {
        let cluster_node_name = format!("{}-{:016x}", fields.name, fields.boot_id).into();
        Self {
            fields,
            cluster_node_name,
        }
    }
}

impl NodeId {
    /// Returns the identity with `fields`, sharing the allocation of an equal identity that
    /// exists in the process.
    pub fn new(fields: NodeIdFields) -> Self {
        interner::intern_fields(fields)
    }

    /// Wraps an interned identity; only the interner calls this.
    pub(super) fn from_shared(shared: Arc<SharedIdentity>) -> Self {
        let addr = shared.fields.name.hash128();
        Self {
            addr: [(addr >> 64) as u64, addr as u64],
            shared,
        }
    }

    /// Returns the shared identity.
    #[cfg(test)]
    pub(super) fn shared(&self) -> &Arc<SharedIdentity> {
        &self.shared
    }

    /// Returns the shared identity without the inline address: 8 bytes, for tables that
    /// keep an identity per member. [`NodeId::from_shared`] restores the identity.
    pub(super) fn into_shared(self) -> Arc<SharedIdentity> {
        self.shared
    }
}

impl Deref for NodeId {
    type Target = NodeIdFields;

    #[inline]
    fn deref(&self) -> &NodeIdFields {
        &self.shared.fields
    }
}

impl PartialEq for NodeId {
    /// Compares the pointers first: interned identities with equal fields share one.
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
            || (self.addr == other.addr && self.shared.fields == other.shared.fields)
    }
}

impl Eq for NodeId {}

impl Hash for NodeId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.shared.fields.hash(state);
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.shared.fields, f)
    }
}

impl Serialize for NodeId {
    /// Serializes the fields, so the wire format is that of [`NodeIdFields`].
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.shared.fields.serialize(serializer)
    }
}

/// [`NodeIdFields`] as decoded, with the name borrowed from the input where the format allows,
/// so that decoding a known identity allocates nothing. The field order is the wire format.
#[derive(Deserialize)]
#[serde(rename = "NodeIdFields")]
pub(super) struct DecodedNodeId<'a> {
    #[serde(borrow)]
    pub(super) name: Cow<'a, str>,
    pub(super) boot_id: u64,
    pub(super) bump: u32,
    pub(super) ip: IpAddr,
    pub(super) gossip_port: u16,
    pub(super) cluster_port: u16,
    pub(super) grpc_port: u16,
}

impl<'de> Deserialize<'de> for NodeId {
    /// Deserializes the fields and returns the interned identity with those fields.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let decoded = DecodedNodeId::deserialize(deserializer)?;
        Ok(interner::intern_decoded(&decoded))
    }
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

impl NodeIdFields {
    /// Returns the incarnation this identity belongs to (name plus boot id).
    pub fn incarnation(&self) -> Incarnation {
        Incarnation {
            name: self.name.to_string(),
            boot_id: self.boot_id,
        }
    }
}

impl NodeId {
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

    /// Returns the name the node uses as a ractor_cluster peer: `{name}-{boot_id}`, with the
    /// boot id as 16 hexadecimal digits.
    ///
    /// Including the boot id makes a restarted process a new peer, so it can never lose the
    /// session election against a stale session of its previous incarnation.
    pub fn cluster_node_name(&self) -> &str {
        &self.shared.cluster_node_name
    }

    /// Returns [`NodeId::cluster_node_name`] as a shared string, which clones without copying.
    pub(crate) fn cluster_node_name_shared(&self) -> &Arc<str> {
        &self.shared.cluster_node_name
    }

    /// Returns whether this identity belongs to `incarnation`, without building an
    /// [`Incarnation`].
    pub fn is_incarnation(&self, incarnation: &Incarnation) -> bool {
        self.boot_id == incarnation.boot_id && *self.name == *incarnation.name
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
        Some(Self::new(NodeIdFields {
            bump: self.bump.wrapping_add(1),
            ..self.shared.fields.clone()
        }))
    }

    #[inline]
    fn addr(&self) -> u128 {
        (u128::from(self.addr[0]) << 64) | u128::from(self.addr[1])
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
        NodeId::new(NodeIdFields {
            name: "node-1".into(),
            boot_id,
            bump,
            ip: IpAddr::from([127, 0, 0, 1]),
            gossip_port: 1,
            cluster_port: 2,
            grpc_port: 3,
        })
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
    fn wire_format_is_the_fields() {
        let id = node(7, 2);
        let as_id = postcard::to_allocvec(&id).expect("encode identity");
        let as_fields = postcard::to_allocvec(&*id).expect("encode fields");
        assert_eq!(as_id, as_fields);

        let decoded: NodeId = postcard::from_bytes(&as_fields).expect("decode identity");
        assert_eq!(decoded, id);
    }

    #[test]
    fn identity_decodes_from_owned_text() {
        // serde_json hands over escaped strings as owned text, not borrowed.
        let json = r#"{"name":"node-\u0031","boot_id":7,"bump":0,"ip":"127.0.0.1","gossip_port":1,"cluster_port":2,"grpc_port":3}"#;

        let decoded: NodeId = serde_json::from_str(json).expect("decode identity");

        assert_eq!(decoded, node(7, 0));
    }

    #[test]
    fn cluster_node_name_has_boot_id_in_hex() {
        let id = node(0x2a, 0);

        assert_eq!(id.cluster_node_name(), "node-1-000000000000002a");
        assert_eq!(&**id.cluster_node_name_shared(), id.cluster_node_name());
    }

    #[test]
    fn is_incarnation_compares_name_and_boot_id() {
        let id = node(7, 3);

        assert!(id.is_incarnation(&node(7, 0).incarnation()));
        assert!(!id.is_incarnation(&node(8, 3).incarnation()));
        let other_name = Incarnation {
            name: "node-2".into(),
            boot_id: 7,
        };
        assert!(!id.is_incarnation(&other_name));
    }

    #[test]
    fn renew_keeps_incarnation() {
        let renewed = node(7, 0).renew().expect("renew always succeeds");
        assert_eq!(renewed.bump, 1);
        assert_eq!(renewed.incarnation(), node(7, 0).incarnation());
    }
}
