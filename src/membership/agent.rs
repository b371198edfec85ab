//! The tokio task that runs foca over a UDP socket and keeps the member view current.
//!
//! One task owns foca, the socket, the timer queue and the [`MemberView`]. After every call
//! into foca it drains the runtime: datagrams are sent, timers are queued, notifications and
//! accepted meta broadcasts go through the view, and the view's events go out to the node.
//!
//! Joining: foca starts its probe timers only once a member replies to an `Announce`, so a
//! single lost `Announce` would leave the node alone for good. Until foca reports `Active` (and again
//! after `Idle`) the agent therefore retries every `announce_retry_ms`. Each retry resolves
//! the seeds, sends them an identity request (see the `wire` module for why), and announces
//! to each identity that comes back.
//! From the second round on, the agent warns at most once per 10 s that it has not joined,
//! naming the seed addresses that never replied.
//!
//! Member list: when foca reports the node connected, the agent pulls the whole member list
//! from a seed it announced to, page by page (see the `member_list` module). foca's reply to
//! an `Announce` contains only the members that fit one datagram. The agent pulls the list
//! again from a random member about every `member_list_period_ms`, to repair updates that
//! gossip missed.
//!
//! Meta: the local state and load are re-broadcast with a higher version once a random 50 %
//! to 150 % of `meta_period_ms` (longer in large clusters, see the `dissemination` module) has
//! passed since the last broadcast. foca drops a broadcast after a few transmissions, so
//! nodes that join later would otherwise never learn the meta of older members. A state change
//! is broadcast at once and restarts the period. The agent checks every `meta_period_ms`, so a node that just
//! joined a large cluster waits for the period of that cluster, not of the few members it knew
//! when it started. foca's `max_transmissions` follows the cluster size too.
//!
//! Leaving: broadcast the state `Dead`, call `leave_cluster`, send what foca produced, stop.
//! A node that the cluster declared down sends nothing from then on, not even when it leaves.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::future::pending;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec, Timer};
use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior, interval, sleep, sleep_until, timeout};
use tracing::{debug, info, warn};

use super::dissemination::{MetaJitter, TransmissionTuner, member_list_period, meta_period};
use super::handle::{AgentStatus, Command};
use super::lease_input::LeaseInput;
use super::lease_tracker::{LeaseTracker, acks_lease_probe};
use super::member_list::{
    MemberListPages, MemberListPull, MembersPage, MembersRequest, PullStep, apply_page_meta,
    choose_random_peer, pull_delay,
};
use super::quorum_sweep::SweepResult;
use super::suspicion;
use super::wire::{self, Datagram, LeaseProbe, LeaseProbeAck, MAX_DATAGRAM_LEN};
use super::{
    DEFAULT_DEAD_RETENTION, GossipKey, Incarnation, MemberInfo, MemberView, MembershipError,
    MembershipEvent, MembershipHandle, MetaBroadcast, MetaHandler, NodeId, NodeMeta, NodeState,
    Reachability, SeenMeta, SharedMeta, choose_peer,
};
use crate::clock::MonotonicClock;
use crate::repeat_limit::RepeatLimit;
use crate::runtime::MembershipConfig;
use crate::storage::StoreId;

/// Cluster size that foca's `new_lan` preset uses to size retransmissions and suspicion.
/// Foca derives from it the number of times each update is re-sent (4 × log10(n + 1)).
const EXPECTED_CLUSTER_SIZE: NonZeroU32 = NonZeroU32::new(32).expect("32 is not zero");

/// Maximum number of waiting datagrams read before due timers are handled, so that a flood of
/// datagrams cannot hold the timers back for long.
const MAX_WAITING_READS: usize = 256;

/// Period at which the agent wakes at the latest, to read what is waiting in the socket and
/// refresh the time that [`MembershipHandle::stalled_for`] counts from.
const CURRENT_PERIOD: Duration = Duration::from_millis(25);

/// Period at which the agent updates its unreachable report and counts the members' reports
/// (see the `unreachable` module), besides each time the transport reports its sessions.
const REACHABILITY_PERIOD: Duration = Duration::from_millis(250);

/// Capacity of the event channel that [`MembershipHandle::subscribe`] hands out.
const WATCHER_CAPACITY: usize = 1024;

/// Minimum time between two warnings about rejected datagrams; repeats in between are counted
/// and logged at debug level.
const REJECT_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Minimum time between two warnings that the node has seeds but has not joined through them.
const UNJOINED_WARN_INTERVAL: Duration = Duration::from_secs(10);

pub(super) type MembershipFoca = Foca<NodeId, PostcardCodec, StdRng, MetaHandler>;

/// Returns foca's settings for `config`: the LAN preset with the failure-detector timings and
/// the indirect probe count replaced, and the packet size reduced by the framing header and
/// the authentication tag.
pub fn foca_config(config: &MembershipConfig) -> foca::Config {
    let mut foca = foca::Config::new_lan(EXPECTED_CLUSTER_SIZE);
    foca.probe_period = Duration::from_millis(config.probe_period_ms);
    foca.probe_rtt = Duration::from_millis(config.probe_rtt_ms);
    foca.suspect_to_down_after = Duration::from_millis(config.suspect_to_down_ms);
    foca.num_indirect_probes =
        NonZeroUsize::try_from(config.indirect_probes).unwrap_or(NonZeroUsize::MAX);
    foca.max_packet_size = NonZeroUsize::new(wire::MAX_FRAME_LEN - wire::HEADER_LEN)
        .expect("header and tag are smaller");
    foca
}

/// The membership agent: a tokio task that runs SWIM through foca on one UDP socket.
///
/// Start it with [`MembershipAgent::start`] and talk to it through the returned
/// [`MembershipHandle`].
pub struct MembershipAgent {
    foca: MembershipFoca,
    transmissions: TransmissionTuner,
    runtime: AccumulatingRuntime<NodeId>,
    timers: BinaryHeap<Reverse<(Instant, Timer<NodeId>)>>,
    socket: UdpSocket,
    /// Signs sent datagrams and checks received ones; derived from the cluster cookie.
    key: GossipKey,
    config: MembershipConfig,
    seeds: Vec<String>,
    /// Seed addresses sent an identity request; identity replies from others are rejected.
    requested: HashSet<SocketAddr>,
    meta: NodeMeta,
    view: MemberView,
    clock: MonotonicClock,
    accepted_meta: mpsc::UnboundedReceiver<SharedMeta>,
    events: mpsc::UnboundedSender<MembershipEvent>,
    watchers: broadcast::Sender<MembershipEvent>,
    members: watch::Sender<Vec<MemberInfo>>,
    status: Arc<AgentStatus>,
    rejects: RepeatLimit,
    /// Announce rounds since the node was last connected; reset when it joins.
    announce_rounds: u64,
    /// Seed addresses that replied to an identity request.
    seed_replies: HashSet<SocketAddr>,
    /// The last resolution error of each seed that does not resolve, for the unjoined warning.
    unresolved_seeds: BTreeMap<String, String>,
    unjoined_warnings: RepeatLimit,
    /// Set once the cluster declared this node down. The node stops then and sends no more
    /// datagrams, because its member list may still contain down verdicts that it reached while
    /// cut off from the others. Gossiping them after a partition heals would stop those nodes.
    declared_down: bool,
    /// Whether peers replied to this node's requests recently, and which members the failure
    /// detector declared down; see the `lease` module.
    lease: LeaseTracker,
    /// Seed identities the node announced to, the preferred peers of the member-list transfer.
    announced_seeds: Vec<NodeId>,
    /// The member-list transfer this node runs after joining.
    member_pull: MemberListPull,
    /// The snapshot this node pages through for joining nodes.
    member_pages: MemberListPages,
    /// Draws the peers and delays of periodic member-list pulls and the meta re-broadcast
    /// jitter.
    rng: StdRng,
    /// The meta broadcast handler's table of the newest meta seen.
    seen_meta: SeenMeta,
    /// When the local meta was last broadcast.
    meta_published_at: Instant,
    /// Stretch of the period until the next re-broadcast, drawn at the last broadcast.
    meta_jitter: MetaJitter,
    /// Since when each live peer has had no ready cluster session.
    reachability: Reachability,
    /// Cluster node names of the peers with a ready session, as the transport last reported
    /// them; `None` until it first does.
    ready_sessions: Option<HashSet<String>>,
    /// Incarnations this node declared down because members voted them unreachable; an
    /// incarnation is declared once.
    declared_unreachable: HashSet<Incarnation>,
}

impl MembershipAgent {
    /// Starts the agent on `socket` and returns its handle and its event receiver.
    ///
    /// The caller binds the socket (port 0 lets the OS choose) and builds `identity` with the
    /// bound port. `seeds` are `host:port` gossip addresses of nodes to join through. A seed
    /// that resolves to this node is ignored, so every node may get the same list. The first
    /// event is `Joined` for the local node, in state `Joining`.
    ///
    /// Must be called within a tokio runtime, because it spawns the agent task.
    pub fn start(
        identity: NodeId,
        config: MembershipConfig,
        seeds: Vec<String>,
        socket: UdpSocket,
        started_at_unix_ms: u64,
        store_id: Option<StoreId>,
        key: GossipKey,
    ) -> Result<(MembershipHandle, mpsc::UnboundedReceiver<MembershipEvent>), MembershipError> {
        config.validate()?;
        let bound = socket.local_addr().map_err(MembershipError::Socket)?.port();
        if bound != identity.gossip_port {
            return Err(MembershipError::PortMismatch {
                bound,
                advertised: identity.gossip_port,
            });
        }

        let status = Arc::new(AgentStatus::default());
        let (accepted_sender, accepted_meta) = mpsc::unbounded_channel();
        let handler = MetaHandler::new(accepted_sender, status.malformed_broadcasts.clone());
        let seen_meta = handler.seen_meta();
        let rng: StdRng = rand::make_rng();
        let foca_config = foca_config(&config);
        let foca = Foca::with_custom_broadcast(
            identity.clone(),
            foca_config.clone(),
            rng,
            PostcardCodec,
            handler,
        );

        // `run` raises the version to 1 with the first broadcast.
        let meta = NodeMeta {
            version: 0,
            state: NodeState::Joining,
            load: Default::default(),
            started_at_unix_ms,
            store_id,
            unreachable: Vec::new(),
        };
        let view = MemberView::new(identity.clone(), &meta, DEFAULT_DEAD_RETENTION);
        let (events, event_receiver) = mpsc::unbounded_channel();
        let (watchers, _) = broadcast::channel(WATCHER_CAPACITY);
        let (members, members_receiver) = watch::channel(view.members().collect());
        let (commands, command_receiver) = mpsc::unbounded_channel();
        let handle = MembershipHandle::new(
            commands,
            members_receiver,
            &watchers,
            status.clone(),
            identity.incarnation(),
        );

        let lease = LeaseTracker::new(&config, rand::random());
        let reachability = Reachability::new(config.unreachable_after);
        let mut agent = Self {
            foca,
            transmissions: TransmissionTuner::new(foca_config),
            runtime: AccumulatingRuntime::new(),
            timers: BinaryHeap::new(),
            socket,
            key,
            config,
            seeds,
            requested: HashSet::new(),
            meta,
            view,
            clock: MonotonicClock::new(),
            accepted_meta,
            events,
            watchers,
            members,
            status,
            rejects: RepeatLimit::new(REJECT_WARN_INTERVAL),
            announce_rounds: 0,
            seed_replies: HashSet::new(),
            unresolved_seeds: BTreeMap::new(),
            unjoined_warnings: RepeatLimit::new(UNJOINED_WARN_INTERVAL),
            declared_down: false,
            lease,
            announced_seeds: Vec::new(),
            member_pull: MemberListPull::default(),
            member_pages: MemberListPages::default(),
            rng: rand::make_rng(),
            seen_meta,
            meta_published_at: Instant::now(),
            meta_jitter: MetaJitter::NONE,
            reachability,
            ready_sessions: None,
            declared_unreachable: HashSet::new(),
        };
        agent.publish(vec![MembershipEvent::Joined(agent.view.local())]);
        tokio::spawn(agent.run(command_receiver));
        Ok((handle, event_receiver))
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let node = self.foca.identity().to_string();
        info!(node, seeds = ?self.seeds, "membership agent started");
        let mut announce = interval(Duration::from_millis(self.config.announce_retry_ms));
        announce.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let meta_check = Duration::from_millis(self.config.meta_period_ms);
        let mut meta = interval(meta_check);
        meta.set_missed_tick_behavior(MissedTickBehavior::Delay);
        meta.reset();
        let member_list = sleep(self.member_list_delay());
        tokio::pin!(member_list);
        let retry_period = Duration::from_millis(self.config.announce_retry_ms);
        let mut pull_retry = interval(retry_period);
        pull_retry.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut current = interval(CURRENT_PERIOD);
        current.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut reachability = interval(REACHABILITY_PERIOD);
        reachability.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut buffer = vec![0; MAX_DATAGRAM_LEN + 1];
        self.publish_local_meta();

        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            let next_sweep = self.next_sweep_wake();
            tokio::select! {
                received = self.socket.recv_from(&mut buffer) => match received {
                    Ok((len, from)) => self.handle_datagram(&buffer[..len], from).await,
                    Err(error) => debug!(node, %error, "gossip socket receive failed"),
                },
                () = sleep_until_next(next_timer) => self.handle_due_timers(&mut buffer).await,
                // `drain_runtime`, at the end of every iteration, ends and starts the sweeps.
                () = sleep_until_next(next_sweep) => {}
                _ = announce.tick(), if !self.seeds.is_empty() && !self.view.is_connected() => {
                    self.announce_to_seeds().await;
                }
                () = &mut member_list => {
                    self.start_periodic_pull().await;
                    member_list.as_mut().reset(Instant::now() + self.member_list_delay());
                }
                _ = pull_retry.tick(), if self.member_pull.is_running() => {
                    let step = self.member_pull.handle_tick(self.clock.now(), retry_period);
                    self.follow_pull_step(step).await;
                }
                _ = meta.tick() => {
                    if self.meta_published_at.elapsed() >= self.meta_jitter.delay(self.meta_period()) {
                        self.publish_local_meta();
                    }
                    self.forget_expired();
                }
                // Wakes the loop so that the end of the iteration refreshes `current_at_ms`.
                _ = current.tick() => {}
                _ = reachability.tick() => self.check_reachability(),
                command = commands.recv() => match command {
                    Some(Command::SetState(state)) => {
                        self.meta.state = state;
                        self.publish_local_meta();
                    }
                    Some(Command::SetLoad(load)) => {
                        self.meta.load = load;
                        let events = self.view.set_local_meta(&self.meta);
                        self.publish(events);
                    }
                    Some(Command::SetReadySessions(ready)) => self.set_ready_sessions(ready),
                    Some(Command::Leave(done)) => {
                        self.leave(done).await;
                        break;
                    }
                    None => {
                        info!(node, "every membership handle dropped, stopping without leaving");
                        break;
                    }
                },
            }
            self.drain_runtime().await;
            // Only a drained socket shows that nothing the cluster sent is still unread, for
            // example a notice that it declared this node down.
            let drained = self.read_waiting_datagrams(&mut buffer).await < MAX_WAITING_READS;
            if drained {
                self.status.mark_current();
            }
        }
        self.status
            .stopped
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Hands a received datagram to foca or replies to the identity exchange.
    async fn handle_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        let datagram = match self.key.open(datagram) {
            Ok(body) => body,
            Err(error) => {
                self.reject(from, &error);
                return;
            }
        };
        match wire::decode(datagram) {
            Ok(Datagram::Foca(packet)) => {
                let received = self.lease.read_received(packet, self.foca.identity());
                match self.foca.handle_data(packet, &mut self.runtime) {
                    Ok(()) => self.handle_lease_input(received),
                    Err(error) => self.reject(from, &error),
                }
            }
            Ok(Datagram::IdentityRequest { len }) => self.answer_identity_request(len, from).await,
            Ok(Datagram::IdentityReply(seed)) => {
                if !self.requested.contains(&from) {
                    self.reject(from, &"identity reply from an address that was not asked");
                    return;
                }
                self.seed_replies.insert(from);
                if seed.name != self.foca.identity().name && !self.view.is_connected() {
                    debug!(seed = %seed, %from, "announcing to seed");
                    self.announced_seeds.retain(|known| known.name != seed.name);
                    self.announced_seeds.push(seed.clone());
                    if let Err(error) = self.foca.announce(seed, &mut self.runtime) {
                        warn!(%error, "announce to seed failed");
                    }
                }
            }
            Ok(Datagram::MembersRequest { request, body_len }) => {
                self.answer_members_request(&request, body_len, from).await;
            }
            Ok(Datagram::MembersPage(page)) => self.handle_members_page(page, from).await,
            Ok(Datagram::LeaseProbe { probe, len }) => {
                self.answer_lease_probe(probe, len, from).await;
            }
            Ok(Datagram::LeaseProbeAck(ack)) => self.handle_lease_probe_ack(ack),
            Err(error) => self.reject(from, &error),
        }
    }

    /// Counts an ack of this node's quorum sweep, and the members declared down that it hands
    /// on.
    fn handle_lease_probe_ack(&mut self, ack: LeaseProbeAck) {
        let now = self.status.clock.now();
        if !self.lease.awaits_sweep_ack(&ack.from, ack.sweep, now) {
            debug!(node = %self.foca.identity(), peer = %ack.from, sweep = ack.sweep, "ignored a lease probe ack that no sweep waits for");
            return;
        }
        let adopted = self.lease.adopt_declared_down(
            &ack.declared_down,
            &self.view,
            self.clock.now(),
            DEFAULT_DEAD_RETENTION,
        );
        if adopted {
            self.update_minority();
        }
        if let Some(result) = self.lease.handle_sweep_ack(&ack.from, ack.sweep, now) {
            self.finish_sweep(result);
        }
    }

    /// Acks a probe of a peer's quorum sweep, unless the view lists the peer as dead or this
    /// node was declared down. The ack is no longer than the probe.
    async fn answer_lease_probe(&mut self, probe: LeaseProbe, probe_len: usize, from: SocketAddr) {
        if self.declared_down {
            return;
        }
        if !acks_lease_probe(&self.view, &probe.from) {
            debug!(node = %self.foca.identity(), peer = %probe.from, sweep = probe.sweep, "not acking a lease probe from a dead member");
            return;
        }
        let ack = LeaseProbeAck {
            from: self.foca.identity().clone(),
            sweep: probe.sweep,
            declared_down: self.lease.declared_down_ages(self.clock.now()),
        };
        match wire::encode_lease_probe_ack(ack, probe_len) {
            Ok(Some(datagram)) => self.send(&datagram, from).await,
            Ok(None) => self.reject(from, &"lease probe shorter than its ack"),
            Err(error) => warn!(%error, "failed to encode a lease probe ack"),
        }
    }

    /// Ends the running quorum sweep once its reply window has closed, and starts the next
    /// one if it is due, sending its probes.
    async fn drive_sweep(&mut self) {
        let now = self.status.clock.now();
        if let Some(result) = self.lease.handle_sweep_tick(now) {
            self.finish_sweep(result);
        }
        if self.declared_down {
            return;
        }
        let Some(start) = self.lease.maybe_start_sweep(now, &self.view) else {
            return;
        };
        self.status
            .quorum_sweeps
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        debug!(
            node = %self.foca.identity(),
            sweep = start.sweep,
            targets = start.targets.len(),
            "quorum sweep started"
        );
        let probe = LeaseProbe {
            from: self.foca.identity().clone(),
            sweep: start.sweep,
        };
        let datagram = match wire::encode_lease_probe(&probe) {
            Ok(datagram) => datagram,
            Err(error) => {
                warn!(%error, "failed to encode a lease probe");
                return;
            }
        };
        for target in start.targets {
            self.send(&datagram, target.gossip_addr()).await;
        }
    }

    /// Logs the result of a quorum sweep and decides the minority side again.
    fn finish_sweep(&mut self, result: SweepResult) {
        debug!(
            node = %self.foca.identity(),
            sweep = result.sweep,
            replies = result.replies,
            missing = result.missing,
            lost_quorum = result.lost_quorum(),
            "quorum sweep ended"
        );
        self.update_minority();
    }

    /// Returns when the running quorum sweep ends or the next one is due; `None` once the
    /// node was declared down, because it sweeps no more.
    fn next_sweep_wake(&self) -> Option<Instant> {
        if self.declared_down {
            return None;
        }
        let wake = self.lease.next_sweep_wake()?;
        let delay = wake.saturating_since(self.status.clock.now());
        Some(Instant::now() + delay)
    }

    /// Sends the page of the member list that `request` names, at most `body_len` bytes long.
    async fn answer_members_request(
        &mut self,
        request: &MembersRequest,
        body_len: usize,
        from: SocketAddr,
    ) {
        if self.declared_down {
            return;
        }
        let now = self.clock.now();
        if self.member_pages.is_stale(now) {
            self.member_pages
                .refresh(self.foca.iter_members(), &self.view, now);
        }
        let page = self.member_pages.page(request, body_len);
        match wire::encode_members_page(&page) {
            Ok(datagram) => self.send(&datagram, from).await,
            Err(error) => warn!(%error, "failed to encode a member list page"),
        }
    }

    /// Applies a page of the member list that the running transfer waits for, and requests
    /// the next one.
    async fn handle_members_page(&mut self, page: MembersPage, from: SocketAddr) {
        let now = self.clock.now();
        let Some(step) =
            self.member_pull
                .handle_page(&page, |peer| peer.gossip_addr() == from, now)
        else {
            debug!(%from, after = ?page.after, "ignored a member list page that no transfer waits for");
            return;
        };
        // The rest of the cluster has these members already, so they are not gossiped again.
        let members = page.entries.iter().map(|entry| entry.member.clone());
        if let Err(error) = self.foca.apply_many(members, false, &mut self.runtime) {
            warn!(%error, "foca failed to apply a member list page");
        }
        self.drain_runtime().await;
        let millis = self.clock.now();
        let events = apply_page_meta(page.entries, &mut self.view, &self.seen_meta, millis);
        self.publish(events);
        self.follow_pull_step(step).await;
    }

    /// Starts the member-list transfer from a seed the node announced to, or from another
    /// member if no such seed is a member.
    async fn start_member_pull(&mut self) {
        let Some(peer) = choose_peer(self.foca.iter_members(), &self.announced_seeds) else {
            return;
        };
        let step = self.member_pull.start(peer, self.clock.now());
        self.follow_pull_step(step).await;
    }

    /// Starts a member-list transfer from a random member, unless the node has not joined or a
    /// transfer is running.
    async fn start_periodic_pull(&mut self) {
        if !self.view.is_connected() || self.member_pull.is_running() || self.declared_down {
            return;
        }
        let Some(peer) = choose_random_peer(self.foca.iter_members(), &mut self.rng) else {
            return;
        };
        let step = self.member_pull.start(peer, self.clock.now());
        self.follow_pull_step(step).await;
    }

    /// Returns the wait until the next periodic member-list pull.
    fn member_list_delay(&mut self) -> Duration {
        let base = Duration::from_millis(self.config.member_list_period_ms);
        let period = member_list_period(base, self.foca.num_members() + 1);
        pull_delay(period, &mut self.rng)
    }

    /// Sends the request of a member-list transfer step, or logs how the transfer ended.
    async fn follow_pull_step(&mut self, step: PullStep) {
        let node = self.foca.identity().to_string();
        match step {
            PullStep::Send { peer, request } if !self.declared_down => {
                match wire::encode_members_request(&request) {
                    Ok(datagram) => self.send(&datagram, peer.gossip_addr()).await,
                    Err(error) => warn!(node, %error, "failed to encode a member list request"),
                }
            }
            PullStep::Done { pages, members } => {
                debug!(node, pages, members, "received the member list");
            }
            PullStep::GaveUp { peer, pages } => warn!(
                node,
                %peer,
                pages,
                "member list transfer gave up: the peer did not answer; gossip fills the view"
            ),
            PullStep::Send { .. } | PullStep::Wait => {}
        }
    }

    async fn answer_identity_request(&mut self, request_len: usize, from: SocketAddr) {
        let reply = match wire::encode_identity_reply(self.foca.identity()) {
            Ok(reply) => reply,
            Err(error) => {
                warn!(%error, "failed to encode the identity reply");
                return;
            }
        };
        if reply.len() > request_len {
            self.reject(from, &"identity request shorter than the reply");
            return;
        }
        self.send(&reply, from).await;
    }

    /// Resolves the seeds and sends each address an identity request.
    async fn announce_to_seeds(&mut self) {
        self.announce_rounds += 1;
        if self.announce_rounds > 1 {
            self.warn_unjoined();
        }
        let request = wire::encode_identity_request();
        let resolve_timeout = Duration::from_millis(self.config.announce_retry_ms);
        for seed in self.seeds.clone() {
            // NOTE: resolving inline pauses gossip for up to `resolve_timeout` per seed while
            // DNS is slow; acceptable for a node that has not joined yet.
            let addresses = match timeout(resolve_timeout, tokio::net::lookup_host(&seed)).await {
                Ok(Ok(addresses)) => {
                    self.unresolved_seeds.remove(&seed);
                    addresses
                }
                Ok(Err(error)) => {
                    debug!(seed, %error, "failed to resolve seed");
                    self.unresolved_seeds
                        .insert(seed.clone(), error.to_string());
                    continue;
                }
                Err(_) => {
                    debug!(seed, "resolving seed timed out");
                    let error = format!("resolving timed out after {resolve_timeout:?}");
                    self.unresolved_seeds.insert(seed.clone(), error);
                    continue;
                }
            };
            for address in addresses {
                self.requested.insert(address);
                self.send(&request, address).await;
            }
        }
    }

    /// Warns, at most once per [`UNJOINED_WARN_INTERVAL`], that the node has not joined
    /// through its seeds, naming the seed addresses that never replied.
    fn warn_unjoined(&mut self) {
        let Some(suppressed) = self.unjoined_warnings.record(Instant::now().into_std()) else {
            return;
        };
        let mut unanswered: Vec<String> = self
            .requested
            .iter()
            .filter(|address| !self.seed_replies.contains(address))
            .map(ToString::to_string)
            .collect();
        unanswered.sort();
        warn!(
            node = %self.foca.identity(),
            seeds = ?self.seeds,
            ?unanswered,
            unresolved = ?self.unresolved_seeds,
            rounds = self.announce_rounds,
            suppressed,
            "cannot join the cluster through the seeds; retrying. A seed that does not answer is down, unreachable or uses another cookie (GRISTMILL_COOKIE)"
        );
    }

    /// Handles the timers that are due, after the datagrams that are already waiting.
    ///
    /// Timers fall due late when the process was paused (SIGSTOP, a stalled host). Acks and
    /// refutations that peers sent meanwhile then wait in the socket. Handled before them, a
    /// probe timer would suspect a member that replied in time, and a suspicion timer would
    /// declare down a member that had refuted the suspicion.
    async fn handle_due_timers(&mut self, buffer: &mut [u8]) {
        let now = Instant::now();
        let Some(Reverse((first_due, _))) = self.timers.peek() else {
            return;
        };
        let late = now.saturating_duration_since(*first_due);
        let read = self.read_waiting_datagrams(buffer).await;
        if late >= Duration::from_millis(self.config.probe_rtt_ms) {
            debug!(
                node = %self.foca.identity(),
                late_ms = late.as_millis(),
                datagrams_read_first = read,
                "timers fell due late; the process may have been paused"
            );
        }
        while let Some(Reverse((at, _))) = self.timers.peek()
            && *at <= now
        {
            let Reverse((_, timer)) = self.timers.pop().expect("peeked above");
            if let Err(error) = suspicion::handle_timer(&mut self.foca, timer, &mut self.runtime) {
                warn!(%error, "foca failed to handle a timer");
            }
        }
    }

    /// Returns the period from one broadcast of the local meta to the next re-broadcast, which
    /// grows with the cluster (see [`meta_period`]).
    fn meta_period(&self) -> Duration {
        meta_period(
            Duration::from_millis(self.config.meta_period_ms),
            self.foca.num_members() + 1,
        )
    }

    /// Handles the datagrams already waiting in the socket, at most [`MAX_WAITING_READS`],
    /// without waiting for more; returns how many it read.
    async fn read_waiting_datagrams(&mut self, buffer: &mut [u8]) -> usize {
        let mut read = 0;
        while read < MAX_WAITING_READS {
            match self.socket.try_recv_from(buffer) {
                Ok((len, from)) => {
                    read += 1;
                    self.handle_datagram(&buffer[..len], from).await;
                    // Per datagram, as in the main loop: the view applies notifications before
                    // broadcasts, so a leave notice must not overtake the broadcast before it.
                    self.drain_runtime().await;
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    debug!(%error, "gossip socket receive failed");
                    break;
                }
            }
        }
        read
    }

    /// Raises the meta version, applies the meta to the local entry and broadcasts it now.
    fn publish_local_meta(&mut self) {
        self.meta_published_at = Instant::now();
        self.meta_jitter = MetaJitter::draw(&mut self.rng);
        self.meta.version += 1;
        let events = self.view.set_local_meta(&self.meta);
        self.publish(events);

        let item = MetaBroadcast {
            incarnation: self.foca.identity().incarnation(),
            meta: self.meta.clone(),
        };
        let bytes = match item.encode() {
            Ok(bytes) => bytes,
            Err(error) => {
                warn!(%error, "failed to encode the local node meta");
                return;
            }
        };
        match self.foca.add_broadcast(&bytes) {
            Ok(true) => {}
            Ok(false) => warn!(
                version = self.meta.version,
                "local meta rejected as stale: another process may use this node's name"
            ),
            Err(error) => warn!(%error, "failed to add the local meta broadcast"),
        }
        if let Err(error) = self.foca.broadcast(&mut self.runtime) {
            warn!(%error, "failed to send the local meta broadcast");
        }
    }

    fn forget_expired(&mut self) {
        let now = self.clock.now();
        self.member_pages.forget_if_stale(now);
        if self.view.handle_tick(now) > 0 {
            self.refresh_members();
        }
        if self.lease.forget_expired(now, DEFAULT_DEAD_RETENTION) {
            self.update_minority();
        }
    }

    /// Tracks the members that the failure detector declares down, for the minority check.
    fn track_declared_down(&mut self, events: &[MembershipEvent]) {
        if self.lease.handle_events(events, self.clock.now()) {
            self.update_minority();
        }
    }

    /// Publishes whether the view is on the minority side (see `lease::is_minority`).
    fn update_minority(&mut self) {
        let live_members = self.view.live().count();
        let Some(minority) = self.lease.update_minority(live_members) else {
            return;
        };
        self.status
            .minority
            .store(minority, std::sync::atomic::Ordering::Release);
        let suspected = self.lease.suspected_count();
        let declared_down = self.lease.declared_down_count();
        let sweep = self.lease.last_sweep();
        let sweep_replies = sweep.map(|result| result.replies);
        let sweep_missing = sweep.map(|result| result.missing);
        let node = self.foca.identity();
        if minority {
            self.status
                .minority_fences
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            warn!(
                %node,
                live_members,
                suspected,
                declared_down,
                ?sweep_replies,
                ?sweep_missing,
                "on the minority side: members suspected or declared down outnumber the others, or too few acked the last quorum sweep; turns wait"
            );
        } else {
            info!(
                %node,
                live_members,
                suspected,
                declared_down,
                ?sweep_replies,
                ?sweep_missing,
                "no longer on the minority side; turns resume"
            );
        }
    }

    async fn leave(&mut self, done: oneshot::Sender<()>) {
        info!(node = %self.foca.identity(), "leaving the cluster");
        self.meta.state = NodeState::Dead;
        self.publish_local_meta();
        if let Err(error) = self.foca.leave_cluster(&mut self.runtime) {
            warn!(%error, "foca failed to leave the cluster");
        }
        self.drain_runtime().await;
        self.status
            .stopped
            .store(true, std::sync::atomic::Ordering::Release);
        // The caller may have stopped waiting; the agent stops either way.
        let _ = done.send(());
    }

    /// Applies foca's notifications to the view, sends what foca produced unless this node was
    /// declared down, queues its timers and applies the accepted broadcasts. Runs after every
    /// call into foca.
    async fn drain_runtime(&mut self) {
        let now = Instant::now();
        let millis = self.clock.at(now.into_std());
        let was_connected = self.view.is_connected();
        let mut events = Vec::new();
        while let Some(notification) = self.runtime.to_notify() {
            log_notification(self.foca.identity(), self.meta.state, &notification);
            events.extend(self.view.handle_notification(notification, millis));
        }
        if events.contains(&MembershipEvent::SelfDeclaredDown) {
            self.declared_down = true;
        }

        let mut muted = 0;
        while let Some((destination, packet)) = self.runtime.to_send() {
            if self.declared_down {
                muted += 1;
                continue;
            }
            self.lease
                .handle_packet_sent(&packet, self.status.clock.now());
            self.send(&wire::encode_foca(&packet), destination.gossip_addr())
                .await;
        }
        if muted > 0 {
            debug!(datagrams = muted, "declared down: dropped outgoing gossip");
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timers.push(Reverse((now + after, timer)));
        }

        while let Ok(meta) = self.accepted_meta.try_recv() {
            events.extend(self.view.handle_meta(meta, millis));
        }
        if let Some(config) = self.transmissions.retune(self.foca.num_members() + 1) {
            debug!(
                max_transmissions = config.max_transmissions.get(),
                "adapting gossip transmissions to the cluster size"
            );
            if let Err(error) = self.foca.set_config(config) {
                warn!(%error, "foca rejected the adapted transmissions");
            }
        }
        self.status.joined.store(
            self.view.is_connected(),
            std::sync::atomic::Ordering::Relaxed,
        );
        if self.view.is_connected() {
            self.announce_rounds = 0;
        }
        // Counted before `publish` applies the verdicts, so that a member just declared down
        // is not counted as suspected as well.
        let suspicions_changed = self
            .lease
            .count_suspected(self.foca.iter_membership_state(), &self.view);
        self.publish(events);
        if suspicions_changed {
            self.update_minority();
        }
        self.drive_sweep().await;
        if !was_connected && self.view.is_connected() && !self.declared_down {
            self.start_member_pull().await;
        }
    }

    /// Applies what a received packet, which foca accepted, means for the lease, and
    /// publishes the lease's end to the handles.
    fn handle_lease_input(&mut self, received: LeaseInput) {
        let change = self
            .lease
            .handle_received(received, self.status.clock.now());
        if change.lost_to_suspicion {
            info!(node = %self.foca.identity(), "a peer suspects this node; turns wait until a peer confirms it again");
        }
        if change.expiry_changed {
            let expires_at = self.lease.expires_at().map_or(0, |at| at.0);
            self.status
                .lease_expires_at_ms
                .store(expires_at, std::sync::atomic::Ordering::Release);
        }
    }

    fn publish(&mut self, events: Vec<MembershipEvent>) {
        if events.is_empty() {
            return;
        }
        self.track_declared_down(&events);
        if events.contains(&MembershipEvent::SelfDeclaredDown) {
            self.status
                .declared_down
                .store(true, std::sync::atomic::Ordering::Release);
        }
        for event in events {
            // Receivers that went away are not the agent's concern.
            let _ = self.watchers.send(event.clone());
            let _ = self.events.send(event);
        }
        self.refresh_members();
    }

    fn refresh_members(&mut self) {
        self.members.send_replace(self.view.members().collect());
    }

    async fn send(&mut self, datagram: &[u8], to: SocketAddr) {
        let sealed = self.key.seal(datagram);
        if let Err(error) = self.socket.send_to(&sealed, to).await {
            debug!(%to, %error, "gossip send failed");
        }
    }

    fn reject(&mut self, from: SocketAddr, error: &dyn std::fmt::Display) {
        let total = self
            .status
            .rejected_datagrams
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        match self.rejects.record(Instant::now().into_std()) {
            Some(suppressed) => warn!(%from, %error, total, suppressed, "rejected gossip datagram"),
            None => debug!(%from, %error, total, "rejected gossip datagram"),
        }
    }
}

/// Waits until `at`, or forever when no timer is queued.
async fn sleep_until_next(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => pending().await,
    }
}

/// Logs a foca notification. Departures of other members are logged by the node, which
/// tells from their last broadcast whether they left or failed.
fn log_notification(
    node: &NodeId,
    local_state: NodeState,
    notification: &OwnedNotification<NodeId>,
) {
    match notification {
        OwnedNotification::MemberUp(member) => info!(%node, %member, "member up"),
        OwnedNotification::MemberDown(member) => debug!(%node, %member, "member down"),
        OwnedNotification::Rename(old, new) => info!(%node, %old, %new, "member renamed"),
        OwnedNotification::Active => info!(%node, "joined the cluster"),
        // Normal after the last peer left; a failure was already logged as one.
        OwnedNotification::Idle => info!(%node, "no active members left"),
        // foca reports its own `leave_cluster` as `Defunct` too.
        OwnedNotification::Defunct if local_state == NodeState::Dead => {
            info!(%node, "left the cluster")
        }
        OwnedNotification::Defunct => warn!(%node, "this node was declared down"),
        OwnedNotification::Rejoin(renewed) => {
            warn!(%node, %renewed, "declared down; the runtime stops this node instead of rejoining under the renewed identity")
        }
        #[allow(unreachable_patterns)] // foca's `unstable-notifications` feature adds kinds.
        other => debug!(%node, ?other, "foca notification"),
    }
}

#[cfg(test)]
mod tests;
mod unreachable;
