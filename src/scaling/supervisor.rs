//! The scaling supervisor actor: elects itself on the oldest Active node, evaluates, and acts.
//!
//! Every node runs one supervisor actor. Only the supervisor of the oldest Active member (by
//! process start time, ties broken by name) acts; the others stand by and reply to requests with
//! the name of the acting node. The supervisor register in the state store fences the hand-over
//! (see [`supervisor_register`](super::supervisor_register)), so two supervisors never act at
//! once and an action started before a failover is never started again.
//!
//! Each tick, every `evaluation_interval`, the acting supervisor:
//! 1. renews the register, stepping down if another node took it over;
//! 2. builds a [`ClusterSnapshot`] from the membership view and runs
//!    [`ScalingCore::handle_evaluation`];
//! 3. records an action in the register before starting it, carries it out in a task
//!    (see [`supervisor_action`](super::supervisor_action)), and reports its outcome.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::membership::{Incarnation, MemberInfo, NodeState};
use crate::runtime::Node;
use crate::scaling::action_journal::ActionJournal;
use crate::scaling::config::{ConfigError, ScalingConfig};
use crate::scaling::decision::{ActionOutcome, Decision, DecisionId};
use crate::scaling::evaluator::{RequestError, ScalingCore, ScalingStatus};
use crate::scaling::load::{ClusterSnapshot, NodeSnapshot};
use crate::scaling::orchestrator::{BoxFuture, Orchestrator, OrchestratorError};
use crate::scaling::supervisor_action::{self, ActionContext, ActionReport};
use crate::scaling::supervisor_metrics::ScalingMetrics;
use crate::scaling::supervisor_register::{
    ActionRecord, HolderView, Register, RegisterError, SupervisorRecord, takeover_reason,
};

/// The component that starts and stops nodes for the scaling supervisor, set by
/// `orchestrator` in the node config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrchestratorKind {
    /// Nothing: the supervisor records decisions but starts paused. A manual scale-in requests
    /// that the drained node leave, and a manual scale-out is rejected.
    #[default]
    None,
    /// `gristmill run` processes on loopback, started by the acting node.
    Local,
    /// The scale subresource of the node StatefulSet.
    Kubernetes,
}

/// Shortest time a holder may go without renewing the register before another node takes it.
const MIN_LEASE: Duration = Duration::from_secs(5);
/// Evaluation intervals a holder may miss before its lease expires.
const LEASE_INTERVALS: u32 = 5;
/// Decisions a slow `WatchDecisions` client may fall behind before it is cut off.
const WATCH_BUFFER: usize = 256;

/// A request the supervisor rejected or could not serve.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// This node's supervisor does not act; `leader` names the node that does, if known.
    /// Nothing changed; send the request there.
    #[error("this node's supervisor is standing by; the acting supervisor runs on {}",
        .leader.as_ref().map_or(
            "no node yet (one takes over at its first evaluation, one evaluation_interval after \
             it becomes the oldest Active node; retry then)",
            |leader| leader.name.as_str()
        ))]
    NotLeader {
        /// The acting node and its gRPC address.
        leader: Option<LeaderAddress>,
    },
    /// The policy core rejected the request; nothing changed.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The policy is invalid; the running policy is unchanged.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The supervisor register could not be written, so nothing changed; a retry can help.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// The supervisor actor has stopped, as when its node stops.
    #[error("the scaling supervisor of this node has stopped")]
    Stopped,
    /// `Resume` under `orchestrator = none`, which records decisions but carries out none.
    /// Nothing changed; configure an orchestrator to let the supervisor act.
    #[error(
        "cannot resume: orchestrator = none records decisions but carries out none; \
         set orchestrator = \"local\" or \"kubernetes\" to let the supervisor act"
    )]
    NoOrchestrator,
    /// `ScaleTo` above the Active node count with an orchestrator that cannot start nodes.
    /// Nothing changed; start the nodes by hand or configure an orchestrator that can.
    #[error(
        "cannot scale to {requested} nodes from {active} Active: the {orchestrator} \
         orchestrator cannot start nodes ({reason}); start nodes with `gristmill run --seed` \
         instead"
    )]
    CannotAddNodes {
        /// The requested node count.
        requested: u32,
        /// Active nodes now.
        active: u32,
        /// The orchestrator's kind.
        orchestrator: &'static str,
        /// The reason it cannot start nodes.
        reason: String,
    },
}

/// The node that runs the acting supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderAddress {
    /// Node name.
    pub name: String,
    /// Its gRPC address.
    pub grpc_addr: std::net::SocketAddr,
}

/// The acting supervisor's state for `GetStatus`.
#[derive(Clone, Debug)]
pub struct SupervisorStatus {
    /// The running policy.
    pub policy: ScalingConfig,
    /// Pause, running action, cooldown and latest decision.
    pub status: ScalingStatus,
    /// The node that acts.
    pub supervisor: String,
    /// The orchestrator kind, such as `local`.
    pub orchestrator: &'static str,
}

/// The reply port of a supervisor request.
pub type ReplyPort<T> = RpcReplyPort<Result<T, SupervisorError>>;

/// Messages of the supervisor actor. Local only.
#[derive(RactorMessage)]
pub enum SupervisorMsg {
    /// Time to check leadership and evaluate.
    Tick,
    /// The action of `decision`, started in `epoch`, ended.
    ActionEnded {
        /// The decision whose action ended.
        decision: DecisionId,
        /// The epoch in which it started.
        epoch: u64,
        /// The outcome and the checks made on removed nodes.
        report: ActionReport,
    },
    /// `GetStatus`.
    Status(ReplyPort<SupervisorStatus>),
    /// `ListDecisions`: at most `limit` decisions with ids below `before`, newest first.
    ListDecisions {
        /// Maximum number returned.
        limit: usize,
        /// Only ids below this one; `None` starts from the newest.
        before: Option<DecisionId>,
        /// The reply port.
        reply: ReplyPort<Vec<Decision>>,
    },
    /// `WatchDecisions`: recorded decisions after `after`, and a receiver of later ones.
    Watch {
        /// Replay decisions with ids above this one.
        after: DecisionId,
        /// The reply port.
        reply: ReplyPort<(Vec<Decision>, broadcast::Receiver<Decision>)>,
    },
    /// `Evaluate`: a dry run.
    Evaluate(ReplyPort<Decision>),
    /// `SetPolicy`; answers with the policy now running.
    SetPolicy(Box<ScalingConfig>, ReplyPort<ScalingConfig>),
    /// `ScaleTo`.
    ScaleTo(u32, ReplyPort<Decision>),
    /// `DrainNode`.
    DrainNode(String, ReplyPort<Decision>),
    /// `Pause` with a reason; answers whether it changed anything.
    Pause(String, ReplyPort<bool>),
    /// `Resume`; answers whether it changed anything.
    Resume(ReplyPort<bool>),
    /// The supervisor's metrics.
    Metrics(RpcReplyPort<Arc<ScalingMetrics>>),
}

/// Starts the supervisor actor of `node`; it stops when the node stops.
pub fn spawn(node: Node) {
    let name = actor_name(&node.id().incarnation());
    tokio::spawn(async move {
        if let Err(error) = Actor::spawn(Some(name), Supervisor, node).await {
            tracing::error!(%error, "cannot start the scaling supervisor");
        }
    });
}

fn actor_name(node: &Incarnation) -> String {
    format!("gristmill.supervisor.{node}")
}

/// A reference to the supervisor actor of one node, for the gRPC service.
#[derive(Clone)]
pub struct SupervisorHandle {
    actor: ActorRef<SupervisorMsg>,
}

impl SupervisorHandle {
    /// Finds the supervisor of `node`, or `None` before it started or after it stopped.
    pub fn of(node: &Node) -> Option<SupervisorHandle> {
        let cell = ractor::registry::where_is(actor_name(&node.id().incarnation()))?;
        Some(SupervisorHandle { actor: cell.into() })
    }

    /// Sends a request built around a reply port and waits for its answer.
    pub async fn ask<T: Send + 'static>(
        &self,
        request: impl FnOnce(ReplyPort<T>) -> SupervisorMsg,
    ) -> Result<T, SupervisorError> {
        match self.actor.call(request, None).await {
            Ok(ractor::rpc::CallResult::Success(answer)) => answer,
            _ => Err(SupervisorError::Stopped),
        }
    }

    /// Returns the supervisor's metrics.
    pub async fn metrics(&self) -> Option<Arc<ScalingMetrics>> {
        match self.actor.call(SupervisorMsg::Metrics, None).await {
            Ok(ractor::rpc::CallResult::Success(metrics)) => Some(metrics),
            _ => None,
        }
    }
}

struct Supervisor;

/// The supervisor's state.
pub struct SupervisorState {
    node: Node,
    orchestrator: Arc<dyn Orchestrator>,
    metrics: Arc<ScalingMetrics>,
    register: Register,
    role: Role,
    decisions: broadcast::Sender<Decision>,
}

enum Role {
    Standby,
    Acting {
        core: Box<ScalingCore>,
        epoch: u64,
        /// The actions of this and earlier supervisors, as kept in the state store.
        journal: ActionJournal,
    },
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Node;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        node: Node,
    ) -> Result<Self::State, ActorProcessingErr> {
        let orchestrator = make_orchestrator(&node);
        let metrics = Arc::new(ScalingMetrics::new(&node.id().name));
        let _ = myself.send_message(SupervisorMsg::Tick);
        Ok(SupervisorState {
            node,
            orchestrator,
            metrics,
            register: Register::default(),
            role: Role::Standby,
            decisions: broadcast::channel(WATCH_BUFFER).0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Tick => {
                if state.node.state() == NodeState::Dead {
                    myself.stop(Some("node stopped".into()));
                    return Ok(());
                }
                state.tick(&myself).await;
                myself.send_after(state.interval(), || SupervisorMsg::Tick);
            }
            SupervisorMsg::ActionEnded {
                decision,
                epoch,
                report,
            } => state.handle_action_ended(decision, epoch, report).await,
            SupervisorMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            SupervisorMsg::ListDecisions {
                limit,
                before,
                reply,
            } => {
                let _ = reply.send(state.list(limit, before));
            }
            SupervisorMsg::Watch { after, reply } => {
                let answer = state.core().map(|core| {
                    let receiver = state.decisions.subscribe();
                    (replay_after(core, after), receiver)
                });
                let _ = reply.send(answer);
            }
            SupervisorMsg::Evaluate(reply) => {
                let answer = state.snapshot().and_then(|snapshot| {
                    let core = state.core()?;
                    Ok(core.dry_run(snapshot, state.node.inner.clock.now()))
                });
                let _ = reply.send(answer);
            }
            SupervisorMsg::SetPolicy(config, reply) => {
                let _ = reply.send(state.set_policy(*config).await);
            }
            SupervisorMsg::ScaleTo(nodes, reply) => {
                let answer = match state.check_can_add(nodes) {
                    Ok(()) => {
                        state
                            .manual(&myself, |core, snapshot, now| {
                                core.handle_scale_to(snapshot, nodes, now)
                            })
                            .await
                    }
                    Err(error) => Err(error),
                };
                let _ = reply.send(answer);
            }
            SupervisorMsg::DrainNode(name, reply) => {
                let answer = state.manual(&myself, |core, snapshot, now| {
                    core.handle_drain_request(snapshot, &name, now)
                });
                let _ = reply.send(answer.await);
            }
            SupervisorMsg::Pause(reason, reply) => {
                let _ = reply.send(state.set_paused(Some(reason)).await);
            }
            SupervisorMsg::Resume(reply) => {
                let _ = reply.send(state.set_paused(None).await);
            }
            SupervisorMsg::Metrics(reply) => {
                let _ = reply.send(state.metrics.clone());
            }
        }
        Ok(())
    }
}

impl SupervisorState {
    fn me(&self) -> Incarnation {
        self.node.id().incarnation()
    }

    fn interval(&self) -> Duration {
        match &self.role {
            Role::Acting { core, .. } => core.config().evaluation_interval,
            Role::Standby => self.configured_policy().evaluation_interval,
        }
    }

    /// Returns the policy a new holder starts with: the one set by SetPolicy, else this node's
    /// config.
    fn configured_policy(&self) -> ScalingConfig {
        self.register
            .record
            .policy
            .clone()
            .filter(|policy| policy.validate().is_ok())
            .unwrap_or_else(|| self.node.inner.config.scaling.clone())
    }

    fn lease(&self) -> Duration {
        (self.interval() * LEASE_INTERVALS).max(MIN_LEASE)
    }

    fn store(&self) -> &dyn crate::storage::StateStore {
        self.node.storage()
    }

    async fn tick(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let members = self.node.members();
        let oldest = oldest_active(&members);
        let is_oldest = oldest.as_ref() == Some(&self.me());
        match &self.role {
            Role::Standby => {
                match Register::read(self.store()).await {
                    Ok(register) => self.register = register,
                    Err(error) => {
                        tracing::warn!(%error, "cannot read the supervisor register");
                        return;
                    }
                }
                if is_oldest {
                    self.maybe_take_over(&members).await;
                }
            }
            Role::Acting { core, .. } => {
                let running = core.status(self.node.inner.clock.now()).running_action;
                if !is_oldest && running.is_none() {
                    self.release().await;
                    return;
                }
                if self.renew().await {
                    self.evaluate(myself, &members).await;
                }
            }
        }
    }

    async fn maybe_take_over(&mut self, members: &[MemberInfo]) {
        let me = self.me();
        let now_unix_ms = crate::runtime::unix_now_ms();
        let holder_view = |node: &Incarnation| {
            let member = members.iter().find(|member| member.incarnation() == *node);
            match member.map(|member| member.state) {
                Some(NodeState::Active) => HolderView::Active,
                Some(NodeState::Draining | NodeState::Leaving | NodeState::Dead) => {
                    HolderView::NotActive
                }
                Some(NodeState::Joining) | None => HolderView::Unknown,
            }
        };
        let record = &self.register.record;
        let Some(reason) = takeover_reason(record, &me, holder_view, now_unix_ms, self.lease())
        else {
            return;
        };
        let mut next = record.clone();
        next.epoch += 1;
        next.holder = Some(me.clone());
        next.renewed_at_unix_ms = now_unix_ms;
        if let Some(action) = next
            .last_action
            .as_mut()
            .filter(|action| action.result.is_none())
        {
            tracing::warn!(
                sequence = action.sequence,
                epoch = action.epoch,
                action = ?action.action,
                "the previous supervisor stopped during an action; it is not started again"
            );
            action.result = Some(format!(
                "interrupted: its supervisor stopped before the action ended; epoch {} did \
                 not run it again",
                next.epoch
            ));
        }
        let policy = self.configured_policy();
        let mut register = self.register.clone();
        if let Err(error) = register.write(self.store(), next).await {
            tracing::debug!(%error, "supervisor takeover lost a race");
            return;
        }
        self.register = register;
        let epoch = self.register.record.epoch;
        let mut core = match ScalingCore::new(policy) {
            Ok(core) => core,
            Err(error) => {
                tracing::error!(%error, "invalid scaling policy; the supervisor cannot act");
                return;
            }
        };
        core.continue_ids_after(DecisionId::epoch_base(epoch));
        let journal = match ActionJournal::read(self.store()).await {
            Ok(mut journal) => {
                journal.mark_unfinished_interrupted(epoch);
                core.restore_history(journal.decisions());
                journal
            }
            Err(error) => {
                // The history then starts empty, and this supervisor's actions are not kept.
                tracing::warn!(%error, "cannot read the action journal of earlier supervisors");
                ActionJournal::default()
            }
        };
        if let Some(reason) = &self.register.record.paused {
            core.maybe_pause(reason.clone());
        } else if self.node.inner.config.orchestrator == OrchestratorKind::None {
            core.maybe_pause(
                "orchestrator = none: automatic decisions are recorded, not carried out".into(),
            );
        }
        self.metrics.takeovers.inc();
        tracing::info!(epoch, ?reason, "scaling supervisor took over");
        self.role = Role::Acting {
            core: Box::new(core),
            epoch,
            journal,
        };
    }

    async fn release(&mut self) {
        let mut next = self.register.record.clone();
        next.holder = None;
        match self.register.write(self.node.storage(), next).await {
            Ok(()) => {}
            // The next supervisor took the register over first: nothing is left to release.
            Err(RegisterError::Lost) => {
                tracing::debug!("the supervisor register was taken over before its release");
            }
            Err(error) => tracing::warn!(%error, "cannot release the supervisor register"),
        }
        self.step_down("another node is now the oldest Active member");
    }

    /// Renews the register; returns false, standing by, if another node took it over.
    async fn renew(&mut self) -> bool {
        let mut next = self.register.record.clone();
        next.renewed_at_unix_ms = crate::runtime::unix_now_ms();
        self.write_or_step_down(next).await.is_ok()
    }

    async fn write_or_step_down(&mut self, record: SupervisorRecord) -> Result<(), RegisterError> {
        let result = self.register.write(self.node.storage(), record).await;
        match &result {
            Ok(()) => {}
            Err(RegisterError::Lost) => {
                self.metrics.failure("lease_lost");
                self.step_down("another node took the supervisor register over");
            }
            Err(error) => tracing::warn!(%error, "cannot write the supervisor register"),
        }
        result
    }

    fn step_down(&mut self, why: &str) {
        if matches!(self.role, Role::Acting { .. }) {
            tracing::info!(reason = why, "scaling supervisor stands by");
        }
        self.role = Role::Standby;
    }

    async fn evaluate(&mut self, myself: &ActorRef<SupervisorMsg>, members: &[MemberInfo]) {
        let snapshot = build_snapshot(members, self.me(), self.orchestrator.as_ref());
        let disrupted = self.orchestrator.disrupted_nodes().await;
        let reason = disruption_reason(self.orchestrator.kind());
        let now = self.node.inner.clock.now();
        let Role::Acting { core, .. } = &mut self.role else {
            return;
        };
        let disruption = core.handle_disruptions(snapshot.clone(), &disrupted, reason, now);
        let decision = core.handle_evaluation(snapshot, now);
        if let Some(disruption) = disruption {
            self.publish_new(myself, disruption).await;
        }
        self.publish_new(myself, decision).await;
    }

    /// Counts and publishes a recorded decision, and starts its action if it has one.
    async fn publish_new(&mut self, myself: &ActorRef<SupervisorMsg>, decision: Decision) {
        self.metrics.record_decision(&decision);
        let _ = self.decisions.send(decision.clone());
        if decision.action.change().is_some() {
            self.record_in_journal(&decision).await;
            self.start_action(myself, decision).await;
        }
    }

    /// Keeps a decision with an action in the action journal, so a later supervisor lists it.
    async fn record_in_journal(&mut self, decision: &Decision) {
        let store = self.node.storage();
        let Role::Acting { journal, .. } = &mut self.role else {
            return;
        };
        if let Err(error) = journal.record(store, decision).await {
            tracing::warn!(%error, decision = %decision.id, "cannot keep the action in the journal");
        }
    }

    /// Records the action in the register, then carries it out in a task.
    async fn start_action(&mut self, myself: &ActorRef<SupervisorMsg>, decision: Decision) {
        let Role::Acting { epoch, .. } = self.role else {
            return;
        };
        let mut next = self.register.record.clone();
        next.actions_started += 1;
        next.last_action = Some(ActionRecord {
            sequence: next.actions_started,
            epoch,
            decision: decision.id,
            action: decision.action.clone(),
            started_at_unix_ms: crate::runtime::unix_now_ms(),
            result: None,
        });
        next.renewed_at_unix_ms = crate::runtime::unix_now_ms();
        if let Err(error) = self.write_or_step_down(next).await {
            let outcome = ActionOutcome::Failed {
                completed_nodes: 0,
                error: format!("not started: {error}"),
            };
            self.finish(decision.id, ActionReport::from(outcome)).await;
            return;
        }
        let context = ActionContext {
            orchestrator: self.orchestrator.clone(),
            node: self.node.clone(),
            drain_timeout: Duration::from_secs(self.node.inner.config.drain_timeout_secs),
            metrics: self.metrics.clone(),
        };
        let myself = myself.clone();
        tokio::spawn(async move {
            let report = supervisor_action::carry_out(&context, &decision.action).await;
            let _ = myself.send_message(SupervisorMsg::ActionEnded {
                decision: decision.id,
                epoch,
                report,
            });
        });
    }

    async fn handle_action_ended(&mut self, id: DecisionId, epoch: u64, report: ActionReport) {
        let acting_epoch = match self.role {
            Role::Acting { epoch, .. } => Some(epoch),
            Role::Standby => None,
        };
        if acting_epoch != Some(epoch) {
            let outcome = &report.outcome;
            tracing::warn!(decision = %id, epoch, ?outcome, "an action of an earlier term ended");
            return;
        }
        let result = match &report.outcome {
            ActionOutcome::Succeeded => "succeeded".to_owned(),
            ActionOutcome::Failed { error, .. } => format!("failed: {error}"),
        };
        self.finish(id, report).await;
        let mut next = self.register.record.clone();
        if let Some(action) = next
            .last_action
            .as_mut()
            .filter(|action| action.decision == id)
        {
            action.result = Some(result);
        }
        let _ = self.write_or_step_down(next).await;
    }

    /// Reports an outcome to the core, counts it, and publishes and journals the updated
    /// decision.
    async fn finish(&mut self, id: DecisionId, report: ActionReport) {
        let now = self.node.inner.clock.now();
        let Role::Acting { core, .. } = &mut self.role else {
            return;
        };
        let decision = match core.handle_action_outcome(
            id,
            report.outcome,
            report.removals,
            report.steps,
            now,
        ) {
            Ok(decision) => decision.clone(),
            Err(error) => {
                tracing::warn!(%error, "cannot record an action outcome");
                return;
            }
        };
        self.metrics.record_outcome(&decision);
        let _ = self.decisions.send(decision.clone());
        self.record_in_journal(&decision).await;
    }

    fn not_leader(&self) -> SupervisorError {
        let members = self.node.members();
        let holder = self
            .register
            .record
            .holder
            .clone()
            .filter(|holder| holder != &self.me())
            .or_else(|| oldest_active(&members).filter(|oldest| oldest != &self.me()));
        let leader = holder.and_then(|holder| {
            let member = members.iter().find(|m| m.incarnation() == holder)?;
            Some(LeaderAddress {
                name: holder.name,
                grpc_addr: member.id.grpc_addr(),
            })
        });
        SupervisorError::NotLeader { leader }
    }

    fn core(&self) -> Result<&ScalingCore, SupervisorError> {
        match &self.role {
            Role::Acting { core, .. } => Ok(core),
            Role::Standby => Err(self.not_leader()),
        }
    }

    fn snapshot(&self) -> Result<ClusterSnapshot, SupervisorError> {
        self.core()?;
        let members = self.node.members();
        Ok(build_snapshot(
            &members,
            self.me(),
            self.orchestrator.as_ref(),
        ))
    }

    fn status(&self) -> Result<SupervisorStatus, SupervisorError> {
        let core = self.core()?;
        Ok(SupervisorStatus {
            policy: core.config().clone(),
            status: core.status(self.node.inner.clock.now()),
            supervisor: self.node.id().name.to_string(),
            orchestrator: self.orchestrator.kind(),
        })
    }

    fn list(
        &self,
        limit: usize,
        before: Option<DecisionId>,
    ) -> Result<Vec<Decision>, SupervisorError> {
        let core = self.core()?;
        let Some(last) = core.history().last_id() else {
            return Ok(Vec::new());
        };
        let below = before.map_or(last.0 + 1, |before| before.0);
        Ok((1..below)
            .rev()
            .filter_map(|id| core.history().get(DecisionId(id)).cloned())
            .take(limit)
            .collect())
    }

    async fn set_policy(
        &mut self,
        config: ScalingConfig,
    ) -> Result<ScalingConfig, SupervisorError> {
        self.core()?;
        config.validate()?;
        let mut next = self.register.record.clone();
        next.policy = Some(config.clone());
        self.write_or_step_down(next).await?;
        let Role::Acting { core, .. } = &mut self.role else {
            return Err(self.not_leader());
        };
        core.set_config(config)?;
        tracing::info!("scaling policy replaced");
        Ok(core.config().clone())
    }

    async fn set_paused(&mut self, reason: Option<String>) -> Result<bool, SupervisorError> {
        let paused = self.core()?.status(self.node.inner.clock.now()).paused;
        if reason.is_none() && self.node.inner.config.orchestrator == OrchestratorKind::None {
            return Err(SupervisorError::NoOrchestrator);
        }
        if paused.is_some() == reason.is_some() {
            return Ok(false);
        }
        let mut next = self.register.record.clone();
        next.paused = reason.clone();
        self.write_or_step_down(next).await?;
        let Role::Acting { core, .. } = &mut self.role else {
            return Err(self.not_leader());
        };
        Ok(match reason {
            Some(reason) => core.maybe_pause(reason),
            None => core.maybe_resume(),
        })
    }

    /// Rejects a `ScaleTo` of `nodes` that needs new nodes when the orchestrator cannot start
    /// any, before a decision is recorded.
    fn check_can_add(&self, nodes: u32) -> Result<(), SupervisorError> {
        let Some(reason) = self.orchestrator.cannot_add_nodes() else {
            return Ok(());
        };
        let active = u32::try_from(self.snapshot()?.active_nodes().count()).unwrap_or(u32::MAX);
        if nodes <= active {
            return Ok(());
        }
        Err(SupervisorError::CannotAddNodes {
            requested: nodes,
            active,
            orchestrator: self.orchestrator.kind(),
            reason: reason.to_owned(),
        })
    }

    /// Runs a manual request (ScaleTo, DrainNode) and starts its action.
    async fn manual(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        request: impl FnOnce(
            &mut ScalingCore,
            ClusterSnapshot,
            crate::clock::Millis,
        ) -> Result<Decision, RequestError>,
    ) -> Result<Decision, SupervisorError> {
        let snapshot = self.snapshot()?;
        let now = self.node.inner.clock.now();
        let Role::Acting { core, .. } = &mut self.role else {
            return Err(self.not_leader());
        };
        let decision = request(core, snapshot, now)?;
        self.publish_new(myself, decision.clone()).await;
        Ok(decision)
    }
}

/// Returns who stops a disrupted node of an orchestrator of `kind`, for the decision record.
fn disruption_reason(kind: &str) -> &'static str {
    match kind {
        "kubernetes" => "deleted by Kubernetes",
        _ => "stopped by the platform",
    }
}

/// Returns the recorded decisions with ids above `after`, oldest first.
fn replay_after(core: &ScalingCore, after: DecisionId) -> Vec<Decision> {
    let Some(last) = core.history().last_id() else {
        return Vec::new();
    };
    (after.0 + 1..=last.0)
        .filter_map(|id| core.history().get(DecisionId(id)).cloned())
        .collect()
}

/// Returns the Active member that started first, ties broken by name.
pub fn oldest_active(members: &[MemberInfo]) -> Option<Incarnation> {
    members
        .iter()
        .filter(|member| member.state == NodeState::Active)
        .filter_map(|member| Some((member.started_at_unix_ms?, &member.id.name, member)))
        .min_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)))
        .map(|(_, _, member)| member.incarnation())
}

/// Builds the snapshot an evaluation reads: every member that is not Dead.
pub fn build_snapshot(
    members: &[MemberInfo],
    supervisor: Incarnation,
    orchestrator: &dyn Orchestrator,
) -> ClusterSnapshot {
    let nodes = members
        .iter()
        .filter(|member| member.state != NodeState::Dead)
        .map(|member| NodeSnapshot {
            incarnation: member.incarnation(),
            state: member.state,
            load: member.load,
        })
        .collect();
    ClusterSnapshot::new(nodes, supervisor).with_forced_removal_order(orchestrator)
}

fn make_orchestrator(node: &Node) -> Arc<dyn Orchestrator> {
    match node.inner.config.orchestrator {
        OrchestratorKind::None => Arc::new(NoOrchestrator {
            node: node.clone(),
            kind: "none",
            reason: "no orchestrator is configured; set orchestrator = \"local\" or \"kubernetes\"",
        }),
        OrchestratorKind::Local => Arc::new(super::local_orchestrator::LocalOrchestrator::new(
            node.clone(),
        )),
        #[cfg(feature = "kubernetes")]
        OrchestratorKind::Kubernetes => {
            let scaling = &node.inner.config.scaling;
            let config = super::kubernetes::KubernetesConfig {
                pod_name: Some(node.id().name.to_string()),
                min_replicas: scaling.min_nodes,
                max_replicas: scaling.max_nodes,
                ..super::kubernetes::KubernetesConfig::default()
            };
            Arc::new(super::kubernetes::LazyKubernetesOrchestrator::new(config))
        }
        #[cfg(not(feature = "kubernetes"))]
        OrchestratorKind::Kubernetes => Arc::new(NoOrchestrator {
            node: node.clone(),
            kind: "kubernetes",
            reason: "this node was built without the `kubernetes` cargo feature",
        }),
    }
}

/// An orchestrator that cannot add nodes; it removes a drained node by asking it to leave.
struct NoOrchestrator {
    node: Node,
    kind: &'static str,
    reason: &'static str,
}

impl Orchestrator for NoOrchestrator {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn current_nodes(&self) -> BoxFuture<'_, Result<u32, OrchestratorError>> {
        Box::pin(async { Err(OrchestratorError::Unavailable(self.reason.into())) })
    }

    fn add_nodes(&self, _count: u32) -> BoxFuture<'_, Result<Vec<String>, OrchestratorError>> {
        Box::pin(async { Err(OrchestratorError::Unavailable(self.reason.into())) })
    }

    fn cannot_add_nodes(&self) -> Option<&str> {
        Some(self.reason)
    }

    fn remove_node<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), OrchestratorError>> {
        Box::pin(async move {
            let addr = super::node_calls::grpc_addr_of(&self.node, name)
                .map_err(|status| OrchestratorError::Invalid(status.message().to_owned()))?;
            super::node_calls::request_leave(addr, name)
                .await
                .map_err(|status| OrchestratorError::Unavailable(status.message().to_owned()))
        })
    }

    fn forced_removal_candidate(&self, _nodes: &[String]) -> Option<String> {
        None
    }
}
