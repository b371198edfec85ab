//! The node as the transport's inbound handler: forwarded calls and directory requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::Notify;

use super::node::Node;
use crate::transport::{
    BoxFuture, CallReply, DirectoryEnvelope, DirectoryReplyEnvelope, Envelope, InboundHandler,
};

/// Count of the requests from peers that this node is serving, so that leaving can wait for
/// their replies before it stops the transport.
///
/// Every inbound call passes here twice, so the count is an atomic and a request that ends
/// wakes waiters only when some wait: a `watch` channel would wake its notifier on every
/// change.
#[derive(Default)]
pub(crate) struct InboundRequests {
    in_flight: AtomicUsize,
    /// Calls of `wait_idle` that are waiting.
    waiting: AtomicUsize,
    idle: Notify,
}

/// Guard of one inbound request being served. Dropping it stops counting the request.
pub(crate) struct InboundGuard<'a>(&'a InboundRequests);

impl InboundRequests {
    /// Counts one request until the returned guard is dropped.
    pub(crate) fn begin(&self) -> InboundGuard<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InboundGuard(self)
    }

    /// Returns the number of requests being served.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until no request is being served, or until `deadline`; returns whether none is.
    pub(crate) async fn wait_idle(&self, deadline: Instant) -> bool {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let idle = async {
            loop {
                let notified = self.idle.notified();
                tokio::pin!(notified);
                // Registered before the count is read, so a request that ends after the read
                // wakes this wait.
                notified.as_mut().enable();
                if self.in_flight() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let outcome = tokio::time::timeout_at(deadline.into(), idle).await.is_ok();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        outcome || self.in_flight() == 0
    }
}

impl Drop for InboundGuard<'_> {
    fn drop(&mut self) {
        let before = self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        if before == 1 && self.0.waiting.load(Ordering::SeqCst) > 0 {
            self.0.idle.notify_waiters();
        }
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
