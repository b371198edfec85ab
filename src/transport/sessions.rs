//! The ractor_cluster node server, its connections, and calls to peers' gateways.
//!
//! foca decides who is in the cluster; ractor_cluster only carries messages. So:
//! 1. The node binds its own TCP listener and hands each accepted connection to the node
//!    server, which lets the port be known before the identity is gossiped, lets the node
//!    count connections that never authenticate (random bytes, a wrong cookie, an oversized
//!    frame), and lets it close connections that do not authenticate in time.
//! 2. When membership reports a peer, exactly one side of each pair dials: the node whose
//!    cluster name sorts higher. It retries while the peer is live and has no session.
//! 3. When membership reports a peer gone, its sessions are stopped, which removes its gateway
//!    from the process group at once.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{ActorRef, MessagingErr, rpc::CallResult};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{
    BoxRead, BoxWrite, ClusterBidiStream, NodeEventSubscription, NodeServer, NodeServerMessage,
};
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};

use super::batch::BatchItem;
use super::envelope::{CallReply, DirectoryEnvelope, DirectoryReplyEnvelope, Envelope};
use super::gateway::{Gateway, GatewayMsg, InboundHandler, gateway_group};
use super::handshakes::{
    Ended, HandshakeLimits, HandshakeTable, RejectReason, RejectedConnections,
};
use super::listener::{SharedHandshakes, TIMEOUT_STOP_REASON};
use super::outbox::{Outboxes, remote_gateway};
use super::session_table::{SessionEnd, SessionTable};
use super::wire::Wire;
use crate::membership::NodeId;
use crate::repeat_limit::RepeatLimit;

/// Failure to start the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The cluster TCP port could not be bound.
    #[error("cannot bind the cluster port {addr}: {source}")]
    Bind {
        /// The address that was requested.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// An actor of the transport failed to start.
    #[error("cannot start the transport actor {actor}: {detail}")]
    Spawn {
        /// Which actor.
        actor: &'static str,
        /// ractor's error.
        detail: String,
    },
}

/// A one-way message that [`Transport::cast`] did not send, with the reason.
#[derive(Debug)]
pub struct NotSent {
    /// The reason the message was not sent.
    pub error: PeerError,
    /// The message, as it was given.
    pub envelope: Envelope,
}

/// Failure of a request to a peer's gateway. No reply arrived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// No session to the peer is ready, so nothing was sent.
    #[error("no ready session to {0}")]
    NotConnected(String),
    /// The request was sent, and no reply arrived before the deadline.
    #[error("no reply from {0} before the deadline")]
    TimedOut(String),
    /// The session ended or the reply was dropped after the request was queued. The peer may
    /// have run the request, so its outcome is unknown.
    #[error("request to {0} was lost ({1}) and may have run, so a retry may apply it twice")]
    Lost(String, String),
}

impl PeerError {
    /// Returns whether the request was never handed to the peer.
    pub fn before_send(&self) -> bool {
        matches!(self, PeerError::NotConnected(_))
    }

    /// Returns the same error naming the peer `name`.
    fn naming(self, name: &str) -> PeerError {
        match self {
            PeerError::NotConnected(_) => PeerError::NotConnected(name.to_string()),
            PeerError::TimedOut(_) => PeerError::TimedOut(name.to_string()),
            PeerError::Lost(_, detail) => PeerError::Lost(name.to_string(), detail),
        }
    }
}

/// Counters of the transport, read by the metrics glue.
#[derive(Debug, Default)]
pub struct TransportCounters {
    /// Connections closed before they authenticated, by reason.
    pub rejected_connections: Arc<RejectedConnections>,
    /// Sessions that reached the ready state.
    pub sessions_ready: AtomicU64,
    /// Sessions that ended.
    pub sessions_closed: AtomicU64,
}

/// Capacity of the read buffer of a cluster connection, in bytes.
pub(super) const READ_BUFFER_BYTES: usize = 64 * 1024;

/// A dialed TCP connection handed to ractor_cluster as an external stream.
struct TcpBidi(TcpStream);

impl ClusterBidiStream for TcpBidi {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let (read, write) = self.0.into_split();
        // ractor_cluster reads each frame's 8-byte length and then its body with separate
        // reads; the buffer serves both, and the frames that follow, from one system call.
        let read = BufReader::with_capacity(READ_BUFFER_BYTES, read);
        (Box::new(read), Box::new(write))
    }

    fn peer_label(&self) -> Option<String> {
        self.0.peer_addr().ok().map(|a| a.to_string())
    }
}

/// Minimum time between two warnings about rejected inbound connections; the ones in between
/// are counted in `gristmill_rejected_frames_total` and logged at debug level.
const REJECT_WARN_INTERVAL: Duration = Duration::from_secs(10);

struct Subscription {
    table: Arc<Mutex<SessionTable>>,
    handshakes: SharedHandshakes,
    counters: Arc<TransportCounters>,
    rejects: Mutex<RepeatLimit>,
    outboxes: Arc<Outboxes>,
}

fn peer_cluster_name(session: &NodeServerSessionInformation) -> Option<String> {
    let full = &session.peer_name.as_ref()?.name;
    Some(full.split('@').next().unwrap_or(full).to_string())
}

impl NodeEventSubscription for Subscription {
    fn node_session_opened(&self, session: NodeServerSessionInformation) {
        tracing::trace!(peer = %session.peer_addr, "cluster session opened");
        self.table
            .lock()
            .expect("session table lock poisoned")
            .opened(
                session.node_id,
                !session.is_server,
                session.peer_addr.clone(),
            );
        let overdue = self
            .handshakes
            .lock()
            .expect("handshake table lock poisoned")
            .opened(&session.peer_addr, session.node_id, session.actor.clone());
        if let Some(actor) = overdue {
            tracing::debug!(peer = %session.peer_addr, "closing cluster connection: no authentication before the handshake deadline");
            actor.stop(Some(TIMEOUT_STOP_REASON.into()));
        }
    }

    fn node_session_authenticated(&self, session: NodeServerSessionInformation) {
        self.handshakes
            .lock()
            .expect("handshake table lock poisoned")
            .authenticated(session.node_id);
        let peer_name = session.peer_name.map(|name| name.name).unwrap_or_default();
        self.table
            .lock()
            .expect("session table lock poisoned")
            .authenticated(session.node_id, peer_name);
    }

    fn node_session_ready(&self, session: NodeServerSessionInformation) {
        self.counters.sessions_ready.fetch_add(1, Ordering::Relaxed);
        if let Some(name) = peer_cluster_name(&session) {
            tracing::debug!(peer = %name, "cluster session ready");
            self.table
                .lock()
                .expect("session table lock poisoned")
                .ready
                .insert(name);
        }
    }

    fn node_session_disconnected(&self, session: NodeServerSessionInformation) {
        self.counters
            .sessions_closed
            .fetch_add(1, Ordering::Relaxed);
        let ended = self
            .handshakes
            .lock()
            .expect("handshake table lock poisoned")
            .ended(session.node_id);
        let claimed_name = session.peer_name.as_ref().map(|name| name.name.as_str());
        let mut table = self.table.lock().expect("session table lock poisoned");
        match table.ended(session.node_id, claimed_name) {
            SessionEnd::Authenticated => {}
            SessionEnd::Duplicate => {
                // ractor_cluster keeps one session per pair of nodes and closes the others.
                tracing::debug!(peer = %session.peer_addr, "duplicate cluster connection closed before authenticating");
                return;
            }
            SessionEnd::Unauthenticated => {
                let reason = match ended {
                    Ended::TimedOut => RejectReason::HandshakeTimeout,
                    Ended::BeforeDeadline | Ended::Untracked => RejectReason::HandshakeFailed,
                };
                let total = self.counters.rejected_connections.record(reason);
                let logged = self
                    .rejects
                    .lock()
                    .expect("reject limit lock poisoned")
                    .record(Instant::now());
                let peer = &session.peer_addr;
                let reason = reason.label();
                match logged {
                    Some(suppressed) => {
                        tracing::warn!(%peer, reason, total, suppressed, "cluster connection closed before authenticating: a wrong cookie, junk bytes, or a peer that closed it during the handshake")
                    }
                    None => {
                        tracing::debug!(%peer, reason, total, "cluster connection closed before authenticating")
                    }
                }
                return;
            }
        }
        if let Some(name) = peer_cluster_name(&session) {
            tracing::debug!(peer = %name, "cluster session closed");
            table.ready.remove(&name);
            drop(table);
            // The replies of calls sent over this session cannot arrive any more.
            self.outboxes.fail_peer(&name, || {
                PeerError::Lost(name.clone(), "the cluster session ended".into())
            });
        }
    }
}

/// The node's end of ractor_cluster: the node server, the gateway and the dialing of peers.
pub struct Transport {
    server: ActorRef<NodeServerMessage>,
    local_cluster_name: String,
    table: Arc<Mutex<SessionTable>>,
    counters: Arc<TransportCounters>,
    /// Peers (by cluster node name) this node should stay connected to, with their address.
    wanted: Arc<Mutex<HashMap<String, SocketAddr>>>,
    gateway: ActorRef<GatewayMsg>,
    /// Queues that coalesce calls and one-way messages to each peer.
    outboxes: Arc<Outboxes>,
    /// Set by [`Transport::stop`]; peer-down handling after it has no sessions left to stop.
    stopped: AtomicBool,
    /// Time sent data may stay unacknowledged before the kernel closes a connection.
    ack_timeout: Duration,
}

impl Transport {
    /// Binds the cluster listener on `addr` (port 0 lets the OS choose) and returns it, so the
    /// caller can put the port into the node's identity before starting the transport.
    pub async fn bind(addr: SocketAddr) -> Result<TcpListener, TransportError> {
        TcpListener::bind(addr)
            .await
            .map_err(|source| TransportError::Bind { addr, source })
    }

    /// Starts the node server and the gateway for `identity`, accepting peers on `listener`
    /// and closing inbound connections that exceed `handshake`. Every cluster connection
    /// closes when its sent data stays unacknowledged for `ack_timeout`.
    pub async fn start(
        identity: &NodeId,
        cookie: String,
        max_frame_bytes: u64,
        handshake: HandshakeLimits,
        ack_timeout: Duration,
        listener: TcpListener,
        handler: Arc<dyn InboundHandler>,
    ) -> Result<Transport, TransportError> {
        let local_cluster_name = identity.cluster_node_name().to_string();
        // ractor_cluster always binds a listener of its own; keep it on an unused loopback
        // port, because peers connect through `listener` instead.
        let server = NodeServer::new(
            0,
            cookie,
            local_cluster_name.clone(),
            identity.ip.to_string(),
            None,
            None,
        )
        .with_listen_addr(std::net::IpAddr::from([127, 0, 0, 1]))
        .with_max_inbound_frame_size(max_frame_bytes);
        let (server, _) =
            ractor::Actor::spawn(None, server, ())
                .await
                .map_err(|e| TransportError::Spawn {
                    actor: "node server",
                    detail: e.to_string(),
                })?;

        let table = Arc::new(Mutex::new(SessionTable::default()));
        let handshakes: SharedHandshakes = Arc::new(Mutex::new(HandshakeTable::new(handshake)));
        let counters = Arc::new(TransportCounters::default());
        let outboxes = Arc::new(Outboxes::new(local_cluster_name.clone(), max_frame_bytes));
        let subscription = Subscription {
            table: Arc::clone(&table),
            handshakes: Arc::clone(&handshakes),
            counters: Arc::clone(&counters),
            rejects: Mutex::new(RepeatLimit::new(REJECT_WARN_INTERVAL)),
            outboxes: Arc::clone(&outboxes),
        };
        let _ = server.cast(NodeServerMessage::SubscribeToEvents {
            id: "gristmill".into(),
            subscription: Box::new(subscription),
        });

        let gateway = Gateway {
            handler,
            group: gateway_group(&local_cluster_name),
            outboxes: Arc::clone(&outboxes),
        };
        let (gateway, _) =
            ractor::Actor::spawn(None, gateway, ())
                .await
                .map_err(|e| TransportError::Spawn {
                    actor: "gateway",
                    detail: e.to_string(),
                })?;

        outboxes.set_local_gateway(gateway.clone());

        super::listener::spawn(
            listener,
            server.clone(),
            handshakes,
            Arc::clone(&counters.rejected_connections),
            handshake.timeout,
            ack_timeout,
        );
        Ok(Transport {
            ack_timeout,
            server,
            local_cluster_name,
            table,
            counters,
            wanted: Arc::default(),
            gateway,
            outboxes,
            stopped: AtomicBool::new(false),
        })
    }

    /// Returns the transport's counters.
    pub fn counters(&self) -> &Arc<TransportCounters> {
        &self.counters
    }

    /// Returns whether a ready session to `peer` exists.
    pub fn is_connected(&self, peer: &NodeId) -> bool {
        let table = self.table.lock().expect("session table lock poisoned");
        table.ready.contains(peer.cluster_node_name())
    }

    /// Returns the ractor_cluster node names (`NodeId::cluster_node_name`) of the peers with a
    /// ready session, dialed by either side.
    pub fn ready_peers(&self) -> HashSet<String> {
        let table = self.table.lock().expect("session table lock poisoned");
        table.ready.clone()
    }

    /// Starts keeping a session to `peer`. This node dials only if its cluster name sorts higher,
    /// and redials with backoff while the peer stays wanted and unconnected.
    pub fn handle_peer_up(&self, peer: &NodeId) {
        let name = peer.cluster_node_name().to_string();
        if name == self.local_cluster_name {
            return;
        }
        self.wanted
            .lock()
            .expect("wanted lock poisoned")
            .insert(name.clone(), peer.cluster_addr());
        if self.local_cluster_name < name {
            return;
        }
        let server = self.server.clone();
        let wanted = Arc::clone(&self.wanted);
        let table = Arc::clone(&self.table);
        let ack_timeout = self.ack_timeout;
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            loop {
                let addr = match wanted.lock().expect("wanted lock poisoned").get(&name) {
                    Some(addr) => *addr,
                    None => return,
                };
                if table
                    .lock()
                    .expect("session table lock poisoned")
                    .ready
                    .contains(&name)
                {
                    // Check again later: a session can end while the peer stays a member.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    backoff = Duration::from_millis(50);
                    continue;
                }
                match dial(&server, addr, ack_timeout).await {
                    Ok(()) => tracing::debug!(peer = %name, %addr, "dialed cluster peer"),
                    Err(error) => {
                        tracing::debug!(peer = %name, %addr, %error, "cluster dial failed")
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        });
    }

    /// Stops every session to `peer` and forgets it.
    pub async fn handle_peer_down(&self, peer: &NodeId) {
        let name = peer.cluster_node_name().to_string();
        self.wanted
            .lock()
            .expect("wanted lock poisoned")
            .remove(&name);
        self.table
            .lock()
            .expect("session table lock poisoned")
            .ready
            .remove(&name);
        self.outboxes.forget_peer(&name);
        self.outboxes.fail_peer(&name, || {
            PeerError::Lost(peer.name.to_string(), "the peer left the membership".into())
        });
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        let prefix = format!("{name}@");
        let sessions = match ractor::call_t!(self.server, NodeServerMessage::GetSessions, 1_000) {
            Ok(sessions) => sessions,
            Err(error) => {
                tracing::warn!(peer = %name, %error, "cannot list cluster sessions");
                return;
            }
        };
        for session in sessions.values() {
            let matches = session
                .peer_name
                .as_ref()
                .is_some_and(|p| p.name.starts_with(&prefix));
            if matches {
                session.actor.stop(Some("member down".into()));
            }
        }
    }

    fn remote_gateway(&self, peer: &NodeId) -> Option<ActorRef<GatewayMsg>> {
        let name = peer.cluster_node_name();
        if name == self.local_cluster_name {
            return Some(self.gateway.clone());
        }
        remote_gateway(name)
    }

    /// Waits until `peer`'s gateway is reachable, up to `deadline`.
    async fn gateway_by(
        &self,
        peer: &NodeId,
        deadline: Instant,
    ) -> Result<ActorRef<GatewayMsg>, PeerError> {
        loop {
            if let Some(gateway) = self.remote_gateway(peer) {
                return Ok(gateway);
            }
            let wanted = self
                .wanted
                .lock()
                .expect("wanted lock poisoned")
                .contains_key(peer.cluster_node_name());
            if !wanted || Instant::now() + Duration::from_millis(10) >= deadline {
                return Err(PeerError::NotConnected(peer.name.to_string()));
            }
            // The session is still forming (authentication and process-group sync take a few
            // milliseconds on loopback).
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until a session to `peer`, whose ractor_cluster node name is `name`, is ready, up
    /// to `deadline`.
    ///
    /// A ready session needs no process-group lookup: ractor_cluster reports it ready after the
    /// peer's `Ready`, which the peer sends after its process-group joins, so the peer's gateway
    /// is known by then.
    async fn wait_for_session(
        &self,
        peer: &NodeId,
        name: &str,
        deadline: Instant,
    ) -> Result<(), PeerError> {
        let ready = self
            .table
            .lock()
            .expect("session table lock poisoned")
            .ready
            .contains(name);
        if ready {
            return Ok(());
        }
        // Boxed, because this rare path sleeps: inline, it would enlarge the future of every
        // call and one-way message, which is copied each time one is created.
        Box::pin(self.gateway_by(peer, deadline)).await.map(drop)
    }

    /// Sends a grain call to `peer` and waits for its reply until `deadline`.
    ///
    /// The call joins the peer's queue, which sends it with the other calls, replies and
    /// one-way messages waiting for that peer in one ractor_cluster message.
    pub async fn call(
        &self,
        peer: &NodeId,
        envelope: Envelope,
        deadline: Instant,
    ) -> Result<CallReply, PeerError> {
        let name = peer.cluster_node_name_shared();
        self.wait_for_session(peer, name, deadline).await?;
        let mut pending = self.outboxes.register(Arc::clone(name));
        let id = pending.id;
        self.outboxes.push(name, BatchItem::Call { id, envelope });
        match tokio::time::timeout_at(deadline.into(), &mut pending.reply).await {
            Ok(Ok(outcome)) => outcome.map_err(|error| error.naming(&peer.name)),
            Ok(Err(_)) => Err(PeerError::Lost(
                peer.name.to_string(),
                "reply dropped".into(),
            )),
            Err(_) => Err(PeerError::TimedOut(peer.name.to_string())),
        }
    }

    /// Sends a one-way grain message to `peer`, in the peer's queue. Gives the message back if
    /// no session to the peer is ready by `deadline`.
    pub async fn cast(
        &self,
        peer: &NodeId,
        envelope: Envelope,
        deadline: Instant,
    ) -> Result<(), Box<NotSent>> {
        let name = peer.cluster_node_name();
        if let Err(error) = self.wait_for_session(peer, name, deadline).await {
            return Err(Box::new(NotSent { error, envelope }));
        }
        self.outboxes.push(name, BatchItem::Cast(envelope));
        Ok(())
    }

    /// Sends a directory request to `peer` and waits for its reply until `deadline`.
    pub async fn directory(
        &self,
        peer: &NodeId,
        request: DirectoryEnvelope,
        deadline: Instant,
    ) -> Result<DirectoryReplyEnvelope, PeerError> {
        let gateway = self.gateway_by(peer, deadline).await?;
        let timeout = deadline.saturating_duration_since(Instant::now());
        let result = gateway
            .call(
                |reply| GatewayMsg::Directory(Wire::new(request), reply),
                Some(timeout),
            )
            .await;
        unwrap_reply(&peer.name, result, deadline)
    }

    /// Sends a migrating activation to `peer` and waits for its reply until `deadline`.
    pub async fn migrate(
        &self,
        peer: &NodeId,
        request: crate::migration::MigrationEnvelope,
        deadline: Instant,
    ) -> Result<crate::migration::MigrationReply, PeerError> {
        let gateway = self.gateway_by(peer, deadline).await?;
        let timeout = deadline.saturating_duration_since(Instant::now());
        let result = gateway
            .call(
                |reply| GatewayMsg::Migrate(Wire::new(request), reply),
                Some(timeout),
            )
            .await;
        unwrap_reply(&peer.name, result, deadline)
    }

    /// Stops the gateway and the node server; peers see the sessions end.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.wanted.lock().expect("wanted lock poisoned").clear();
        self.outboxes
            .fail_all(|peer| PeerError::Lost(peer.to_string(), "the node is stopping".into()));
        self.gateway.stop(Some("node stopping".into()));
        self.server.stop(Some("node stopping".into()));
    }
}

/// Margin within which a dropped reply counts as a timeout: ractor_cluster drops the reply
/// port of a remote call when its own copy of the timeout fires, which can be a moment before
/// the local timeout does.
const DROPPED_AT_DEADLINE: Duration = Duration::from_millis(20);

fn unwrap_reply<T>(
    peer: &str,
    result: Result<CallResult<Wire<T>>, MessagingErr<GatewayMsg>>,
    deadline: Instant,
) -> Result<T, PeerError> {
    match result {
        Ok(CallResult::SenderError) if Instant::now() + DROPPED_AT_DEADLINE >= deadline => {
            Err(PeerError::TimedOut(peer.to_string()))
        }
        Ok(CallResult::Success(Wire(Ok(reply)))) => Ok(reply),
        Ok(CallResult::Success(Wire(Err(detail)))) => {
            Err(PeerError::Lost(peer.to_string(), detail))
        }
        Ok(CallResult::Timeout) => Err(PeerError::TimedOut(peer.to_string())),
        Ok(CallResult::SenderError) => {
            Err(PeerError::Lost(peer.to_string(), "reply dropped".into()))
        }
        Err(error) => Err(PeerError::Lost(peer.to_string(), error.to_string())),
    }
}

/// Connects to the peer's cluster listener at `addr` and hands the connection to `server`.
async fn dial(
    server: &ActorRef<NodeServerMessage>,
    addr: SocketAddr,
    ack_timeout: Duration,
) -> std::io::Result<()> {
    let stream = TcpStream::connect(addr).await?;
    super::socket_options::prepare(&stream, ack_timeout)?;
    ractor_cluster::client_connect_external(server, Box::new(TcpBidi(stream)))
        .await
        .map_err(|error| std::io::Error::other(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_request_says_outcome_unknown() {
        let error = PeerError::Lost("n2".into(), "the cluster session ended".into());
        assert_eq!(
            error.to_string(),
            "request to n2 was lost (the cluster session ended) and may have run, so a retry \
             may apply it twice"
        );
        assert!(!error.before_send());
    }
}
