//! The `gristmill.v1.Scaling` service: answered by the acting supervisor, forwarded to it by
//! every other node.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::pb;
use super::pb::scaling_client::ScalingClient;
use crate::runtime::Node;
use crate::scaling::decision::DecisionId;
use crate::scaling::evaluator::RequestError;
use crate::scaling::proto_convert::{decision_to_proto, policy_from_proto, policy_to_proto};
use crate::scaling::supervisor::{
    LeaderAddress, ReplyPort, SupervisorError, SupervisorHandle, SupervisorMsg,
};

/// Metadata key set on a request that one node forwarded to the acting supervisor's node, so
/// it is not forwarded again.
pub(super) const FORWARDED_METADATA: &str = "gristmill-forwarded";
/// Decisions `ListDecisions` returns when the request sets no limit.
const DEFAULT_LIST_LIMIT: usize = 100;

/// Serves the scaling supervisor's status, decisions and manual control.
pub struct ScalingService {
    node: Node,
}

impl ScalingService {
    /// Creates the service over `node`.
    pub fn new(node: Node) -> Self {
        Self { node }
    }

    fn supervisor(&self) -> Result<SupervisorHandle, Status> {
        SupervisorHandle::of(&self.node).ok_or_else(|| {
            Status::unavailable("the scaling supervisor of this node is not running")
        })
    }

    /// Asks this node's supervisor; when it stands by, sends the request to the acting one.
    async fn serve<M, T, R, F, Fut>(
        &self,
        request: Request<M>,
        ask: impl FnOnce(ReplyPort<T>) -> SupervisorMsg,
        answer: impl FnOnce(T) -> R,
        forward: F,
    ) -> Result<Response<R>, Status>
    where
        M: Send + 'static,
        T: Send + 'static,
        F: FnOnce(ScalingClient<Channel>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let forwarded = request.metadata().contains_key(FORWARDED_METADATA);
        match self.supervisor()?.ask(ask).await {
            Ok(value) => Ok(Response::new(answer(value))),
            Err(SupervisorError::NotLeader {
                leader: Some(leader),
            }) if !forwarded => {
                let client = connect(&leader).await?;
                let mut request = Request::new(request.into_inner());
                request.metadata_mut().insert(
                    FORWARDED_METADATA,
                    tonic::metadata::MetadataValue::from_static("1"),
                );
                forward(client, request).await
            }
            Err(error) => Err(error_status(&error)),
        }
    }
}

async fn connect(leader: &LeaderAddress) -> Result<ScalingClient<Channel>, Status> {
    Ok(ScalingClient::new(leader_channel(leader).await?))
}

/// Opens a channel to the node of the acting scaling supervisor.
pub(super) async fn leader_channel(leader: &LeaderAddress) -> Result<Channel, Status> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", leader.grpc_addr))
        .map_err(|error| Status::internal(error.to_string()))?
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|error| {
        Status::unavailable(format!(
            "cannot reach the acting scaling supervisor on {} ({}): {error}",
            leader.name, leader.grpc_addr
        ))
    })?;
    Ok(channel)
}

/// Maps a supervisor error to its gRPC status.
pub(super) fn error_status(error: &SupervisorError) -> Status {
    let message = error.to_string();
    match error {
        SupervisorError::NotLeader { leader: Some(_) }
        | SupervisorError::NoOrchestrator
        | SupervisorError::CannotAddNodes { .. } => Status::failed_precondition(message),
        SupervisorError::NotLeader { leader: None }
        | SupervisorError::Register(_)
        | SupervisorError::Stopped => Status::unavailable(message),
        SupervisorError::Config(_) => Status::invalid_argument(message),
        SupervisorError::Request(request) => match request {
            RequestError::OutOfBounds { .. } => Status::invalid_argument(message),
            RequestError::ActionInProgress { .. } => Status::aborted(message),
            RequestError::NodeNotActive { .. } => Status::not_found(message),
            RequestError::BelowMinimum { .. }
            | RequestError::RemovalNotAllowed { .. }
            | RequestError::NoRemovalCandidate { .. }
            | RequestError::NotRunning { .. } => Status::failed_precondition(message),
        },
    }
}

type DecisionStream = Pin<Box<dyn Stream<Item = Result<pb::ScalingDecision, Status>> + Send>>;

#[tonic::async_trait]
impl pb::scaling_server::Scaling for ScalingService {
    async fn get_status(
        &self,
        request: Request<pb::GetScalingStatusRequest>,
    ) -> Result<Response<pb::GetScalingStatusResponse>, Status> {
        self.serve(
            request,
            SupervisorMsg::Status,
            |view| pb::GetScalingStatusResponse {
                policy: Some(policy_to_proto(&view.policy)),
                paused: view.status.paused.is_some(),
                pause_reason: view.status.paused.unwrap_or_default(),
                running_decision: view.status.running_action.map_or(0, |id| id.0),
                cooldown_remaining_ms: u64::try_from(view.status.cooldown_remaining.as_millis())
                    .unwrap_or(u64::MAX),
                last_decision: view.status.last_decision.map_or(0, |id| id.0),
                supervisor: view.supervisor,
                orchestrator: view.orchestrator.into(),
            },
            |mut client, request| async move { client.get_status(request).await },
        )
        .await
    }

    async fn list_decisions(
        &self,
        request: Request<pb::ListDecisionsRequest>,
    ) -> Result<Response<pb::ListDecisionsResponse>, Status> {
        let message = request.get_ref();
        let limit = match message.limit {
            0 => DEFAULT_LIST_LIMIT,
            limit => limit as usize,
        };
        let before = (message.before_id > 0).then_some(DecisionId(message.before_id));
        self.serve(
            request,
            |reply| SupervisorMsg::ListDecisions {
                limit,
                before,
                reply,
            },
            |decisions| pb::ListDecisionsResponse {
                decisions: decisions.iter().map(decision_to_proto).collect(),
            },
            |mut client, request| async move { client.list_decisions(request).await },
        )
        .await
    }

    type WatchDecisionsStream = DecisionStream;

    async fn watch_decisions(
        &self,
        request: Request<pb::WatchDecisionsRequest>,
    ) -> Result<Response<Self::WatchDecisionsStream>, Status> {
        let after = DecisionId(request.get_ref().after_id);
        self.serve(
            request,
            |reply| SupervisorMsg::Watch { after, reply },
            |(replay, receiver)| -> DecisionStream {
                let replay: Vec<_> = replay.iter().map(|d| Ok(decision_to_proto(d))).collect();
                let changes = BroadcastStream::new(receiver).map(|decision| match decision {
                    Ok(decision) => Ok(decision_to_proto(&decision)),
                    Err(_) => Err(Status::data_loss(
                        "scaling decisions were dropped because this watch fell behind; watch \
                         again with after_id set to the last id received",
                    )),
                });
                Box::pin(tokio_stream::iter(replay).chain(changes))
            },
            |mut client, request| async move {
                let stream = client.watch_decisions(request).await?.into_inner();
                Ok(Response::new(Box::pin(stream) as DecisionStream))
            },
        )
        .await
    }

    async fn evaluate(
        &self,
        request: Request<pb::EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        self.serve(
            request,
            SupervisorMsg::Evaluate,
            |decision| pb::EvaluateResponse {
                decision: Some(decision_to_proto(&decision)),
            },
            |mut client, request| async move { client.evaluate(request).await },
        )
        .await
    }

    async fn set_policy(
        &self,
        request: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::SetPolicyResponse>, Status> {
        let Some(message) = &request.get_ref().policy else {
            return Err(Status::invalid_argument(
                "invalid scaling policy: policy: is required",
            ));
        };
        let config = policy_from_proto(message).map_err(|error| {
            tracing::warn!(field = %error.field, %error, "SetPolicy rejected");
            Status::invalid_argument(error.to_string())
        })?;
        self.serve(
            request,
            |reply| SupervisorMsg::SetPolicy(Box::new(config), reply),
            |policy| pb::SetPolicyResponse {
                policy: Some(policy_to_proto(&policy)),
            },
            |mut client, request| async move { client.set_policy(request).await },
        )
        .await
    }

    async fn scale_to(
        &self,
        request: Request<pb::ScaleToRequest>,
    ) -> Result<Response<pb::ScaleToResponse>, Status> {
        let nodes = request.get_ref().nodes;
        self.serve(
            request,
            |reply| SupervisorMsg::ScaleTo(nodes, reply),
            |decision| pb::ScaleToResponse {
                decision: Some(decision_to_proto(&decision)),
            },
            |mut client, request| async move { client.scale_to(request).await },
        )
        .await
    }

    async fn drain_node(
        &self,
        request: Request<pb::DrainNodeRequest>,
    ) -> Result<Response<pb::DrainNodeResponse>, Status> {
        let name = request.get_ref().name.clone();
        self.serve(
            request,
            |reply| SupervisorMsg::DrainNode(name, reply),
            |decision| pb::DrainNodeResponse {
                decision: Some(decision_to_proto(&decision)),
            },
            |mut client, request| async move { client.drain_node(request).await },
        )
        .await
    }

    async fn pause(
        &self,
        request: Request<pb::PauseRequest>,
    ) -> Result<Response<pb::PauseResponse>, Status> {
        let reason = match request.get_ref().reason.as_str() {
            "" => "paused by an operator".to_owned(),
            reason => reason.to_owned(),
        };
        self.serve(
            request,
            |reply| SupervisorMsg::Pause(reason, reply),
            |changed| pb::PauseResponse { changed },
            |mut client, request| async move { client.pause(request).await },
        )
        .await
    }

    async fn resume(
        &self,
        request: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        self.serve(
            request,
            SupervisorMsg::Resume,
            |changed| pb::ResumeResponse { changed },
            |mut client, request| async move { client.resume(request).await },
        )
        .await
    }
}
