//! Call flows: the real router's `invoke` and `handle_forwarded` loops as state machines.
//!
//! An `Invoke` flow is a client call that started on this node. It tries, in order: the
//! local activation, the cached entry or a lookup at the partition owner, and placement with
//! registration (compare-and-set, `Expect::Absent`) when the directory has no entry. A `Serve`
//! flow is a call another node forwarded here: it delivers locally, or activates first when
//! the caller's placement chose this node. Every flow ends at its deadline at the latest.

use gristmill::clock::Millis;
use gristmill::directory::{DirectoryEntry, Expect, LookupOutcome, RegisterOutcome};
use gristmill::grain::GrainId;
use gristmill::membership::Incarnation;
use gristmill::placement::{PlacementCandidate, PlacementStrategy};

use super::{MAX_ATTEMPTS, NodeTimer, Output, SETTLE_PAUSE, SimNode};
use crate::message::{
    CallFailure, CallReply, CallRequest, DirectoryRequest, DirectoryResponse, Message, Reply,
    Request, Route,
};

/// Id of a flow, unique within a node incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct FlowId(pub u64);

/// What resumes a waiting flow.
#[derive(Debug)]
pub(crate) enum Resume {
    /// A reply to the request the flow sent.
    Reply(Reply),
    /// The flow's pause ended.
    Paused,
    /// The flow's turn ended: the number of applied increments, or why it failed.
    Turn(Result<u64, CallFailure>),
    /// The activation went away before or during the flow's turn.
    Gone,
    /// The flow now holds the grain's activation lock.
    Locked,
}

/// Who started a flow.
#[derive(Debug)]
enum FlowKind {
    /// A client call on this node.
    Invoke { call: u64 },
    /// A call forwarded by another node.
    Serve {
        reply_to: Incarnation,
        request: u64,
        route: Route,
        rounds: u32,
    },
}

/// What a flow waits for.
#[derive(Debug)]
enum Wait {
    Nothing,
    Turn,
    Lookup,
    Lock,
    Register(DirectoryEntry),
    /// A forwarded call; with the entry it was sent to, if the directory named the host.
    Forward(Option<DirectoryEntry>),
    Pause(AfterPause),
}

#[derive(Debug)]
enum AfterPause {
    Lookup,
    Register(DirectoryEntry),
}

/// Where a call goes next.
enum Target {
    Host(DirectoryEntry),
    ActivateHere,
    ActivateOn(Incarnation),
}

/// One call in progress on this node.
#[derive(Debug)]
pub(crate) struct Flow {
    grain: GrainId,
    increment: u64,
    deadline: Millis,
    kind: FlowKind,
    wait: Wait,
    attempts: u32,
}

impl SimNode {
    pub(super) fn start_invoke(
        &mut self,
        call: u64,
        grain: GrainId,
        increment: u64,
        deadline: Millis,
        now: Millis,
    ) {
        if self.stopping {
            self.outputs.push(Output::CallEnded {
                call,
                result: Err(CallFailure::ShuttingDown),
            });
            return;
        }
        let kind = FlowKind::Invoke { call };
        let id = self.add_flow(grain, increment, deadline, kind, now);
        self.attempt(id, now);
    }

    fn start_serve(&mut self, request: u64, from: Incarnation, call: CallRequest, now: Millis) {
        let kind = FlowKind::Serve {
            reply_to: from,
            request,
            route: call.route,
            rounds: 0,
        };
        let id = self.add_flow(call.grain, call.increment, call.deadline, kind, now);
        self.attempt(id, now);
    }

    fn add_flow(
        &mut self,
        grain: GrainId,
        increment: u64,
        deadline: Millis,
        kind: FlowKind,
        now: Millis,
    ) -> FlowId {
        let id = FlowId(self.next_flow_id);
        self.next_flow_id += 1;
        let flow = Flow {
            grain,
            increment,
            deadline,
            kind,
            wait: Wait::Nothing,
            attempts: 0,
        };
        self.flows.insert(id, flow);
        let remaining = deadline.saturating_since(now);
        self.timer(
            remaining,
            NodeTimer::Wake {
                flow: id.0,
                deadline: true,
            },
        );
        id
    }

    /// Returns the client calls in progress on this node.
    pub(super) fn invoke_calls(&self) -> Vec<u64> {
        self.flows
            .values()
            .filter_map(|flow| match flow.kind {
                FlowKind::Invoke { call } => Some(call),
                FlowKind::Serve { .. } => None,
            })
            .collect()
    }

    pub(super) fn finish_invoke(&mut self, call: u64, result: Result<u64, CallFailure>) {
        self.outputs.push(Output::CallEnded { call, result });
    }

    /// Starts the next round of a flow: the top of the real router's retry loops.
    fn attempt(&mut self, id: FlowId, now: Millis) {
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        let (grain, increment) = (flow.grain.clone(), flow.increment);
        match &mut flow.kind {
            FlowKind::Invoke { .. } => {
                if flow.attempts >= MAX_ATTEMPTS {
                    return self.finish(id, Err(CallFailure::TooManyHops));
                }
                flow.attempts += 1;
                if now >= flow.deadline {
                    return self.finish(id, Err(CallFailure::DeadlineExceeded));
                }
                if self.deliver_local(&grain, id, increment) {
                    return self.set_wait(id, Wait::Turn);
                }
                let cached = self.cache.get(&grain).cloned();
                if let Some(entry) = cached
                    && let Some(target) = self.target_of(entry)
                {
                    return self.go(id, target, now);
                }
                self.lookup(id, now);
            }
            FlowKind::Serve { route, rounds, .. } => {
                let route = *route;
                if *rounds >= 2 {
                    return self.reply_call(id, CallReply::NotHere);
                }
                *rounds += 1;
                if self.deliver_local(&grain, id, increment) {
                    return self.set_wait(id, Wait::Turn);
                }
                if route != Route::ActivateHere {
                    let activating = self.activation_locks.contains_key(&grain);
                    if activating && self.config.await_activation_before_not_here {
                        // The grain may be registered here with its activation still
                        // starting; answer once the activation lock is free.
                        return self.activate_local(id, now);
                    }
                    return self.reply_call(id, CallReply::NotHere);
                }
                self.activate_local(id, now);
            }
        }
    }

    fn set_wait(&mut self, id: FlowId, wait: Wait) {
        if let Some(flow) = self.flows.get_mut(&id) {
            flow.wait = wait;
        }
    }

    fn pause(&mut self, id: FlowId, after: AfterPause) {
        self.set_wait(id, Wait::Pause(after));
        self.timer(
            SETTLE_PAUSE,
            NodeTimer::Wake {
                flow: id.0,
                deadline: false,
            },
        );
    }

    fn lookup(&mut self, id: FlowId, now: Millis) {
        let flow = &self.flows[&id];
        if now >= flow.deadline {
            return self.finish(id, Err(CallFailure::DeadlineExceeded));
        }
        let grain = flow.grain.clone();
        let request = DirectoryRequest::Lookup {
            grain: grain.clone(),
        };
        match self.send_directory_request(&grain, request, Some(id)) {
            Some(_) => self.set_wait(id, Wait::Lookup),
            // No owner: the real router's request fails and it pauses before retrying.
            None => self.pause(id, AfterPause::Lookup),
        }
    }

    /// Returns where an entry points, or `None` if its host is not a live member.
    fn target_of(&mut self, entry: DirectoryEntry) -> Option<Target> {
        if entry.host == self.id.incarnation() {
            // The entry says "here", but the catalog has no activation: it is stale.
            self.cache.handle_not_here(&entry.grain, &entry.host);
            return None;
        }
        let live = self
            .view
            .get(&entry.host)
            .is_some_and(|member| member.is_live());
        live.then_some(Target::Host(entry))
    }

    fn go(&mut self, id: FlowId, target: Target, now: Millis) {
        match target {
            Target::Host(entry) => {
                let host = entry.host.clone();
                self.forward(id, &host, Route::Deliver, Some(entry));
            }
            Target::ActivateHere => self.activate_local(id, now),
            Target::ActivateOn(node) => self.forward(id, &node, Route::ActivateHere, None),
        }
    }

    fn forward(
        &mut self,
        id: FlowId,
        to: &Incarnation,
        route: Route,
        entry: Option<DirectoryEntry>,
    ) {
        let flow = &self.flows[&id];
        let call = CallRequest {
            grain: flow.grain.clone(),
            increment: flow.increment,
            deadline: flow.deadline,
            route,
            hops: 1,
        };
        let request = self.next_request();
        self.pending.insert(request, id);
        self.send_request(to, request, Request::Call(call));
        self.set_wait(id, Wait::Forward(entry));
    }

    /// Chooses a node for a new activation, as the real router's `place` does.
    fn place(&mut self, grain: &GrainId) -> Option<Target> {
        let local = self.id.incarnation();
        let candidates: Vec<PlacementCandidate> = self
            .view
            .members()
            .map(|member| PlacementCandidate {
                node: member.incarnation(),
                state: member.state,
                load: member.load,
                recent_placements: self
                    .recent_placements
                    .get(&member.incarnation())
                    .copied()
                    .unwrap_or(0),
            })
            .collect();
        let chosen = gristmill::placement::choose(
            PlacementStrategy::default(),
            &self.config.placement,
            grain,
            &local,
            &candidates,
            &mut self.placement_rng,
        )
        .ok()?;
        *self.recent_placements.entry(chosen.clone()).or_default() += 1;
        if chosen == local {
            Some(Target::ActivateHere)
        } else {
            Some(Target::ActivateOn(chosen))
        }
    }

    /// Takes the grain's activation lock, or queues for it.
    fn activate_local(&mut self, id: FlowId, now: Millis) {
        if self.stopping {
            return self.finish(id, Err(CallFailure::ShuttingDown));
        }
        let grain = self.flows[&id].grain.clone();
        let queue = self.activation_locks.entry(grain).or_default();
        queue.push_back(id);
        if queue.front() == Some(&id) {
            self.activate_locked(id, now);
        } else {
            self.set_wait(id, Wait::Lock);
        }
    }

    fn activate_locked(&mut self, id: FlowId, now: Millis) {
        let flow = &self.flows[&id];
        let grain = flow.grain.clone();
        let deliver_only = matches!(
            flow.kind,
            FlowKind::Serve {
                route: Route::Deliver,
                ..
            }
        );
        if self.catalog.contains_key(&grain) {
            self.release_lock(&grain, id, now);
            return self.activated(id, Ok(()), now);
        }
        if deliver_only {
            // The activation this call waited for did not start; the caller resolves again.
            return self.reply_call(id, CallReply::NotHere);
        }
        let entry = DirectoryEntry {
            grain,
            host: self.id.incarnation(),
            activation_id: self.next_activation_id,
            epoch: 0,
        };
        self.next_activation_id += 1;
        self.register(id, entry, now);
    }

    fn register(&mut self, id: FlowId, entry: DirectoryEntry, now: Millis) {
        if now >= self.flows[&id].deadline {
            return self.finish(id, Err(CallFailure::DeadlineExceeded));
        }
        let request = DirectoryRequest::Register {
            entry: entry.clone(),
            expect: Expect::Absent,
        };
        let grain = entry.grain.clone();
        match self.send_directory_request(&grain, request, Some(id)) {
            Some(_) => self.set_wait(id, Wait::Register(entry)),
            None => self.pause(id, AfterPause::Register(entry)),
        }
    }

    fn release_lock(&mut self, grain: &GrainId, id: FlowId, now: Millis) {
        let Some(queue) = self.activation_locks.get_mut(grain) else {
            return;
        };
        let was_holder = queue.front() == Some(&id);
        queue.retain(|waiter| *waiter != id);
        let next = queue.front().copied();
        if queue.is_empty() {
            self.activation_locks.remove(grain);
        }
        if was_holder && let Some(next) = next {
            self.resume_flow(next, Resume::Locked, now);
        }
    }

    /// Continues after `activate_local`: `Err(winner)` if another activation won.
    fn activated(&mut self, id: FlowId, result: Result<(), DirectoryEntry>, now: Millis) {
        let Some(flow) = self.flows.get(&id) else {
            return;
        };
        match (&flow.kind, result) {
            (FlowKind::Invoke { .. }, Err(winner)) => {
                self.cache.insert(winner);
                self.attempt(id, now);
            }
            (FlowKind::Serve { .. }, Err(_)) => self.reply_call(id, CallReply::NotHere),
            (_, Ok(())) => self.attempt(id, now),
        }
    }

    /// Resumes flow `id` with `input`.
    pub(super) fn resume_flow(&mut self, id: FlowId, input: Resume, now: Millis) {
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        let wait = std::mem::replace(&mut flow.wait, Wait::Nothing);
        match (wait, input) {
            (Wait::Turn, Resume::Turn(result)) => self.finish(id, result),
            (Wait::Turn, Resume::Gone) => self.attempt(id, now),
            (Wait::Lock, Resume::Locked) => self.activate_locked(id, now),
            (Wait::Pause(AfterPause::Lookup), Resume::Paused) => self.lookup(id, now),
            (Wait::Pause(AfterPause::Register(entry)), Resume::Paused) => {
                self.register(id, entry, now)
            }
            (Wait::Lookup, Resume::Reply(Reply::Directory(DirectoryResponse::Lookup(outcome)))) => {
                self.handle_lookup_outcome(id, outcome, now)
            }
            (Wait::Lookup, _) => self.pause(id, AfterPause::Lookup),
            (
                Wait::Register(entry),
                Resume::Reply(Reply::Directory(DirectoryResponse::Register(outcome))),
            ) => self.handle_register_outcome(id, entry, outcome, now),
            (Wait::Register(entry), _) => self.pause(id, AfterPause::Register(entry)),
            (Wait::Forward(entry), Resume::Reply(Reply::Call(reply))) => match reply {
                CallReply::Ok { applied } => self.finish(id, Ok(applied)),
                CallReply::Failed(failure) => self.finish(id, Err(failure)),
                CallReply::NotHere => {
                    if let Some(entry) = entry {
                        self.handle_not_here(&entry);
                    }
                    self.attempt(id, now);
                }
            },
            (wait, _) => {
                // A late or duplicated input for a step the flow already left.
                self.set_wait(id, wait);
            }
        }
    }

    fn handle_lookup_outcome(&mut self, id: FlowId, outcome: LookupOutcome, now: Millis) {
        let grain = self.flows[&id].grain.clone();
        match outcome {
            LookupOutcome::Found(entry) => {
                self.cache.insert(entry.clone());
                match self.target_of(entry) {
                    Some(target) => self.go(id, target, now),
                    None => self.pause(id, AfterPause::Lookup),
                }
            }
            LookupOutcome::NotFound => match self.place(&grain) {
                Some(target) => self.go(id, target, now),
                None => self.finish(id, Err(CallFailure::NoActiveNode)),
            },
            LookupOutcome::NotReady | LookupOutcome::NotOwner { .. } => {
                self.pause(id, AfterPause::Lookup)
            }
        }
    }

    fn handle_register_outcome(
        &mut self,
        id: FlowId,
        entry: DirectoryEntry,
        outcome: RegisterOutcome,
        now: Millis,
    ) {
        let grain = entry.grain.clone();
        match outcome {
            RegisterOutcome::Registered(registered) => {
                self.insert_activation(&registered, now);
                self.release_lock(&grain, id, now);
                self.activated(id, Ok(()), now);
            }
            RegisterOutcome::Conflict(winner) => {
                self.release_lock(&grain, id, now);
                self.activated(id, Err(winner), now);
            }
            _ => self.pause(id, AfterPause::Register(entry)),
        }
    }

    /// Drops a stale entry after its host answered `NotHere`, as the real router does.
    fn handle_not_here(&mut self, entry: &DirectoryEntry) {
        self.cache.handle_not_here(&entry.grain, &entry.host);
        let request = DirectoryRequest::Unregister {
            grain: entry.grain.clone(),
            host: entry.host.clone(),
            activation_id: entry.activation_id,
        };
        self.send_directory_request(&entry.grain, request, None);
    }

    /// Ends a pause, or ends the flow at its deadline.
    pub(super) fn handle_wake(&mut self, id: FlowId, deadline: bool, now: Millis) {
        if deadline {
            if let Some(flow) = self.flows.get(&id) {
                let grain = flow.grain.clone();
                self.finish(id, Err(CallFailure::DeadlineExceeded));
                self.remove_waiting_turn(&grain, id);
            }
            return;
        }
        let paused = matches!(
            self.flows.get(&id).map(|flow| &flow.wait),
            Some(Wait::Pause(_))
        );
        if paused {
            self.resume_flow(id, Resume::Paused, now);
        }
    }

    /// Ends a flow: acknowledges or fails the client call, or replies to the forwarding node.
    fn finish(&mut self, id: FlowId, result: Result<u64, CallFailure>) {
        let reply = match result {
            Ok(applied) => CallReply::Ok { applied },
            Err(failure) => CallReply::Failed(failure),
        };
        self.reply_call(id, reply);
    }

    fn reply_call(&mut self, id: FlowId, reply: CallReply) {
        let Some(flow) = self.flows.remove(&id) else {
            return;
        };
        // A flow that ends while holding or waiting for the activation lock passes it on.
        let grain = flow.grain.clone();
        self.send_flow_reply(flow, reply);
        self.release_lock(&grain, id, self.now);
    }

    fn send_flow_reply(&mut self, flow: Flow, reply: CallReply) {
        match flow.kind {
            FlowKind::Invoke { call } => {
                let result = match reply {
                    CallReply::Ok { applied } => Ok(applied),
                    CallReply::Failed(failure) => Err(failure),
                    CallReply::NotHere => Err(CallFailure::TooManyHops),
                };
                self.finish_invoke(call, result);
            }
            FlowKind::Serve {
                reply_to, request, ..
            } => {
                let message = Message::Reply {
                    id: request,
                    body: Reply::Call(reply),
                };
                self.send(&reply_to.name, Some(reply_to.boot_id), message);
            }
        }
    }

    /// Serves a request from `from`.
    pub(super) fn handle_request(
        &mut self,
        id: u64,
        from: Incarnation,
        body: Request,
        now: Millis,
    ) {
        match body {
            Request::Directory(request) => {
                let response = self.handle_directory_request(request, now);
                let message = Message::Reply {
                    id,
                    body: Reply::Directory(response),
                };
                self.send(&from.name, Some(from.boot_id), message);
            }
            Request::Call(call) => self.start_serve(id, from, call, now),
        }
    }

    /// Routes a reply to the sync task or to the flow that waits for it.
    pub(super) fn handle_reply(&mut self, id: u64, body: Reply, now: Millis) {
        if self.sync.as_ref().is_some_and(|sync| sync.waits_for(id)) {
            return self.handle_sync_reply(id, body, now);
        }
        if let Some(flow) = self.pending.remove(&id) {
            self.resume_flow(flow, Resume::Reply(body), now);
        }
    }

    /// Sends `body` to `to` as a session message that expects a reply with `id`.
    pub(super) fn send_request(&mut self, to: &Incarnation, id: u64, body: Request) {
        let message = Message::Request {
            id,
            from: self.id.incarnation(),
            body,
        };
        self.send(&to.name, Some(to.boot_id), message);
    }
}
