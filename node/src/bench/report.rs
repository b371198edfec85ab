//! The benchmark table: one row per figure, with its baselines, ratios and targets.

use serde::Serialize;

use super::stats::{Measurement, Percentiles};
use crate::table::Table;

/// What a ratio compares: medians of latency, or rates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Median latency of the figure divided by the baseline's.
    P50,
    /// Rate of the figure divided by the baseline's.
    Rate,
}

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Stable key, such as `grain_remote_1`, by which tests and scripts look rows up by it.
    pub id: &'static str,
    /// Human-readable name.
    pub figure: String,
    /// The headline value, in `unit`.
    pub value: f64,
    /// Unit of `value`, such as `calls/s`.
    pub unit: &'static str,
    /// Latency percentiles in microseconds, where latency matters.
    pub latency: Option<Percentiles>,
    /// Ratios against baselines measured in the same run.
    pub comparisons: Vec<Comparison>,
    /// Targets this figure is held to, and whether this run met them.
    pub targets: Vec<TargetResult>,
    /// What exactly was measured, where the name alone could mislead.
    pub note: Option<String>,
}

/// A ratio against another row of the same run.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// Id of the baseline row.
    pub baseline: &'static str,
    /// What the ratio divides.
    pub basis: Basis,
    /// The figure divided by the baseline.
    pub ratio: f64,
}

/// A target and whether this run met it.
#[derive(Clone, Debug, Serialize)]
pub struct TargetResult {
    /// The target, such as `p50 <= 2.5x tcp_floor_1`.
    pub target: String,
    /// Whether the measured figure met it.
    pub met: bool,
}

impl Row {
    /// Returns a row for a closed-loop measurement: its rate, with latency if recorded.
    pub fn rate(
        id: &'static str,
        figure: impl Into<String>,
        unit: &'static str,
        m: &Measurement,
    ) -> Row {
        Row {
            id,
            figure: figure.into(),
            value: m.rate_per_sec(),
            unit,
            latency: m.latency,
            comparisons: Vec::new(),
            targets: Vec::new(),
            note: None,
        }
    }

    /// Returns a row of a single value without latency.
    pub fn value(
        id: &'static str,
        figure: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Row {
        Row {
            id,
            figure: figure.into(),
            value,
            unit,
            latency: None,
            comparisons: Vec::new(),
            targets: Vec::new(),
            note: None,
        }
    }

    /// Adds a note on what exactly was measured.
    pub fn with_note(mut self, note: impl Into<String>) -> Row {
        self.note = Some(note.into());
        self
    }

    fn basis_value(&self, basis: Basis) -> Option<f64> {
        match basis {
            Basis::P50 => self.latency.map(|latency| latency.p50_us),
            Basis::Rate => Some(self.value),
        }
    }
}

/// Which rows are compared with which, by id.
const COMPARISONS: &[(&str, &str, Basis)] = &[
    ("ractor_call_1", "tcp_floor_1", Basis::P50),
    ("ractor_call_n", "tcp_floor_n", Basis::Rate),
    ("grain_remote_1", "tcp_floor_1", Basis::P50),
    ("grain_remote_1", "ractor_call_1", Basis::P50),
    ("grain_remote_1", "erlang_call_1", Basis::P50),
    ("grain_remote_n", "tcp_floor_n", Basis::Rate),
    ("grain_remote_n", "ractor_call_n", Basis::Rate),
    ("grain_remote_n", "erlang_call_n", Basis::Rate),
    ("grpc_invoke_1", "grpc_bare_1", Basis::P50),
    ("grpc_invoke_n", "grpc_bare_n", Basis::Rate),
    ("grpc_client_1", "grpc_invoke_1", Basis::P50),
    ("grpc_client_n", "grpc_invoke_n", Basis::Rate),
];

/// Fills in every comparison whose figure and baseline were both measured, then checks the
/// targets.
pub fn finish(rows: &mut [Row]) {
    for &(figure, baseline, basis) in COMPARISONS {
        let base = rows
            .iter()
            .find(|row| row.id == baseline)
            .and_then(|row| row.basis_value(basis));
        let Some(base) = base.filter(|base| *base > 0.0) else {
            continue;
        };
        if let Some(row) = rows.iter_mut().find(|row| row.id == figure)
            && let Some(value) = row.basis_value(basis)
        {
            row.comparisons.push(Comparison {
                baseline,
                basis,
                ratio: value / base,
            });
        }
    }
    for row in rows.iter_mut() {
        row.targets = super::targets::check(row);
    }
}

fn number(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// Renders the rows as one text table.
pub fn render(rows: &[Row]) -> String {
    let mut table = Table::new(vec![
        "ID",
        "FIGURE",
        "VALUE",
        "P50_US",
        "P99_US",
        "P999_US",
        "VS BASELINE",
        "TARGET",
    ]);
    for row in rows {
        let latency = |pick: fn(&Percentiles) -> f64| {
            row.latency
                .as_ref()
                .map_or_else(|| "-".to_string(), |latency| number(pick(latency)))
        };
        let comparisons: Vec<String> = row
            .comparisons
            .iter()
            .map(|c| {
                let basis = match c.basis {
                    Basis::P50 => "p50",
                    Basis::Rate => "rate",
                };
                format!("{basis} {:.2}x {}", c.ratio, c.baseline)
            })
            .collect();
        let targets: Vec<String> = row
            .targets
            .iter()
            .map(|t| format!("{} {}", if t.met { "MET" } else { "MISSED" }, t.target))
            .collect();
        let join = |cells: Vec<String>| {
            if cells.is_empty() {
                "-".to_string()
            } else {
                cells.join("; ")
            }
        };
        table.push(vec![
            row.id.to_string(),
            row.figure.clone(),
            format!("{} {}", number(row.value), row.unit),
            latency(|l| l.p50_us),
            latency(|l| l.p99_us),
            latency(|l| l.p999_us),
            join(comparisons),
            join(targets),
        ]);
    }
    let mut text = table.render();
    for row in rows.iter().filter(|row| row.note.is_some()) {
        text.push_str(&format!(
            "note {}: {}\n",
            row.id,
            row.note.as_deref().unwrap_or_default()
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency_row(id: &'static str, p50_us: f64, rate: f64) -> Row {
        let measurement = Measurement {
            ops: rate as u64,
            elapsed_secs: 1.0,
            latency: Some(Percentiles {
                p50_us,
                p99_us: p50_us * 2.0,
                p999_us: p50_us * 3.0,
            }),
        };
        Row::rate(id, id, "calls/s", &measurement)
    }

    #[test]
    fn comparisons_divide_by_the_baseline() {
        let mut rows = vec![
            latency_row("tcp_floor_1", 20.0, 40_000.0),
            latency_row("grain_remote_1", 50.0, 16_000.0),
        ];
        finish(&mut rows);

        let comparison = &rows[1].comparisons[0];
        assert_eq!(comparison.baseline, "tcp_floor_1");
        assert_eq!(comparison.basis, Basis::P50);
        assert_eq!(comparison.ratio, 2.5);
    }

    #[test]
    fn missing_baseline_adds_no_comparison() {
        let mut rows = vec![latency_row("grain_remote_1", 50.0, 16_000.0)];
        finish(&mut rows);

        assert!(rows[0].comparisons.is_empty());
    }

    #[test]
    fn table_lists_ratio_and_target() {
        let mut rows = vec![
            latency_row("tcp_floor_1", 20.0, 40_000.0),
            latency_row("grain_remote_1", 60.0, 16_000.0),
        ];
        finish(&mut rows);
        let text = render(&rows);

        assert!(text.contains("p50 3.00x tcp_floor_1"), "{text}");
        assert!(text.contains("MISSED p50 <= 2.5x tcp_floor_1"), "{text}");
    }
}
