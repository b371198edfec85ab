//! Progress lines and the final summary of `gristmill local`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

/// Result of a `gristmill local` run; printed as text, or as one JSON object with `--json`.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Number of nodes the cluster started with.
    pub nodes: usize,
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
    pub scaling_decisions: Vec<serde_json::Value>,
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
            self.nodes,
            self.calls_per_sec,
            format_micros(self.p50_us),
            format_micros(self.p99_us),
            format_micros(self.max_us),
        ));
        line(format_args!(
            "nodes: {} at the start, {} at the end, {} scaling actions",
            self.nodes,
            self.final_nodes,
            self.scaling_decisions.len()
        ));
        line(format_args!(
            "errors: {}{}",
            self.errors,
            format_counts(&self.errors_by_code, " (", ")")
        ));
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
}

/// Formats one progress line: elapsed time, window rate and latencies, errors, activations.
pub fn progress_line(
    elapsed: Duration,
    window: Duration,
    (calls, errors, p50_us, p99_us): (u64, u64, u64, u64),
    activations: &BTreeMap<String, Option<u64>>,
) -> String {
    let calls_per_sec = calls as f64 / window.as_secs_f64().max(f64::EPSILON);
    let activations: Vec<String> = activations
        .iter()
        .map(|(node, count)| match count {
            Some(count) => format!("{node}={count}"),
            None => format!("{node}=?"),
        })
        .collect();
    format!(
        "[{:>4.0}s] {calls_per_sec:>7.0} calls/s  p50 {:>8}  p99 {:>8}  errors {errors:>5}  activations {}",
        elapsed.as_secs_f64(),
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
            final_nodes: 4,
            duration_secs: 1.0,
            calls: 10,
            errors: 0,
            errors_by_code: BTreeMap::new(),
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
}
