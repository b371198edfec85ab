//! The node: starts every part in order, owns the shared state, and stops them again.
//!
//! Start-up order:
//! 1. Validate the settings and the grain types; a wrong value fails here, naming it.
//! 2. Bind the gossip, cluster, gRPC and metrics sockets (port 0 lets the OS choose), so the
//!    identity that gossip carries has the real ports.
//! 3. Start membership (joining through the seeds), the ractor_cluster transport with this
//!    node's gateway, the gRPC API (health NOT_SERVING) and the metrics endpoint.
//! 4. Once the node has joined and connected to its peers, it becomes Active and healthy.
//!
//! Shutdown on SIGTERM is the reverse, with the grains deactivated before the node leaves; the
//! steps are at the top of the `leave` module.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, watch};

use super::catalog::Catalog;
use super::config::{ConfigError, NodeConfig};
use crate::clock::MonotonicClock;
use crate::directory::{DirectoryCache, DirectoryConfig, DirectoryPartition};
use crate::grain::{GrainRegistry, RegistryError};
use crate::membership::{
    GossipKey, Incarnation, MemberInfo, MembershipAgent, MembershipError, MembershipEvent,
    MembershipHandle, NodeId, NodeIdFields, NodeState, boot_id_at,
};
use crate::metrics::NodeMetrics;
use crate::placement::PlacementConfig;
use crate::transport::{Transport, TransportError};

/// Interval at which a turn that waits for the membership agent to catch up checks again.
const MEMBERSHIP_POLL: Duration = Duration::from_millis(5);

/// Failure to start a node. Nothing keeps running after it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is invalid; the message names it.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A grain type registration is invalid.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A socket could not be bound.
    #[error("cannot bind the {what} socket on {addr}: {source}")]
    Bind {
        /// Name of the socket: gossip, cluster, gRPC or metrics.
        what: &'static str,
        /// The requested address.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Membership failed to start.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// The transport failed to start.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The grain state database could not be opened; the message names the database and the fix.
    #[error("cannot open grain storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
}

/// A running node. Cheap to clone; every clone refers to the same node.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
}

/// Members as the node last learned them from membership, with lookups the call path needs.
#[derive(Default)]
pub(crate) struct Members {
    pub by_incarnation: HashMap<Incarnation, MemberInfo>,
    /// Live incarnations (not Dead), sorted: the directory partitions over them.
    pub live: Vec<Incarnation>,
    /// Members left out of `by_incarnation` because they use another database, Dead ones
    /// included, sorted.
    pub foreign: Vec<Incarnation>,
}

pub(crate) struct NodeInner {
    pub id: NodeId,
    pub config: NodeConfig,
    pub registry: GrainRegistry,
    pub catalog: Catalog,
    pub directory: Mutex<DirectoryPartition>,
    pub cache: Mutex<DirectoryCache>,
    pub placement: PlacementConfig,
    pub recent_placements: Mutex<HashMap<Incarnation, u64>>,
    pub rng: Mutex<StdRng>,
    pub clock: MonotonicClock,
    pub members: RwLock<Members>,
    pub member_events: broadcast::Sender<MembershipEvent>,
    pub membership: MembershipHandle,
    pub transport: OnceLock<Transport>,
    pub metrics: NodeMetrics,
    pub next_activation_id: AtomicU64,
    pub state: watch::Sender<NodeState>,
    pub stopping: AtomicBool,
    pub stopped: watch::Sender<bool>,
    pub grpc_addr: SocketAddr,
    pub metrics_addr: OnceLock<SocketAddr>,
    pub health: OnceLock<tonic_health::server::HealthReporter>,
    pub storage: Arc<dyn crate::storage::StorageProvider>,
    pub audit: Option<Mutex<std::fs::File>>,
    pub left_gracefully: AtomicBool,
    /// Held shared by every registration-and-start of an activation, and exclusively by the
    /// directory sync while it snapshots the catalog, so no activation registered under the
    /// previous membership view escapes re-assertion.
    pub activation_gate: tokio::sync::RwLock<()>,
    /// Circuit breakers towards peers and the balancing of spread stateless worker calls.
    pub forwarding: super::forwarding::Forwarding,
    /// Requests from peers that are being served; leaving waits for them.
    pub inbound: super::inbound::InboundRequests,
    /// Members that announced they are leaving, and so host no activations.
    pub departed: Mutex<std::collections::HashSet<Incarnation>>,
    /// Member that uses another database, set when the node stops before becoming Active.
    pub store_mismatch: OnceLock<crate::membership::StoreMismatch>,
}

async fn bind_udp(what: &'static str, addr: SocketAddr) -> Result<UdpSocket, StartError> {
    UdpSocket::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

async fn bind_tcp(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

fn open_turn_audit(path: Option<&std::path::Path>) -> Option<Mutex<std::fs::File>> {
    let path = path?;
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(file) => Some(Mutex::new(file)),
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "cannot open the turn audit file");
            None
        }
    }
}

/// Returns the directory settings for a node with `config`.
///
/// After a membership change, a new partition owner waits until every member confirmed it
/// re-registered its activations, or until the hand-off grace ends. Members detect a failure
/// at different times, up to about one suspicion timeout apart plus a few probe periods, so a
/// grace shorter than that would let the owner reply "not found" for a grain whose host has
/// not yet re-registered it, and a second activation would start.
fn directory_config(config: &NodeConfig) -> DirectoryConfig {
    let membership = &config.membership;
    let skew_ms = 2 * membership.suspect_to_down_ms + 4 * membership.probe_period_ms;
    let grace = Duration::from_millis(skew_ms)
        .clamp(Duration::from_secs(2), DirectoryConfig::MAX_HANDOFF_GRACE);
    DirectoryConfig {
        handoff_grace: grace,
        ..DirectoryConfig::default()
    }
}

/// Returns the wall-clock time in milliseconds since the Unix epoch.
pub(crate) fn unix_now_ms() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
}

impl Node {
    /// Starts a node with `config`, hosting the grain types in `grains`.
    ///
    /// Returns once every socket is bound and the node is joining; it becomes Active (and its
    /// gRPC health SERVING) when it has joined the cluster through its seeds.
    pub async fn start(config: NodeConfig, grains: GrainRegistry) -> Result<Node, StartError> {
        config.validate()?;
        grains.validate()?;
        config.validate_grain_types(&grains)?;
        let storage = crate::storage::open(&config.storage).await?;
        let bind = |port: u16| SocketAddr::new(config.bind_ip, port);
        let gossip = bind_udp("gossip", bind(config.gossip_port)).await?;
        let cluster = bind_tcp("cluster", bind(config.cluster_port)).await?;
        let grpc = bind_tcp("gRPC", bind(config.grpc_port)).await?;
        let metrics_listener = match config.metrics_port {
            Some(port) => Some(bind_tcp("metrics", bind(port)).await?),
            None => None,
        };
        let local_port = |addr: std::io::Result<SocketAddr>| addr.map(|a| a.port()).unwrap_or(0);
        let boot_id = boot_id_at(unix_now_ms(), rand::random::<u16>());
        let id = NodeId::new(NodeIdFields {
            name: config.node_name.as_str().into(),
            boot_id,
            bump: 0,
            ip: config.advertised_ip(),
            gossip_port: local_port(gossip.local_addr()),
            cluster_port: local_port(cluster.local_addr()),
            grpc_port: local_port(grpc.local_addr()),
        });
        let grpc_addr = grpc.local_addr().map_err(|source| StartError::Bind {
            what: "gRPC",
            addr: bind(config.grpc_port),
            source,
        })?;
        let started_at_unix_ms = unix_now_ms();
        let (membership, events) = MembershipAgent::start(
            id.clone(),
            config.membership.clone(),
            config.seeds.clone(),
            gossip,
            started_at_unix_ms,
            Some(storage.store_id()),
            GossipKey::from_cookie(&config.cookie),
        )?;

        let directory_config = directory_config(&config);
        let cache = DirectoryCache::new(directory_config.cache_capacity);
        let directory = DirectoryPartition::new(id.incarnation(), directory_config);
        let (member_events, _) = broadcast::channel(1024);
        let metrics = NodeMetrics::new(&id.name);
        let forwarding =
            super::forwarding::Forwarding::new(config.forwarding.clone(), metrics.registry());
        let inner = Arc::new(NodeInner {
            id: id.clone(),
            registry: grains,
            catalog: Catalog::default(),
            directory: Mutex::new(directory),
            cache: Mutex::new(cache),
            placement: PlacementConfig::default(),
            recent_placements: Mutex::default(),
            rng: Mutex::new(StdRng::seed_from_u64(boot_id)),
            clock: MonotonicClock::new(),
            members: RwLock::default(),
            member_events,
            membership,
            transport: OnceLock::new(),
            metrics,
            next_activation_id: AtomicU64::new(1),
            state: watch::channel(NodeState::Joining).0,
            stopping: AtomicBool::new(false),
            stopped: watch::channel(false).0,

            grpc_addr,
            metrics_addr: OnceLock::new(),
            health: OnceLock::new(),
            storage,
            audit: open_turn_audit(config.turn_audit_path.as_deref()),
            left_gracefully: AtomicBool::new(false),
            activation_gate: tokio::sync::RwLock::new(()),
            forwarding,
            inbound: super::inbound::InboundRequests::default(),
            departed: Mutex::default(),
            store_mismatch: OnceLock::new(),
            config,
        });
        let node = Node { inner };
        let handler: Arc<dyn crate::transport::InboundHandler> = Arc::new(node.clone());
        let transport = Transport::start(
            &id,
            node.inner.config.cookie.clone(),
            node.inner.config.max_frame_bytes,
            node.inner.config.handshake_limits(),
            Duration::from_millis(node.inner.config.cluster_ack_timeout_ms),
            cluster,
            handler,
        )
        .await?;
        let _ = node.inner.transport.set(transport);

        node.refresh_members();
        tokio::spawn(super::events::run_event_loop(node.clone(), events));
        tokio::spawn(super::upkeep::run_load_loop(node.clone()));
        tokio::spawn(super::upkeep::run_wall_clock_refresh(node.clone()));
        tokio::spawn(super::upkeep::run_idle_sweeper(node.clone()));
        tokio::spawn(super::upkeep::run_join(node.clone()));
        tokio::spawn(super::upkeep::run_ready_sessions(node.clone()));
        tokio::spawn(super::reminders::run_reminder_loop(node.clone()));
        tokio::spawn(super::upkeep::run_directory_repair(node.clone()));
        crate::migration::rebalancer::spawn(node.clone());
        crate::scaling::supervisor::spawn(node.clone());
        crate::api::serve(node.clone(), grpc);
        if let Some(listener) = metrics_listener {
            if let Ok(addr) = listener.local_addr() {
                let _ = node.inner.metrics_addr.set(addr);
            }
            crate::metrics::serve(node.clone(), listener);
        }
        tracing::info!(node = %id, gossip = %id.gossip_addr(), cluster = %id.cluster_addr(), grpc = %grpc_addr, "node started");
        Ok(node)
    }

    /// Returns the node's identity.
    pub fn id(&self) -> &NodeId {
        &self.inner.id
    }

    /// Returns the store id of the node's database.
    pub fn store_id(&self) -> crate::storage::StoreId {
        self.inner.storage.store_id()
    }

    /// Returns the address the gRPC API listens on.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.inner.grpc_addr
    }

    /// Returns the address of the `/metrics` endpoint, if it is enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.inner.metrics_addr.get().copied()
    }

    /// Returns the node's lifecycle state.
    pub fn state(&self) -> NodeState {
        *self.inner.state.borrow()
    }

    /// Returns a receiver of every lifecycle state change of this node.
    pub fn watch_state(&self) -> watch::Receiver<NodeState> {
        self.inner.state.subscribe()
    }

    /// Returns the members in this node's membership view, itself included, except members
    /// that use another database.
    pub fn members(&self) -> Vec<MemberInfo> {
        let members = self.inner.members.read().expect("members lock poisoned");
        let mut list: Vec<MemberInfo> = members.by_incarnation.values().cloned().collect();
        list.sort_by(|a, b| {
            (a.state == NodeState::Dead, &a.id.name).cmp(&(b.state == NodeState::Dead, &b.id.name))
        });
        list
    }

    /// Returns a receiver of membership events, for streaming them to clients.
    pub fn subscribe_members(&self) -> broadcast::Receiver<MembershipEvent> {
        self.inner.member_events.subscribe()
    }

    /// Returns the registered grain types.
    pub fn registry(&self) -> &GrainRegistry {
        &self.inner.registry
    }

    /// Returns the node's metrics.
    pub fn metrics(&self) -> &NodeMetrics {
        &self.inner.metrics
    }

    /// Counts a turn served on this node, for the load gossip and the turn histogram.
    pub(crate) fn record_turn(&self, elapsed: Duration) {
        self.inner.metrics.turn_duration.observe_duration(elapsed);
    }

    /// Returns how many turns this node has served: the count of the turn histogram, which
    /// the load gossip reads instead of a counter of its own that every turn would raise.
    pub(crate) fn turns_served(&self) -> u64 {
        self.inner.metrics.turn_duration.sample_count()
    }

    /// Returns the activations hosted on this node.
    pub(crate) fn activation_handles(&self) -> Vec<super::catalog::ActivationHandle> {
        self.inner.catalog.all_handles()
    }

    /// Returns whether turns are audited: `turn_audit_path` names a file.
    pub(crate) fn audits_turns(&self) -> bool {
        self.inner.audit.is_some()
    }

    /// Appends one turn to the turn audit, if `turn_audit_path` names a file.
    pub(crate) fn audit_turn(
        &self,
        shared: &crate::grain::activation::ActivationShared,
        started: SystemTime,
        ended: SystemTime,
    ) {
        let Some(audit) = &self.inner.audit else {
            return;
        };
        let nanos = |at: SystemTime| at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        let line = format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            shared.grain,
            self.inner.id.name,
            self.inner.id.boot_id,
            shared.activation_id,
            shared.epoch,
            nanos(started),
            nanos(ended),
        );
        let mut file = audit.lock().expect("audit lock poisoned");
        if let Err(error) = std::io::Write::write_all(&mut *file, line.as_bytes()) {
            tracing::warn!(%error, "cannot write the turn audit");
        }
    }

    /// Returns the default call deadline.
    pub fn call_timeout(&self) -> Duration {
        self.inner.config.call_timeout()
    }

    /// Returns a reference to the grain `key` of type `G`.
    pub fn grain<G: crate::grain::Grain>(
        &self,
        key: impl Into<String>,
    ) -> crate::grain::GrainRef<G> {
        crate::grain::GrainRef::new(crate::grain::GrainId::new(G::TYPE_NAME, key), self.clone())
    }

    /// Resolves when the node has stopped, after [`Node::drain_and_leave`] or because the
    /// cluster declared it down.
    pub async fn stopped(&self) {
        let mut stopped = self.inner.stopped.subscribe();
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }

    pub(crate) fn storage(&self) -> &dyn crate::storage::StorageProvider {
        self.inner.storage.as_ref()
    }

    pub(crate) fn transport(&self) -> &Transport {
        self.inner
            .transport
            .get()
            .expect("the transport starts before the node is shared")
    }

    pub(crate) fn set_state(&self, state: NodeState) {
        let changed = self.inner.state.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
        if changed {
            tracing::info!(node = %self.inner.id.name, %state, "node state changed");
            match self.inner.membership.set_state(state) {
                Ok(()) => {}
                // The agent broadcast `Dead` itself as it left, then stopped.
                Err(MembershipError::Stopped) if state == NodeState::Dead => {}
                Err(error) => {
                    tracing::warn!(node = %self.inner.id.name, %error, "cannot gossip the new state");
                }
            }
            crate::api::set_health(self, state == NodeState::Active);
        }
    }

    /// Returns whether the cluster declared this node down, in which case its activations are
    /// void and must run no further turn. True from the moment the membership agent learns it,
    /// before [`Self::stop_declared_down`] runs.
    pub fn is_declared_down(&self) -> bool {
        self.inner.membership.is_declared_down()
    }

    /// Returns whether, at `now`, the membership agent lags behind what the cluster sent by
    /// more than half the suspicion timeout (see [`Self::await_membership_current`]).
    fn membership_lags_at(&self, now: Instant) -> bool {
        let limit = Duration::from_millis(self.inner.config.membership.suspect_to_down_ms / 2);
        self.inner.membership.stalled_at(now) > limit
    }

    /// Returns whether activations may start turns now: the membership agent has caught up
    /// with what the cluster sent (see [`Self::membership_lags_at`]) and the membership lease is
    /// fresh (see `MembershipHandle::lease_is_fresh`).
    pub(crate) fn may_start_turns(&self) -> bool {
        self.may_start_turns_at(Instant::now())
    }

    fn may_start_turns_at(&self, now: Instant) -> bool {
        !self.membership_lags_at(now) && self.inner.membership.lease_is_fresh_at(now)
    }

    /// Returns whether a turn may start at `now` without waiting: `Some(true)` if it may,
    /// `Some(false)` if the cluster declared this node down, and `None` if it must wait for
    /// the fence of [`Self::await_turn_fence`].
    pub(crate) fn may_start_turn_at(&self, now: Instant) -> Option<bool> {
        if self.is_declared_down() {
            Some(false)
        } else if self.may_start_turns_at(now) {
            Some(true)
        } else {
            None
        }
    }

    /// Waits, at most until `deadline`, until activations may start turns. Returns the time
    /// at which they may (`now`, the caller's reading of the clock, when they may at once),
    /// or `None` if the deadline passed first. It returns `None` at once when the cluster
    /// declared this node down.
    ///
    /// Two fences hold turns back:
    /// - The membership agent lags by more than half the suspicion timeout. A node can be
    ///   declared down only if it failed to refute a suspicion for a whole suspicion timeout,
    ///   so a shorter lag means no notice of that can be waiting unread, unless datagrams were
    ///   lost. After a pause (SIGSTOP, a stalled host) the lag is long, and turns wait until
    ///   the agent has read what was waiting.
    /// - The membership lease has ended: no peer replied to this node's requests for a
    ///   suspicion timeout, or a peer suspects it. The others may be about to declare it down
    ///   and reactivate its grains, so turns wait until a peer confirms it again or it learns
    ///   that it was declared down.
    pub(crate) async fn await_turn_fence(
        &self,
        deadline: Instant,
        now: Instant,
    ) -> Option<Instant> {
        if self.is_declared_down() {
            return None;
        }
        if self.may_start_turns_at(now) {
            return Some(now);
        }
        let started = now;
        loop {
            tokio::time::sleep(MEMBERSHIP_POLL).await;
            let now = Instant::now();
            if self.is_declared_down() {
                return None;
            }
            if self.may_start_turns_at(now) {
                let waited_ms = now.saturating_duration_since(started).as_millis() as u64;
                tracing::debug!(node = %self.inner.id.name, waited_ms, "turn waited for the membership fence");
                return Some(now);
            }
            if now >= deadline {
                tracing::debug!(node = %self.inner.id.name, lags = self.membership_lags_at(now), "turn deadline passed behind the membership fence");
                return None;
            }
        }
    }

    /// Stops at once because the cluster declared this node down: its activations are void.
    pub(crate) async fn stop_declared_down(&self) {
        if self.inner.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::error!(node = %self.inner.id.name, "cluster declared this node down; dropping every activation");
        super::upkeep::deactivate_all(self, crate::grain::activation::StopReason::DeclaredDown)
            .await;
        self.leave_and_stop().await;
    }

    /// Leaves the cluster and stops, before becoming Active, because `mismatch` names a member
    /// that uses another database. [`Self::store_mismatch`] returns it afterwards.
    pub(crate) async fn stop_store_mismatch(&self, mismatch: crate::membership::StoreMismatch) {
        if self.inner.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::error!(
            node = %self.inner.id.name,
            store_id = %mismatch.local_store_id,
            member = %mismatch.member,
            member_store_id = %mismatch.member_store_id,
            "a member of the cluster uses another database; leaving without becoming Active"
        );
        let _ = self.inner.store_mismatch.set(mismatch);
        self.leave_and_stop().await;
    }

    /// Returns why the node stopped before becoming Active, if a member of the cluster uses
    /// another database.
    pub fn store_mismatch(&self) -> Option<&crate::membership::StoreMismatch> {
        self.inner.store_mismatch.get()
    }

    /// Announces the leave, closes the transport and marks the node Dead and stopped.
    async fn leave_and_stop(&self) {
        if let Err(error) = self.inner.membership.leave().await {
            tracing::warn!(node = %self.inner.id.name, %error, "leave announcement failed");
        }
        self.transport().stop();
        self.set_state(NodeState::Dead);
        // `send` would drop the value while no receiver waits in `Node::stopped`, such as when the
        // node stops during `Node::start`; `send_replace` always stores it.
        self.inner.stopped.send_replace(true);
    }

    /// Copies the membership view into the node's member table, leaving out members that use
    /// another database, so nothing is placed on them or routed to them.
    /// Returns the live members that share this node's database, sorted, as the membership
    /// agent lists them now. The node's own copy (`members.live`) catches up only when the event
    /// loop has applied the agent's events.
    pub(crate) fn current_live_set(&self) -> Vec<Incarnation> {
        let store_id = self.inner.storage.store_id();
        let members: Vec<MemberInfo> = self
            .inner
            .membership
            .members()
            .into_iter()
            .filter(|member| crate::membership::shares_store(store_id, member))
            .collect();
        live_incarnations(&members)
    }

    pub(crate) fn refresh_members(&self) {
        let store_id = self.inner.storage.store_id();
        let (snapshot, mut foreign): (Vec<_>, Vec<MemberInfo>) = self
            .inner
            .membership
            .members()
            .into_iter()
            .partition(|member| crate::membership::shares_store(store_id, member));
        // Dead members stay in the list too, so the warning names a node that left before its
        // store id arrived (a rejected node announces it with its leave) once, not per refresh.
        foreign.sort_by_key(MemberInfo::incarnation);
        let mut members = self.inner.members.write().expect("members lock poisoned");
        for member in &foreign {
            let Some(member_store_id) = member.store_id else {
                continue;
            };
            if members
                .foreign
                .binary_search(&member.incarnation())
                .is_err()
            {
                tracing::warn!(
                    node = %self.inner.id.name,
                    member = %member.id,
                    %store_id,
                    %member_store_id,
                    "ignoring a member that uses another database; every node of a cluster must use the same database (the same --sqlite-path or --postgres-url)"
                );
            }
        }
        members.foreign = foreign.iter().map(MemberInfo::incarnation).collect();
        members.live = live_incarnations(&snapshot);
        members.by_incarnation = snapshot.into_iter().map(|m| (m.incarnation(), m)).collect();
        let names: std::collections::HashSet<&str> = members
            .by_incarnation
            .values()
            .filter(|member| member.is_live())
            .map(|member| member.id.name.as_str())
            .collect();
        self.inner.forwarding.retain(|name| names.contains(name));
        self.forget_departures(|incarnation| members.by_incarnation.contains_key(incarnation));
    }
}

/// Returns the incarnations of the live members among `members`, sorted.
fn live_incarnations(members: &[MemberInfo]) -> Vec<Incarnation> {
    let mut live: Vec<Incarnation> = members
        .iter()
        .filter(|member| member.is_live())
        .map(MemberInfo::incarnation)
        .collect();
    live.sort();
    live
}
