//! Carries directory requests to the partition owner (this node or a peer) and keeps the
//! partition in step with membership.
//!
//! On every membership change this node:
//! 1. applies the new live set to its partition, which drops entries of dead hosts and
//!    returns the entries that moved to other owners;
//! 2. sends those entries to their new owners (hand-off);
//! 3. re-asserts each of its own activations at the activation's current owner, and
//!    deactivates any activation whose re-assertion lost to another entry;
//! 4. tells every live member that it finished syncing this view, which lets the new owners
//!    answer lookups for the grains they gained before their grace period ends.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;

use super::catalog::ActivationHandle;
use super::node::Node;
use crate::directory::{
    DirectoryCommand, DirectoryEntry, RegisterOutcome, ViewId, partition_owner,
};
use crate::grain::activation::{ActivationMsg, ActivationShared, StopReason};
use crate::grain::{CallError, GrainId};
use crate::membership::Incarnation;
use crate::transport::{
    DirectoryEnvelope, DirectoryReplyEnvelope, DirectoryRequest, DirectoryResponse,
};

/// Deadline of directory requests that no caller waits for (unregister, hand-off, sync).
const BACKGROUND_DEADLINE: Duration = Duration::from_secs(2);
/// Attempts to hand entries off to one new owner.
const HANDOFF_ATTEMPTS: u32 = 4;
/// Pause before the second hand-off attempt; it grows by this much per attempt.
const HANDOFF_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Rounds of re-assertion for entries whose owner's view lagged behind this node's.
const REASSERT_ROUNDS: usize = 5;
/// Pause between two re-assertion rounds.
const REASSERT_PAUSE: Duration = Duration::from_millis(100);
/// Maximum number of entries in one re-assertion request.
const REASSERT_CHUNK_ENTRIES: usize = 1024;
/// Estimated encoded size, in bytes, at which a re-assertion request takes no further entry:
/// half the smallest `max_frame_bytes`, so that the request and its reply (one outcome per
/// entry, which may carry another entry) fit in one frame.
const REASSERT_CHUNK_BYTES: usize = 32 * 1024;

impl Node {
    /// Returns the owner of `grain`'s directory partition in this node's current view.
    pub(crate) fn directory_owner(&self, grain: &GrainId) -> Option<Incarnation> {
        let members = self.inner.members.read().expect("members lock poisoned");
        partition_owner(grain, &members.live).cloned()
    }

    /// Sends `request` about `grain` to its partition owner and returns the reply.
    pub(crate) async fn directory_request(
        &self,
        grain: &GrainId,
        request: DirectoryRequest,
        deadline: Instant,
    ) -> Result<DirectoryResponse, CallError> {
        let owner = self.directory_owner(grain).ok_or(CallError::NoActiveNode {
            grain: grain.clone(),
        })?;
        let started = Instant::now();
        self.directory_request_to(&owner, request, deadline)
            .await
            .map_err(|detail| {
                // A request that failed because its time ran out is the caller's deadline, not
                // the owner's health: the owner may be fine, and a longer deadline may succeed.
                if Instant::now() >= deadline {
                    CallError::DeadlineExceeded {
                        grain: grain.clone(),
                        after_ms: u64::try_from(
                            deadline.saturating_duration_since(started).as_millis(),
                        )
                        .unwrap_or(u64::MAX),
                    }
                } else {
                    CallError::NodeUnavailable {
                        node: owner.name.clone(),
                        grain: grain.clone(),
                        detail,
                        before_send: false,
                    }
                }
            })
    }

    async fn directory_request_to(
        &self,
        owner: &Incarnation,
        request: DirectoryRequest,
        deadline: Instant,
    ) -> Result<DirectoryResponse, String> {
        if *owner == self.inner.id.incarnation() {
            return Ok(self.handle_directory_locally(request));
        }
        let peer = {
            let members = self.inner.members.read().expect("members lock poisoned");
            members.by_incarnation.get(owner).map(|m| m.id.clone())
        };
        let peer = peer.ok_or_else(|| format!("directory owner {owner} is not a member"))?;
        match self
            .transport()
            .directory(&peer, DirectoryEnvelope::V1(request), deadline)
            .await
        {
            Ok(DirectoryReplyEnvelope::V1(response)) => Ok(response),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Serves a directory request with this node's partition.
    pub(crate) fn handle_directory_locally(&self, request: DirectoryRequest) -> DirectoryResponse {
        let now = self.inner.clock.now();
        let mut partition = self
            .inner
            .directory
            .lock()
            .expect("directory lock poisoned");
        request.serve(&mut partition, now)
    }

    /// Takes the per-grain activation lock for a deactivation. While the returned fence
    /// lives, no caller starts a new activation of the grain, which would read its state before
    /// `on_deactivate` stored it.
    ///
    /// Call it while the activation is still in the catalog. Other holders of the lock then
    /// find the grain active and release the lock at once, without waiting for this
    /// activation, so the wait is short.
    pub(crate) async fn fence_deactivation(&self, grain: &GrainId) -> DeactivationFence {
        let lock = self.inner.catalog.activation_lock(grain);
        let guard = Arc::clone(&lock).lock_owned().await;
        DeactivationFence {
            node: self.clone(),
            grain: grain.clone(),
            lock: Some(lock),
            guard: Some(guard),
        }
    }

    /// Removes the activation from the catalog if it is idle with nothing queued.
    pub(crate) fn maybe_remove_idle(&self, shared: &Arc<ActivationShared>) -> bool {
        let removed = self.inner.catalog.maybe_remove_idle(shared);
        if removed {
            self.inner.metrics.activations_stopped.inc();
        }
        removed
    }

    /// Removes the activation from the catalog whatever it is doing.
    pub(crate) fn remove_activation(&self, shared: &Arc<ActivationShared>) {
        if self.inner.catalog.remove(shared) {
            self.inner.metrics.activations_stopped.inc();
        }
    }

    /// Removes the activation's directory entry, in the background.
    pub(crate) fn unregister_activation(&self, shared: &Arc<ActivationShared>) {
        let node = self.clone();
        let grain = shared.grain.clone();
        let activation_id = shared.activation_id;
        tokio::spawn(async move {
            let host = node.inner.id.incarnation();
            let request = DirectoryRequest::Unregister {
                grain: grain.clone(),
                host,
                activation_id,
            };
            let deadline = Instant::now() + BACKGROUND_DEADLINE;
            if let Err(error) = node.directory_request(&grain, request, deadline).await {
                // The owner drops the entry anyway once it finds this activation gone: callers
                // that reach this node get `NotHere` and clear it.
                tracing::debug!(grain = %grain, %error, "unregister failed");
            }
        });
    }

    /// Brings the directory in step with a new live set; see the module notes for the steps.
    pub(crate) async fn sync_directory(&self) {
        let live = self
            .inner
            .members
            .read()
            .expect("members lock poisoned")
            .live
            .clone();
        let now = self.inner.clock.now();
        let commands = self
            .inner
            .directory
            .lock()
            .expect("directory lock poisoned")
            .handle_membership_change(&live, now);
        let view = ViewId::of(&live);
        let handed_off = self.carry_out(commands, view).await;

        // Wait for registrations in progress, which may have gone to an owner of the previous
        // view: once they are in the catalog, the snapshot below re-asserts them. The wait can
        // last as long as a call's deadline, so the re-assertions get a deadline of their own.
        // The gate is held only for the snapshot: a registration that starts after it sends to
        // an owner of this view or a later one, and re-asserting a large catalog takes long.
        let snapshot = {
            let _gate = self.inner.activation_gate.write().await;
            self.reassert_snapshot()
        };
        let deadline = Instant::now() + BACKGROUND_DEADLINE;
        let reasserted = self
            .reassert_local_activations(snapshot, &live, deadline)
            .await;
        if !(handed_off && reasserted) {
            // A confirmation would let a new owner reply `NotFound` for a grain whose entry
            // never reached it, and a caller would then start a second activation. Without
            // it, the owner waits for its grace period, and the periodic repair re-asserts.
            tracing::info!(
                node = %self.inner.id.name,
                %view,
                handed_off,
                reasserted,
                "directory sync incomplete; not confirming the view"
            );
            return;
        }
        // A confirmation that does not arrive leaves the member waiting for its grace period,
        // as a failed hand-off does, so it is sent again as a hand-off is.
        let local = self.inner.id.incarnation();
        let members: Vec<&Incarnation> = live.iter().collect();
        self.send_while_view_lasts(view, members, |member, attempt, deadline| {
            let request = DirectoryRequest::SyncComplete {
                from: local.clone(),
                view,
            };
            async move {
                let detail = self
                    .directory_request_to(member, request, deadline)
                    .await
                    .err()?;
                tracing::debug!(member = %member, attempt, %detail, "sync confirmation failed");
                Some(member)
            }
        })
        .await;
    }

    /// Sends every item of `pending` with `send`, which returns the item again if it failed,
    /// and sends the failed ones again after a pause, up to [`HANDOFF_ATTEMPTS`] rounds, while
    /// `view` is the membership agent's view. Returns the items that still failed.
    async fn send_while_view_lasts<T, F, Fut>(
        &self,
        view: ViewId,
        mut pending: Vec<T>,
        send: F,
    ) -> Vec<T>
    where
        F: Fn(T, u32, Instant) -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        for attempt in 0..HANDOFF_ATTEMPTS {
            if pending.is_empty() {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(HANDOFF_RETRY_PAUSE * attempt).await;
                if !self.view_is_current(view) {
                    break;
                }
            }
            let deadline = Instant::now() + BACKGROUND_DEADLINE;
            let sends = std::mem::take(&mut pending)
                .into_iter()
                .map(|item| send(item, attempt, deadline));
            pending = join_all(sends).await.into_iter().flatten().collect();
        }
        pending
    }

    /// Returns whether `view` is still the membership agent's view of the live members. The
    /// sync runs on the event loop, so the node's own copy of the view cannot change while a
    /// sync waits; the agent's can.
    fn view_is_current(&self, view: ViewId) -> bool {
        ViewId::of(&self.current_live_set()) == view
    }

    /// Returns the local activations to re-assert. The caller holds the exclusive activation
    /// gate only while this copies the catalog's handles.
    pub(crate) fn reassert_snapshot(&self) -> Vec<ActivationHandle> {
        self.inner.catalog.handles()
    }

    /// Re-asserts the activations of `snapshot` at their partition owners in the view `live`,
    /// and deactivates the activations whose re-assertion met another activation's entry.
    /// Returns whether every entry got an outcome from an owner in `live` (registered or
    /// conflict).
    ///
    /// Besides each membership change, the node runs this periodically (see
    /// `run_directory_repair`): an activation whose entry was lost, for example because its
    /// owner died while the activation was being registered, gets its entry back, and an
    /// activation that lost its entry to a second activation of the grain is deactivated.
    ///
    /// Entries go in chunks of at most [`REASSERT_CHUNK_ENTRIES`] entries and about
    /// [`REASSERT_CHUNK_BYTES`] bytes, so that one request fits in the smallest cluster frame.
    /// This node's own partition is then locked for one chunk at a time, not for every
    /// activation of the node.
    pub(crate) async fn reassert_local_activations(
        &self,
        snapshot: Vec<ActivationHandle>,
        live: &[Incarnation],
        deadline: Instant,
    ) -> bool {
        let mut by_owner: BTreeMap<Incarnation, Vec<ActivationHandle>> = BTreeMap::new();
        for handle in snapshot {
            if let Some(owner) = partition_owner(&handle.shared.grain, live) {
                by_owner.entry(owner.clone()).or_default().push(handle);
            }
        }
        let local = self.inner.id.incarnation();
        let first = by_owner.into_iter().map(|(owner, handles)| {
            let local = &local;
            async move {
                let entries = handles.into_iter().map(|handle| DirectoryEntry {
                    grain: handle.shared.grain.clone(),
                    host: local.clone(),
                    activation_id: handle.shared.activation_id,
                    epoch: handle.shared.epoch,
                });
                self.reassert_at(&owner, entries, live, deadline).await
            }
        });
        let mut retry: BTreeMap<Incarnation, Vec<DirectoryEntry>> = BTreeMap::new();
        let mut complete = true;
        for (again, answered) in join_all(first).await {
            complete &= answered;
            for (owner, entry) in again {
                retry.entry(owner).or_default().push(entry);
            }
        }
        // An owner whose view differs from `live` replies `NotOwner`. If it names an owner in
        // `live`, this node's view lags, so the entries go there. Otherwise the replier lags,
        // perhaps still naming a member that died, so the entries go to it again once it has
        // caught up. Rounds are bounded, and what is left counts as incomplete.
        for _round in 2..=REASSERT_ROUNDS {
            if retry.is_empty() {
                break;
            }
            tokio::time::sleep(REASSERT_PAUSE).await;
            let rounds =
                std::mem::take(&mut retry)
                    .into_iter()
                    .map(|(owner, entries)| async move {
                        self.reassert_at(&owner, entries, live, deadline).await
                    });
            for (again, answered) in join_all(rounds).await {
                complete &= answered;
                for (owner, entry) in again {
                    retry.entry(owner).or_default().push(entry);
                }
            }
        }
        if !retry.is_empty() {
            let left: usize = retry.values().map(Vec::len).sum();
            tracing::debug!(
                entries = left,
                "re-assertion rounds ended with entries left"
            );
            complete = false;
        }
        complete
    }

    /// Re-asserts `entries` at `owner`, one chunk per request, and deactivates the local
    /// activations that lost a conflict. Returns the entries to send again, each with the
    /// owner to send it to, and whether every chunk got a reply.
    async fn reassert_at(
        &self,
        owner: &Incarnation,
        entries: impl IntoIterator<Item = DirectoryEntry>,
        live: &[Incarnation],
        deadline: Instant,
    ) -> (Vec<(Incarnation, DirectoryEntry)>, bool) {
        let local = *owner == self.inner.id.incarnation();
        let mut entries = entries.into_iter().peekable();
        let mut again = Vec::new();
        let mut answered = true;
        while entries.peek().is_some() {
            let chunk = next_chunk(&mut entries);
            let request = DirectoryRequest::Reassert {
                entries: chunk.clone(),
            };
            let outcomes = match self.directory_request_to(owner, request, deadline).await {
                Ok(DirectoryResponse::Reassert(outcomes)) => outcomes,
                Ok(other) => {
                    tracing::warn!(owner = %owner, reply = ?other, "unexpected reply to a re-assertion");
                    answered = false;
                    continue;
                }
                Err(detail) => {
                    tracing::debug!(owner = %owner, %detail, entries = chunk.len(), "re-assertion failed");
                    answered = false;
                    continue;
                }
            };
            for (entry, outcome) in chunk.into_iter().zip(outcomes) {
                match outcome {
                    RegisterOutcome::Conflict(winner) if !winner.is_same_activation(&entry) => {
                        self.stop_superseded(&entry.grain, entry.activation_id);
                    }
                    RegisterOutcome::NotOwner { owner: named } => {
                        let target = match named {
                            Some(named) if live.contains(&named) => named,
                            _ => owner.clone(),
                        };
                        tracing::debug!(grain = %entry.grain, replier = %owner, retry_at = %target, "re-assertion reached a node that does not own the grain");
                        again.push((target, entry));
                    }
                    RegisterOutcome::NotReady => again.push((owner.clone(), entry)),
                    _ => {}
                }
            }
            if local {
                // This node's partition served the chunk inline: let calls and registrations
                // that wait for this worker thread run between chunks.
                tokio::task::yield_now().await;
            }
        }
        (again, answered)
    }

    /// Carries out the partition's commands; hand-offs go to their new owners concurrently, so
    /// one unreachable member does not hold up the others. Returns whether every hand-off was
    /// acknowledged.
    async fn carry_out(&self, commands: Vec<DirectoryCommand>, view: ViewId) -> bool {
        let local = self.inner.id.incarnation();
        let mut pending = Vec::new();
        for command in commands {
            match command {
                DirectoryCommand::HandOff { to, entries } => {
                    self.inner
                        .metrics
                        .directory_handoffs
                        .inc_by(entries.len() as u64);
                    pending.push((to, entries));
                }
                DirectoryCommand::Deactivate { entry } => self.deactivate_loser(entry),
            }
        }
        // A hand-off to a node that has just joined can fail while its session forms. Until
        // it succeeds, this node cannot confirm the view, and the new owner delays lookups for
        // its grace period, which stalls every call to its partitions. So a failed hand-off
        // is sent again a few times, while the view lasts: a later view runs a sync of its
        // own. Entries that arrive twice are the same entries.
        let failed = self
            .send_while_view_lasts(view, pending, |(to, entries), attempt, deadline| {
                let request = DirectoryRequest::HandOff {
                    from: local.clone(),
                    entries: entries.clone(),
                };
                async move {
                    match self.directory_request_to(&to, request, deadline).await {
                        Ok(DirectoryResponse::Commands(more)) => {
                            for command in more {
                                if let DirectoryCommand::Deactivate { entry } = command {
                                    self.deactivate_loser(entry);
                                }
                            }
                            None
                        }
                        Ok(_) => None,
                        Err(detail) => {
                            tracing::info!(node = %self.inner.id.name, to = %to, attempt, entries = entries.len(), %detail, "hand-off failed");
                            Some((to, entries))
                        }
                    }
                }
            })
            .await;
        failed.is_empty()
    }

    fn deactivate_loser(&self, entry: DirectoryEntry) {
        if entry.host == self.inner.id.incarnation() {
            self.stop_superseded(&entry.grain, entry.activation_id);
        }
        // NOTE: a losing activation on another node keeps running until a call reaches it
        // through a stale cache and it learns of the conflict at its next re-assertion.
    }

    fn stop_superseded(&self, grain: &GrainId, activation_id: u64) {
        if let Some(handle) = self.inner.catalog.get(grain)
            && handle.shared.activation_id == activation_id
        {
            if handle
                .shared
                .migrating
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                // The hand-off's target replaced the entry by compare-and-set, so this is the
                // expected end of a migration, not a second activation. The activation runs
                // no turn while it hands off, and the stop waits until the hand-off ends.
                tracing::debug!(grain = %grain, activation = activation_id, "migrating activation superseded by its target");
            } else {
                tracing::warn!(grain = %grain, activation = activation_id, "activation lost a directory conflict; deactivating");
            }
            let _ = handle
                .actor
                .cast(ActivationMsg::Stop(StopReason::Superseded, None));
        }
    }
}

/// Takes the next chunk of a re-assertion: at least one entry, and at most
/// [`REASSERT_CHUNK_ENTRIES`] entries or about [`REASSERT_CHUNK_BYTES`] bytes.
fn next_chunk(entries: &mut impl Iterator<Item = DirectoryEntry>) -> Vec<DirectoryEntry> {
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for entry in entries.by_ref() {
        // The two ids, the host's name and a bound on postcard's varints and lengths.
        bytes += entry.grain.grain_type.len() + entry.grain.key.len() + entry.host.name.len() + 40;
        chunk.push(entry);
        if chunk.len() >= REASSERT_CHUNK_ENTRIES || bytes >= REASSERT_CHUNK_BYTES {
            break;
        }
    }
    chunk
}

/// The per-grain activation lock, held by an activation from before it leaves the catalog until
/// its `on_deactivate` has run (see [`Node::fence_deactivation`]). Dropping it releases the lock.
pub(crate) struct DeactivationFence {
    node: Node,
    grain: GrainId,
    lock: Option<Arc<tokio::sync::Mutex<()>>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for DeactivationFence {
    fn drop(&mut self) {
        // The guard goes first, so that the lock's reference count shows no holder.
        drop(self.guard.take());
        if let Some(lock) = self.lock.take() {
            self.node
                .inner
                .catalog
                .release_activation_lock(&self.grain, lock);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grain::GrainId;

    fn entry(key: String) -> DirectoryEntry {
        DirectoryEntry {
            grain: GrainId::new("counter", key),
            host: Incarnation {
                name: "node-with-a-long-name-0123456789".into(),
                boot_id: u64::MAX,
            },
            activation_id: u64::MAX,
            epoch: u64::MAX,
        }
    }

    /// Every entry lands in exactly one chunk, and no chunk is empty or above its bounds.
    #[test]
    fn chunks_cover_every_entry_within_bounds() {
        let entries: Vec<DirectoryEntry> = (0..5000).map(|i| entry(format!("k{i}"))).collect();
        let mut rest = entries.clone().into_iter().peekable();
        let mut chunks = Vec::new();
        while rest.peek().is_some() {
            chunks.push(next_chunk(&mut rest));
        }
        assert!(
            chunks
                .iter()
                .all(|c| !c.is_empty() && c.len() <= REASSERT_CHUNK_ENTRIES)
        );
        let joined: Vec<GrainId> = chunks.into_iter().flatten().map(|e| e.grain).collect();
        let expected: Vec<GrainId> = entries.into_iter().map(|e| e.grain).collect();
        assert_eq!(joined, expected);
    }

    /// A chunk of the longest keys still fits, encoded, in half the smallest cluster frame.
    #[test]
    fn longest_keys_chunk_fits_frame() {
        let longest = "k".repeat(super::super::router::MAX_KEY_BYTES);
        let mut entries = (0..100).map(|_| entry(longest.clone()));
        let chunk = next_chunk(&mut entries);
        assert!(chunk.len() < 100, "a chunk of {} entries", chunk.len());
        let request =
            crate::transport::DirectoryEnvelope::V1(DirectoryRequest::Reassert { entries: chunk });
        let bytes = postcard::to_allocvec(&request).expect("the request encodes");
        assert!(bytes.len() <= 32 * 1024 + 2048, "{} bytes", bytes.len());
    }
}
