//! Simulated activations: a mailbox of increments, turns that read and write fenced state.
//!
//! A turn takes the next call from the mailbox, loads the state on the first turn, adds the
//! call's increment and writes the state with compare-and-set on the ETag it holds. Only after
//! the write commits does the call get its acknowledgement. A write that loses its
//! compare-and-set proves that another activation wrote the grain since, so this activation
//! is stale: it fails the call and deactivates.

use std::collections::VecDeque;

use gristmill::clock::Millis;
use gristmill::directory::DirectoryEntry;
use gristmill::grain::GrainId;

use super::calls::{FlowId, Resume};
use super::{Output, SimNode};
use crate::message::{CallFailure, DirectoryRequest, Request};
use crate::store::{Increments, Stored};

/// One activation of a grain on a simulated node.
#[derive(Debug)]
pub struct Activation {
    /// Id unique within the host incarnation.
    pub activation_id: u64,
    /// Epoch the directory registered.
    pub epoch: u64,
    state: Option<Stored>,
    mailbox: VecDeque<(FlowId, u64)>,
    /// The call whose turn runs, waiting for storage.
    current: Option<(FlowId, u64)>,
    /// Deactivation requested: finish the current turn, take no new calls.
    stopping: bool,
    last_used: Millis,
}

impl Activation {
    fn new(activation_id: u64, epoch: u64, now: Millis) -> Self {
        Self {
            activation_id,
            epoch,
            state: None,
            mailbox: VecDeque::new(),
            current: None,
            stopping: false,
            last_used: now,
        }
    }

    /// Returns whether a turn is running.
    pub fn is_busy(&self) -> bool {
        self.current.is_some()
    }

    /// Returns whether a call waits for its turn while no turn runs, as behind the fence.
    pub(super) fn has_waiting_turn(&self) -> bool {
        self.current.is_none() && !self.mailbox.is_empty()
    }
}

impl SimNode {
    /// Adds a new activation to the catalog.
    pub(super) fn insert_activation(&mut self, entry: &DirectoryEntry, now: Millis) {
        let activation = Activation::new(entry.activation_id, entry.epoch, now);
        self.activations_started += 1;
        self.catalog.insert(entry.grain.clone(), activation);
    }

    /// Queues a call on the local activation; returns false if the grain is not active here.
    pub(super) fn deliver_local(&mut self, grain: &GrainId, flow: FlowId, increment: u64) -> bool {
        let Some(activation) = self.catalog.get_mut(grain) else {
            return false;
        };
        if activation.stopping {
            return false;
        }
        activation.mailbox.push_back((flow, increment));
        self.maybe_start_turn(grain);
        true
    }

    /// Starts the next turn of the activation of `grain`, unless one runs, none waits, or
    /// the membership lease holds turns back (see the `lease` module).
    pub(super) fn maybe_start_turn(&mut self, grain: &GrainId) {
        let may_start = self.may_start_turns_at(self.now);
        let Some(activation) = self.catalog.get_mut(grain) else {
            return;
        };
        if !activation.has_waiting_turn() {
            return;
        }
        if !may_start {
            self.turns_held = true;
            return;
        }
        let Some(next) = activation.mailbox.pop_front() else {
            return;
        };
        activation.current = Some(next);
        let activation_id = activation.activation_id;
        self.outputs.push(Output::TurnStarted {
            grain: grain.clone(),
            activation_id,
        });
        if activation.state.is_none() {
            self.outputs.push(Output::StoreRead {
                grain: grain.clone(),
                activation_id,
            });
        } else {
            self.write_turn(grain);
        }
    }

    pub(super) fn handle_state_loaded(
        &mut self,
        grain: &GrainId,
        activation_id: u64,
        stored: Stored,
        _now: Millis,
    ) {
        let Some(activation) = self.catalog.get_mut(grain) else {
            return;
        };
        if activation.activation_id != activation_id || activation.current.is_none() {
            return;
        }
        activation.state = Some(stored);
        self.write_turn(grain);
    }

    fn write_turn(&mut self, grain: &GrainId) {
        let activation = self.catalog.get_mut(grain).expect("caller checked");
        let (_, increment) = activation.current.expect("a turn runs");
        let state = activation.state.as_ref().expect("state is loaded");
        let mut increments: Increments = state.increments.clone();
        increments.insert(increment);
        self.outputs.push(Output::StoreWrite {
            grain: grain.clone(),
            activation_id: activation.activation_id,
            expected: state.etag,
            increments,
        });
    }

    pub(super) fn handle_state_written(
        &mut self,
        grain: &GrainId,
        activation_id: u64,
        result: Result<u64, Option<u64>>,
        now: Millis,
    ) {
        let Some(activation) = self.catalog.get_mut(grain) else {
            return;
        };
        if activation.activation_id != activation_id {
            return;
        }
        let Some((flow, increment)) = activation.current.take() else {
            return;
        };
        activation.last_used = now;
        match result {
            Ok(etag) => {
                let state = activation.state.as_mut().expect("state is loaded");
                state.etag = Some(etag);
                state.increments.insert(increment);
                let applied = state.increments.len() as u64;
                let stopping = activation.stopping;
                self.resume_flow(flow, Resume::Turn(Ok(applied)), now);
                if stopping {
                    self.deactivate(grain, now);
                } else {
                    self.maybe_start_turn(grain);
                }
            }
            Err(_) => {
                self.resume_flow(flow, Resume::Turn(Err(CallFailure::StaleState)), now);
                self.deactivate(grain, now);
            }
        }
    }

    /// Removes the call of `flow` from the mailbox of `grain`'s activation, where it waited
    /// for its turn until its deadline passed. The runtime rejects such a late turn too.
    pub(super) fn remove_waiting_turn(&mut self, grain: &GrainId, flow: FlowId) {
        if let Some(activation) = self.catalog.get_mut(grain) {
            activation.mailbox.retain(|(waiting, _)| *waiting != flow);
        }
    }

    /// Deactivates the activation of `grain` now if it is between turns, or after its
    /// current turn: removes it, returns queued calls to their flows, and unregisters it.
    pub(super) fn deactivate(&mut self, grain: &GrainId, now: Millis) {
        let Some(activation) = self.catalog.get_mut(grain) else {
            return;
        };
        if activation.current.is_some() {
            activation.stopping = true;
            return;
        }
        let activation_id = activation.activation_id;
        self.drop_activation(grain, now);
        self.unregister(grain, activation_id);
    }

    /// Removes the activation at once, returning every queued call to its flow.
    pub(super) fn drop_activation(&mut self, grain: &GrainId, now: Millis) {
        let Some(activation) = self.catalog.remove(grain) else {
            return;
        };
        let flows: Vec<FlowId> = activation
            .current
            .iter()
            .chain(activation.mailbox.iter())
            .map(|(flow, _)| *flow)
            .collect();
        for flow in flows {
            self.resume_flow(flow, Resume::Gone, now);
        }
    }

    /// Sends an unregistration for the activation to the grain's owner, without waiting.
    pub(super) fn unregister(&mut self, grain: &GrainId, activation_id: u64) {
        let request = DirectoryRequest::Unregister {
            grain: grain.clone(),
            host: self.id.incarnation(),
            activation_id,
        };
        self.send_directory_request(grain, request, None);
    }

    /// Deactivates idle activations, and every activation of a draining node.
    pub(super) fn handle_sweep(&mut self, now: Millis) {
        if self.stopping {
            return;
        }
        let draining = self.meta.state == gristmill::membership::NodeState::Draining;
        let idle_after = self.config.idle_after;
        let idle: Vec<GrainId> = self
            .catalog
            .iter()
            .filter(|(_, activation)| {
                activation.current.is_none()
                    && activation.mailbox.is_empty()
                    && (draining || now.saturating_since(activation.last_used) >= idle_after)
            })
            .map(|(grain, _)| grain.clone())
            .collect();
        for grain in idle {
            self.deactivate(&grain, now);
        }
        self.timer(super::SWEEP_PERIOD, super::NodeTimer::Sweep);
    }

    /// Sends a directory request about `grain` to its owner in this node's view; the reply
    /// resumes `flow`, or nobody waits when `flow` is `None`. Returns the request id, or
    /// `None` when the view is empty.
    pub(super) fn send_directory_request(
        &mut self,
        grain: &GrainId,
        request: DirectoryRequest,
        flow: Option<FlowId>,
    ) -> Option<u64> {
        let owner = gristmill::directory::partition_owner(grain, &self.live)?.clone();
        let id = self.next_request();
        if let Some(flow) = flow {
            self.pending.insert(id, flow);
        }
        self.send_request(&owner, id, Request::Directory(request));
        Some(id)
    }
}
