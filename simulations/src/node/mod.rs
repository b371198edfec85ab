//! One simulated node: foca and the member view, the directory partition and cache, the
//! activations, and the call and sync flows that the real runtime runs as async tasks.
//!
//! The node does no I/O. Each `handle_*` call takes the virtual time and returns
//! [`Output`]s (messages, timers, storage operations and observations) for the world to
//! schedule. The flows in `calls` and `sync` are the real router's and directory glue's
//! loops written as explicit state machines: where the real code awaits a reply, a flow
//! records what it waits for and resumes when the reply or its timeout arrives.

mod activation;
mod calls;
mod lease;
mod membership;
mod preload;
mod sync;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, PostcardCodec, Timer};
use gristmill::clock::Millis;
use gristmill::directory::{DirectoryCache, DirectoryConfig, DirectoryPartition};
use gristmill::grain::GrainId;
use gristmill::membership::{
    DEFAULT_DEAD_RETENTION, Incarnation, LeaseTracker, MemberListPages, MemberListPull, MemberView,
    MetaHandler, MetaJitter, NodeId, NodeMeta, NodeState, SeenMeta, SharedMeta, TransmissionTuner,
};
use gristmill::placement::PlacementConfig;
use gristmill::runtime::MembershipConfig;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::mpsc;

pub use activation::Activation;
pub(crate) use calls::Flow;
use calls::FlowId;
use sync::SyncTask;

use crate::message::{CallFailure, Message};
use crate::store::{Increments, Stored};

type SimFoca = Foca<NodeId, PostcardCodec, StdRng, MetaHandler>;

/// Upper bound of resolve-and-forward rounds per call; the real router's `MAX_ATTEMPTS`.
const MAX_ATTEMPTS: u32 = 16;
/// Pause before resolving again; the real router's `SETTLE_PAUSE`.
const SETTLE_PAUSE: Duration = Duration::from_millis(20);
/// Deadline of directory requests nobody waits for; the real glue's `BACKGROUND_DEADLINE`.
const BACKGROUND_DEADLINE: Duration = Duration::from_secs(2);
/// Period of the idle and drain sweep over activations.
const SWEEP_PERIOD: Duration = Duration::from_secs(1);

/// Settings every simulated node shares.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// SWIM timings, as a real node reads them from its config file.
    pub membership: MembershipConfig,
    /// Directory readiness window and cache size.
    pub directory: DirectoryConfig,
    /// Placement weights.
    pub placement: PlacementConfig,
    /// Idle time after which an activation is deactivated.
    pub idle_after: Duration,
    /// Run only membership: no directory sync, no calls. For large membership runs.
    pub membership_only: bool,
    /// A node that receives a call for a grain it is activating waits for the activation
    /// before it replies `NotHere`, as the real router does. With `false` it replies at once,
    /// and the caller then unregisters the fresh entry, which lets a second activation start.
    /// Default `true`; `false` reproduces that bug for tests of the invariant checks.
    pub await_activation_before_not_here: bool,
    /// Start turns only while the membership lease is fresh and the view is not on the
    /// minority side, as the runtime does. Default `true`. With `false` a node that was cut
    /// off goes on running turns after the others declared it down, for tests of the
    /// invariant checks.
    pub fence_turns_by_lease: bool,
    /// Report every change of the live set as [`Output::LiveSetChanged`], for replay logs.
    pub report_live_changes: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            membership: MembershipConfig::default(),
            directory: DirectoryConfig::default(),
            placement: PlacementConfig::default(),
            idle_after: Duration::from_secs(10),
            membership_only: false,
            await_activation_before_not_here: true,
            fence_turns_by_lease: true,
            report_live_changes: false,
        }
    }
}

/// A node-local timer.
#[derive(Clone, Debug, serde::Serialize)]
pub enum NodeTimer {
    /// A foca timer.
    Foca(Timer<NodeId>),
    /// Retry joining through the seeds.
    Announce,
    /// Re-broadcast the local meta and forget expired members.
    Meta,
    /// Send the member-list request again if its page has not come.
    MemberListRetry,
    /// Pull the member list from a random member.
    MemberListPull,
    /// Deactivate idle activations, and every activation while draining.
    Sweep,
    /// Resume a flow after a pause, or end it at its deadline.
    Wake {
        /// The flow.
        flow: u64,
        /// Whether this is the flow's deadline rather than the end of a pause.
        deadline: bool,
    },
    /// Time out a sync request.
    SyncTimeout {
        /// The request.
        request: u64,
    },
    /// End the running quorum sweep, or start the next one.
    QuorumSweep,
}

/// Something the node asks the world to do, or tells the world.
#[derive(Debug)]
pub enum Output {
    /// Send `message` to the node named `to`. With a boot id it reaches only that incarnation,
    /// like a ractor_cluster session; without, whatever process has the name, like UDP.
    Send {
        /// Receiver's name.
        to: String,
        /// Receiver's boot id for session messages.
        boot_id: Option<u64>,
        /// The message.
        message: Message,
    },
    /// Fire `timer` after `after`.
    Timer {
        /// Delay.
        after: Duration,
        /// The timer.
        timer: NodeTimer,
    },
    /// Read the grain's state for an activation.
    StoreRead {
        /// The grain.
        grain: GrainId,
        /// The reading activation.
        activation_id: u64,
    },
    /// Write the grain's state with compare-and-set.
    StoreWrite {
        /// The grain.
        grain: GrainId,
        /// The writing activation.
        activation_id: u64,
        /// ETag the activation read or last wrote.
        expected: Option<u64>,
        /// The new state.
        increments: Increments,
    },
    /// A client call that started on this node ended.
    CallEnded {
        /// The call.
        call: u64,
        /// `Ok(applied)` if acknowledged.
        result: Result<u64, CallFailure>,
    },
    /// An activation on this node started a turn.
    TurnStarted {
        /// The grain.
        grain: GrainId,
        /// The activation.
        activation_id: u64,
    },
    /// The node stopped itself after the cluster declared it down.
    Stopped,
    /// The node's view of the live members changed to `live`.
    LiveSetChanged {
        /// The live members, sorted.
        live: Vec<Incarnation>,
    },
    /// The node's failure detector declared `member` down.
    DeclaredDown {
        /// The member.
        member: Incarnation,
    },
}

/// One simulated node process.
pub struct SimNode {
    id: NodeId,
    config: NodeConfig,
    foca: SimFoca,
    /// Keeps foca's `max_transmissions` in step with the cluster size, as the agent does.
    transmissions: TransmissionTuner,
    runtime: AccumulatingRuntime<NodeId>,
    accepted_meta: mpsc::UnboundedReceiver<SharedMeta>,
    view: MemberView,
    /// The membership lease, which fences turns.
    lease: LeaseTracker,
    /// Some call waits for its turn because the lease was not fresh.
    turns_held: bool,
    /// The node left the cluster, so it keeps no lease, as a stopped agent.
    left: bool,
    /// When the armed [`NodeTimer::QuorumSweep`] fires; `None` while none is armed.
    sweep_timer_at: Option<Millis>,
    meta: NodeMeta,
    seeds: Vec<String>,
    /// Seeds sent an identity request; replies from others are ignored.
    requested: Vec<String>,
    /// Seed identities the node announced to, the preferred peers of the member-list transfer.
    announced_seeds: Vec<NodeId>,
    /// The member-list transfer this node runs after joining.
    member_pull: MemberListPull,
    /// The snapshot this node pages through for joining nodes.
    member_pages: MemberListPages,
    /// Draws the peers and delays of periodic member-list pulls.
    member_list_rng: StdRng,
    /// The meta broadcast handler's table of the newest meta seen.
    seen_meta: SeenMeta,
    /// When the local meta was last broadcast; `None` before the first broadcast.
    meta_published_at: Option<Millis>,
    /// Stretch of the period until the next re-broadcast, drawn at the last broadcast.
    meta_jitter: MetaJitter,
    /// Draws `meta_jitter`, apart from the other generators so that their draws do not move.
    meta_rng: StdRng,
    /// Live incarnations of the view, sorted, as the runtime's member table keeps them.
    live: Vec<Incarnation>,
    partition: DirectoryPartition,
    cache: DirectoryCache,
    catalog: BTreeMap<GrainId, Activation>,
    /// Flows that wait for the activation lock of a grain; the front one holds it.
    activation_locks: BTreeMap<GrainId, VecDeque<FlowId>>,
    flows: BTreeMap<FlowId, Flow>,
    /// Requests awaiting a reply: request id → waiting flow. Sync requests are in `sync`.
    pending: BTreeMap<u64, FlowId>,
    sync: Option<SyncTask>,
    /// A membership change arrived while a sync ran; sync again afterwards.
    resync: bool,
    /// The node joined and becomes Active when the running sync completes.
    activate_after_sync: bool,
    recent_placements: BTreeMap<Incarnation, u64>,
    placement_rng: StdRng,
    next_activation_id: u64,
    activations_started: u64,
    next_request_id: u64,
    next_flow_id: u64,
    stopping: bool,
    /// Time of the input being handled.
    now: Millis,
    outputs: Vec<Output>,
}

impl SimNode {
    /// Creates a node process with identity `id`, joining through `seeds` (node names).
    ///
    /// `rng_seed` seeds foca's and placement's random choices, so the node is deterministic.
    pub fn new(
        id: NodeId,
        config: NodeConfig,
        seeds: Vec<String>,
        rng_seed: u64,
        started_at: Millis,
    ) -> Self {
        let (accepted, accepted_meta) = mpsc::unbounded_channel();
        let handler = MetaHandler::new(accepted, Default::default());
        let seen_meta = handler.seen_meta();
        let foca_config = gristmill::membership::foca_config(&config.membership);
        let transmissions = TransmissionTuner::new(foca_config.clone());
        let foca = Foca::with_custom_broadcast(
            id.clone(),
            foca_config,
            StdRng::seed_from_u64(rng_seed),
            PostcardCodec,
            handler,
        );
        let meta = NodeMeta {
            version: 0,
            state: NodeState::Joining,
            load: Default::default(),
            started_at_unix_ms: started_at.0,
            store_id: None,
            unreachable: Vec::new(),
        };
        let view = MemberView::new(id.clone(), &meta, DEFAULT_DEAD_RETENTION);
        let partition = DirectoryPartition::new(id.incarnation(), config.directory.clone());
        let cache = DirectoryCache::new(config.directory.cache_capacity);
        let lease = LeaseTracker::new(&config.membership, rng_seed ^ 0x5ee9_0000_1ea5);
        Self {
            lease,
            turns_held: false,
            left: false,
            sweep_timer_at: None,
            live: Vec::new(),
            foca,
            transmissions,
            runtime: AccumulatingRuntime::new(),
            accepted_meta,
            view,
            meta,
            seeds,
            requested: Vec::new(),
            announced_seeds: Vec::new(),
            member_pull: MemberListPull::default(),
            member_pages: MemberListPages::default(),
            member_list_rng: StdRng::seed_from_u64(rng_seed ^ 0x3e3b_e415_7000),
            seen_meta,
            meta_published_at: None,
            meta_jitter: MetaJitter::NONE,
            meta_rng: StdRng::seed_from_u64(rng_seed ^ 0x3e7a_0017_7e50),
            partition,
            cache,
            catalog: BTreeMap::new(),
            activation_locks: BTreeMap::new(),
            flows: BTreeMap::new(),
            pending: BTreeMap::new(),
            sync: None,
            resync: false,
            activate_after_sync: false,
            recent_placements: BTreeMap::new(),
            placement_rng: StdRng::seed_from_u64(rng_seed ^ 0x05ee_d0f9_1ace),
            next_activation_id: 1,
            activations_started: 0,
            next_request_id: 1,
            next_flow_id: 1,
            stopping: false,
            now: started_at,
            outputs: Vec::new(),
            id,
            config,
        }
    }

    /// Returns the node's identity.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// Returns the node's view of the membership.
    pub fn view(&self) -> &MemberView {
        &self.view
    }

    /// Returns the node's lifecycle state, as it broadcasts it.
    pub fn state(&self) -> NodeState {
        self.meta.state
    }

    /// Returns the node's activations.
    pub fn catalog(&self) -> &BTreeMap<GrainId, Activation> {
        &self.catalog
    }

    /// Returns how many activations this process started.
    pub fn activations_started(&self) -> u64 {
        self.activations_started
    }

    /// Gives the directory partition to `hook`, such as a test that injects a fault.
    pub fn with_partition(&mut self, hook: impl FnOnce(&mut DirectoryPartition)) {
        hook(&mut self.partition);
    }

    /// Returns the lengths of foca's member update backlog and of its custom broadcast
    /// (node meta) backlog.
    pub fn gossip_backlogs(&self) -> (usize, usize) {
        (
            self.foca.updates_backlog(),
            self.foca.custom_broadcast_backlog(),
        )
    }

    /// Returns whether the node stopped itself.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Starts the node's timers and its first join attempt.
    pub fn handle_start(&mut self, now: Millis) -> Vec<Output> {
        self.now = now;
        self.timer(Duration::ZERO, NodeTimer::Announce);
        self.timer(Duration::ZERO, NodeTimer::Meta);
        let delay = self.member_list_delay();
        self.timer(delay, NodeTimer::MemberListPull);
        if !self.config.membership_only {
            self.timer(SWEEP_PERIOD, NodeTimer::Sweep);
        }
        if self.seeds.iter().all(|seed| *seed == self.id.name) {
            // The first node has nobody to join: it is the cluster.
            self.become_active(now);
        }
        self.take_outputs()
    }

    /// Handles a message from `from`.
    pub fn handle_message(&mut self, from: &str, message: Message, now: Millis) -> Vec<Output> {
        self.now = now;
        match message {
            Message::Gossip(packet) => self.handle_gossip(&packet, now),
            Message::IdentityRequest => {
                let reply = Message::IdentityReply(self.foca.identity().clone());
                self.send(from, None, reply);
            }
            Message::IdentityReply(seed) => {
                let asked = self.requested.iter().any(|name| name == from);
                if asked && seed.name != self.id.name && !self.view.is_connected() {
                    self.announced_seeds.retain(|known| known.name != seed.name);
                    self.announced_seeds.push(seed.clone());
                    let _ = self.foca.announce(seed, &mut self.runtime);
                    self.drain_runtime(now);
                }
            }
            Message::MembersRequest(body) => self.answer_members_request(from, &body, now),
            Message::MembersPage(body) => self.handle_members_page(from, &body, now),
            Message::LeaseProbe {
                from: prober,
                sweep,
            } => {
                self.answer_lease_probe(from, &prober, sweep, now);
            }
            Message::LeaseProbeAck {
                from: acker,
                sweep,
                declared_down,
            } => self.handle_lease_probe_ack(&acker, sweep, &declared_down, now),
            Message::Request { id, from, body } => self.handle_request(id, from, body, now),
            Message::Reply { id, body } => self.handle_reply(id, body, now),
        }
        self.take_outputs()
    }

    /// Handles a timer of this node.
    pub fn handle_timer(&mut self, timer: NodeTimer, now: Millis) -> Vec<Output> {
        self.now = now;
        match timer {
            NodeTimer::Foca(timer) => {
                let _ = self.foca.handle_timer(timer, &mut self.runtime);
                self.drain_runtime(now);
            }
            NodeTimer::Announce => self.handle_announce_tick(now),
            NodeTimer::Meta => self.handle_meta_tick(now),
            NodeTimer::MemberListRetry => self.handle_member_list_retry(now),
            NodeTimer::MemberListPull => self.handle_member_list_tick(now),
            NodeTimer::Sweep => self.handle_sweep(now),
            NodeTimer::Wake { flow, deadline } => self.handle_wake(FlowId(flow), deadline, now),
            NodeTimer::SyncTimeout { request } => self.handle_sync_timeout(request, now),
            NodeTimer::QuorumSweep => self.handle_sweep_timer(now),
        }
        self.take_outputs()
    }

    /// Handles the storage's reply to a read.
    pub fn handle_store_read(
        &mut self,
        grain: &GrainId,
        activation_id: u64,
        stored: Stored,
        now: Millis,
    ) -> Vec<Output> {
        self.now = now;
        self.handle_state_loaded(grain, activation_id, stored, now);
        self.take_outputs()
    }

    /// Handles the storage's reply to a write.
    pub fn handle_store_write(
        &mut self,
        grain: &GrainId,
        activation_id: u64,
        result: Result<u64, Option<u64>>,
        now: Millis,
    ) -> Vec<Output> {
        self.now = now;
        self.handle_state_written(grain, activation_id, result, now);
        self.take_outputs()
    }

    /// Starts a client call on this node: add `increment` to `grain` before `deadline`.
    pub fn handle_client_call(
        &mut self,
        call: u64,
        grain: GrainId,
        increment: u64,
        deadline: Millis,
        now: Millis,
    ) -> Vec<Output> {
        self.now = now;
        self.start_invoke(call, grain, increment, deadline, now);
        self.take_outputs()
    }

    /// Sets the lifecycle state and broadcasts it, as the supervisor's drain does.
    pub fn handle_set_state(&mut self, state: NodeState, now: Millis) -> Vec<Output> {
        self.now = now;
        self.meta.state = state;
        self.publish_local_meta(now);
        self.take_outputs()
    }

    /// Leaves the cluster: broadcasts `Dead` and tells foca to leave.
    pub fn handle_leave(&mut self, now: Millis) -> Vec<Output> {
        self.now = now;
        self.meta.state = NodeState::Dead;
        self.publish_local_meta(now);
        let _ = self.foca.leave_cluster(&mut self.runtime);
        self.drain_runtime(now);
        self.left = true;
        self.take_outputs()
    }

    /// Ends the handling of an input: starts the turns that the input let past the fence and
    /// returns the outputs.
    fn take_outputs(&mut self) -> Vec<Output> {
        self.resume_held_turns(self.now);
        std::mem::take(&mut self.outputs)
    }

    fn timer(&mut self, after: Duration, timer: NodeTimer) {
        self.outputs.push(Output::Timer { after, timer });
    }

    fn send(&mut self, to: &str, boot_id: Option<u64>, message: Message) {
        self.outputs.push(Output::Send {
            to: to.to_string(),
            boot_id,
            message,
        });
    }

    fn next_request(&mut self) -> u64 {
        let id = self.next_request_id;
        self.next_request_id += 1;
        id
    }
}
