//! The node as the transport's inbound handler: forwarded calls and directory requests.

use super::node::Node;
use crate::transport::{
    BoxFuture, CallReply, DirectoryEnvelope, DirectoryReplyEnvelope, Envelope, InboundHandler,
};

impl InboundHandler for Node {
    fn handle_call(&self, envelope: Envelope) -> BoxFuture<'_, CallReply> {
        Box::pin(async move {
            let Envelope::V1(call) = envelope;
            self.handle_forwarded(call).await
        })
    }

    fn handle_directory(
        &self,
        request: DirectoryEnvelope,
    ) -> BoxFuture<'_, DirectoryReplyEnvelope> {
        Box::pin(async move {
            let DirectoryEnvelope::V1(request) = request;
            DirectoryReplyEnvelope::V1(self.handle_directory_locally(request))
        })
    }

    fn handle_migrate(
        &self,
        request: crate::migration::MigrationEnvelope,
    ) -> BoxFuture<'_, crate::migration::MigrationReply> {
        Box::pin(async move {
            let crate::migration::MigrationEnvelope::V1(request) = request;
            self.handle_migration_in(request).await
        })
    }

    fn reject_inbound(&self, detail: &str) {
        self.inner.metrics.rejected_messages.inc();
        tracing::warn!(node = %self.id().name, %detail, "rejected an undecodable cluster message");
    }
}
