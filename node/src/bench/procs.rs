//! Child processes of the benchmark: node processes, peers and drivers of this executable.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::ready::ReadyLine;

/// File name, in a run's data directory, of the SQLite database that its nodes share.
pub const CLUSTER_DATABASE: &str = "cluster.sqlite3";

/// Time a child has to print its first line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A child process whose stdout carries one JSON line per event. It is killed when dropped.
pub struct Helper {
    /// Short name for messages, such as `node-0` or `tcp echo peer`.
    pub name: String,
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Helper {
    /// Starts `program` with `args`, the cookie in the environment and stderr inherited.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        cookie: &str,
    ) -> Result<Helper, String> {
        let mut command = Command::new(program);
        command.args(args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("GRISTMILL_") {
                command.env_remove(key);
            }
        }
        command
            .env("GRISTMILL_COOKIE", cookie)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|error| format!("cannot start {name}: {error}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok(Helper {
            name: name.to_string(),
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// Waits up to `timeout` for the next stdout line.
    pub async fn next_line(&mut self, timeout: Duration) -> Result<String, String> {
        match tokio::time::timeout(timeout, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) | Ok(Err(_)) => {
                Err(format!("{} exited before printing its result", self.name))
            }
            Err(_) => Err(format!("{} printed nothing within {timeout:?}", self.name)),
        }
    }

    /// Waits for the next line and parses it as JSON of type `T`.
    pub async fn next_json<T: serde::de::DeserializeOwned>(
        &mut self,
        timeout: Duration,
    ) -> Result<T, String> {
        let line = self.next_line(timeout).await?;
        serde_json::from_str(&line)
            .map_err(|error| format!("{} printed {line:?}: {error}", self.name))
    }

    /// Kills the process with SIGKILL and reaps it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// Settings shared by every node process of one benchmark run.
pub struct NodeLauncher {
    /// This executable, whose `run` subcommand starts a node.
    pub exe: PathBuf,
    /// Random cluster secret.
    pub cookie: String,
    /// Directory for the nodes' SQLite files.
    pub data_dir: PathBuf,
}

impl NodeLauncher {
    /// Returns the `run` arguments of node `name`: loopback, OS-chosen ports, its own database.
    pub fn run_args(&self, name: &str, seed: Option<&str>) -> Vec<String> {
        let mut args: Vec<String> = [
            "run",
            "--node-name",
            name,
            "--bind-ip",
            "127.0.0.1",
            "--gossip-port",
            "0",
            "--cluster-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            "--log",
            "warn",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        // Every node of one run shares the database: nodes with different store ids refuse
        // to form a cluster.
        args.push("--sqlite-path".into());
        args.push(self.data_dir.join(CLUSTER_DATABASE).display().to_string());
        args.push("--parent-pid".into());
        args.push(std::process::id().to_string());
        if let Some(seed) = seed {
            args.push("--seed".into());
            args.push(seed.to_string());
        }
        args
    }

    /// Starts node `name`, joining through `seed`, and waits for its ready line.
    pub async fn start(
        &self,
        name: &str,
        seed: Option<&str>,
    ) -> Result<(Helper, ReadyLine), String> {
        let mut helper = Helper::spawn(name, &self.exe, &self.run_args(name, seed), &self.cookie)?;
        let line = helper.next_line(START_TIMEOUT).await?;
        let ready =
            ReadyLine::parse(&line).map_err(|error| format!("{name} printed {line:?}: {error}"))?;
        Ok((helper, ready))
    }

    /// Starts `gristmill bench <role> <args>` and returns it before it printed anything.
    pub fn helper(&self, name: &str, role_args: &[String]) -> Result<Helper, String> {
        let mut args = vec!["bench".to_string()];
        args.extend_from_slice(role_args);
        Helper::spawn(name, &self.exe, &args, &self.cookie)
    }
}

/// Time a helper has to print its first line.
pub fn start_timeout() -> Duration {
    START_TIMEOUT
}
