//! The simulated world: virtual time, one seeded RNG, an event heap, the network, storage,
//! node processes, and the bookkeeping the invariant checks read.
//!
//! Events are ordered by time, then priority (foca's indirect probes before new probes before
//! other timers before messages, as in foca's own simulation advice), then insertion order.
//! Every random choice comes from the one seeded RNG or from per-node RNGs seeded from it, and
//! every map is ordered, so one seed always produces the same run. The trace hash covers each
//! handled event: its time, node, kind and encoded content.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use foca::Timer;
use gristmill::clock::Millis;
use gristmill::directory::DirectoryPartition;
use gristmill::grain::GrainId;
use gristmill::membership::{Incarnation, NodeId, NodeIdFields, NodeMeta, NodeState, boot_id_at};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use xxhash_rust::xxh3::Xxh3Default;

use crate::checks::{Invariant, Violation};
use crate::event_queue::EventQueue;
use crate::message::{CallFailure, Message};
use crate::network::{LinkFaults, Network};
use crate::node::{NodeConfig, NodeTimer, Output, SimNode};
use crate::store::VersionedStore;

/// Settings of one simulation run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed of every random choice in the run.
    pub seed: u64,
    /// Settings of every node.
    pub node: NodeConfig,
    /// How many of the first nodes serve as seeds for joining.
    pub seed_nodes: usize,
    /// Time a client gives each call.
    pub call_deadline: Duration,
    /// Time after which the orchestrator restarts a node that stopped itself.
    pub restart_delay: Duration,
    /// Shortest and longest one-way delay to storage.
    pub store_delay: (Duration, Duration),
    /// Record a readable line per handled event, for replay.
    pub record_log: bool,
    /// Check that no node starts a turn after a node that could start turns itself declared
    /// it down ([`Invariant::TurnAfterDown`]). Default `true`.
    pub check_turns_after_down: bool,
}

impl SimConfig {
    /// Returns the default settings with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            node: NodeConfig::default(),
            seed_nodes: 3,
            call_deadline: Duration::from_secs(2),
            restart_delay: Duration::from_secs(1),
            store_delay: (Duration::from_millis(1), Duration::from_millis(3)),
            record_log: false,
            check_turns_after_down: true,
        }
    }
}

/// A function applied to the directory partition of every new node process.
type PartitionHook = Box<dyn Fn(&mut DirectoryPartition)>;

/// A storage operation on its way to or from the database.
#[derive(Debug)]
enum StoreOp {
    Read {
        grain: GrainId,
        activation_id: u64,
    },
    Write {
        grain: GrainId,
        activation_id: u64,
        expected: Option<u64>,
        increments: crate::store::Increments,
    },
}

#[derive(Debug)]
enum StoreReply {
    Read {
        grain: GrainId,
        activation_id: u64,
        stored: crate::store::Stored,
    },
    Write {
        grain: GrainId,
        activation_id: u64,
        result: Result<u64, Option<u64>>,
    },
}

#[derive(Debug)]
enum Event {
    Deliver {
        to: usize,
        boot_id: Option<u64>,
        from: String,
        message: Message,
    },
    Timer {
        slot: usize,
        boot_id: u64,
        timer: NodeTimer,
    },
    AtStore {
        slot: usize,
        boot_id: u64,
        op: StoreOp,
    },
    StoreReply {
        slot: usize,
        boot_id: u64,
        reply: StoreReply,
    },
    Restart {
        slot: usize,
    },
    ClientCall {
        grain: GrainId,
    },
}

impl Event {
    /// Returns the slot whose process handles the event, if any.
    fn slot(&self) -> Option<usize> {
        match self {
            Event::Deliver { to, .. } => Some(*to),
            Event::Timer { slot, .. } | Event::StoreReply { slot, .. } => Some(*slot),
            Event::AtStore { .. } | Event::Restart { .. } | Event::ClientCall { .. } => None,
        }
    }
}

/// Order of the pending events: time, priority, then sequence number, which is unique.
type EventKey = (Millis, u8, u64);

/// One node name's process history.
pub struct Slot {
    /// Node name, stable across restarts.
    pub name: String,
    /// The running process; `None` while crashed, stopped or removed.
    pub node: Option<SimNode>,
    /// The process stops handling events until then.
    pub stalled_until: Option<Millis>,
    /// The orchestrator removed the node for good.
    pub removed: bool,
    /// A scenario step crashed the process and has not restarted it.
    pub crashed: bool,
}

/// A client call as the world records it.
#[derive(Clone, Debug)]
pub struct CallRecord {
    /// The grain.
    pub grain: GrainId,
    /// The node the call started on.
    pub origin: Incarnation,
    /// When it started.
    pub started: Millis,
    /// Its deadline.
    pub deadline: Millis,
    /// The origin node stalled or died while the call ran, so nothing could end it in time.
    pub excused: bool,
    /// When and how it ended.
    pub ended: Option<(Millis, Result<u64, CallFailure>)>,
}

/// Running totals of a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Events handled.
    pub events: u64,
    /// Messages handed to the network, copies included.
    pub messages_sent: u64,
    /// Gossip datagrams handed to the network.
    pub gossip_sent: u64,
    /// Calls acknowledged.
    pub calls_acked: u64,
    /// Calls that ended with an error.
    pub calls_failed: u64,
    /// Members declared down by the failure detector while their process was running and
    /// not stalled.
    pub false_downs: u64,
}

/// How far the running nodes' views are from agreement, and how full foca's backlogs are.
#[derive(Clone, Copy, Debug, Default)]
pub struct ViewGaps {
    /// Views that miss at least one running member.
    pub lagging_views: usize,
    /// Running members missing, summed over all views.
    pub missing_members: usize,
    /// Of those, members that started before the node whose view misses them.
    pub missing_older: usize,
    /// Most running members one view misses.
    pub max_missing: usize,
    /// Member updates in foca's backlogs, summed over all nodes.
    pub update_backlog_total: usize,
    /// Largest member update backlog of one node.
    pub update_backlog_max: usize,
    /// Custom broadcasts (node meta) in foca's backlogs, summed over all nodes.
    pub broadcast_backlog_total: usize,
    /// Largest custom broadcast backlog of one node.
    pub broadcast_backlog_max: usize,
}

/// The simulated world.
pub struct World {
    config: SimConfig,
    now: Millis,
    events: EventQueue<EventKey, Event>,
    seq: u64,
    rng: StdRng,
    slots: Vec<Slot>,
    names: BTreeMap<String, usize>,
    network: Network,
    session_order: BTreeMap<(usize, usize), Millis>,
    store: VersionedStore,
    trace: Xxh3Default,
    calls: BTreeMap<u64, CallRecord>,
    acked: BTreeMap<GrainId, BTreeSet<u64>>,
    next_call: u64,
    turbulent: bool,
    step: String,
    violations: Vec<Violation>,
    partition_hook: Option<PartitionHook>,
    catalog_fingerprint: u64,
    log: Vec<String>,
    stats: Stats,
    first_down: BTreeMap<Incarnation, Millis>,
    /// First down verdict on each incarnation by a node that could start turns then, with
    /// that node's name; see [`World::check_turn_start`].
    first_down_by_serving: BTreeMap<Incarnation, (Millis, String)>,
    /// Slot whose view disagreed at the last [`World::views_agree`].
    disagreeing_slot: Cell<usize>,
}

impl World {
    /// Creates an empty world: no nodes, clean links, time zero.
    pub fn new(mut config: SimConfig) -> Self {
        config.node.report_live_changes = config.record_log;
        Self {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            now: Millis(0),
            events: EventQueue::new(),
            seq: 0,
            slots: Vec::new(),
            names: BTreeMap::new(),
            network: Network::new(LinkFaults::CLEAN),
            session_order: BTreeMap::new(),
            store: VersionedStore::default(),
            trace: Xxh3Default::new(),
            calls: BTreeMap::new(),
            acked: BTreeMap::new(),
            next_call: 1,
            turbulent: false,
            step: String::from("setup"),
            violations: Vec::new(),
            partition_hook: None,
            catalog_fingerprint: 0,
            log: Vec::new(),
            stats: Stats::default(),
            first_down: BTreeMap::new(),
            first_down_by_serving: BTreeMap::new(),
            disagreeing_slot: Cell::new(0),
        }
    }

    /// Calls `hook` on the directory partition of every node process started from now on.
    pub fn set_partition_hook(&mut self, hook: impl Fn(&mut DirectoryPartition) + 'static) {
        self.partition_hook = Some(Box::new(hook));
    }

    /// Returns the current virtual time.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Returns the hash over every event handled so far.
    pub fn trace_hash(&self) -> u64 {
        self.trace.digest()
    }

    /// Returns the running totals.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Returns the node slots.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Returns the recorded client calls.
    pub fn calls(&self) -> &BTreeMap<u64, CallRecord> {
        &self.calls
    }

    /// Returns the durable storage.
    pub fn store(&self) -> &VersionedStore {
        &self.store
    }

    /// Returns the network, to add or remove faults.
    pub fn network_mut(&mut self) -> &mut Network {
        &mut self.network
    }

    /// Returns whether faults may be active, which relaxes the single-activation check.
    pub fn is_turbulent(&self) -> bool {
        self.turbulent
    }

    /// Marks faults as possibly active (`true`) or the cluster as settled (`false`).
    pub fn set_turbulent(&mut self, turbulent: bool) {
        self.turbulent = turbulent;
    }

    /// Names the scenario step that runs, for violation reports.
    pub fn set_step(&mut self, step: String) {
        self.log_line(format!("== step: {step}"));
        self.step = step;
    }

    /// Returns the violations found so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Returns and clears the readable log.
    pub fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }

    /// Records a violation of `invariant` at the current step.
    pub fn violate(&mut self, invariant: Invariant, detail: String) {
        self.log_line(format!("VIOLATION {invariant:?}: {detail}"));
        self.violations.push(Violation {
            seed: self.config.seed,
            step: self.step.clone(),
            at: self.now,
            invariant,
            detail,
        });
    }

    fn log_line(&mut self, line: String) {
        if self.config.record_log {
            self.log.push(format!("{:>9} {line}", self.now.to_string()));
        }
    }

    /// Adds a node named `node-{index}` and starts its process; returns its slot.
    pub fn add_node(&mut self) -> usize {
        let slot = self.add_slot();
        self.start_process(slot);
        slot
    }

    /// Adds `count` nodes at once as members of a cluster that formed long ago. Before any
    /// of them starts, each is Active, and its member list, view and meta table contain all
    /// of them (see `SimNode::preload`). Only membership-only runs may use it, because the
    /// nodes skip the directory sync of a join.
    pub fn add_preloaded_nodes(&mut self, count: usize) {
        assert!(
            self.config.node.membership_only,
            "preloaded nodes skip the directory sync, so only membership-only runs may use them"
        );
        let first = self.slots.len();
        for _ in 0..count {
            self.add_slot();
        }
        let members = self.slots.len();
        let mut nodes: Vec<SimNode> = (first..members)
            .map(|slot| self.create_process(slot))
            .collect();
        let cluster: Vec<(NodeId, NodeMeta)> = nodes
            .iter_mut()
            .map(|node| (node.id().clone(), node.preset_active(members, self.now)))
            .collect();
        for (slot, mut node) in (first..members).zip(nodes) {
            node.preload(&cluster, self.now);
            self.run_process(slot, node);
        }
    }

    fn add_slot(&mut self) -> usize {
        let slot = self.slots.len();
        let name = format!("node-{slot}");
        self.names.insert(name.clone(), slot);
        self.slots.push(Slot {
            name,
            node: None,
            stalled_until: None,
            removed: false,
            crashed: false,
        });
        slot
    }

    /// Returns the slot of the node named `name`.
    pub fn slot_of(&self, name: &str) -> Option<usize> {
        self.names.get(name).copied()
    }

    fn start_process(&mut self, slot: usize) {
        let node = self.create_process(slot);
        self.run_process(slot, node);
    }

    /// Creates the process of `slot` with a new boot id, not yet started.
    fn create_process(&mut self, slot: usize) -> SimNode {
        // Time-ordered as on a real node, so that a restart wins foca's address conflict
        // against its previous incarnation.
        let boot_id = boot_id_at(self.now.0, self.rng.random());
        let name = self.slots[slot].name.clone();
        let id = NodeId::new(NodeIdFields {
            name: name.as_str().into(),
            boot_id,
            bump: 0,
            ip: IpAddr::V4(Ipv4Addr::new(
                10,
                0,
                (slot / 250) as u8,
                (slot % 250) as u8 + 1,
            )),
            gossip_port: 7946,
            cluster_port: 7947,
            grpc_port: 7948,
        });
        let seeds = (0..self.config.seed_nodes.min(self.slots.len()))
            .map(|seed| format!("node-{seed}"))
            .collect();
        let rng_seed = self.config.seed ^ self.rng.random::<u64>();
        let mut node = SimNode::new(id, self.config.node.clone(), seeds, rng_seed, self.now);
        if let Some(hook) = &self.partition_hook {
            node.with_partition(hook);
        }
        node
    }

    /// Starts `node`, the process of `slot`.
    fn run_process(&mut self, slot: usize, mut node: SimNode) {
        let outputs = node.handle_start(self.now);
        let boot_id = node.id().boot_id;
        let line = format!(
            "{} started with boot id {boot_id:016x}",
            self.slots[slot].name
        );
        self.log_line(line);
        self.slots[slot].node = Some(node);
        self.slots[slot].stalled_until = None;
        self.slots[slot].crashed = false;
        self.apply_outputs(slot, boot_id, outputs);
    }

    /// Kills the process in `slot` at once: no goodbye, in-flight messages to it are lost.
    pub fn crash(&mut self, slot: usize) {
        self.slots[slot].crashed = true;
        if let Some(node) = self.slots[slot].node.take() {
            let incarnation = node.id().incarnation();
            self.log_line(format!("{} crashed", incarnation));
            self.excuse_calls_from(&incarnation);
        }
    }

    /// Starts a new process (new boot id) under the name of `slot`.
    pub fn restart(&mut self, slot: usize) {
        if self.slots[slot].node.is_none() && !self.slots[slot].removed {
            self.start_process(slot);
        }
    }

    /// Freezes the process in `slot` for `duration`: it handles no event until then.
    pub fn stall(&mut self, slot: usize, duration: Duration) {
        let until = self.now + duration;
        self.slots[slot].stalled_until = Some(until);
        if let Some(node) = &self.slots[slot].node {
            let incarnation = node.id().incarnation();
            self.excuse_calls_from(&incarnation);
        }
    }

    /// Removes the node in `slot` for good, as an orchestrator does on scale-in; records a
    /// violation if it still holds activations.
    pub fn remove(&mut self, slot: usize) {
        if let Some(node) = &self.slots[slot].node
            && !node.catalog().is_empty()
        {
            let grains: Vec<String> = node.catalog().keys().map(|g| g.to_string()).collect();
            let detail = format!(
                "{} removed while it holds {} activations: {}",
                node.id().incarnation(),
                grains.len(),
                grains.join(", ")
            );
            self.violate(Invariant::RemovedWithActivations, detail);
        }
        self.crash(slot);
        self.slots[slot].removed = true;
    }

    /// Tells the node in `slot` to change its lifecycle state.
    pub fn set_state(&mut self, slot: usize, state: NodeState) {
        let now = self.now;
        let Some(node) = self.slots[slot].node.as_mut() else {
            return;
        };
        let boot_id = node.id().boot_id;
        let outputs = node.handle_set_state(state, now);
        self.apply_outputs(slot, boot_id, outputs);
    }

    /// Tells the node in `slot` to leave the cluster gracefully.
    pub fn leave(&mut self, slot: usize) {
        let now = self.now;
        let Some(node) = self.slots[slot].node.as_mut() else {
            return;
        };
        let boot_id = node.id().boot_id;
        let outputs = node.handle_leave(now);
        self.apply_outputs(slot, boot_id, outputs);
    }

    /// Schedules a client call to `grain` after `after`, at a random running node.
    pub fn schedule_call(&mut self, grain: GrainId, after: Duration) {
        self.push(self.now + after, 3, Event::ClientCall { grain });
    }

    /// Returns a number from the world's RNG in `0..bound`.
    pub fn random_below(&mut self, bound: u64) -> u64 {
        self.rng.random_range(0..bound.max(1))
    }

    /// Runs events until `until`, then sets the clock to `until`.
    pub fn run_until(&mut self, until: Millis) {
        while let Some(next) = self.events.peek_key() {
            if next.0 > until {
                break;
            }
            let (key, event) = self.events.pop().expect("peeked above");
            self.now = key.0;
            self.handle_event(key.1, event);
        }
        self.now = until;
    }

    /// Runs events for `duration`.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        self.run_until(until);
    }

    fn push(&mut self, at: Millis, priority: u8, event: Event) {
        self.seq += 1;
        self.events.push((at, priority, self.seq), event);
    }

    fn handle_event(&mut self, priority: u8, event: Event) {
        if let Some(slot) = event.slot()
            && let Some(until) = self.slots[slot].stalled_until
        {
            if until > self.now {
                return self.push(until, priority, event);
            }
            self.slots[slot].stalled_until = None;
        }
        self.stats.events += 1;
        match event {
            Event::Deliver {
                to,
                boot_id,
                from,
                message,
            } => self.deliver(to, boot_id, &from, message),
            Event::Timer {
                slot,
                boot_id,
                timer,
            } => {
                self.hash_event(1, slot, &timer);
                let now = self.now;
                if let Some(node) = self.process(slot, boot_id) {
                    let outputs = node.handle_timer(timer, now);
                    self.apply_outputs(slot, boot_id, outputs);
                }
            }
            Event::AtStore { slot, boot_id, op } => self.handle_store_op(slot, boot_id, op),
            Event::StoreReply {
                slot,
                boot_id,
                reply,
            } => {
                self.hash_event(3, slot, &format!("{reply:?}"));
                let now = self.now;
                if let Some(node) = self.process(slot, boot_id) {
                    let outputs = match reply {
                        StoreReply::Read {
                            grain,
                            activation_id,
                            stored,
                        } => node.handle_store_read(&grain, activation_id, stored, now),
                        StoreReply::Write {
                            grain,
                            activation_id,
                            result,
                        } => node.handle_store_write(&grain, activation_id, result, now),
                    };
                    self.apply_outputs(slot, boot_id, outputs);
                }
            }
            Event::Restart { slot } => {
                self.hash_event(4, slot, &());
                self.restart(slot);
            }
            Event::ClientCall { grain } => self.start_call(grain),
        }
        self.maybe_check_activations();
    }

    fn process(&mut self, slot: usize, boot_id: u64) -> Option<&mut SimNode> {
        self.slots[slot]
            .node
            .as_mut()
            .filter(|node| node.id().boot_id == boot_id)
    }

    fn deliver(&mut self, to: usize, boot_id: Option<u64>, from: &str, message: Message) {
        match &message {
            Message::Gossip(bytes)
            | Message::MembersRequest(bytes)
            | Message::MembersPage(bytes) => {
                self.trace.update(&self.now.0.to_le_bytes());
                self.trace.update(&[0, to as u8]);
                self.trace.update(bytes);
            }
            other => {
                self.hash_event(0, to, other);
                self.log_line(format!("{from} -> {}: {other:?}", self.slots[to].name));
            }
        }
        let now = self.now;
        let Some(node) = self.slots[to].node.as_mut() else {
            return;
        };
        let current = node.id().boot_id;
        if boot_id.is_some_and(|boot_id| boot_id != current) {
            return;
        }
        let outputs = node.handle_message(from, message, now);
        self.apply_outputs(to, current, outputs);
    }

    fn hash_event(&mut self, kind: u8, slot: usize, content: &impl serde::Serialize) {
        self.trace.update(&self.now.0.to_le_bytes());
        self.trace.update(&[kind, slot as u8, (slot >> 8) as u8]);
        if let Ok(bytes) = postcard::to_allocvec(content) {
            self.trace.update(&bytes);
        }
    }

    fn apply_outputs(&mut self, slot: usize, boot_id: u64, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send {
                    to,
                    boot_id: to_boot,
                    message,
                } => self.send(slot, &to, to_boot, message),
                Output::Timer { after, timer } => {
                    let priority = match &timer {
                        NodeTimer::Foca(Timer::SendIndirectProbe { .. }) => 0,
                        NodeTimer::Foca(Timer::ProbeRandomMember(_)) => 1,
                        _ => 2,
                    };
                    let at = self.now + after;
                    self.push(
                        at,
                        priority,
                        Event::Timer {
                            slot,
                            boot_id,
                            timer,
                        },
                    );
                }
                Output::StoreRead {
                    grain,
                    activation_id,
                } => {
                    let op = StoreOp::Read {
                        grain,
                        activation_id,
                    };
                    self.send_to_store(slot, boot_id, op);
                }
                Output::StoreWrite {
                    grain,
                    activation_id,
                    expected,
                    increments,
                } => {
                    let op = StoreOp::Write {
                        grain,
                        activation_id,
                        expected,
                        increments,
                    };
                    self.send_to_store(slot, boot_id, op);
                }
                Output::CallEnded { call, result } => self.end_call(call, result),
                Output::DeclaredDown { member } => self.record_down(slot, member),
                Output::TurnStarted {
                    grain,
                    activation_id,
                } => self.check_turn_start(slot, &grain, activation_id),
                Output::LiveSetChanged { live } => {
                    let live: Vec<String> = live.iter().map(ToString::to_string).collect();
                    let name = self.slots[slot].name.clone();
                    self.log_line(format!("{name} sees live [{}]", live.join(", ")));
                }
                Output::Stopped => {
                    let name = self.slots[slot].name.clone();
                    self.log_line(format!("{name} stopped itself after being declared down"));
                    self.slots[slot].node = None;
                    let at = self.now + self.config.restart_delay;
                    self.push(at, 3, Event::Restart { slot });
                }
            }
        }
    }

    fn record_down(&mut self, observer: usize, member: Incarnation) {
        let running = self.slots.iter().any(|slot| {
            slot.node
                .as_ref()
                .is_some_and(|node| node.id().incarnation() == member)
                && slot.stalled_until.is_none_or(|until| until <= self.now)
        });
        if running {
            self.stats.false_downs += 1;
        }
        self.first_down.entry(member.clone()).or_insert(self.now);
        let now = self.now;
        let serving = self.slots[observer]
            .node
            .as_ref()
            .is_some_and(|node| node.may_start_turns_at(now));
        let observer = self.slots[observer].name.clone();
        if serving {
            self.first_down_by_serving
                .entry(member.clone())
                .or_insert((now, observer.clone()));
        }
        self.log_line(format!("{observer} declared {member} down"));
    }

    /// Records a violation if the process in `slot` starts a turn after another node
    /// declared it down, because that node may run the grain's turns in a new activation.
    ///
    /// Only verdicts of nodes that could start turns themselves when they reached them
    /// count. A node cut off alone declares the others down after its lease ended, and those
    /// verdicts must not stop the rest of the cluster.
    fn check_turn_start(&mut self, slot: usize, grain: &GrainId, activation_id: u64) {
        if !self.config.check_turns_after_down {
            return;
        }
        let Some(node) = &self.slots[slot].node else {
            return;
        };
        let incarnation = node.id().incarnation();
        let Some((declared_at, observer)) = self.first_down_by_serving.get(&incarnation) else {
            return;
        };
        let detail = format!(
            "{incarnation} started a turn of {grain} (activation {activation_id}) at {}, \
             after {observer} declared it down at {declared_at}; its lease: {:?}",
            self.now,
            node.lease_status()
        );
        self.violate(Invariant::TurnAfterDown, detail);
    }

    /// Returns when some node first declared `member` down.
    pub fn first_down(&self, member: &Incarnation) -> Option<Millis> {
        self.first_down.get(member).copied()
    }

    fn send(&mut self, from: usize, to: &str, to_boot: Option<u64>, message: Message) {
        let Some(&target) = self.names.get(to) else {
            return;
        };
        let from_name = self.slots[from].name.clone();
        if matches!(message, Message::Gossip(_)) {
            self.stats.gossip_sent += 1;
        }
        if to_boot.is_some() {
            // Session messages keep their order per link, as a TCP connection does.
            let Some(delay) = self.network.route_session(from, target, &mut self.rng) else {
                return;
            };
            let earliest = self.session_order.get(&(from, target)).copied();
            let at = (self.now + delay).max(earliest.unwrap_or(Millis(0)));
            self.session_order.insert((from, target), at);
            self.stats.messages_sent += 1;
            let event = Event::Deliver {
                to: target,
                boot_id: to_boot,
                from: from_name,
                message,
            };
            return self.push(at, 3, event);
        }
        let delays = self.network.route(from, target, &mut self.rng);
        for delay in delays {
            self.stats.messages_sent += 1;
            let event = Event::Deliver {
                to: target,
                boot_id: None,
                from: from_name.clone(),
                message: message.clone(),
            };
            self.push(self.now + delay, 3, event);
        }
    }

    fn store_delay(&mut self) -> Duration {
        let (min, max) = self.config.store_delay;
        let ms = self
            .rng
            .random_range(min.as_millis() as u64..=max.as_millis() as u64);
        Duration::from_millis(ms)
    }

    fn send_to_store(&mut self, slot: usize, boot_id: u64, op: StoreOp) {
        let at = self.now + self.store_delay();
        self.push(at, 3, Event::AtStore { slot, boot_id, op });
    }

    fn handle_store_op(&mut self, slot: usize, boot_id: u64, op: StoreOp) {
        let reply = match op {
            StoreOp::Read {
                grain,
                activation_id,
            } => StoreReply::Read {
                stored: self.store.read(&grain),
                grain,
                activation_id,
            },
            StoreOp::Write {
                grain,
                activation_id,
                expected,
                increments,
            } => {
                let written = increments.clone();
                let result = self
                    .store
                    .write(&grain, expected, increments)
                    .map_err(|mismatch| mismatch.current);
                self.hash_event(2, slot, &(&grain, activation_id, &result));
                if result.is_ok() {
                    self.check_no_lost_increment(&grain, &written);
                } else {
                    self.log_line(format!(
                        "storage rejected a stale write of {grain} by activation {activation_id}"
                    ));
                }
                StoreReply::Write {
                    grain,
                    activation_id,
                    result,
                }
            }
        };
        let at = self.now + self.store_delay();
        self.push(
            at,
            3,
            Event::StoreReply {
                slot,
                boot_id,
                reply,
            },
        );
    }

    fn start_call(&mut self, grain: GrainId) {
        let running: Vec<usize> = (0..self.slots.len())
            .filter(|&slot| self.slots[slot].node.is_some())
            .collect();
        if running.is_empty() {
            return;
        }
        let slot = running[self.rng.random_range(0..running.len())];
        let call = self.next_call;
        self.next_call += 1;
        let deadline = self.now + self.config.call_deadline;
        let now = self.now;
        let node = self.slots[slot].node.as_mut().expect("running");
        let origin = node.id().incarnation();
        let boot_id = origin.boot_id;
        let excused = self.slots[slot]
            .stalled_until
            .is_some_and(|until| until > now);
        self.calls.insert(
            call,
            CallRecord {
                grain: grain.clone(),
                origin,
                started: now,
                deadline,
                excused,
                ended: None,
            },
        );
        self.hash_event(5, slot, &(call, &grain));
        let node = self.slots[slot].node.as_mut().expect("running");
        let outputs = node.handle_client_call(call, grain, call, deadline, now);
        self.apply_outputs(slot, boot_id, outputs);
    }

    fn end_call(&mut self, call: u64, result: Result<u64, CallFailure>) {
        let now = self.now;
        let Some(record) = self.calls.get_mut(&call) else {
            return;
        };
        if record.ended.is_some() {
            return;
        }
        record.ended = Some((now, result));
        let record = record.clone();
        self.log_line(format!("call {call} to {} ended: {result:?}", record.grain));
        if now > record.deadline && !record.excused {
            let detail = format!(
                "call {call} to {} from {} ended at {now}, after its deadline {}",
                record.grain, record.origin, record.deadline
            );
            self.violate(Invariant::CallDeadline, detail);
        }
        match result {
            Ok(_) => {
                self.stats.calls_acked += 1;
                self.acked
                    .entry(record.grain.clone())
                    .or_default()
                    .insert(call);
                let stored = self.store.read(&record.grain);
                if !stored.increments.contains(&call) {
                    let detail = format!(
                        "call {call} to {} acknowledged but not stored",
                        record.grain
                    );
                    self.violate(Invariant::LostIncrement, detail);
                }
            }
            Err(_) => self.stats.calls_failed += 1,
        }
    }

    fn excuse_calls_from(&mut self, incarnation: &Incarnation) {
        for record in self.calls.values_mut() {
            if record.ended.is_none() && record.origin == *incarnation {
                record.excused = true;
            }
        }
    }

    fn check_no_lost_increment(&mut self, grain: &GrainId, written: &crate::store::Increments) {
        let Some(acked) = self.acked.get(grain) else {
            return;
        };
        let lost: Vec<u64> = acked.difference(written).copied().collect();
        if !lost.is_empty() {
            let detail = format!("a write of {grain} dropped acknowledged increments {lost:?}");
            self.violate(Invariant::LostIncrement, detail);
        }
    }

    /// Checks the single-activation invariant after any change of a catalog, unless the
    /// cluster is turbulent.
    fn maybe_check_activations(&mut self) {
        if self.config.node.membership_only {
            return;
        }
        let fingerprint = self.catalog_fingerprint();
        if fingerprint == self.catalog_fingerprint {
            return;
        }
        self.catalog_fingerprint = fingerprint;
        if !self.turbulent {
            self.check_single_activation();
        }
    }

    fn catalog_fingerprint(&self) -> u64 {
        let mut hasher = Xxh3Default::new();
        for slot in &self.slots {
            if let Some(node) = &slot.node {
                hasher.update(&node.id().boot_id.to_le_bytes());
                hasher.update(&node.activations_started().to_le_bytes());
                hasher.update(&(node.catalog().len() as u64).to_le_bytes());
            }
        }
        hasher.digest()
    }

    /// Records a violation for each grain with activations on more than one running node.
    pub fn check_single_activation(&mut self) {
        let mut hosts: BTreeMap<GrainId, Vec<String>> = BTreeMap::new();
        for slot in &self.slots {
            if let Some(node) = &slot.node {
                for (grain, activation) in node.catalog() {
                    hosts.entry(grain.clone()).or_default().push(format!(
                        "{} (activation {})",
                        node.id().incarnation(),
                        activation.activation_id
                    ));
                }
            }
        }
        for (grain, hosts) in hosts {
            if hosts.len() > 1 {
                let detail = format!("{grain} is active on {}", hosts.join(" and "));
                self.violate(Invariant::SingleActivation, detail);
            }
        }
    }

    /// Records a violation for each call that is still open after its deadline.
    pub fn check_call_deadlines(&mut self) {
        let now = self.now;
        let late: Vec<(u64, CallRecord)> = self
            .calls
            .iter()
            .filter(|(_, record)| {
                record.ended.is_none() && !record.excused && now > record.deadline
            })
            .map(|(call, record)| (*call, record.clone()))
            .collect();
        for (call, record) in late {
            let detail = format!(
                "call {call} to {} from {} is still open at {now}, after its deadline {}",
                record.grain, record.origin, record.deadline
            );
            self.violate(Invariant::CallDeadline, detail);
        }
    }

    /// Records a violation for each acknowledged increment missing from storage.
    pub fn check_acknowledged_increments(&mut self) {
        let mut missing = Vec::new();
        for (grain, acked) in &self.acked {
            let stored = self.store.read(grain);
            let lost: Vec<u64> = acked.difference(&stored.increments).copied().collect();
            if !lost.is_empty() {
                missing.push(format!("{grain} lost acknowledged increments {lost:?}"));
            }
        }
        for detail in missing {
            self.violate(Invariant::LostIncrement, detail);
        }
    }

    /// Returns the incarnations of running processes, sorted.
    pub fn running(&self) -> Vec<Incarnation> {
        let mut running: Vec<Incarnation> = self
            .slots
            .iter()
            .filter_map(|slot| slot.node.as_ref().map(|node| node.id().incarnation()))
            .collect();
        running.sort();
        running
    }

    /// Returns the name and boot id of every running process.
    fn running_names(&self) -> BTreeSet<(&str, u64)> {
        self.slots
            .iter()
            .filter_map(|slot| slot.node.as_ref())
            .map(|node| (node.id().name.as_str(), node.id().boot_id))
            .collect()
    }

    /// Returns whether every running node's view lists exactly the running nodes as live.
    ///
    /// The check starts at the node that disagreed last time, which usually still does, so
    /// that polling a large cluster until it converges stays cheap.
    pub fn views_agree(&self) -> bool {
        // Hashed, because a large cluster looks every member of every view up in it.
        let running: HashSet<(&str, u64)> = self.running_names().into_iter().collect();
        let start = self.disagreeing_slot.get().min(self.slots.len());
        let (before, after) = self.slots.split_at(start);
        let disagreeing = after.iter().chain(before).position(|slot| {
            slot.node.as_ref().is_some_and(|node| {
                let mut live = 0;
                let all_running = node.view().live_ids().all(|member| {
                    live += 1;
                    running.contains(&(member.name.as_str(), member.boot_id))
                });
                !all_running || live != running.len()
            })
        });
        match disagreeing {
            Some(offset) => {
                self.disagreeing_slot
                    .set((start + offset) % self.slots.len());
                false
            }
            None => true,
        }
    }

    /// Measures how far the views are from agreement, and foca's backlogs.
    pub fn view_gaps(&self) -> ViewGaps {
        let running = self.running_names();
        let mut gaps = ViewGaps::default();
        for (index, node) in self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| slot.node.as_ref().map(|node| (index, node)))
        {
            let live: BTreeSet<(&str, u64)> = node
                .view()
                .live_ids()
                .map(|member| (member.name.as_str(), member.boot_id))
                .collect();
            let missing: Vec<&(&str, u64)> = running.difference(&live).collect();
            let older = missing
                .iter()
                .filter(|(name, _)| self.names.get(*name).is_some_and(|slot| *slot < index))
                .count();
            if !missing.is_empty() {
                gaps.lagging_views += 1;
            }
            gaps.missing_members += missing.len();
            gaps.missing_older += older;
            gaps.max_missing = gaps.max_missing.max(missing.len());
            let (updates, broadcasts) = node.gossip_backlogs();
            gaps.update_backlog_total += updates;
            gaps.update_backlog_max = gaps.update_backlog_max.max(updates);
            gaps.broadcast_backlog_total += broadcasts;
            gaps.broadcast_backlog_max = gaps.broadcast_backlog_max.max(broadcasts);
        }
        gaps
    }

    /// Returns the largest member update backlog and the largest node meta backlog of any
    /// running node.
    pub fn largest_backlogs(&self) -> (usize, usize) {
        let nodes = self.slots.iter().filter_map(|slot| slot.node.as_ref());
        nodes.fold((0, 0), |(updates, meta), node| {
            let (node_updates, node_meta) = node.gossip_backlogs();
            (updates.max(node_updates), meta.max(node_meta))
        })
    }

    /// Returns, per running node, the members its view disagrees about, for reports.
    pub fn view_differences(&self) -> Vec<String> {
        let running = self.running();
        let mut differences = Vec::new();
        for node in self.slots.iter().filter_map(|slot| slot.node.as_ref()) {
            let mut live: Vec<Incarnation> = node
                .view()
                .live_ids()
                .map(NodeIdFields::incarnation)
                .collect();
            live.sort();
            let missing: Vec<String> = running
                .iter()
                .filter(|m| !live.contains(m))
                .map(|m| m.to_string())
                .collect();
            let extra: Vec<String> = live
                .iter()
                .filter(|m| !running.contains(m))
                .map(|m| m.to_string())
                .collect();
            if !missing.is_empty() || !extra.is_empty() {
                differences.push(format!(
                    "{} misses [{}] and lists dead [{}]",
                    node.id().incarnation(),
                    missing.join(", "),
                    extra.join(", ")
                ));
            }
        }
        differences
    }

    /// Returns whether every call has ended.
    pub fn calls_open(&self) -> usize {
        self.calls
            .values()
            .filter(|record| record.ended.is_none())
            .count()
    }

    /// Ends calls whose origin process is gone, which no reply can reach any more.
    pub fn drop_orphaned_calls(&mut self) {
        let running = self.running();
        for record in self.calls.values_mut() {
            if record.ended.is_none() && !running.contains(&record.origin) {
                record.excused = true;
            }
        }
    }

    /// Returns the number of Active running nodes.
    pub fn active_nodes(&self) -> usize {
        self.slots
            .iter()
            .filter_map(|slot| slot.node.as_ref())
            .filter(|node| node.state() == NodeState::Active)
            .count()
    }
}
