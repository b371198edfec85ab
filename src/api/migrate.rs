//! Migrate and DrainNode: run on the node that holds the grain (or is drained), forwarded there
//! over gRPC when another node receives the request.

use std::time::{Duration, Instant};

use tonic::Status;

use super::pb;
use super::status::call_error_status;
use crate::directory::LookupOutcome;
use crate::grain::{CallError, GrainId};
use crate::membership::NodeState;
use crate::migration::MigrationError;
use crate::runtime::Node;
use crate::transport::{DirectoryRequest, DirectoryResponse};

/// Drain timeout when the request names none.
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

fn migration_status(error: &MigrationError) -> Status {
    match error {
        MigrationError::NotHere { .. } => Status::not_found(error.to_string()),
        MigrationError::Immovable { .. } | MigrationError::NoTarget { .. } => {
            Status::failed_precondition(error.to_string())
        }
        MigrationError::Rejected { .. } | MigrationError::Stopped { .. } => {
            Status::aborted(error.to_string())
        }
        MigrationError::Failed { .. } => Status::unavailable(error.to_string()),
        MigrationError::TimedOut { .. } => {
            Status::deadline_exceeded(format!("{error}; raise timeout_ms (ctl: --timeout-ms)"))
        }
    }
}

/// Returns the status of a migration that failed because its deadline passed, which a longer
/// deadline may avoid.
fn deadline_passed(grain: &GrainId, timeout: Duration, cause: &dyn std::fmt::Display) -> Status {
    Status::deadline_exceeded(format!(
        "migration of {grain} did not finish within its {} ms deadline ({cause}); raise \
         timeout_ms (ctl: --timeout-ms)",
        timeout.as_millis()
    ))
}

/// Returns a gRPC channel to a peer's API, reusing one channel per address; tonic channels
/// reconnect by themselves when the connection drops.
async fn peer_channel(addr: &str) -> Result<tonic::transport::Channel, Status> {
    static CHANNELS: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<String, tonic::transport::Channel>>,
    > = std::sync::LazyLock::new(Default::default);
    if let Some(channel) = CHANNELS
        .lock()
        .expect("channel cache lock poisoned")
        .get(addr)
    {
        return Ok(channel.clone());
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Status::internal(format!("invalid peer address {addr}: {e}")))?
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
    CHANNELS
        .lock()
        .expect("channel cache lock poisoned")
        .insert(addr.to_string(), channel.clone());
    Ok(channel)
}

/// Moves one grain; see `Grains.Migrate`.
pub(crate) async fn migrate(
    node: &Node,
    request: pb::MigrateRequest,
) -> Result<pb::MigrateResponse, Status> {
    let grain = GrainId::new(request.grain_type.clone(), request.key.clone());
    node.registry()
        .require(&grain.grain_type)
        .map_err(|error| call_error_status(&error))?;
    let timeout = match request.timeout_ms {
        0 => node.call_timeout(),
        ms => Duration::from_millis(u64::from(ms)),
    };
    if !node.is_movable(&grain) {
        // Checked first: a stateless worker has no directory entry to look up elsewhere.
        return Err(migration_status(&MigrationError::Immovable {
            grain_type: grain.grain_type.clone(),
            grain,
        }));
    }
    let deadline = Instant::now() + timeout;
    let target = (!request.target_node.is_empty()).then_some(request.target_node.as_str());
    match node.migrate(&grain, target, deadline).await {
        Ok(report) => {
            return Ok(pb::MigrateResponse {
                from_node: report.from_node,
                to_node: report.to_node,
                epoch: report.epoch,
                duration_us: u64::try_from(report.duration.as_micros()).unwrap_or(u64::MAX),
            });
        }
        Err(MigrationError::NotHere { .. }) => {}
        Err(error @ MigrationError::Failed { .. }) if Instant::now() >= deadline => {
            return Err(deadline_passed(&grain, timeout, &error));
        }
        Err(error) => return Err(migration_status(&error)),
    }
    // Not active here: ask the directory where it is and forward the request to that node.
    let lookup = DirectoryRequest::Lookup {
        grain: grain.clone(),
    };
    let host = match node.directory_request(&grain, lookup, deadline).await {
        Ok(DirectoryResponse::Lookup(LookupOutcome::Found(entry))) => entry.host,
        Ok(DirectoryResponse::Lookup(LookupOutcome::NotFound)) => {
            return Err(Status::not_found(format!(
                "{grain} is not active on any node"
            )));
        }
        Ok(_) => {
            return Err(Status::unavailable(
                "the directory is settling after a membership change; retry",
            ));
        }
        Err(error @ CallError::DeadlineExceeded { .. }) => {
            return Err(deadline_passed(&grain, timeout, &error));
        }
        Err(error) => return Err(super::call_error_status(&error)),
    };
    if host == node.id().incarnation() {
        return Err(Status::unavailable(format!("{grain} is moving; retry")));
    }
    let member = node
        .members()
        .into_iter()
        .find(|m| m.incarnation() == host && m.is_live());
    let member = member.ok_or_else(|| {
        Status::unavailable(format!("{grain}'s node {host} is not a live member"))
    })?;
    let mut client = pb::grains_client::GrainsClient::new(
        peer_channel(&member.id.grpc_addr().to_string()).await?,
    );
    Ok(client.migrate(request).await?.into_inner())
}

/// Drains one node; see `Cluster.DrainNode`.
pub(crate) async fn drain_node(
    node: &Node,
    request: pb::NodeDrainRequest,
) -> Result<pb::NodeDrainResponse, Status> {
    let timeout = match request.timeout_ms {
        0 => DEFAULT_DRAIN_TIMEOUT,
        ms => Duration::from_millis(u64::from(ms)),
    };
    let members = node.members();
    let target = members
        .iter()
        .find(|m| m.id.name == request.node && m.is_live());
    let Some(target) = target else {
        return Err(Status::not_found(format!(
            "node {:?} is not a live member; list them with `gristmill ctl members` (Cluster/ListMembers)",
            request.node
        )));
    };
    let others_active = members
        .iter()
        .filter(|m| m.id.name != request.node && m.state == NodeState::Active)
        .count();
    if others_active == 0 {
        return Err(Status::failed_precondition(format!(
            "draining node {:?} would leave no other Active node to take its grains; start another node first, or stop this one with SIGTERM",
            request.node
        )));
    }
    if request.node != node.id().name {
        let mut client = pb::cluster_client::ClusterClient::new(
            peer_channel(&target.id.grpc_addr().to_string()).await?,
        );
        return Ok(client.drain_node(request).await?.into_inner());
    }
    let report = node.drain(timeout).await;
    if request.leave_after && report.remaining == 0 {
        // Reply first, then leave: the caller waits for the drain report, not for the exit.
        let leaving = node.clone();
        tokio::spawn(async move { leaving.leave().await });
    }
    Ok(pb::NodeDrainResponse {
        node: node.id().name.to_string(),
        migrated: report.migrated,
        deactivated: report.deactivated,
        remaining: report.remaining,
        duration_ms: u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
    })
}
