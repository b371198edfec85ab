//! `gristmill ctl scaling`: the scaling supervisor's status, decisions, policy and manual steps.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gristmill::api::pb;
use gristmill::api::pb::scaling_client::ScalingClient;
use gristmill::scaling::ScalingConfig;
use gristmill::scaling::proto_convert::policy_to_proto;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::client::ClientError;
use crate::table::Table;

/// Requests of `gristmill ctl scaling`. Any node accepts them and forwards them to the node
/// that runs the acting supervisor.
#[derive(Debug, clap::Subcommand)]
pub enum ScalingCommand {
    /// Show the running policy, pause state, running action and acting node.
    Status,
    /// List recorded decisions, newest first.
    Decisions {
        /// Maximum number of decisions to list.
        #[arg(long, default_value_t = 20, value_name = "N")]
        limit: u32,
    },
    /// Print each new decision and each action outcome as it happens, until interrupted.
    Watch {
        /// Replay recorded decisions with an id above this one first.
        #[arg(long, default_value_t = 0, value_name = "ID")]
        after: u64,
    },
    /// Run an evaluation now without recording it or acting (a dry run).
    Evaluate,
    /// Replace the policy with the `[scaling]` table of a TOML file (or its top-level fields).
    SetPolicy {
        /// TOML file, such as one with `min_nodes = 2` and `[[policies]]` entries.
        file: PathBuf,
    },
    /// Move to N Active nodes, within min_nodes and max_nodes, ignoring pause and cooldown.
    /// Unless automatic scaling is paused, a later automatic decision may change the size
    /// again, as an autoscaler would; pause first to hold it.
    ScaleTo {
        /// Target number of Active nodes.
        nodes: u32,
    },
    /// Drain one Active node, then remove it.
    Drain {
        /// Name of the node, such as node-2.
        node: String,
    },
    /// Stop automatic actions; evaluations continue and are recorded.
    Pause {
        /// Reason shown in the status and in decisions held back while paused.
        #[arg(long, default_value = "paused by an operator")]
        reason: String,
    },
    /// Restart automatic actions.
    Resume,
}

/// A failure of a scaling request.
#[derive(Debug, thiserror::Error)]
pub enum ScalingCtlError {
    /// The connection or the call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The policy file is not a valid scaling table.
    #[error("invalid policy file {path}: {reason}")]
    PolicyFile {
        /// The file given.
        path: PathBuf,
        /// The reason.
        reason: String,
    },
    /// A decision stream that had started broke off.
    #[error(
        "the decision stream from {addr} broke off ({code}: {message}); the node may be paused, \
         stopped or overloaded"
    )]
    StreamBroken {
        /// The node watched.
        addr: String,
        /// The gRPC code of the failure.
        code: &'static str,
        /// Its message.
        message: String,
    },
    /// The policy file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    PolicyFileUnreadable {
        /// The file given.
        path: PathBuf,
        /// The reason.
        source: std::io::Error,
    },
}

impl From<tonic::Status> for ScalingCtlError {
    fn from(status: tonic::Status) -> Self {
        ScalingCtlError::Client(ClientError::Status(status))
    }
}

/// Connects to the `Scaling` service at `addr` (`host:port`).
pub async fn connect(
    addr: &str,
    request_timeout: Duration,
) -> Result<ScalingClient<Channel>, ClientError> {
    // Every scaling request replies at once (an action runs after the reply), so a node that
    // does not reply within `request_timeout` is paused or stuck.
    let channel = crate::client::connect_channel(addr, Some(request_timeout)).await?;
    Ok(ScalingClient::new(channel))
}

/// Sends the request and prints its result; `watch` prints until the stream ends.
pub async fn execute(
    addr: &str,
    command: &ScalingCommand,
    as_json: bool,
    request_timeout: Duration,
) -> Result<String, ScalingCtlError> {
    // Read the policy before connecting, so a typo fails fast and offline.
    let policy = match command {
        ScalingCommand::SetPolicy { file } => Some(read_policy(file)?),
        _ => None,
    };
    let mut client = connect(addr, request_timeout).await?;
    let output = match command {
        ScalingCommand::Status => {
            let status = client
                .get_status(pb::GetScalingStatusRequest {})
                .await?
                .into_inner();
            render_status(&status, as_json)
        }
        ScalingCommand::Decisions { limit } => {
            let request = pb::ListDecisionsRequest {
                limit: *limit,
                before_id: 0,
            };
            let decisions = client.list_decisions(request).await?.into_inner().decisions;
            render_decisions(&decisions, as_json)
        }
        ScalingCommand::Watch { after } => {
            let request = pb::WatchDecisionsRequest { after_id: *after };
            let mut stream = client.watch_decisions(request).await?.into_inner();
            let broken = |status: tonic::Status| ScalingCtlError::StreamBroken {
                addr: addr.to_owned(),
                code: crate::client::code_name(status.code()),
                message: status.message().to_owned(),
            };
            while let Some(decision) = stream.message().await.map_err(broken)? {
                println!("{}", render_decision_line(&decision, as_json));
            }
            String::new()
        }
        ScalingCommand::Evaluate => {
            let response = client.evaluate(pb::EvaluateRequest {}).await?.into_inner();
            let decision = response.decision.unwrap_or_default();
            render_decision(&decision, as_json)
        }
        ScalingCommand::SetPolicy { .. } => {
            let request = pb::SetPolicyRequest { policy };
            let response = client.set_policy(request).await?.into_inner();
            let policy = response.policy.unwrap_or_default();
            if as_json {
                json_line(&json!({ "policy": policy_json(&policy) }))
            } else {
                format!("policy replaced\n{}", policy_text(&policy))
            }
        }
        ScalingCommand::ScaleTo { nodes } => {
            let request = pb::ScaleToRequest { nodes: *nodes };
            let response = client.scale_to(request).await?.into_inner();
            let rendered = render_decision(&response.decision.unwrap_or_default(), as_json);
            let status = client
                .get_status(pb::GetScalingStatusRequest {})
                .await?
                .into_inner();
            if as_json || status.paused {
                rendered
            } else {
                format!(
                    "{rendered}\nnote: automatic scaling is running and may change the size again; run `gristmill ctl scaling pause` to hold it"
                )
            }
        }
        ScalingCommand::Drain { node } => {
            let request = pb::DrainNodeRequest { name: node.clone() };
            let response = client.drain_node(request).await?.into_inner();
            render_decision(&response.decision.unwrap_or_default(), as_json)
        }
        ScalingCommand::Pause { reason } => {
            let request = pb::PauseRequest {
                reason: reason.clone(),
            };
            let changed = client.pause(request).await?.into_inner().changed;
            render_changed(changed, "paused", "already paused", as_json)
        }
        ScalingCommand::Resume => {
            let changed = client
                .resume(pb::ResumeRequest {})
                .await?
                .into_inner()
                .changed;
            render_changed(changed, "resumed", "not paused", as_json)
        }
    };
    Ok(output)
}

/// Reads a scaling policy from the `[scaling]` table of a TOML file, or from its top level.
fn read_policy(path: &Path) -> Result<pb::ScalingPolicy, ScalingCtlError> {
    let invalid = |reason: String| ScalingCtlError::PolicyFile {
        path: path.to_owned(),
        reason,
    };
    let text =
        std::fs::read_to_string(path).map_err(|source| ScalingCtlError::PolicyFileUnreadable {
            path: path.to_owned(),
            source,
        })?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|error| invalid(error.to_string()))?;
    let table = match table.remove("scaling") {
        Some(toml::Value::Table(scaling)) => scaling,
        Some(_) => return Err(invalid("`scaling` must be a table".into())),
        None => table,
    };
    let config: ScalingConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|error: toml::de::Error| invalid(error.to_string()))?;
    Ok(policy_to_proto(&config))
}

fn render_changed(changed: bool, done: &str, unchanged: &str, as_json: bool) -> String {
    if as_json {
        return json_line(&json!({ "changed": changed }));
    }
    format!("{}\n", if changed { done } else { unchanged })
}

fn render_status(status: &pb::GetScalingStatusResponse, as_json: bool) -> String {
    let policy = status.policy.clone().unwrap_or_default();
    if as_json {
        return json_line(&json!({
            "supervisor": status.supervisor,
            "orchestrator": status.orchestrator,
            "paused": status.paused,
            "pause_reason": status.pause_reason,
            "running_decision": status.running_decision,
            "cooldown_remaining_ms": status.cooldown_remaining_ms,
            "last_decision": status.last_decision,
            "policy": policy_json(&policy),
        }));
    }
    let paused = if status.paused {
        format!("paused ({})", status.pause_reason)
    } else {
        "running".to_owned()
    };
    let running = match status.running_decision {
        0 => "none".to_owned(),
        id => format!("d{id}"),
    };
    format!(
        "supervisor on {} with the {} orchestrator: {paused}\nrunning action {running}, cooldown \
         {} ms left, last decision d{}\n{}",
        status.supervisor,
        status.orchestrator,
        status.cooldown_remaining_ms,
        status.last_decision,
        policy_text(&policy),
    )
}

fn policy_text(policy: &pb::ScalingPolicy) -> String {
    let mut text = format!(
        "nodes {} to {}, evaluation every {} ms, cooldown {} ms, combiner {}\n",
        policy.min_nodes,
        policy.max_nodes,
        policy.evaluation_interval_ms,
        policy.cooldown_ms,
        policy.combiner
    );
    for rule in &policy.policies {
        let state = if rule.enabled { "" } else { " (disabled)" };
        text.push_str(&format!("  policy {}{state}\n", rule.policy));
    }
    text
}

fn policy_json(policy: &pb::ScalingPolicy) -> Value {
    json!({
        "min_nodes": policy.min_nodes,
        "max_nodes": policy.max_nodes,
        "evaluation_interval_ms": policy.evaluation_interval_ms,
        "tolerance": policy.tolerance,
        "cooldown_ms": policy.cooldown_ms,
        "combiner": policy.combiner,
        "policies": policy.policies.iter().map(|rule| json!({
            "policy": rule.policy,
            "enabled": rule.enabled,
        })).collect::<Vec<_>>(),
    })
}

fn render_decisions(decisions: &[pb::ScalingDecision], as_json: bool) -> String {
    if as_json {
        let decisions: Vec<Value> = decisions.iter().map(decision_json).collect();
        return json_line(&json!({ "decisions": decisions }));
    }
    let mut table = Table::new(vec![
        "ID", "TRIGGER", "NODES", "ACTION", "OUTCOME", "SUMMARY",
    ]);
    for decision in decisions {
        table.push(vec![
            format!("d{}", decision.id),
            decision.trigger.clone(),
            format!("{} -> {}", decision.current_nodes, decision.target_nodes),
            action_text(decision),
            outcome_text(decision),
            decision.summary.clone(),
        ]);
    }
    table.render()
}

fn render_decision(decision: &pb::ScalingDecision, as_json: bool) -> String {
    if as_json {
        return json_line(&decision_json(decision));
    }
    let mut text = format!("{}\n", render_decision_line(decision, false));
    for recommendation in &decision.recommendations {
        text.push_str(&format!(
            "  {}: {} -> {} ({})\n",
            recommendation.policy,
            recommendation.current_nodes,
            crate::table::counted(recommendation.desired_nodes, "node", "nodes"),
            recommendation.reason
        ));
    }
    for limit in &decision.limits {
        text.push_str(&format!("  limit: {}\n", limit.description));
    }
    for removal in &decision.removals {
        text.push_str(&format!("  removal: {}\n", removal_text(removal)));
    }
    for step in &decision.orchestrator_steps {
        text.push_str(&format!("  orchestrator: {step}\n"));
    }
    text
}

/// Returns `node-2 reported 0 activations and was stopped` for a scale-in's check.
fn removal_text(removal: &pb::NodeRemoval) -> String {
    let verdict = if removal.stopped {
        "was stopped"
    } else {
        "was left in place"
    };
    format!(
        "{} reported {} activations after its drain and {verdict}",
        removal.node, removal.activations_before_stop
    )
}

/// Returns one line for a decision: the JSON object, or `d7 scale_out 2 -> 3 ...` text.
pub fn render_decision_line(decision: &pb::ScalingDecision, as_json: bool) -> String {
    if as_json {
        return decision_json(decision).to_string();
    }
    format!(
        "d{} {} {} -> {}, {} [{}]: {}",
        decision.id,
        decision.trigger,
        decision.current_nodes,
        crate::table::counted(decision.target_nodes, "node", "nodes"),
        action_text(decision),
        outcome_text(decision),
        decision.summary
    )
}

fn action_text(decision: &pb::ScalingDecision) -> String {
    let action = decision.action.clone().unwrap_or_default();
    match pb::action::Kind::try_from(action.kind) {
        Ok(pb::action::Kind::ScaleOut) => format!("add {}", action.add_nodes),
        Ok(pb::action::Kind::ScaleIn) => format!("remove {}", action.remove_nodes.join(",")),
        _ => "none".to_owned(),
    }
}

fn outcome_text(decision: &pb::ScalingDecision) -> String {
    let outcome = decision.outcome.clone().unwrap_or_default();
    let no_action = action_text(decision) == "none";
    match pb::action_outcome::Kind::try_from(outcome.kind) {
        Ok(pb::action_outcome::Kind::Succeeded) => "succeeded".to_owned(),
        Ok(pb::action_outcome::Kind::Failed) => format!("failed: {}", outcome.error),
        _ if no_action => "-".to_owned(),
        _ => "running".to_owned(),
    }
}

/// Returns a decision as a JSON object with its inputs, limits, action and outcome.
pub fn decision_json(decision: &pb::ScalingDecision) -> Value {
    let load = decision.load.clone().unwrap_or_default();
    let action = decision.action.clone().unwrap_or_default();
    let outcome = decision.outcome.clone().unwrap_or_default();
    json!({
        "id": decision.id,
        "at_ms": decision.at_ms,
        "trigger": decision.trigger,
        "supervisor": decision.supervisor,
        "current_nodes": decision.current_nodes,
        "target_nodes": decision.target_nodes,
        "action": {
            "kind": pb::action::Kind::try_from(action.kind)
                .map_or("UNKNOWN", |kind| kind.as_str_name()),
            "add_nodes": action.add_nodes,
            "remove_nodes": action.remove_nodes,
        },
        "summary": decision.summary,
        "outcome": {
            "kind": pb::action_outcome::Kind::try_from(outcome.kind)
                .map_or("UNKNOWN", |kind| kind.as_str_name()),
            "completed_nodes": outcome.completed_nodes,
            "error": outcome.error,
        },
        "duration_ms": decision.duration_ms,
        "load": {
            "active_nodes": load.active_nodes,
            "joining_nodes": load.joining_nodes,
            "draining_nodes": load.draining_nodes,
            "total_activations": load.total_activations,
            "total_calls_per_sec": load.total_calls_per_sec,
            "max_mailbox_depth": load.max_mailbox_depth,
        },
        "recommendations": decision.recommendations.iter().map(|recommendation| json!({
            "policy": recommendation.policy,
            "current_nodes": recommendation.current_nodes,
            "desired_nodes": recommendation.desired_nodes,
            "metric": recommendation.metric,
            "target": recommendation.target,
            "within_tolerance": recommendation.within_tolerance,
            "reason": recommendation.reason,
        })).collect::<Vec<_>>(),
        "limits": decision.limits.iter().map(|limit| json!({
            "kind": pb::applied_limit::Kind::try_from(limit.kind)
                .map_or("UNKNOWN", |kind| kind.as_str_name()),
            "description": limit.description,
        })).collect::<Vec<_>>(),
        "removals": decision.removals.iter().map(|removal| json!({
            "node": removal.node,
            "activations_before_stop": removal.activations_before_stop,
            "stopped": removal.stopped,
        })).collect::<Vec<_>>(),
        "orchestrator_steps": decision.orchestrator_steps,
    })
}

fn json_line(value: &Value) -> String {
    format!("{value}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scale_out_decision() -> pb::ScalingDecision {
        pb::ScalingDecision {
            id: 7,
            trigger: "periodic".into(),
            current_nodes: 2,
            target_nodes: 3,
            action: Some(pb::Action {
                kind: pb::action::Kind::ScaleOut as i32,
                add_nodes: 1,
                remove_nodes: Vec::new(),
            }),
            outcome: Some(pb::ActionOutcome {
                kind: pb::action_outcome::Kind::Succeeded as i32,
                ..Default::default()
            }),
            summary: "scale out from 2 to 3 nodes".into(),
            ..Default::default()
        }
    }

    #[test]
    fn decision_line_shows_action_and_outcome() {
        let line = render_decision_line(&scale_out_decision(), false);
        assert_eq!(
            line,
            "d7 periodic 2 -> 3 nodes, add 1 [succeeded]: scale out from 2 to 3 nodes"
        );
    }

    #[test]
    fn decision_json_names_kinds() {
        let value = decision_json(&scale_out_decision());
        assert_eq!(value["action"]["kind"], "KIND_SCALE_OUT");
        assert_eq!(value["outcome"]["kind"], "KIND_SUCCEEDED");
        assert_eq!(value["target_nodes"], 3);
    }

    #[test]
    fn policy_file_reads_scaling_table() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, "[scaling]\nmin_nodes = 2\nmax_nodes = 4\n").expect("write");
        let policy = read_policy(&path).expect("valid policy");
        assert_eq!((policy.min_nodes, policy.max_nodes), (2, 4));
    }

    #[test]
    fn policy_file_with_unknown_field_is_rejected() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, "min_nodez = 2\n").expect("write");
        let error = read_policy(&path).expect_err("unknown field");
        assert!(error.to_string().contains("min_nodez"), "{error}");
    }
}
