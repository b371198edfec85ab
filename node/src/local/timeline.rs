//! The scaling timeline of `gristmill local`: decisions that act, and their outcomes, as they
//! happen.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gristmill::api::pb;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::ctl::scaling::{connect, decision_json};

/// Decisions that chose an action, as JSON with `seen_at_secs` added, in the order they were
/// seen; an outcome replaces the earlier entry of its decision.
pub type Decisions = Arc<Mutex<Vec<Value>>>;

/// Interval between two attempts to watch again after the stream ended, as after a failover.
const REWATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Watches the decisions through the node at `addr` until aborted, printing one stderr line
/// per decision that acts and per outcome, stamped with the time since `started`.
pub fn watch(addrs: Vec<String>, started: Instant) -> (JoinHandle<()>, Decisions) {
    let decisions: Decisions = Arc::default();
    let seen = Arc::clone(&decisions);
    let task = tokio::spawn(async move {
        let mut next = 0;
        loop {
            let addr = &addrs[next % addrs.len()];
            next += 1;
            if let Err(error) = watch_once(addr, started, &seen).await {
                tracing::debug!(%addr, %error, "decision watch ended; watching again");
            }
            tokio::time::sleep(REWATCH_INTERVAL).await;
        }
    });
    (task, decisions)
}

async fn watch_once(addr: &str, started: Instant, seen: &Decisions) -> Result<(), String> {
    let mut client = connect(addr, crate::ctl::WATCH_REPLY_TIMEOUT)
        .await
        .map_err(|error| error.to_string())?;
    let request = pb::WatchDecisionsRequest { after_id: 0 };
    let mut stream = client
        .watch_decisions(request)
        .await
        .map_err(|status| status.to_string())?
        .into_inner();
    while let Some(decision) = stream
        .message()
        .await
        .map_err(|status| status.to_string())?
    {
        let acts = decision
            .action
            .as_ref()
            .is_some_and(|action| action.kind != pb::action::Kind::None as i32);
        if !acts {
            continue;
        }
        let mut json = decision_json(&decision);
        let key = (json["supervisor"].clone(), json["id"].clone());
        let mut seen = seen.lock().expect("decisions lock is never poisoned");
        let known = seen
            .iter()
            .position(|earlier| (earlier["supervisor"].clone(), earlier["id"].clone()) == key);
        if let Some(index) = known {
            // An update keeps the time the decision was first seen.
            json["seen_at_secs"] = seen[index]["seen_at_secs"].clone();
            if seen[index] == json {
                continue;
            }
            seen[index] = json;
        } else {
            json["seen_at_secs"] = serde_json::json!(started.elapsed().as_secs_f64());
            seen.push(json);
        }
        eprintln!(
            "[{:>6.1}s] scaling: {}",
            started.elapsed().as_secs_f64(),
            timeline_line(&decision)
        );
    }
    Ok(())
}

/// Returns `d3 on node-0: 2 -> 5 nodes, add 3 (running): <summary>` for a decision.
fn timeline_line(decision: &pb::ScalingDecision) -> String {
    let outcome = decision.outcome.clone().unwrap_or_default();
    let state = match pb::action_outcome::Kind::try_from(outcome.kind) {
        Ok(pb::action_outcome::Kind::Succeeded) => format!(
            "succeeded after {} ms",
            decision.duration_ms.unwrap_or_default()
        ),
        Ok(pb::action_outcome::Kind::Failed) => format!("failed: {}", outcome.error),
        _ => "started".to_owned(),
    };
    format!(
        "d{} on {}: {} -> {}, {state}: {}",
        decision.id,
        decision.supervisor,
        decision.current_nodes,
        crate::table::counted(decision.target_nodes, "node", "nodes"),
        decision.summary
    )
}
