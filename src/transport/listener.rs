//! The cluster port's accept loop, which closes connections that do not authenticate in time.
//!
//! Each accepted connection is admitted to the handshake table and handed to the node server
//! with a unique peer label. The node-server event subscription ties the label to the session
//! and reports its authentication. A timer task stops sessions whose deadline passed, and the
//! accept loop closes connections at once while the table is full.

use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ractor::ActorRef;
use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream, NodeServerMessage, NodeSessionMessage};
use tokio::io::{AsyncRead, BufReader, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};

use super::handshakes::{HandshakeTable, PendingLimitReached, RejectReason, RejectedConnections};
use super::sessions::READ_BUFFER_BYTES;
use crate::repeat_limit::RepeatLimit;

/// The handshake table of one node, shared by the accept loop, the timer task, the node-server
/// event subscription and the streams handed to ractor_cluster.
pub(crate) type SharedHandshakes = Arc<Mutex<HandshakeTable<ActorRef<NodeSessionMessage>>>>;

/// Minimum time between two warnings about connections closed because too many wait to
/// authenticate; the ones in between are counted and logged at debug level.
const LIMIT_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Stop reason of a session whose handshake deadline passed; ractor_cluster logs it.
pub(crate) const TIMEOUT_STOP_REASON: &str = "handshake timeout";

/// Forgets the connection in the handshake table when its stream is dropped before a session
/// was reported for it.
struct ReleaseOnDrop {
    label: String,
    handshakes: SharedHandshakes,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        // A poisoned lock means another thread panicked while holding it; the node is failing
        // anyway, and a panic in drop would abort.
        if let Ok(mut table) = self.handshakes.lock() {
            table.stream_dropped(&self.label);
        }
    }
}

/// The buffered read half of an accepted connection, which carries the release guard.
struct TrackedRead {
    inner: BufReader<OwnedReadHalf>,
    _release: ReleaseOnDrop,
}

impl AsyncRead for TrackedRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// An accepted TCP connection handed to ractor_cluster as an external stream.
struct AcceptedStream {
    stream: TcpStream,
    release: ReleaseOnDrop,
}

impl ClusterBidiStream for AcceptedStream {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let (read, write) = self.stream.into_split();
        // Buffered like dialed connections, so ractor_cluster's length and body reads of
        // each frame take one system call.
        let read = TrackedRead {
            inner: BufReader::with_capacity(READ_BUFFER_BYTES, read),
            _release: self.release,
        };
        (Box::new(read), Box::new(write))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.release.label.clone())
    }
}

/// Starts accepting cluster connections on `listener` and the task that stops sessions past
/// their handshake deadline. The accept loop ends at the first connection after the node
/// server stopped, and the timer task once the accept loop and the node server are gone.
pub(crate) fn spawn(
    listener: TcpListener,
    server: ActorRef<NodeServerMessage>,
    handshakes: SharedHandshakes,
    rejected: Arc<RejectedConnections>,
    timeout: Duration,
    ack_timeout: Duration,
) {
    tokio::spawn(expire_loop(Arc::downgrade(&handshakes), timeout));
    tokio::spawn(accept_loop(
        listener,
        server,
        handshakes,
        rejected,
        ack_timeout,
    ));
}

async fn accept_loop(
    listener: TcpListener,
    server: ActorRef<NodeServerMessage>,
    handshakes: SharedHandshakes,
    rejected: Arc<RejectedConnections>,
    ack_timeout: Duration,
) {
    let mut limit_warnings = RepeatLimit::new(LIMIT_WARN_INTERVAL);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "cluster accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admitted = handshakes
            .lock()
            .expect("handshake table lock poisoned")
            .admit(peer, Instant::now());
        let admitted = match admitted {
            Ok(admitted) => admitted,
            Err(PendingLimitReached { pending }) => {
                drop(stream);
                let total = rejected.record(RejectReason::PendingLimit);
                match limit_warnings.record(Instant::now()) {
                    Some(suppressed) => tracing::warn!(
                        %peer,
                        pending,
                        total,
                        suppressed,
                        "cluster connection closed at once: too many connections wait to authenticate; raise max_pending_handshakes if peers are refused"
                    ),
                    None => tracing::debug!(
                        %peer,
                        pending,
                        total,
                        "cluster connection closed at once: too many connections wait to authenticate"
                    ),
                }
                continue;
            }
        };
        if let Err(error) = super::socket_options::prepare(&stream, ack_timeout) {
            tracing::debug!(%peer, %error, "cannot set the options of a cluster connection");
        }
        tracing::trace!(peer = %admitted.label, "accepted cluster connection");
        let stream = AcceptedStream {
            stream,
            release: ReleaseOnDrop {
                label: admitted.label,
                handshakes: Arc::clone(&handshakes),
            },
        };
        let opened = NodeServerMessage::ConnectionOpenedExternal {
            stream: Box::new(stream),
            is_server: true,
        };
        if server.cast(opened).is_err() {
            return;
        }
    }
}

/// Stops the sessions whose handshake deadline passed. It sleeps until the earliest deadline,
/// or for `timeout` while no connection waits: a connection admitted during that sleep has a
/// deadline after its end, so no deadline is missed.
async fn expire_loop(
    handshakes: Weak<Mutex<HandshakeTable<ActorRef<NodeSessionMessage>>>>,
    timeout: Duration,
) {
    loop {
        let wait = {
            let Some(table) = handshakes.upgrade() else {
                return;
            };
            let next = table
                .lock()
                .expect("handshake table lock poisoned")
                .next_deadline();
            next.map_or(timeout, |deadline| {
                deadline.saturating_duration_since(Instant::now())
            })
        };
        tokio::time::sleep(wait).await;
        let Some(table) = handshakes.upgrade() else {
            return;
        };
        let due = table
            .lock()
            .expect("handshake table lock poisoned")
            .expire_due(Instant::now());
        for (peer, session) in due {
            tracing::debug!(%peer, "closing cluster connection: no authentication before the handshake deadline");
            session.stop(Some(TIMEOUT_STOP_REASON.into()));
        }
    }
}
