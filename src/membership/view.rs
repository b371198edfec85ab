//! The table of members as this node observes them, and the events that its changes produce.
//!
//! `MemberView` is a pure core: the agent feeds it foca notifications, accepted `NodeMeta`
//! broadcasts and the local node's own meta, with the time as [`Millis`]; it returns the
//! [`MembershipEvent`]s the rest of the node reacts to.
//!
//! Rules the view keeps:
//! 1. Exactly one entry per node name. A newer identity of a name (restart or renew) replaces
//!    the older one, which leaves with [`LeaveReason::Replaced`] if it was still live.
//! 2. Foca's `Rename(old, new)` ends the old incarnation even when foca never reports
//!    `MemberDown` for it, which is what foca does after a node renewed itself.
//! 3. A member is `Joining` until its first broadcast arrives; after that its state is what it
//!    broadcasts, except that a member foca declared down is `Dead`.
//! 4. Dead members stay listed for the retention period, then are forgotten. The local entry
//!    is never forgotten.
//! 5. Broadcasts count per incarnation: only a higher version than the one applied changes an
//!    entry. Broadcasts that arrive before foca reports the member are kept until it does.
//! 6. An incarnation that ended never returns: only an identity with a newer boot id makes a
//!    dead name live again. A renewed identity (same boot id, higher bump) ends its
//!    incarnation as declared down, because foca renews an identity only after the cluster
//!    declared it down, and a node that learns this drops its activations and stops.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use foca::{Identity, OwnedNotification};

use super::identity::SharedIdentity;
use super::{Incarnation, NodeId, NodeIdFields, NodeLoad, NodeMeta, NodeState, SharedMeta};
use crate::clock::Millis;
use crate::storage::StoreId;

/// How long a dead member stays listed by default.
pub const DEFAULT_DEAD_RETENTION: Duration = Duration::from_secs(60);

/// This node's record of one member.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberInfo {
    /// Identity as foca gossips it.
    pub id: NodeId,
    /// Lifecycle state: broadcast by the member, `Joining` before its first broadcast, `Dead`
    /// once foca declares it down or it broadcasts that it left.
    pub state: NodeState,
    /// Load figures of the member's latest broadcast; zero before the first one.
    pub load: NodeLoad,
    /// Version of the latest applied broadcast; 0 before the first one, because nodes number
    /// their broadcasts from 1.
    pub meta_version: u64,
    /// Milliseconds since the Unix epoch at which the member's process started; `None` before
    /// its first broadcast.
    pub started_at_unix_ms: Option<u64>,
    /// Id of the member's database; `None` before its first broadcast or from a release that
    /// does not send one.
    pub store_id: Option<StoreId>,
}

impl MemberInfo {
    /// Returns the incarnation (name plus boot id) of the member.
    pub fn incarnation(&self) -> Incarnation {
        self.id.incarnation()
    }

    /// Returns whether the member is not `Dead`.
    pub fn is_live(&self) -> bool {
        self.state != NodeState::Dead
    }
}

/// Cause of a member's departure from the live members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveReason {
    /// The member announced that it was leaving, then left.
    Left,
    /// The failure detector declared the member down.
    DeclaredDown,
    /// A newer identity with the same name took the member's place.
    Replaced,
}

/// A change of the membership that the rest of the node reacts to.
#[derive(Clone, Debug, PartialEq)]
pub enum MembershipEvent {
    /// A member became live. The agent sends one for the local node first.
    Joined(MemberInfo),
    /// A live member's state or load changed.
    Updated(MemberInfo),
    /// A member is no longer live; its activations are void.
    Left {
        /// The member as last known, with state `Dead`.
        member: MemberInfo,
        /// Cause of the departure.
        reason: LeaveReason,
    },
    /// The cluster declared this node down: it must drop its local activations at once,
    /// because other nodes may already be activating those grains.
    SelfDeclaredDown,
}

/// One member's row: 24 bytes, because a node keeps one for every member. The identity is the
/// row's key, and the meta is shared with the other tables that keep it (see [`SharedMeta`]).
#[derive(Clone, Debug)]
struct Entry {
    /// Latest applied broadcast of this incarnation, `None` before the first. A renewed
    /// identity of the same process resumes from it, because `state` turns `Dead` when the old
    /// identity departs.
    meta: Option<SharedMeta>,
    /// When the entry turned dead. Read only while `dead` is set.
    died_at: Millis,
    /// Lifecycle state, as [`MemberInfo::state`] describes it.
    state: NodeState,
    /// Whether the entry is dead since `died_at`.
    dead: bool,
    /// Whether the entry is dead only because foca has not reported its identity up yet (it
    /// came from a `Rename`), so a `MemberUp` for this identity makes it live.
    awaits_up: bool,
    /// Whether foca counts the identity as up, which it may while the entry is dead (a renewed
    /// identity, or a member that broadcast that it left). A rename to a newer boot id needs
    /// it, because foca reports no `MemberUp` when it renames an identity that is up.
    foca_up: bool,
}

impl Entry {
    /// Returns the row of a member before its first broadcast.
    fn joining() -> Self {
        Self {
            meta: None,
            died_at: Millis(0),
            state: NodeState::Joining,
            dead: false,
            awaits_up: false,
            foca_up: true,
        }
    }

    fn dead_since(&self) -> Option<Millis> {
        self.dead.then_some(self.died_at)
    }

    fn set_dead_since(&mut self, since: Millis) {
        self.dead = true;
        self.died_at = since;
    }

    fn meta_version(&self) -> u64 {
        self.meta.as_ref().map_or(0, |shared| shared.meta.version)
    }

    fn load(&self) -> NodeLoad {
        self.meta
            .as_ref()
            .map(|shared| shared.meta.load)
            .unwrap_or_default()
    }

    /// Stores `meta` as the latest applied broadcast. The entry's state follows it unless the
    /// entry is dead, because a dead incarnation never returns (rule 6).
    fn apply_meta(&mut self, meta: SharedMeta) {
        if !self.dead {
            self.state = meta.meta.state;
        }
        self.meta = Some(meta);
    }

    /// Returns the member as [`MemberInfo`], with the identity `key`.
    fn info(&self, key: &IdKey) -> MemberInfo {
        let meta = self.meta.as_ref().map(|shared| &shared.meta);
        MemberInfo {
            id: key.id(),
            state: self.state,
            load: meta.map(|meta| meta.load).unwrap_or_default(),
            meta_version: meta.map_or(0, |meta| meta.version),
            started_at_unix_ms: meta.map(|meta| meta.started_at_unix_ms),
            store_id: meta.and_then(|meta| meta.store_id),
        }
    }
}

/// A member-table key: the member's identity as an 8-byte pointer, ordered and looked up by
/// the member's name as a `str`.
#[derive(Clone)]
struct IdKey(Arc<SharedIdentity>);

impl std::fmt::Debug for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0.fields, f)
    }
}

impl IdKey {
    fn new(id: NodeId) -> Self {
        Self(id.into_shared())
    }

    fn id(&self) -> NodeId {
        NodeId::from_shared(self.0.clone())
    }
}

impl Borrow<str> for IdKey {
    fn borrow(&self) -> &str {
        self.0.fields.name.as_str()
    }
}

impl PartialEq for IdKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.fields.name.as_str() == other.0.fields.name.as_str()
    }
}

impl Eq for IdKey {}

impl PartialOrd for IdKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for IdKey {
    /// Orders by name, as `str` does, which `Borrow<str>` requires.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0
            .fields
            .name
            .as_str()
            .cmp(other.0.fields.name.as_str())
    }
}

/// A broadcast for an incarnation that foca has not reported yet.
#[derive(Clone, Debug)]
struct PendingMeta {
    meta: SharedMeta,
    received_at: Millis,
}

/// The members of the cluster as this node observes them, the local node included.
#[derive(Clone, Debug)]
pub struct MemberView {
    local_name: String,
    dead_retention: Duration,
    connected: bool,
    members: BTreeMap<IdKey, Entry>,
    pending_meta: HashMap<String, PendingMeta>,
    /// No entry turned dead before this time, or none is dead if `None`. An entry that turns
    /// live again leaves it earlier than needed, which costs one extra scan.
    oldest_dead_since: Option<Millis>,
}

impl MemberView {
    /// Creates a view that holds only the local node, with the state and load of `meta`.
    ///
    /// `dead_retention` is how long a dead member stays listed before [`Self::handle_tick`]
    /// removes it.
    pub fn new(local: NodeId, meta: &NodeMeta, dead_retention: Duration) -> Self {
        let local_name = local.name.to_string();
        let mut entry = Entry::joining();
        entry.apply_meta(SharedMeta::new(&local_name, local.boot_id, meta.clone()));
        let mut members = BTreeMap::new();
        members.insert(IdKey::new(local), entry);
        Self {
            local_name,
            dead_retention,
            connected: false,
            members,
            pending_meta: HashMap::new(),
            oldest_dead_since: None,
        }
    }

    /// Returns the local node's entry.
    pub fn local(&self) -> MemberInfo {
        self.by_name(&self.local_name)
            .expect("the local entry is never removed")
    }

    /// Returns whether foca reports this node as a member of at least one active member's view.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Returns every member, dead ones included, ordered by name.
    pub fn members(&self) -> impl Iterator<Item = MemberInfo> + '_ {
        self.members.iter().map(|(key, entry)| entry.info(key))
    }

    /// Returns the members that are not `Dead`.
    pub fn live(&self) -> impl Iterator<Item = MemberInfo> + '_ {
        self.members
            .iter()
            .filter(|(_, entry)| entry.state != NodeState::Dead)
            .map(|(key, entry)| entry.info(key))
    }

    /// Returns the identities of the members that are not `Dead`, ordered by name. Cheaper
    /// than [`Self::live`], which builds a [`MemberInfo`] per member.
    pub fn live_ids(&self) -> impl Iterator<Item = &NodeIdFields> {
        self.members
            .iter()
            .filter(|(_, entry)| entry.state != NodeState::Dead)
            .map(|(key, _)| &key.0.fields)
    }

    /// Returns the members in state `Active`, the only ones that receive new activations.
    pub fn active(&self) -> impl Iterator<Item = MemberInfo> + '_ {
        self.members
            .iter()
            .filter(|(_, entry)| entry.state.accepts_activations())
            .map(|(key, entry)| entry.info(key))
    }

    /// Returns the member of exactly this incarnation, if the view contains it.
    pub fn get(&self, incarnation: &Incarnation) -> Option<MemberInfo> {
        self.by_name(&incarnation.name)
            .filter(|info| info.id.boot_id == incarnation.boot_id)
    }

    /// Returns the member with this name, whatever its incarnation.
    pub fn by_name(&self, name: &str) -> Option<MemberInfo> {
        self.members
            .get_key_value(name)
            .map(|(key, entry)| entry.info(key))
    }

    /// Returns the latest broadcast applied for `id`'s incarnation, if that incarnation is
    /// live, to hand on to a joining node.
    pub fn meta_of(&self, id: &NodeId) -> Option<NodeMeta> {
        let (key, entry) = self.members.get_key_value(id.name.as_str())?;
        let current = key.0.fields.boot_id == id.boot_id && !entry.dead;
        let meta = entry.meta.as_ref().filter(|_| current)?;
        Some(meta.meta.clone())
    }

    /// Returns every member's identity, in name order, with the latest broadcast applied for
    /// its incarnation if that incarnation is live. [`Self::meta_of`] for all members at once,
    /// for callers that walk a list sorted by name.
    pub fn metas_by_name(&self) -> impl Iterator<Item = (&NodeIdFields, Option<&NodeMeta>)> {
        self.members.iter().map(|(key, entry)| {
            let meta = entry.meta.as_ref().filter(|_| !entry.dead);
            (&key.0.fields, meta.map(|shared| &shared.meta))
        })
    }

    /// Applies a foca notification and returns the events it causes.
    pub fn handle_notification(
        &mut self,
        notification: OwnedNotification<NodeId>,
        now: Millis,
    ) -> Vec<MembershipEvent> {
        match notification {
            OwnedNotification::MemberUp(id) => self.handle_member_up(id, now),
            OwnedNotification::MemberDown(id) => self.handle_member_down(&id, now),
            OwnedNotification::Rename(old, new) => self.handle_rename(&old, new, now),
            OwnedNotification::Active => {
                self.connected = true;
                Vec::new()
            }
            OwnedNotification::Idle => {
                self.connected = false;
                Vec::new()
            }
            OwnedNotification::Defunct => self.handle_self_down(None),
            OwnedNotification::Rejoin(new_id) => self.handle_self_down(Some(new_id)),
            #[allow(unreachable_patterns)] // foca's `unstable-notifications` feature adds kinds.
            _ => Vec::new(),
        }
    }

    /// Applies a broadcast of a member's meta and returns the events it causes.
    ///
    /// Broadcasts about the local name are ignored: the local entry changes only through
    /// [`Self::set_local_meta`].
    pub fn handle_meta(&mut self, meta: SharedMeta, now: Millis) -> Vec<MembershipEvent> {
        if meta.name.as_str() == self.local_name {
            return Vec::new();
        }
        let Some((key, entry)) = self.members.get_key_value(meta.name.as_str()) else {
            self.keep_pending(meta, now);
            return Vec::new();
        };
        let known_boot_id = key.0.fields.boot_id;
        if meta.boot_id > known_boot_id {
            self.keep_pending(meta, now);
            return Vec::new();
        }
        if meta.boot_id < known_boot_id || meta.meta.version <= entry.meta_version() {
            return Vec::new();
        }
        let name = meta.name.clone();
        let entry = self.entry_mut(&name);
        if entry.dead {
            // Delayed news of a member that is already dead: it stays dead.
            entry.apply_meta(meta);
            return Vec::new();
        }

        let (state_before, load_before) = (entry.state, entry.load());
        entry.apply_meta(meta);
        if entry.state == NodeState::Dead {
            entry.set_dead_since(now);
            self.note_dead(now);
            let member = self.info_of(&name);
            return vec![MembershipEvent::Left {
                member,
                reason: LeaveReason::Left,
            }];
        }
        if state_before != entry.state || load_before != entry.load() {
            return vec![MembershipEvent::Updated(self.info_of(&name))];
        }
        Vec::new()
    }

    /// Replaces the local node's state and load with those of `meta`; returns `Updated` for
    /// the local node if either changed.
    pub fn set_local_meta(&mut self, meta: &NodeMeta) -> Vec<MembershipEvent> {
        let (key, _) = self
            .members
            .get_key_value(self.local_name.as_str())
            .expect("the local entry is never removed");
        let shared = SharedMeta::new(&self.local_name, key.0.fields.boot_id, meta.clone());
        let local_name = self.local_name.clone();
        let entry = self.entry_mut(&local_name);
        let (state_before, load_before) = (entry.state, entry.load());
        entry.apply_meta(shared);
        if state_before != entry.state || load_before != entry.load() {
            return vec![MembershipEvent::Updated(self.info_of(&local_name))];
        }
        Vec::new()
    }

    /// Forgets dead members and pending broadcasts older than the retention period; returns
    /// how many members it forgot.
    pub fn handle_tick(&mut self, now: Millis) -> usize {
        let retention = self.dead_retention;
        let expired = |entry: &Entry| {
            entry
                .dead_since()
                .is_some_and(|since| now.saturating_since(since) >= retention)
        };
        let before = self.members.len();
        // The agent calls this every second, so the view scans its entries only when the
        // oldest dead one may have expired.
        let due = self
            .oldest_dead_since
            .is_some_and(|since| now.saturating_since(since) >= retention);
        if due {
            self.members.retain(|_, entry| !expired(entry));
            self.oldest_dead_since = self.members.values().filter_map(Entry::dead_since).min();
        }
        self.pending_meta
            .retain(|_, pending| now.saturating_since(pending.received_at) < retention);
        before - self.members.len()
    }

    fn handle_member_up(&mut self, id: NodeId, now: Millis) -> Vec<MembershipEvent> {
        if id.name == self.local_name {
            return Vec::new();
        }
        let mut events = Vec::new();
        if let Some((key, entry)) = self.members.get_key_value(id.name.as_str()) {
            let known = key.id();
            let awaited = known == id && entry.awaits_up;
            if known == id && !awaited {
                // The same identity again: nothing changed here, and a dead identity stays
                // dead (rule 6), but foca counts it as up.
                self.entry_mut(&id.name).foca_up = true;
                return events;
            }
            if !awaited && !id.win_addr_conflict(&known) {
                // An older identity: nothing changed.
                return events;
            }
            if id.boot_id == known.boot_id && !awaited {
                return self.handle_renewed(id, Some(true), now);
            }
            if !entry.dead {
                events.push(self.become_dead(&id.name, now, LeaveReason::Replaced));
            }
        }
        events.extend(self.insert_live(id, now));
        events
    }

    /// Handles a renewed identity of the known incarnation: foca renews an identity only after
    /// the cluster declared it down, so the incarnation ends for good (rule 6). `foca_up` is
    /// foca's liveness of the renewed identity if it changed. Returns the `Left` event if the
    /// member was live.
    fn handle_renewed(
        &mut self,
        id: NodeId,
        foca_up: Option<bool>,
        now: Millis,
    ) -> Vec<MembershipEvent> {
        let name = id.name.clone();
        let entry = self.replace_id(id);
        entry.awaits_up = false;
        if let Some(up) = foca_up {
            entry.foca_up = up;
        }
        if entry.dead {
            return Vec::new();
        }
        vec![self.become_dead(&name, now, LeaveReason::DeclaredDown)]
    }

    fn handle_member_down(&mut self, id: &NodeId, now: Millis) -> Vec<MembershipEvent> {
        let Some((key, entry)) = self.members.get_key_value(id.name.as_str()) else {
            return Vec::new();
        };
        let known = key.id();
        let matches = known == *id || id.win_addr_conflict(&known);
        if id.name == self.local_name || !matches {
            return Vec::new();
        }
        if entry.dead {
            let entry = self.entry_mut(&id.name);
            entry.foca_up = false;
            entry.awaits_up = false;
            return Vec::new();
        }
        let reason = if entry.state == NodeState::Leaving {
            LeaveReason::Left
        } else {
            LeaveReason::DeclaredDown
        };
        let event = self.become_dead(&id.name, now, reason);
        self.replace_id(id.clone()).foca_up = false;
        vec![event]
    }

    /// Handles foca's `Rename(old, new)`: `old`'s incarnation is gone. In foca, `new` is up
    /// exactly when `old` was, because foca follows a rename that changes liveness with
    /// `MemberUp` or `MemberDown` for `new`. Here `new` is live if it is up in foca and has a
    /// newer boot id (rule 6).
    fn handle_rename(&mut self, old: &NodeId, new: NodeId, now: Millis) -> Vec<MembershipEvent> {
        if new.name == self.local_name {
            return Vec::new();
        }
        let Some((key, entry)) = self.members.get_key_value(new.name.as_str()) else {
            // Neither identity was reported up; a `MemberUp` for `new` may follow.
            self.insert_dead(new, now);
            return Vec::new();
        };
        let known = key.id();
        if known == new || (known != *old && !new.win_addr_conflict(&known)) {
            return Vec::new();
        }
        if new.boot_id == known.boot_id {
            return self.handle_renewed(new, None, now);
        }
        if entry.dead {
            if entry.foca_up {
                // A new incarnation whose predecessor foca counted as up: foca reports no
                // `MemberUp` for it, because the rename did not change its liveness.
                return self.insert_live(new, now).into_iter().collect();
            }
            self.insert_dead(new, now);
            return Vec::new();
        }
        let mut events = vec![self.become_dead(&new.name, now, LeaveReason::Replaced)];
        events.extend(self.insert_live(new, now));
        events
    }

    /// Handles `Defunct` (`new_id` is `None`) and `Rejoin(new_id)`.
    fn handle_self_down(&mut self, new_id: Option<NodeId>) -> Vec<MembershipEvent> {
        if new_id.is_none() {
            self.connected = false;
        }
        let local_name = self.local_name.clone();
        match new_id {
            Some(id) => {
                debug_assert_eq!(
                    id.incarnation(),
                    self.local().incarnation(),
                    "renew keeps the boot id"
                );
                self.replace_id(id);
            }
            None => {
                let local = self.entry_mut(&local_name);
                if matches!(local.state, NodeState::Leaving | NodeState::Dead) {
                    // Expected after leaving the cluster: nothing is left to drop.
                    local.state = NodeState::Dead;
                    return Vec::new();
                }
            }
        }
        vec![MembershipEvent::SelfDeclaredDown]
    }

    /// Marks a live entry dead and returns its `Left` event.
    fn become_dead(&mut self, name: &str, now: Millis, reason: LeaveReason) -> MembershipEvent {
        let entry = self.entry_mut(name);
        entry.state = NodeState::Dead;
        entry.set_dead_since(now);
        entry.awaits_up = false;
        self.note_dead(now);
        MembershipEvent::Left {
            member: self.info_of(name),
            reason,
        }
    }

    /// Stores `id` as a live member, with the newest broadcast known for its incarnation, and
    /// returns its `Joined` event. A member whose newest broadcast reports that it left is stored dead
    /// instead, without an event.
    fn insert_live(&mut self, id: NodeId, now: Millis) -> Option<MembershipEvent> {
        let name = id.name.clone();
        let mut last_meta = self
            .members
            .get_key_value(name.as_str())
            .filter(|(key, _)| key.0.fields.boot_id == id.boot_id)
            .and_then(|(_, previous)| previous.meta.clone());
        if let Some(pending) = self.pending_meta.remove(name.as_str()) {
            let known_version = last_meta.as_ref().map_or(0, |meta| meta.meta.version);
            if pending.meta.boot_id == id.boot_id && pending.meta.meta.version > known_version {
                last_meta = Some(pending.meta);
            } else if pending.meta.boot_id > id.boot_id {
                self.pending_meta.insert(name.to_string(), pending);
            }
        }

        let mut entry = Entry::joining();
        if let Some(meta) = last_meta {
            entry.apply_meta(meta);
        }
        let dead = entry.state == NodeState::Dead;
        if dead {
            entry.set_dead_since(now);
            self.note_dead(now);
        }
        let key = IdKey::new(id);
        let event = (!dead).then(|| MembershipEvent::Joined(entry.info(&key)));
        self.members.remove(name.as_str());
        self.members.insert(key, entry);
        event
    }

    fn insert_dead(&mut self, id: NodeId, now: Millis) {
        let mut entry = Entry::joining();
        entry.state = NodeState::Dead;
        entry.set_dead_since(now);
        entry.awaits_up = true;
        entry.foca_up = false;
        self.note_dead(now);
        self.members.remove(id.name.as_str());
        self.members.insert(IdKey::new(id), entry);
    }

    /// Records that an entry turned dead at `now`, the latest time yet, for `handle_tick`.
    fn note_dead(&mut self, now: Millis) {
        self.oldest_dead_since.get_or_insert(now);
    }

    fn keep_pending(&mut self, meta: SharedMeta, now: Millis) {
        let newer = self
            .pending_meta
            .get(meta.name.as_str())
            .is_none_or(|pending| {
                (meta.boot_id, meta.meta.version)
                    > (pending.meta.boot_id, pending.meta.meta.version)
            });
        if newer {
            self.pending_meta.insert(
                meta.name.to_string(),
                PendingMeta {
                    meta,
                    received_at: now,
                },
            );
        }
    }

    /// Replaces the identity of the entry with `id`'s name by `id`, and returns the entry.
    /// The key carries the identity, so the entry moves to a new key of the same name.
    fn replace_id(&mut self, id: NodeId) -> &mut Entry {
        let name = id.name.clone();
        let entry = self
            .members
            .remove(name.as_str())
            .expect("callers look the entry up first");
        self.members.insert(IdKey::new(id), entry);
        self.entry_mut(&name)
    }

    /// Returns the entry with `name` as [`MemberInfo`].
    fn info_of(&self, name: &str) -> MemberInfo {
        self.by_name(name).expect("callers look the entry up first")
    }

    fn entry_mut(&mut self, name: &str) -> &mut Entry {
        self.members
            .get_mut(name)
            .expect("callers look the entry up first")
    }
}

#[cfg(test)]
mod tests;
