//! The directory glue of a simulated node: serving partition requests, and the sync that
//! follows every membership change (hand-offs, re-assertions, sync confirmations).
//!
//! The real glue runs the sync inline in the membership event loop and awaits each request
//! in turn, with a 2 s deadline each. The simulated sync does the same, one request at a
//! time; a membership change during a sync starts another sync once this one ends.

use std::collections::{BTreeMap, VecDeque};

use gristmill::clock::Millis;
use gristmill::directory::{
    DirectoryCommand, DirectoryEntry, RegisterOutcome, ViewId, partition_owner,
};
use gristmill::grain::GrainId;
use gristmill::membership::{Incarnation, NodeState};

use super::{BACKGROUND_DEADLINE, NodeTimer, SimNode};
use crate::message::{DirectoryRequest, DirectoryResponse, Reply, Request};

/// Step of a sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    HandOff,
    Reassert,
    Confirm,
}

/// One sync of the directory with a membership view, in progress.
#[derive(Debug)]
pub(super) struct SyncTask {
    live: Vec<Incarnation>,
    phase: Phase,
    queue: VecDeque<(Incarnation, DirectoryRequest)>,
    /// The request sent and not yet answered or timed out.
    waiting: Option<(u64, DirectoryRequest)>,
    /// Whether every hand-off and re-assertion so far got an outcome from an owner in `live`.
    /// A sync that is not complete sends no confirmations, as in the real glue.
    complete: bool,
}

impl SyncTask {
    /// Returns whether the sync waits for the reply to request `id`.
    pub(super) fn waits_for(&self, id: u64) -> bool {
        self.waiting
            .as_ref()
            .is_some_and(|(waiting, _)| *waiting == id)
    }
}

impl SimNode {
    /// Starts a sync, or marks that another is due when one runs.
    pub(super) fn request_sync(&mut self, now: Millis) {
        if self.sync.is_some() {
            self.resync = true;
            return;
        }
        self.start_sync(now);
    }

    fn start_sync(&mut self, now: Millis) {
        let live = self.live.clone();
        let commands = self.partition.handle_membership_change(&live, now);
        let mut queue = VecDeque::new();
        for command in commands {
            match command {
                DirectoryCommand::HandOff { to, mut entries } => {
                    // The partition collects entries from a hash map; sorting keeps runs
                    // deterministic.
                    entries.sort_by(|a, b| a.grain.cmp(&b.grain));
                    let from = self.id.incarnation();
                    queue.push_back((to, DirectoryRequest::HandOff { from, entries }));
                }
                DirectoryCommand::Deactivate { entry } => self.deactivate_loser(&entry, now),
            }
        }
        self.sync = Some(SyncTask {
            live,
            phase: Phase::HandOff,
            queue,
            waiting: None,
            complete: true,
        });
        self.next_sync_request(now);
    }

    /// Sends the sync's next request, moving to the next phase when one is done.
    fn next_sync_request(&mut self, now: Millis) {
        loop {
            let Some(sync) = self.sync.as_mut() else {
                return;
            };
            if let Some((to, request)) = sync.queue.pop_front() {
                let id = self.next_request();
                let sync = self.sync.as_mut().expect("checked above");
                sync.waiting = Some((id, request.clone()));
                self.send_request(&to, id, Request::Directory(request));
                self.timer(BACKGROUND_DEADLINE, NodeTimer::SyncTimeout { request: id });
                return;
            }
            match sync.phase {
                Phase::HandOff => {
                    sync.phase = Phase::Reassert;
                    let live = sync.live.clone();
                    let batches = self.reassert_batches(&live);
                    let sync = self.sync.as_mut().expect("checked above");
                    sync.queue.extend(batches);
                }
                Phase::Reassert if !sync.complete => {
                    // No confirmation: the new owners wait for their grace period instead.
                    sync.phase = Phase::Confirm;
                }
                Phase::Reassert => {
                    sync.phase = Phase::Confirm;
                    let view = ViewId::of(&sync.live);
                    let from = self.id.incarnation();
                    let confirmations: Vec<_> = sync
                        .live
                        .iter()
                        .map(|member| {
                            let request = DirectoryRequest::SyncComplete {
                                from: from.clone(),
                                view,
                            };
                            (member.clone(), request)
                        })
                        .collect();
                    sync.queue.extend(confirmations);
                }
                Phase::Confirm => return self.finish_sync(now),
            }
        }
    }

    /// Groups this node's activations by their owner in `live`.
    fn reassert_batches(&self, live: &[Incarnation]) -> Vec<(Incarnation, DirectoryRequest)> {
        let local = self.id.incarnation();
        let mut by_owner: BTreeMap<Incarnation, Vec<DirectoryEntry>> = BTreeMap::new();
        for (grain, activation) in &self.catalog {
            let entry = DirectoryEntry {
                grain: grain.clone(),
                host: local.clone(),
                activation_id: activation.activation_id,
                epoch: activation.epoch,
            };
            if let Some(owner) = partition_owner(grain, live) {
                by_owner.entry(owner.clone()).or_default().push(entry);
            }
        }
        by_owner
            .into_iter()
            .map(|(owner, entries)| (owner, DirectoryRequest::Reassert { entries }))
            .collect()
    }

    fn finish_sync(&mut self, now: Millis) {
        self.sync = None;
        if self.resync {
            self.resync = false;
            return self.start_sync(now);
        }
        if self.activate_after_sync {
            self.activate_after_sync = false;
            if self.meta.state == NodeState::Joining {
                self.meta.state = NodeState::Active;
                self.publish_local_meta(now);
            }
        }
    }

    pub(super) fn handle_sync_reply(&mut self, id: u64, body: Reply, now: Millis) {
        let Some((_, request)) = self.sync.as_mut().and_then(|sync| sync.waiting.take()) else {
            return;
        };
        match (request, body) {
            (
                DirectoryRequest::HandOff { .. },
                Reply::Directory(DirectoryResponse::Commands(commands)),
            ) => {
                for command in commands {
                    if let DirectoryCommand::Deactivate { entry } = command {
                        self.deactivate_loser(&entry, now);
                    }
                }
            }
            (
                DirectoryRequest::Reassert { entries },
                Reply::Directory(DirectoryResponse::Reassert(outcomes)),
            ) => {
                for (entry, outcome) in entries.iter().zip(outcomes) {
                    match outcome {
                        RegisterOutcome::Conflict(winner) if !winner.is_same_activation(entry) => {
                            self.stop_superseded(&entry.grain, entry.activation_id, now);
                        }
                        // The real glue retries these a few times; the simulated sync does
                        // not, so it only gives up its confirmation.
                        RegisterOutcome::NotOwner { .. } | RegisterOutcome::NotReady => {
                            self.mark_sync_incomplete();
                        }
                        _ => {}
                    }
                }
            }
            (DirectoryRequest::SyncComplete { .. }, _) => {}
            _ => self.mark_sync_incomplete(),
        }
        let _ = id;
        self.next_sync_request(now);
    }

    pub(super) fn handle_sync_timeout(&mut self, request: u64, now: Millis) {
        let timed_out = self
            .sync
            .as_ref()
            .is_some_and(|sync| sync.waits_for(request));
        if timed_out {
            if let Some(sync) = self.sync.as_mut() {
                sync.waiting = None;
                sync.complete = false;
            }
            self.next_sync_request(now);
        }
    }

    fn mark_sync_incomplete(&mut self) {
        if let Some(sync) = self.sync.as_mut() {
            sync.complete = false;
        }
    }

    /// Deactivates a hand-off loser if it is local. A loser on another node keeps running
    /// until its host's next re-assertion, as in the real glue.
    fn deactivate_loser(&mut self, entry: &DirectoryEntry, now: Millis) {
        if entry.host == self.id.incarnation() {
            self.stop_superseded(&entry.grain, entry.activation_id, now);
        }
    }

    fn stop_superseded(&mut self, grain: &GrainId, activation_id: u64, now: Millis) {
        let matches = self
            .catalog
            .get(grain)
            .is_some_and(|activation| activation.activation_id == activation_id);
        if matches {
            self.deactivate(grain, now);
        }
    }

    /// Serves a directory request with this node's partition.
    pub(super) fn handle_directory_request(
        &mut self,
        request: DirectoryRequest,
        now: Millis,
    ) -> DirectoryResponse {
        request.serve(&mut self.partition, now)
    }
}
