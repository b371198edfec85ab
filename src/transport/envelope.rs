//! The versioned messages that nodes exchange: grain calls, their replies, directory requests.

use serde::{Deserialize, Serialize};

use crate::directory::{
    DirectoryCommand, DirectoryEntry, Expect, LookupOutcome, RegisterOutcome, UnregisterOutcome,
    ViewId,
};
use crate::grain::{CallError, GrainId, PayloadFormat};
use crate::membership::Incarnation;

/// A grain call between nodes.
///
/// postcard has no field tags, so fields are never reordered or removed: a new field goes into
/// a new variant (`V2`) appended at the end.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Envelope {
    /// The first version.
    V1(CallEnvelope),
}

/// Fields of a grain call between nodes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CallEnvelope {
    /// The called grain.
    pub grain: GrainId,
    /// Method name.
    pub method: String,
    /// Encoding of `payload`.
    pub format: PayloadFormat,
    /// The encoded request.
    pub payload: Vec<u8>,
    /// Deadline in milliseconds since the Unix epoch.
    ///
    /// NOTE: this assumes node clocks agree to well under the call timeout, which holds on one
    /// machine and on NTP-synchronised hosts; a skewed receiver rejects or extends calls.
    pub deadline_unix_ms: u64,
    /// W3C `traceparent` of the caller's span, if any.
    pub trace_parent: Option<String>,
    /// Forwards taken so far.
    pub hops: u32,
    /// The receiver's action when it does not host the grain.
    pub route: Route,
}

/// The action of a receiving node for a call to a grain it does not host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Route {
    /// The sender resolved this node as the host: reply `NotHere` if that is stale.
    Deliver,
    /// Placement chose this node: activate the grain here (registering it in the directory).
    ActivateHere,
}

/// The reply to a [`CallEnvelope`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum CallReply {
    /// The turn ran and returned a reply.
    Ok {
        /// The encoded reply, in the request's format.
        payload: Vec<u8>,
        /// Name of the node whose activation served the call.
        served_by: String,
        /// Forwards the call took in all.
        hops: u32,
    },
    /// The receiver does not host the grain; the sender re-resolves and nothing ran.
    NotHere,
    /// The call failed.
    Failed(CallError),
}

/// A directory request between nodes, and the reply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum DirectoryEnvelope {
    /// The first version.
    V1(DirectoryRequest),
}

/// The reply to a [`DirectoryEnvelope`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum DirectoryReplyEnvelope {
    /// The first version.
    V1(DirectoryResponse),
}

/// A request to the directory partition that owns a grain.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum DirectoryRequest {
    /// Where is the activation of `grain`?
    Lookup {
        /// The grain.
        grain: GrainId,
    },
    /// Register a new activation, compare-and-set on `expect`.
    Register {
        /// The activation to register.
        entry: DirectoryEntry,
        /// The condition the partition's entry must meet for the registration to win.
        expect: Expect,
    },
    /// Re-register activations the sender hosts, after a membership change.
    Reassert {
        /// The sender's activations owned by the receiver.
        entries: Vec<DirectoryEntry>,
    },
    /// Remove the entry of an activation that was deactivated.
    Unregister {
        /// The grain.
        grain: GrainId,
        /// The host of the activation.
        host: Incarnation,
        /// The deactivated activation.
        activation_id: u64,
    },
    /// Entries that moved to the receiver because membership changed.
    HandOff {
        /// The previous owner.
        from: Incarnation,
        /// The entries now owned by the receiver.
        entries: Vec<DirectoryEntry>,
    },
    /// The sender finished its hand-offs and re-assertions for `view`.
    SyncComplete {
        /// The sender.
        from: Incarnation,
        /// The membership view the sender synchronised.
        view: ViewId,
    },
}

/// The reply to a [`DirectoryRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum DirectoryResponse {
    /// Reply to `Lookup`.
    Lookup(LookupOutcome),
    /// Reply to `Register`.
    Register(RegisterOutcome),
    /// Reply to `Reassert`, one outcome per entry in order.
    Reassert(Vec<RegisterOutcome>),
    /// Reply to `Unregister`.
    Unregister(UnregisterOutcome),
    /// Reply to `HandOff`: what the sender must carry out (forwards, deactivations).
    Commands(Vec<DirectoryCommand>),
    /// Reply to `SyncComplete`.
    Ack,
}

impl DirectoryRequest {
    /// Serves the request with `partition` at `now`. The node runtime and the simulator both
    /// serve directory requests through this one function.
    pub fn serve(
        self,
        partition: &mut crate::directory::DirectoryPartition,
        now: crate::clock::Millis,
    ) -> DirectoryResponse {
        match self {
            DirectoryRequest::Lookup { grain } => {
                DirectoryResponse::Lookup(partition.handle_lookup(&grain, now))
            }
            DirectoryRequest::Register { entry, expect } => {
                DirectoryResponse::Register(partition.handle_register(entry, expect, now))
            }
            DirectoryRequest::Reassert { entries } => DirectoryResponse::Reassert(
                entries
                    .into_iter()
                    .map(|entry| partition.handle_reassert(entry, now))
                    .collect(),
            ),
            DirectoryRequest::Unregister {
                grain,
                host,
                activation_id,
            } => DirectoryResponse::Unregister(partition.handle_unregister(
                &grain,
                &host,
                activation_id,
                now,
            )),
            DirectoryRequest::HandOff { from, entries } => {
                DirectoryResponse::Commands(partition.handle_handoff(&from, entries, now))
            }
            DirectoryRequest::SyncComplete { from, view } => {
                partition.handle_sync_complete(&from, view, now);
                DirectoryResponse::Ack
            }
        }
    }
}
