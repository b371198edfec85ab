//! Node-to-node transport over ractor_cluster: one gateway actor per node, envelopes, deadlines.

mod batch;
mod envelope;
mod gateway;
mod handshakes;
mod listener;
mod outbox;
mod session_table;
mod sessions;
mod socket_options;
mod wire;

pub use batch::{Batch, BatchEnvelope, BatchItem};
pub use envelope::{
    CallEnvelope, CallReply, DirectoryEnvelope, DirectoryReplyEnvelope, DirectoryRequest,
    DirectoryResponse, Envelope, Route,
};
pub use gateway::{GATEWAY_SCOPE, GatewayMsg, InboundHandler, gateway_group};
pub use handshakes::{HandshakeLimits, RejectReason, RejectedConnections};
pub use sessions::{NotSent, PeerError, Transport, TransportCounters, TransportError};
pub use wire::Wire;

/// A boxed future returned by the transport's handler traits.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
