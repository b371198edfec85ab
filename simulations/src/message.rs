//! What simulated nodes send each other: gossip datagrams, directory requests and grain calls.
//!
//! Directory messages are the real transport's; calls mirror its call envelope without
//! payload encoding, because a simulated call carries one increment id.

use gristmill::clock::Millis;
use gristmill::grain::GrainId;
use gristmill::membership::{DeclaredDown, Incarnation, NodeId};
pub use gristmill::transport::{DirectoryRequest, DirectoryResponse};
use serde::Serialize;

/// One datagram or stream message between two simulated nodes.
#[derive(Clone, Debug, Serialize)]
pub enum Message {
    /// A foca packet (the real agent prefixes a two-byte header, which the simulator omits).
    Gossip(Vec<u8>),
    /// A joining node asks a seed for its identity, as the real agent does before announcing.
    IdentityRequest,
    /// The seed's identity, in reply to [`Message::IdentityRequest`].
    IdentityReply(NodeId),
    /// A joining node asks for a page of the member list: an encoded, padded
    /// `MembersRequest` (the real agent frames it like a foca packet).
    MembersRequest(Vec<u8>),
    /// A page of the member list: an encoded `MembersPage`.
    MembersPage(Vec<u8>),
    /// A probe of the sender's quorum sweep (the real agent frames and pads it).
    LeaseProbe {
        /// The sender's identity.
        from: NodeId,
        /// Id of the sweep.
        sweep: u64,
    },
    /// The ack of a [`Message::LeaseProbe`].
    LeaseProbeAck {
        /// The acking node's identity.
        from: NodeId,
        /// Id of the sweep the probe carried.
        sweep: u64,
        /// Members the acking node counts as declared down.
        declared_down: Vec<DeclaredDown>,
    },
    /// A request that expects a [`Message::Reply`] with the same id.
    Request {
        /// Id the requester chose; unique per requester incarnation.
        id: u64,
        /// The requesting incarnation, where the reply goes.
        from: Incarnation,
        /// What is requested.
        body: Request,
    },
    /// The reply to the request with this id.
    Reply {
        /// Id of the request.
        id: u64,
        /// The reply.
        body: Reply,
    },
}

/// A request between nodes.
#[derive(Clone, Debug, Serialize)]
pub enum Request {
    /// A request to a directory partition owner.
    Directory(DirectoryRequest),
    /// A grain call forwarded to the node that hosts or will host the grain.
    Call(CallRequest),
}

/// A reply between nodes.
#[derive(Clone, Debug, Serialize)]
pub enum Reply {
    /// Reply of a directory partition owner.
    Directory(DirectoryResponse),
    /// Reply to a forwarded grain call.
    Call(CallReply),
}

/// Whether the receiver of a call may activate the grain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Route {
    /// The directory names the receiver as host; it answers `NotHere` if it is not.
    Deliver,
    /// Placement chose the receiver; it activates the grain if needed.
    ActivateHere,
}

/// A forwarded grain call: add `increment` to the grain's set of applied increments.
#[derive(Clone, Debug, Serialize)]
pub struct CallRequest {
    /// The grain.
    pub grain: GrainId,
    /// Id of the increment; unique per simulation run.
    pub increment: u64,
    /// The caller's deadline.
    pub deadline: Millis,
    /// Whether the receiver may activate the grain.
    pub route: Route,
    /// Forwards the call took so far.
    pub hops: u32,
}

/// The reply to a forwarded call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum CallReply {
    /// The increment is durably stored; carries the number of increments in the state.
    Ok {
        /// Increments in the grain's state after this one.
        applied: u64,
    },
    /// The receiver does not host the grain.
    NotHere,
    /// The call failed.
    Failed(CallFailure),
}

/// Why a call failed, mirroring the real `CallError` kinds the simulated path can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CallFailure {
    /// The deadline passed.
    DeadlineExceeded,
    /// The activation's state write lost its compare-and-set: a newer activation wrote first.
    StaleState,
    /// Placement found no Active node, or the directory has no owner.
    NoActiveNode,
    /// The call used up its resolve attempts or forwards.
    TooManyHops,
    /// The node is stopping.
    ShuttingDown,
}
