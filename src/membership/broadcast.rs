//! Foca broadcast handler for node meta: keeps the newest version per node, forwards new items.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use foca::{BroadcastHandler, Invalidates};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{
    Incarnation, MAX_UNREACHABLE_REPORT, NodeId, NodeLoad, NodeMeta, NodeState, SharedMeta,
};
use crate::storage::StoreId;

/// One node's meta as it travels in a foca custom broadcast.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetaBroadcast {
    /// Incarnation that the meta describes.
    pub incarnation: Incarnation,
    /// State and load, with the version that orders broadcasts of one incarnation.
    pub meta: NodeMeta,
}

impl MetaBroadcast {
    /// Encodes the broadcast with postcard, the format foca's `PostcardCodec` also uses.
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(self)
    }

    /// Decodes a broadcast. Malformed or truncated input is an error (postcard does not panic
    /// on input), which the tests below exercise.
    ///
    /// Broadcasts from older releases end where a newer trailing field would start, so they
    /// fail to decode as the current layout and are decoded as the older layouts, newest
    /// first: without `unreachable`, then also without `store_id`. Older releases read the
    /// current layout, because postcard ignores trailing bytes. An `unreachable` list longer
    /// than [`MAX_UNREACHABLE_REPORT`], which no node sends, is cut to that length.
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        let mut decoded: MetaBroadcast =
            postcard::from_bytes(bytes).or_else(|error| decode_older_layout(bytes).ok_or(error))?;
        if decoded.meta.load.sanitize() {
            tracing::debug!(node = %decoded.incarnation, "replaced invalid load figures in a broadcast with 0");
        }
        if decoded.meta.unreachable.len() > MAX_UNREACHABLE_REPORT {
            tracing::debug!(node = %decoded.incarnation, listed = decoded.meta.unreachable.len(), "cut an overlong unreachable report in a broadcast");
            decoded.meta.unreachable.truncate(MAX_UNREACHABLE_REPORT);
        }
        Ok(decoded)
    }
}

/// Decodes `bytes` as a broadcast of an older release, newest layout first.
fn decode_older_layout(bytes: &[u8]) -> Option<MetaBroadcast> {
    let older = postcard::from_bytes::<MetaWithoutReport>(bytes).or_else(|_| {
        postcard::from_bytes::<MetaWithoutStoreId>(bytes).map(MetaWithoutReport::from)
    });
    older.ok().map(Into::into)
}

/// [`MetaBroadcast`] as releases without an unreachable report send it.
#[derive(Deserialize)]
struct MetaWithoutReport {
    incarnation: Incarnation,
    version: u64,
    state: NodeState,
    load: NodeLoad,
    started_at_unix_ms: u64,
    store_id: Option<StoreId>,
}

impl From<MetaWithoutReport> for MetaBroadcast {
    fn from(older: MetaWithoutReport) -> Self {
        Self {
            incarnation: older.incarnation,
            meta: NodeMeta {
                version: older.version,
                state: older.state,
                load: older.load,
                started_at_unix_ms: older.started_at_unix_ms,
                store_id: older.store_id,
                unreachable: Vec::new(),
            },
        }
    }
}

/// [`MetaBroadcast`] as releases without a store id send it.
#[derive(Deserialize)]
struct MetaWithoutStoreId {
    incarnation: Incarnation,
    version: u64,
    state: NodeState,
    load: NodeLoad,
    started_at_unix_ms: u64,
}

impl From<MetaWithoutStoreId> for MetaWithoutReport {
    fn from(older: MetaWithoutStoreId) -> Self {
        Self {
            incarnation: older.incarnation,
            version: older.version,
            state: older.state,
            load: older.load,
            started_at_unix_ms: older.started_at_unix_ms,
            store_id: None,
        }
    }
}

/// Foca's dissemination key for a meta broadcast: the broadcast itself, shared.
///
/// foca keeps one per item in its backlog, which contains an item of almost every member
/// while many nodes join, in two heaps that keep their peak capacity, so the key is a pointer
/// of 8 bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct MetaKey(SharedMeta);

impl Invalidates for MetaKey {
    /// A newer version of the same incarnation replaces the older one in foca's backlog.
    fn invalidates(&self, other: &Self) -> bool {
        let (newer, older) = (&self.0, &other.0);
        newer.name_hash == older.name_hash
            && newer.boot_id == older.boot_id
            && newer.meta.version > older.meta.version
    }
}

/// A broadcast item that failed to decode. Foca drops the rest of the datagram that carried
/// it; nothing else changed, and a retry of the same bytes fails again.
#[derive(Debug, thiserror::Error)]
#[error("malformed node meta broadcast")]
pub struct MalformedMeta(#[source] postcard::Error);

/// The newest node meta seen per node name.
///
/// The broadcast handler inside foca and the agent share it: the agent records the meta that a
/// member-list page carries, so that the handler drops the gossiped copies of that meta
/// instead of accepting and forwarding each one as news. Names are keyed by their XXH3-128
/// hash, which is also foca's member address, so two names that collide would already be one
/// member to foca. The mutex is never contended, because the agent calls foca from its own
/// task.
#[derive(Clone, Debug, Default)]
pub struct SeenMeta {
    newest: Arc<Mutex<NewestMeta>>,
}

/// Newest meta by name hash. A node keeps this table for every member, so each slot is only
/// the 8-byte pointer to the shared meta, which contains the key.
type NewestMeta = HashSet<ByName, BuildHasherDefault<PrehashedKey>>;

/// A shared meta that is hashed, compared and looked up by its name hash alone.
#[derive(Debug)]
struct ByName(SharedMeta);

impl Hash for ByName {
    /// Hashes as the `u128` name hash does, which `Borrow<u128>` requires.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.name_hash.hash(state);
    }
}

impl PartialEq for ByName {
    fn eq(&self, other: &Self) -> bool {
        self.0.name_hash == other.0.name_hash
    }
}

impl Eq for ByName {}

impl Borrow<u128> for ByName {
    fn borrow(&self) -> &u128 {
        &self.0.name_hash
    }
}

/// Hasher for keys that are XXH3-128 hashes already: it takes their low 64 bits. The handler
/// looks up every meta item of every datagram (about 5 % of the CPU time of a 1,000-node
/// simulation), so hashing the key again with the default SipHash is wasted work.
#[derive(Default)]
struct PrehashedKey(u64);

impl Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is expected; any other input is hashed in full.
        self.0 ^= xxhash_rust::xxh3::xxh3_64(bytes);
    }

    fn write_u128(&mut self, key: u128) {
        self.0 = key as u64;
    }
}

impl SeenMeta {
    /// Returns whether `(boot_id, version)` of `name` is newer than any seen.
    pub fn is_newer(&self, name: &str, boot_id: u64, version: u64) -> bool {
        self.lock()
            .get(&name_key(name))
            .is_none_or(|newest| (newest.0.boot_id, newest.0.meta.version) < (boot_id, version))
    }

    /// Records `meta` unless a newer one of its name was seen.
    pub fn record(&self, meta: &SharedMeta) {
        let mut newest = self.lock();
        let newer = newest.get(&meta.name_hash).is_none_or(|known| {
            (known.0.boot_id, known.0.meta.version) < (meta.boot_id, meta.meta.version)
        });
        if newer {
            newest.replace(ByName(meta.clone()));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NewestMeta> {
        // A panic while the table was locked leaves whole entries behind, never a torn one.
        self.newest.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Broadcast handler that accepts a node's meta only if it is newer than any seen before.
///
/// Per node name it keeps the newest meta in a [`SeenMeta`]: a newer version of the same boot
/// is accepted, and so is any version of a newer boot (a restart). Accepted items go to the
/// agent over `accepted`, because foca offers no access to its handler.
pub struct MetaHandler {
    seen: SeenMeta,
    accepted: mpsc::UnboundedSender<SharedMeta>,
    malformed: Arc<AtomicU64>,
}

impl MetaHandler {
    /// Creates a handler that forwards accepted items to `accepted` and counts malformed ones
    /// in `malformed`.
    pub fn new(accepted: mpsc::UnboundedSender<SharedMeta>, malformed: Arc<AtomicU64>) -> Self {
        Self {
            seen: SeenMeta::default(),
            accepted,
            malformed,
        }
    }

    /// Returns the handler's table of the newest meta seen, to record meta that arrives
    /// outside foca's broadcasts.
    pub fn seen_meta(&self) -> SeenMeta {
        self.seen.clone()
    }
}

/// Returns the key of a node name in [`MetaHandler`]'s table.
fn name_key(name: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(name.as_bytes())
}

/// The leading fields of an encoded [`MetaBroadcast`]: postcard writes struct fields in
/// declaration order with no framing, so these are the incarnation and the meta version.
///
/// Most items a node receives are copies it has already seen, and reading only the head lets
/// the handler drop them without allocating.
#[derive(Deserialize)]
struct MetaHead<'a> {
    name: &'a str,
    boot_id: u64,
    version: u64,
}

impl BroadcastHandler<NodeId> for MetaHandler {
    type Key = MetaKey;
    type Error = MalformedMeta;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&NodeId>,
    ) -> Result<Option<MetaKey>, MalformedMeta> {
        // An item whose head shows a copy already seen is dropped without reading the rest,
        // so a malformed tail on such a copy is not counted.
        let count_malformed = |error| {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            MalformedMeta(error)
        };
        let (head, _) = postcard::take_from_bytes::<MetaHead<'_>>(data).map_err(count_malformed)?;
        if !self.seen.is_newer(head.name, head.boot_id, head.version) {
            return Ok(None);
        }
        let item = MetaBroadcast::decode(data).map_err(count_malformed)?;
        let meta = SharedMeta::from_broadcast(item);
        self.seen.record(&meta);
        // The channel closes only when the agent stops, and then the item has no reader left.
        let _ = self.accepted.send(meta.clone());
        Ok(Some(MetaKey(meta)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{NodeLoad, NodeState};

    fn item(name: &str, boot_id: u64, version: u64) -> MetaBroadcast {
        MetaBroadcast {
            incarnation: Incarnation {
                name: name.into(),
                boot_id,
            },
            meta: NodeMeta {
                version,
                state: NodeState::Active,
                load: NodeLoad::default(),
                started_at_unix_ms: 5,
                store_id: Some(crate::storage::StoreId(7)),
                unreachable: vec![Incarnation {
                    name: "node-9".into(),
                    boot_id: 3,
                }],
            },
        }
    }

    #[test]
    fn invalid_load_figures_decode_as_zero() {
        let mut sent = item("node-1", 1, 1);
        sent.meta.load.cpu_percent = f64::NAN;
        sent.meta.load.calls_per_sec = -5.0;
        sent.meta.load.mailbox_depth_max = 3;

        let decoded =
            MetaBroadcast::decode(&sent.encode().expect("meta encodes")).expect("decodes");
        assert_eq!(decoded.meta.load.cpu_percent, 0.0);
        assert_eq!(decoded.meta.load.calls_per_sec, 0.0);
        assert_eq!(decoded.meta.load.mailbox_depth_max, 3, "valid figures stay");
    }

    fn handler() -> (
        MetaHandler,
        mpsc::UnboundedReceiver<SharedMeta>,
        Arc<AtomicU64>,
    ) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let malformed = Arc::new(AtomicU64::new(0));
        (
            MetaHandler::new(sender, malformed.clone()),
            receiver,
            malformed,
        )
    }

    fn receive(handler: &mut MetaHandler, item: &MetaBroadcast) -> Option<MetaKey> {
        let bytes = item.encode().expect("meta encodes");
        handler
            .receive_item(&bytes, None)
            .expect("well-formed item is accepted")
    }

    #[test]
    fn handler_accepts_only_newer_items() {
        let (mut handler, mut accepted, _) = handler();
        let cases = [
            (item("a", 1, 1), true),
            (item("a", 1, 1), false),
            (item("a", 1, 3), true),
            (item("a", 1, 2), false),
            (item("a", 2, 1), true),
            (item("a", 1, 9), false),
            (item("b", 1, 1), true),
        ];

        for (item, expected) in cases {
            let key = receive(&mut handler, &item);
            assert_eq!(key.is_some(), expected, "item {item:?}");
            let forwarded = accepted.try_recv().ok();
            assert_eq!(forwarded.is_some(), expected, "forwarded {item:?}");
            if let Some(forwarded) = forwarded {
                assert_eq!(forwarded.incarnation(), item.incarnation);
                assert_eq!(forwarded.meta, item.meta);
            }
        }
    }

    #[test]
    fn handler_drops_meta_recorded_outside() {
        let (mut handler, mut accepted, _) = handler();
        let seen = handler.seen_meta();
        seen.record(&SharedMeta::from_broadcast(item("a", 1, 5)));

        let cases = [(item("a", 1, 5), false), (item("a", 1, 6), true)];
        for (item, expected) in cases {
            assert_eq!(receive(&mut handler, &item).is_some(), expected, "{item:?}");
            assert_eq!(accepted.try_recv().is_ok(), expected, "forwarded {item:?}");
        }
        assert!(
            !seen.is_newer("a", 1, 6),
            "the handler records into the shared table"
        );
    }

    #[test]
    fn seen_meta_keeps_newest() {
        let seen = SeenMeta::default();
        seen.record(&SharedMeta::from_broadcast(item("a", 2, 1)));
        seen.record(&SharedMeta::from_broadcast(item("a", 1, 9)));

        assert!(!seen.is_newer("a", 1, 9));
        assert!(!seen.is_newer("a", 2, 1));
        assert!(seen.is_newer("a", 2, 2));
        assert!(seen.is_newer("b", 0, 0));
    }

    #[test]
    fn head_matches_encoded_item() {
        let item = item("node-3", 7, 42);
        let bytes = item.encode().expect("meta encodes");

        let (head, _) = postcard::take_from_bytes::<MetaHead<'_>>(&bytes).expect("head decodes");

        assert_eq!(head.name, "node-3");
        assert_eq!(head.boot_id, 7);
        assert_eq!(head.version, 42);
    }

    /// Returns the encoding of `item` as a release without the last `dropped` meta fields
    /// sends it: the current encoding with those fields empty, minus their one-byte tags.
    fn older_layout(item: &MetaBroadcast, dropped: usize) -> (MetaBroadcast, Vec<u8>) {
        let mut older = item.clone();
        older.meta.unreachable.clear();
        if dropped == 2 {
            older.meta.store_id = None;
        }
        let mut bytes = older.encode().expect("meta encodes");
        // An empty `Vec` and a `None` are each one byte (the length 0 and the tag 0).
        bytes.truncate(bytes.len() - dropped);
        (older, bytes)
    }

    #[test]
    fn older_layouts_decode() {
        let current = item("a", 1, 3);
        for dropped in [1, 2] {
            let (expected, bytes) = older_layout(&current, dropped);

            let decoded = MetaBroadcast::decode(&bytes).expect("older layout decodes");

            assert_eq!(decoded, expected, "{dropped} trailing fields missing");
        }
        let round_trip = MetaBroadcast::decode(&current.encode().expect("meta encodes"));
        assert_eq!(round_trip.expect("current layout decodes"), current);
    }

    #[test]
    fn older_release_reads_current_layout() {
        let current = item("a", 1, 3);
        let bytes = current.encode().expect("meta encodes");

        let read: MetaWithoutReport = postcard::from_bytes(&bytes).expect("older layout reads");

        assert_eq!(read.version, 3);
        assert_eq!(read.store_id, current.meta.store_id);
    }

    #[test]
    fn overlong_report_is_cut() {
        let mut sent = item("a", 1, 3);
        sent.meta.unreachable = (0..20)
            .map(|index| Incarnation {
                name: format!("node-{index}"),
                boot_id: 1,
            })
            .collect();

        let decoded =
            MetaBroadcast::decode(&sent.encode().expect("meta encodes")).expect("decodes");

        assert_eq!(decoded.meta.unreachable.len(), MAX_UNREACHABLE_REPORT);
        assert_eq!(decoded.meta.unreachable[..], sent.meta.unreachable[..8]);
    }

    #[test]
    fn malformed_item_is_counted_error() {
        let (mut handler, mut accepted, malformed) = handler();
        let truncated = &item("a", 1, 1).encode().expect("meta encodes")[..3];

        for data in [&[0xff_u8; 7][..], truncated] {
            assert!(handler.receive_item(data, None).is_err());
        }

        assert_eq!(malformed.load(Ordering::Relaxed), 2);
        assert!(accepted.try_recv().is_err());
    }

    #[test]
    fn key_invalidates_older_version_of_same_incarnation() {
        let key = |name, boot_id, version| {
            MetaKey(SharedMeta::from_broadcast(item(name, boot_id, version)))
        };
        let cases = [
            (key("a", 1, 2), key("a", 1, 1), true),
            (key("a", 1, 1), key("a", 1, 1), false),
            (key("a", 1, 1), key("a", 1, 2), false),
            (key("a", 2, 5), key("a", 1, 1), false),
            (key("b", 1, 5), key("a", 1, 1), false),
        ];

        for (newer, older, expected) in cases {
            assert_eq!(
                newer.invalidates(&older),
                expected,
                "{newer:?} vs {older:?}"
            );
        }
    }
}
