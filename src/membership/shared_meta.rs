//! A member's node meta with the incarnation it describes, shared by every table that stores it.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use super::{Incarnation, MetaBroadcast, NodeMeta, NodeName, interner};

/// One broadcast of a node's meta: the incarnation it describes and the meta.
#[derive(Debug, PartialEq)]
pub struct MetaRecord {
    /// XXH3-128 hash of the name, the key of the broadcast handler's table.
    pub name_hash: u128,
    /// Name of the node.
    pub name: NodeName,
    /// Boot id of the incarnation.
    pub boot_id: u64,
    /// State and load, with the version that orders broadcasts of one incarnation.
    pub meta: NodeMeta,
}

/// A [`MetaRecord`] behind an `Arc`, 8 bytes.
///
/// Every `SharedMeta` with equal fields in the process points at one allocation (see
/// `interner`), so the member view, the broadcast handler's table and foca's meta backlog
/// keep a pointer per member instead of a copy of the meta. Fields read through `Deref`, as in
/// `shared.meta.version`.
#[derive(Clone, PartialEq)]
pub struct SharedMeta(Arc<MetaRecord>);

impl SharedMeta {
    /// Returns the meta of `name`'s incarnation `boot_id`, sharing the allocation of an equal
    /// one that exists in the process.
    pub fn new(name: &str, boot_id: u64, meta: NodeMeta) -> Self {
        interner::intern_meta(name, boot_id, meta)
    }

    /// Returns the meta that `item` carries, shared as [`SharedMeta::new`] shares it.
    pub fn from_broadcast(item: MetaBroadcast) -> Self {
        Self::new(&item.incarnation.name, item.incarnation.boot_id, item.meta)
    }

    /// Wraps an interned record; only the interner calls this.
    pub(super) fn from_shared(record: Arc<MetaRecord>) -> Self {
        Self(record)
    }

    /// Returns the shared record.
    #[cfg(test)]
    pub(super) fn shared(&self) -> &Arc<MetaRecord> {
        &self.0
    }

    /// Returns the incarnation that the meta describes.
    pub fn incarnation(&self) -> Incarnation {
        Incarnation {
            name: self.name.to_string(),
            boot_id: self.boot_id,
        }
    }
}

impl Deref for SharedMeta {
    type Target = MetaRecord;

    #[inline]
    fn deref(&self) -> &MetaRecord {
        &self.0
    }
}

impl fmt::Debug for SharedMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}
