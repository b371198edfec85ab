//! `gristmill bench` as a process: a short run of the floor and remote scenarios prints the
//! expected rows, each with a measured rate, and the ratios between them.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_gristmill");

/// Runs `gristmill bench` with `args` and returns its stdout, failing on a non-zero exit.
async fn bench(args: &[&str]) -> String {
    let output = tokio::process::Command::new(BIN)
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), output)
        .await
        .expect("gristmill bench finishes within 240 s")
        .expect("gristmill bench starts");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "gristmill bench failed: {stderr}");
    String::from_utf8(output.stdout).expect("stdout is UTF-8")
}

fn row<'a>(rows: &'a [Value], id: &str) -> &'a Value {
    rows.iter()
        .find(|row| row["id"] == id)
        .unwrap_or_else(|| panic!("no row {id} in {rows:?}"))
}

#[tokio::test]
async fn smoke_run_lists_floor_and_remote_rows() {
    let stdout = bench(&[
        "--scenario",
        "floor,remote",
        "--duration",
        "1s",
        "--in-flight",
        "4",
        "--json",
    ])
    .await;
    let document: Value = serde_json::from_str(stdout.trim()).expect("stdout is one JSON object");
    let rows = document["rows"].as_array().expect("rows is an array");

    let ids = [
        "tcp_floor_1",
        "tcp_floor_n",
        "ractor_call_1",
        "ractor_call_n",
        "grain_remote_1",
        "grain_remote_n",
    ];
    for id in ids {
        let row = row(rows, id);
        assert!(
            row["value"].as_f64().unwrap_or(0.0) > 0.0,
            "{id} measured no calls: {row}"
        );
        let p50 = row["latency"]["p50_us"].as_f64().unwrap_or(0.0);
        assert!(p50 > 0.0, "{id} has no p50: {row}");
    }
    assert_eq!(
        rows.len(),
        ids.len(),
        "only the requested scenarios ran: {rows:?}"
    );

    let baselines: Vec<&str> = row(rows, "grain_remote_1")["comparisons"]
        .as_array()
        .expect("comparisons is an array")
        .iter()
        .filter_map(|comparison| comparison["baseline"].as_str())
        .collect();
    assert_eq!(baselines, ["tcp_floor_1", "ractor_call_1"]);
    let targets = row(rows, "grain_remote_1")["targets"]
        .as_array()
        .expect("targets");
    assert_eq!(targets.len(), 1, "the floor target is checked: {targets:?}");
}

#[tokio::test]
async fn unknown_scenario_is_rejected() {
    let output = tokio::process::Command::new(BIN)
        .args(["bench", "--scenario", "nonsense"])
        .output()
        .await
        .expect("gristmill bench starts");

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nonsense"), "{stderr}");
}
