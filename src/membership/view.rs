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
use std::time::Duration;

use foca::{Identity, OwnedNotification};

use super::{Incarnation, NodeId, NodeLoad, NodeMeta, NodeName, NodeState};
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
    fn joining(id: NodeId) -> Self {
        Self {
            id,
            state: NodeState::Joining,
            load: NodeLoad::default(),
            meta_version: 0,
            started_at_unix_ms: None,
            store_id: None,
        }
    }

    /// Returns the incarnation (name plus boot id) of the member.
    pub fn incarnation(&self) -> Incarnation {
        self.id.incarnation()
    }

    /// Returns whether the member is not `Dead`.
    pub fn is_live(&self) -> bool {
        self.state != NodeState::Dead
    }

    fn apply_meta(&mut self, meta: &NodeMeta) {
        self.state = meta.state;
        self.load = meta.load;
        self.meta_version = meta.version;
        self.started_at_unix_ms = Some(meta.started_at_unix_ms);
        self.store_id = meta.store_id;
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

/// One member's row.
#[derive(Clone, Debug)]
struct Entry {
    info: MemberInfo,
    /// State of the latest applied broadcast of this incarnation, `None` before the first.
    /// With the other fields of `info` it is that broadcast (see [`Entry::last_meta`]): a
    /// renewed identity of the same process resumes from it, because `info.state` turns `Dead`
    /// when the old identity departs.
    broadcast_state: Option<NodeState>,
    dead_since: Option<Millis>,
    /// Whether the entry is dead only because foca has not reported its identity up yet (it
    /// came from a `Rename`), so a `MemberUp` for this identity makes it live.
    awaits_up: bool,
    /// Whether foca counts the identity as up, which it may while the entry is dead (a renewed
    /// identity, or a member that broadcast that it left). A rename to a newer boot id needs
    /// it, because foca reports no `MemberUp` when it renames an identity that is up.
    foca_up: bool,
}

impl Entry {
    /// Returns the latest applied broadcast of this incarnation, rebuilt from `info`, which
    /// stores every field of it except the state.
    fn last_meta(&self) -> Option<NodeMeta> {
        let state = self.broadcast_state?;
        Some(NodeMeta {
            version: self.info.meta_version,
            state,
            load: self.info.load,
            started_at_unix_ms: self.info.started_at_unix_ms.unwrap_or_default(),
            store_id: self.info.store_id,
        })
    }

    /// Stores `meta` as the latest applied broadcast. The entry's state follows it unless the
    /// entry is dead, because a dead incarnation never returns (rule 6).
    fn apply_meta(&mut self, meta: &NodeMeta) {
        let state = self.info.state;
        self.info.apply_meta(meta);
        if self.dead_since.is_some() {
            self.info.state = state;
        }
        self.broadcast_state = Some(meta.state);
    }
}

/// A member-table key: the member's name, which shares the text of its identity, ordered and
/// looked up as a `str`.
#[derive(Clone, Debug)]
struct NameKey(NodeName);

impl Borrow<str> for NameKey {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for NameKey {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for NameKey {}

impl PartialOrd for NameKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for NameKey {
    /// Orders by text, as `str` does, which `Borrow<str>` requires.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.as_str().cmp(other.0.as_str())
    }
}

/// A broadcast for an incarnation that foca has not reported yet.
#[derive(Clone, Debug)]
struct PendingMeta {
    boot_id: u64,
    meta: NodeMeta,
    received_at: Millis,
}

/// The members of the cluster as this node observes them, the local node included.
#[derive(Clone, Debug)]
pub struct MemberView {
    local_name: String,
    dead_retention: Duration,
    connected: bool,
    members: BTreeMap<NameKey, Entry>,
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
        let mut info = MemberInfo::joining(local);
        info.apply_meta(meta);
        let local_name = info.id.name.to_string();
        let mut members = BTreeMap::new();
        members.insert(
            NameKey(info.id.name.clone()),
            Entry {
                info,
                broadcast_state: Some(meta.state),
                dead_since: None,
                awaits_up: false,
                foca_up: true,
            },
        );
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
    pub fn local(&self) -> &MemberInfo {
        &self.members[self.local_name.as_str()].info
    }

    /// Returns whether foca reports this node as a member of at least one active member's view.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Returns every member, dead ones included, ordered by name.
    pub fn members(&self) -> impl Iterator<Item = &MemberInfo> {
        self.members.values().map(|entry| &entry.info)
    }

    /// Returns the members that are not `Dead`.
    pub fn live(&self) -> impl Iterator<Item = &MemberInfo> {
        self.members().filter(|info| info.is_live())
    }

    /// Returns the members in state `Active`, the only ones that receive new activations.
    pub fn active(&self) -> impl Iterator<Item = &MemberInfo> {
        self.members()
            .filter(|info| info.state.accepts_activations())
    }

    /// Returns the member of exactly this incarnation, if the view contains it.
    pub fn get(&self, incarnation: &Incarnation) -> Option<&MemberInfo> {
        self.by_name(&incarnation.name)
            .filter(|info| info.id.boot_id == incarnation.boot_id)
    }

    /// Returns the member with this name, whatever its incarnation.
    pub fn by_name(&self, name: &str) -> Option<&MemberInfo> {
        self.members.get(name).map(|entry| &entry.info)
    }

    /// Returns the latest broadcast applied for `id`'s incarnation, if that incarnation is
    /// live, to hand on to a joining node.
    pub fn meta_of(&self, id: &NodeId) -> Option<NodeMeta> {
        let entry = self.members.get(id.name.as_str())?;
        let current = entry.info.id.boot_id == id.boot_id && entry.dead_since.is_none();
        entry.last_meta().filter(|_| current)
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

    /// Applies a broadcast of `incarnation`'s meta and returns the events it causes.
    ///
    /// Broadcasts about the local name are ignored: the local entry changes only through
    /// [`Self::set_local_meta`].
    pub fn handle_meta(
        &mut self,
        incarnation: &Incarnation,
        meta: NodeMeta,
        now: Millis,
    ) -> Vec<MembershipEvent> {
        if incarnation.name == self.local_name {
            return Vec::new();
        }
        let Some(entry) = self.members.get_mut(incarnation.name.as_str()) else {
            self.keep_pending(incarnation, meta, now);
            return Vec::new();
        };
        let known_boot_id = entry.info.id.boot_id;
        if incarnation.boot_id > known_boot_id {
            self.keep_pending(incarnation, meta, now);
            return Vec::new();
        }
        if incarnation.boot_id < known_boot_id || meta.version <= entry.info.meta_version {
            return Vec::new();
        }
        if entry.dead_since.is_some() {
            // Delayed news of a member that is already dead: it stays dead.
            entry.apply_meta(&meta);
            return Vec::new();
        }

        let before = entry.info.clone();
        entry.apply_meta(&meta);
        if meta.state == NodeState::Dead {
            entry.dead_since = Some(now);
            let event = MembershipEvent::Left {
                member: entry.info.clone(),
                reason: LeaveReason::Left,
            };
            self.note_dead(now);
            return vec![event];
        }
        if before.state != entry.info.state || before.load != entry.info.load {
            return vec![MembershipEvent::Updated(entry.info.clone())];
        }
        Vec::new()
    }

    /// Replaces the local node's state and load with those of `meta`; returns `Updated` for
    /// the local node if either changed.
    pub fn set_local_meta(&mut self, meta: &NodeMeta) -> Vec<MembershipEvent> {
        let entry = self
            .members
            .get_mut(self.local_name.as_str())
            .expect("the local entry is never removed");
        let before = entry.info.clone();
        entry.apply_meta(meta);
        if before.state != entry.info.state || before.load != entry.info.load {
            return vec![MembershipEvent::Updated(entry.info.clone())];
        }
        Vec::new()
    }

    /// Forgets dead members and pending broadcasts older than the retention period; returns
    /// how many members it forgot.
    pub fn handle_tick(&mut self, now: Millis) -> usize {
        let retention = self.dead_retention;
        let expired = |entry: &Entry| {
            entry
                .dead_since
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
            self.oldest_dead_since = self
                .members
                .values()
                .filter_map(|entry| entry.dead_since)
                .min();
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
        if let Some(entry) = self.members.get(id.name.as_str()) {
            let known = &entry.info.id;
            let awaited = *known == id && entry.awaits_up;
            if *known == id && !awaited {
                // The same identity again: nothing changed here, and a dead identity stays
                // dead (rule 6), but foca counts it as up.
                self.entry_mut(&id.name).foca_up = true;
                return events;
            }
            if !awaited && !id.win_addr_conflict(known) {
                // An older identity: nothing changed.
                return events;
            }
            if id.boot_id == known.boot_id && !awaited {
                return self.handle_renewed(id, Some(true), now);
            }
            if entry.dead_since.is_none() {
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
        let entry = self.entry_mut(&name);
        entry.info.id = id;
        entry.awaits_up = false;
        if let Some(up) = foca_up {
            entry.foca_up = up;
        }
        if entry.dead_since.is_some() {
            return Vec::new();
        }
        vec![self.become_dead(&name, now, LeaveReason::DeclaredDown)]
    }

    fn handle_member_down(&mut self, id: &NodeId, now: Millis) -> Vec<MembershipEvent> {
        let Some(entry) = self.members.get(id.name.as_str()) else {
            return Vec::new();
        };
        let matches = entry.info.id == *id || id.win_addr_conflict(&entry.info.id);
        if id.name == self.local_name || !matches {
            return Vec::new();
        }
        if entry.dead_since.is_some() {
            let entry = self.entry_mut(&id.name);
            entry.foca_up = false;
            entry.awaits_up = false;
            return Vec::new();
        }
        let reason = if entry.info.state == NodeState::Leaving {
            LeaveReason::Left
        } else {
            LeaveReason::DeclaredDown
        };
        let event = self.become_dead(&id.name, now, reason);
        let entry = self.entry_mut(&id.name);
        entry.info.id = id.clone();
        entry.foca_up = false;
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
        let Some(entry) = self.members.get(new.name.as_str()) else {
            // Neither identity was reported up; a `MemberUp` for `new` may follow.
            self.insert_dead(new, now);
            return Vec::new();
        };
        let known = &entry.info.id;
        if *known == new || (*known != *old && !new.win_addr_conflict(known)) {
            return Vec::new();
        }
        if new.boot_id == known.boot_id {
            return self.handle_renewed(new, None, now);
        }
        if entry.dead_since.is_some() {
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
        let local = &mut self.entry_mut(&local_name).info;
        match new_id {
            Some(id) => {
                debug_assert_eq!(
                    id.incarnation(),
                    local.incarnation(),
                    "renew keeps the boot id"
                );
                local.id = id;
            }
            None if matches!(local.state, NodeState::Leaving | NodeState::Dead) => {
                // Expected after leaving the cluster: nothing is left to drop.
                local.state = NodeState::Dead;
                return Vec::new();
            }
            None => {}
        }
        vec![MembershipEvent::SelfDeclaredDown]
    }

    /// Marks a live entry dead and returns its `Left` event.
    fn become_dead(&mut self, name: &str, now: Millis, reason: LeaveReason) -> MembershipEvent {
        let entry = self.entry_mut(name);
        entry.info.state = NodeState::Dead;
        entry.dead_since = Some(now);
        entry.awaits_up = false;
        let event = MembershipEvent::Left {
            member: entry.info.clone(),
            reason,
        };
        self.note_dead(now);
        event
    }

    /// Stores `id` as a live member, with the newest broadcast known for its incarnation, and
    /// returns its `Joined` event. A member whose newest broadcast reports that it left is stored dead
    /// instead, without an event.
    fn insert_live(&mut self, id: NodeId, now: Millis) -> Option<MembershipEvent> {
        let name = id.name.clone();
        let mut last_meta = self
            .members
            .get(name.as_str())
            .filter(|previous| previous.info.incarnation() == id.incarnation())
            .and_then(Entry::last_meta);
        if let Some(pending) = self.pending_meta.remove(name.as_str()) {
            let known_version = last_meta.as_ref().map_or(0, |meta| meta.version);
            if pending.boot_id == id.boot_id && pending.meta.version > known_version {
                last_meta = Some(pending.meta);
            } else if pending.boot_id > id.boot_id {
                self.pending_meta.insert(name.to_string(), pending);
            }
        }

        let mut info = MemberInfo::joining(id);
        if let Some(meta) = &last_meta {
            info.apply_meta(meta);
        }
        let dead_since = (info.state == NodeState::Dead).then_some(now);
        if dead_since.is_some() {
            self.note_dead(now);
        }
        self.members.insert(
            NameKey(name),
            Entry {
                info: info.clone(),
                broadcast_state: last_meta.map(|meta| meta.state),
                dead_since,
                awaits_up: false,
                foca_up: true,
            },
        );
        dead_since
            .is_none()
            .then_some(MembershipEvent::Joined(info))
    }

    fn insert_dead(&mut self, id: NodeId, now: Millis) {
        let mut info = MemberInfo::joining(id);
        info.state = NodeState::Dead;
        let name = info.id.name.clone();
        self.note_dead(now);
        self.members.insert(
            NameKey(name),
            Entry {
                info,
                broadcast_state: None,
                dead_since: Some(now),
                awaits_up: true,
                foca_up: false,
            },
        );
    }

    /// Records that an entry turned dead at `now`, the latest time yet, for `handle_tick`.
    fn note_dead(&mut self, now: Millis) {
        self.oldest_dead_since.get_or_insert(now);
    }

    fn keep_pending(&mut self, incarnation: &Incarnation, meta: NodeMeta, now: Millis) {
        let newer = self
            .pending_meta
            .get(&incarnation.name)
            .is_none_or(|pending| {
                (incarnation.boot_id, meta.version) > (pending.boot_id, pending.meta.version)
            });
        if newer {
            self.pending_meta.insert(
                incarnation.name.clone(),
                PendingMeta {
                    boot_id: incarnation.boot_id,
                    meta,
                    received_at: now,
                },
            );
        }
    }

    fn entry_mut(&mut self, name: &str) -> &mut Entry {
        self.members
            .get_mut(name)
            .expect("callers look the entry up first")
    }
}

#[cfg(test)]
mod tests;
