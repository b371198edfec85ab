//! Membership watch of the client: follows `WatchMembership` and resubscribes on errors.

use std::sync::Weak;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::balancer::MemberUpdate;
use super::client::Inner;
use crate::api::pb;
use crate::api::pb::cluster_client::ClusterClient;
use crate::api::pb::membership_event::Kind;
use crate::membership::NodeState;

/// Quiet time after the last snapshot event that ends the snapshot. The stream sends the
/// snapshot as one burst and marks no end, so a pause or the first change event ends it.
const SNAPSHOT_SETTLE: Duration = Duration::from_millis(200);

/// Interval of HTTP/2 keepalive pings on the membership stream, and the time a ping or the
/// stream's opening has to be acknowledged.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// Follows membership until the client is dropped.
///
/// Each round watches through a known gateway, or through the next seed when none is known,
/// and on a stream error (including `DATA_LOSS` after missed events) waits
/// `resubscribe_after` and starts over with a fresh snapshot. The task holds only a weak
/// reference, so dropping the last client ends it.
pub(super) async fn watch_membership(inner: Weak<Inner>) {
    let mut round = 0_usize;
    loop {
        let (addr, pause) = {
            let Some(inner) = inner.upgrade() else { return };
            (
                source_address(&inner, round),
                inner.config.resubscribe_after,
            )
        };
        round = round.wrapping_add(1);
        match watch_once(&inner, &addr).await {
            Ok(()) => info!(addr = %addr, "membership stream ended; watching again"),
            Err(error) => {
                warn!(addr = %addr, %error, "membership watch failed; watching again");
                note_problem(&inner, format!("{addr}: {error}"));
            }
        }
        tokio::time::sleep(pause).await;
    }
}

/// Picks the address to watch through in round `round`: the gateways in turn, else the
/// seeds in turn.
fn source_address(inner: &Inner, round: usize) -> String {
    let gateways = inner.lock_core().balancer.gateways();
    if gateways.is_empty() {
        let seeds = &inner.config.seeds;
        seeds[round % seeds.len()].clone()
    } else {
        gateways[round % gateways.len()].1.clone()
    }
}

#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error("invalid address: {0}")]
    Address(tonic::transport::Error),
    #[error("cannot connect: {0}")]
    Connect(tonic::transport::Error),
    #[error("{}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
    #[error("no response to WatchMembership within {KEEPALIVE_INTERVAL:?}")]
    TimedOut,
}

async fn watch_once(inner: &Weak<Inner>, addr: &str) -> Result<(), WatchError> {
    let endpoint = {
        let Some(inner) = inner.upgrade() else {
            return Ok(());
        };
        inner.endpoint(addr).map_err(WatchError::Address)?
    };
    // Keepalive pings end the stream when the node stops responding, because the stream
    // itself is silent while membership does not change.
    let endpoint = endpoint
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_INTERVAL)
        .keep_alive_while_idle(true);
    let channel = endpoint.connect().await.map_err(WatchError::Connect)?;
    let mut cluster = ClusterClient::new(channel);
    let request = cluster.watch_membership(pb::WatchMembershipRequest {});
    let mut stream = tokio::time::timeout(KEEPALIVE_INTERVAL, request)
        .await
        .map_err(|_| WatchError::TimedOut)?
        .map_err(WatchError::Status)?
        .into_inner();
    debug!(addr = %addr, "watching membership");

    let Some(client) = inner.upgrade() else {
        return Ok(());
    };
    client.lock_core().balancer.begin_snapshot();
    drop(client);
    let mut in_snapshot = true;
    loop {
        let event = if in_snapshot {
            match tokio::time::timeout(SNAPSHOT_SETTLE, stream.message()).await {
                Ok(event) => event,
                Err(_) => {
                    end_snapshot(inner, addr);
                    in_snapshot = false;
                    continue;
                }
            }
        } else {
            stream.message().await
        };
        let Some(event) = event.map_err(WatchError::Status)? else {
            return Ok(());
        };
        if in_snapshot && event.kind != i32::from(Kind::Snapshot) {
            end_snapshot(inner, addr);
            in_snapshot = false;
        }
        let Some(client) = inner.upgrade() else {
            return Ok(());
        };
        if let Some(member) = event.member.as_ref().and_then(member_update) {
            let now = client.clock.now();
            let changes = client.lock_core().balancer.handle_member(member, now);
            client.apply_changes(changes);
        }
    }
}

/// Ends the snapshot, dropping the members it did not list.
fn end_snapshot(inner: &Weak<Inner>, addr: &str) {
    if let Some(client) = inner.upgrade() {
        let (changes, no_gateway) = {
            let mut core = client.lock_core();
            let changes = core.balancer.end_snapshot();
            (changes, core.balancer.gateways().is_empty())
        };
        client.apply_changes(changes);
        if no_gateway {
            let problem = format!(
                "{addr} lists no Active node yet; a cluster that is still forming lists only \
                 Joining nodes, so wait until `gristmill ctl members` shows ACTIVE"
            );
            note_problem(inner, problem);
        }
    }
}

/// Keeps `problem` as the latest reason why no gateway is known.
fn note_problem(inner: &Weak<Inner>, problem: String) {
    if let Some(client) = inner.upgrade() {
        *client
            .watch_problem
            .lock()
            .expect("watch problem lock poisoned") = Some(problem);
    }
}

/// Converts an API member; `None` for a member without a name.
fn member_update(member: &pb::Member) -> Option<MemberUpdate> {
    if member.name.is_empty() {
        return None;
    }
    let state = match pb::NodeState::try_from(member.state) {
        Ok(pb::NodeState::Joining) => NodeState::Joining,
        Ok(pb::NodeState::Active) => NodeState::Active,
        Ok(pb::NodeState::Draining) => NodeState::Draining,
        Ok(pb::NodeState::Leaving) => NodeState::Leaving,
        Ok(pb::NodeState::Dead) => NodeState::Dead,
        // An unknown state gets no traffic until the member reports a known one.
        Ok(pb::NodeState::Unspecified) | Err(_) => NodeState::Joining,
    };
    Some(MemberUpdate {
        name: member.name.clone(),
        boot_id: member.boot_id,
        grpc_addr: member.grpc_addr.clone(),
        state,
    })
}
