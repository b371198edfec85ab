//! The cluster-aware client: tonic glue around the balancer, with retries and deadlines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, warn};

use super::balancer::{Balancer, CallOutcome, GatewayChange, MemberUpdate};
use super::config::ClientConfig;
use super::error::{AttemptDeadline, ClientError};
use super::metrics::{RetryDenied, RetryOutcome, RoutingMetrics};
use super::retry::{Failure, RetrySafety, retry_safety};
use crate::api::ERROR_CODE_METADATA;
use crate::api::pb;
use crate::api::pb::grains_client::GrainsClient;
use crate::clock::MonotonicClock;
use crate::grain::GrainId;

/// Time a gateway has beyond an attempt's deadline to return its reply or error, before the
/// client gives up on it. Nodes reply by their deadline plus a small margin.
const REPLY_MARGIN: Duration = Duration::from_millis(100);

/// A reply to one grain call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvokeReply {
    /// The method's reply, encoded as the request was.
    pub payload: Vec<u8>,
    /// Encoding of `payload`.
    pub format: pb::PayloadFormat,
    /// Node whose activation served the call.
    pub served_by: String,
    /// Forwards between nodes (0 when the gateway hosted the grain).
    pub hops: u32,
    /// Gateway that received the successful attempt.
    pub gateway: String,
    /// Attempts made, the successful one included.
    pub attempts: u32,
}

/// Builds a [`GristmillClient`] from a [`ClientConfig`].
#[derive(Clone, Debug, Default)]
pub struct ClientBuilder {
    config: ClientConfig,
    rng_seed: Option<u64>,
}

impl ClientBuilder {
    /// Starts from `config`.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            config,
            rng_seed: None,
        }
    }

    /// Seeds the strategies' random numbers, for reproducible runs. Default: from the OS.
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }

    /// Validates the settings, starts watching membership, and waits until the client has learned
    /// one Active gateway, for at most `connect_timeout` per seed plus one second.
    pub async fn connect(self) -> Result<GristmillClient, ClientError> {
        self.config.validate()?;
        let seeds = self.config.seeds.clone();
        let waited = self.config.connect_timeout * seeds.len() as u32 + Duration::from_secs(1);
        let clock = MonotonicClock::new();
        let rng = match self.rng_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => rand::make_rng(),
        };
        let (gateways_tx, mut gateways_rx) = watch::channel(0);
        let inner = Arc::new(Inner {
            core: Mutex::new(Core {
                balancer: Balancer::new(self.config.clone(), clock.now()),
                rng,
            }),
            config: self.config,
            clock,
            channels: RwLock::new(HashMap::new()),
            metrics: RoutingMetrics::new(),
            gateways_tx,
            watch_task: Mutex::new(None),
            watch_problem: Mutex::new(None),
        });
        let task = tokio::spawn(super::watch::watch_membership(Arc::downgrade(&inner)));
        *inner.watch_task.lock().expect("watch task lock poisoned") = Some(task.abort_handle());

        let known = tokio::time::timeout(waited, gateways_rx.wait_for(|count| *count > 0)).await;
        match known {
            Ok(Ok(_)) => Ok(GristmillClient { inner }),
            _ => {
                let problem = inner
                    .watch_problem
                    .lock()
                    .expect("watch problem lock poisoned")
                    .take()
                    .unwrap_or_else(|| "no seed listed an Active node".to_owned());
                Err(ClientError::NoMembers {
                    seeds,
                    waited,
                    problem,
                })
            }
        }
    }
}

/// A client of a Gristmill cluster that spreads grain calls over the Active nodes.
///
/// It learns the members over `WatchMembership`, keeps one connection per Active node, picks a
/// gateway per call with the configured strategy, skips gateways whose circuit breaker is
/// open, and retries where that is safe. Clones share the connections and the routing state.
/// Dropping the last clone stops the membership watch.
#[derive(Clone, Debug)]
pub struct GristmillClient {
    inner: Arc<Inner>,
}

// Callers share one client across tasks and threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<GristmillClient>();
};

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) config: ClientConfig,
    pub(super) clock: MonotonicClock,
    pub(super) core: Mutex<Core>,
    channels: RwLock<HashMap<String, GrainsClient<Channel>>>,
    pub(super) metrics: RoutingMetrics,
    gateways_tx: watch::Sender<usize>,
    watch_task: Mutex<Option<AbortHandle>>,
    /// The latest problem the membership watch found with a seed or gateway, for the error
    /// of a client that learns no gateway.
    pub(super) watch_problem: Mutex<Option<String>>,
}

#[derive(Debug)]
pub(super) struct Core {
    pub(super) balancer: Balancer,
    rng: StdRng,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let task = self.watch_task.get_mut().map(Option::take);
        if let Ok(Some(task)) = task {
            task.abort();
        }
    }
}

impl Inner {
    /// Applies gateway changes to the connections and metrics.
    pub(super) fn apply_changes(&self, changes: Vec<GatewayChange>) {
        if changes.is_empty() {
            return;
        }
        let mut channels = self.channels.write().expect("channels lock poisoned");
        for change in changes {
            match change {
                GatewayChange::Added { name, addr } => match self.endpoint(&addr) {
                    Ok(endpoint) => {
                        tracing::info!(node = %name, addr = %addr, "gateway added");
                        channels.insert(name, GrainsClient::new(endpoint.connect_lazy()));
                    }
                    Err(error) => {
                        warn!(node = %name, addr = %addr, %error, "invalid gateway address")
                    }
                },
                GatewayChange::Removed { name } => {
                    tracing::info!(node = %name, "gateway removed");
                    channels.remove(&name);
                }
            }
        }
        self.metrics.set_gateways(channels.len());
        self.gateways_tx.send_replace(channels.len());
    }

    /// Locks the routing core; never held across an await.
    pub(super) fn lock_core(&self) -> std::sync::MutexGuard<'_, Core> {
        self.core.lock().expect("routing core lock poisoned")
    }

    pub(super) fn endpoint(&self, addr: &str) -> Result<Endpoint, tonic::transport::Error> {
        Ok(Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true))
    }
}

/// Reports an attempt's outcome to the balancer, or `Abandoned` when the caller drops the call
/// mid-attempt, so the gateway's in-flight count and half-open probe never leak.
struct AttemptGuard<'a> {
    inner: &'a Inner,
    node: String,
    grain: &'a GrainId,
    reported: bool,
}

impl AttemptGuard<'_> {
    fn report(mut self, outcome: &CallOutcome) {
        self.reported = true;
        self.inner.record_outcome(&self.node, self.grain, outcome);
    }
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.inner
                .record_outcome(&self.node, self.grain, &CallOutcome::Abandoned);
        }
    }
}

impl Inner {
    fn record_outcome(&self, node: &str, grain: &GrainId, outcome: &CallOutcome) {
        let now = self.clock.now();
        let change = self
            .lock_core()
            .balancer
            .handle_outcome(node, grain, outcome, now);
        if let Some(state) = change {
            debug!(node = %node, state = state.as_str(), "breaker state changed");
            self.metrics.record_breaker(node, state);
        }
    }
}

/// The failure of one attempt and the error the caller gets if it is the last.
struct AttemptError {
    failure: Failure,
    error: ClientError,
}

impl GristmillClient {
    /// Starts building a client with `config`.
    pub fn builder(config: ClientConfig) -> ClientBuilder {
        ClientBuilder::new(config)
    }

    /// Returns the live members the client has learned, by name.
    pub fn members(&self) -> Vec<MemberUpdate> {
        self.lock_core().balancer.members()
    }

    /// Returns the gateways the client sends calls to, as (node name, gRPC address), by name.
    pub fn gateways(&self) -> Vec<(String, String)> {
        self.lock_core().balancer.gateways()
    }

    /// Returns the breaker state of gateway `node`, if it is a gateway.
    pub fn breaker_state(&self, node: &str) -> Option<super::BreakerState> {
        self.lock_core().balancer.breaker_state(node)
    }

    /// Returns the client's metrics and the registry that contains them.
    pub fn metrics(&self) -> &RoutingMetrics {
        &self.inner.metrics
    }

    fn lock_core(&self) -> std::sync::MutexGuard<'_, Core> {
        self.inner.lock_core()
    }

    /// Calls `method` on grain `grain_type`/`key` with an encoded `payload`.
    ///
    /// The call ends within `timeout` (default `call_timeout`) plus a margin of 100 ms for the
    /// last reply. Failed attempts are retried on other gateways when
    /// [`retry_safety`](super::retry_safety) allows, the retry budget has a token, attempts
    /// remain and time is left.
    pub async fn invoke(
        &self,
        grain_type: &str,
        key: &str,
        method: &str,
        payload: Vec<u8>,
        format: pb::PayloadFormat,
        timeout: Option<Duration>,
    ) -> Result<InvokeReply, ClientError> {
        let inner = &*self.inner;
        let config = &inner.config;
        let grain = GrainId::new(grain_type, key);
        let timeout = timeout.unwrap_or(config.call_timeout);
        let deadline = Instant::now() + timeout;
        let idempotent = config.is_idempotent(grain_type, method);
        self.lock_core().balancer.handle_call();

        let mut tried: Vec<String> = Vec::new();
        let mut attempts = 0_u32;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ClientError::DeadlineExceeded { timeout, attempts });
            }
            let (attempt_timeout, attempt_deadline) = match config.attempt_timeout {
                Some(cap) if cap < remaining => (cap, AttemptDeadline::Attempt(cap)),
                _ => (remaining, AttemptDeadline::Call(timeout)),
            };
            let decision = {
                let now = inner.clock.now();
                let core = &mut *self.lock_core();
                core.balancer.pick(&grain, &tried, now, &mut core.rng)
            };
            let Some(decision) = decision else {
                return Err(ClientError::NoGateway {
                    grain_type: grain.grain_type,
                    key: grain.key,
                    gateways: self.lock_core().balancer.gateways().len(),
                });
            };
            attempts += 1;
            inner.metrics.record_decision(&decision);
            if let Some(state) = decision.breaker_change {
                inner.metrics.record_breaker(&decision.node, state);
            }
            let guard = AttemptGuard {
                inner,
                node: decision.node.clone(),
                grain: &grain,
                reported: false,
            };
            let request = pb::InvokeRequest {
                grain_type: grain.grain_type.clone(),
                key: grain.key.clone(),
                method: method.to_owned(),
                payload: payload.clone(),
                format: format.into(),
                timeout_ms: timeout_ms(attempt_timeout),
            };
            let sent_at = Instant::now();
            let result = self.send(&decision.node, request, attempt_timeout).await;
            let rtt = sent_at.elapsed();
            let attempt_error = match result {
                Ok(response) => {
                    guard.report(&CallOutcome::Replied {
                        rtt,
                        served_by: response.served_by.clone(),
                        hops: response.hops,
                    });
                    inner.metrics.record_hops(response.hops);
                    if attempts > 1 {
                        inner.metrics.record_retry(RetryOutcome::Succeeded);
                    }
                    return Ok(InvokeReply {
                        payload: response.payload,
                        format: pb::PayloadFormat::try_from(response.format).unwrap_or(format),
                        served_by: response.served_by,
                        hops: response.hops,
                        gateway: decision.node,
                        attempts,
                    });
                }
                Err(status) => classify(status, &decision.node, attempts, attempt_deadline),
            };
            guard.report(&CallOutcome::Failed {
                failure: attempt_error.failure,
                rtt,
            });
            inner
                .metrics
                .record_failure(&decision.node, attempt_error.failure);
            if attempts > 1 {
                inner.metrics.record_retry(RetryOutcome::Failed);
            }
            if let Err(denied) =
                self.may_retry(attempt_error.failure, idempotent, attempts, deadline)
            {
                inner.metrics.record_retry_denied(denied);
                return Err(attempt_error.error);
            }
            debug!(
                node = %decision.node,
                grain = %grain.key,
                failure = attempt_error.failure.as_str(),
                attempt = attempts,
                "retrying call on another gateway"
            );
            tried.push(decision.node);
        }
    }

    /// Decides whether a failed attempt may be retried, and takes a budget token if so.
    fn may_retry(
        &self,
        failure: Failure,
        idempotent: bool,
        attempts: u32,
        deadline: Instant,
    ) -> Result<(), RetryDenied> {
        match retry_safety(failure, idempotent) {
            RetrySafety::Safe => {}
            RetrySafety::MayHaveRun => return Err(RetryDenied::MayHaveRun),
            RetrySafety::Pointless => return Err(RetryDenied::Pointless),
        }
        if attempts >= self.inner.config.max_attempts.get() || Instant::now() >= deadline {
            return Err(RetryDenied::Exhausted);
        }
        let now = self.inner.clock.now();
        if !self.lock_core().balancer.maybe_withdraw_retry(now) {
            return Err(RetryDenied::Budget);
        }
        Ok(())
    }

    /// Sends one attempt to `node`, waiting at most `attempt_timeout` plus [`REPLY_MARGIN`].
    async fn send(
        &self,
        node: &str,
        request: pb::InvokeRequest,
        attempt_timeout: Duration,
    ) -> Result<pb::InvokeResponse, AttemptStatus> {
        let client = self
            .inner
            .channels
            .read()
            .expect("channels lock poisoned")
            .get(node)
            .cloned();
        let Some(mut client) = client else {
            // The gateway left between the pick and now, so nothing was sent.
            return Err(AttemptStatus::NoChannel);
        };
        let call = client.invoke(request);
        match tokio::time::timeout(attempt_timeout + REPLY_MARGIN, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(AttemptStatus::Status(status)),
            Err(_) => Err(AttemptStatus::NoResponse),
        }
    }

    /// Calls `method` with a JSON-encoded `request` and decodes the JSON reply.
    pub async fn invoke_json<Req, Resp>(
        &self,
        grain_type: &str,
        key: &str,
        method: &str,
        request: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp, ClientError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let payload = serde_json::to_vec(request).map_err(ClientError::Encode)?;
        let reply = self
            .invoke(
                grain_type,
                key,
                method,
                payload,
                pb::PayloadFormat::Json,
                timeout,
            )
            .await?;
        serde_json::from_slice(&reply.payload).map_err(|source| ClientError::Decode {
            node: reply.served_by,
            source,
        })
    }
}

/// The raw failure of an attempt, before classification.
enum AttemptStatus {
    /// No connection is open to the gateway.
    NoChannel,
    /// The gateway or the transport returned a status.
    Status(tonic::Status),
    /// No reply within the attempt's deadline plus the margin.
    NoResponse,
}

/// Converts a deadline into the request's `timeout_ms`, rounding up so a positive deadline
/// never becomes 0 (which would mean the node's default).
fn timeout_ms(timeout: Duration) -> u32 {
    let millis = timeout.as_micros().div_ceil(1000).max(1);
    u32::try_from(millis).unwrap_or(u32::MAX)
}

fn classify(
    status: AttemptStatus,
    node: &str,
    attempts: u32,
    deadline: AttemptDeadline,
) -> AttemptError {
    let status = match status {
        AttemptStatus::NoChannel => {
            return AttemptError {
                failure: Failure::NotSent,
                error: ClientError::Status {
                    node: node.to_owned(),
                    attempts,
                    status: tonic::Status::unavailable(format!("no connection to {node}")),
                },
            };
        }
        AttemptStatus::NoResponse => {
            return AttemptError {
                failure: Failure::NoResponse,
                error: ClientError::NoResponse {
                    node: node.to_owned(),
                    deadline,
                    attempts,
                },
            };
        }
        AttemptStatus::Status(status) => status,
    };
    let failure = failure_of(&status);
    AttemptError {
        failure,
        error: ClientError::Status {
            node: node.to_owned(),
            attempts,
            status,
        },
    }
}

/// Maps a status to a [`Failure`]. Statuses from a node carry `gristmill-error-code`; statuses
/// made by the client's transport carry none.
pub(super) fn failure_of(status: &tonic::Status) -> Failure {
    let error_code = status
        .metadata()
        .get(ERROR_CODE_METADATA)
        .and_then(|value| value.to_str().ok());
    match (status.code(), error_code) {
        (tonic::Code::NotFound, _) => Failure::NotFound,
        (tonic::Code::DeadlineExceeded, _) => Failure::DeadlineExceeded,
        (tonic::Code::Unavailable, Some("shutting_down")) => Failure::ShuttingDown,
        (tonic::Code::Unavailable, Some("no_active_node" | "too_many_hops")) => {
            Failure::ClusterRejected
        }
        (tonic::Code::Unavailable, Some(_)) => Failure::ClusterUnavailable,
        (tonic::Code::Unavailable, None) if is_connect_error(status) => Failure::NotSent,
        (tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled, None) => {
            Failure::ConnectionLost
        }
        _ => Failure::Application,
    }
}

/// Returns whether the status comes from a connection that could not be opened, so the
/// request never left the client.
fn is_connect_error(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
            )
        {
            return true;
        }
        if error.to_string().contains("tcp connect error") {
            return true;
        }
        source = error.source();
    }
    false
}
