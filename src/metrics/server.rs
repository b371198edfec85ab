//! The HTTP server behind `/metrics`.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use tokio::net::TcpListener;

use super::NodeMetrics;
use crate::first_byte::DeadlineListener;
use crate::runtime::Node;
use crate::transport::RejectReason;

/// Serves `GET /metrics` on `listener` until the node stops. Connections that send nothing
/// within the node's `first_byte_timeout_ms` are closed.
pub(crate) fn serve(node: Node, listener: TcpListener) {
    let listener = DeadlineListener {
        listener,
        timeout: node.inner.config.first_byte_timeout(),
    };
    let app = Router::new()
        .route("/metrics", get(render))
        .with_state(node.clone());
    tokio::spawn(async move {
        let stopped = async move { node.stopped().await };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!(%error, "metrics endpoint failed");
        }
    });
}

async fn render(State(node): State<Node>) -> ([(&'static str, &'static str); 1], String) {
    let metrics = node.metrics();
    let rejected = &node.transport().counters().rejected_connections;
    for reason in RejectReason::ALL {
        NodeMetrics::raise_to(
            &metrics.rejected_frames.with_label_values(&[reason.label()]),
            rejected.get(reason),
        );
    }
    NodeMetrics::raise_to(
        &metrics.rejected_datagrams,
        node.inner.membership.rejected_datagrams(),
    );
    let membership = &node.inner.membership;
    NodeMetrics::raise_to(&metrics.quorum_sweeps, membership.quorum_sweeps());
    NodeMetrics::raise_to(&metrics.minority_fences, membership.minority_fences());
    NodeMetrics::raise_to(
        &metrics.unreachable_declared_down,
        membership.unreachable_declared_down(),
    );
    let mut text = metrics.encode();
    // The scaling supervisor keeps its metrics in a registry of its own.
    if let Some(supervisor) = crate::scaling::supervisor::SupervisorHandle::of(&node)
        && let Some(scaling) = supervisor.metrics().await
    {
        text.push_str(&scaling.encode());
    }
    ([("content-type", "text/plain; version=0.0.4")], text)
}
