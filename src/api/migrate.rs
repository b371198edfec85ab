//! Migrate and DrainNode: run on the node that holds the grain (or is drained), forwarded there
//! over gRPC when another node receives the request.

use tonic::Status;

use super::pb;
use crate::runtime::Node;

/// Moves one grain; see `Grains.Migrate`.
pub(crate) async fn migrate(
    _node: &Node,
    _request: pb::MigrateRequest,
) -> Result<pb::MigrateResponse, Status> {
    Err(Status::unimplemented("migration is not available yet"))
}

/// Drains one node; see `Cluster.DrainNode`.
pub(crate) async fn drain_node(
    _node: &Node,
    _request: pb::NodeDrainRequest,
) -> Result<pb::NodeDrainResponse, Status> {
    Err(Status::unimplemented("draining is not available yet"))
}
