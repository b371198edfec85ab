//! The performance targets each figure is held to.

use super::report::{Basis, Row, TargetResult};

/// A target on a row's own value or on one of its comparisons.
enum Target {
    /// The value is at least this much.
    AtLeast(f64),
    /// The value is at most this much.
    AtMost(f64),
    /// The 99th percentile latency is at most this many microseconds.
    P99AtMostUs(f64),
    /// The p50 ratio against the baseline is at most this much.
    P50RatioAtMost(&'static str, f64),
    /// The p50 ratio against the baseline is below this.
    P50RatioBelow(&'static str, f64),
}

fn targets_of(id: &str) -> &'static [Target] {
    match id {
        "grain_remote_1" => &[
            Target::P50RatioAtMost("tcp_floor_1", 2.5),
            Target::P50RatioBelow("erlang_call_1", 1.0),
        ],
        "grain_remote_n" => &[Target::AtLeast(150_000.0)],
        "oneway" => &[Target::AtLeast(500_000.0)],
        "grpc_invoke_1" => &[Target::P50RatioAtMost("grpc_bare_1", 1.5)],
        "activation_cold" => &[Target::AtLeast(50_000.0)],
        "activation_idle_memory" => &[Target::AtMost(1024.0)],
        "crash_detection" => &[Target::P99AtMostUs(5_000_000.0)],
        _ => &[],
    }
}

fn p50_ratio(row: &Row, baseline: &str) -> Option<f64> {
    row.comparisons
        .iter()
        .find(|c| c.baseline == baseline && c.basis == Basis::P50)
        .map(|c| c.ratio)
}

/// Checks `row` against its targets. A target whose baseline was not measured is left out.
pub fn check(row: &Row) -> Vec<TargetResult> {
    let unit = row.unit;
    targets_of(row.id)
        .iter()
        .filter_map(|target| match *target {
            Target::AtLeast(limit) => Some(TargetResult {
                target: format!(">= {limit} {unit}"),
                met: row.value >= limit,
            }),
            Target::AtMost(limit) => Some(TargetResult {
                target: format!("<= {limit} {unit}"),
                met: row.value <= limit,
            }),
            Target::P99AtMostUs(limit) => row.latency.map(|latency| TargetResult {
                target: format!("p99 <= {} s", limit / 1e6),
                met: latency.p99_us <= limit,
            }),
            Target::P50RatioAtMost(baseline, limit) => {
                p50_ratio(row, baseline).map(|ratio| TargetResult {
                    target: format!("p50 <= {limit}x {baseline}"),
                    met: ratio <= limit,
                })
            }
            Target::P50RatioBelow(baseline, limit) => {
                p50_ratio(row, baseline).map(|ratio| TargetResult {
                    target: format!("p50 < {limit}x {baseline}"),
                    met: ratio < limit,
                })
            }
        })
        .collect()
}
