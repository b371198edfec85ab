//! The process-wide tables through which equal node identities, and equal node meta, share
//! one allocation.
//!
//! Every member that foca lists, every view entry and every member-list entry contains a
//! [`NodeId`]. Without the table, decoding one from a datagram would allocate its fields and
//! its name each time, so a node would keep one copy per member per table, and a simulation
//! of n nodes n² copies of n identities. The table maps each identity's name hash, boot id and bump to a
//! weak reference to its fields, so it never keeps an identity alive, and a decoded identity
//! that is already known costs no allocation.
//!
//! Node meta works the same way: the member view, the broadcast handler's table and foca's
//! meta backlog each keep a member's latest meta, and every node that receives a broadcast
//! decodes its own copy. The meta table maps name hash, boot id and version to the one
//! [`SharedMeta`] in use, so a process keeps one copy per broadcast however many tables hold
//! it. A real node keeps one view, so there the table saves only the copies between its own
//! tables. A simulation of n nodes keeps one copy instead of n.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};

use super::identity::{DecodedNodeId, NodeId, NodeIdFields, SharedIdentity};
use super::shared_meta::{MetaRecord, SharedMeta};
use super::{NodeMeta, NodeName};

/// Smallest table length at which [`Interner::insert`] sweeps out values nothing references.
const MIN_SWEEP_LEN: usize = 1024;

/// Name hash, boot id and bump: the fields that tell identities apart in practice. Two
/// identities that share them but differ in an address are not shared (see [`Interner`]).
type IdKey = (u128, u64, u32);

/// Name hash, boot id and meta version, which tell broadcasts apart. Two broadcasts that
/// share them but differ in a field are not shared.
type MetaKey = (u128, u64, u64);

/// Weak references to the values in use, by key.
///
/// A value whose key is taken by a live value with other fields (for identities, a node
/// restarted with a new address within one millisecond, or a misconfigured peer) gets its own
/// allocation.
struct Interner<K, V> {
    by_key: HashMap<K, Weak<V>, BuildHasherDefault<KeyHasher>>,
    /// Length at which the next insert sweeps out dead references: twice the length after the
    /// last sweep, so the sweeps cost O(1) per insert.
    sweep_at: usize,
}

/// Hasher for the keys above, whose first field is an XXH3-128 hash already: it mixes each
/// word in with one multiplication, as FxHash does, where SipHash would hash 28 or 32 bytes
/// for every identity decoded from a datagram. The keys come from peers that passed gossip
/// authentication, which is why a hasher without a random seed is acceptable here.
#[derive(Default)]
struct KeyHasher(u64);

impl KeyHasher {
    fn add(&mut self, word: u64) {
        // The multiplier of FxHash (rustc-hash 1.1).
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only the integer writes below are expected; other input is hashed byte by byte.
        for &byte in bytes {
            self.add(u64::from(byte));
        }
    }

    fn write_u32(&mut self, word: u32) {
        self.add(u64::from(word));
    }

    fn write_u64(&mut self, word: u64) {
        self.add(word);
    }

    fn write_u128(&mut self, word: u128) {
        self.add(word as u64);
        self.add((word >> 64) as u64);
    }
}

static IDENTITIES: LazyLock<Mutex<Interner<IdKey, SharedIdentity>>> =
    LazyLock::new(|| Mutex::new(Interner::new()));

static METAS: LazyLock<Mutex<Interner<MetaKey, MetaRecord>>> =
    LazyLock::new(|| Mutex::new(Interner::new()));

/// Returns the identity with `fields`, shared with an equal identity in use.
pub(super) fn intern_fields(fields: NodeIdFields) -> NodeId {
    let key = (fields.name.hash128(), fields.boot_id, fields.bump);
    let mut interner = lock(&IDENTITIES);
    if let Some(shared) = interner.find(key, |known| known.fields == fields) {
        return NodeId::from_shared(shared);
    }
    NodeId::from_shared(interner.insert(key, Arc::new(SharedIdentity::new(fields))))
}

/// Returns the identity with the decoded fields, shared with an equal identity in use.
pub(super) fn intern_decoded(decoded: &DecodedNodeId<'_>) -> NodeId {
    let name_hash = xxhash_rust::xxh3::xxh3_128(decoded.name.as_bytes());
    let key = (name_hash, decoded.boot_id, decoded.bump);
    let matches = |known: &SharedIdentity| {
        let known = &known.fields;
        known.name.as_str() == decoded.name
            && known.ip == decoded.ip
            && known.gossip_port == decoded.gossip_port
            && known.cluster_port == decoded.cluster_port
            && known.grpc_port == decoded.grpc_port
    };
    let mut interner = lock(&IDENTITIES);
    if let Some(shared) = interner.find(key, matches) {
        return NodeId::from_shared(shared);
    }
    let fields = NodeIdFields {
        name: NodeName::new(&decoded.name),
        boot_id: decoded.boot_id,
        bump: decoded.bump,
        ip: decoded.ip,
        gossip_port: decoded.gossip_port,
        cluster_port: decoded.cluster_port,
        grpc_port: decoded.grpc_port,
    };
    NodeId::from_shared(interner.insert(key, Arc::new(SharedIdentity::new(fields))))
}

/// Returns the meta of `name`'s incarnation `boot_id`, shared with an equal one in use.
pub(super) fn intern_meta(name: &str, boot_id: u64, meta: NodeMeta) -> SharedMeta {
    let name_hash = xxhash_rust::xxh3::xxh3_128(name.as_bytes());
    let key = (name_hash, boot_id, meta.version);
    let matches = |known: &MetaRecord| known.name.as_str() == name && known.meta == meta;
    let mut interner = lock(&METAS);
    if let Some(shared) = interner.find(key, matches) {
        return SharedMeta::from_shared(shared);
    }
    let record = MetaRecord {
        name_hash,
        name: NodeName::new(name),
        boot_id,
        meta,
    };
    SharedMeta::from_shared(interner.insert(key, Arc::new(record)))
}

/// Returns how many identities the table references, live or not, for tests.
#[cfg(test)]
pub(super) fn table_len() -> usize {
    lock(&IDENTITIES).by_key.len()
}

fn lock<K, V>(table: &'static Mutex<Interner<K, V>>) -> MutexGuard<'static, Interner<K, V>> {
    // Every update replaces one whole entry, so a panic elsewhere leaves no torn state.
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K: Hash + Eq, V> Interner<K, V> {
    fn new() -> Self {
        Self {
            by_key: HashMap::default(),
            sweep_at: MIN_SWEEP_LEN,
        }
    }

    /// Returns the live value under `key` if `matches` accepts it.
    fn find(&self, key: K, matches: impl FnOnce(&V) -> bool) -> Option<Arc<V>> {
        let shared = self.by_key.get(&key)?.upgrade()?;
        matches(&shared).then_some(shared)
    }

    /// Records `value` under `key` unless a live value has the key, and returns it.
    fn insert(&mut self, key: K, value: Arc<V>) -> Arc<V> {
        if self.by_key.len() >= self.sweep_at {
            self.by_key.retain(|_, weak| weak.strong_count() > 0);
            self.sweep_at = (2 * self.by_key.len()).max(MIN_SWEEP_LEN);
        }
        match self.by_key.entry(key) {
            Entry::Occupied(mut entry) => {
                if entry.get().strong_count() == 0 {
                    entry.insert(Arc::downgrade(&value));
                }
            }
            Entry::Vacant(entry) => {
                entry.insert(Arc::downgrade(&value));
            }
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn fields(name: &str, boot_id: u64, grpc_port: u16) -> NodeIdFields {
        NodeIdFields {
            name: name.into(),
            boot_id,
            bump: 0,
            ip: IpAddr::from([127, 0, 0, 1]),
            gossip_port: 1,
            cluster_port: 2,
            grpc_port,
        }
    }

    #[test]
    fn equal_identities_share_fields() {
        let created = NodeId::new(fields("interner-a", 1, 3));
        let bytes = postcard::to_allocvec(&created).expect("encode identity");
        let decoded: NodeId = postcard::from_bytes(&bytes).expect("decode identity");

        assert!(Arc::ptr_eq(created.shared(), decoded.shared()));
        assert_eq!(created, decoded);
    }

    #[test]
    fn different_address_is_not_shared() {
        let first = NodeId::new(fields("interner-b", 1, 3));
        let other_port = NodeId::new(fields("interner-b", 1, 4));

        assert!(!Arc::ptr_eq(first.shared(), other_port.shared()));
        assert_ne!(first, other_port);
        assert_eq!(other_port.grpc_port, 4);
    }

    #[test]
    fn dropped_identity_is_not_kept() {
        let first = NodeId::new(fields("interner-c", 1, 3));
        let weak = Arc::downgrade(first.shared());
        drop(first);

        assert!(
            weak.upgrade().is_none(),
            "the table holds no strong reference"
        );
        let again = NodeId::new(fields("interner-c", 1, 3));
        assert_eq!(again.boot_id, 1);
    }

    #[test]
    fn equal_meta_is_shared() {
        let meta = |activations| NodeMeta {
            version: 3,
            state: crate::membership::NodeState::Active,
            load: crate::membership::NodeLoad {
                activations,
                ..Default::default()
            },
            started_at_unix_ms: 5,
            store_id: None,
            unreachable: Vec::new(),
        };

        let first = intern_meta("interner-e", 1, meta(2));
        let again = intern_meta("interner-e", 1, meta(2));
        let other_load = intern_meta("interner-e", 1, meta(9));

        assert!(Arc::ptr_eq(first.shared(), again.shared()));
        assert!(!Arc::ptr_eq(first.shared(), other_load.shared()));
        assert_eq!(other_load.meta.load.activations, 9);
    }

    #[test]
    fn table_sweeps_dropped_identities() {
        for boot_id in 0..(3 * MIN_SWEEP_LEN as u64) {
            drop(NodeId::new(fields("interner-d", boot_id, 3)));
        }

        // Other tests add identities concurrently, but far fewer than a sweep's worth.
        assert!(table_len() < 3 * MIN_SWEEP_LEN, "{} entries", table_len());
    }
}
