//! Node child processes of `gristmill local`: start, read the ready line, stop, never orphan.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
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

/// One running node process and the addresses from its ready line.
pub struct ChildNode {
    /// Addresses and boot id the node reported.
    pub ready: ReadyLine,
    child: Child,
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
        Ok(ChildNode { ready, child })
    }

    /// Sends SIGTERM, which makes the node drain and leave the cluster.
    pub fn terminate(&self) {
        if let Some(pid) = self.child.id().and_then(|pid| i32::try_from(pid).ok()) {
            // An error means the process has already exited, which is what we want.
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }

    /// Waits up to `grace` for the node to exit, then kills it; returns its exit status.
    pub async fn wait_or_kill(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!(node = %self.ready.node, ?grace, "node did not exit in time, killing it");
                self.child.kill().await?;
                self.child.wait().await
            }
        }
    }
}

/// Stops every node: SIGTERM to all at once, then waits up to `grace` for each and kills the
/// ones still running.
pub async fn shut_down(nodes: &mut [ChildNode], grace: Duration) {
    for node in nodes.iter() {
        node.terminate();
    }
    let waits = nodes.iter_mut().map(|node| async move {
        let status = node.wait_or_kill(grace).await;
        (node.ready.node.clone(), status)
    });
    for (name, status) in futures::future::join_all(waits).await {
        match status {
            Ok(status) if status.success() => tracing::debug!(node = %name, "node exited"),
            Ok(status) => tracing::warn!(node = %name, %status, "node exited with an error"),
            Err(error) => tracing::warn!(node = %name, %error, "cannot wait for node"),
        }
    }
}
