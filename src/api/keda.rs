//! The `externalscaler.ExternalScaler` service: KEDA's external scaler interface, served
//! from a dry run of the acting scaling supervisor.
//!
//! KEDA reaches any ready node through the client Service. The node whose supervisor acts
//! replies from its own dry run, and every other node forwards the request to it, as the
//! `Scaling` service does, so that every node reports the same count from the supervisor's
//! stabilization windows and rate history. Forwarding happens once: a forwarded request that
//! meets a standing-by supervisor fails with FAILED_PRECONDITION instead of travelling on.
//! Without an acting supervisor (just after a failover) the RPCs fail with UNAVAILABLE, and
//! KEDA keeps its last value until a later poll succeeds.

use std::pin::Pin;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::keda_pb::external_scaler_client::ExternalScalerClient;
use super::keda_pb::{self as pb, ScaledObjectRef};
use super::scaling::{FORWARDED_METADATA, error_status, leader_channel};
use crate::runtime::Node;
use crate::scaling::decision::Decision;
use crate::scaling::keda::{ScalerOptions, ScalerReading, TARGET_PER_REPLICA};
use crate::scaling::supervisor::{LeaderAddress, SupervisorError, SupervisorHandle, SupervisorMsg};

/// Serves KEDA's external scaler interface with the supervisor's node count.
#[derive(Clone)]
pub struct KedaScalerService {
    node: Node,
}

/// The source of the dry run for a request.
enum DryRun {
    /// This node's supervisor acts and ran it.
    Local(Box<Decision>),
    /// Another node's supervisor acts, so the request is forwarded there.
    Leader(LeaderAddress),
}

impl KedaScalerService {
    /// Creates the service over `node`.
    pub fn new(node: Node) -> Self {
        Self { node }
    }

    async fn dry_run(&self, forwarded: bool) -> Result<DryRun, Status> {
        let supervisor = SupervisorHandle::of(&self.node).ok_or_else(|| {
            Status::unavailable("the scaling supervisor of this node is not running")
        })?;
        match supervisor.ask(SupervisorMsg::Evaluate).await {
            Ok(decision) => Ok(DryRun::Local(Box::new(decision))),
            Err(SupervisorError::NotLeader {
                leader: Some(leader),
            }) if !forwarded => Ok(DryRun::Leader(leader)),
            Err(error) => Err(error_status(&error)),
        }
    }

    /// Returns whether the cluster is active for the trigger `scaled_object`.
    async fn is_active(
        &self,
        scaled_object: ScaledObjectRef,
        forwarded: bool,
    ) -> Result<bool, Status> {
        let options = parse_options(&scaled_object)?;
        match self.dry_run(forwarded).await? {
            DryRun::Local(decision) => {
                Ok(ScalerReading::from_decision(&decision, options.metric).active)
            }
            DryRun::Leader(leader) => {
                let mut client = ExternalScalerClient::new(leader_channel(&leader).await?);
                let response = client.is_active(forwarded_request(scaled_object)).await?;
                Ok(response.into_inner().result)
            }
        }
    }
}

fn is_forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED_METADATA)
}

fn forwarded_request<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        FORWARDED_METADATA,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    request
}

/// Parses the trigger metadata. Bad metadata is an error in the ScaledObject, so it maps to
/// INVALID_ARGUMENT with the key and the accepted values.
fn parse_options(scaled_object: &ScaledObjectRef) -> Result<ScalerOptions, Status> {
    ScalerOptions::parse(&scaled_object.scaler_metadata).map_err(|error| {
        tracing::warn!(
            scaled_object = %scaled_object.name,
            namespace = %scaled_object.namespace,
            %error,
            "KEDA trigger metadata rejected"
        );
        Status::invalid_argument(error.to_string())
    })
}

type ActiveStream = Pin<Box<dyn Stream<Item = Result<pb::IsActiveResponse, Status>> + Send>>;
type MetricSpecStream =
    Pin<Box<dyn Stream<Item = Result<pb::GetMetricSpecResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::external_scaler_server::ExternalScaler for KedaScalerService {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<pb::IsActiveResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let result = KedaScalerService::is_active(self, request.into_inner(), forwarded).await?;
        Ok(Response::new(pb::IsActiveResponse { result }))
    }

    type StreamIsActiveStream = ActiveStream;

    /// Sends the activity at once, then after each change and at least every
    /// `keda.active_resend_interval_ms`, checking every `keda.active_check_interval_ms`. A
    /// failed check ends the stream with its status; KEDA opens a new one after a backoff.
    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<ActiveStream>, Status> {
        let forwarded = is_forwarded(&request);
        let scaled_object = request.into_inner();
        let first = KedaScalerService::is_active(self, scaled_object.clone(), forwarded).await?;
        let config = self.node.inner.config.keda.clone();
        let (sender, receiver) = mpsc::channel(1);
        let service = self.clone();
        tokio::spawn(async move {
            let mut last_sent = first;
            let mut sent_at = tokio::time::Instant::now();
            if sender
                .send(Ok(pb::IsActiveResponse { result: first }))
                .await
                .is_err()
            {
                return;
            }
            loop {
                tokio::select! {
                    () = tokio::time::sleep(config.active_check_interval()) => {}
                    () = sender.closed() => return,
                    () = service.node.stopped() => return,
                }
                let active = match service.is_active(scaled_object.clone(), forwarded).await {
                    Ok(active) => active,
                    Err(status) => {
                        tracing::warn!(
                            scaled_object = %scaled_object.name,
                            %status,
                            "StreamIsActive check failed; ending the stream"
                        );
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                };
                if active == last_sent && sent_at.elapsed() < config.active_resend_interval() {
                    continue;
                }
                if active != last_sent {
                    tracing::debug!(scaled_object = %scaled_object.name, active, "KEDA activity changed");
                }
                if sender
                    .send(Ok(pb::IsActiveResponse { result: active }))
                    .await
                    .is_err()
                {
                    return;
                }
                last_sent = active;
                sent_at = tokio::time::Instant::now();
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<pb::GetMetricSpecResponse>, Status> {
        let options = parse_options(request.get_ref())?;
        Ok(Response::new(pb::GetMetricSpecResponse {
            metric_specs: vec![pb::MetricSpec {
                metric_name: options.metric.metric_name(),
                target_size: TARGET_PER_REPLICA,
                target_size_float: TARGET_PER_REPLICA as f64,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let message = request.into_inner();
        let Some(scaled_object) = &message.scaled_object_ref else {
            return Err(Status::invalid_argument(
                "scaledObjectRef is required in GetMetricsRequest",
            ));
        };
        let options = parse_options(scaled_object)?;
        options
            .check_metric_name(&message.metric_name)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        let decision = match self.dry_run(forwarded).await? {
            DryRun::Local(decision) => decision,
            DryRun::Leader(leader) => {
                let mut client = ExternalScalerClient::new(leader_channel(&leader).await?);
                return client.get_metrics(forwarded_request(message)).await;
            }
        };
        let reading = ScalerReading::from_decision(&decision, options.metric);
        Ok(Response::new(pb::GetMetricsResponse {
            metric_values: vec![pb::MetricValue {
                metric_name: options.metric.metric_name(),
                metric_value: i64::from(reading.nodes),
                metric_value_float: f64::from(reading.nodes),
            }],
        }))
    }

    type StreamMetricSpecStream = MetricSpecStream;

    /// Not implemented: the metric spec never changes, and KEDA falls back to
    /// `GetMetricSpec` when this returns UNIMPLEMENTED.
    async fn stream_metric_spec(
        &self,
        _request: Request<ScaledObjectRef>,
    ) -> Result<Response<MetricSpecStream>, Status> {
        Err(Status::unimplemented(
            "StreamMetricSpec is not implemented because Gristmill's metric spec never \
             changes; KEDA falls back to GetMetricSpec",
        ))
    }
}
