//! Bad input to real node processes: garbage and oversized frames on the gossip and cluster
//! ports, cluster, gRPC and metrics connections that send nothing, and invalid configuration
//! at start.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    BIN, COOKIE, Cluster, NodeProcess, Timing, cluster_slot, counters_on, metric_value,
    metric_value_with, wait_until,
};
use gristmill::api::pb;
use gristmill::api::pb::cluster_client::ClusterClient;
use hyper_util::rt::TokioIo;
use rand::RngExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tonic::transport::{Endpoint, Uri};

/// Inbound frame limit of the nodes in the garbage test, in bytes (the smallest valid value).
const MAX_FRAME_BYTES: u64 = 65_536;
/// Time a node has to count rejected input or to close a rejected connection.
const REJECT_WITHIN: Duration = Duration::from_secs(10);

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rand::rng().fill(&mut bytes[..]);
    bytes
}

/// Sends one length-prefixed frame (u64 big-endian length, as the cluster transport frames
/// messages) and waits until the node closes the connection.
async fn send_frame_expect_close(addr: std::net::SocketAddr, length: u64, body: &[u8]) {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the cluster port");
    stream
        .write_all(&length.to_be_bytes())
        .await
        .expect("send the length");
    // The node may close the connection as soon as it reads the length, so a failed body
    // write is one of the expected outcomes.
    let _ = stream.write_all(body).await;
    let mut buffer = [0; 1024];
    let closed = tokio::time::timeout(REJECT_WITHIN, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "node kept the connection open after a bad frame of length {length}"
    );
}

/// Waits until the counter `name` at `metrics` reaches `at_least`; panics after
/// [`REJECT_WITHIN`].
async fn wait_counted(metrics: std::net::SocketAddr, name: &str, at_least: f64) {
    let what = format!("{name} reaches {at_least}");
    wait_until(&what, REJECT_WITHIN, || async {
        let now = metric_value(metrics, name).await;
        if now >= at_least {
            Ok(())
        } else {
            Err(format!("{name} is {now}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_input_is_rejected_and_counted() {
    const DATAGRAMS: usize = 50;
    let _slot = cluster_slot().await;
    let max_frame = MAX_FRAME_BYTES.to_string();
    let cluster = Cluster::start_with(2, Timing::FAST, &["--max-frame-bytes", &max_frame]).await;
    let target = &cluster.nodes[0].ready;
    let metrics = target.metrics_addr.expect("metrics endpoint is on");
    let datagrams_before = metric_value(metrics, "gristmill_rejected_datagrams_total").await;
    let frames_before = metric_value(metrics, "gristmill_rejected_frames_total").await;

    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind a UDP socket");
    for _ in 0..DATAGRAMS {
        let len = rand::rng().random_range(1..1_200);
        socket
            .send_to(&random_bytes(len), target.gossip_addr)
            .await
            .expect("send a datagram");
    }
    wait_counted(
        metrics,
        "gristmill_rejected_datagrams_total",
        datagrams_before + DATAGRAMS as f64,
    )
    .await;

    send_frame_expect_close(target.cluster_addr, 64, &random_bytes(64)).await;
    send_frame_expect_close(
        target.cluster_addr,
        MAX_FRAME_BYTES + 1,
        &random_bytes(1_024),
    )
    .await;
    wait_counted(
        metrics,
        "gristmill_rejected_frames_total",
        frames_before + 2.0,
    )
    .await;

    let mut client = cluster.nodes[0].client().await;
    let (value, _) = client
        .invoke("counter", "after-garbage", "add", json!({ "amount": 3 }), 0)
        .await
        .expect("the node keeps serving calls");
    assert_eq!(value, json!(3));
    let mut peer = cluster.nodes[1].client().await;
    let members = peer.members().await.expect("ListMembers on the peer");
    let target_state = members
        .iter()
        .find(|member| member.name == target.node)
        .map(|member| member.state);
    assert_eq!(
        target_state,
        Some(pb::NodeState::Active as i32),
        "peer's view of {}",
        target.node
    );
}

/// Runs `gristmill run` with `args` (and `cookie` unless `None`), expects it to exit at once
/// with code 2, and returns its stderr.
async fn run_expecting_config_error(args: &[&str], cookie: Option<&str>) -> String {
    let mut command = tokio::process::Command::new(BIN);
    command
        .arg("run")
        .args(args)
        .env_remove("GRISTMILL_COOKIE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cookie) = cookie {
        command.env("GRISTMILL_COOKIE", cookie);
    }
    let output = tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .unwrap_or_else(|_| panic!("gristmill run {args:?} did not exit on an invalid setting"))
        .expect("run the gristmill binary");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(2),
        "exit code of {args:?}, stderr: {stderr}"
    );
    assert!(output.stdout.is_empty(), "no ready line for {args:?}");
    stderr
}

#[tokio::test]
async fn invalid_flags_fail_naming_the_setting() {
    let cases: [(&[&str], Option<&str>, &str); 9] = [
        (&["--idle-after-secs", "0"], Some(COOKIE), "idle_after_secs"),
        (&[], Some("too-short"), "cookie"),
        (&[], None, "cookie"),
        (
            &["--probe-period-ms", "200", "--probe-rtt-ms", "300"],
            Some(COOKIE),
            "membership.probe_rtt_ms",
        ),
        (&["--seed", "no-port"], Some(COOKIE), "seeds"),
        (
            &["--handshake-timeout-ms", "0"],
            Some(COOKIE),
            "handshake_timeout_ms",
        ),
        (
            &["--max-pending-handshakes", "0"],
            Some(COOKIE),
            "max_pending_handshakes",
        ),
        (
            &["--first-byte-timeout-ms", "0"],
            Some(COOKIE),
            "first_byte_timeout_ms",
        ),
        (&["--log", "info,gristmill=loud"], Some(COOKIE), "--log"),
    ];
    for (args, cookie, setting) in cases {
        let stderr = run_expecting_config_error(args, cookie).await;
        assert!(
            stderr.contains(setting),
            "stderr for {args:?} does not name {setting}: {stderr}"
        );
    }
}

#[tokio::test]
async fn cookie_errors_hide_the_secret() {
    let missing = run_expecting_config_error(&[], None).await;
    assert!(missing.contains("`cookie` = \"(unset)\""), "{missing}");
    assert!(missing.contains("GRISTMILL_COOKIE"), "{missing}");
    let short = run_expecting_config_error(&[], Some("too-short")).await;
    assert!(
        short.contains("`cookie` = \"(9 characters, hidden)\""),
        "{short}"
    );
    assert!(!short.contains("too-short"), "the secret leaked: {short}");
}

#[tokio::test]
async fn invalid_log_filter_names_value_and_syntax() {
    let stderr = run_expecting_config_error(&["--log", "info,gristmill=loud"], Some(COOKIE)).await;

    assert!(
        stderr.contains("\"info,gristmill=loud\""),
        "stderr: {stderr}"
    );
    assert!(
        stderr.contains("expected comma-separated directives"),
        "stderr: {stderr}"
    );
}

#[tokio::test]
async fn zero_connection_deadlines_name_value_and_range() {
    let cases = [
        ("--handshake-timeout-ms", "`handshake_timeout_ms` = \"0\""),
        ("--first-byte-timeout-ms", "`first_byte_timeout_ms` = \"0\""),
    ];
    for (flag, named) in cases {
        let stderr = run_expecting_config_error(&[flag, "0"], Some(COOKIE)).await;

        assert!(stderr.contains(named), "stderr for {flag} 0: {stderr}");
        assert!(
            stderr.contains("use 100 to 600000 milliseconds"),
            "stderr for {flag} 0: {stderr}"
        );
    }
}

#[tokio::test]
async fn invalid_config_file_fails_naming_the_setting() {
    let cases = [
        ("idle_after_secs = 0\n", "idle_after_secs"),
        (
            "[membership]\nprobe_period_ms = 10\n",
            "membership.probe_period_ms",
        ),
        ("no_such_setting = 1\n", "no_such_setting"),
    ];
    for (toml, setting) in cases {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(toml.as_bytes())
            .expect("write the config file");
        let path = file.path().to_str().expect("UTF-8 temp path");
        let stderr = run_expecting_config_error(&["--config", path], Some(COOKIE)).await;
        assert!(
            stderr.contains(setting),
            "stderr for {toml:?} does not name {setting}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_file_has_no_ansi_escapes() {
    // Goal: logs redirected to a file are plain text. Method: the helper sends the node's
    // stderr to a file; the node has logged its start there once it printed the ready line.
    let _slot = cluster_slot().await;
    let node = NodeProcess::start("plain-log", &[], Timing::FAST, &[]).await;

    let (log, _) = wait_until("the node logged its start", REJECT_WITHIN, || async {
        let log = std::fs::read_to_string(&node.log_path).map_err(|error| error.to_string())?;
        if log.contains("node ready") {
            Ok(log)
        } else {
            Err(format!("log so far: {log}"))
        }
    })
    .await;
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape in the log file:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_is_counted_and_logged_once() {
    // Goal: a port scan of the cluster port cannot flood the log. Method: open and close
    // many connections that never authenticate; every one is counted, and the log gets one
    // warning for them all, because they fall within one rate-limit interval.
    const CONNECTIONS: usize = 30;
    let _slot = cluster_slot().await;
    let node = NodeProcess::start("scanned", &[], Timing::FAST, &[]).await;
    let metrics = node.ready.metrics_addr.expect("metrics endpoint is on");
    let before = metric_value(metrics, "gristmill_rejected_frames_total").await;

    for _ in 0..CONNECTIONS {
        send_frame_expect_close(node.ready.cluster_addr, 64, &random_bytes(64)).await;
    }
    wait_counted(
        metrics,
        "gristmill_rejected_frames_total",
        before + CONNECTIONS as f64,
    )
    .await;

    let log = std::fs::read_to_string(&node.log_path).expect("read the node log");
    let warnings: Vec<&str> = log.lines().filter(|line| line.contains(" WARN ")).collect();
    assert_eq!(
        warnings.len(),
        1,
        "warnings for {CONNECTIONS} rejected connections:\n{}",
        warnings.join("\n")
    );
    assert!(
        warnings[0].contains("cluster connection closed before authenticating"),
        "{}",
        warnings[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_forwarded_call_names_frame_limit() {
    // Goal: a call too large for one cluster frame fails with INVALID_ARGUMENT naming the
    // limit, instead of a lost request. Method: two nodes with a small frame limit; a counter
    // hosted on node-1 gets a padded payload through node-0.
    let _slot = cluster_slot().await;
    let max_frame = MAX_FRAME_BYTES.to_string();
    let cluster = Cluster::start_with(2, Timing::FAST, &["--max-frame-bytes", &max_frame]).await;
    let mut clients = cluster.clients().await;
    let key = common::counters_on(&mut clients, "node-1", 20).await[0].clone();
    let padding = "x".repeat(usize::try_from(MAX_FRAME_BYTES).expect("fits usize"));
    let status = clients[0]
        .invoke(
            "counter",
            &key,
            "add",
            json!({ "amount": 1, "pad": padding }),
            5_000,
        )
        .await
        .expect_err("the payload exceeds the frame limit");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("max_frame_bytes"),
        "the error names the setting: {}",
        status.message()
    );
}

/// Opens `count` TCP connections to `addr` that send nothing, and returns each with the time
/// just before its connect started.
///
/// The node starts a connection's deadline when it accepts it, which is after that time, so
/// a close measured from it is never early. A time taken after `connect` returns can be late
/// when the test process is descheduled, which would make a close at the deadline look early.
async fn open_idle(addr: std::net::SocketAddr, count: usize) -> Vec<(Instant, TcpStream)> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let connecting = Instant::now();
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|error| panic!("connect to {addr}: {error}"));
        streams.push((connecting, stream));
    }
    streams
}

/// Waits until the node closes each stream, up to `within`, and returns the time from
/// connect to close of each, or `None` for a stream still open at the end.
async fn wait_closed(
    streams: Vec<(Instant, TcpStream)>,
    within: Duration,
) -> Vec<Option<Duration>> {
    let mut waits = tokio::task::JoinSet::new();
    for (index, (opened, mut stream)) in streams.into_iter().enumerate() {
        waits.spawn(async move {
            let mut buffer = [0; 64];
            let closed = tokio::time::timeout(within, async {
                loop {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return opened.elapsed(),
                        Ok(_) => {}
                    }
                }
            })
            .await;
            (index, closed.ok())
        });
    }
    let mut closed = vec![None; waits.len()];
    while let Some(joined) = waits.join_next().await {
        let (index, elapsed) = joined.expect("close wait task");
        closed[index] = elapsed;
    }
    closed
}

/// Waits until the `reason` count of `gristmill_rejected_frames_total` reaches `at_least`.
async fn wait_rejected(metrics: std::net::SocketAddr, reason: &str, at_least: f64) -> f64 {
    let label = format!("reason=\"{reason}\"");
    let what = format!("rejected connections with {label} reach {at_least}");
    let (count, _) = wait_until(&what, REJECT_WITHIN, || async {
        let now = metric_value_with(metrics, "gristmill_rejected_frames_total", &[&label]).await;
        if now >= at_least {
            Ok(now)
        } else {
            Err(format!("{label} is {now}"))
        }
    })
    .await;
    count
}

/// Checks that the node closed every idle connection to `port`, each no earlier than
/// `deadline` after its connect, given the close times from [`wait_closed`].
fn assert_closed_after_deadline(port: &str, closed: &[Option<Duration>], deadline: Duration) {
    let still_open = closed.iter().filter(|elapsed| elapsed.is_none()).count();
    assert_eq!(
        still_open, 0,
        "idle {port} connections still open after {REJECT_WITHIN:?}"
    );
    let earliest = closed
        .iter()
        .flatten()
        .min()
        .copied()
        .expect("at least one connection");
    let latest = closed
        .iter()
        .flatten()
        .max()
        .copied()
        .expect("at least one connection");
    eprintln!(
        "measured: {} idle {port} connections closed {earliest:?} to {latest:?} after connect, deadline {deadline:?}",
        closed.len()
    );
    assert!(
        earliest >= deadline,
        "a {port} connection was closed {earliest:?} after connect, before the {deadline:?} deadline"
    );
}

/// Starts `node-1` with `args`, joined through `first`, and sends `counter.add` of `amount`
/// to a counter on node-1 through node-0. Returns the cluster and the counter's new value.
async fn join_peer_and_call(
    first: NodeProcess,
    args: &[&str],
    amount: i64,
) -> (Cluster, serde_json::Value) {
    let second = NodeProcess::start("node-1", &[first.ready.gossip_addr], Timing::FAST, args).await;
    let cluster = Cluster {
        nodes: vec![first, second],
    };
    cluster.wait_converged().await;
    let mut clients = cluster.clients().await;
    let key = counters_on(&mut clients, "node-1", 20).await[0].clone();
    let (value, served_by) = clients[0]
        .invoke("counter", &key, "add", json!({ "amount": amount }), 5_000)
        .await
        .expect("a call through node-0 to node-1");
    assert_eq!(served_by, "node-1", "the counter lives on node-1");
    (cluster, value)
}

/// Handshake deadline of the nodes in the idle-connection test, in milliseconds.
const HANDSHAKE_TIMEOUT_MS: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_closed_at_handshake_deadline() {
    // Goal: connections that never authenticate cannot pile up on the cluster port. Method:
    // a node with a 1 s handshake deadline gets idle connections. Each must be closed by the
    // node, not before the deadline and within REJECT_WITHIN, and be counted with reason
    // handshake_timeout. A peer that joins afterwards, with the same deadline, must connect
    // and serve a call forwarded through the node.
    const IDLE: usize = 20;
    let _slot = cluster_slot().await;
    let deadline = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
    let deadline_arg = HANDSHAKE_TIMEOUT_MS.to_string();
    let args = ["--handshake-timeout-ms", deadline_arg.as_str()];
    let first = NodeProcess::start("node-0", &[], Timing::FAST, &args).await;
    let metrics = first.ready.metrics_addr.expect("metrics endpoint is on");
    let timeouts_before = wait_rejected(metrics, "handshake_timeout", 0.0).await;

    let streams = open_idle(first.ready.cluster_addr, IDLE).await;
    let closed = wait_closed(streams, REJECT_WITHIN).await;

    assert_closed_after_deadline("cluster", &closed, deadline);
    let timeouts = wait_rejected(metrics, "handshake_timeout", timeouts_before + IDLE as f64).await;

    let (_cluster, value) = join_peer_and_call(first, &args, 5).await;
    assert!(
        value.as_i64().is_some_and(|v| v >= 5),
        "counter value {value}"
    );
    let timeouts_after = metric_value_with(
        metrics,
        "gristmill_rejected_frames_total",
        &["reason=\"handshake_timeout\""],
    )
    .await;
    assert_eq!(
        timeouts_after, timeouts,
        "the peer's sessions must authenticate before the deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_pending_limit_closed_at_once() {
    // Goal: a flood cannot grow the number of connections waiting to authenticate without
    // bound. Method: a node allows 4 waiting connections and has a 60 s deadline. 4 idle
    // connections fill the table; 4 more must be closed at once and counted with reason
    // pending_limit, while the first 4 stay open. Once the first 4 close, a peer joins and
    // serves a call.
    const LIMIT: usize = 4;
    let _slot = cluster_slot().await;
    let limit_arg = LIMIT.to_string();
    let args = [
        "--max-pending-handshakes",
        limit_arg.as_str(),
        "--handshake-timeout-ms",
        "60000",
    ];
    let first = NodeProcess::start("node-0", &[], Timing::FAST, &args).await;
    let metrics = first.ready.metrics_addr.expect("metrics endpoint is on");
    let addr = first.ready.cluster_addr;

    let waiting = open_idle(addr, LIMIT).await;
    let over = open_idle(addr, LIMIT).await;
    let closed = wait_closed(over, REJECT_WITHIN).await;

    let still_open = closed.iter().filter(|elapsed| elapsed.is_none()).count();
    assert_eq!(
        still_open, 0,
        "connections over the limit still open after {REJECT_WITHIN:?}"
    );
    let latest = closed
        .into_iter()
        .flatten()
        .max()
        .expect("LIMIT is positive");
    eprintln!("measured: {LIMIT} connections over the limit closed within {latest:?} of connect");
    wait_rejected(metrics, "pending_limit", LIMIT as f64).await;
    for (_, stream) in &waiting {
        let mut buffer = [0; 8];
        match stream.try_read(&mut buffer) {
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("a connection within the limit was closed or sent data: {other:?}"),
        }
    }

    drop(waiting);
    join_peer_and_call(first, &args, 1).await;
}

/// First-byte deadline of the node in the gRPC and metrics idle-connection test, in
/// milliseconds.
const FIRST_BYTE_TIMEOUT_MS: u64 = 1_000;

/// Sends `GET /metrics` over the HTTP/1.1 connection `stream`, reads the whole response and
/// returns its status line, leaving the connection open for the next request.
async fn scrape_keep_alive(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: gristmill\r\n\r\n")
        .await
        .expect("send the scrape request");
    let mut response = Vec::new();
    let mut buffer = [0; 4096];
    let header_end = loop {
        if let Some(end) = response.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
        let read = stream.read(&mut buffer).await.expect("read the response");
        assert!(read > 0, "the node closed the connection before responding");
        response.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&response[..header_end]).into_owned();
    let content_length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            if name.eq_ignore_ascii_case("content-length") {
                value.trim().parse().ok()
            } else {
                None
            }
        })
        .unwrap_or_else(|| panic!("no content-length in the response head: {head}"));
    while response.len() < header_end + content_length {
        let read = stream.read(&mut buffer).await.expect("read the body");
        assert!(read > 0, "the node closed the connection in the body");
        response.extend_from_slice(&buffer[..read]);
    }
    head.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http_connections_closed_at_first_byte_deadline() {
    // Goal: connections to the gRPC and metrics ports that send nothing cannot pile up, and
    // clients that sent a request keep their connections. Method: a node with a 1 s
    // first-byte deadline. A gRPC client and an HTTP/1.1 keep-alive scrape each make one
    // request, and then idle connections are opened to both ports. Each idle connection must
    // be closed by the node, not before the deadline and within REJECT_WITHIN. The client
    // connections are then older than the deadline, and each must serve another request on
    // the same connection.
    const IDLE: usize = 10;
    let _slot = cluster_slot().await;
    let deadline = Duration::from_millis(FIRST_BYTE_TIMEOUT_MS);
    let deadline_arg = FIRST_BYTE_TIMEOUT_MS.to_string();
    let node = NodeProcess::start(
        "node-0",
        &[],
        Timing::FAST,
        &["--first-byte-timeout-ms", deadline_arg.as_str()],
    )
    .await;
    let grpc = node.ready.grpc_addr;
    let metrics = node.ready.metrics_addr.expect("metrics endpoint is on");

    let grpc_connects = Arc::new(AtomicUsize::new(0));
    let connector = {
        let grpc_connects = Arc::clone(&grpc_connects);
        tower::service_fn(move |_: Uri| {
            grpc_connects.fetch_add(1, Ordering::SeqCst);
            async move { TcpStream::connect(grpc).await.map(TokioIo::new) }
        })
    };
    let channel = Endpoint::from_shared(format!("http://{grpc}"))
        .expect("valid endpoint")
        .connect_with_connector(connector)
        .await
        .expect("connect to the gRPC port");
    let mut cluster_client = ClusterClient::new(channel);
    cluster_client
        .list_members(pb::ListMembersRequest {})
        .await
        .expect("ListMembers before the idle connections");
    let mut scrape = TcpStream::connect(metrics)
        .await
        .expect("connect to the metrics port");
    assert_eq!(scrape_keep_alive(&mut scrape).await, "HTTP/1.1 200 OK");

    let mut idle = open_idle(grpc, IDLE).await;
    idle.extend(open_idle(metrics, IDLE).await);
    let closed = wait_closed(idle, REJECT_WITHIN).await;

    let (grpc_closed, metrics_closed) = closed.split_at(IDLE);
    assert_closed_after_deadline("gRPC", grpc_closed, deadline);
    assert_closed_after_deadline("metrics", metrics_closed, deadline);

    cluster_client
        .list_members(pb::ListMembersRequest {})
        .await
        .expect("ListMembers after the deadline");
    assert_eq!(
        grpc_connects.load(Ordering::SeqCst),
        1,
        "the gRPC client had to reconnect, so its connection was closed"
    );
    assert_eq!(
        scrape_keep_alive(&mut scrape).await,
        "HTTP/1.1 200 OK",
        "second scrape on the keep-alive connection"
    );
}
