//! The one remotable actor per node: it receives grain calls and directory requests from peers.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;

use super::batch::{Batch, BatchEnvelope, BatchItem};
use super::envelope::{CallReply, DirectoryEnvelope, DirectoryReplyEnvelope, Envelope};
use super::outbox::Outboxes;
use super::wire::Wire;
use crate::grain::CallError;
use crate::migration::{MigrationEnvelope, MigrationReply};

/// ractor process-group scope that gateway actors join.
pub const GATEWAY_SCOPE: &str = "gristmill";

/// Returns the process group that the gateway of the ractor_cluster node `cluster_node_name`
/// joins; peers find a node's gateway there, because remote actors never appear in ractor's
/// name registry.
pub fn gateway_group(cluster_node_name: &str) -> String {
    format!("gw/{cluster_node_name}")
}

/// Messages a node's gateway accepts from peers.
///
/// ractor_cluster identifies variants by name, so variants may be added but never renamed or
/// removed while nodes of two releases share a cluster.
#[derive(RactorClusterMessage)]
pub enum GatewayMsg {
    /// A grain call that expects a reply.
    #[rpc]
    Call(Wire<Envelope>, RpcReplyPort<Wire<CallReply>>),
    /// A one-way grain message.
    Cast(Wire<Envelope>),
    /// A request to this node's directory partition.
    #[rpc]
    Directory(
        Wire<DirectoryEnvelope>,
        RpcReplyPort<Wire<DirectoryReplyEnvelope>>,
    ),
    /// An activation migrating to this node.
    #[rpc]
    Migrate(Wire<MigrationEnvelope>, RpcReplyPort<Wire<MigrationReply>>),
    /// Grain calls, their replies and one-way messages from one peer, in its queue order.
    /// Nodes send calls and one-way messages only this way; `Call` and `Cast` are served for
    /// peers of earlier releases.
    ///
    /// NOTE: a node of an earlier release does not know this variant, so calls from this
    /// release to it time out; upgrade every node before it serves calls from upgraded ones.
    Batch(Wire<BatchEnvelope>),
}

/// What the gateway hands inbound requests to: the node runtime.
pub trait InboundHandler: Send + Sync + 'static {
    /// Serves a grain call from a peer.
    fn handle_call(&self, envelope: Envelope) -> super::BoxFuture<'_, CallReply>;
    /// Takes a one-way grain message from a peer. It runs on the gateway's own task, so it
    /// must not wait: it queues the message, or hands it to a task of its own.
    fn handle_cast(&self, envelope: Envelope);
    /// Serves a directory request from a peer.
    fn handle_directory(
        &self,
        request: DirectoryEnvelope,
    ) -> super::BoxFuture<'_, DirectoryReplyEnvelope>;
    /// Takes over an activation migrating from a peer.
    fn handle_migrate(&self, request: MigrationEnvelope) -> super::BoxFuture<'_, MigrationReply>;
    /// Counts a message that could not be decoded.
    fn reject_inbound(&self, detail: &str);
}

/// The gateway actor. Each inbound request that expects a reply runs in its own task, so a
/// slow grain never blocks the gateway's mailbox; a one-way message is queued in place.
pub(crate) struct Gateway {
    /// Where requests go.
    pub(crate) handler: Arc<dyn InboundHandler>,
    /// Process group to join, from [`gateway_group`].
    pub(crate) group: String,
    /// Queues that carry replies back to the peers, and the calls of this node that wait.
    pub(crate) outboxes: Arc<Outboxes>,
}

impl Gateway {
    /// Serves a batch from a peer in its order: queues its one-way messages, starts a task per
    /// call that queues the reply back to the sender, and completes this node's calls.
    fn receive_batch(&self, batch: Batch) {
        let from: Arc<str> = Arc::from(batch.from);
        for item in batch.items {
            match item {
                BatchItem::Cast(envelope) => self.handler.handle_cast(envelope),
                BatchItem::Call { id, envelope } => {
                    let handler = Arc::clone(&self.handler);
                    let outboxes = Arc::clone(&self.outboxes);
                    let from = Arc::clone(&from);
                    tokio::spawn(async move {
                        let reply = handler.handle_call(envelope).await;
                        outboxes.push(&from, BatchItem::Reply { id, reply });
                    });
                }
                BatchItem::Reply { id, reply } => self.outboxes.complete_from(&from, id, reply),
            }
        }
    }
}

impl Actor for Gateway {
    type Msg = GatewayMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join_scoped(
            GATEWAY_SCOPE.to_string(),
            self.group.clone(),
            vec![myself.get_cell()],
        );
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let handler = Arc::clone(&self.handler);
        match message {
            GatewayMsg::Call(Wire(Ok(envelope)), reply) => {
                tokio::spawn(async move {
                    let answer = handler.handle_call(envelope).await;
                    // The caller may have given up at its deadline; nothing to do then.
                    let _ = reply.send(Wire::new(answer));
                });
            }
            GatewayMsg::Call(Wire(Err(detail)), reply) => {
                handler.reject_inbound(&detail);
                let failure = CallError::Internal(format!("rejected undecodable call: {detail}"));
                let _ = reply.send(Wire::new(CallReply::Failed(failure)));
            }
            GatewayMsg::Cast(Wire(Ok(envelope))) => handler.handle_cast(envelope),
            GatewayMsg::Cast(Wire(Err(detail))) => handler.reject_inbound(&detail),
            GatewayMsg::Directory(Wire(Ok(request)), reply) => {
                tokio::spawn(async move {
                    let answer = handler.handle_directory(request).await;
                    let _ = reply.send(Wire::new(answer));
                });
            }
            GatewayMsg::Migrate(Wire(Ok(request)), reply) => {
                tokio::spawn(async move {
                    let answer = handler.handle_migrate(request).await;
                    let _ = reply.send(Wire::new(answer));
                });
            }
            GatewayMsg::Migrate(Wire(Err(detail)), reply) => {
                handler.reject_inbound(&detail);
                let _ = reply.send(Wire::new(MigrationReply::Rejected(format!(
                    "undecodable request: {detail}"
                ))));
            }
            GatewayMsg::Batch(Wire(Ok(BatchEnvelope::V1(batch)))) => self.receive_batch(batch),
            GatewayMsg::Batch(Wire(Err(detail))) => handler.reject_inbound(&detail),
            GatewayMsg::Directory(Wire(Err(detail)), reply) => {
                handler.reject_inbound(&detail);
                // Dropping the reply port ends the caller's wait with an error at once.
                drop(reply);
            }
        }
        Ok(())
    }
}
