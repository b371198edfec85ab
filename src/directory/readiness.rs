//! Readiness windows: the gained grains for which a partition must not yet reply `NotFound`.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use super::partition_owner;
use crate::clock::Millis;
use crate::grain::GrainId;
use crate::membership::Incarnation;

/// Identifies a membership view by its member set, so that nodes can agree on it.
///
/// SWIM has no cluster-wide view number, so the id is XXH3-64 over the members sorted by name
/// then boot id, each as its UTF-8 name, a zero byte and its boot id as 8 bytes little-endian.
/// Two nodes whose views hold the same members compute the same id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ViewId(pub u64);

impl ViewId {
    /// Computes the id of the view made of `members`; their order and duplicates do not matter.
    pub fn of(members: &[Incarnation]) -> ViewId {
        let mut sorted: Vec<&Incarnation> = members.iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut bytes = Vec::new();
        for member in sorted {
            bytes.extend_from_slice(member.name.as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(&member.boot_id.to_le_bytes());
        }
        ViewId(xxh3_64(&bytes))
    }
}

impl fmt::Display for ViewId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One membership change whose hand-offs and re-registrations may still be in flight.
#[derive(Debug)]
struct Window {
    /// Members before the change; grains the local node did not own among them are pending.
    previous_members: Vec<Incarnation>,
    /// The window closes at this time even without every member's confirmation.
    closes_at: Millis,
}

/// Open readiness windows and the sync confirmations received from members.
#[derive(Debug, Default)]
pub(super) struct Readiness {
    /// Open windows, oldest first.
    windows: Vec<Window>,
    /// Members of the current view.
    members: Vec<Incarnation>,
    /// Id of the current view.
    view: ViewId,
    /// Latest view each sender confirmed. Confirmations may arrive before this node learns of
    /// the view they confirm, so they are kept per sender instead of per window.
    confirmed: HashMap<Incarnation, ViewId>,
}

impl Readiness {
    /// Opens a window for the change from `previous_members` to `members` at `now`.
    pub(super) fn open(
        &mut self,
        previous_members: Vec<Incarnation>,
        members: Vec<Incarnation>,
        now: Millis,
        grace: Duration,
    ) {
        // An incarnation that left never returns, so its confirmations are of no further use.
        self.confirmed
            .retain(|sender, _| members.contains(sender) || !previous_members.contains(sender));
        self.windows.push(Window {
            previous_members,
            closes_at: now + grace,
        });
        self.view = ViewId::of(&members);
        self.members = members;
        self.maybe_close_synced();
    }

    /// Returns the id of the current view.
    pub(super) fn view(&self) -> ViewId {
        self.view
    }

    /// Records that `from` finished its hand-offs and re-registrations for `view`.
    pub(super) fn confirm(&mut self, from: Incarnation, view: ViewId) {
        self.confirmed.insert(from, view);
        self.maybe_close_synced();
    }

    /// Closes the windows whose grace period ended by `now`; returns whether none is open.
    pub(super) fn maybe_expire(&mut self, now: Millis) -> bool {
        self.windows.retain(|window| now < window.closes_at);
        self.windows.is_empty()
    }

    /// Returns whether `local` gained `grain` in a change whose window is still open.
    ///
    /// Call [`Readiness::maybe_expire`] first, so closed windows are gone.
    pub(super) fn is_pending(&self, grain: &GrainId, local: &Incarnation) -> bool {
        self.windows
            .iter()
            .any(|window| partition_owner(grain, &window.previous_members) != Some(local))
    }

    /// Closes every window once all members confirmed the current view.
    ///
    /// Confirmation of the newest view covers older windows too: each member has handed off
    /// every entry it stored that this node owns now, and re-registered every local activation
    /// with its owner in this view, whatever views it passed through before.
    fn maybe_close_synced(&mut self) -> bool {
        let synced = !self.members.is_empty()
            && self
                .members
                .iter()
                .all(|member| self.confirmed.get(member) == Some(&self.view));
        if synced {
            self.windows.clear();
        }
        synced
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::tests::incarnation as member;

    #[test]
    fn view_id_ignores_order_and_duplicates() {
        let a = member("node-1", 1);
        let b = member("node-2", 2);
        let expected = ViewId::of(&[a.clone(), b.clone()]);
        assert_eq!(ViewId::of(&[b.clone(), a.clone()]), expected);
        assert_eq!(ViewId::of(&[a.clone(), b.clone(), a.clone()]), expected);
        assert_ne!(ViewId::of(std::slice::from_ref(&a)), expected);
        assert_ne!(ViewId::of(&[a, member("node-2", 3)]), expected);
    }
}
