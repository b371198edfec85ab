//! Conversions between the scaling types and their `gristmill.v1.Scaling` gRPC messages.

use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::time::Duration;

use crate::api::pb;
use crate::membership::NodeState;
use crate::scaling::behavior::{RatePolicy, ScalingRules, SelectPolicy};
use crate::scaling::combiner::CombinerKind;
use crate::scaling::config::{MailboxMeasure, PolicyTarget, ScalingConfig, ScalingPolicyConfig};
use crate::scaling::decision::{Action, ActionOutcome, AppliedLimit, Decision};
use crate::scaling::load::{ClusterLoad, HealthLimits};
use crate::scaling::policy::PolicyKind;

/// A `ScalingPolicy` message that is not a valid policy. Nothing was applied; fix the field.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("invalid scaling policy: {field}: {message}")]
pub struct InvalidPolicy {
    /// Path of the offending field, such as `policies[1].policy` or `min_nodes`.
    pub field: String,
    /// What is wrong and what is valid.
    pub message: String,
}

impl InvalidPolicy {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Converts the running policy to its message.
pub fn policy_to_proto(config: &ScalingConfig) -> pb::ScalingPolicy {
    pb::ScalingPolicy {
        min_nodes: config.min_nodes.get(),
        max_nodes: config.max_nodes.get(),
        evaluation_interval_ms: millis(config.evaluation_interval),
        tolerance: config.tolerance,
        cooldown_ms: millis(config.cooldown),
        combiner: config.combiner.as_str().into(),
        consensus_min_agree: config.consensus_min_agree.get(),
        policies: config.policies.iter().map(rule_to_proto).collect(),
        health: Some(pb::HealthLimits {
            mailbox_depth: config.health.mailbox_depth.get(),
            cpu_percent: config.health.cpu_percent,
            memory_bytes: config.health.memory_bytes.map_or(0, NonZeroU64::get),
            unhealthy_below: config.health.unhealthy_below,
        }),
        scale_out: Some(rules_to_proto(&config.scale_out)),
        scale_in: Some(rules_to_proto(&config.scale_in)),
        history_capacity: u32::try_from(config.history_capacity.get()).unwrap_or(u32::MAX),
    }
}

fn rule_to_proto(policy: &ScalingPolicyConfig) -> pb::PolicyRule {
    let mut rule = pb::PolicyRule {
        policy: policy.target.kind().as_str().into(),
        enabled: policy.enabled,
        priority: policy.priority,
        weight: policy.weight,
        tolerance: policy.tolerance,
        ..Default::default()
    };
    match &policy.target {
        PolicyTarget::GrainDensity {
            activations_per_node,
        } => rule.activations_per_node = Some(*activations_per_node),
        PolicyTarget::CallRate {
            calls_per_sec_per_node,
        } => rule.calls_per_sec_per_node = Some(*calls_per_sec_per_node),
        PolicyTarget::MailboxDepth { depth, measure } => {
            rule.depth = Some(*depth);
            rule.measure = Some(
                match measure {
                    MailboxMeasure::Max => "max",
                    MailboxMeasure::TotalPerNode => "total_per_node",
                }
                .into(),
            );
        }
        PolicyTarget::Cpu { percent_per_node } => rule.percent_per_node = Some(*percent_per_node),
        PolicyTarget::Memory {
            bytes_per_node,
            percent_per_node,
        } => {
            rule.bytes_per_node = *bytes_per_node;
            rule.percent_per_node = *percent_per_node;
        }
        PolicyTarget::ClusterHealth {
            min_score,
            max_unhealthy_nodes,
        } => {
            rule.min_score = Some(*min_score);
            rule.max_unhealthy_nodes = Some(*max_unhealthy_nodes);
        }
    }
    rule
}

fn rules_to_proto(rules: &ScalingRules) -> pb::ScalingRules {
    pb::ScalingRules {
        stabilization_window_ms: millis(rules.stabilization_window),
        policies: rules
            .policies
            .iter()
            .map(|policy| {
                let (kind, value) = match policy {
                    RatePolicy::Nodes { value, .. } => ("nodes", value.get()),
                    RatePolicy::Percent { value, .. } => ("percent", value.get()),
                };
                pb::RatePolicy {
                    r#type: kind.into(),
                    value,
                    period_ms: millis(policy.period()),
                }
            })
            .collect(),
        select_policy: match rules.select_policy {
            SelectPolicy::Max => "max",
            SelectPolicy::Min => "min",
            SelectPolicy::Disabled => "disabled",
        }
        .into(),
    }
}

/// Converts a `SetPolicy` message to a validated policy; the error names the first bad field.
pub fn policy_from_proto(message: &pb::ScalingPolicy) -> Result<ScalingConfig, InvalidPolicy> {
    let defaults = ScalingConfig::default();
    let config = ScalingConfig {
        min_nodes: non_zero_u32("min_nodes", message.min_nodes)?,
        max_nodes: non_zero_u32("max_nodes", message.max_nodes)?,
        evaluation_interval: Duration::from_millis(message.evaluation_interval_ms),
        tolerance: message.tolerance,
        cooldown: Duration::from_millis(message.cooldown_ms),
        combiner: message
            .combiner
            .parse::<CombinerKind>()
            .map_err(|error| InvalidPolicy::new("combiner", error.to_string()))?,
        consensus_min_agree: non_zero_u32("consensus_min_agree", message.consensus_min_agree)?,
        policies: message
            .policies
            .iter()
            .enumerate()
            .map(|(index, rule)| rule_from_proto(index, rule))
            .collect::<Result<_, _>>()?,
        health: match &message.health {
            Some(health) => HealthLimits {
                mailbox_depth: NonZeroU64::new(health.mailbox_depth).ok_or_else(|| {
                    InvalidPolicy::new("health.mailbox_depth", "must be greater than zero")
                })?,
                cpu_percent: health.cpu_percent,
                memory_bytes: NonZeroU64::new(health.memory_bytes),
                unhealthy_below: health.unhealthy_below,
            },
            None => defaults.health,
        },
        scale_out: match &message.scale_out {
            Some(rules) => rules_from_proto("scale_out", rules)?,
            None => defaults.scale_out,
        },
        scale_in: match &message.scale_in {
            Some(rules) => rules_from_proto("scale_in", rules)?,
            None => defaults.scale_in,
        },
        history_capacity: usize::try_from(message.history_capacity)
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| InvalidPolicy::new("history_capacity", "must be greater than zero"))?,
    };
    config
        .validate()
        .map_err(|error| InvalidPolicy::new(error.field(), error.to_string()))?;
    Ok(config)
}

fn non_zero_u32(field: &str, value: u32) -> Result<NonZeroU32, InvalidPolicy> {
    NonZeroU32::new(value).ok_or_else(|| InvalidPolicy::new(field, "must be greater than zero"))
}

fn rule_from_proto(
    index: usize,
    rule: &pb::PolicyRule,
) -> Result<ScalingPolicyConfig, InvalidPolicy> {
    let prefix = format!("policies[{index}]");
    let kind = parse_policy_kind(&rule.policy)
        .map_err(|message| InvalidPolicy::new(format!("{prefix}.policy"), message))?;
    let required = |name: &str, value: Option<f64>| {
        value.ok_or_else(|| {
            InvalidPolicy::new(
                format!("{prefix}.{name}"),
                format!("is required for policy {}", kind.as_str()),
            )
        })
    };
    let target = match kind {
        PolicyKind::GrainDensity => PolicyTarget::GrainDensity {
            activations_per_node: required("activations_per_node", rule.activations_per_node)?,
        },
        PolicyKind::CallRate => PolicyTarget::CallRate {
            calls_per_sec_per_node: required(
                "calls_per_sec_per_node",
                rule.calls_per_sec_per_node,
            )?,
        },
        PolicyKind::MailboxDepth => PolicyTarget::MailboxDepth {
            depth: required("depth", rule.depth)?,
            measure: match rule.measure.as_deref() {
                None | Some("max") => MailboxMeasure::Max,
                Some("total_per_node") => MailboxMeasure::TotalPerNode,
                Some(other) => {
                    return Err(InvalidPolicy::new(
                        format!("{prefix}.measure"),
                        format!("unknown measure `{other}`; valid names are: max, total_per_node"),
                    ));
                }
            },
        },
        PolicyKind::Cpu => PolicyTarget::Cpu {
            percent_per_node: required("percent_per_node", rule.percent_per_node)?,
        },
        PolicyKind::Memory => PolicyTarget::Memory {
            bytes_per_node: rule.bytes_per_node,
            percent_per_node: rule.percent_per_node,
        },
        PolicyKind::ClusterHealth => PolicyTarget::ClusterHealth {
            min_score: required("min_score", rule.min_score)?,
            max_unhealthy_nodes: rule.max_unhealthy_nodes.unwrap_or(0),
        },
    };
    Ok(ScalingPolicyConfig {
        target,
        enabled: rule.enabled,
        priority: rule.priority,
        weight: rule.weight,
        tolerance: rule.tolerance,
    })
}

fn parse_policy_kind(name: &str) -> Result<PolicyKind, String> {
    PolicyKind::NAMES
        .iter()
        .position(|candidate| *candidate == name)
        .map(|index| PolicyKind::ALL[index])
        .ok_or_else(|| {
            format!(
                "unknown policy `{name}`; valid names are: {}",
                PolicyKind::NAMES.join(", ")
            )
        })
}

fn rules_from_proto(prefix: &str, rules: &pb::ScalingRules) -> Result<ScalingRules, InvalidPolicy> {
    let policies = rules
        .policies
        .iter()
        .enumerate()
        .map(|(index, policy)| {
            let field = format!("{prefix}.policies[{index}]");
            let value = non_zero_u32(&format!("{field}.value"), policy.value)?;
            let period = Duration::from_millis(policy.period_ms);
            match policy.r#type.as_str() {
                "nodes" => Ok(RatePolicy::Nodes { value, period }),
                "percent" => Ok(RatePolicy::Percent { value, period }),
                other => Err(InvalidPolicy::new(
                    format!("{field}.type"),
                    format!("unknown rate policy type `{other}`; valid names are: nodes, percent"),
                )),
            }
        })
        .collect::<Result<_, _>>()?;
    let select_policy = match rules.select_policy.as_str() {
        "max" => SelectPolicy::Max,
        "min" => SelectPolicy::Min,
        "disabled" => SelectPolicy::Disabled,
        other => {
            return Err(InvalidPolicy::new(
                format!("{prefix}.select_policy"),
                format!("unknown select policy `{other}`; valid names are: max, min, disabled"),
            ));
        }
    };
    Ok(ScalingRules {
        stabilization_window: Duration::from_millis(rules.stabilization_window_ms),
        policies,
        select_policy,
    })
}

/// Converts a recorded or dry-run decision to its message.
pub fn decision_to_proto(decision: &Decision) -> pb::ScalingDecision {
    let snapshot = &decision.snapshot;
    pb::ScalingDecision {
        id: decision.id.0,
        at_ms: decision.at.0,
        trigger: serde_name(&decision.trigger),
        snapshot: snapshot
            .nodes
            .iter()
            .map(|node| pb::SnapshotNode {
                name: node.incarnation.name.clone(),
                boot_id: node.incarnation.boot_id,
                state: node_state(node.state).into(),
                load: Some(pb::NodeLoad {
                    activations: node.load.activations,
                    calls_per_sec: node.load.calls_per_sec,
                    mailbox_depth_total: node.load.mailbox_depth_total,
                    mailbox_depth_max: node.load.mailbox_depth_max,
                    cpu_percent: node.load.cpu_percent,
                    memory_bytes: node.load.memory_bytes,
                }),
            })
            .collect(),
        supervisor: snapshot.supervisor.name.clone(),
        forced_removal_order: snapshot.forced_removal_order.clone(),
        load: Some(load_to_proto(&decision.load)),
        recommendations: decision
            .recommendations
            .iter()
            .map(|recommendation| pb::Recommendation {
                policy: recommendation.policy.as_str().into(),
                priority: recommendation.priority,
                weight: recommendation.weight,
                current_nodes: recommendation.current_nodes,
                desired_nodes: recommendation.desired_nodes,
                metric: recommendation.metric,
                target: recommendation.target,
                tolerance: recommendation.tolerance,
                within_tolerance: recommendation.within_tolerance,
                reason: recommendation.reason.clone(),
            })
            .collect(),
        combined: decision
            .combined
            .as_ref()
            .map(|combined| pb::CombinerResult {
                combiner: combined.combiner.as_str().into(),
                desired_nodes: combined.desired_nodes,
                deciding_policies: combined
                    .deciding_policies
                    .iter()
                    .map(|policy| policy.as_str().to_owned())
                    .collect(),
                reason: combined.reason.clone(),
            }),
        limits: decision.limits.iter().map(limit_to_proto).collect(),
        current_nodes: decision.current_nodes,
        target_nodes: decision.target_nodes,
        action: Some(action_to_proto(&decision.action)),
        summary: decision.summary.clone(),
        outcome: Some(outcome_to_proto(decision.outcome.as_ref())),
        duration_ms: decision.duration.map(millis),
        removals: decision
            .removals
            .iter()
            .map(|removal| pb::NodeRemoval {
                node: removal.node.clone(),
                activations_before_stop: removal.activations_before_stop,
                stopped: removal.stopped,
            })
            .collect(),
        orchestrator_steps: decision.orchestrator_steps.clone(),
    }
}

/// Returns the serde name of a unit enum variant, such as `periodic`.
fn serde_name(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => String::new(),
    }
}

fn node_state(state: NodeState) -> pb::NodeState {
    match state {
        NodeState::Joining => pb::NodeState::Joining,
        NodeState::Active => pb::NodeState::Active,
        NodeState::Draining => pb::NodeState::Draining,
        NodeState::Leaving => pb::NodeState::Leaving,
        NodeState::Dead => pb::NodeState::Dead,
    }
}

fn load_to_proto(load: &ClusterLoad) -> pb::ClusterLoad {
    pb::ClusterLoad {
        active_nodes: load.active_nodes,
        joining_nodes: load.joining_nodes,
        draining_nodes: load.draining_nodes,
        total_activations: load.total_activations,
        total_calls_per_sec: load.total_calls_per_sec,
        total_mailbox_depth: load.total_mailbox_depth,
        max_mailbox_depth: load.max_mailbox_depth,
        total_cpu_percent: load.total_cpu_percent,
        total_memory_bytes: load.total_memory_bytes,
        node_health: load
            .node_health
            .iter()
            .map(|node| pb::NodeHealth {
                name: node.incarnation.name.clone(),
                boot_id: node.incarnation.boot_id,
                score: node.health.score,
                mailbox_pressure: node.health.mailbox_pressure,
                cpu_pressure: node.health.cpu_pressure,
                memory_pressure: node.health.memory_pressure,
                unhealthy: node.health.unhealthy,
            })
            .collect(),
        health_score: load.health_score,
        unhealthy_nodes: load.unhealthy_nodes,
    }
}

fn limit_to_proto(limit: &AppliedLimit) -> pb::AppliedLimit {
    use pb::applied_limit::Kind;

    let mut message = pb::AppliedLimit::default();
    let (kind, description) = match limit {
        AppliedLimit::Tolerance {
            policy,
            ratio,
            tolerance,
        } => (
            Kind::Tolerance,
            format!("{policy:?} is at {ratio:.2} of its target, within tolerance {tolerance}"),
        ),
        AppliedLimit::Stabilization {
            direction,
            window,
            from,
            to,
        } => {
            message.direction = direction.as_str().into();
            (message.from_nodes, message.to_nodes) = (*from, *to);
            (
                Kind::Stabilization,
                format!(
                    "the {} s {direction} stabilization window holds {from} nodes at {to}",
                    window.as_secs()
                ),
            )
        }
        AppliedLimit::Rate {
            direction,
            from,
            to,
        } => {
            message.direction = direction.as_str().into();
            (message.from_nodes, message.to_nodes) = (*from, *to);
            (
                Kind::Rate,
                format!("the {direction} rate policies allow {to} nodes instead of {from}"),
            )
        }
        AppliedLimit::MinNodes { min, from } => {
            (message.from_nodes, message.to_nodes) = (*from, *min);
            (
                Kind::MinNodes,
                format!("raised from {from} to min_nodes {min}"),
            )
        }
        AppliedLimit::MaxNodes { max, from } => {
            (message.from_nodes, message.to_nodes) = (*from, *max);
            (
                Kind::MaxNodes,
                format!("lowered from {from} to max_nodes {max}"),
            )
        }
        AppliedLimit::Cooldown { remaining } => (
            Kind::Cooldown,
            format!("cooldown has {} ms left", remaining.as_millis()),
        ),
        AppliedLimit::ActionInProgress { decision } => (
            Kind::ActionInProgress,
            format!("the action of decision {decision} is still running"),
        ),
        AppliedLimit::Paused { reason } => (Kind::Paused, format!("scaling is paused: {reason}")),
        AppliedLimit::NoRemovalCandidate { reason } => (
            Kind::NoRemovalCandidate,
            format!("no node can be removed: {reason}"),
        ),
        AppliedLimit::Disruption { nodes } => (
            Kind::Disruption,
            format!(
                "waiting for {} that the platform stopped for its own reasons",
                nodes.join(", ")
            ),
        ),
    };
    message.kind = kind.into();
    message.description = description;
    message
}

fn action_to_proto(action: &Action) -> pb::Action {
    use pb::action::Kind;

    match action {
        Action::None => pb::Action {
            kind: Kind::None.into(),
            ..Default::default()
        },
        Action::ScaleOut { nodes } => pb::Action {
            kind: Kind::ScaleOut.into(),
            add_nodes: *nodes,
            remove_nodes: Vec::new(),
        },
        Action::ScaleIn { nodes } => pb::Action {
            kind: Kind::ScaleIn.into(),
            add_nodes: 0,
            remove_nodes: nodes.iter().map(|node| node.name.clone()).collect(),
        },
    }
}

fn outcome_to_proto(outcome: Option<&ActionOutcome>) -> pb::ActionOutcome {
    use pb::action_outcome::Kind;

    match outcome {
        None => pb::ActionOutcome {
            kind: Kind::Pending.into(),
            ..Default::default()
        },
        Some(ActionOutcome::Succeeded) => pb::ActionOutcome {
            kind: Kind::Succeeded.into(),
            ..Default::default()
        },
        Some(ActionOutcome::Failed {
            completed_nodes,
            error,
        }) => pb::ActionOutcome {
            kind: Kind::Failed.into(),
            completed_nodes: *completed_nodes,
            error: error.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_round_trips() {
        for config in [ScalingConfig::default(), ScalingConfig::for_local_demo()] {
            let message = policy_to_proto(&config);
            assert_eq!(policy_from_proto(&message), Ok(config));
        }
    }

    #[test]
    fn invalid_policies_name_the_field() {
        let valid = policy_to_proto(&ScalingConfig::default());
        let mut min_above_max = valid.clone();
        min_above_max.min_nodes = valid.max_nodes + 1;
        let mut zero_target = valid.clone();
        zero_target.policies[1].activations_per_node = Some(0.0);
        let mut unknown_policy = valid.clone();
        unknown_policy.policies[2].policy = "queue_length".into();
        let mut zero_min = valid.clone();
        zero_min.min_nodes = 0;
        let mut unknown_combiner = valid.clone();
        unknown_combiner.combiner = "loudest".into();
        let cases = [
            ("min_nodes", min_above_max),
            ("policies[1].activations_per_node", zero_target),
            ("policies[2].policy", unknown_policy),
            ("min_nodes", zero_min),
            ("combiner", unknown_combiner),
        ];
        for (field, message) in cases {
            let error = policy_from_proto(&message).expect_err(field);
            assert_eq!(error.field, field, "{error}");
        }
    }
}
