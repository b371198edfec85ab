//! The node as the transport's inbound handler: forwarded calls and directory requests.

use std::time::Instant;

use tokio::sync::watch;

use super::node::Node;
use crate::transport::{
    BoxFuture, CallReply, DirectoryEnvelope, DirectoryReplyEnvelope, Envelope, InboundHandler,
};

/// Count of the requests from peers that this node is serving, so that leaving can wait for
/// their replies before it stops the transport.
pub(crate) struct InboundRequests {
    in_flight: watch::Sender<usize>,
}

impl Default for InboundRequests {
    fn default() -> Self {
        Self {
            in_flight: watch::channel(0).0,
        }
    }
}

/// Guard of one inbound request being served. Dropping it stops counting the request.
pub(crate) struct InboundGuard<'a>(&'a InboundRequests);

impl InboundRequests {
    /// Counts one request until the returned guard is dropped.
    pub(crate) fn begin(&self) -> InboundGuard<'_> {
        self.in_flight.send_modify(|count| *count += 1);
        InboundGuard(self)
    }

    /// Returns the number of requests being served.
    pub(crate) fn in_flight(&self) -> usize {
        *self.in_flight.borrow()
    }

    /// Waits until no request is being served, or until `deadline`; returns whether none is.
    pub(crate) async fn wait_idle(&self, deadline: Instant) -> bool {
        let mut in_flight = self.in_flight.subscribe();
        let idle = in_flight.wait_for(|count| *count == 0);
        matches!(
            tokio::time::timeout_at(deadline.into(), idle).await,
            Ok(Ok(_))
        )
    }
}

impl Drop for InboundGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|count| *count -= 1);
    }
}

impl InboundHandler for Node {
    fn handle_call(&self, envelope: Envelope) -> BoxFuture<'_, CallReply> {
        Box::pin(async move {
            let _serving = self.inner.inbound.begin();
            let Envelope::V1(call) = envelope;
            let reply = self.handle_forwarded(call).await;
            self.inner.metrics.inbound_call_replies.inc();
            reply
        })
    }

    fn handle_cast(&self, envelope: Envelope) {
        let Envelope::V1(call) = envelope;
        self.receive_oneway(call);
    }

    fn handle_directory(
        &self,
        request: DirectoryEnvelope,
    ) -> BoxFuture<'_, DirectoryReplyEnvelope> {
        Box::pin(async move {
            let _serving = self.inner.inbound.begin();
            let DirectoryEnvelope::V1(request) = request;
            DirectoryReplyEnvelope::V1(self.handle_directory_locally(request))
        })
    }

    fn handle_migrate(
        &self,
        request: crate::migration::MigrationEnvelope,
    ) -> BoxFuture<'_, crate::migration::MigrationReply> {
        Box::pin(async move {
            let _serving = self.inner.inbound.begin();
            let crate::migration::MigrationEnvelope::V1(request) = request;
            self.handle_migration_in(request).await
        })
    }

    fn reject_inbound(&self, detail: &str) {
        self.inner.metrics.rejected_messages.inc();
        tracing::warn!(node = %self.id().name, %detail, "rejected an undecodable cluster message");
    }
}
