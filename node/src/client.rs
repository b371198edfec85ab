//! gRPC client helpers shared by `gristmill ctl` and `gristmill local`: connecting, JSON
//! invokes, and JSON views of the API messages.

use std::time::Duration;

use gristmill::api::pb;
use gristmill::api::pb::cluster_client::ClusterClient;
use gristmill::api::pb::grains_client::GrainsClient;
use serde_json::{Value, json};
use tonic::transport::{Channel, Endpoint};

/// Time allowed to open the TCP connection to a node's gRPC API.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Clients of both gRPC services of one node, sharing one connection.
#[derive(Clone)]
pub struct NodeClient {
    /// The `Cluster` service: members and load.
    pub cluster: ClusterClient<Channel>,
    /// The `Grains` service: calls and activations.
    pub grains: GrainsClient<Channel>,
}

/// A failed gRPC connection, or a call that returned an error status.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is not a valid `host:port`.
    #[error("invalid address {addr:?}: {source}")]
    Address {
        /// The address as given.
        addr: String,
        /// The parse error.
        source: tonic::transport::Error,
    },
    /// No connection could be opened; the node may not be running. Retrying may help.
    #[error(
        "cannot connect to {addr}: {}; check that a node runs there and that the address \
         is the grpc_addr of its ready line",
        error_chain(.source)
    )]
    Connect {
        /// The address dialed.
        addr: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The node returned an error status; the message starts with the canonical code name,
    /// such as `NOT_FOUND`.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(#[from] tonic::Status),
}

/// Returns `error` followed by its causes, such as `transport error: Connection refused`;
/// tonic's transport error alone prints only its first line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let line = inner.to_string();
        if !text.ends_with(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = inner.source();
    }
    text
}

/// Returns whether `status` is tonic's report that the client's request timeout passed, which
/// tonic 0.14 gives as `CANCELLED: Timeout expired`.
pub fn is_request_timeout(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Cancelled && status.message() == "Timeout expired"
}

/// Returns a hint for a status that a server which is not a Gristmill gRPC API causes on the
/// client side (an HTTP/1 server, a cluster or metrics port), or `None`.
///
/// Such a status comes from the client library, not from the server, so it carries no
/// response headers, or it comes from an HTTP server that sent no gRPC status. A status from
/// a node always carries both.
pub fn wrong_port_hint(status: &tonic::Status, addr: &str) -> Option<String> {
    use tonic::Code;

    if is_request_timeout(status) {
        return Some(format!(
            "{addr} accepted the connection but sent no reply in time; the node may be \
             paused (SIGSTOP), overloaded or stuck, so check its process and log"
        ));
    }
    let from_client = status.metadata().is_empty()
        && matches!(
            status.code(),
            Code::Internal | Code::Unknown | Code::Cancelled
        );
    let protocol_error = [
        "h2 protocol error",
        "invalid content-type",
        "grpc-status header missing",
    ]
    .iter()
    .any(|pattern| status.message().contains(pattern));
    (from_client || protocol_error).then(|| {
        format!(
            "{addr} does not answer as a Gristmill gRPC API; use the grpc_addr of the node's \
             ready line, not its cluster, gossip or metrics address"
        )
    })
}

/// Returns the canonical gRPC name of `code`, as the gRPC status code specification spells it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;

    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl NodeClient {
    /// Connects to the gRPC API at `addr` (`host:port`).
    pub async fn connect(addr: &str) -> Result<NodeClient, ClientError> {
        Self::connect_with(addr, None).await
    }

    /// Connects to the gRPC API at `addr`; with `request_timeout`, every request that has no
    /// reply within it ends with `CANCELLED: Timeout expired`.
    pub async fn connect_with(
        addr: &str,
        request_timeout: Option<Duration>,
    ) -> Result<NodeClient, ClientError> {
        let channel = connect_channel(addr, request_timeout).await?;
        Ok(NodeClient {
            cluster: ClusterClient::new(channel.clone()),
            grains: GrainsClient::new(channel),
        })
    }

    /// Calls `method` on grain `grain_type`/`key` with a JSON payload, and returns the reply.
    ///
    /// A `timeout_ms` of 0 takes the node's default call deadline.
    pub async fn invoke_json(
        &mut self,
        grain_type: &str,
        key: &str,
        method: &str,
        payload: &Value,
        timeout_ms: u32,
    ) -> Result<pb::InvokeResponse, tonic::Status> {
        let request = pb::InvokeRequest {
            grain_type: grain_type.to_owned(),
            key: key.to_owned(),
            method: method.to_owned(),
            payload: serde_json::to_vec(payload).expect("a JSON value always encodes"),
            format: pb::PayloadFormat::Json as i32,
            timeout_ms,
        };
        Ok(self.grains.invoke(request).await?.into_inner())
    }

    /// Lists the members in the node's membership view.
    pub async fn members(&mut self) -> Result<pb::ListMembersResponse, tonic::Status> {
        let request = pb::ListMembersRequest {};
        Ok(self.cluster.list_members(request).await?.into_inner())
    }

    /// Returns the number of activations the node hosts.
    pub async fn activation_count(&mut self) -> Result<u64, tonic::Status> {
        let request = pb::ListActivationsRequest {
            grain_type: String::new(),
            limit: 1,
        };
        Ok(self
            .grains
            .list_activations(request)
            .await?
            .into_inner()
            .total)
    }
}

/// Returns the reply payload of an invoke as JSON, or as a JSON string when it is not JSON.
pub fn reply_json(response: &pb::InvokeResponse) -> Value {
    serde_json::from_slice(&response.payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&response.payload).into()))
}

/// Returns the upper-case state name (`ACTIVE`), as the API and metrics labels spell it.
pub fn state_name(state: i32) -> &'static str {
    match pb::NodeState::try_from(state) {
        Ok(pb::NodeState::Joining) => "JOINING",
        Ok(pb::NodeState::Active) => "ACTIVE",
        Ok(pb::NodeState::Draining) => "DRAINING",
        Ok(pb::NodeState::Leaving) => "LEAVING",
        Ok(pb::NodeState::Dead) => "DEAD",
        Ok(pb::NodeState::Unspecified) | Err(_) => "UNSPECIFIED",
    }
}

/// Returns a member as JSON, with its state by name.
pub fn member_json(member: &pb::Member) -> Value {
    let load = member.load.unwrap_or_default();
    json!({
        "name": member.name,
        "boot_id": member.boot_id,
        "state": state_name(member.state),
        "is_self": member.is_self,
        "gossip_addr": member.gossip_addr,
        "cluster_addr": member.cluster_addr,
        "grpc_addr": member.grpc_addr,
        "meta_version": member.meta_version,
        "started_at_unix_ms": member.started_at_unix_ms,
        "load": {
            "activations": load.activations,
            "calls_per_sec": load.calls_per_sec,
            "mailbox_depth_total": load.mailbox_depth_total,
            "mailbox_depth_max": load.mailbox_depth_max,
            "cpu_percent": load.cpu_percent,
            "memory_bytes": load.memory_bytes,
        },
    })
}

/// Returns an activation as JSON.
pub fn activation_json(activation: &pb::Activation) -> Value {
    json!({
        "grain_type": activation.grain_type,
        "key": activation.key,
        "activation_id": activation.activation_id,
        "epoch": activation.epoch,
        "node": activation.node,
        "idle_ms": activation.idle_ms,
        "mailbox_depth": activation.mailbox_depth,
    })
}

/// Maximum interval between two HTTP/2 pings on a channel with a request timeout.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Connects a gRPC channel to the node at `addr` (host:port), with the connect timeout and,
/// when given, a timeout for each request.
pub async fn connect_channel(
    addr: &str,
    request_timeout: Option<Duration>,
) -> Result<Channel, ClientError> {
    let mut endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|source| ClientError::Address {
            addr: addr.to_owned(),
            source,
        })?
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(timeout) = request_timeout {
        // The timeout ends a request that gets no response, but not a stream that stops
        // (`scaling watch` on a paused node), so HTTP/2 pings unanswered for as long end it.
        endpoint = endpoint
            .timeout(timeout)
            .http2_keep_alive_interval(timeout.min(KEEPALIVE_INTERVAL))
            .keep_alive_timeout(timeout)
            .keep_alive_while_idle(true);
    }
    endpoint
        .connect()
        .await
        .map_err(|source| ClientError::Connect {
            addr: addr.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_error_starts_with_code_name() {
        let cases = [
            (tonic::Code::NotFound, "NOT_FOUND: no such grain"),
            (
                tonic::Code::InvalidArgument,
                "INVALID_ARGUMENT: no such grain",
            ),
            (tonic::Code::Unavailable, "UNAVAILABLE: no such grain"),
        ];
        for (code, expected) in cases {
            let error = ClientError::from(tonic::Status::new(code, "no such grain"));
            assert_eq!(error.to_string(), expected, "{code:?}");
        }
    }
}
