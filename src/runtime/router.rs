//! The call path: deliver locally, or resolve the grain through the directory and forward it.
//!
//! A call tries, in order, until it has a reply or its deadline passes:
//! 1. the local activation, if the grain is active on this node (a grain reference tries the
//!    activation it cached at its last call first, see `super::local_route`);
//! 2. the cached directory entry, or a lookup at the partition owner;
//! 3. when the directory has no entry, placement picks an Active node, which registers the
//!    grain with compare-and-set and activates it; a registration that loses the race learns
//!    the winner and forwards there.
//!
//! A node that receives a call for a grain it does not host answers `NotHere`; the caller
//! drops its cached entry, clears the stale directory entry, and resolves again. Every retry is
//! bounded by the deadline and by [`MAX_ATTEMPTS`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::local_route::LocalRoute;
use super::node::Node;
use crate::directory::{DirectoryEntry, Expect, LookupOutcome, RegisterOutcome};
use crate::grain::activation::{self, ActivationShared};
use crate::grain::methods::MethodId;
use crate::grain::{CallError, GrainContext, GrainError, GrainId, Payload, PayloadFormat};
use crate::membership::NodeId;
use crate::placement::PlacementCandidate;
use crate::transport::{
    CallEnvelope, CallReply, DirectoryRequest, DirectoryResponse, Envelope, PeerError, Route,
};

/// Upper bound of resolve-and-forward rounds per call.
pub(crate) const MAX_ATTEMPTS: u32 = 16;
/// Maximum length of a grain key in bytes, because keys travel in every call and directory
/// message.
pub(crate) const MAX_KEY_BYTES: usize = 1024;
/// Upper bound of forwards a call may take between nodes.
pub(crate) const MAX_HOPS: u32 = 4;
/// Room left in a cluster frame for the envelope's other fields (grain id, method, deadline)
/// and ractor_cluster's framing, in bytes; keys are at most [`MAX_KEY_BYTES`].
const FRAME_OVERHEAD_BYTES: u64 = 4 * 1024;
/// Pause before resolving again while membership or the directory settles.
const SETTLE_PAUSE: Duration = Duration::from_millis(20);

/// The reply of a successful call.
pub(crate) struct InvokeReply {
    pub payload: Payload,
    /// The node that served the call, or `None` for this node, whose name the caller has.
    pub served_by: Option<String>,
    pub hops: u32,
}

/// A call's method, checked against the grain's type when the call enters the node.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CheckedMethod {
    /// The method, resolved in the type's method table.
    pub id: MethodId,
    /// The type's per-node activation limit if it is a stateless worker.
    pub worker_limit: Option<usize>,
}

/// The route that a [`GrainRef`](crate::grain::GrainRef) caches, offered to one of its calls.
#[derive(Clone, Copy)]
pub(crate) struct CachedRoute<'a> {
    pub route: &'a LocalRoute,
    /// The type of the call's request, under which the route caches the resolved method.
    pub request: std::any::TypeId,
}

/// The next destination of a call.
pub(super) enum Target {
    /// The grain's activation is (per the directory) on this peer.
    Host(Arc<DirectoryEntry>, NodeId),
    /// Placement chose this node.
    ActivateHere,
    /// Placement chose a peer, which activates the grain.
    ActivateOn(NodeId),
    /// The directory names an activation on this node.
    Here(Arc<DirectoryEntry>),
}

/// Returns `duration` in whole milliseconds, rounded up. A caller that computed its deadline
/// before the call read the clock gave a timeout a little longer than what remained, and a
/// 1 ms timeout must not be reported as 0 ms.
fn millis_rounded_up(duration: Duration) -> u64 {
    let partial = u128::from(!duration.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(duration.as_millis() + partial).unwrap_or(u64::MAX)
}

pub(crate) fn deadline_to_unix_ms(deadline: Instant) -> u64 {
    super::wall_clock::to_unix_ms(deadline)
}

pub(crate) fn unix_ms_to_deadline(unix_ms: u64) -> Instant {
    super::wall_clock::from_unix_ms(unix_ms)
}

impl Node {
    /// Checks that the grain type and method exist, before anything is routed, and resolves
    /// the method.
    pub(crate) fn check_method(
        &self,
        grain: &GrainId,
        method: &str,
    ) -> Result<CheckedMethod, CallError> {
        if grain.key.is_empty() || grain.key.len() > MAX_KEY_BYTES {
            return Err(CallError::InvalidKey {
                grain_type: grain.grain_type.clone(),
                key_bytes: grain.key.len(),
                max_bytes: MAX_KEY_BYTES,
            });
        }
        let factory = self.inner.registry.require(&grain.grain_type)?;
        let Some(id) = factory.resolve_method(method) else {
            return Err(CallError::UnknownMethod {
                grain_type: grain.grain_type.clone(),
                method: method.to_string(),
                known: factory.method_names().join(", "),
            });
        };
        let worker_limit = factory
            .options()
            .stateless_worker
            .map(|max| max.get() as usize);
        Ok(CheckedMethod { id, worker_limit })
    }

    /// Checks that a request of `len` bytes fits in one cluster frame.
    ///
    /// A peer drops a frame above its limit without a reply, so the caller would see only a
    /// lost request. Every node has the same limit, so the sender checks it.
    pub(super) fn check_frame(
        &self,
        grain: &GrainId,
        method: &str,
        len: usize,
    ) -> Result<(), CallError> {
        let limit = self.inner.config.max_frame_bytes;
        if len as u64 + FRAME_OVERHEAD_BYTES > limit {
            return Err(CallError::InvalidPayload {
                grain_type: grain.grain_type.clone(),
                method: method.to_string(),
                detail: format!(
                    "a request of {len} bytes does not fit in one cluster frame of \
                     max_frame_bytes {limit}; send a smaller payload or raise max_frame_bytes on \
                     every node"
                ),
            });
        }
        Ok(())
    }

    /// Calls `method` of `grain` with `payload`, from this node, until `deadline`.
    pub(crate) async fn invoke(
        &self,
        grain: GrainId,
        method: &str,
        payload: Payload,
        deadline: Instant,
    ) -> Result<InvokeReply, CallError> {
        self.invoke_ref(&grain, method, payload, Instant::now(), deadline)
            .await
    }

    /// [`Node::invoke`] for a caller that keeps the grain id, which saves its copy, and that
    /// read the clock at `started` to set the deadline, which saves a reading.
    pub(crate) async fn invoke_ref(
        &self,
        grain: &GrainId,
        method: &str,
        payload: Payload,
        started: Instant,
        deadline: Instant,
    ) -> Result<InvokeReply, CallError> {
        let result = self
            .invoke_inner(grain, method, payload, started, deadline, None)
            .await;
        self.finish_call(result, started, deadline, None)
    }

    /// [`Node::invoke_ref`] for a caller that caches a route to the grain's local activation.
    /// The call tries the cached activation first, and the route caches the activation and
    /// method that serve the call on this node.
    pub(crate) async fn invoke_cached(
        &self,
        grain: &GrainId,
        method: &str,
        mut payload: Payload,
        started: Instant,
        deadline: Instant,
        cached: CachedRoute<'_>,
    ) -> Result<InvokeReply, CallError> {
        if started < deadline {
            match self
                .deliver_cached(grain, cached, payload, started, deadline)
                .await
            {
                Ok(delivered) => {
                    let result = delivered.result.map(|payload| self.local_reply(payload, 0));
                    return self.finish_call(result, started, deadline, delivered.ended_inline);
                }
                Err(returned) => payload = returned,
            }
        }
        // Boxed: the full path is rare for a cached route, and inline it would enlarge the future
        // of every call.
        let resolved = self.invoke_inner(grain, method, payload, started, deadline, Some(cached));
        let result = Box::pin(resolved).await;
        self.finish_call(result, started, deadline, None)
    }

    /// Counts a call that started at `started` and returns its result, with the timeout the
    /// caller gave in a deadline error. The call ended at `ended`, or now if that is `None`.
    fn finish_call(
        &self,
        mut result: Result<InvokeReply, CallError>,
        started: Instant,
        deadline: Instant,
        ended: Option<Instant>,
    ) -> Result<InvokeReply, CallError> {
        if let Ok(reply) = &result {
            self.inner.forwarding.record_hops(reply.hops);
        }
        // Steps deep in the call path know only that the deadline passed; report the timeout
        // the caller gave.
        if let Err(CallError::DeadlineExceeded { after_ms, .. }) = &mut result
            && *after_ms == 0
        {
            *after_ms = millis_rounded_up(deadline.saturating_duration_since(started));
        }
        let elapsed = ended
            .unwrap_or_else(Instant::now)
            .saturating_duration_since(started);
        self.inner
            .metrics
            .record_call(elapsed, result.as_ref().err());
        result
    }

    async fn invoke_inner(
        &self,
        grain: &GrainId,
        method: &str,
        payload: Payload,
        started: Instant,
        deadline: Instant,
        cached: Option<CachedRoute<'_>>,
    ) -> Result<InvokeReply, CallError> {
        let checked = self.check_method(grain, method)?;
        // Only methods of types with one activation per grain are cached: a stateless worker
        // call picks among several activations each time.
        let cached = cached.filter(|_| checked.worker_limit.is_none());
        if let Some(cached) = cached {
            cached.route.cache_method(cached.request, checked);
        }
        // Only stateless worker types may spread; the check takes a lock, so it comes second.
        if checked.worker_limit.is_some()
            && self.inner.forwarding.is_spread_worker(&grain.grain_type)
        {
            return Box::pin(self.invoke_spread_worker(grain, checked, payload, deadline)).await;
        }
        // `finish_call` replaces the 0 with the timeout the caller gave.
        let timed_out = || CallError::DeadlineExceeded {
            grain: grain.clone(),
            after_ms: 0,
        };
        let mut payload = Some(payload);
        let mut encoded: Option<(PayloadFormat, Vec<u8>)> = None;
        // The last forward failure that was retried; the caller gets it if no attempt is left.
        let mut retried: Option<CallError> = None;
        for attempt in 0..MAX_ATTEMPTS {
            // The first attempt uses the caller's reading of the clock.
            let now = if attempt == 0 {
                started
            } else {
                Instant::now()
            };
            if now >= deadline {
                return Err(timed_out());
            }
            let current = match payload.take() {
                Some(payload) => payload,
                None => match &encoded {
                    Some((format, bytes)) => Payload::Encoded {
                        format: *format,
                        bytes: bytes.clone(),
                    },
                    None => {
                        return Err(CallError::Internal("payload lost between attempts".into()));
                    }
                },
            };
            let route = cached.map(|cached| cached.route);
            match self
                .deliver_local_caching(grain, checked, current, now, deadline, route)
                .await
            {
                Ok(reply) => return reply.map(|payload| self.local_reply(payload, 0)),
                Err(returned) => payload = Some(returned),
            }
            if self.is_declared_down() {
                // This node's view of the cluster is void, so it routes nothing further.
                return Err(CallError::ShuttingDown {
                    node: self.inner.id.name.to_string(),
                });
            }
            match self.resolve(grain, deadline).await? {
                // The rare steps here and below are boxed. Every call's future has room for its
                // largest step and is copied when it is created, so an inline rare step would
                // slow down every call.
                Target::Here(entry) => {
                    // An activation that left the catalog may still be running its
                    // `on_deactivate`. It holds the grain's activation lock until that ends
                    // (`Node::fence_deactivation`), so this wait also orders the next
                    // activation's state read after that write.
                    let found = Box::pin(self.wait_for_local_activation(&entry, deadline)).await;
                    if found == Some(false) {
                        Box::pin(self.handle_not_here(&entry, deadline)).await;
                    }
                }
                Target::ActivateHere => {
                    if let Err(winner) = Box::pin(self.activate_local(grain, deadline)).await? {
                        self.inner
                            .cache
                            .lock()
                            .expect("cache lock poisoned")
                            .insert(winner);
                    }
                }
                Target::Host(entry, peer) => {
                    let bytes = encode_once(&mut payload, &mut encoded, grain, method)?;
                    match self
                        .forward(grain, method, bytes, &peer, Route::Deliver, 0, deadline)
                        .await
                    {
                        Ok(Some(reply)) => return Ok(reply),
                        Ok(None) => Box::pin(self.handle_not_here(&entry, deadline)).await,
                        Err(error) if self.may_retry_forward(&peer, &error) => {
                            Box::pin(self.handle_unreachable_host(&entry, &peer, &error, deadline))
                                .await;
                            retried = Some(error);
                        }
                        Err(error) => return Err(error),
                    }
                }
                Target::ActivateOn(peer) => {
                    let bytes = encode_once(&mut payload, &mut encoded, grain, method)?;
                    let forwarded = self
                        .forward(
                            grain,
                            method,
                            bytes,
                            &peer,
                            Route::ActivateHere,
                            0,
                            deadline,
                        )
                        .await;
                    match forwarded {
                        Ok(Some(reply)) => return Ok(reply),
                        // The peer lost a registration race, or no longer accepts activations
                        // and this node's view has not caught up yet: let it settle.
                        Ok(None) => tokio::time::sleep(SETTLE_PAUSE).await,
                        Err(error) if self.may_retry_forward(&peer, &error) => {
                            tracing::debug!(grain = %grain, peer = %peer.name, %error, "placement target unreachable; placing again");
                            tokio::time::sleep(SETTLE_PAUSE).await;
                            retried = Some(error);
                        }
                        Err(error) => return Err(error),
                    }
                }
            }
        }
        Err(retried.unwrap_or_else(|| CallError::TooManyHops {
            grain: grain.clone(),
            hops: MAX_ATTEMPTS,
        }))
    }

    pub(super) fn local_reply(&self, payload: Payload, hops: u32) -> InvokeReply {
        InvokeReply {
            payload,
            served_by: None,
            hops,
        }
    }

    /// Finds where the call goes: the registered activation, or a node chosen by placement.
    async fn resolve(&self, grain: &GrainId, deadline: Instant) -> Result<Target, CallError> {
        if let Some(target) = self.cached_target(grain) {
            return Ok(target);
        }
        // Boxed, so that the future of a call that hits the cache stays small.
        Box::pin(self.resolve_uncached(grain, deadline)).await
    }

    /// Finds where a call goes that the route cache has no live host for, through the
    /// directory and placement.
    async fn resolve_uncached(
        &self,
        grain: &GrainId,
        deadline: Instant,
    ) -> Result<Target, CallError> {
        loop {
            if Instant::now() >= deadline {
                return Err(CallError::DeadlineExceeded {
                    grain: grain.clone(),
                    after_ms: 0,
                });
            }
            let request = DirectoryRequest::Lookup {
                grain: grain.clone(),
            };
            match self.directory_request(grain, request, deadline).await {
                Ok(DirectoryResponse::Lookup(LookupOutcome::Found(entry))) => {
                    self.inner
                        .cache
                        .lock()
                        .expect("cache lock poisoned")
                        .insert(entry.clone());
                    if let Some(target) = self.target_of(Arc::new(entry)) {
                        return Ok(target);
                    }
                }
                Ok(DirectoryResponse::Lookup(LookupOutcome::NotFound)) => match self.place(grain) {
                    // While this node is still joining, the cluster may simply not have an
                    // Active node yet: wait for one within the call's deadline.
                    Err(CallError::NoActiveNode { .. })
                        if self.state() == crate::membership::NodeState::Joining => {}
                    placed => return placed,
                },
                Ok(_) | Err(_) => {}
            }
            // The owner is not ready, not reachable, or the views disagree: wait for them.
            tokio::time::sleep(SETTLE_PAUSE).await;
        }
    }

    /// Returns where the route cache's entry of `grain` points, if it has one and its host is
    /// a live member.
    pub(super) fn cached_target(&self, grain: &GrainId) -> Option<Target> {
        let cached = self
            .inner
            .cache
            .lock()
            .expect("cache lock poisoned")
            .get_shared(grain)
            .cloned();
        self.target_of(cached?)
    }

    /// Returns where an entry points, or `None` if its host is no longer a live member.
    fn target_of(&self, entry: Arc<DirectoryEntry>) -> Option<Target> {
        if self.inner.id.is_incarnation(&entry.host) {
            // The activation may have arrived (by migration) after the caller looked in the
            // catalog, or may be starting right now.
            return Some(Target::Here(entry));
        }
        let members = self.inner.members.read().expect("members lock poisoned");
        let host = members
            .by_incarnation
            .get(&entry.host)
            .filter(|m| m.is_live())?
            .id
            .clone();
        Some(Target::Host(entry, host))
    }

    /// Chooses a node for a new activation of `grain`.
    fn place(&self, grain: &GrainId) -> Result<Target, CallError> {
        let local = self.inner.id.incarnation();
        let candidates: Vec<PlacementCandidate> = {
            let members = self.inner.members.read().expect("members lock poisoned");
            let recent = self
                .inner
                .recent_placements
                .lock()
                .expect("placements lock poisoned");
            let is_connected = |m: &crate::membership::MemberInfo| {
                m.id.incarnation() == local || self.transport().is_connected(&m.id)
            };
            members
                .by_incarnation
                .values()
                .filter(|m| is_connected(m))
                .map(|m| PlacementCandidate {
                    node: m.incarnation(),
                    // The view learns this node's own state through the membership agent, a
                    // moment after the node changed it; use the current one.
                    state: if m.incarnation() == local {
                        self.state()
                    } else {
                        m.state
                    },
                    load: m.load,
                    recent_placements: recent.get(&m.incarnation()).copied().unwrap_or(0),
                })
                .collect()
        };
        let strategy = self
            .inner
            .registry
            .get(&grain.grain_type)
            .map(|f| f.options().placement)
            .unwrap_or_default();
        let chosen = {
            let mut rng = self.inner.rng.lock().expect("rng lock poisoned");
            crate::placement::choose(
                strategy,
                &self.inner.placement,
                grain,
                &local,
                &candidates,
                &mut *rng,
            )
        }
        .map_err(|_| CallError::NoActiveNode {
            grain: grain.clone(),
        })?;
        *self
            .inner
            .recent_placements
            .lock()
            .expect("placements lock poisoned")
            .entry(chosen.clone())
            .or_default() += 1;
        if chosen == local {
            return Ok(Target::ActivateHere);
        }
        let members = self.inner.members.read().expect("members lock poisoned");
        let peer = members.by_incarnation.get(&chosen).map(|m| m.id.clone());
        peer.map(Target::ActivateOn).ok_or(CallError::NoActiveNode {
            grain: grain.clone(),
        })
    }

    /// Activates `grain` on this node, registering it first. Returns `Ok(Err(winner))` if
    /// another activation won the registration.
    pub(crate) async fn activate_local(
        &self,
        grain: &GrainId,
        deadline: Instant,
    ) -> Result<Result<(), DirectoryEntry>, CallError> {
        let stopping = self
            .inner
            .stopping
            .load(std::sync::atomic::Ordering::Acquire);
        if stopping || self.is_declared_down() {
            return Err(CallError::ShuttingDown {
                node: self.inner.id.name.to_string(),
            });
        }
        let lock = self.inner.catalog.activation_lock(grain);
        let result = match self.wait_until_deadline(grain, deadline, lock.lock()).await {
            Err(timed_out) => Err(timed_out),
            Ok(_guard) if self.inner.catalog.contains(grain) => Ok(Ok(())),
            Ok(_guard) => self.register_and_start(grain, deadline).await,
        };
        self.inner.catalog.release_activation_lock(grain, lock);
        result
    }

    async fn register_and_start(
        &self,
        grain: &GrainId,
        deadline: Instant,
    ) -> Result<Result<(), DirectoryEntry>, CallError> {
        let activation_id = self
            .inner
            .next_activation_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let entry = DirectoryEntry {
            grain: grain.clone(),
            host: self.inner.id.incarnation(),
            activation_id,
            epoch: 0,
        };
        loop {
            if Instant::now() >= deadline {
                return Err(CallError::DeadlineExceeded {
                    grain: grain.clone(),
                    after_ms: 0,
                });
            }
            // Registration and start happen under the shared activation gate, so a directory
            // sync never snapshots the catalog between them (see `activation_gate`).
            let gate = self
                .wait_until_deadline(grain, deadline, self.inner.activation_gate.read())
                .await?;
            let request = DirectoryRequest::Register {
                entry: entry.clone(),
                expect: Expect::Absent,
            };
            match self.directory_request(grain, request, deadline).await {
                Ok(DirectoryResponse::Register(RegisterOutcome::Registered(entry))) => {
                    let started = self.start_activation(&entry, None).await.map(Ok);
                    drop(gate);
                    return started;
                }
                Ok(DirectoryResponse::Register(RegisterOutcome::Conflict(winner))) => {
                    return Ok(Err(winner));
                }
                Ok(_) | Err(_) => {
                    // Let a waiting sync run while the owner settles.
                    drop(gate);
                    tokio::time::sleep(SETTLE_PAUSE).await;
                }
            }
        }
    }

    /// Starts the activation that `entry` registered on this node and adds it to the catalog.
    /// On failure the entry is removed from the directory again.
    pub(crate) async fn start_activation(
        &self,
        entry: &DirectoryEntry,
        migration_state: Option<Vec<u8>>,
    ) -> Result<(), CallError> {
        let grain = &entry.grain;
        let factory = self.inner.registry.require(&grain.grain_type)?.clone();
        let idle_after = factory
            .options()
            .idle_after
            .unwrap_or_else(|| self.inner.config.idle_after());
        let shared = std::sync::Arc::new(ActivationShared::new(
            grain.clone(),
            entry.activation_id,
            entry.epoch,
            idle_after,
        ));
        let mut ctx = GrainContext::new(
            grain.clone(),
            entry.activation_id,
            entry.epoch,
            self.clone(),
        );
        ctx.set_migration_state(migration_state);
        match activation::start(factory.as_ref(), ctx, std::sync::Arc::clone(&shared)).await {
            Ok(actor) => {
                self.inner
                    .catalog
                    .insert(super::catalog::ActivationHandle { actor, shared });
                self.inner.metrics.activations_started.inc();
                tracing::debug!(grain = %grain, activation = entry.activation_id, epoch = entry.epoch, "activated");
                Ok(())
            }
            Err(message) => {
                self.unregister_activation(&shared);
                tracing::warn!(grain = %grain, %message, "activation failed");
                Err(CallError::Grain {
                    grain: grain.clone(),
                    error: GrainError::new("activation_failed", message),
                })
            }
        }
    }

    /// Forwards an encoded call to `peer`. Returns `None` when the peer does not host the grain.
    #[allow(clippy::too_many_arguments)] // One call's fields; a struct would only rename them.
    pub(crate) async fn forward(
        &self,
        grain: &GrainId,
        method: &str,
        (format, payload): (PayloadFormat, Vec<u8>),
        peer: &NodeId,
        route: Route,
        hops: u32,
        deadline: Instant,
    ) -> Result<Option<InvokeReply>, CallError> {
        if hops >= MAX_HOPS {
            return Err(CallError::TooManyHops {
                grain: grain.clone(),
                hops,
            });
        }
        let now = self.inner.clock.now();
        self.inner.forwarding.admit(peer, grain, now)?;
        self.send_forward(
            grain,
            method,
            (format, payload),
            peer,
            route,
            hops,
            deadline,
        )
        .await
    }

    /// Sends a call that the peer's breaker admitted, and records the outcome for the breaker.
    #[allow(clippy::too_many_arguments)] // The fields of `forward`, which checks them first.
    pub(super) async fn send_forward(
        &self,
        grain: &GrainId,
        method: &str,
        (format, payload): (PayloadFormat, Vec<u8>),
        peer: &NodeId,
        route: Route,
        hops: u32,
        deadline: Instant,
    ) -> Result<Option<InvokeReply>, CallError> {
        self.check_frame(grain, method, payload.len())?;
        let envelope = Envelope::V1(CallEnvelope {
            grain: grain.clone(),
            method: method.to_string(),
            format,
            payload,
            deadline_unix_ms: deadline_to_unix_ms(deadline),
            trace_parent: None,
            hops: hops + 1,
            route,
        });
        self.inner.metrics.forwards.inc();
        let sent = Instant::now();
        let result = self.transport().call(peer, envelope, deadline).await;
        self.inner.forwarding.finish(
            &peer.name,
            super::forwarding::peer_outcome(&result, sent.elapsed()),
            self.inner.clock.now(),
        );
        match result {
            Ok(CallReply::Ok {
                payload,
                served_by,
                hops,
            }) => Ok(Some(InvokeReply {
                payload: Payload::Encoded {
                    format,
                    bytes: payload,
                },
                served_by: Some(served_by),
                hops,
            })),
            Ok(CallReply::NotHere) => Ok(None),
            Ok(CallReply::Failed(error)) => Err(error),
            Err(PeerError::TimedOut(_)) => Err(CallError::DeadlineExceeded {
                grain: grain.clone(),
                after_ms: 0,
            }),
            Err(error) => {
                // The peer went away; if membership has not noticed yet, retrying could only
                // reach it again, so report it to the caller.
                Err(CallError::NodeUnavailable {
                    node: peer.name.to_string(),
                    grain: grain.clone(),
                    detail: error.to_string(),
                    before_send: error.before_send(),
                })
            }
        }
    }

    /// Waits until no activation of `entry`'s grain is starting on this node, and returns
    /// whether the grain is active here afterwards, or `None` if `deadline` passed first.
    ///
    /// An activation registers in the directory before it starts (first activation and
    /// migration alike), under the grain's activation lock. A call that finds the entry but no
    /// activation must wait for that lock before it calls the entry stale; otherwise it would
    /// unregister a valid entry, and a second activation could start elsewhere.
    async fn wait_for_local_activation(
        &self,
        entry: &DirectoryEntry,
        deadline: Instant,
    ) -> Option<bool> {
        let lock = self.inner.catalog.activation_lock(&entry.grain);
        let waited = tokio::time::timeout_at(deadline.into(), lock.lock())
            .await
            .map(drop);
        self.inner
            .catalog
            .release_activation_lock(&entry.grain, lock);
        waited.ok()?;
        Some(self.inner.catalog.contains(&entry.grain))
    }

    /// Waits for `acquire` (a lock or gate on the activation path) until `deadline`, and
    /// returns a deadline error for `grain` if it passes first. Those locks can be held for
    /// as long as another call's deadline, so a call must not wait for them unbounded.
    pub(super) async fn wait_until_deadline<T>(
        &self,
        grain: &GrainId,
        deadline: Instant,
        acquire: impl std::future::Future<Output = T>,
    ) -> Result<T, CallError> {
        tokio::time::timeout_at(deadline.into(), acquire)
            .await
            .map_err(|_| CallError::DeadlineExceeded {
                grain: grain.clone(),
                after_ms: 0,
            })
    }

    /// Drops the cached entry of a host that a call could not reach and that is known not to
    /// have run it (see [`Node::may_retry_forward`]), and pauses before the call resolves
    /// again. A host that announced Leaving hosts nothing, so its directory entry is removed
    /// as after `NotHere`. Any other host may still run the grain, so only the cached entry is
    /// dropped.
    async fn handle_unreachable_host(
        &self,
        entry: &DirectoryEntry,
        peer: &NodeId,
        error: &CallError,
        deadline: Instant,
    ) {
        tracing::debug!(grain = %entry.grain, peer = %peer.name, %error, "host unreachable; resolving again");
        if self.has_departed(&entry.host) {
            self.handle_not_here(entry, deadline).await;
        } else {
            self.inner
                .cache
                .lock()
                .expect("cache lock poisoned")
                .handle_not_here(&entry.grain, &entry.host);
        }
        tokio::time::sleep(SETTLE_PAUSE).await;
    }

    /// Drops a stale entry after its host replied `NotHere`, waiting for the directory at
    /// most until the call's `deadline` (and at most 1 s).
    async fn handle_not_here(&self, entry: &DirectoryEntry, deadline: Instant) {
        self.inner
            .cache
            .lock()
            .expect("cache lock poisoned")
            .handle_not_here(&entry.grain, &entry.host);
        // The host confirmed it does not run this activation, and activation ids are never
        // reused within an incarnation, so removing exactly this entry cannot remove a newer one.
        let request = DirectoryRequest::Unregister {
            grain: entry.grain.clone(),
            host: entry.host.clone(),
            activation_id: entry.activation_id,
        };
        let deadline = deadline.min(Instant::now() + Duration::from_secs(1));
        let _ = self
            .directory_request(&entry.grain, request, deadline)
            .await;
    }

    /// Serves a call that a peer forwarded to this node.
    pub(crate) async fn handle_forwarded(&self, call: CallEnvelope) -> CallReply {
        let deadline = unix_ms_to_deadline(call.deadline_unix_ms);
        let checked = match self.check_method(&call.grain, &call.method) {
            Ok(checked) => checked,
            Err(error) => return CallReply::Failed(error),
        };
        if self.is_stopping() && checked.worker_limit.is_some() {
            // A leaving node starts no stateless worker either; the caller picks another node.
            return CallReply::NotHere;
        }
        let started = Instant::now();
        let mut payload = Payload::Encoded {
            format: call.format,
            bytes: call.payload,
        };
        for attempt in 0..2 {
            // The second attempt follows a wait for an activation, so it reads the clock again.
            let sent_at = if attempt == 0 {
                started
            } else {
                Instant::now()
            };
            match self
                .deliver_local(&call.grain, checked, payload, sent_at, deadline)
                .await
            {
                Ok(result) => {
                    self.inner
                        .metrics
                        .record_call(started.elapsed(), result.as_ref().err());
                    return match result.and_then(|p| {
                        p.into_bytes(call.format)
                            .map_err(|e| CallError::Internal(e.to_string()))
                    }) {
                        Ok(bytes) => CallReply::Ok {
                            payload: bytes,
                            served_by: self.inner.id.name.to_string(),
                            hops: call.hops,
                        },
                        Err(error) => CallReply::Failed(error),
                    };
                }
                Err(returned) => payload = returned,
            }
            if call.route != Route::ActivateHere {
                // An activation of the grain may be starting here (see
                // `wait_for_local_activation`); reply `NotHere` only once none is.
                let lock = self.inner.catalog.activation_lock(&call.grain);
                let waited = self
                    .wait_until_deadline(&call.grain, deadline, lock.lock())
                    .await
                    .map(drop);
                self.inner
                    .catalog
                    .release_activation_lock(&call.grain, lock);
                if let Err(timed_out) = waited {
                    return CallReply::Failed(timed_out);
                }
                if !self.inner.catalog.contains(&call.grain) {
                    return CallReply::NotHere;
                }
                continue;
            }
            if self.is_stopping() || self.is_declared_down() || !self.state().accepts_activations()
            {
                // Placement in the caller's view is stale: this node runs no new
                // activations. `NotHere` makes the caller place the grain again.
                return CallReply::NotHere;
            }
            match self.activate_local(&call.grain, deadline).await {
                Ok(Ok(())) => {}
                Ok(Err(_winner)) => return CallReply::NotHere,
                Err(error) => return CallReply::Failed(error),
            }
        }
        CallReply::NotHere
    }
}

pub(super) fn encode_once(
    payload: &mut Option<Payload>,
    encoded: &mut Option<(PayloadFormat, Vec<u8>)>,
    grain: &GrainId,
    method: &str,
) -> Result<(PayloadFormat, Vec<u8>), CallError> {
    if let Some(payload) = payload.take() {
        *encoded = Some(encode_payload(payload, grain, method)?);
    }
    encoded
        .clone()
        .ok_or_else(|| CallError::Internal("payload lost between attempts".into()))
}

/// Encodes a request to leave the node: a local value in postcard, encoded bytes as they are.
pub(super) fn encode_payload(
    payload: Payload,
    grain: &GrainId,
    method: &str,
) -> Result<(PayloadFormat, Vec<u8>), CallError> {
    let format = match &payload {
        Payload::Encoded { format, .. } => *format,
        Payload::Local { .. } => PayloadFormat::Postcard,
    };
    let bytes = payload
        .into_bytes(format)
        .map_err(|e| CallError::InvalidPayload {
            grain_type: grain.grain_type.clone(),
            method: method.to_string(),
            detail: e.to_string(),
        })?;
    Ok((format, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_millis_round_up() {
        assert_eq!(millis_rounded_up(Duration::from_micros(999_400)), 1000);
        assert_eq!(millis_rounded_up(Duration::from_micros(970)), 1);
        assert_eq!(millis_rounded_up(Duration::from_millis(200)), 200);
        assert_eq!(millis_rounded_up(Duration::ZERO), 0);
    }
}
