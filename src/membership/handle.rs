//! The handle that the rest of the node uses to talk to a running membership agent.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::{Incarnation, LeaseStatus, MemberInfo, MembershipEvent, NodeLoad, NodeState};
use crate::clock::{Millis, MonotonicClock};
use crate::runtime::ConfigError;

/// A failure to start or to reach the membership agent.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// A membership setting is invalid. Nothing started; fix the setting and start again.
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// The socket and the identity disagree on the gossip port. Nothing started; build the
    /// identity from the socket's local address.
    #[error(
        "gossip socket is bound to port {bound}, but the identity advertises port {advertised}"
    )]
    PortMismatch {
        /// Port the socket is bound to.
        bound: u16,
        /// Gossip port in the identity.
        advertised: u16,
    },
    /// Reading the socket's local address failed. Nothing started.
    #[error("failed to read the gossip socket's local address")]
    Socket(#[source] std::io::Error),
    /// The agent has stopped (after `leave` or after every handle was dropped), so the
    /// request had no effect. Retrying does not help; start a new agent.
    #[error("membership agent has stopped")]
    Stopped,
}

/// A request from a handle to the agent task.
#[derive(Debug)]
pub(super) enum Command {
    SetState(NodeState),
    SetLoad(NodeLoad),
    SetReadySessions(HashSet<String>),
    Leave(oneshot::Sender<()>),
}

/// Counters and flags that the agent updates and handles read.
#[derive(Debug, Default)]
pub(super) struct AgentStatus {
    pub(super) rejected_datagrams: AtomicU64,
    pub(super) malformed_broadcasts: Arc<AtomicU64>,
    pub(super) joined: AtomicBool,
    /// Set, before the `SelfDeclaredDown` event goes out, once the agent learns that the
    /// cluster declared this node down; never cleared.
    pub(super) declared_down: AtomicBool,
    /// Time base of `current_at_ms`.
    pub(super) clock: MonotonicClock,
    /// Time on `clock` at which the agent last had no datagram waiting, after applying what
    /// it read; see [`MembershipHandle::stalled_for`].
    pub(super) current_at_ms: AtomicU64,
    /// Set when the agent stops; a stopped agent reports no stall.
    pub(super) stopped: AtomicBool,
    /// Time on `clock` at which the membership lease ends; zero while no peer has confirmed
    /// this node (see the `lease` module).
    pub(super) lease_expires_at_ms: AtomicU64,
    /// Set while the members that the view lists as suspected or declared down outnumber the
    /// live members not suspected (see `lease::is_minority`), or while the last quorum sweep
    /// lost the quorum.
    pub(super) minority: AtomicBool,
    /// Quorum sweeps started.
    pub(super) quorum_sweeps: AtomicU64,
    /// Times the node turned to the minority side, which fences its turns.
    pub(super) minority_fences: AtomicU64,
    /// Members this node declared down because members voted them unreachable.
    pub(super) unreachable_declared_down: AtomicU64,
}

impl AgentStatus {
    /// Records that the agent has applied every datagram that had arrived by now.
    pub(super) fn mark_current(&self) {
        self.current_at_ms
            .store(self.clock.now().0, Ordering::Release);
    }
}

/// Handle to a running membership agent; cheap to clone.
///
/// The agent runs until [`Self::leave`] completes or every handle is dropped. Dropping every
/// handle stops it without leaving, as a crash would: peers declare the node down after the
/// suspicion timeout.
#[derive(Clone, Debug)]
pub struct MembershipHandle {
    commands: mpsc::UnboundedSender<Command>,
    members: watch::Receiver<Vec<MemberInfo>>,
    watchers: broadcast::WeakSender<MembershipEvent>,
    status: Arc<AgentStatus>,
    incarnation: Incarnation,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<MembershipHandle>();
};

impl MembershipHandle {
    pub(super) fn new(
        commands: mpsc::UnboundedSender<Command>,
        members: watch::Receiver<Vec<MemberInfo>>,
        watchers: &broadcast::Sender<MembershipEvent>,
        status: Arc<AgentStatus>,
        incarnation: Incarnation,
    ) -> Self {
        Self {
            commands,
            members,
            watchers: watchers.downgrade(),
            status,
            incarnation,
        }
    }

    /// Returns the incarnation of the local node.
    pub fn incarnation(&self) -> &Incarnation {
        &self.incarnation
    }

    /// Sets the local lifecycle state and broadcasts it at once.
    pub fn set_state(&self, state: NodeState) -> Result<(), MembershipError> {
        self.send(Command::SetState(state))
    }

    /// Sets the local load figures; they go out with the next periodic broadcast.
    pub fn set_load(&self, load: NodeLoad) -> Result<(), MembershipError> {
        self.send(Command::SetLoad(load))
    }

    /// Reports the peers to which a ready cluster session exists, by ractor_cluster node name
    /// (`NodeId::cluster_node_name`). The agent reports live peers missing from the set for
    /// `membership.unreachable_after` as unreachable; until the first call it reports none.
    pub fn set_ready_sessions(&self, ready: HashSet<String>) -> Result<(), MembershipError> {
        self.send(Command::SetReadySessions(ready))
    }

    /// Leaves the cluster gracefully and stops the agent.
    ///
    /// Broadcasts the local state as `Dead`, has foca gossip its own departure, and resolves
    /// once those datagrams are sent. Peers then report the node as left, not as failed.
    pub async fn leave(&self) -> Result<(), MembershipError> {
        let (done, sent) = oneshot::channel();
        self.send(Command::Leave(done))?;
        sent.await.map_err(|_| MembershipError::Stopped)
    }

    /// Returns every member the local view lists, dead ones and the local node included.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.members.borrow().clone()
    }

    /// Returns a receiver that contains the member list and is notified when it changes.
    pub fn watch_members(&self) -> watch::Receiver<Vec<MemberInfo>> {
        self.members.clone()
    }

    /// Subscribes to the events from now on, for streams such as WatchMembership. A
    /// subscriber that falls behind by more than the channel capacity receives `Lagged`.
    pub fn subscribe(&self) -> Result<broadcast::Receiver<MembershipEvent>, MembershipError> {
        self.watchers
            .upgrade()
            .map(|sender| sender.subscribe())
            .ok_or(MembershipError::Stopped)
    }

    /// Returns whether foca reports the node as joined: known by at least one active member.
    pub fn is_joined(&self) -> bool {
        self.status.joined.load(Ordering::Relaxed)
    }

    /// Returns whether the cluster declared this node down. The agent sets it as soon as it
    /// learns that, before the node reacts to the `SelfDeclaredDown` event. Activations check
    /// it before each turn, because other nodes may already run the grains of such a node.
    pub fn is_declared_down(&self) -> bool {
        self.status.declared_down.load(Ordering::Acquire)
    }

    /// Returns how long ago the agent last had every received datagram applied, or zero if it
    /// has no peers or has stopped.
    ///
    /// The agent refreshes this at least every few tens of milliseconds while it runs. A long
    /// value means the process was paused or starved: the cluster may have declared this node
    /// down meanwhile, and the news may still wait in the socket. Work that must not run on a
    /// node declared down waits until this is short again, then checks
    /// [`Self::is_declared_down`].
    pub fn stalled_for(&self) -> Duration {
        self.stalled_at(Instant::now())
    }

    /// [`Self::stalled_for`] as of `now`, for a caller that has read the clock already.
    pub fn stalled_at(&self, now: Instant) -> Duration {
        let idle = !self.status.joined.load(Ordering::Relaxed);
        if idle || self.status.stopped.load(Ordering::Acquire) {
            return Duration::ZERO;
        }
        let current_at = Millis(self.status.current_at_ms.load(Ordering::Acquire));
        self.status.clock.at(now).saturating_since(current_at)
    }

    /// Returns whether this node's membership lease is fresh: a peer replied to a request of
    /// this node recently enough that no member can have declared it down yet (see the
    /// `lease` module). Activations start turns only while it is.
    ///
    /// It is never fresh while the node is on the minority side of a partition, by its view's
    /// counts or by its last quorum sweep. Otherwise a
    /// node with no live peer in its view (alone, or before it joined) and a stopped agent
    /// hold no lease, and this returns true for them.
    pub fn lease_is_fresh(&self) -> bool {
        self.lease_is_fresh_at(Instant::now())
    }

    /// [`Self::lease_is_fresh`] as of `now`, for a caller that has read the clock already.
    pub fn lease_is_fresh_at(&self, now: Instant) -> bool {
        let expires_at = self.status.lease_expires_at_ms.load(Ordering::Acquire);
        let status = LeaseStatus {
            stopped: self.status.stopped.load(Ordering::Acquire),
            minority: self.status.minority.load(Ordering::Acquire),
            joined: self.status.joined.load(Ordering::Relaxed),
            expires_at: (expires_at > 0).then_some(Millis(expires_at)),
        };
        status.is_fresh_at(self.status.clock.at(now))
    }

    /// Returns how many received datagrams were rejected as malformed or invalid.
    pub fn rejected_datagrams(&self) -> u64 {
        self.status.rejected_datagrams.load(Ordering::Relaxed)
    }

    /// Returns how many quorum sweeps the agent started (see the `lease` module).
    pub fn quorum_sweeps(&self) -> u64 {
        self.status.quorum_sweeps.load(Ordering::Relaxed)
    }

    /// Returns how many times the node turned to the minority side, by its view's counts or
    /// by a quorum sweep, which fences turns until it is no longer there.
    pub fn minority_fences(&self) -> u64 {
        self.status.minority_fences.load(Ordering::Relaxed)
    }

    /// Returns how many members this node declared down because members voted them
    /// unreachable.
    pub fn unreachable_declared_down(&self) -> u64 {
        self.status
            .unreachable_declared_down
            .load(Ordering::Relaxed)
    }

    /// Returns how many received meta broadcast items failed to decode.
    pub fn malformed_broadcasts(&self) -> u64 {
        self.status.malformed_broadcasts.load(Ordering::Relaxed)
    }

    fn send(&self, command: Command) -> Result<(), MembershipError> {
        self.commands
            .send(command)
            .map_err(|_| MembershipError::Stopped)
    }
}
