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
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;

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
/// Rounds of re-assertion for entries whose owner's view lagged behind this node's.
const REASSERT_ROUNDS: usize = 5;
/// Pause between two re-assertion rounds.
const REASSERT_PAUSE: Duration = Duration::from_millis(100);

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
        self.directory_request_to(&owner, request, deadline)
            .await
            .map_err(|detail| CallError::NodeUnavailable {
                node: owner.name.clone(),
                grain: grain.clone(),
                detail,
                before_send: false,
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
        let deadline = Instant::now() + BACKGROUND_DEADLINE;
        let handed_off = self.carry_out(commands, deadline).await;

        let reasserted = self
            .reassert_local_activations(&live, BACKGROUND_DEADLINE)
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
        let local = self.inner.id.incarnation();
        let deadline = Instant::now() + BACKGROUND_DEADLINE;
        let confirmations = live.iter().map(|member| {
            let request = DirectoryRequest::SyncComplete {
                from: local.clone(),
                view,
            };
            async move {
                if let Err(detail) = self.directory_request_to(member, request, deadline).await {
                    tracing::debug!(member = %member, %detail, "sync confirmation failed");
                }
            }
        });
        join_all(confirmations).await;
    }

    /// Re-asserts every local activation at its partition owner in the view `live`, and
    /// deactivates the activations whose re-assertion met another activation's entry; the
    /// requests end `timeout` after the catalog snapshot. Returns whether every entry got an
    /// outcome from an owner in `live` (registered or conflict).
    ///
    /// Besides each membership change, the node runs this periodically (see
    /// `run_directory_repair`): an activation whose entry was lost, for example because its
    /// owner died while the activation was being registered, gets its entry back, and an
    /// activation that lost its entry to a second activation of the grain is deactivated.
    pub(crate) async fn reassert_local_activations(
        &self,
        live: &[Incarnation],
        timeout: Duration,
    ) -> bool {
        let by_owner = self.snapshot_entries_by_owner(live).await;
        let deadline = Instant::now() + timeout;
        self.reassert_entries(by_owner, live, deadline).await
    }

    /// Returns the directory entries of the local activations, by their partition owner in
    /// `live`.
    ///
    /// The snapshot waits for registrations in progress, which may have gone to an owner of an
    /// earlier view: once they are in the catalog, the snapshot includes them. The gate is
    /// held only for the snapshot, not while the entries travel. Registrations wait for it
    /// with their call's deadline, so a re-assertion to an unreachable owner must not hold it.
    async fn snapshot_entries_by_owner(
        &self,
        live: &[Incarnation],
    ) -> BTreeMap<Incarnation, Vec<DirectoryEntry>> {
        let _gate = self.inner.activation_gate.write().await;
        let local = self.inner.id.incarnation();
        let mut by_owner: BTreeMap<Incarnation, Vec<DirectoryEntry>> = BTreeMap::new();
        for handle in self.inner.catalog.handles() {
            let shared = &handle.shared;
            let entry = DirectoryEntry {
                grain: shared.grain.clone(),
                host: local.clone(),
                activation_id: shared.activation_id,
                epoch: shared.epoch,
            };
            if let Some(owner) = partition_owner(&entry.grain, live) {
                by_owner.entry(owner.clone()).or_default().push(entry);
            }
        }
        by_owner
    }

    /// Sends `by_owner`'s entries to their owners in rounds until `deadline`; see
    /// [`Self::reassert_local_activations`].
    async fn reassert_entries(
        &self,
        mut by_owner: BTreeMap<Incarnation, Vec<DirectoryEntry>>,
        live: &[Incarnation],
        deadline: Instant,
    ) -> bool {
        let mut complete = true;
        // An owner whose view differs from `live` replies `NotOwner`. If it names an owner in
        // `live`, this node's view lags, so the entries go there. Otherwise the replier lags,
        // perhaps still naming a member that died, so the entries go to it again once it has
        // caught up. Rounds are bounded, and what is left counts as incomplete.
        for round in 1..=REASSERT_ROUNDS {
            if by_owner.is_empty() {
                break;
            }
            let rounds = by_owner.into_iter().map(|(owner, entries)| async move {
                let request = DirectoryRequest::Reassert {
                    entries: entries.clone(),
                };
                (
                    owner.clone(),
                    entries,
                    self.directory_request_to(&owner, request, deadline).await,
                )
            });
            let mut retry: BTreeMap<Incarnation, Vec<DirectoryEntry>> = BTreeMap::new();
            for (sent_to, entries, reply) in join_all(rounds).await {
                let outcomes = match reply {
                    Ok(DirectoryResponse::Reassert(outcomes)) => outcomes,
                    Ok(other) => {
                        tracing::warn!(owner = %sent_to, reply = ?other, "unexpected reply to a re-assertion");
                        complete = false;
                        continue;
                    }
                    Err(detail) => {
                        tracing::debug!(owner = %sent_to, %detail, entries = entries.len(), "re-assertion failed");
                        complete = false;
                        continue;
                    }
                };
                for (entry, outcome) in entries.into_iter().zip(outcomes) {
                    match outcome {
                        RegisterOutcome::Conflict(winner) if !winner.is_same_activation(&entry) => {
                            self.stop_superseded(&entry.grain, entry.activation_id);
                        }
                        RegisterOutcome::NotOwner { owner } => {
                            let target = match owner {
                                Some(owner) if live.contains(&owner) => owner,
                                _ => sent_to.clone(),
                            };
                            tracing::debug!(grain = %entry.grain, replier = %sent_to, retry_at = %target, round, "re-assertion reached a node that does not own the grain");
                            retry.entry(target).or_default().push(entry);
                        }
                        RegisterOutcome::NotReady => {
                            retry.entry(sent_to.clone()).or_default().push(entry)
                        }
                        _ => {}
                    }
                }
            }
            by_owner = retry;
            if !by_owner.is_empty() && round < REASSERT_ROUNDS {
                tokio::time::sleep(REASSERT_PAUSE).await;
            }
        }
        if !by_owner.is_empty() {
            let left: usize = by_owner.values().map(Vec::len).sum();
            tracing::debug!(
                entries = left,
                "re-assertion rounds ended with entries left"
            );
            complete = false;
        }
        complete
    }

    /// Carries out the partition's commands; hand-offs go to their new owners concurrently, so
    /// one unreachable member does not hold up the others. Returns whether every hand-off was
    /// acknowledged.
    async fn carry_out(&self, commands: Vec<DirectoryCommand>, deadline: Instant) -> bool {
        let local = self.inner.id.incarnation();
        let mut hand_offs = Vec::new();
        for command in commands {
            match command {
                DirectoryCommand::HandOff { to, entries } => {
                    self.inner
                        .metrics
                        .directory_handoffs
                        .inc_by(entries.len() as u64);
                    let request = DirectoryRequest::HandOff {
                        from: local.clone(),
                        entries,
                    };
                    hand_offs.push(async move {
                        (
                            to.clone(),
                            self.directory_request_to(&to, request, deadline).await,
                        )
                    });
                }
                DirectoryCommand::Deactivate { entry } => self.deactivate_loser(entry),
            }
        }
        let mut acknowledged = true;
        for (to, reply) in join_all(hand_offs).await {
            match reply {
                Ok(DirectoryResponse::Commands(more)) => {
                    for command in more {
                        if let DirectoryCommand::Deactivate { entry } = command {
                            self.deactivate_loser(entry);
                        }
                    }
                }
                Ok(_) => {}
                Err(detail) => {
                    tracing::debug!(to = %to, %detail, "hand-off failed");
                    acknowledged = false;
                }
            }
        }
        acknowledged
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
