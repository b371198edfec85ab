//! The directory partition a node owns: grain entries, compare-and-set registration, hand-offs.
//!
//! # Membership changes and the readiness window
//!
//! A grain's directory entry lives on the member that [`partition_owner`] picks from the live
//! members. When membership changes, ownership of some grains moves, and the new owner learns
//! about their activations from two sources that arrive at different times. The protocol:
//!
//! 1. Every node applies the new view with [`DirectoryPartition::handle_membership_change`]. It
//!    drops entries whose host is not live, and removes the entries another member owns now,
//!    returning them as [`DirectoryCommand::HandOff`] batches for the glue to send.
//! 2. The node opens a readiness window. For grains it owns now but did not own before the
//!    change, it replies `NotReady` to lookups, new registrations and migrations that find no
//!    entry, because the entry may still be on its way. A view in which the node was alone
//!    counts as no view, because a joining node is alone in its first view.
//! 3. Every node re-asserts each of its local activations with the owner in the new view
//!    ([`DirectoryPartition::handle_reassert`]). Re-assertions are accepted during the window;
//!    the first entry for a grain wins, and a host whose re-assertion conflicts deactivates.
//! 4. The new owner merges hand-off batches ([`DirectoryPartition::handle_handoff`]). Where a
//!    hand-off meets a different activation of the same grain, the higher epoch wins, then the
//!    entry already stored; the loser's host receives a deactivation command.
//! 5. When a node's hand-offs and re-assertions for the view are all acknowledged, it sends a
//!    sync confirmation for the view's [`ViewId`] to every member, itself included.
//! 6. The window closes once every live member confirmed the current view
//!    ([`DirectoryPartition::handle_sync_complete`]), or at the latest after
//!    [`DirectoryConfig::handoff_grace`]. Only then can a missing entry mean "no activation".
//!
//! Why this prevents a second activation: an activation that existed before the change is
//! either still registered at the previous owner, which hands the entry off in step 1, or
//! recorded by its host, which re-asserts it in step 3. Until both have arrived (step 6), the
//! new owner answers no `NotFound` that would let a caller place a second activation. When the
//! grace period ends before a slow hand-off arrives, a second activation can start; the
//! hand-off conflict of step 4 then deactivates one of the two.
//!
//! NOTE: SWIM views differ between nodes while gossip spreads a change, and for as long as a
//! network partition lasts. Two nodes can then both believe they own a grain, and each can
//! admit an activation. The directory narrows that window but does not close it: storage
//! writes fenced by ETag and epoch are the second fence, and hand-off conflicts deactivate one
//! of the two once the views agree again.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};

use tracing::{debug, info, warn};

use super::readiness::{Readiness, ViewId};
use super::{
    DirectoryCommand, DirectoryConfig, DirectoryEntry, Expect, LookupOutcome, PartitionCounters,
    RegisterOutcome, UnregisterOutcome, partition_owner,
};
use crate::clock::Millis;
use crate::grain::GrainId;
use crate::membership::Incarnation;

/// The directory entries that one node owns, with the protocol of the module documentation.
///
/// Inputs are `handle_*` calls carrying the current time; outputs are outcomes and
/// [`DirectoryCommand`]s for the glue. The partition does no I/O.
#[derive(Debug)]
pub struct DirectoryPartition {
    local: Incarnation,
    config: DirectoryConfig,
    /// Live members of the current view, sorted and without duplicates.
    members: Vec<Incarnation>,
    entries: HashSet<Slot>,
    readiness: Readiness,
    /// Activations unregistered while their grain was pending, so that a late hand-off of
    /// their entry does not bring them back. Cleared when no readiness window is open.
    tombstones: HashSet<(GrainId, Incarnation, u64)>,
    counters: PartitionCounters,
    /// Protocol violation injected by the simulator; `None` in every real node.
    #[cfg(feature = "fault-injection")]
    fault: Option<super::DirectoryFault>,
}

/// A directory entry as the partition stores it: it equals and hashes as its grain id, so the
/// table needs no second copy of the id per entry.
#[derive(Debug)]
struct Slot(DirectoryEntry);

impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        self.0.grain == other.0.grain
    }
}

impl Eq for Slot {}

impl Hash for Slot {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.grain.hash(state);
    }
}

impl Borrow<GrainId> for Slot {
    fn borrow(&self) -> &GrainId {
        &self.0.grain
    }
}

impl DirectoryPartition {
    /// Returns the stored entry of `grain`.
    fn entry(&self, grain: &GrainId) -> Option<&DirectoryEntry> {
        self.entries.get(grain).map(|slot| &slot.0)
    }

    /// Creates the empty partition of node `local`, which owns nothing until the first
    /// membership change.
    pub fn new(local: Incarnation, config: DirectoryConfig) -> Self {
        Self {
            local,
            config,
            members: Vec::new(),
            entries: HashSet::new(),
            readiness: Readiness::default(),
            tombstones: HashSet::new(),
            counters: PartitionCounters::default(),
            #[cfg(feature = "fault-injection")]
            fault: None,
        }
    }

    /// Makes this partition break its protocol with `fault` from now on; test use only.
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&mut self, fault: super::DirectoryFault) {
        warn!(node = %self.local, ?fault, "directory fault injected");
        self.fault = Some(fault);
    }

    /// Returns the id of the current view, for the glue's sync confirmations.
    pub fn view(&self) -> ViewId {
        self.readiness.view()
    }

    /// Returns the number of entries stored here.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Returns whether no entries are stored here.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Returns the running event totals.
    pub fn counters(&self) -> &PartitionCounters {
        &self.counters
    }

    /// Returns whether no readiness window is open at `now`, so every owned grain is ready.
    pub fn is_ready(&mut self, now: Millis) -> bool {
        self.maybe_settle(now)
    }

    /// Looks up the activation of `grain`.
    pub fn handle_lookup(&mut self, grain: &GrainId, now: Millis) -> LookupOutcome {
        self.maybe_settle(now);
        if let Some(entry) = self.entry(grain) {
            return LookupOutcome::Found(entry.clone());
        }
        if let Some(owner) = self.other_owner(grain) {
            self.counters.not_owner_replies += 1;
            return LookupOutcome::NotOwner { owner };
        }
        if self.readiness.is_pending(grain, &self.local) {
            self.counters.not_ready_replies += 1;
            return LookupOutcome::NotReady;
        }
        LookupOutcome::NotFound
    }

    /// Registers `entry` if the grain's current entry meets `expect` (compare-and-set).
    ///
    /// With [`Expect::Epoch`], the stored entry's epoch is the expected epoch plus one and
    /// `entry.epoch` is ignored. Repeating a registration that already won returns
    /// `Registered` again, so a caller may retry after a lost reply.
    pub fn handle_register(
        &mut self,
        entry: DirectoryEntry,
        expect: Expect,
        now: Millis,
    ) -> RegisterOutcome {
        self.maybe_settle(now);
        if let Some(owner) = self.other_owner(&entry.grain) {
            self.counters.not_owner_replies += 1;
            return RegisterOutcome::NotOwner { owner };
        }
        let pending = self.readiness.is_pending(&entry.grain, &self.local);
        match (expect, self.entry(&entry.grain)) {
            (Expect::Absent, Some(existing)) => {
                if *existing == entry {
                    RegisterOutcome::Registered(entry)
                } else if self.skips_compare_and_set() {
                    self.insert(entry)
                } else {
                    self.reject(existing.clone())
                }
            }
            (Expect::Epoch(epoch), Some(existing)) => {
                let next = DirectoryEntry {
                    epoch: epoch.saturating_add(1),
                    ..entry
                };
                if *existing == next {
                    RegisterOutcome::Registered(next)
                } else if existing.epoch == epoch && epoch < u64::MAX {
                    debug!(entry = %next, "directory migration registered");
                    self.counters.migrations += 1;
                    self.insert(next)
                } else {
                    self.reject(existing.clone())
                }
            }
            (_, None) if pending => {
                self.counters.not_ready_replies += 1;
                RegisterOutcome::NotReady
            }
            (Expect::Absent, None) => self.insert(entry),
            (Expect::Epoch(_), None) => {
                self.counters.conflicts += 1;
                RegisterOutcome::Missing
            }
        }
    }

    /// Re-registers a host's existing activation after a membership change.
    ///
    /// Like a registration with [`Expect::Absent`], but accepted during a readiness window,
    /// because re-assertions are what the window waits for. An entry for the same activation
    /// counts as success whatever its epoch; a different activation's entry is a conflict, and
    /// the re-asserting host must deactivate (the first entry wins).
    pub fn handle_reassert(&mut self, entry: DirectoryEntry, now: Millis) -> RegisterOutcome {
        self.maybe_settle(now);
        if let Some(owner) = self.other_owner(&entry.grain) {
            self.counters.not_owner_replies += 1;
            return RegisterOutcome::NotOwner { owner };
        }
        match self.entry(&entry.grain) {
            Some(existing) if existing.is_same_activation(&entry) => {
                RegisterOutcome::Registered(existing.clone())
            }
            Some(existing) => self.reject(existing.clone()),
            None => self.insert(entry),
        }
    }

    /// Removes the entry of `grain` if it names activation `activation_id` on `host`.
    ///
    /// A late unregistration of an old activation leaves a newer activation's entry in place.
    pub fn handle_unregister(
        &mut self,
        grain: &GrainId,
        host: &Incarnation,
        activation_id: u64,
        now: Millis,
    ) -> UnregisterOutcome {
        self.maybe_settle(now);
        match self.entry(grain) {
            Some(existing) if existing.host == *host && existing.activation_id == activation_id => {
                self.counters.unregistrations += 1;
                let removed = self.entries.take(grain).expect("entry was just found");
                UnregisterOutcome::Removed(removed.0)
            }
            Some(existing) => UnregisterOutcome::Superseded(existing.clone()),
            None => {
                if let Some(owner) = self.other_owner(grain) {
                    self.counters.not_owner_replies += 1;
                    return UnregisterOutcome::NotOwner { owner };
                }
                if self.readiness.is_pending(grain, &self.local) {
                    // The entry may still arrive in a hand-off; remember to discard it then.
                    self.tombstones
                        .insert((grain.clone(), host.clone(), activation_id));
                }
                UnregisterOutcome::Absent
            }
        }
    }

    /// Applies a new membership view: drops entries of hosts that are not live, hands off the
    /// entries other members own now, and opens a readiness window for the grains gained.
    ///
    /// `members` lists the live incarnations, the local one included while it is a member.
    /// Repeating the current view changes nothing.
    pub fn handle_membership_change(
        &mut self,
        members: &[Incarnation],
        now: Millis,
    ) -> Vec<DirectoryCommand> {
        let mut members = members.to_vec();
        members.sort();
        members.dedup();
        if members == self.members {
            return Vec::new();
        }

        let before = self.entries.len();
        self.entries
            .retain(|slot| members.binary_search(&slot.0.host).is_ok());
        let dropped = before - self.entries.len();
        self.counters.dead_host_entries_dropped += dropped as u64;

        let mut handoffs: BTreeMap<Incarnation, Vec<DirectoryEntry>> = BTreeMap::new();
        self.entries.retain(|Slot(entry)| {
            match partition_owner(&entry.grain, &members) {
                Some(owner) if *owner != self.local => {
                    handoffs
                        .entry(owner.clone())
                        .or_default()
                        .push(entry.clone());
                    false
                }
                // Every remaining host is a member, so `members` is not empty here.
                _ => true,
            }
        });

        let handed_off: usize = handoffs.values().map(Vec::len).sum();
        let mut previous = std::mem::replace(&mut self.members, members.clone());
        // A view of this node alone shows nothing about who owned what. A joining node has only
        // itself in its view until gossip brings the others, although the cluster may host
        // activations of every grain. So every grain this node owns after leaving such a view is pending, as
        // for a node that had no view before.
        if previous.iter().all(|member| *member == self.local) {
            previous.clear();
        }
        self.readiness
            .open(previous, members, now, self.config.handoff_grace);
        let commands = self.handoff_commands(handoffs);
        info!(
            node = %self.local,
            view = %self.view(),
            members = self.members.len(),
            kept = self.entries.len(),
            handed_off,
            dropped,
            "directory view changed"
        );
        commands
    }

    /// Merges a hand-off batch from `from` into this partition.
    ///
    /// Entries of hosts that are not live here are dropped, and entries another member owns in
    /// this node's view are forwarded to it. Where an entry meets a different activation of
    /// the same grain, the higher epoch wins, then the entry already stored, and the loser gets
    /// a [`DirectoryCommand::Deactivate`].
    ///
    /// NOTE: a host that is in the sender's view but not yet in this node's counts as not live,
    /// so its entries are dropped here. That host's activations then have no entry until it
    /// re-asserts them after its next membership change.
    pub fn handle_handoff(
        &mut self,
        from: &Incarnation,
        entries: Vec<DirectoryEntry>,
        now: Millis,
    ) -> Vec<DirectoryCommand> {
        self.maybe_settle(now);
        let mut forwards: BTreeMap<Incarnation, Vec<DirectoryEntry>> = BTreeMap::new();
        let mut deactivations = Vec::new();
        for entry in entries {
            if self.members.binary_search(&entry.host).is_err() {
                self.counters.dead_host_entries_dropped += 1;
                continue;
            }
            let tombstone = (entry.grain.clone(), entry.host.clone(), entry.activation_id);
            if self.tombstones.contains(&tombstone) {
                continue;
            }
            if let Some(Some(owner)) = self.other_owner(&entry.grain) {
                forwards.entry(owner).or_default().push(entry);
                continue;
            }
            if let Some(loser) = self.merge_handoff_entry(entry) {
                warn!(node = %self.local, from = %from, loser = %loser, "directory hand-off conflict");
                self.counters.handoff_conflicts += 1;
                deactivations.push(DirectoryCommand::Deactivate { entry: loser });
            }
        }
        let mut commands = self.handoff_commands(forwards);
        commands.append(&mut deactivations);
        commands
    }

    /// Records that `from` finished its hand-offs and re-assertions for `view`.
    pub fn handle_sync_complete(&mut self, from: &Incarnation, view: ViewId, now: Millis) {
        self.readiness.confirm(from.clone(), view);
        self.maybe_settle(now);
    }

    /// Stores a hand-off entry; returns the losing entry if it met another activation.
    fn merge_handoff_entry(&mut self, entry: DirectoryEntry) -> Option<DirectoryEntry> {
        let Some(existing) = self.entry(&entry.grain) else {
            self.counters.handoff_entries_accepted += 1;
            self.entries.insert(Slot(entry));
            return None;
        };
        if existing.is_same_activation(&entry) {
            let merged = DirectoryEntry {
                epoch: existing.epoch.max(entry.epoch),
                ..entry
            };
            self.entries.replace(Slot(merged));
            return None;
        }
        if entry.epoch > existing.epoch {
            self.counters.handoff_entries_accepted += 1;
            self.entries.replace(Slot(entry)).map(|slot| slot.0)
        } else {
            Some(entry)
        }
    }

    /// Turns per-owner batches into hand-off commands and counts their entries.
    fn handoff_commands(
        &mut self,
        batches: BTreeMap<Incarnation, Vec<DirectoryEntry>>,
    ) -> Vec<DirectoryCommand> {
        batches
            .into_iter()
            .map(|(to, entries)| {
                self.counters.handoff_entries_sent += entries.len() as u64;
                DirectoryCommand::HandOff { to, entries }
            })
            .collect()
    }

    fn insert(&mut self, entry: DirectoryEntry) -> RegisterOutcome {
        self.counters.registrations += 1;
        self.entries.replace(Slot(entry.clone()));
        RegisterOutcome::Registered(entry)
    }

    fn reject(&mut self, existing: DirectoryEntry) -> RegisterOutcome {
        self.counters.conflicts += 1;
        RegisterOutcome::Conflict(existing)
    }

    /// Returns `Some(owner)` if the local node does not own `grain` in the current view.
    fn other_owner(&self, grain: &GrainId) -> Option<Option<Incarnation>> {
        match partition_owner(grain, &self.members) {
            Some(owner) if *owner == self.local => None,
            owner => Some(owner.cloned()),
        }
    }

    /// Returns whether an injected fault makes registrations skip their compare-and-set.
    fn skips_compare_and_set(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        if self.fault == Some(super::DirectoryFault::SkipCompareAndSet) {
            return true;
        }
        false
    }

    /// Closes expired readiness windows; returns whether none is open.
    fn maybe_settle(&mut self, now: Millis) -> bool {
        let settled = self.readiness.maybe_expire(now);
        if settled {
            self.tombstones.clear();
        }
        settled
    }
}
