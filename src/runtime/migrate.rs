//! The node's side of migration: moving one grain, taking one over, and draining the node.
//! The protocol and its race argument are at the top of `crate::migration::handoff`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::oneshot;

use super::node::Node;
use super::router::{deadline_to_unix_ms, unix_ms_to_deadline};
use crate::directory::{DirectoryEntry, Expect, LookupOutcome, RegisterOutcome};
use crate::grain::GrainId;
use crate::grain::activation::{ActivationMsg, ActivationShared, MigrateOut, StopReason};
use crate::membership::{NodeId, NodeState};
use crate::migration::{
    MigrationEnvelope, MigrationError, MigrationReply, MigrationReport, MigrationRequest,
};
use crate::transport::{DirectoryRequest, DirectoryResponse};

/// Migrations a drain runs at once.
const DRAIN_CONCURRENCY: usize = 32;
/// Deadline of one migration during a drain.
const DRAIN_MIGRATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before re-registering at the target while the directory owner is not ready.
const REGISTER_RETRY_PAUSE: Duration = Duration::from_millis(20);

/// The end of a hand-off to the target, as the source observes it.
pub(crate) enum HandOff {
    /// The target registered and runs the activation.
    Accepted(DirectoryEntry),
    /// The target changed nothing.
    Rejected(String),
    /// The target changed nothing because the deadline passed first.
    Expired,
    /// The source cannot tell; it must ask the directory.
    Unknown(String),
}

/// Load figures of one local activation, for the rebalancer.
#[derive(Clone, Debug)]
pub struct ActivationLoad {
    /// The grain.
    pub grain: GrainId,
    /// Turns run since the previous call of [`Node::local_activation_loads`].
    pub turns_since_last: u64,
    /// Calls queued in the activation's mailbox.
    pub mailbox_depth: u64,
    /// Whether the activation may migrate.
    pub movable: bool,
}

/// The outcome of a drain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Activations moved to other nodes.
    pub migrated: u64,
    /// Activations deactivated instead; they reactivate elsewhere from the store.
    pub deactivated: u64,
    /// Activations still on the node when the drain ended.
    pub remaining: u64,
    /// How long the drain took.
    pub duration: Duration,
}

impl Node {
    /// Moves the local activation of `grain` to the node named `target`, or to an Active node
    /// chosen by placement when `target` is `None`, without two activations ever running.
    pub async fn migrate(
        &self,
        grain: &GrainId,
        target: Option<&str>,
        deadline: Instant,
    ) -> Result<MigrationReport, MigrationError> {
        let started = Instant::now();
        let result = self.migrate_inner(grain, target, deadline).await;
        let outcome = result
            .as_ref()
            .map_or_else(MigrationError::outcome_label, |_| "migrated");
        self.inner
            .metrics
            .migrations
            .with_label_values(&[outcome])
            .inc();
        self.inner
            .metrics
            .migration_duration
            .observe(started.elapsed().as_secs_f64());
        result
    }

    async fn migrate_inner(
        &self,
        grain: &GrainId,
        target: Option<&str>,
        deadline: Instant,
    ) -> Result<MigrationReport, MigrationError> {
        let node = self.inner.id.name.to_string();
        let handle = self
            .inner
            .catalog
            .get(grain)
            .ok_or_else(|| MigrationError::NotHere {
                grain: grain.clone(),
                node: node.clone(),
            })?;
        if !self.is_movable(grain) {
            return Err(MigrationError::Immovable {
                grain: grain.clone(),
                grain_type: grain.grain_type.clone(),
            });
        }
        let target = self.migration_target(grain, target)?;
        let (reply, receive) = oneshot::channel();
        let request = MigrateOut {
            target,
            deadline,
            started: Instant::now(),
            reply,
        };
        if handle.actor.cast(ActivationMsg::Migrate(request)).is_err() {
            return Err(MigrationError::Stopped {
                grain: grain.clone(),
            });
        }
        // The activation always replies, within the deadline of the hand-off it runs.
        let remaining = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
        match tokio::time::timeout(remaining, receive).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(MigrationError::Stopped {
                grain: grain.clone(),
            }),
            Err(_) => Err(MigrationError::TimedOut {
                grain: grain.clone(),
            }),
        }
    }

    /// Returns whether grains of `grain`'s type can migrate: not immovable, not stateless
    /// workers.
    pub(crate) fn is_movable(&self, grain: &GrainId) -> bool {
        self.inner
            .registry
            .get(&grain.grain_type)
            .is_some_and(|f| !f.options().immovable && f.options().stateless_worker.is_none())
    }

    /// Picks the node a grain migrates to: the named one if it is an Active peer, else the
    /// least loaded Active peer.
    fn migration_target(
        &self,
        grain: &GrainId,
        target: Option<&str>,
    ) -> Result<NodeId, MigrationError> {
        let local = self.inner.id.incarnation();
        let members = self.members();
        let no_target = |detail: String| MigrationError::NoTarget {
            grain: grain.clone(),
            detail,
        };
        if let Some(name) = target {
            let member = members.iter().find(|m| m.id.name == name && m.is_live());
            return match member {
                Some(m) if m.id.incarnation() == local => {
                    Err(no_target(format!("{name} is the source node")))
                }
                Some(m) if m.state == NodeState::Active => Ok(m.id.clone()),
                Some(m) => Err(no_target(format!("{name} is {}, not ACTIVE", m.state))),
                None => Err(no_target(format!("{name} is not a live member"))),
            };
        }
        let recent = self
            .inner
            .recent_placements
            .lock()
            .expect("placements lock poisoned")
            .clone();
        members
            .iter()
            .filter(|m| m.state == NodeState::Active && m.id.incarnation() != local)
            .filter(|m| self.transport().is_connected(&m.id))
            .min_by_key(|m| m.load.activations + recent.get(&m.incarnation()).copied().unwrap_or(0))
            .map(|m| {
                let mut recent = self
                    .inner
                    .recent_placements
                    .lock()
                    .expect("placements lock poisoned");
                *recent.entry(m.incarnation()).or_default() += 1;
                m.id.clone()
            })
            .ok_or_else(|| no_target("no other node is ACTIVE".into()))
    }

    /// Returns the directory entry of a local activation.
    pub(crate) fn local_entry(&self, shared: &ActivationShared) -> DirectoryEntry {
        DirectoryEntry {
            grain: shared.grain.clone(),
            host: self.inner.id.incarnation(),
            activation_id: shared.activation_id,
            epoch: shared.epoch,
        }
    }

    /// Sends a dehydrated activation to `target` (steps 2 and 3 of the protocol).
    pub(crate) async fn hand_off(
        &self,
        source: &DirectoryEntry,
        target: &NodeId,
        state: Option<Vec<u8>>,
        deadline: Instant,
    ) -> HandOff {
        let request = MigrationEnvelope::V1(MigrationRequest {
            source: source.clone(),
            state,
            deadline_unix_ms: deadline_to_unix_ms(deadline),
        });
        match self.transport().migrate(target, request, deadline).await {
            Ok(MigrationReply::Accepted(entry)) => HandOff::Accepted(entry),
            Ok(MigrationReply::Rejected(detail)) => HandOff::Rejected(detail),
            Ok(MigrationReply::Expired(_)) => HandOff::Expired,
            Ok(MigrationReply::Failed(detail)) => HandOff::Unknown(detail),
            Err(error) if error.before_send() => HandOff::Rejected(error.to_string()),
            Err(error) => HandOff::Unknown(error.to_string()),
        }
    }

    /// Returns whether the directory still names `entry`'s activation; `false` when it names
    /// another one or cannot be asked.
    pub(crate) async fn still_registered(&self, entry: &DirectoryEntry) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let request = DirectoryRequest::Lookup {
                grain: entry.grain.clone(),
            };
            match self
                .directory_request(&entry.grain, request, deadline)
                .await
            {
                Ok(DirectoryResponse::Lookup(LookupOutcome::Found(found))) => {
                    return found.is_same_activation(entry);
                }
                Ok(DirectoryResponse::Lookup(LookupOutcome::NotFound)) => return false,
                _ if Instant::now() >= deadline => return false,
                _ => tokio::time::sleep(REGISTER_RETRY_PAUSE).await,
            }
        }
    }

    /// Takes over a migrating activation (step 3 of the protocol, on the target).
    pub(crate) async fn handle_migration_in(&self, request: MigrationRequest) -> MigrationReply {
        let grain = request.source.grain.clone();
        let deadline = unix_ms_to_deadline(request.deadline_unix_ms);
        if self.inner.stopping.load(Ordering::Acquire) || self.state() != NodeState::Active {
            return MigrationReply::Rejected(format!(
                "node {} is {}, not ACTIVE",
                self.inner.id.name,
                self.state()
            ));
        }
        if self.inner.registry.get(&grain.grain_type).is_none() {
            return MigrationReply::Rejected(format!(
                "grain type {:?} is not registered here",
                grain.grain_type
            ));
        }
        let lock = self.inner.catalog.activation_lock(&grain);
        let reply = match tokio::time::timeout_at(deadline.into(), lock.lock()).await {
            Ok(_guard) => self.take_over(request, deadline).await,
            Err(_) => MigrationReply::Expired(format!(
                "deadline passed while another activation of {grain} was starting here"
            )),
        };
        self.inner.catalog.release_activation_lock(&grain, lock);
        reply
    }

    async fn take_over(&self, request: MigrationRequest, deadline: Instant) -> MigrationReply {
        let source = request.source;
        let grain = source.grain.clone();
        if self.inner.catalog.contains(&grain) {
            return MigrationReply::Rejected(format!(
                "{grain} is already active on {}",
                self.inner.id.name
            ));
        }
        let activation_id = self
            .inner
            .next_activation_id
            .fetch_add(1, Ordering::Relaxed);
        let entry = DirectoryEntry {
            grain: grain.clone(),
            host: self.inner.id.incarnation(),
            activation_id,
            epoch: source.epoch + 1,
        };
        loop {
            if Instant::now() >= deadline {
                return MigrationReply::Expired("deadline passed before the registration".into());
            }
            // Registration and start under the shared activation gate, as in
            // `register_and_start`, so a directory sync re-asserts this activation.
            let Ok(gate) =
                tokio::time::timeout_at(deadline.into(), self.inner.activation_gate.read()).await
            else {
                return MigrationReply::Expired(
                    "deadline passed while a directory sync held the activation gate".into(),
                );
            };
            let register = DirectoryRequest::Register {
                entry: entry.clone(),
                expect: Expect::Epoch(source.epoch),
            };
            match self.directory_request(&grain, register, deadline).await {
                Ok(DirectoryResponse::Register(RegisterOutcome::Registered(registered))) => {
                    let started = self.start_activation(&registered, request.state).await;
                    drop(gate);
                    return match started {
                        Ok(()) => {
                            tracing::info!(grain = %grain, from = %source.host, epoch = registered.epoch, "took over migrating activation");
                            MigrationReply::Accepted(registered)
                        }
                        Err(error) => MigrationReply::Failed(error.to_string()),
                    };
                }
                Ok(DirectoryResponse::Register(RegisterOutcome::Conflict(current))) => {
                    return MigrationReply::Rejected(format!("directory changed: {current}"));
                }
                Ok(DirectoryResponse::Register(RegisterOutcome::Missing)) => {
                    return MigrationReply::Rejected(format!("{grain} has no directory entry"));
                }
                Ok(_) => {
                    drop(gate);
                    tokio::time::sleep(REGISTER_RETRY_PAUSE).await;
                }
                // The request may have reached the owner: only the directory can tell now.
                Err(error) => return MigrationReply::Failed(error.to_string()),
            }
        }
    }

    /// Drains this node: it becomes Draining, so placement sends it nothing new, and moves every
    /// activation to other Active nodes, deactivating those that cannot move. Returns when the
    /// node holds no activations or `timeout` has passed.
    pub async fn drain(&self, timeout: Duration) -> DrainReport {
        let started = Instant::now();
        let deadline = started + timeout;
        if self.state() == NodeState::Active || self.state() == NodeState::Joining {
            self.set_state(NodeState::Draining);
        }
        let mut report = DrainReport::default();
        while Instant::now() < deadline {
            let handles = self.inner.catalog.all_handles();
            if handles.is_empty() {
                break;
            }
            let steps: Vec<DrainStep> = futures::stream::iter(handles)
                .map(|handle| async move {
                    let grain = handle.shared.grain.clone();
                    if !handle.shared.worker && self.is_movable(&grain) {
                        let attempt_deadline = (Instant::now() + DRAIN_MIGRATION_TIMEOUT).min(deadline);
                        match self.migrate(&grain, None, attempt_deadline).await {
                            Ok(_) => return DrainStep::Migrated,
                            Err(MigrationError::NotHere { .. } | MigrationError::Stopped { .. }) => {
                                return DrainStep::Gone;
                            }
                            Err(MigrationError::Failed { kept: false, .. }) => return DrainStep::Deactivated,
                            Err(error) => tracing::debug!(grain = %grain, %error, "migration during drain failed"),
                        }
                        // Try again in the next pass, unless no Active node can take the grain:
                        // then deactivating is the only way to empty the node.
                        if !matches!(self.migration_target(&grain, None), Err(MigrationError::NoTarget { .. })) {
                            return DrainStep::Gone;
                        }
                    }
                    let (done, stopped) = oneshot::channel();
                    if handle.actor.cast(ActivationMsg::Stop(StopReason::Shutdown, Some(done))).is_ok() {
                        let _ = stopped.await;
                    }
                    DrainStep::Deactivated
                })
                .buffer_unordered(DRAIN_CONCURRENCY)
                .collect()
                .await;
            for step in steps {
                match step {
                    DrainStep::Migrated => report.migrated += 1,
                    DrainStep::Deactivated => report.deactivated += 1,
                    DrainStep::Gone => {}
                }
            }
        }
        report.remaining = self.inner.catalog.len() as u64;
        report.duration = started.elapsed();
        self.inner
            .metrics
            .drain_duration
            .observe(report.duration.as_secs_f64());
        tracing::info!(
            node = %self.inner.id.name,
            migrated = report.migrated,
            deactivated = report.deactivated,
            remaining = report.remaining,
            duration_ms = report.duration.as_millis() as u64,
            "drain finished"
        );
        report
    }

    /// Returns the load figures of every local activation and resets their turn counts.
    pub fn local_activation_loads(&self) -> Vec<ActivationLoad> {
        self.inner
            .catalog
            .handles()
            .into_iter()
            .map(|handle| ActivationLoad {
                movable: self.is_movable(&handle.shared.grain),
                turns_since_last: handle.shared.turns.swap(0, Ordering::Relaxed),
                mailbox_depth: handle.shared.pending.load(Ordering::Relaxed),
                grain: handle.shared.grain.clone(),
            })
            .collect()
    }
}

/// The outcome for one activation in one pass of a drain.
enum DrainStep {
    /// It moved to another node.
    Migrated,
    /// It was deactivated; it reactivates elsewhere from the store.
    Deactivated,
    /// It left by itself (idle, or stopped) or is retried in the next pass.
    Gone,
}
