//! Per-peer queues that coalesce calls, replies and one-way messages into batches, and the
//! table of calls that wait for a reply.
//!
//! Every ractor_cluster message costs a chain of actor hops, a frame read and a decode on
//! each end, whatever its size. So each peer gets one queue and one task that sends whatever
//! waits in it as one [`BatchEnvelope`]. When the task wakes for a message, it first yields
//! once to the runtime, so that tasks that are ready to run can add to the batch. When only
//! one message waits, that yield is the only delay. Items keep their queue order, so
//! messages from one sender to one peer arrive in the order in which they were queued.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use ractor::ActorRef;
use tokio::sync::{mpsc, oneshot};

use super::batch::{Batch, BatchEnvelope, BatchItem, fill_batch};
use super::envelope::CallReply;
use super::gateway::{GATEWAY_SCOPE, GatewayMsg, gateway_group};
use super::sessions::PeerError;
use super::wire::Wire;

/// A call waiting for its reply.
struct Pending {
    /// ractor_cluster node name of the peer that serves the call.
    peer: Arc<str>,
    reply: oneshot::Sender<Result<CallReply, PeerError>>,
}

/// The queues to every peer, and the calls in flight.
pub(crate) struct Outboxes {
    /// ractor_cluster node name of this node, sent in every batch.
    local_name: String,
    /// Upper estimate of a batch's encoded size, in bytes, below the peers' frame limit.
    max_batch_bytes: usize,
    /// This node's gateway, which serves batches addressed to this node itself.
    local_gateway: OnceLock<ActorRef<GatewayMsg>>,
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<BatchItem>>>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
}

/// A registered call. Dropping it forgets the call, so a reply that arrives later is dropped.
pub(crate) struct PendingCall<'a> {
    outboxes: &'a Outboxes,
    /// The id to send with the call.
    pub(crate) id: u64,
    /// Receives the reply, or the reason why none will come.
    pub(crate) reply: oneshot::Receiver<Result<CallReply, PeerError>>,
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        self.outboxes
            .pending
            .lock()
            .expect("pending calls lock poisoned")
            .remove(&self.id);
    }
}

impl Outboxes {
    /// Creates the queues of the node `local_name`, whose peers accept frames of up to
    /// `max_frame_bytes`.
    pub(crate) fn new(local_name: String, max_frame_bytes: u64) -> Self {
        // Half the frame limit leaves room for ractor_cluster's own fields and framing.
        let max_batch_bytes = usize::try_from(max_frame_bytes / 2).unwrap_or(usize::MAX);
        Self {
            local_name,
            max_batch_bytes,
            local_gateway: OnceLock::new(),
            queues: Mutex::default(),
            pending: Mutex::default(),
            next_id: AtomicU64::new(1),
        }
    }

    /// Sets this node's gateway, once it has started.
    pub(crate) fn set_local_gateway(&self, gateway: ActorRef<GatewayMsg>) {
        let _ = self.local_gateway.set(gateway);
    }

    /// Registers a call to the peer `peer` (its ractor_cluster node name) that waits for a reply.
    pub(crate) fn register(&self, peer: impl Into<Arc<str>>) -> PendingCall<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        let pending = Pending {
            peer: peer.into(),
            reply: sender,
        };
        self.pending
            .lock()
            .expect("pending calls lock poisoned")
            .insert(id, pending);
        PendingCall {
            outboxes: self,
            id,
            reply: receiver,
        }
    }

    /// Hands `reply` from the peer `from` to the call `id`, if it still waits for that peer.
    pub(crate) fn complete_from(&self, from: &str, id: u64, reply: CallReply) {
        let pending = {
            let mut pending = self.pending.lock().expect("pending calls lock poisoned");
            match pending.get(&id) {
                Some(call) if *call.peer == *from => pending.remove(&id),
                _ => None,
            }
        };
        match pending {
            Some(pending) => {
                let _ = pending.reply.send(Ok(reply));
            }
            None => tracing::debug!(peer = %from, id, "dropped a reply that no call waits for"),
        }
    }

    /// Hands `outcome` to the call `id`, if it still waits.
    fn complete(&self, id: u64, outcome: Result<CallReply, PeerError>) {
        let pending = self
            .pending
            .lock()
            .expect("pending calls lock poisoned")
            .remove(&id);
        if let Some(pending) = pending {
            let _ = pending.reply.send(outcome);
        }
    }

    /// Ends every call waiting for a reply from `peer` with `error`: its session ended, so
    /// the replies cannot arrive.
    pub(crate) fn fail_peer(&self, peer: &str, error: impl Fn() -> PeerError) {
        let failed: Vec<Pending> = {
            let mut pending = self.pending.lock().expect("pending calls lock poisoned");
            let ids: Vec<u64> = pending
                .iter()
                .filter(|(_, call)| *call.peer == *peer)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| pending.remove(id)).collect()
        };
        for call in failed {
            let _ = call.reply.send(Err(error()));
        }
    }

    /// Ends every call waiting for a reply, when the transport stops.
    pub(crate) fn fail_all(&self, error: impl Fn(&str) -> PeerError) {
        let failed: Vec<Pending> = self
            .pending
            .lock()
            .expect("pending calls lock poisoned")
            .drain()
            .map(|(_, call)| call)
            .collect();
        for call in failed {
            let _ = call.reply.send(Err(error(&call.peer)));
        }
        self.queues.lock().expect("queues lock poisoned").clear();
    }

    /// Drops the queue to `peer`; its task sends what was queued and ends.
    pub(crate) fn forget_peer(&self, peer: &str) {
        self.queues
            .lock()
            .expect("queues lock poisoned")
            .remove(peer);
    }

    /// Queues `item` to the peer `peer` (its ractor_cluster node name), starting the peer's
    /// task if it has none.
    pub(crate) fn push(self: &Arc<Self>, peer: &str, item: BatchItem) {
        let mut queues = self.queues.lock().expect("queues lock poisoned");
        let item = match queues.get(peer) {
            None => item,
            Some(queue) => match queue.send(item) {
                Ok(()) => return,
                // The task ended, which it does only when the queue was dropped; start another.
                Err(mpsc::error::SendError(item)) => item,
            },
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        let _ = sender.send(item);
        queues.insert(peer.to_string(), sender);
        tokio::spawn(Arc::clone(self).run_queue(peer.to_string(), receiver));
    }

    /// Sends the batches of one peer's queue until the queue is dropped.
    async fn run_queue(
        self: Arc<Self>,
        peer: String,
        mut queue: mpsc::UnboundedReceiver<BatchItem>,
    ) {
        let mut carried = None;
        loop {
            let first = match carried.take() {
                Some(item) => item,
                None => match queue.recv().await {
                    Some(item) => item,
                    None => return,
                },
            };
            if queue.is_empty() {
                tokio::task::yield_now().await;
            }
            let (items, rest) = fill_batch(first, self.max_batch_bytes, || queue.try_recv().ok());
            carried = rest;
            self.send_batch(&peer, items);
        }
    }

    fn send_batch(&self, peer: &str, items: Vec<BatchItem>) {
        let calls: Vec<u64> = items.iter().filter_map(BatchItem::call_id).collect();
        let Some(gateway) = self.gateway_of(peer) else {
            tracing::debug!(%peer, items = items.len(), "no session to the peer; dropped a batch");
            for id in calls {
                self.complete(id, Err(PeerError::NotConnected(peer.to_string())));
            }
            return;
        };
        let batch = BatchEnvelope::V1(Batch {
            from: self.local_name.clone(),
            items,
        });
        if let Err(error) = gateway.cast(GatewayMsg::Batch(Wire::new(batch))) {
            tracing::debug!(%peer, %error, "failed to send a batch");
            for id in calls {
                self.complete(
                    id,
                    Err(PeerError::Lost(peer.to_string(), error.to_string())),
                );
            }
        }
    }

    /// Returns the gateway of the node `name`, found in ractor's process groups.
    fn gateway_of(&self, name: &str) -> Option<ActorRef<GatewayMsg>> {
        if name == self.local_name {
            return self.local_gateway.get().cloned();
        }
        remote_gateway(name)
    }
}

/// Returns the gateway of the peer whose ractor_cluster node name is `name`, if a session to
/// it is ready.
pub(crate) fn remote_gateway(name: &str) -> Option<ActorRef<GatewayMsg>> {
    let members = ractor::pg::get_scoped_members(&GATEWAY_SCOPE.to_string(), &gateway_group(name));
    members
        .into_iter()
        .find(|cell| !cell.get_id().is_local())
        .map(ActorRef::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outboxes() -> Outboxes {
        Outboxes::new("node-a".into(), 64 * 1024)
    }

    #[test]
    fn reply_from_serving_peer_completes_call() {
        let outboxes = outboxes();
        let mut call = outboxes.register("node-b");
        outboxes.complete_from("node-b", call.id, CallReply::NotHere);
        assert!(matches!(call.reply.try_recv(), Ok(Ok(CallReply::NotHere))));
    }

    #[test]
    fn reply_from_other_peer_is_dropped() {
        let outboxes = outboxes();
        let mut call = outboxes.register("node-b");
        outboxes.complete_from("node-c", call.id, CallReply::NotHere);
        assert!(
            call.reply.try_recv().is_err(),
            "a peer completed a call that it does not serve"
        );
        outboxes.complete_from("node-b", call.id, CallReply::NotHere);
        assert!(matches!(call.reply.try_recv(), Ok(Ok(_))));
    }

    #[test]
    fn fail_peer_ends_only_its_calls() {
        let outboxes = outboxes();
        let mut to_b = outboxes.register("node-b");
        let mut to_c = outboxes.register("node-c");
        outboxes.fail_peer("node-b", || {
            PeerError::Lost("node-b".into(), "session ended".into())
        });
        assert!(matches!(
            to_b.reply.try_recv(),
            Ok(Err(PeerError::Lost(..)))
        ));
        assert!(
            to_c.reply.try_recv().is_err(),
            "the call to node-c still waits"
        );
    }

    #[test]
    fn dropped_call_is_forgotten() {
        let outboxes = outboxes();
        let call = outboxes.register("node-b");
        let id = call.id;
        drop(call);
        let pending = outboxes
            .pending
            .lock()
            .expect("pending calls lock poisoned");
        assert!(!pending.contains_key(&id));
    }

    #[test]
    fn fail_all_ends_every_call() {
        let outboxes = outboxes();
        let mut to_b = outboxes.register("node-b");
        let mut to_c = outboxes.register("node-c");
        outboxes.fail_all(|peer| PeerError::Lost(peer.to_string(), "stopping".into()));
        let b = to_b.reply.try_recv();
        let c = to_c.reply.try_recv();
        assert!(
            matches!(&b, Ok(Err(PeerError::Lost(peer, _))) if peer == "node-b"),
            "{b:?}"
        );
        assert!(
            matches!(&c, Ok(Err(PeerError::Lost(peer, _))) if peer == "node-c"),
            "{c:?}"
        );
    }
}
