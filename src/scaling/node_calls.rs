//! The gRPC calls a scale-in makes to one node: drain it, count its activations, make it leave.

use std::net::SocketAddr;
use std::time::Duration;

use crate::api::pb;
use crate::api::pb::cluster_client::ClusterClient;
use crate::api::pb::grains_client::GrainsClient;
use crate::membership::NodeState;
use crate::runtime::Node;

/// Time to open a connection to a node's gRPC API.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of the short calls: counting activations and asking an empty node to leave.
const SHORT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra time the deadline of a drain allows beyond the drain timeout for the reply.
const DRAIN_REPLY_MARGIN: Duration = Duration::from_secs(10);

async fn channel(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<tonic::transport::Channel, tonic::Status> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|error| tonic::Status::internal(error.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|error| tonic::Status::unavailable(format!("cannot connect to {addr}: {error}")))
}

/// Returns the gRPC address of the live member `name` in `node`'s view.
pub fn grpc_addr_of(node: &Node, name: &str) -> Result<SocketAddr, tonic::Status> {
    node.members()
        .into_iter()
        .find(|member| member.id.name == name && member.state != NodeState::Dead)
        .map(|member| member.id.grpc_addr())
        .ok_or_else(|| tonic::Status::not_found(format!("{name} is not a live member")))
}

/// Drains `name` through the gRPC API at `via`, which forwards the request, and keeps the
/// node in the cluster afterwards.
pub async fn drain(
    via: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<pb::NodeDrainResponse, tonic::Status> {
    let channel = channel(via, timeout + DRAIN_REPLY_MARGIN).await?;
    let request = pb::NodeDrainRequest {
        node: name.to_owned(),
        timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        leave_after: false,
    };
    let response = ClusterClient::new(channel).drain_node(request).await?;
    Ok(response.into_inner())
}

/// Returns the number of activations that the node `name` at `addr` reports for itself.
///
/// The node serves `Grains.ListActivations` from its own activation table, so the count does
/// not depend on the drain reply or on the load gossip. Fails when another node replies.
pub async fn own_activation_count(addr: SocketAddr, name: &str) -> Result<u64, tonic::Status> {
    let channel = channel(addr, SHORT_CALL_TIMEOUT).await?;
    let request = pb::ListActivationsRequest {
        grain_type: String::new(),
        limit: 1,
    };
    let response = GrainsClient::new(channel)
        .list_activations(request)
        .await?
        .into_inner();
    if response.node != name {
        return Err(tonic::Status::failed_precondition(format!(
            "{addr} is {}, not {name}",
            response.node
        )));
    }
    Ok(response.total)
}

/// Asks the drained node `name` at `addr` to leave the cluster and exit.
///
/// The request is a `DrainNode` with `leave_after`, sent to the node itself. The node has no
/// activations left, so its drain ends at once and it leaves.
pub async fn request_leave(addr: SocketAddr, name: &str) -> Result<(), tonic::Status> {
    let channel = channel(addr, SHORT_CALL_TIMEOUT).await?;
    let request = pb::NodeDrainRequest {
        node: name.to_owned(),
        timeout_ms: u32::try_from(SHORT_CALL_TIMEOUT.as_millis()).unwrap_or(u32::MAX),
        leave_after: true,
    };
    let response = ClusterClient::new(channel)
        .drain_node(request)
        .await?
        .into_inner();
    if response.remaining > 0 {
        return Err(tonic::Status::failed_precondition(format!(
            "{name} holds {} activations again, so it does not leave",
            response.remaining
        )));
    }
    Ok(())
}
