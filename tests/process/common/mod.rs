//! Helpers for tests that run `gristmill run` node processes on loopback with OS-chosen ports.
//!
//! Each test binary includes this module, so not every helper is used by every binary.
#![allow(dead_code)]

pub mod audit;
pub mod netns;
pub mod workload;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gristmill::api::pb;
use gristmill::api::pb::cluster_client::ClusterClient;
use gristmill::api::pb::grains_client::GrainsClient;
use gristmill::api::pb::scaling_client::ScalingClient;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;
use tonic::transport::Channel;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_gristmill");
/// Cookie shared by the nodes of a test cluster.
pub const COOKIE: &str = "process-test-cookie-0123456789abcdef";
/// Time a node process has to print its ready line.
pub const START_WITHIN: Duration = Duration::from_secs(30);
/// Time a fresh cluster has to list all its nodes as ACTIVE everywhere.
pub const CONVERGE_WITHIN: Duration = Duration::from_secs(30);
/// Interval between two polls of a wait-until condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// At most two multi-node tests run at once, because the test machine has two cores and each
/// node process runs its own failure detector on tight timers.
static CLUSTER_SLOTS: Semaphore = Semaphore::const_new(2);

/// Waits for one of the multi-node test slots; hold the permit for the whole test.
pub async fn cluster_slot() -> SemaphorePermit<'static> {
    CLUSTER_SLOTS
        .acquire()
        .await
        .expect("the slot semaphore is never closed")
}

/// Failure-detector timing of a test node, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Time between two probes.
    pub probe_period_ms: u64,
    /// Time a probed node has to acknowledge.
    pub probe_rtt_ms: u64,
    /// Time a suspected node has to refute before it is declared down.
    pub suspect_to_down_ms: u64,
}

impl Timing {
    /// Fast detection for tests: a dead node is declared down within about a second.
    pub const FAST: Timing = Timing {
        probe_period_ms: 200,
        probe_rtt_ms: 80,
        suspect_to_down_ms: 600,
    };

    /// Detection for tests that load both cores: a node paused by the scheduler for a few
    /// hundred milliseconds is not declared down.
    pub const LOADED: Timing = Timing {
        probe_period_ms: 500,
        probe_rtt_ms: 200,
        suspect_to_down_ms: 3_000,
    };

    /// The node's own defaults.
    pub const DEFAULT: Timing = Timing {
        probe_period_ms: 750,
        probe_rtt_ms: 250,
        suspect_to_down_ms: 2_500,
    };

    fn args(self) -> Vec<String> {
        vec![
            "--probe-period-ms".into(),
            self.probe_period_ms.to_string(),
            "--probe-rtt-ms".into(),
            self.probe_rtt_ms.to_string(),
            "--suspect-to-down-ms".into(),
            self.suspect_to_down_ms.to_string(),
        ]
    }
}

/// The JSON line `gristmill run` prints once it serves.
#[derive(Clone, Debug, Deserialize)]
pub struct Ready {
    /// Always `ready`.
    pub event: String,
    /// Node name.
    pub node: String,
    /// Id of the process start.
    pub boot_id: u64,
    /// UDP gossip address.
    pub gossip_addr: SocketAddr,
    /// TCP cluster transport address.
    pub cluster_addr: SocketAddr,
    /// TCP gRPC address.
    pub grpc_addr: SocketAddr,
    /// TCP address of /metrics, or `None` when it is off.
    pub metrics_addr: Option<SocketAddr>,
}

/// The network namespace and address a node process runs with.
#[derive(Clone, Debug)]
pub struct NodeHost {
    /// Network namespace the node runs in, through `ip netns exec`; `None` for the test's own.
    pub netns: Option<String>,
    /// Address every socket of the node binds to.
    pub bind_ip: IpAddr,
    /// Network namespace from which the test's clients connect to the node; `None` for the
    /// test's own.
    pub client_netns: Option<String>,
}

impl NodeHost {
    /// Returns the host of a node on 127.0.0.1 in the test's own namespace.
    pub fn loopback() -> NodeHost {
        NodeHost {
            netns: None,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_netns: None,
        }
    }
}

/// The warnings of a node that declares a peer down, and of a node that learns it was
/// declared down. The minority warning mentions members "declared down" too, but it declares
/// nobody down, so it is not among them.
pub const DOWN_WARNINGS: [&str; 3] = [
    "member declared down by the failure detector",
    "this node was declared down",
    "declared down; the runtime stops this node",
];

/// One running `gristmill run` process; killed with SIGKILL when dropped.
pub struct NodeProcess {
    /// The node's ready line.
    pub ready: Ready,
    /// File that receives the node's stderr (its logs).
    pub log_path: PathBuf,
    /// Where the node runs.
    pub host: NodeHost,
    child: Child,
    /// The process group the node leads; the nodes its local orchestrator starts join it.
    group: Option<Pid>,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // Stops the nodes this node started, which outlive it by design. The group is gone
        // (ESRCH) when none of them runs.
        if let Some(group) = self.group {
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Returns a fresh path for a node's log file under the target directory.
fn log_path(name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("process-logs");
    std::fs::create_dir_all(&dir).expect("create the log directory");
    let serial = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{name}-{}-{serial}.log", std::process::id()))
}

/// SQLite files of the clusters started by this test process, by their first node's gossip
/// address.
static BY_FIRST_SEED_TABLE: std::sync::Mutex<BTreeMap<SocketAddr, PathBuf>> =
    std::sync::Mutex::new(BTreeMap::new());

/// Returns the SQLite file for a node joining through `seeds`: a new file for a node that
/// starts a cluster, and the file of the cluster whose first node is `seeds[0]` otherwise, so
/// the nodes of one cluster share their grain state and clusters of parallel tests do not.
fn sqlite_path_for(seeds: &[SocketAddr]) -> PathBuf {
    let known = seeds.first().and_then(|seed| {
        let files = BY_FIRST_SEED_TABLE.lock().expect("sqlite path table lock");
        files.get(seed).cloned()
    });
    known.unwrap_or_else(|| log_path("state").with_extension("sqlite3"))
}

/// Log filter of the node processes: `GRISTMILL_NODE_LOG` when it is set, to debug a failing
/// test (for example `info,gristmill::membership=debug,foca=debug`), otherwise `info`.
fn node_log_filter() -> String {
    std::env::var("GRISTMILL_NODE_LOG").unwrap_or_else(|_| "info".to_owned())
}

impl NodeProcess {
    /// Starts a node named `name` with `timing`, joining through `seeds`, plus `extra_args`;
    /// panics with the log path unless it prints a ready line within [`START_WITHIN`].
    ///
    /// Unless `extra_args` names `--sqlite-path`, the node stores grain state in the file of
    /// its cluster (see [`sqlite_path_for`]).
    pub async fn start(
        name: &str,
        seeds: &[SocketAddr],
        timing: Timing,
        extra_args: &[&str],
    ) -> NodeProcess {
        Self::start_with_env(name, seeds, timing, extra_args, &[]).await
    }

    /// Like [`NodeProcess::start`], with `env` added to the node's environment.
    pub async fn start_with_env(
        name: &str,
        seeds: &[SocketAddr],
        timing: Timing,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> NodeProcess {
        let host = NodeHost::loopback();
        Self::start_on(&host, name, seeds, timing, extra_args, env).await
    }

    /// Like [`NodeProcess::start_with_env`], in the namespace and on the address of `host`.
    pub async fn start_on(
        host: &NodeHost,
        name: &str,
        seeds: &[SocketAddr],
        timing: Timing,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> NodeProcess {
        let log_path = log_path(name);
        let log = std::fs::File::create(&log_path).expect("create the node log file");
        let mut command = match &host.netns {
            Some(netns) => {
                // `ip netns exec` replaces itself with the node, so the child is the node.
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, BIN]);
                command
            }
            None => Command::new(BIN),
        };
        command
            .arg("run")
            .args(["--node-name", name])
            .arg("--bind-ip")
            .arg(host.bind_ip.to_string())
            .args([
                "--gossip-port",
                "0",
                "--cluster-port",
                "0",
                "--grpc-port",
                "0",
            ])
            .args(["--metrics-port", "0", "--log", &node_log_filter()])
            .args(timing.args())
            .args(extra_args)
            .env("GRISTMILL_COOKIE", COOKIE)
            // Nodes that this node's local orchestrator starts inherit the session and end
            // with the test process at the latest.
            .env("GRISTMILL_SESSION_PID", std::process::id().to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            // Its own process group, which the nodes it starts join, so dropping the handle
            // stops them too (see `Drop`).
            .process_group(0)
            .kill_on_drop(true);
        for seed in seeds {
            command.args(["--seed", &seed.to_string()]);
        }
        let sqlite_path = sqlite_path_for(seeds);
        if !extra_args.contains(&"--sqlite-path") {
            command.arg("--sqlite-path").arg(&sqlite_path);
        }
        let mut child = command.spawn().expect("spawn the gristmill binary");
        eprintln!("started {name}, log in {}", log_path.display());

        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let line = match tokio::time::timeout(START_WITHIN, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            outcome => panic!(
                "{name} printed no ready line ({outcome:?}); log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            ),
        };
        let ready: Ready = serde_json::from_str(&line).unwrap_or_else(|error| {
            panic!("{name} printed an invalid ready line {line:?}: {error}")
        });
        assert_eq!(ready.event, "ready", "first stdout line of {name}");
        assert_eq!(ready.node, name, "name in the ready line");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        if seeds.is_empty() {
            let mut files = BY_FIRST_SEED_TABLE.lock().expect("sqlite path table lock");
            files.insert(ready.gossip_addr, sqlite_path);
        }
        let group = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map(Pid::from_raw);
        NodeProcess {
            ready,
            log_path,
            host: host.clone(),
            child,
            group,
        }
    }

    /// Returns the process id of the running node.
    pub fn pid(&self) -> Pid {
        let pid = self.child.id().expect("node is still running");
        Pid::from_raw(i32::try_from(pid).expect("process ids fit in i32"))
    }

    /// Kills the process with SIGKILL and waits until it is gone.
    pub async fn kill9(&mut self) {
        self.child.start_kill().expect("send SIGKILL");
        self.child.wait().await.expect("wait for the killed node");
    }

    /// Sends SIGTERM, which makes the node drain and leave.
    pub fn terminate(&self) {
        self.signal(Signal::SIGTERM);
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) {
        let pid = self.pid();
        kill(pid, signal).unwrap_or_else(|error| panic!("send {signal} to {pid}: {error}"));
    }

    /// Waits until the kernel reports the process as stopped (state `T` in
    /// `/proc/<pid>/stat`), which happens some time after `kill(SIGSTOP)` returns; panics
    /// after 10 s.
    pub async fn wait_stopped(&self) {
        let pid = self.pid();
        let stat_path = format!("/proc/{pid}/stat");
        let what = format!("{} (pid {pid}) is stopped", self.ready.node);
        wait_until(&what, Duration::from_secs(10), || async {
            let stat = std::fs::read_to_string(&stat_path).map_err(|error| error.to_string())?;
            // The state follows the command name, which is in parentheses and may contain spaces.
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            match state {
                Some('T') => Ok(()),
                other => Err(format!("state {other:?}")),
            }
        })
        .await;
    }

    /// Returns the exit status if the process has exited, without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll the node process")
    }

    /// Waits for the process to exit; panics if it is still running after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.expect("wait for the node"),
            Err(_) => panic!("{} did not exit within {within:?}", self.ready.node),
        }
    }

    /// Waits up to `within` for the process to exit and returns its status, or `None` when it
    /// is still running then.
    pub async fn exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => Some(status.expect("wait for the node")),
            Err(_) => None,
        }
    }

    /// Returns the node's warnings that declare a peer down or that report this node declared
    /// down, in the order of [`DOWN_WARNINGS`].
    pub fn down_warnings(&self) -> Vec<String> {
        DOWN_WARNINGS
            .iter()
            .flat_map(|message| self.log_lines("WARN", &[message]))
            .collect()
    }

    /// Returns the lines of the node's log at `level` (`INFO`, `WARN`, ...) that contain
    /// every string of `needles`.
    pub fn log_lines(&self, level: &str, needles: &[&str]) -> Vec<String> {
        let log = std::fs::read_to_string(&self.log_path).expect("read the node log");
        let level = format!(" {level} ");
        log.lines()
            .filter(|line| line.contains(&level))
            .filter(|line| needles.iter().all(|needle| line.contains(needle)))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the node's log has a line at `level` that contains every string of
    /// `needles`; panics after `within`.
    pub async fn wait_log_line(&self, level: &str, needles: &[&str], within: Duration) {
        let what = format!("{} logs {level} {needles:?}", self.ready.node);
        wait_until(&what, within, || async {
            if self.log_lines(level, needles).is_empty() {
                Err(format!("no such line in {}", self.log_path.display()))
            } else {
                Ok(())
            }
        })
        .await;
    }

    /// Connects gRPC clients to the node.
    pub async fn client(&self) -> NodeClient {
        NodeClient::connect_from(self.host.client_netns.as_deref(), self.ready.grpc_addr).await
    }
}

/// gRPC clients of one node.
#[derive(Clone)]
pub struct NodeClient {
    /// The `Cluster` service.
    pub cluster: ClusterClient<Channel>,
    /// The `Grains` service.
    pub grains: GrainsClient<Channel>,
}

impl NodeClient {
    /// Connects to the gRPC API at `addr`.
    pub async fn connect(addr: SocketAddr) -> NodeClient {
        Self::connect_from(None, addr).await
    }

    /// Connects to the gRPC API at `addr` from inside network namespace `netns`, or from the
    /// test's own namespace when it is `None`.
    pub async fn connect_from(netns: Option<&str>, addr: SocketAddr) -> NodeClient {
        Self::try_connect_from(netns, addr)
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Like [`NodeClient::connect_from`], but returns a failed connection as an error message.
    pub async fn try_connect_from(
        netns: Option<&str>,
        addr: SocketAddr,
    ) -> Result<NodeClient, String> {
        let connected = match netns {
            Some(netns) => netns::channel_in(netns, addr).await,
            None => {
                tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .expect("valid endpoint")
                    .connect_timeout(Duration::from_secs(5))
                    .connect()
                    .await
            }
        };
        let channel = connected.map_err(|error| format!("connect to gRPC at {addr}: {error}"))?;
        Ok(NodeClient {
            cluster: ClusterClient::new(channel.clone()),
            grains: GrainsClient::new(channel),
        })
    }

    /// Lists the members in the node's view, or describes why the call failed.
    pub async fn members(&mut self) -> Result<Vec<pb::Member>, String> {
        let response = self.cluster.list_members(pb::ListMembersRequest {}).await;
        match response {
            Ok(response) => Ok(response.into_inner().members),
            Err(status) => Err(format!("ListMembers failed: {status}")),
        }
    }

    /// Lists the node's activations of `grain_type`.
    pub async fn activations(&mut self, grain_type: &str) -> Vec<pb::Activation> {
        let request = pb::ListActivationsRequest {
            grain_type: grain_type.into(),
            limit: 0,
        };
        let response = self.grains.list_activations(request).await;
        response.expect("ListActivations").into_inner().activations
    }

    /// Calls a grain method with a JSON payload and returns the JSON reply and the name of
    /// the serving node. A `timeout_ms` of 0 takes the node's default deadline.
    pub async fn invoke(
        &mut self,
        grain_type: &str,
        key: &str,
        method: &str,
        payload: Value,
        timeout_ms: u32,
    ) -> Result<(Value, String), tonic::Status> {
        let request = pb::InvokeRequest {
            grain_type: grain_type.into(),
            key: key.into(),
            method: method.into(),
            payload: serde_json::to_vec(&payload).expect("encode JSON"),
            format: pb::PayloadFormat::Json as i32,
            timeout_ms,
        };
        let response = self.grains.invoke(request).await?.into_inner();
        let reply = serde_json::from_slice(&response.payload).unwrap_or_else(|error| {
            panic!("reply of {grain_type}/{key}.{method} is not JSON: {error}")
        });
        Ok((reply, response.served_by))
    }
}

/// Nodes started together: node 0 first, the others seeded with node 0's gossip address.
pub struct Cluster {
    /// The node processes, in start order.
    pub nodes: Vec<NodeProcess>,
}

impl Cluster {
    /// Starts `count` nodes named `node-0` and up, and waits until every node lists all of
    /// them as ACTIVE.
    pub async fn start(count: usize, timing: Timing) -> Cluster {
        Self::start_with(count, timing, &[]).await
    }

    /// Like [`Cluster::start`], with `extra_args` passed to every node.
    pub async fn start_with(count: usize, timing: Timing, extra_args: &[&str]) -> Cluster {
        let first = NodeProcess::start("node-0", &[], timing, extra_args).await;
        let seed = [first.ready.gossip_addr];
        let mut nodes = vec![first];
        for index in 1..count {
            let name = format!("node-{index}");
            nodes.push(NodeProcess::start(&name, &seed, timing, extra_args).await);
        }
        let cluster = Cluster { nodes };
        cluster.wait_converged().await;
        cluster
    }

    /// Waits until every node's view is exactly the cluster's nodes, each ACTIVE with the
    /// boot id of its ready line.
    pub async fn wait_converged(&self) {
        let clients = self.clients().await;
        wait_until(
            "every node lists all nodes as ACTIVE",
            CONVERGE_WITHIN,
            || self.check_converged(&clients),
        )
        .await;
    }

    /// Returns `Ok` when every view, read through `clients`, is exactly the cluster's nodes,
    /// each ACTIVE with the boot id of its ready line, and otherwise the first view that
    /// differs.
    pub async fn check_converged(&self, clients: &[NodeClient]) -> Result<(), String> {
        let expected: BTreeMap<String, u64> = self
            .nodes
            .iter()
            .map(|node| (node.ready.node.clone(), node.ready.boot_id))
            .collect();
        for client in clients {
            let members = client.clone().members().await?;
            let active: BTreeMap<String, u64> = members
                .iter()
                .filter(|member| member.state == pb::NodeState::Active as i32)
                .map(|member| (member.name.clone(), member.boot_id))
                .collect();
            if members.len() != expected.len() || active != expected {
                return Err(format!("view: {}", describe(&members)));
            }
        }
        Ok(())
    }

    /// Connects to every node, in start order.
    pub async fn clients(&self) -> Vec<NodeClient> {
        let mut clients = Vec::new();
        for node in &self.nodes {
            clients.push(node.client().await);
        }
        clients
    }
}

/// Polls `probe` until it returns `Ok`, and returns that value with the time it took.
///
/// `Err` describes the state seen instead; when `within` passes first, the panic message names
/// `what` and the last state seen.
pub async fn wait_until<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    let deadline = started + within;
    loop {
        let seen = match probe().await {
            Ok(value) => return (value, started.elapsed()),
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting until {what}; last seen: {seen}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Writes `text` to a new temporary file, for a node's `--config`; the file is deleted when
/// the returned handle is dropped.
pub fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut file, text.as_bytes()).expect("write config");
    file
}

/// Connects to the `Scaling` service at `addr`.
pub async fn scaling_client(addr: SocketAddr) -> ScalingClient<Channel> {
    ScalingClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to the Scaling service")
}

/// Waits until the supervisor that `scaling` reaches acts on `node`, and returns its status.
pub async fn wait_supervisor(
    scaling: &ScalingClient<Channel>,
    node: &str,
) -> pb::GetScalingStatusResponse {
    let what = format!("{node} acts as supervisor");
    let (status, _) = wait_until(&what, Duration::from_secs(30), || {
        let mut scaling = scaling.clone();
        async move {
            let status = scaling
                .get_status(pb::GetScalingStatusRequest {})
                .await
                .map_err(|status| status.to_string())?
                .into_inner();
            if status.supervisor == node {
                Ok(status)
            } else {
                Err(format!("supervisor is {:?}", status.supervisor))
            }
        }
    })
    .await;
    status
}

/// Describes members as `name#boot_id:STATE` items, for failure messages.
pub fn describe(members: &[pb::Member]) -> String {
    let items: Vec<String> = members
        .iter()
        .map(|member| {
            let state = pb::NodeState::try_from(member.state).map_or_else(
                |_| member.state.to_string(),
                |state| state.as_str_name().to_owned(),
            );
            format!("{}#{:x}:{state}", member.name, member.boot_id)
        })
        .collect();
    items.join(" ")
}

/// Returns whether `members` no longer lists `name` as alive: absent, or DEAD.
pub fn is_gone(members: &[pb::Member], name: &str) -> bool {
    members
        .iter()
        .filter(|member| member.name == name)
        .all(|member| member.state == pb::NodeState::Dead as i32)
}

/// Waits until every client's view no longer lists `name` as alive, and returns the time it
/// took; panics after `within`.
pub async fn wait_gone(clients: &[NodeClient], name: &str, within: Duration) -> Duration {
    let what = format!("every survivor sees {name} DEAD or gone");
    let ((), took) = wait_until(&what, within, || {
        let mut clients = clients.to_vec();
        async move {
            for client in &mut clients {
                let members = client.members().await?;
                if !is_gone(&members, name) {
                    return Err(format!("view: {}", describe(&members)));
                }
            }
            Ok(())
        }
    })
    .await;
    took
}

/// Calls `add` on counters `c-0` to `c-{count - 1}` through the nodes in turn, and returns
/// the keys each node serves, by node name.
pub async fn spread_counters(
    clients: &mut [NodeClient],
    count: usize,
) -> BTreeMap<String, Vec<String>> {
    let mut served: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for index in 0..count {
        let key = format!("c-{index}");
        let gateway = &mut clients[index % clients.len()];
        let (_, served_by) = gateway
            .invoke(
                "counter",
                &key,
                "add",
                serde_json::json!({ "amount": 1 }),
                0,
            )
            .await
            .unwrap_or_else(|status| panic!("counter {key}: {status}"));
        served.entry(served_by).or_default().push(key);
    }
    served
}

/// Spreads `count` counters over the nodes and returns the keys that `node` serves; panics
/// when it serves none.
pub async fn counters_on(clients: &mut [NodeClient], node: &str, count: usize) -> Vec<String> {
    let served = spread_counters(clients, count).await;
    let keys = served.get(node).cloned().unwrap_or_default();
    assert!(!keys.is_empty(), "no counter landed on {node}: {served:?}");
    keys
}

/// Scrapes `/metrics` at `addr` and returns the sum of all samples of the metric `name`, or
/// 0 when it has none.
pub async fn metric_value(addr: SocketAddr, name: &str) -> f64 {
    metric_value_with(addr, name, &[]).await
}

/// Scrapes `/metrics` at `addr` and returns the sum of the samples of `name` whose labels
/// contain every entry of `labels` (such as `state="open"`), or 0 when none match.
pub async fn metric_value_with(addr: SocketAddr, name: &str, labels: &[&str]) -> f64 {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|error| panic!("connect to /metrics at {addr}: {error}"));
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the scrape request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read the scrape response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed HTTP response from {addr}: {response:?}"));
    assert!(head.contains(" 200 "), "scrape of {addr} failed: {head}");

    body.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until each grain of `grain_type` named in `keys` has exactly one activation over all
/// `clients`, and returns the time it took; panics after `within`.
pub async fn wait_one_activation_each(
    clients: &[NodeClient],
    grain_type: &str,
    keys: &[String],
    within: Duration,
) -> Duration {
    let ((), took) = wait_until("every grain has exactly one activation", within, || {
        let clients = clients.to_vec();
        async move {
            let mut hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for mut client in clients {
                let request = pb::ListActivationsRequest {
                    grain_type: grain_type.into(),
                    limit: 0,
                };
                let listed = client
                    .grains
                    .list_activations(request)
                    .await
                    .map_err(|status| format!("ListActivations: {status}"))?;
                for activation in listed.into_inner().activations {
                    hosts
                        .entry(activation.key)
                        .or_default()
                        .push(activation.node);
                }
            }
            let wrong: Vec<String> = keys
                .iter()
                .filter(|key| hosts.get(*key).map_or(0, Vec::len) != 1)
                .map(|key| format!("{key} on {:?}", hosts.get(key)))
                .collect();
            if wrong.is_empty() {
                Ok(())
            } else {
                let first = &wrong[..wrong.len().min(5)];
                Err(format!("{} grains: {first:?}", wrong.len()))
            }
        }
    })
    .await;
    took
}

/// Returns the `q` quantile (0 to 1) of `samples`, sorting them, or zero when there are none.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let index = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[index]
}

/// Returns the `activations` field of each "deactivated all activations" line in a node log:
/// the activations the node still held when it left the cluster.
pub fn activations_deactivated_at_stop(log: &str) -> Vec<u64> {
    log.lines()
        .map(strip_ansi)
        .filter(|line| line.contains("deactivated all activations"))
        .map(|line| {
            let value = line
                .split_whitespace()
                .find_map(|field| field.strip_prefix("activations="))
                .unwrap_or_else(|| panic!("no activations field in {line:?}"));
            value
                .parse()
                .unwrap_or_else(|error| panic!("activations={value} in {line:?}: {error}"))
        })
        .collect()
}

/// Removes the terminal colour sequences (`ESC [ ... m`) that the node's log writer adds.
pub fn strip_ansi(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Lists the recorded decisions, or describes why the call failed.
pub async fn try_decisions(
    client: &mut ScalingClient<Channel>,
) -> Result<Vec<pb::ScalingDecision>, String> {
    let request = pb::ListDecisionsRequest {
        limit: 1_000,
        before_id: 0,
    };
    match client.list_decisions(request).await {
        Ok(response) => Ok(response.into_inner().decisions),
        Err(status) => Err(format!("ListDecisions failed: {status}")),
    }
}
