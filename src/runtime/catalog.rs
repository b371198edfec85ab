//! The table of activations hosted on this node, and the fences around creating and removing them.
//!
//! Sending a turn and removing an idle activation both take the table's lock, and a sender
//! raises the activation's `pending` count while it holds the lock. So an activation that finds
//! `pending == 0` under the lock knows no message is on its way, and can leave the table
//! without stranding a call: a later sender no longer finds it and re-resolves the grain.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::grain::activation::{ActivationMsg, ActivationRef, ActivationShared, Runner, Turn};
use crate::grain::{GrainId, Payload};

/// A live activation on this node.
#[derive(Clone)]
pub(crate) struct ActivationHandle {
    pub actor: ActivationRef,
    pub shared: Arc<ActivationShared>,
}

// A handle is its own key in the catalog: it equals and hashes as its grain id, so the table
// needs no second copy of the id per activation.
impl PartialEq for ActivationHandle {
    fn eq(&self, other: &Self) -> bool {
        self.shared.grain == other.shared.grain
    }
}

impl Eq for ActivationHandle {}

impl Hash for ActivationHandle {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.shared.grain.hash(state);
    }
}

impl Borrow<GrainId> for ActivationHandle {
    fn borrow(&self) -> &GrainId {
        &self.shared.grain
    }
}

impl ActivationHandle {
    /// [`Catalog::try_send`] through a handle that the caller cached at an earlier call, without
    /// the catalog's lock or a lookup. Gives the payload back if the activation has left the
    /// catalog since (see `ActivationRef::cast_turn_if_current`), and the caller then looks the
    /// grain up again.
    pub fn try_send_current<R>(
        &self,
        payload: Payload,
        make_turn: impl FnOnce(Payload) -> (Turn, R),
    ) -> Result<(Option<Runner>, R), Payload> {
        let (turn, returned) = make_turn(payload);
        // Raised before the mailbox's check, so that a retired activation that stops after
        // the check finds this turn pending.
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        match self.actor.cast_turn_if_current(ActivationMsg::Turn(turn)) {
            Ok(runner) => Ok((runner, returned)),
            Err(message) => Err(self.give_back(message)),
        }
    }

    /// Undoes the `pending` count of a turn that the mailbox rejected, and returns its payload.
    fn give_back(&self, message: ActivationMsg) -> Payload {
        self.shared.pending.fetch_sub(1, Ordering::AcqRel);
        match message {
            ActivationMsg::Turn(turn) => turn.payload,
            _ => unreachable!("cast returns the message it could not send"),
        }
    }
}

/// Activations on this node, by grain.
#[derive(Default)]
pub(crate) struct Catalog {
    active: Mutex<HashSet<ActivationHandle>>,
    /// Activations of stateless worker grains: several per grain, none in the directory.
    workers: Mutex<HashMap<GrainId, Vec<ActivationHandle>>>,
    /// Per-grain locks that serialise activation of one grain on this node.
    activating: Mutex<HashMap<GrainId, Arc<tokio::sync::Mutex<()>>>>,
}

impl Catalog {
    /// Sends the turn that `make_turn` builds around `payload` to the grain's activation, or
    /// gives the payload back if the grain is not active here. Returns what `make_turn`
    /// returned next to the turn, such as the receiver of its reply.
    ///
    /// `make_turn` runs only once the activation is found, so a call for a grain that is not
    /// active here creates no reply channel; it gets the activation's handle, which a caller
    /// may cache for [`ActivationHandle::try_send_current`]. If the activation was idle, the
    /// caller gets its runner to drive (see `crate::grain::mailbox`), and the runner runs the
    /// turn however the caller treats it.
    pub fn try_send<R>(
        &self,
        grain: &GrainId,
        payload: Payload,
        make_turn: impl FnOnce(Payload, &ActivationHandle) -> (Turn, R),
    ) -> Result<(Option<Runner>, R), Payload> {
        let active = self.active.lock().expect("catalog lock poisoned");
        let Some(handle) = active.get(grain) else {
            return Err(payload);
        };
        let (turn, returned) = make_turn(payload, handle);
        handle.shared.pending.fetch_add(1, Ordering::AcqRel);
        match handle.actor.cast_inline(ActivationMsg::Turn(turn)) {
            Ok(runner) => Ok((runner, returned)),
            Err(message) => Err(handle.give_back(message)),
        }
    }

    /// Sends `turn` to a worker activation of the grain: an idle one if there is one, else the
    /// one with the fewest queued calls unless fewer than `max` exist. Gives the turn back if a
    /// new activation is needed.
    pub fn try_send_worker(&self, grain: &GrainId, max: usize, turn: Turn) -> Result<(), Turn> {
        let workers = self.workers.lock().expect("catalog lock poisoned");
        let Some(pool) = workers.get(grain).filter(|pool| !pool.is_empty()) else {
            return Err(turn);
        };
        let least = pool
            .iter()
            .min_by_key(|h| h.shared.pending.load(Ordering::Acquire))
            .expect("the pool is not empty");
        if least.shared.pending.load(Ordering::Acquire) > 0 && pool.len() < max {
            return Err(turn);
        }
        least.shared.pending.fetch_add(1, Ordering::AcqRel);
        match least.actor.cast(ActivationMsg::Turn(turn)) {
            Ok(()) => Ok(()),
            Err(ActivationMsg::Turn(turn)) => {
                least.shared.pending.fetch_sub(1, Ordering::AcqRel);
                Err(turn)
            }
            Err(_) => unreachable!("cast returns the message it could not send"),
        }
    }

    /// Adds a started worker activation; returns false (and adds nothing) if the pool is full.
    pub fn insert_worker(&self, handle: ActivationHandle, max: usize) -> bool {
        let mut workers = self.workers.lock().expect("catalog lock poisoned");
        let pool = workers.entry(handle.shared.grain.clone()).or_default();
        if pool.len() >= max {
            return false;
        }
        pool.push(handle);
        true
    }

    /// Returns the number of worker activations of the grain on this node.
    pub fn worker_count(&self, grain: &GrainId) -> usize {
        self.workers
            .lock()
            .expect("catalog lock poisoned")
            .get(grain)
            .map_or(0, Vec::len)
    }

    /// Returns whether the grain is active here.
    pub fn contains(&self, grain: &GrainId) -> bool {
        self.active
            .lock()
            .expect("catalog lock poisoned")
            .contains(grain)
    }

    /// Returns the handle of the grain's activation, if it is active here.
    pub fn get(&self, grain: &GrainId) -> Option<ActivationHandle> {
        self.active
            .lock()
            .expect("catalog lock poisoned")
            .get(grain)
            .cloned()
    }

    /// Adds a started activation.
    pub fn insert(&self, handle: ActivationHandle) {
        let previous = self
            .active
            .lock()
            .expect("catalog lock poisoned")
            .replace(handle);
        debug_assert!(
            previous.is_none(),
            "a grain was activated twice on one node"
        );
    }

    /// Removes the activation if it is idle with nothing queued; returns whether it did.
    pub fn maybe_remove_idle(&self, shared: &Arc<ActivationShared>) -> bool {
        if shared.worker {
            let mut workers = self.workers.lock().expect("catalog lock poisoned");
            if shared.pending.load(Ordering::Acquire) != 0 {
                return false;
            }
            return remove_worker(&mut workers, shared);
        }
        let mut active = self.active.lock().expect("catalog lock poisoned");
        let is_current = active
            .get(&shared.grain)
            .is_some_and(|h| Arc::ptr_eq(&h.shared, shared));
        if !is_current || shared.pending.load(Ordering::Acquire) != 0 {
            return false;
        }
        retire(active.take(&shared.grain));
        true
    }

    /// Removes the activation whatever its state; returns whether it was present.
    pub fn remove(&self, shared: &Arc<ActivationShared>) -> bool {
        if shared.worker {
            let mut workers = self.workers.lock().expect("catalog lock poisoned");
            return remove_worker(&mut workers, shared);
        }
        let mut active = self.active.lock().expect("catalog lock poisoned");
        let is_current = active
            .get(&shared.grain)
            .is_some_and(|h| Arc::ptr_eq(&h.shared, shared));
        if is_current {
            retire(active.take(&shared.grain));
        }
        is_current
    }

    /// Returns the per-grain activation lock.
    pub fn activation_lock(&self, grain: &GrainId) -> Arc<tokio::sync::Mutex<()>> {
        let mut activating = self.activating.lock().expect("catalog lock poisoned");
        Arc::clone(activating.entry(grain.clone()).or_default())
    }

    /// Forgets the per-grain activation lock once no activation is in progress.
    pub fn release_activation_lock(&self, grain: &GrainId, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut activating = self.activating.lock().expect("catalog lock poisoned");
        // Two references: the map's and the caller's. More means another task waits on it.
        if Arc::strong_count(&lock) <= 2 {
            activating.remove(grain);
        }
    }

    /// Returns the handles of the grains registered in the directory, workers excluded.
    pub fn handles(&self) -> Vec<ActivationHandle> {
        self.active
            .lock()
            .expect("catalog lock poisoned")
            .iter()
            .cloned()
            .collect()
    }

    /// Returns every activation handle, stateless workers included.
    pub fn all_handles(&self) -> Vec<ActivationHandle> {
        let mut handles = self.handles();
        let workers = self.workers.lock().expect("catalog lock poisoned");
        handles.extend(workers.values().flatten().cloned());
        handles
    }

    /// Returns the number of activations, stateless workers included.
    pub fn len(&self) -> usize {
        let workers: usize = self
            .workers
            .lock()
            .expect("catalog lock poisoned")
            .values()
            .map(Vec::len)
            .sum();
        self.active.lock().expect("catalog lock poisoned").len() + workers
    }

    /// Returns the total and the largest number of queued messages over all activations.
    pub fn mailbox_depths(&self) -> (u64, u64) {
        let depths = |(total, max): (u64, u64), handle: &ActivationHandle| {
            let pending = handle.shared.pending.load(Ordering::Relaxed);
            (total + pending, max.max(pending))
        };
        // Read in place: a copy of every handle would cost an allocation per sample.
        let active = self.active.lock().expect("catalog lock poisoned");
        let sums = active.iter().fold((0, 0), depths);
        drop(active);
        let workers = self.workers.lock().expect("catalog lock poisoned");
        workers.values().flatten().fold(sums, depths)
    }
}

/// Retires the handle that just left the table, while the caller still holds the table's lock.
fn retire(handle: Option<ActivationHandle>) {
    if let Some(handle) = handle {
        handle.actor.retire();
    }
}

fn remove_worker(
    workers: &mut HashMap<GrainId, Vec<ActivationHandle>>,
    shared: &Arc<ActivationShared>,
) -> bool {
    let Some(pool) = workers.get_mut(&shared.grain) else {
        return false;
    };
    let before = pool.len();
    pool.retain(|h| !Arc::ptr_eq(&h.shared, shared));
    let removed = pool.len() != before;
    if pool.is_empty() {
        workers.remove(&shared.grain);
    }
    removed
}
