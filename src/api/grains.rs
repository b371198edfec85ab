//! The `gristmill.v1.Grains` service: calls to any grain through any node, and activations.

use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};

use super::pb;
use super::status::call_error_status;
use crate::grain::{GrainId, Payload, PayloadFormat};
use crate::runtime::Node;

/// Longest deadline a client may ask for, in milliseconds.
const MAX_TIMEOUT_MS: u32 = 3_600_000;

/// Routes grain calls and lists activations of one node.
pub struct GrainsService {
    node: Node,
}

impl GrainsService {
    /// Creates the service over `node`.
    pub fn new(node: Node) -> Self {
        Self { node }
    }
}

fn payload_format(format: i32) -> Result<PayloadFormat, Status> {
    match pb::PayloadFormat::try_from(format) {
        Ok(pb::PayloadFormat::Postcard) => Ok(PayloadFormat::Postcard),
        Ok(pb::PayloadFormat::Json) => Ok(PayloadFormat::Json),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown payload format {format}; use 0 (postcard) or 1 (json)"
        ))),
    }
}

#[tonic::async_trait]
impl pb::grains_server::Grains for GrainsService {
    async fn invoke(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        let request = request.into_inner();
        if request.grain_type.is_empty() || request.method.is_empty() {
            return Err(Status::invalid_argument(
                "grain_type and method must not be empty",
            ));
        }
        if request.timeout_ms > MAX_TIMEOUT_MS {
            return Err(Status::invalid_argument(format!(
                "timeout_ms {} is above the maximum of {MAX_TIMEOUT_MS}",
                request.timeout_ms
            )));
        }
        let format = payload_format(request.format)?;
        let timeout = match request.timeout_ms {
            0 => self.node.call_timeout(),
            ms => Duration::from_millis(u64::from(ms)),
        };
        let grain = GrainId::new(request.grain_type, request.key);
        let payload = Payload::Encoded {
            format,
            bytes: request.payload,
        };
        let reply = self
            .node
            .invoke(grain, &request.method, payload, Instant::now() + timeout)
            .await
            .map_err(|error| call_error_status(&error))?;
        let payload = reply
            .payload
            .into_bytes(format)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::InvokeResponse {
            payload,
            format: request.format,
            served_by: reply
                .served_by
                .unwrap_or_else(|| self.node.id().name.to_string()),
            hops: reply.hops,
        }))
    }

    async fn list_activations(
        &self,
        request: Request<pb::ListActivationsRequest>,
    ) -> Result<Response<pb::ListActivationsResponse>, Status> {
        let request = request.into_inner();
        if !request.grain_type.is_empty() {
            self.node
                .registry()
                .require(&request.grain_type)
                .map_err(|error| call_error_status(&error))?;
        }
        let now = Instant::now();
        let node_name = self.node.id().name.clone();
        let mut activations: Vec<pb::Activation> = self
            .node
            .activation_handles()
            .into_iter()
            .filter(|h| {
                request.grain_type.is_empty() || h.shared.grain.grain_type == request.grain_type
            })
            .map(|h| pb::Activation {
                grain_type: h.shared.grain.grain_type.clone(),
                key: h.shared.grain.key.clone(),
                activation_id: h.shared.activation_id,
                epoch: h.shared.epoch,
                node: node_name.to_string(),
                idle_ms: u64::try_from(h.shared.idle_for(now).as_millis()).unwrap_or(u64::MAX),
                mailbox_depth: h.shared.pending.load(std::sync::atomic::Ordering::Relaxed),
            })
            .collect();
        activations.sort_by(|a, b| (&a.grain_type, &a.key).cmp(&(&b.grain_type, &b.key)));
        let total = activations.len() as u64;
        if request.limit > 0 {
            activations.truncate(request.limit as usize);
        }
        Ok(Response::new(pb::ListActivationsResponse {
            node: node_name.to_string(),
            activations,
            total,
        }))
    }

    async fn migrate(
        &self,
        request: Request<pb::MigrateRequest>,
    ) -> Result<Response<pb::MigrateResponse>, Status> {
        super::migrate::migrate(&self.node, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_rebalancer(
        &self,
        _request: Request<pb::GetRebalancerRequest>,
    ) -> Result<Response<pb::RebalancerStatus>, Status> {
        Ok(Response::new(crate::migration::rebalancer::status(
            &self.node,
        )))
    }

    async fn set_rebalancer_paused(
        &self,
        request: Request<pb::SetRebalancerPausedRequest>,
    ) -> Result<Response<pb::RebalancerStatus>, Status> {
        let paused = request.into_inner().paused;
        Ok(Response::new(crate::migration::rebalancer::set_paused(
            &self.node, paused,
        )))
    }
}
