//! The gRPC server of a node: the Gristmill services, grpc.health.v1 and server reflection.

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use super::cluster::ClusterService;
use super::grains::GrainsService;
use super::keda::KedaScalerService;
use super::scaling::ScalingService;
use super::{keda_pb, pb};
use crate::first_byte::deadline_incoming;
use crate::runtime::Node;

/// Health service name that reports SERVING for as long as the node process runs.
pub const LIVENESS_SERVICE: &str = "liveness";

/// Starts serving the gRPC API on `listener` until the node stops.
///
/// Health starts NOT_SERVING for the whole server (service `""`) and every Gristmill
/// service, and turns SERVING only while the node is Active, so load balancers and Kubernetes
/// readiness probes send no traffic to a joining or draining node. Connections that send
/// nothing within the node's `first_byte_timeout_ms` are closed.
pub(crate) fn serve(node: Node, listener: TcpListener) {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let _ = node.inner.health.set(reporter.clone());
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1();
    let reflection = match reflection {
        Ok(reflection) => reflection,
        Err(error) => {
            tracing::error!(%error, "cannot build gRPC reflection; serving without it");
            return serve_without_reflection(node, listener, health_service, reporter);
        }
    };
    tokio::spawn(async move {
        // The node may have become Active before the reporter existed, so start from its
        // current state rather than from NOT_SERVING.
        set_all(&reporter, readiness_status(&node)).await;
        // Liveness stays SERVING while the process runs, so a liveness probe never restarts a
        // node that is joining or draining (both NOT_SERVING for readiness).
        reporter
            .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
            .await;
        let incoming = deadline_incoming(listener, node.inner.config.first_byte_timeout());
        let stopped = {
            let node = node.clone();
            async move { node.stopped().await }
        };
        let result = Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(pb::cluster_server::ClusterServer::new(ClusterService::new(
                node.clone(),
            )))
            .add_service(pb::scaling_server::ScalingServer::new(ScalingService::new(
                node.clone(),
            )))
            .add_service(pb::grains_server::GrainsServer::new(GrainsService::new(
                node.clone(),
            )))
            .add_service(keda_pb::external_scaler_server::ExternalScalerServer::new(
                KedaScalerService::new(node),
            ))
            .serve_with_incoming_shutdown(incoming, stopped)
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "gRPC server failed");
        }
    });
}

fn serve_without_reflection(
    node: Node,
    listener: TcpListener,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    reporter: tonic_health::server::HealthReporter,
) {
    tokio::spawn(async move {
        // The node may have become Active before the reporter existed, so start from its
        // current state rather than from NOT_SERVING.
        set_all(&reporter, readiness_status(&node)).await;
        // Liveness stays SERVING while the process runs, so a liveness probe never restarts a
        // node that is joining or draining (both NOT_SERVING for readiness).
        reporter
            .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
            .await;
        let incoming = deadline_incoming(listener, node.inner.config.first_byte_timeout());
        let result = Server::builder()
            .add_service(health_service)
            .add_service(pb::cluster_server::ClusterServer::new(ClusterService::new(
                node.clone(),
            )))
            .add_service(pb::scaling_server::ScalingServer::new(ScalingService::new(
                node.clone(),
            )))
            .add_service(pb::grains_server::GrainsServer::new(GrainsService::new(
                node.clone(),
            )))
            .add_service(keda_pb::external_scaler_server::ExternalScalerServer::new(
                KedaScalerService::new(node),
            ))
            .serve_with_incoming(incoming)
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "gRPC server failed");
        }
    });
}

async fn set_all(reporter: &tonic_health::server::HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status("gristmill.v1.Cluster", status)
        .await;
    reporter
        .set_service_status("gristmill.v1.Grains", status)
        .await;
    reporter
        .set_service_status("gristmill.v1.Scaling", status)
        .await;
    reporter
        .set_service_status("externalscaler.ExternalScaler", status)
        .await;
}

fn readiness_status(node: &Node) -> ServingStatus {
    if node.state() == crate::membership::NodeState::Active {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// Reports the node SERVING while it is Active and NOT_SERVING otherwise.
pub(crate) fn set_health(node: &Node, serving: bool) {
    let Some(reporter) = node.inner.health.get().cloned() else {
        return;
    };
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    tokio::spawn(async move { set_all(&reporter, status).await });
}
