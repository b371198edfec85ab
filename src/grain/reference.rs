//! `GrainRef<G>`: a typed handle for calling one grain from anywhere in the cluster.

use std::any::TypeId;
use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use super::methods::encoder_of;
use super::{CallError, Grain, GrainId, Handler, Method, Payload};
use crate::runtime::{CachedRoute, LocalRoute, Node};

/// A typed reference to the grain `id` of type `G`.
///
/// Holding a reference activates nothing; the first call does. References are cheap to clone
/// and stay valid across deactivation and migration. A reference caches the local
/// activation that served its last call and tries it first. A call that finds that
/// activation deactivated or migrated resolves the grain's current activation.
pub struct GrainRef<G> {
    pub(crate) id: GrainId,
    pub(crate) node: Node,
    pub(crate) timeout: Option<Duration>,
    /// The activation and methods that served this reference's local calls, for the next one.
    pub(crate) route: LocalRoute,
    pub(crate) grain_type: PhantomData<fn() -> G>,
}

impl<G: Grain> GrainRef<G> {
    /// Returns a reference to the grain `id` through `node`, with the node's default timeout.
    pub(crate) fn new(id: GrainId, node: Node) -> Self {
        Self {
            id,
            node,
            timeout: None,
            route: LocalRoute::default(),
            grain_type: PhantomData,
        }
    }

    /// Returns the id of the referenced grain.
    pub fn id(&self) -> &GrainId {
        &self.id
    }

    /// Returns a copy whose calls time out after `timeout` instead of the node's default.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Calls the method `M` and waits for its reply or the deadline.
    ///
    /// Every call ends: with the reply, the grain's own error ([`CallError::Grain`]), or a
    /// typed error such as [`CallError::DeadlineExceeded`] by the deadline.
    pub async fn call<M: Method>(&self, request: M) -> Result<M::Response, CallError>
    where
        G: Handler<M>,
    {
        let timeout = self.timeout.unwrap_or_else(|| self.node.call_timeout());
        let payload = Payload::Local {
            value: Box::new(request),
            encode: encoder_of::<M>(),
        };
        let cached = CachedRoute {
            route: &self.route,
            request: TypeId::of::<M>(),
        };
        let now = Instant::now();
        let reply = self
            .node
            .invoke_cached(&self.id, M::NAME, payload, now, now + timeout, cached)
            .await?;
        reply
            .payload
            .into_value::<M::Response>()
            .map_err(|e| CallError::Internal(format!("reply of {}.{}: {e}", self.id, M::NAME)))
    }

    /// Sends the method `M` one way: the grain runs it, and its reply is dropped.
    ///
    /// Returns once the message is queued in the grain's local activation or handed to the
    /// transport toward the grain's node, without waiting for the turn. The first message to
    /// a grain whose node this node does not know yet travels as a call, so that the grain is
    /// placed and activated as for [`GrainRef::call`]; that send returns after the turn.
    ///
    /// Delivery is at most once, and messages from one sender to one grain run in the order
    /// sent while the activation stays on its node; one that is queued when the activation
    /// stops or migrates may be lost. Use [`GrainRef::call`] when the sender must know that
    /// the grain ran the message.
    ///
    /// The timeout of [`GrainRef::with_timeout`] bounds the wait of a message that travels as
    /// a call, and a message that has not started running by then is dropped.
    ///
    /// Errors only for failures the sender can see: an unknown grain type or method, a
    /// message that cannot be encoded or does not fit in a cluster frame, a node that is
    /// shutting down, or, for a message that travels as a call, that call's routing errors.
    /// The grain's own error or panic is never returned.
    pub async fn send<M: Method>(&self, message: M) -> Result<(), CallError>
    where
        G: Handler<M>,
    {
        let timeout = self.timeout.unwrap_or_else(|| self.node.call_timeout());
        let payload = Payload::Local {
            value: Box::new(message),
            encode: encoder_of::<M>(),
        };
        self.node
            .send_oneway(self.id.clone(), M::NAME, payload, Instant::now() + timeout)
            .await
    }
}

impl<G> Clone for GrainRef<G> {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            node: self.node.clone(),
            timeout: self.timeout,
            route: self.route.clone(),
            grain_type: PhantomData,
        }
    }
}

impl<G> fmt::Debug for GrainRef<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrainRef").field("id", &self.id).finish()
    }
}
