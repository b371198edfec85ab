//! The local orchestrator: starts and stops `gristmill run` node processes on loopback.
//!
//! The acting supervisor's node starts each new node from its own executable with OS-chosen
//! ports, its own gossip address as the seed, and its own settings (storage, membership
//! timings, scaling policy) in a config file readable only by this user. The cluster cookie
//! goes in the environment, never on the command line.
//!
//! A started node belongs to the cluster, not to the node that started it: draining that node
//! removes it alone. The started node inherits this process's environment, so a
//! `GRISTMILL_SESSION_PID` set by `gristmill local` (or a test) makes it exit with that
//! session. Without one, the started nodes run until they are stopped, like nodes an operator
//! starts by hand.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::membership::NodeState;
use crate::runtime::Node;
use crate::scaling::node_calls;
use crate::scaling::orchestrator::{BoxFuture, Orchestrator, OrchestratorError};

/// Time a started node has to print its ready line and become Active in this node's view.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a drained node has to leave the membership before its removal counts as failed.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Interval between two looks at the membership view while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Starts `gristmill run` processes on 127.0.0.1; the processes it starts are its children.
pub struct LocalOrchestrator {
    node: Node,
    children: Arc<Mutex<HashMap<String, Child>>>,
    config_path: PathBuf,
}

impl LocalOrchestrator {
    /// Creates the orchestrator of `node`; it starts nothing until asked.
    pub fn new(node: Node) -> Self {
        let config_path = std::env::temp_dir().join(format!(
            "gristmill-{}-{}-children.toml",
            node.id().name,
            std::process::id()
        ));
        Self {
            node,
            children: Arc::default(),
            config_path,
        }
    }

    /// Writes the settings the children share with this node, without name, ports or cookie.
    fn write_child_config(&self) -> Result<(), OrchestratorError> {
        let mut config = self.node.inner.config.clone();
        config.cookie = String::new();
        config.seeds = Vec::new();
        config.gossip_port = 0;
        config.cluster_port = 0;
        config.grpc_port = 0;
        config.metrics_port = config.metrics_port.map(|_| 0);
        let text = toml::to_string(&config).map_err(|error| {
            OrchestratorError::Invalid(format!("cannot encode the node config: {error}"))
        })?;
        let unavailable = |error: std::io::Error| {
            OrchestratorError::Unavailable(format!(
                "cannot write {}: {error}",
                self.config_path.display()
            ))
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.config_path)
            .map_err(unavailable)?;
        file.write_all(text.as_bytes()).map_err(unavailable)
    }

    /// Returns `node-N` with the smallest N that no member or child uses.
    fn free_name(&self, taken: &BTreeSet<String>) -> String {
        (0..)
            .map(|index: u32| format!("node-{index}"))
            .find(|name| !taken.contains(name))
            .expect("some node-N name is free")
    }

    fn taken_names(&self) -> BTreeSet<String> {
        let mut taken: BTreeSet<String> = self
            .node
            .members()
            .into_iter()
            .map(|member| member.id.name.to_string())
            .collect();
        let children = self.children.lock().expect("children lock poisoned");
        taken.extend(children.keys().cloned());
        taken
    }

    async fn start_node(&self, name: &str) -> Result<(), OrchestratorError> {
        let exe = std::env::current_exe().map_err(|error| {
            OrchestratorError::Unavailable(format!("cannot find this executable: {error}"))
        })?;
        let config = &self.node.inner.config;
        let mut command = Command::new(exe);
        command
            .arg("run")
            .args(["--node-name", name])
            .args(["--bind-ip", &config.bind_ip.to_string()])
            .args([
                "--gossip-port",
                "0",
                "--cluster-port",
                "0",
                "--grpc-port",
                "0",
            ])
            .args([
                "--metrics-port",
                if config.metrics_port.is_some() {
                    "0"
                } else {
                    "off"
                },
            ])
            .args(["--seed", &self.node.id().gossip_addr().to_string()])
            .arg("--config")
            .arg(&self.config_path)
            .env("GRISTMILL_COOKIE", &config.cookie)
            // This node's parent is not the started node's parent.
            .env_remove("GRISTMILL_PARENT_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());

        let unavailable = |detail: String| OrchestratorError::Unavailable(detail);
        let mut child = command
            .spawn()
            .map_err(|error| unavailable(format!("cannot start {name}: {error}")))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        self.children
            .lock()
            .expect("children lock poisoned")
            .insert(name.to_owned(), child);
        tracing::info!(node = %name, "node process started");

        let stdout = tokio::process::ChildStdout::from_std(stdout)
            .map_err(|error| unavailable(format!("cannot read the output of {name}: {error}")))?;
        let mut lines = BufReader::new(stdout).lines();
        match tokio::time::timeout(START_TIMEOUT, lines.next_line()).await {
            Ok(Ok(Some(line))) if is_ready_line(&line) => {}
            outcome => {
                self.kill(name);
                return Err(unavailable(format!(
                    "{name} printed no ready line within {START_TIMEOUT:?}: {outcome:?}"
                )));
            }
        }
        // Drain stdout until the node exits, so it cannot block on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        if !self.wait_for_member(name, true, START_TIMEOUT).await {
            self.kill(name);
            return Err(unavailable(format!(
                "{name} did not become Active within {START_TIMEOUT:?}"
            )));
        }
        Ok(())
    }

    /// Waits until `name` is Active (`active`) or gone from the live members (`!active`).
    async fn wait_for_member(&self, name: &str, active: bool, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let members = self.node.members();
            let live: Vec<_> = members
                .iter()
                .filter(|member| member.id.name == name && member.state != NodeState::Dead)
                .collect();
            let done = if active {
                live.iter().any(|member| member.state == NodeState::Active)
            } else {
                live.is_empty()
            };
            if done {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn kill(&self, name: &str) {
        let child = self
            .children
            .lock()
            .expect("children lock poisoned")
            .remove(name);
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the child `name` to exit after it left the cluster, and kills it if it
    /// does not; returns `Ok` for nodes this orchestrator did not start.
    async fn reap(&self, name: &str) {
        let deadline = tokio::time::Instant::now() + LEAVE_TIMEOUT;
        loop {
            let exited = {
                let mut children = self.children.lock().expect("children lock poisoned");
                match children.get_mut(name).map(Child::try_wait) {
                    None => true,
                    Some(Ok(Some(status))) => {
                        tracing::info!(node = %name, %status, "node process exited");
                        children.remove(name);
                        true
                    }
                    Some(Ok(None)) => false,
                    Some(Err(error)) => {
                        tracing::warn!(node = %name, %error, "cannot wait for node process");
                        false
                    }
                }
            };
            if exited {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(node = %name, "node left but did not exit in time, killing it");
                self.kill(name);
                return;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

fn is_ready_line(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line).is_ok_and(|value| value["event"] == "ready")
}

impl Drop for LocalOrchestrator {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config_path);
    }
}

impl Orchestrator for LocalOrchestrator {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn current_nodes(&self) -> BoxFuture<'_, Result<u32, OrchestratorError>> {
        Box::pin(async {
            let live = self
                .node
                .members()
                .iter()
                .filter(|member| member.state != NodeState::Dead)
                .count();
            Ok(live as u32)
        })
    }

    fn add_nodes(&self, count: u32) -> BoxFuture<'_, Result<Vec<String>, OrchestratorError>> {
        Box::pin(async move {
            self.write_child_config()?;
            let mut taken = self.taken_names();
            let mut names = Vec::new();
            for _ in 0..count {
                let name = self.free_name(&taken);
                taken.insert(name.clone());
                names.push(name);
            }
            let starts = names.iter().map(|name| self.start_node(name));
            let results = futures::future::join_all(starts).await;
            // Every started node has read the file (it prints its ready line after), and a
            // node killed with this one would leave it behind.
            let _ = std::fs::remove_file(&self.config_path);
            let mut started = Vec::new();
            let mut first_error = None;
            for (name, result) in names.into_iter().zip(results) {
                match result {
                    Ok(()) => started.push(name),
                    Err(error) => {
                        tracing::warn!(node = %name, %error, "cannot start node");
                        first_error.get_or_insert(error);
                    }
                }
            }
            match first_error {
                Some(error) if started.is_empty() => Err(error),
                _ => Ok(started),
            }
        })
    }

    fn remove_node<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), OrchestratorError>> {
        Box::pin(async move {
            // The supervisor has drained the node and read 0 activations from it; the node
            // leaves and exits once asked.
            let addr = node_calls::grpc_addr_of(&self.node, name)
                .map_err(|status| OrchestratorError::Invalid(status.message().to_owned()))?;
            node_calls::request_leave(addr, name)
                .await
                .map_err(|status| {
                    OrchestratorError::Unavailable(format!(
                        "{name} did not accept the request to leave: {}",
                        status.message()
                    ))
                })?;
            if !self.wait_for_member(name, false, LEAVE_TIMEOUT).await {
                return Err(OrchestratorError::Unavailable(format!(
                    "{name} is still a live member {LEAVE_TIMEOUT:?} after it was asked to leave"
                )));
            }
            self.reap(name).await;
            Ok(())
        })
    }

    fn forced_removal_candidate(&self, _nodes: &[String]) -> Option<String> {
        None
    }
}
