//! Progress lines and the final summary of `gristmill local`.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;

use super::progress::ProgressWindow;

/// Result of a `gristmill local` run; printed as text, or as one JSON object with `--json`.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Number of nodes the cluster started with.
    pub nodes: usize,
    /// Highest number of Active nodes seen during the run, sampled once a second.
    pub peak_nodes: usize,
    /// Number of Active nodes at the end, after scaling.
    pub final_nodes: usize,
    /// Time the workload ran, in seconds.
    pub duration_secs: f64,
    /// Calls that ended, with a reply or an error.
    pub calls: u64,
    /// Calls that ended with a gRPC error status.
    pub errors: u64,
    /// Errors by gRPC status code name.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Transfers that may have been left half done, such as by a node lost between the
    /// withdrawal and the deposit, and whose retries with the same id ran out.
    pub uncertain_transfers: u64,
    /// Transfers sent again with their id after a failure without a known outcome.
    pub transfer_retries: u64,
    /// Calls per second over the whole run.
    pub calls_per_sec: f64,
    /// Median call latency, in microseconds.
    pub p50_us: u64,
    /// 99th percentile call latency, in microseconds.
    pub p99_us: u64,
    /// Highest call latency, in microseconds.
    pub max_us: u64,
    /// Activations each node hosts at the end, by node name.
    pub activations_per_node: BTreeMap<String, u64>,
    /// Number of account grains.
    pub accounts: u64,
    /// Sum of all balances if transfers conserve money: accounts times the initial balance.
    pub total_balance_expected: i64,
    /// Sum of the balances read at the end.
    pub total_balance_actual: i64,
    /// Accounts whose final balance could not be read; the actual total misses them.
    pub balance_read_errors: u64,
    /// Every scaling decision that acted, with its inputs, reasons and outcome, in order.
    /// Each is a `ctl scaling decisions --json` object plus `seen_at_secs`, the time from the
    /// workload's start to when `gristmill local` first saw the decision.
    pub scaling_decisions: Vec<Value>,
}

impl Summary {
    /// Renders the summary for a terminal.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        let mut line = |args: std::fmt::Arguments| {
            text.write_fmt(args)
                .expect("writing to a String cannot fail");
            text.push('\n');
        };
        line(format_args!(
            "{} calls in {:.1} s on {} nodes: {:.0} calls/s, p50 {}, p99 {}, max {}",
            self.calls,
            self.duration_secs,
            self.node_range(),
            self.calls_per_sec,
            format_micros(self.p50_us),
            format_micros(self.p99_us),
            format_micros(self.max_us),
        ));
        line(format_args!(
            "nodes: {} at the start, {} at the peak, {} at the end; {} scaling actions",
            self.nodes,
            self.peak_nodes,
            self.final_nodes,
            self.scaling_decisions.len()
        ));
        for decision in &self.scaling_decisions {
            for entry in decision_lines(decision) {
                line(format_args!("  {entry}"));
            }
        }
        line(format_args!(
            "errors: {}{}",
            self.errors,
            format_counts(&self.errors_by_code, " (", ")")
        ));
        if self.transfer_retries > 0 {
            line(format_args!(
                "transfers sent again with their id to finish them: {}",
                self.transfer_retries
            ));
        }
        if self.uncertain_transfers > 0 {
            line(format_args!(
                "transfers still without a known outcome when their retries ran out: {}",
                self.uncertain_transfers
            ));
        }
        line(format_args!(
            "activations: {}",
            format_counts(&self.activations_per_node, "", "")
        ));
        let verdict = if self.balance_read_errors > 0 {
            format!("{} balances unreadable", self.balance_read_errors)
        } else if self.total_balance_actual == self.total_balance_expected {
            "conserved".to_owned()
        } else {
            "NOT conserved".to_owned()
        };
        line(format_args!(
            "total balance of {} accounts: expected {}, actual {} ({verdict})",
            self.accounts, self.total_balance_expected, self.total_balance_actual,
        ));
        text
    }

    /// Returns whether every balance was read and their total equals the expected total.
    pub fn balance_conserved(&self) -> bool {
        self.balance_read_errors == 0 && self.total_balance_actual == self.total_balance_expected
    }

    /// Returns `2` when the node count never changed, and `2 to 5` otherwise.
    fn node_range(&self) -> String {
        let low = self.nodes.min(self.final_nodes);
        let high = self.peak_nodes.max(self.nodes).max(self.final_nodes);
        if low == high {
            low.to_string()
        } else {
            format!("{low} to {high}")
        }
    }
}

/// Renders one scaling decision of the summary: when it was seen, its direction, node counts,
/// outcome, duration and reason, then one line per node check of a scale-in.
fn decision_lines(decision: &Value) -> Vec<String> {
    let action = &decision["action"];
    let change = match action["kind"].as_str() {
        Some("KIND_SCALE_OUT") => format!("scale out +{}", action["add_nodes"]),
        Some("KIND_SCALE_IN") => {
            let names: Vec<&str> = action["remove_nodes"]
                .as_array()
                .map(|names| names.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            format!("scale in -{}", names.join(","))
        }
        _ => "no action".to_owned(),
    };
    let outcome = &decision["outcome"];
    let duration = decision["duration_ms"]
        .as_u64()
        .map(|ms| format!(" after {:.1} s", ms as f64 / 1e3))
        .unwrap_or_default();
    let result = match outcome["kind"].as_str() {
        Some("KIND_SUCCEEDED") => format!("succeeded{duration}"),
        Some("KIND_FAILED") => format!("failed{duration}: {}", as_text(&outcome["error"])),
        _ => "still running at the end".to_owned(),
    };
    let seen_at = decision["seen_at_secs"]
        .as_f64()
        .map_or_else(|| "?".to_owned(), |secs| format!("{secs:.1}"));
    let mut lines = vec![format!(
        "[{seen_at:>6}s] d{} {change}: {} -> {} nodes, {result}; reason: {}",
        decision["id"],
        decision["current_nodes"],
        decision["target_nodes"],
        as_text(&decision["summary"]),
    )];
    for removal in decision["removals"].as_array().into_iter().flatten() {
        let verdict = if removal["stopped"].as_bool() == Some(true) {
            "stopped"
        } else {
            "left in place"
        };
        lines.push(format!(
            "           {} had {} activations left after its drain ({verdict})",
            as_text(&removal["node"]),
            removal["activations_before_stop"],
        ));
    }
    lines
}

/// Returns a JSON string's text, or the JSON itself for any other value.
fn as_text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// Formats one progress line: elapsed time, window rate and latencies, errors, activations.
pub fn progress_line(
    window: ProgressWindow,
    (calls, errors, p50_us, p99_us): (u64, u64, u64, u64),
    activations: &BTreeMap<String, Option<u64>>,
) -> String {
    let calls_per_sec = calls as f64 / window.length.as_secs_f64().max(f64::EPSILON);
    let activations: Vec<String> = activations
        .iter()
        .map(|(node, count)| match count {
            Some(count) => format!("{node}={count}"),
            None => format!("{node}=?"),
        })
        .collect();
    format!(
        "[{:>4}s] {calls_per_sec:>7.0} calls/s  p50 {:>8}  p99 {:>8}  errors {errors:>5}  activations {}",
        window.elapsed.as_secs(),
        format_micros(p50_us),
        format_micros(p99_us),
        activations.join(" "),
    )
}

/// Formats microseconds with a unit that keeps 2 to 4 significant digits.
pub fn format_micros(micros: u64) -> String {
    match micros {
        0..1_000 => format!("{micros} µs"),
        1_000..1_000_000 => format!("{:.2} ms", micros as f64 / 1e3),
        _ => format!("{:.2} s", micros as f64 / 1e6),
    }
}

fn format_counts(counts: &BTreeMap<String, u64>, open: &str, close: &str) -> String {
    if counts.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(key, count)| format!("{key}={count}"))
        .collect();
    format!("{open}{}{close}", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use gristmill::api::pb;

    use super::*;

    #[test]
    fn micros_pick_readable_unit() {
        let cases = [(850, "850 µs"), (1_500, "1.50 ms"), (2_500_000, "2.50 s")];
        for (micros, expected) in cases {
            assert_eq!(format_micros(micros), expected);
        }
    }

    #[test]
    fn summary_json_has_required_fields() {
        let summary = Summary {
            nodes: 3,
            peak_nodes: 4,
            final_nodes: 4,
            duration_secs: 1.0,
            calls: 10,
            errors: 0,
            errors_by_code: BTreeMap::new(),
            uncertain_transfers: 0,
            transfer_retries: 0,
            calls_per_sec: 10.0,
            p50_us: 100,
            p99_us: 900,
            max_us: 1_000,
            activations_per_node: BTreeMap::from([("node-0".to_owned(), 4)]),
            accounts: 2,
            total_balance_expected: 2_000,
            total_balance_actual: 2_000,
            balance_read_errors: 0,
            scaling_decisions: Vec::new(),
        };
        let json = serde_json::to_value(&summary).unwrap();
        let required = [
            "nodes",
            "peak_nodes",
            "final_nodes",
            "scaling_decisions",
            "calls",
            "errors",
            "calls_per_sec",
            "p50_us",
            "p99_us",
            "activations_per_node",
            "total_balance_expected",
            "total_balance_actual",
        ];
        for field in required {
            assert!(json.get(field).is_some(), "summary lacks {field}");
        }
        assert_eq!(json["activations_per_node"]["node-0"], 4);
        assert!(summary.to_text().contains("(conserved)"));
    }

    #[test]
    fn balance_conserved_needs_every_balance_and_equal_total() {
        let cases = [
            (2_000, 0, true),
            (1_993, 0, false),
            (2_007, 0, false),
            (2_000, 1, false),
        ];
        for (actual, read_errors, expected) in cases {
            let summary = Summary {
                nodes: 1,
                peak_nodes: 1,
                final_nodes: 1,
                duration_secs: 1.0,
                calls: 1,
                errors: 0,
                errors_by_code: BTreeMap::new(),
                uncertain_transfers: 0,
                transfer_retries: 0,
                calls_per_sec: 1.0,
                p50_us: 1,
                p99_us: 1,
                max_us: 1,
                activations_per_node: BTreeMap::new(),
                accounts: 2,
                total_balance_expected: 2_000,
                total_balance_actual: actual,
                balance_read_errors: read_errors,
                scaling_decisions: Vec::new(),
            };
            assert_eq!(
                summary.balance_conserved(),
                expected,
                "actual {actual}, {read_errors} read errors"
            );
        }
    }

    /// Returns a decision as `gristmill local` stores it: the `ctl` JSON plus `seen_at_secs`.
    fn stored_decision(decision: pb::ScalingDecision, seen_at_secs: f64) -> Value {
        let mut json = crate::ctl::scaling::decision_json(&decision);
        json["seen_at_secs"] = serde_json::json!(seen_at_secs);
        json
    }

    fn outcome(kind: pb::action_outcome::Kind, error: &str) -> Option<pb::ActionOutcome> {
        Some(pb::ActionOutcome {
            kind: kind as i32,
            completed_nodes: 0,
            error: error.into(),
        })
    }

    fn add(nodes: u32) -> Option<pb::Action> {
        Some(pb::Action {
            kind: pb::action::Kind::ScaleOut as i32,
            add_nodes: nodes,
            remove_nodes: Vec::new(),
        })
    }

    /// Returns a decision `d{id}` from `nodes.0` to `nodes.1` nodes that took `action`.
    fn decision(
        id: u64,
        nodes: (u32, u32),
        action: Option<pb::Action>,
        outcome: Option<pb::ActionOutcome>,
        duration_ms: Option<u64>,
    ) -> pb::ScalingDecision {
        let direction = if nodes.1 > nodes.0 { "out" } else { "in" };
        pb::ScalingDecision {
            id,
            supervisor: "node-0".into(),
            current_nodes: nodes.0,
            target_nodes: nodes.1,
            action,
            summary: format!("scale {direction} from {} to {} nodes", nodes.0, nodes.1),
            outcome,
            duration_ms,
            ..Default::default()
        }
    }

    /// A run that went from 2 to 5 nodes and back to 2, then failed to scale out once and
    /// had one scale-out still running at the end.
    fn scaled_summary() -> Summary {
        use pb::action_outcome::Kind;

        let scale_out = decision(3, (2, 5), add(3), outcome(Kind::Succeeded, ""), Some(4_210));
        let removed = pb::Action {
            kind: pb::action::Kind::ScaleIn as i32,
            add_nodes: 0,
            remove_nodes: vec!["node-4".into(), "node-3".into(), "node-2".into()],
        };
        let mut scale_in = decision(
            9,
            (5, 2),
            Some(removed),
            outcome(Kind::Succeeded, ""),
            Some(2_040),
        );
        scale_in.removals = vec![pb::NodeRemoval {
            node: "node-4".into(),
            activations_before_stop: 0,
            stopped: true,
        }];
        let error = "node-5 printed no ready line";
        let failed = decision(
            12,
            (2, 3),
            add(1),
            outcome(Kind::Failed, error),
            Some(30_000),
        );
        let running = decision(13, (2, 3), add(1), outcome(Kind::Pending, ""), None);
        Summary {
            nodes: 2,
            peak_nodes: 5,
            final_nodes: 2,
            duration_secs: 120.0,
            calls: 1_000,
            errors: 0,
            errors_by_code: BTreeMap::new(),
            uncertain_transfers: 0,
            transfer_retries: 0,
            calls_per_sec: 8.3,
            p50_us: 800,
            p99_us: 4_000,
            max_us: 9_000,
            activations_per_node: BTreeMap::new(),
            accounts: 2,
            total_balance_expected: 2_000,
            total_balance_actual: 2_000,
            balance_read_errors: 0,
            scaling_decisions: vec![
                stored_decision(scale_out, 12.34),
                stored_decision(scale_in, 61.0),
                stored_decision(failed, 80.0),
                stored_decision(running, 119.5),
            ],
        }
    }

    #[test]
    fn text_reports_start_peak_and_final_nodes() {
        let text = scaled_summary().to_text();
        let first = text.lines().next().unwrap();
        assert!(first.contains(" on 2 to 5 nodes:"), "{first}");
        assert!(
            text.contains("nodes: 2 at the start, 5 at the peak, 2 at the end; 4 scaling actions"),
            "{text}"
        );
    }

    #[test]
    fn text_without_scaling_names_one_node_count() {
        let mut summary = scaled_summary();
        summary.peak_nodes = 2;
        summary.scaling_decisions.clear();
        let text = summary.to_text();
        assert!(
            text.lines().next().unwrap().contains(" on 2 nodes:"),
            "{text}"
        );
        assert!(text.contains("; 0 scaling actions\n"), "{text}");
    }

    #[test]
    fn text_lists_decision_timeline() {
        let text = scaled_summary().to_text();
        let expected = [
            "  [  12.3s] d3 scale out +3: 2 -> 5 nodes, succeeded after 4.2 s; \
             reason: scale out from 2 to 5 nodes",
            "  [  61.0s] d9 scale in -node-4,node-3,node-2: 5 -> 2 nodes, succeeded after 2.0 s; \
             reason: scale in from 5 to 2 nodes",
            "             node-4 had 0 activations left after its drain (stopped)",
            "  [  80.0s] d12 scale out +1: 2 -> 3 nodes, failed after 30.0 s: \
             node-5 printed no ready line; reason: scale out from 2 to 3 nodes",
            "  [ 119.5s] d13 scale out +1: 2 -> 3 nodes, still running at the end; \
             reason: scale out from 2 to 3 nodes",
        ];
        let lines: Vec<&str> = text.lines().collect();
        let start = lines
            .iter()
            .position(|line| line.starts_with("nodes:"))
            .expect("a nodes line");
        assert_eq!(&lines[start + 1..start + 1 + expected.len()], expected);
    }

    #[test]
    fn json_keeps_decisions_with_removals() {
        let json = serde_json::to_value(scaled_summary()).unwrap();
        let decisions = json["scaling_decisions"].as_array().unwrap();
        assert_eq!(decisions.len(), 4);
        assert_eq!(decisions[1]["action"]["kind"], "KIND_SCALE_IN");
        assert_eq!(decisions[1]["removals"][0]["activations_before_stop"], 0);
        assert_eq!(decisions[1]["seen_at_secs"], 61.0);
        assert_eq!(json["peak_nodes"], 5);
    }
}
