//! Node child processes of `gristmill local`: start, read the ready line, stop, never orphan.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::ready::ReadyLine;

/// A failure to start a node child process; the processes started so far keep running until
/// the cluster is shut down or dropped.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The executable could not be started.
    #[error("cannot start node {name}: {source}")]
    Spawn {
        /// Node name.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The node exited or closed stdout before printing its ready line; its stderr shows the cause.
    #[error("node {name} exited before it was ready")]
    ExitedEarly {
        /// Node name.
        name: String,
    },
    /// The node printed something other than a ready line.
    #[error("node {name} printed an invalid ready line {line:?}: {source}")]
    BadReadyLine {
        /// Node name.
        name: String,
        /// The line as printed.
        line: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The node printed no ready line within the start timeout.
    #[error("node {name} printed no ready line within {timeout:?}")]
    Timeout {
        /// Node name.
        name: String,
        /// The start timeout.
        timeout: Duration,
    },
}

/// Settings of one node child process.
pub struct NodeSpec<'a> {
    /// Node name, such as `node-2`.
    pub name: String,
    /// Shared cluster secret, passed in the environment so it stays off the command line.
    pub cookie: &'a str,
    /// Gossip address of the node to join through, or `None` to start the cluster.
    pub seed: Option<String>,
    /// Log filter of the node, in `EnvFilter` syntax.
    pub log: &'a str,
    /// Time the node has to print its ready line.
    pub start_timeout: Duration,
    /// TOML config file with the settings every node shares, if any.
    pub config: Option<&'a Path>,
}

/// One node process and the addresses from its ready line.
pub struct ChildNode {
    /// Addresses and boot id the node reported.
    pub ready: ReadyLine,
    child: Child,
    /// Whether the node's exit during the run was reported, so the shutdown skips it.
    exit_reported: bool,
}

impl ChildNode {
    /// Starts `gristmill run` from `exe` on loopback with OS-chosen ports and waits for its ready
    /// line. The child is killed when the returned value is dropped or this process exits.
    ///
    /// Call this from the main thread: on Linux the child is killed when the thread that
    /// spawned it exits.
    pub async fn start(exe: &Path, spec: NodeSpec<'_>) -> Result<ChildNode, SpawnError> {
        let mut command = Command::new(exe);
        command
            .arg("run")
            .args(["--node-name", &spec.name])
            .args(["--bind-ip", "127.0.0.1"])
            .args([
                "--gossip-port",
                "0",
                "--cluster-port",
                "0",
                "--grpc-port",
                "0",
            ])
            .args(["--metrics-port", "0"])
            .args(["--log", spec.log])
            .args(["--parent-pid", &std::process::id().to_string()]);
        if let Some(seed) = &spec.seed {
            command.args(["--seed", seed]);
        }
        if let Some(config) = spec.config {
            command.arg("--config").arg(config);
        }
        // Settings meant for this process must not leak into the nodes, such as a
        // GRISTMILL_SEEDS that would make node 0 join another cluster.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("GRISTMILL_") {
                command.env_remove(key);
            }
        }
        // The log filter and the session also go in the environment, which the nodes that the
        // local orchestrator starts inherit. So they log like the rest and end with this
        // process, even after the node that started them has left.
        command
            .env("GRISTMILL_COOKIE", spec.cookie)
            .env("GRISTMILL_LOG", spec.log)
            .env("GRISTMILL_SESSION_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // A separate process group keeps a terminal's Ctrl-C away from the nodes, so this
            // process alone decides how they stop.
            .process_group(0)
            .kill_on_drop(true);

        let mut child = command.spawn().map_err(|source| SpawnError::Spawn {
            name: spec.name.clone(),
            source,
        })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let first_line = tokio::time::timeout(spec.start_timeout, lines.next_line())
            .await
            .map_err(|_| SpawnError::Timeout {
                name: spec.name.clone(),
                timeout: spec.start_timeout,
            })?;
        let line = match first_line {
            Ok(Some(line)) => line,
            Ok(None) | Err(_) => return Err(SpawnError::ExitedEarly { name: spec.name }),
        };
        let ready = ReadyLine::parse(&line).map_err(|source| SpawnError::BadReadyLine {
            name: spec.name.clone(),
            line: line.clone(),
            source,
        })?;
        // Drain stdout until the node exits, so the node cannot block on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ChildNode {
            ready,
            child,
            exit_reported: false,
        })
    }

    /// Returns the id of the node's process group, which is also its process id, while the
    /// process has not been reaped.
    ///
    /// The group contains the node and the nodes that its local orchestrator started, which
    /// inherit it. Until the node is reaped its pid cannot be reused, so a signal to the group
    /// reaches these processes alone.
    fn process_group(&self) -> Option<Pid> {
        let pid = i32::try_from(self.child.id()?).ok()?;
        Some(Pid::from_raw(pid))
    }

    /// Sends SIGTERM, which makes the node drain and leave the cluster.
    pub fn terminate(&self) {
        if let Some(pid) = self.process_group() {
            // An error means the process has already exited, which is what we want.
            let _ = kill(pid, Signal::SIGTERM);
        }
    }

    /// Waits until `deadline` for the node to exit after [`ChildNode::terminate`], and kills
    /// its process group if it has not. Then it kills the nodes that it started as supervisor,
    /// which are still running, reaps the node and returns its exit status.
    ///
    /// Those nodes are killed, not drained, because the run is over and every grain's state
    /// is stored: drained together, the last nodes would move grains between each other.
    async fn stop(&mut self, deadline: tokio::time::Instant) -> std::io::Result<ExitStatus> {
        let Some(group) = self.process_group() else {
            return self.child.wait().await;
        };
        let exited = tokio::task::spawn_blocking(move || wait_unreaped(group));
        tokio::pin!(exited);
        if tokio::time::timeout_at(deadline, &mut exited)
            .await
            .is_err()
        {
            tracing::warn!(node = %self.ready.node, "node did not exit in time, killing it");
            let _ = killpg(group, Signal::SIGKILL);
            let _ = exited.await;
        }
        // The node has exited and is not reaped, so the group id still names its group.
        let _ = killpg(group, Signal::SIGKILL);
        self.child.wait().await
    }
}

/// Blocks until the process `pid`, a child of this process, has exited, and leaves it
/// unreaped (`WNOWAIT`), so that its pid is not reused.
fn wait_unreaped(pid: Pid) -> nix::Result<()> {
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Err(Errno::EINTR) => continue,
            outcome => return outcome.map(drop),
        }
    }
}

/// Waits until one of the nodes whose exit was not reported yet exits, and returns its name
/// and exit status. It waits forever when every node has exited, and it is cancel safe.
pub async fn next_exit(nodes: &mut [ChildNode]) -> (String, std::io::Result<ExitStatus>) {
    let waits: Vec<_> = nodes
        .iter_mut()
        .filter(|node| !node.exit_reported)
        .map(|node| {
            Box::pin(async move {
                let status = node.child.wait().await;
                node.exit_reported = true;
                (node.ready.node.clone(), status)
            })
        })
        .collect();
    if waits.is_empty() {
        return std::future::pending().await;
    }
    futures::future::select_all(waits).await.0
}

/// Interval between two checks that the killed nodes started by other nodes are gone.
const GROUP_POLL: Duration = Duration::from_millis(20);
/// Time the killed nodes started by other nodes have to be gone.
const GROUP_GONE_WITHIN: Duration = Duration::from_secs(2);

/// Stops every node: SIGTERM to all at once, then it waits up to `grace` for each and kills
/// the ones still running. The nodes that the supervisor started, which share the process
/// group of the node that started them, are killed once that node has exited.
///
/// NOTE: the nodes started by a node that exited during the run are not signalled, because
/// that node was reaped and its group id may be reused. They exit, without draining, within
/// half a second of this process's exit, because they watch its pid.
pub async fn shut_down(nodes: &mut [ChildNode], grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    let running: Vec<&mut ChildNode> = nodes
        .iter_mut()
        .filter(|node| !node.exit_reported)
        .collect();
    let groups: Vec<Pid> = running
        .iter()
        .filter_map(|node| node.process_group())
        .collect();
    for node in &running {
        node.terminate();
    }
    let stops = running.into_iter().map(|node| async move {
        let status = node.stop(deadline).await;
        (node.ready.node.clone(), status)
    });
    for (name, status) in futures::future::join_all(stops).await {
        match status {
            Ok(status) if status.success() => tracing::debug!(node = %name, "node exited"),
            Ok(status) => tracing::warn!(node = %name, %status, "node exited with an error"),
            Err(error) => tracing::warn!(node = %name, %error, "cannot wait for node"),
        }
    }
    wait_for_groups(&groups).await;
}

/// Waits until no process is left in `groups`, for at most [`GROUP_GONE_WITHIN`].
///
/// The group leaders are reaped, so this only checks with signal 0, which changes nothing in
/// a process even if a group id was reused.
async fn wait_for_groups(groups: &[Pid]) {
    let deadline = tokio::time::Instant::now() + GROUP_GONE_WITHIN;
    loop {
        let left = groups
            .iter()
            .filter(|group| killpg(**group, None) != Err(Errno::ESRCH))
            .count();
        if left == 0 {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                groups = left,
                within = ?GROUP_GONE_WITHIN,
                "killed nodes that the supervisor started are still running"
            );
            return;
        }
        tokio::time::sleep(GROUP_POLL).await;
    }
}
