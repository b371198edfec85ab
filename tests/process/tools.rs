//! The `gristmill local` and `gristmill ctl` commands, run as processes against real nodes.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{BIN, Cluster, Timing, cluster_slot};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// Runs the binary with `args` within `within` and returns its exit code, stdout and stderr.
async fn run_binary(args: &[&str], within: Duration) -> (Option<i32>, String, String) {
    run_binary_with_input(args, "", within).await
}

/// Runs the binary with `args` and `input` on its standard input within `within`, and returns
/// its exit code, stdout and stderr.
async fn run_binary_with_input(
    args: &[&str],
    input: &str,
    within: Duration,
) -> (Option<i32>, String, String) {
    use tokio::io::AsyncWriteExt;

    let mut child = tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("GRISTMILL_ADDR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the gristmill binary");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(input.as_bytes())
        .await
        .expect("write the input");
    // Closing stdin ends the input.
    drop(stdin);
    let output = tokio::time::timeout(within, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("gristmill {args:?} did not finish within {within:?}"))
        .expect("wait for the gristmill binary");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_runs_workload_and_conserves_balance() {
    let _slot = cluster_slot().await;
    let args = [
        "local",
        "--nodes",
        "2",
        "--grains",
        "200",
        "--accounts",
        "10",
        "--duration",
        "3s",
        "--concurrency",
        "8",
        "--json",
    ];
    let (code, stdout, stderr) = run_binary(&args, Duration::from_secs(120)).await;
    assert_eq!(code, Some(0), "stderr: {stderr}");

    let summary: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("summary is not one JSON object ({error}): {stdout}"));
    assert_eq!(summary["nodes"], 2);
    assert!(summary["calls"].as_u64().unwrap_or(0) > 0, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(
        summary["total_balance_actual"], summary["total_balance_expected"],
        "{summary}"
    );
    let activations = summary["activations_per_node"].as_object().expect("object");
    assert_eq!(activations.len(), 2, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_options_exit_with_code_two() {
    // Each case names the option and exits 2 before it starts or connects to anything.
    let cases: [(&[&str], &str); 9] = [
        (
            &["local", "--nodes", "3", "--max-nodes", "2"],
            "--max-nodes 2",
        ),
        (&["local", "--start-timeout", "0s"], "--start-timeout"),
        (&["local", "--duration", "0s"], "--duration"),
        (
            &["local", "--duration", "banana"],
            "such as 500ms, 30s or 2m",
        ),
        (&["local", "--node-log", "nonsense[["], "--node-log"),
        (
            &["local", "--sqlite-path", "/nonexistent/gristmill.db"],
            "directory /nonexistent does not exist",
        ),
        (
            &[
                "ctl",
                "--addr",
                "127.0.0.1:1",
                "--request-timeout",
                "0s",
                "members",
            ],
            "longer than 0",
        ),
        (&["ctl", "--addr", "localhost", "members"], "HOST:PORT"),
        (&["ctl", "members"], "missing --addr"),
    ];
    for (args, expected) in cases {
        let (code, _, stderr) = run_binary(args, Duration::from_secs(20)).await;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_invokes_and_lists_members() {
    let _slot = cluster_slot().await;
    let cluster = Cluster::start(2, Timing::FAST).await;
    let addr = cluster.nodes[0].ready.grpc_addr.to_string();
    let within = Duration::from_secs(20);

    let invoke = [
        "ctl",
        "--addr",
        &addr,
        "invoke",
        "counter",
        "ctl-test",
        "add",
        r#"{"amount": 5}"#,
        "--json",
    ];
    let (code, stdout, stderr) = run_binary(&invoke, within).await;
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let reply: Value = serde_json::from_str(stdout.trim()).expect("invoke prints JSON");
    assert_eq!(reply["reply"], 5);

    // `-` reads the payload from standard input.
    let from_stdin = [
        "ctl", "--addr", &addr, "invoke", "counter", "ctl-test", "add", "-", "--json",
    ];
    let (code, stdout, stderr) =
        run_binary_with_input(&from_stdin, r#"{"amount": 2}"#, within).await;
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let reply: Value = serde_json::from_str(stdout.trim()).expect("invoke prints JSON");
    assert_eq!(reply["reply"], 7);

    // `--addr` may follow the subcommand too.
    let members = ["ctl", "members", "--addr", &addr, "--json"];
    let (code, stdout, stderr) = run_binary(&members, within).await;
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let listed: Value = serde_json::from_str(stdout.trim()).expect("members prints JSON");
    let states: Vec<&Value> = listed["members"]
        .as_array()
        .expect("array")
        .iter()
        .map(|m| &m["state"])
        .collect();
    assert_eq!(states, ["ACTIVE", "ACTIVE"]);

    // The node's other ports do not speak its gRPC API: the metrics endpoint replies with HTTP 404,
    // and the cluster port expects a ractor_cluster handshake.
    let ready = &cluster.nodes[0].ready;
    let metrics = ready.metrics_addr.expect("metrics are on").to_string();
    for wrong in [metrics, ready.cluster_addr.to_string()] {
        let (code, _, stderr) = run_binary(&["ctl", "--addr", &wrong, "members"], within).await;
        assert_eq!(code, Some(1), "ctl at {wrong}, stderr: {stderr}");
        let hint = format!("hint: {wrong} does not answer as a Gristmill gRPC API");
        assert!(stderr.contains(&hint), "ctl at {wrong}, stderr: {stderr}");
        assert!(
            stderr.contains("grpc_addr"),
            "ctl at {wrong}, stderr: {stderr}"
        );
    }

    let unknown = ["ctl", "--addr", &addr, "invoke", "no-such-type", "k", "get"];
    let (code, _, stderr) = run_binary(&unknown, within).await;
    assert_eq!(code, Some(1), "exit code for an error status");
    assert!(stderr.contains("error: NOT_FOUND: "), "stderr: {stderr}");
    assert!(stderr.contains("no-such-type"), "stderr: {stderr}");
    // A routed call names the node that replied, and gets no hint about `--addr`.
    assert!(stderr.contains("(from node node-"), "stderr: {stderr}");
    assert!(!stderr.contains("hint:"), "stderr: {stderr}");
    let activations = [
        "ctl",
        "--addr",
        &addr,
        "activations",
        "--type",
        "no-such-type",
    ];
    let (code, stdout, stderr) = run_binary(&activations, within).await;
    assert_eq!(
        code,
        Some(1),
        "exit code for an unknown type, stdout: {stdout}"
    );
    assert!(
        stderr.contains(r#"error: NOT_FOUND: grain type "no-such-type" is not registered"#),
        "stderr: {stderr}"
    );
    assert!(
        stderr.contains("counter"),
        "registered types in stderr: {stderr}"
    );

    // A stateless worker has no single activation to move, wherever the request lands.
    let worker = ["ctl", "--addr", &addr, "migrate", "bank", "main"];
    let (code, _, stderr) = run_binary(&worker, within).await;
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(stderr.contains("FAILED_PRECONDITION"), "stderr: {stderr}");
    assert!(stderr.contains("stateless worker"), "stderr: {stderr}");
}

#[tokio::test]
async fn set_policy_names_unreadable_file() {
    // The policy is read before connecting, so no node is needed.
    let args = [
        "ctl",
        "--addr",
        "127.0.0.1:1",
        "scaling",
        "set-policy",
        "/nonexistent/policy.toml",
    ];
    let (code, _, stderr) = run_binary(&args, Duration::from_secs(20)).await;
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("cannot read policy file /nonexistent/policy.toml"),
        "stderr: {stderr}"
    );
}

#[tokio::test]
async fn ctl_rejects_invalid_json_payload() {
    // The payload is parsed before connecting, so no node is needed.
    let args = [
        "ctl",
        "--addr",
        "127.0.0.1:1",
        "invoke",
        "counter",
        "k",
        "add",
        "{not json",
    ];
    let (code, _, stderr) = run_binary(&args, Duration::from_secs(20)).await;
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(stderr.contains("invalid JSON payload"), "stderr: {stderr}");
}

#[tokio::test]
async fn ctl_gives_up_on_a_silent_node() {
    // A listener that accepts connections and never replies, as a node stopped with SIGSTOP
    // does once the kernel has accepted the connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a port on loopback");
    let addr = listener.local_addr().expect("local address").to_string();
    let acceptor = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    for command in [&["members"][..], &["scaling", "status"][..]] {
        let mut args = vec!["ctl", "--addr", &addr, "--request-timeout", "500ms"];
        args.extend_from_slice(command);
        let (code, _, stderr) = run_binary(&args, Duration::from_secs(20)).await;
        assert_eq!(code, Some(1), "ctl {command:?}, stderr: {stderr}");
        assert!(
            stderr.contains("DEADLINE_EXCEEDED: no reply from"),
            "ctl {command:?}, stderr: {stderr}"
        );
        assert!(
            stderr.contains("sent no reply in time"),
            "ctl {command:?}, stderr: {stderr}"
        );
    }
    acceptor.abort();
}

#[tokio::test]
async fn ctl_rejects_a_url_as_address() {
    let args = ["ctl", "--addr", "http://127.0.0.1:4000", "members"];
    let (code, _, stderr) = run_binary(&args, Duration::from_secs(20)).await;
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(stderr.contains("expected HOST:PORT"), "stderr: {stderr}");
}

#[tokio::test]
async fn ctl_names_the_refused_connection() {
    // A port that nothing listens on: bound, then closed, so the OS refuses the connection.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a port on loopback")
        .to_string();
    let args = ["ctl", "--addr", &closed, "members"];
    let (code, _, stderr) = run_binary(&args, Duration::from_secs(20)).await;
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("cannot connect to {closed}")),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("Connection refused"), "stderr: {stderr}");
    assert!(
        stderr.contains("grpc_addr of its ready line"),
        "stderr: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_migrates_a_grain_and_drains_a_node() {
    let _slot = cluster_slot().await;
    let cluster = Cluster::start(2, Timing::FAST).await;
    let addr = cluster.nodes[0].ready.grpc_addr.to_string();
    let within = Duration::from_secs(30);

    let add = [
        "ctl",
        "--addr",
        &addr,
        "invoke",
        "counter",
        "moving",
        "add",
        r#"{"amount": 3}"#,
        "--json",
    ];
    let (code, stdout, stderr) = run_binary(&add, within).await;
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let reply: Value = serde_json::from_str(stdout.trim()).expect("invoke prints JSON");
    let host = reply["served_by"].as_str().expect("served_by").to_string();
    let other = if host == "node-0" { "node-1" } else { "node-0" };

    let migrate = [
        "ctl", "--addr", &addr, "migrate", "counter", "moving", "--to", other, "--json",
    ];
    let (code, stdout, stderr) = run_binary(&migrate, within).await;
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let moved: Value = serde_json::from_str(stdout.trim()).expect("migrate prints JSON");
    assert_eq!(moved["from_node"], host.as_str());
    assert_eq!(moved["to_node"], other);
    assert_eq!(moved["epoch"], 1);

    let get = [
        "ctl", "--addr", &addr, "invoke", "counter", "moving", "get", "--json",
    ];
    let (code, stdout, stderr) = run_binary(&get, within).await;
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let reply: Value = serde_json::from_str(stdout.trim()).expect("invoke prints JSON");
    assert_eq!(reply["reply"], 3, "the value moved with the grain");
    assert_eq!(reply["served_by"], other);

    let drain = ["ctl", "--addr", &addr, "drain", other, "--json"];
    let (code, stdout, stderr) = run_binary(&drain, within).await;
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("drain prints JSON");
    assert_eq!(report["remaining"], 0, "{report}");
    assert_eq!(report["migrated"], 1, "{report}");
}

// Goal: a node whose stderr reader goes away (a log shipper that restarts, `| head`) keeps
// running. The log lines of its start then fail to write, and reporting that failure on
// stderr used to panic the node (exit 101) before it printed its ready line.
#[tokio::test]
async fn node_survives_closed_stderr() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let data_dir = tempfile::tempdir().expect("a temporary directory");
    let sqlite_path = data_dir.path().join("node.sqlite3");
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "run",
            "--node-name",
            "stderr-closed",
            "--bind-ip",
            "127.0.0.1",
        ])
        .args([
            "--gossip-port",
            "0",
            "--cluster-port",
            "0",
            "--grpc-port",
            "0",
        ])
        .args(["--metrics-port", "0", "--log", "info"])
        .arg("--sqlite-path")
        .arg(&sqlite_path)
        .env("GRISTMILL_COOKIE", common::COOKIE)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the gristmill binary");
    drop(child.stderr.take());

    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the node prints its ready line within 30 s")
        .expect("read stdout");
    let line = line.unwrap_or_else(|| {
        panic!(
            "stdout closed before the ready line; exit: {:?}",
            child.try_wait()
        )
    });
    assert!(line.contains(r#""event":"ready""#), "first line: {line}");
    assert!(
        child.try_wait().expect("query the node").is_none(),
        "the node exited after its ready line"
    );
}

/// Returns the pid of the child of `parent` that runs the node named `node`, read from /proc.
fn child_node_pid(parent: u32, node: &str) -> Option<i32> {
    let tasks = std::fs::read_dir(format!("/proc/{parent}/task")).ok()?;
    let children: Vec<String> = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .collect();
    children
        .iter()
        .flat_map(|line| line.split_whitespace())
        .filter_map(|pid| pid.parse::<i32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
            args.windows(2)
                .any(|pair| pair[0] == b"--node-name" && pair[1] == node.as_bytes())
        })
}

/// Returns the pids of the running processes whose environment names `session` as their
/// `GRISTMILL_SESSION_PID`: the nodes of a `gristmill local` run, also those that another node
/// started.
fn session_processes(session: u32) -> Vec<i32> {
    let entry = format!("GRISTMILL_SESSION_PID={session}");
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    processes
        .flatten()
        .filter_map(|process| process.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            // A zombie has exited, and its environment reads as empty.
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            environ
                .split(|byte| *byte == 0)
                .any(|variable| variable == entry.as_bytes())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_finishes_transfers_after_node_kill() {
    // Goal: a node killed under the workload leaves the account total conserved, because a
    // transfer cut short between its withdrawal and its deposit is sent again with its id.
    // `local` reports the kill while the workload goes on, and at the end it stops every node
    // of the run, also those that the supervisor started in its place.
    // Method: kill node-1 of `gristmill local` with SIGKILL once the workload has run for a
    // few seconds, read stderr until the report and one more progress line, then read the
    // summary, the exit code and the processes left.
    use tokio::io::AsyncBufReadExt;

    let _slot = cluster_slot().await;
    let args = [
        "local",
        "--nodes",
        "3",
        "--max-nodes",
        "3",
        "--grains",
        "200",
        "--accounts",
        "20",
        "--transfer-percent",
        "50",
        "--duration",
        "20s",
        "--concurrency",
        "16",
        "--json",
    ];
    let mut child = tokio::process::Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start gristmill local");
    let local_pid = child.id().expect("local runs");
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().expect("stderr is piped"));
    let mut progress_lines = 0;
    let mut line = String::new();
    while progress_lines < 4 {
        line.clear();
        let read = tokio::time::timeout(Duration::from_secs(120), stderr.read_line(&mut line))
            .await
            .expect("local prints progress within 120 s")
            .expect("read stderr");
        assert!(read > 0, "local ended before its workload ran");
        if line.contains("calls/s") {
            progress_lines += 1;
        }
    }
    let node_pid = child_node_pid(local_pid, "node-1").expect("local runs node-1");
    kill(Pid::from_raw(node_pid), Signal::SIGKILL).expect("kill node-1");
    println!("killed node-1 (pid {node_pid}) after {progress_lines} progress lines");
    let mut reported = None;
    let report_deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        line.clear();
        let read = tokio::time::timeout_at(report_deadline, stderr.read_line(&mut line))
            .await
            .unwrap_or_else(|_| {
                panic!("no kill report and progress line within 60 s; last report {reported:?}")
            })
            .expect("read stderr");
        assert!(
            read > 0,
            "local ended without a progress line after the kill report"
        );
        if line.contains("exited during the run") && line.contains("node=node-1") {
            reported = Some(line.clone());
        } else if reported.is_some() && line.contains("calls/s") {
            break;
        }
    }
    let reported = reported.expect("the loop ends after the report");
    assert!(reported.contains("WARN"), "{reported}");
    assert!(reported.contains("SIGKILL"), "{reported}");
    // Keep reading stderr so that local never blocks on a full pipe.
    let drain = tokio::spawn(async move {
        let mut rest = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut rest).await;
        rest
    });
    let output = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("local ends within 180 s")
        .expect("wait for local");
    let left = session_processes(local_pid);
    // The nodes share the stderr pipe, so the reader ends once the last node has exited.
    let rest = tokio::time::timeout(Duration::from_secs(60), drain)
        .await
        .expect("every node exits within 60 s of local")
        .expect("stderr reader");
    assert_eq!(left, Vec::<i32>::new(), "nodes outlived local\n{rest}");
    assert!(
        !rest.contains("cannot join the cluster"),
        "a node still tried to join after the run\n{rest}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("summary is not JSON ({error}): {stdout}\n{rest}"));
    println!(
        "transfer retries {}, uncertain {}, errors {}, scaling decisions {}",
        summary["transfer_retries"],
        summary["uncertain_transfers"],
        summary["errors_by_code"],
        summary["scaling_decisions"]
    );
    assert_eq!(output.status.code(), Some(0), "{summary}\n{rest}");
    assert_eq!(
        summary["total_balance_actual"], summary["total_balance_expected"],
        "{summary}"
    );
    assert_eq!(summary["uncertain_transfers"], 0, "{summary}");
    assert!(
        summary["transfer_retries"].as_u64().unwrap_or(0) > 0,
        "no transfer was cut short by the kill: {summary}"
    );
}
