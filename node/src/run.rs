//! `gristmill run`: start one node, print its ready line, and leave the cluster on SIGTERM.

use std::io::Write;
use std::process::ExitCode;

use gristmill::grain::samples;
use gristmill::runtime::Node;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

use crate::ready::ReadyLine;
use crate::settings::{self, RunArgs};

/// Exit code for an invalid configuration, matching clap's code for invalid flags.
pub const EXIT_INVALID_CONFIG: u8 = 2;
/// Exit code when the node failed to start, for example because a port is taken.
pub const EXIT_START_FAILED: u8 = 1;
/// Exit code when the node stopped by itself, for example after the cluster declared it down.
pub const EXIT_STOPPED: u8 = 3;

/// Runs one node until SIGTERM or SIGINT (then drains and exits 0) or until it stops by itself.
pub async fn run(args: RunArgs) -> ExitCode {
    let config = match settings::load_node_config(&args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let filter = match log_filter(args.log.as_deref()) {
        Ok(filter) => filter,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    init_logging(filter);
    if let Some(parent_pid) = args.parent_pid {
        exit_with_parent(parent_pid);
    }
    if let Some(session_pid) = args.session_pid {
        exit_with_session(session_pid);
    }

    // Installed before the start, so a signal during start is handled after it, not fatal.
    let (mut sigterm, mut sigint) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(sigterm), Ok(sigint)) => (sigterm, sigint),
        (Err(error), _) | (_, Err(error)) => {
            tracing::error!(%error, "cannot install signal handlers");
            return ExitCode::from(EXIT_START_FAILED);
        }
    };

    let node_name = config.node_name.clone();
    let node = match Node::start(config, samples::registry()).await {
        Ok(node) => node,
        // Settings that name grain types are checked against the registry only here.
        Err(gristmill::runtime::StartError::Config(error)) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
        Err(error) => {
            tracing::error!(node = %node_name, %error, "node failed to start");
            return ExitCode::from(EXIT_START_FAILED);
        }
    };
    if let Err(error) = print_ready_line(&node) {
        tracing::error!(node = %node.id(), %error, "cannot write the ready line to stdout");
        node.drain_and_leave().await;
        return ExitCode::from(EXIT_START_FAILED);
    }
    tracing::info!(node = %node.id(), grpc_addr = %node.id().grpc_addr(), "node ready");

    let signal_name = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
        () = node.stopped() => {
            if let Some(mismatch) = node.store_mismatch() {
                eprintln!("error: {mismatch}");
                return ExitCode::from(EXIT_INVALID_CONFIG);
            }
            if node.left_gracefully() {
                tracing::info!(node = %node.id(), "node drained and left the cluster on request, exiting");
                return ExitCode::SUCCESS;
            }
            if node.is_declared_down() {
                tracing::error!(node = %node.id(), "the cluster declared this node down, exiting; a restart joins again with a new boot id");
            } else {
                tracing::error!(node = %node.id(), "node stopped without a signal, exiting");
            }
            return ExitCode::from(EXIT_STOPPED);
        }
    };
    tracing::info!(node = %node.id(), signal = signal_name, "draining and leaving the cluster");
    node.drain_and_leave().await;
    tracing::info!(node = %node.id(), "node left the cluster, exiting");
    ExitCode::SUCCESS
}

fn print_ready_line(node: &Node) -> std::io::Result<()> {
    let id = node.id();
    let ready = ReadyLine {
        node: id.name.to_string(),
        boot_id: id.boot_id,
        gossip_addr: id.gossip_addr(),
        cluster_addr: id.cluster_addr(),
        grpc_addr: id.grpc_addr(),
        metrics_addr: node.metrics_addr(),
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", ready.to_json_line())?;
    stdout.flush()
}

/// A log filter that does not parse as tracing-subscriber `EnvFilter` directives.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid log filter {value:?} in {source_name}: {reason}; expected comma-separated \
     directives such as `info` or `info,gristmill::membership=debug`"
)]
pub struct LogFilterError {
    /// Where the filter came from: `--log` or `RUST_LOG`.
    source_name: &'static str,
    /// The filter as given.
    value: String,
    /// The parse error.
    reason: tracing_subscriber::filter::ParseError,
}

/// ractor_cluster logs each closed session, even an unauthenticated one, at warn level, so a
/// port scan would flood the log. The node logs those events itself, rate-limited and counted,
/// so ractor_cluster's own lines are kept to errors unless the filter names ractor_cluster.
const RACTOR_CLUSTER_CAP: &str = "ractor_cluster=error";

/// Parses the log filter from `--log`, else from RUST_LOG, else `info`.
fn log_filter(flag: Option<&str>) -> Result<EnvFilter, LogFilterError> {
    let (source_name, value) = match (flag, std::env::var("RUST_LOG")) {
        (Some(value), _) => ("--log", value.to_owned()),
        (None, Ok(value)) => ("RUST_LOG", value),
        (None, Err(_)) => ("the default", "info".to_owned()),
    };
    let directives = if value.contains("ractor_cluster") {
        value.clone()
    } else {
        format!("{value},{RACTOR_CLUSTER_CAP}")
    };
    EnvFilter::try_new(&directives).map_err(|reason| LogFilterError {
        source_name,
        value,
        reason,
    })
}

/// Sends logs to stderr through `filter`, with ANSI colours only when stderr is a terminal.
fn init_logging(filter: EnvFilter) {
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A failed write to stderr (its reader went away) drops the line. Reporting it would
        // write to stderr again, and the standard library panics when that fails.
        .log_internal_errors(false)
        .init();
}

/// Interval between two checks that the session process still runs.
const SESSION_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Exits once the session process `session_pid` is gone. Unlike `exit_with_parent`, this
/// watches a process that need not be the parent, so a node started by another node's local
/// orchestrator survives the drain of that node and still ends with the session.
fn exit_with_session(session_pid: u32) {
    use nix::errno::Errno;
    use nix::sys::signal::kill;
    use nix::unistd::Pid;

    // Pid 0 would name this process group, which always exists.
    let Some(raw) = i32::try_from(session_pid).ok().filter(|raw| *raw > 0) else {
        tracing::error!(
            session_pid,
            "the session pid is not a valid process id, exiting"
        );
        std::process::exit(i32::from(EXIT_INVALID_CONFIG));
    };
    let pid = Pid::from_raw(raw);
    tokio::spawn(async move {
        loop {
            // Signal 0 checks that the process exists; EPERM means it exists as another user.
            if kill(pid, None) == Err(Errno::ESRCH) {
                // The usual end of a `gristmill local` run, so not an error.
                tracing::info!(session_pid, "the session process has exited, exiting");
                std::process::exit(i32::from(EXIT_STOPPED));
            }
            tokio::time::sleep(SESSION_POLL).await;
        }
    });
}

/// Asks Linux to kill this process when its parent exits, so a node started by
/// `gristmill local` cannot outlive it even when the parent is killed with SIGKILL.
///
/// NOTE: Linux sends the signal when the parent *thread* that spawned the process exits, so the
/// parent must spawn nodes from a thread that lives as long as it does (its main thread).
#[cfg(target_os = "linux")]
fn exit_with_parent(parent_pid: u32) {
    use nix::sys::signal::Signal;
    use nix::unistd::getppid;

    if let Err(error) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        tracing::warn!(%error, "cannot ask to be killed with the parent process");
    }
    // The parent may have exited before the request took effect, so no signal would come.
    if i32::try_from(parent_pid).ok() != Some(getppid().as_raw()) {
        tracing::error!(parent_pid, "parent process already exited, exiting");
        std::process::exit(i32::from(EXIT_STOPPED));
    }
}

#[cfg(not(target_os = "linux"))]
fn exit_with_parent(parent_pid: u32) {
    tracing::warn!(
        parent_pid,
        "this platform cannot kill the node when its parent exits"
    );
}
