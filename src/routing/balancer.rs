//! The routing core: known members, gateways with their load and breakers, and the pick.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use rand::Rng;

use super::affinity::AffinityCache;
use super::breaker::{BreakerState, CircuitBreaker};
use super::budget::RetryBudget;
use super::config::ClientConfig;
use super::ewma::PeakEwma;
use super::retry::Failure;
use super::strategy::{Candidate, Picker, StrategyKind};
use crate::clock::Millis;
use crate::directory::partition_owner;
use crate::grain::GrainId;
use crate::membership::{Incarnation, NodeState};

/// One member as the client knows it from the membership stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberUpdate {
    /// Stable node name.
    pub name: String,
    /// Id of the member's process start.
    pub boot_id: u64,
    /// gRPC address (`host:port`), empty when the member announced none.
    pub grpc_addr: String,
    /// Lifecycle state; only Active members are gateways.
    pub state: NodeState,
}

impl MemberUpdate {
    fn is_gateway(&self) -> bool {
        self.state == NodeState::Active && !self.grpc_addr.is_empty()
    }
}

/// A change of the gateway set that the glue applies to its connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayChange {
    /// Open a connection to a new gateway.
    Added {
        /// Node name.
        name: String,
        /// gRPC address.
        addr: String,
    },
    /// Close the connection to a gateway that is no longer Active.
    Removed {
        /// Node name.
        name: String,
    },
}

/// Why the balancer chose a gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PickReason {
    /// The strategy chose among the eligible gateways.
    Balanced,
    /// Grain-aware: the node that served the grain last.
    Cached,
    /// Grain-aware: the grain's directory partition owner, because no node is cached.
    PartitionOwner,
}

impl PickReason {
    /// Returns the label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            PickReason::Balanced => "balanced",
            PickReason::Cached => "cached",
            PickReason::PartitionOwner => "partition_owner",
        }
    }
}

/// The gateway chosen for one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Node name of the gateway.
    pub node: String,
    /// Its gRPC address.
    pub addr: String,
    /// Strategy that applied to the call.
    pub strategy: StrategyKind,
    /// Why this gateway.
    pub reason: PickReason,
    /// New breaker state when this attempt is the gateway's half-open probe.
    pub breaker_change: Option<BreakerState>,
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// The gateway returned a reply.
    Replied {
        /// Time from sending to the reply.
        rtt: Duration,
        /// Node whose activation served the call.
        served_by: String,
        /// Forwards between nodes.
        hops: u32,
    },
    /// The attempt failed.
    Failed {
        /// How it failed.
        failure: Failure,
        /// Time from sending to the failure.
        rtt: Duration,
    },
    /// The caller dropped the call before it ended.
    Abandoned,
}

#[derive(Clone, Debug)]
struct Gateway {
    boot_id: u64,
    addr: String,
    outstanding: u32,
    ewma: PeakEwma,
    breaker: CircuitBreaker,
}

/// Routing state of one client: members, gateways, strategies, grain cache and retry budget.
///
/// Plain data with no I/O; the client's glue feeds it membership events and call outcomes.
#[derive(Debug)]
pub struct Balancer {
    config: ClientConfig,
    members: BTreeMap<String, MemberUpdate>,
    gateways: BTreeMap<String, Gateway>,
    pickers: HashMap<StrategyKind, Picker>,
    affinity: AffinityCache,
    budget: RetryBudget,
    /// Members not yet confirmed by the snapshot being received, if one is.
    unconfirmed: Option<BTreeSet<String>>,
}

impl Balancer {
    /// Creates a balancer that knows no members, with `config` already validated.
    pub fn new(config: ClientConfig, now: Millis) -> Self {
        let budget = &config.retry_budget;
        let budget = RetryBudget::new(
            budget.ratio,
            budget.min_per_sec,
            budget.max_tokens.get(),
            now,
        );
        Self {
            affinity: AffinityCache::new(config.grain_cache_capacity),
            config,
            members: BTreeMap::new(),
            gateways: BTreeMap::new(),
            pickers: HashMap::new(),
            budget,
            unconfirmed: None,
        }
    }

    /// Returns the settings the balancer runs with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Returns the known live members, by name.
    pub fn members(&self) -> Vec<MemberUpdate> {
        self.members.values().cloned().collect()
    }

    /// Returns the gateways' names and addresses, by name.
    pub fn gateways(&self) -> Vec<(String, String)> {
        self.gateways
            .iter()
            .map(|(name, gateway)| (name.clone(), gateway.addr.clone()))
            .collect()
    }

    /// Returns the breaker state of gateway `name`, if it is a gateway.
    pub fn breaker_state(&self, name: &str) -> Option<BreakerState> {
        self.gateways.get(name).map(|g| g.breaker.state())
    }

    /// Returns the node cached for `grain` by grain-aware routing.
    pub fn cached_node(&self, grain: &GrainId) -> Option<&str> {
        self.affinity.node_of(grain)
    }

    /// Starts receiving a fresh membership snapshot: members that the snapshot does not list
    /// are dropped by [`Balancer::end_snapshot`].
    pub fn begin_snapshot(&mut self) {
        self.unconfirmed = Some(self.members.keys().cloned().collect());
    }

    /// Ends the snapshot and drops the members it did not list. Returns the gateway changes.
    pub fn end_snapshot(&mut self) -> Vec<GatewayChange> {
        let Some(unconfirmed) = self.unconfirmed.take() else {
            return Vec::new();
        };
        let mut changes = Vec::new();
        for name in unconfirmed {
            self.members.remove(&name);
            changes.extend(self.remove_gateway(&name));
        }
        changes
    }

    /// Applies one member from the snapshot or a Joined, Updated or Left event at `now`.
    /// Returns the gateway changes.
    pub fn handle_member(&mut self, member: MemberUpdate, now: Millis) -> Vec<GatewayChange> {
        if let Some(unconfirmed) = &mut self.unconfirmed {
            unconfirmed.remove(&member.name);
        }
        let mut changes = Vec::new();
        let replaced = self.gateways.get(&member.name).is_some_and(|gateway| {
            !member.is_gateway()
                || gateway.boot_id != member.boot_id
                || gateway.addr != member.grpc_addr
        });
        if replaced {
            changes.extend(self.remove_gateway(&member.name));
        }
        if member.is_gateway() && !self.gateways.contains_key(&member.name) {
            self.gateways
                .insert(member.name.clone(), self.new_gateway(&member, now));
            changes.push(GatewayChange::Added {
                name: member.name.clone(),
                addr: member.grpc_addr.clone(),
            });
        }
        if member.state == NodeState::Dead {
            self.members.remove(&member.name);
        } else {
            self.members.insert(member.name.clone(), member);
        }
        changes
    }

    fn new_gateway(&self, member: &MemberUpdate, now: Millis) -> Gateway {
        let breaker = &self.config.breaker;
        Gateway {
            boot_id: member.boot_id,
            addr: member.grpc_addr.clone(),
            outstanding: 0,
            ewma: PeakEwma::new(self.config.ewma_initial, self.config.ewma_decay, now),
            breaker: CircuitBreaker::new(breaker.failure_threshold, breaker.open_for),
        }
    }

    fn remove_gateway(&mut self, name: &str) -> Option<GatewayChange> {
        self.gateways.remove(name)?;
        self.affinity.forget_node(name);
        Some(GatewayChange::Removed {
            name: name.to_owned(),
        })
    }

    /// Counts a new call (not a retry) towards the retry budget.
    pub fn handle_call(&mut self) {
        self.budget.handle_call();
    }

    /// Takes a retry token at `now`; returns whether the retry may go ahead.
    pub fn maybe_withdraw_retry(&mut self, now: Millis) -> bool {
        self.budget.maybe_withdraw(now)
    }

    /// Picks the gateway for one attempt of a call to `grain` at `now`, and counts the attempt
    /// as in flight until [`Balancer::handle_outcome`].
    ///
    /// Gateways whose breaker rejects calls are skipped. Gateways in `avoid` (the ones earlier
    /// attempts failed on) are skipped unless no other gateway is eligible. Returns `None`
    /// when no gateway is eligible.
    pub fn pick(
        &mut self,
        grain: &GrainId,
        avoid: &[String],
        now: Millis,
        rng: &mut impl Rng,
    ) -> Option<Decision> {
        let strategy = self.config.strategy_for(&grain.grain_type);
        let (name, reason) = {
            let available: Vec<(&String, &Gateway)> = self
                .gateways
                .iter()
                .filter(|(_, gateway)| gateway.breaker.is_available(now))
                .collect();
            let preferred: Vec<(&String, &Gateway)> = available
                .iter()
                .filter(|(name, _)| !avoid.contains(name))
                .copied()
                .collect();
            let eligible = if preferred.is_empty() {
                available
            } else {
                preferred
            };
            let candidates: Vec<Candidate<'_>> = eligible
                .iter()
                .map(|(name, gateway)| Candidate {
                    name,
                    outstanding: gateway.outstanding,
                    ewma_ms: gateway.ewma.value_ms(),
                    weight: self.config.weight_of(name),
                })
                .collect();
            let affine = match strategy {
                StrategyKind::GrainAware => self.affine_choice(grain, &candidates),
                _ => None,
            };
            let (index, reason) = match affine {
                Some(choice) => choice,
                None => {
                    let picker = self.pickers.entry(strategy).or_default();
                    (
                        picker.pick(strategy, &candidates, rng)?,
                        PickReason::Balanced,
                    )
                }
            };
            (candidates[index].name.to_owned(), reason)
        };

        let gateway = self
            .gateways
            .get_mut(&name)
            .expect("the picked gateway is known");
        gateway.outstanding += 1;
        Some(Decision {
            breaker_change: gateway.breaker.handle_call(now),
            addr: gateway.addr.clone(),
            node: name,
            strategy,
            reason,
        })
    }

    /// Grain-aware choice: the cached node, else the partition owner, when eligible.
    fn affine_choice(
        &self,
        grain: &GrainId,
        candidates: &[Candidate<'_>],
    ) -> Option<(usize, PickReason)> {
        let position = |node: &str| candidates.iter().position(|c| c.name == node);
        if let Some(index) = self.affinity.node_of(grain).and_then(position) {
            return Some((index, PickReason::Cached));
        }
        let live: Vec<Incarnation> = self
            .members
            .values()
            .map(|member| Incarnation {
                name: member.name.clone(),
                boot_id: member.boot_id,
            })
            .collect();
        let owner = partition_owner(grain, &live)?;
        position(&owner.name).map(|index| (index, PickReason::PartitionOwner))
    }

    /// Records how an attempt that [`Balancer::pick`] sent to `node` for `grain` ended at
    /// `now`. Returns the gateway's new breaker state when it changed.
    ///
    /// An outcome for a gateway that has left since is ignored.
    pub fn handle_outcome(
        &mut self,
        node: &str,
        grain: &GrainId,
        outcome: &CallOutcome,
        now: Millis,
    ) -> Option<BreakerState> {
        let grain_aware = self.config.strategy_for(&grain.grain_type) == StrategyKind::GrainAware;
        let gateway = self.gateways.get_mut(node)?;
        debug_assert!(gateway.outstanding > 0, "an outcome without a pick");
        gateway.outstanding = gateway.outstanding.saturating_sub(1);
        match outcome {
            CallOutcome::Replied { rtt, served_by, .. } => {
                gateway.ewma.observe(*rtt, now);
                let change = gateway.breaker.handle_success();
                if grain_aware && self.gateways.contains_key(served_by) {
                    self.affinity.remember(grain, served_by);
                }
                change
            }
            CallOutcome::Failed { failure, rtt } if failure.is_gateway_failure() => {
                gateway.ewma.observe(*rtt, now);
                gateway.breaker.handle_failure(now)
            }
            // The gateway answered, so it is alive even though the call failed.
            CallOutcome::Failed { .. } => gateway.breaker.handle_success(),
            CallOutcome::Abandoned => {
                gateway.breaker.handle_neutral();
                None
            }
        }
    }
}
