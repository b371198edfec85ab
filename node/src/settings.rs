//! Flags of `gristmill run` and how they combine with the config file into a `NodeConfig`.
//!
//! Precedence, highest first: command-line flag, `GRISTMILL_*` environment variable, the TOML
//! file named by `--config`, the defaults of `NodeConfig`. Clap resolves flag over environment,
//! so every flag here is an `Option` that replaces the file's value only when it is set.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use gristmill::runtime::{ConfigError, NodeConfig};
use gristmill::scaling::supervisor::OrchestratorKind;

/// Settings of `gristmill run`. Each one overrides the config file; unset ones keep the file's
/// value, or the default shown in brackets.
#[derive(Debug, Default, clap::Args)]
pub struct RunArgs {
    /// TOML file with node settings, using the field names of the node config
    /// (`node_name`, `membership.probe_period_ms`, ...). Flags and environment variables
    /// override it. [default: none]
    #[arg(long, env = "GRISTMILL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Stable node name: 1 to 63 ASCII letters, digits, '-', '_' or '.'. [default: node-0]
    #[arg(long, env = "GRISTMILL_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,

    /// Address every socket binds to. [default: 127.0.0.1]
    #[arg(long, env = "GRISTMILL_BIND_IP", value_name = "IP")]
    pub bind_ip: Option<IpAddr>,

    /// Address peers dial to reach this node; required when the bind address is unspecified
    /// (0.0.0.0 or ::). [default: the bind address]
    #[arg(long, env = "GRISTMILL_ADVERTISE_IP", value_name = "IP")]
    pub advertise_ip: Option<IpAddr>,

    /// UDP port of the SWIM gossip; 0 lets the OS choose. [default: 0]
    #[arg(long, env = "GRISTMILL_GOSSIP_PORT", value_name = "PORT")]
    pub gossip_port: Option<u16>,

    /// TCP port of the node-to-node cluster transport; 0 lets the OS choose. [default: 0]
    #[arg(long, env = "GRISTMILL_CLUSTER_PORT", value_name = "PORT")]
    pub cluster_port: Option<u16>,

    /// TCP port of the gRPC API; 0 lets the OS choose. [default: 0]
    #[arg(long, env = "GRISTMILL_GRPC_PORT", value_name = "PORT")]
    pub grpc_port: Option<u16>,

    /// TCP port of the Prometheus /metrics endpoint; 0 lets the OS choose and `off` turns the
    /// endpoint off. [default: 0]
    #[arg(long, env = "GRISTMILL_METRICS_PORT", value_name = "PORT|off")]
    pub metrics_port: Option<MetricsPort>,

    /// Gossip address (host:port) of a node to join through. Repeat the flag for several
    /// seeds; the environment variable takes a comma-separated list. [default: none, which
    /// starts a new cluster]
    #[arg(
        long = "seed",
        env = "GRISTMILL_SEEDS",
        value_delimiter = ',',
        value_name = "HOST:PORT"
    )]
    pub seeds: Vec<String>,

    /// Shared cluster secret of at least 16 characters, the same on every node. Prefer the
    /// environment variable, because other users can read command lines. [default: none,
    /// required]
    #[arg(
        long,
        env = "GRISTMILL_COOKIE",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub cookie: Option<String>,

    /// Deadline of a grain call that sets none, in milliseconds (1 to 3600000).
    /// [default: 5000]
    #[arg(long, env = "GRISTMILL_CALL_TIMEOUT_MS", value_name = "MS")]
    pub call_timeout_ms: Option<u64>,

    /// Idle time after which an activation is deactivated, in seconds (at least 1).
    /// [default: 300]
    #[arg(long, env = "GRISTMILL_IDLE_AFTER_SECS", value_name = "SECS")]
    pub idle_after_secs: Option<u64>,

    /// Time between two failure-detector probes, in milliseconds (50 to 60000).
    /// [default: 750]
    #[arg(long, env = "GRISTMILL_PROBE_PERIOD_MS", value_name = "MS")]
    pub probe_period_ms: Option<u64>,

    /// Time a probed node has to acknowledge before indirect probes start, in milliseconds
    /// (at least 1 and below the probe period). [default: 250]
    #[arg(long, env = "GRISTMILL_PROBE_RTT_MS", value_name = "MS")]
    pub probe_rtt_ms: Option<u64>,

    /// Time a suspected node has to refute the suspicion before it is declared down, in
    /// milliseconds (at least 1). [default: 2500]
    #[arg(long, env = "GRISTMILL_SUSPECT_TO_DOWN_MS", value_name = "MS")]
    pub suspect_to_down_ms: Option<u64>,

    /// Maximum size of one inbound cluster frame, in bytes (65536 to 268435456); set the
    /// same value on every node. [default: 4194304]
    #[arg(long, env = "GRISTMILL_MAX_FRAME_BYTES", value_name = "BYTES")]
    pub max_frame_bytes: Option<u64>,

    /// Time an inbound cluster connection has to complete the cookie handshake before the
    /// node closes it, in milliseconds (100 to 600000). [default: 5000]
    #[arg(long, env = "GRISTMILL_HANDSHAKE_TIMEOUT_MS", value_name = "MS")]
    pub handshake_timeout_ms: Option<u64>,

    /// Inbound cluster connections that may wait to authenticate at once (1 to 65536);
    /// further ones are closed at once. [default: 1024]
    #[arg(long, env = "GRISTMILL_MAX_PENDING_HANDSHAKES", value_name = "COUNT")]
    pub max_pending_handshakes: Option<usize>,

    /// Time a connection to the gRPC or metrics port has to send its first byte before the
    /// node closes it, in milliseconds (100 to 600000). [default: 5000]
    #[arg(long, env = "GRISTMILL_FIRST_BYTE_TIMEOUT_MS", value_name = "MS")]
    pub first_byte_timeout_ms: Option<u64>,

    /// Database for grain state and reminders: `sqlite` or `postgres`. [default: sqlite]
    #[arg(long, env = "GRISTMILL_STORAGE_PROVIDER", value_name = "PROVIDER")]
    pub storage_provider: Option<String>,

    /// SQLite database file, shared by the nodes of one machine. [default: gristmill.sqlite3
    /// in the working directory]
    #[arg(long, env = "GRISTMILL_SQLITE_PATH", value_name = "FILE")]
    pub sqlite_path: Option<PathBuf>,

    /// PostgreSQL connection string, such as postgres://user:password@host:5432/db; required
    /// with `--storage-provider postgres`. [default: none]
    #[arg(long, env = "GRISTMILL_POSTGRES_URL", value_name = "URL")]
    pub postgres_url: Option<String>,

    /// What starts and stops nodes for the scaling supervisor: `none`, `local` (processes on
    /// loopback) or `kubernetes` (the StatefulSet's scale subresource). [default: none]
    #[arg(long, env = "GRISTMILL_ORCHESTRATOR", value_name = "KIND")]
    pub orchestrator: Option<String>,

    /// Time a drain on SIGTERM may take to move every activation away, in seconds (1 to 3600).
    /// [default: 60]
    #[arg(long, env = "GRISTMILL_DRAIN_TIMEOUT_SECS", value_name = "SECONDS")]
    pub drain_timeout_secs: Option<u64>,

    /// Test-only: file that receives one line per grain turn, to check that two activations
    /// of a grain never overlap. [default: none]
    #[arg(long, env = "GRISTMILL_TURN_AUDIT", value_name = "FILE", hide = true)]
    pub turn_audit: Option<PathBuf>,

    /// Log filter in tracing-subscriber `EnvFilter` syntax, such as `debug` or
    /// `info,gristmill::membership=debug`; overrides RUST_LOG. ractor_cluster's own lines are
    /// limited to errors unless the filter names `ractor_cluster`. [default: info]
    #[arg(long, env = "GRISTMILL_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// Pid of the process that started this node. On Linux the node is killed when that
    /// process exits, so `gristmill local` never leaves nodes behind.
    #[arg(long, env = "GRISTMILL_PARENT_PID", hide = true, value_name = "PID")]
    pub parent_pid: Option<u32>,

    /// Pid of the session that owns this node and every node started from it, such as a
    /// `gristmill local` run. The node exits within half a second once that process is gone.
    /// Read from the environment, so the nodes that the local orchestrator starts inherit it
    /// and outlive the node that started them, but not the session.
    #[arg(long, env = "GRISTMILL_SESSION_PID", hide = true, value_name = "PID")]
    pub session_pid: Option<u32>,
}

/// Value of `--metrics-port`: a port number (0 lets the OS choose) or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsPort {
    /// Serve /metrics on this port.
    Port(u16),
    /// Serve no /metrics endpoint.
    Off,
}

impl FromStr for MetricsPort {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("off") {
            return Ok(MetricsPort::Off);
        }
        text.parse::<u16>()
            .map(MetricsPort::Port)
            .map_err(|_| format!("invalid port {text:?}: use 0 to 65535, or `off`"))
    }
}

/// A node configuration that could not be read or is invalid; `gristmill run` exits with
/// code 2 and starts nothing.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file named by `--config`.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for a node config, or has an unknown key.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file named by `--config`.
        path: PathBuf,
        /// The TOML error, which names the key and line.
        source: toml::de::Error,
    },
    /// A setting has an invalid value; the message names the setting.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// Builds the node config from the file, the environment and the flags, and validates it.
pub fn load_node_config(args: &RunArgs) -> Result<NodeConfig, SettingsError> {
    let mut config = match &args.config {
        Some(path) => read_config_file(path)?,
        None => NodeConfig::default(),
    };
    apply_overrides(&mut config, args);
    if let Some(name) = &args.storage_provider {
        config.storage.provider =
            name.parse()
                .map_err(|error: gristmill::storage::StorageError| ConfigError {
                    setting: "storage.provider".into(),
                    value: name.clone(),
                    reason: error.to_string(),
                })?;
    }
    if let Some(kind) = &args.orchestrator {
        config.orchestrator = parse_orchestrator(kind)?;
    }
    config.validate()?;
    Ok(config)
}

/// Reads `--orchestrator` / `GRISTMILL_ORCHESTRATOR`, with the names the config file uses.
fn parse_orchestrator(kind: &str) -> Result<OrchestratorKind, ConfigError> {
    match kind.to_ascii_lowercase().as_str() {
        "none" => Ok(OrchestratorKind::None),
        "local" => Ok(OrchestratorKind::Local),
        "kubernetes" => Ok(OrchestratorKind::Kubernetes),
        _ => Err(ConfigError {
            setting: "orchestrator".into(),
            value: kind.to_owned(),
            reason: "use none, local or kubernetes".into(),
        }),
    }
}

fn read_config_file(path: &Path) -> Result<NodeConfig, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| SettingsError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Replaces each config value whose flag or environment variable is set.
fn apply_overrides(config: &mut NodeConfig, args: &RunArgs) {
    replace(&mut config.node_name, &args.node_name);
    replace(&mut config.bind_ip, &args.bind_ip);
    if args.advertise_ip.is_some() {
        config.advertise_ip = args.advertise_ip;
    }
    replace(&mut config.gossip_port, &args.gossip_port);
    replace(&mut config.cluster_port, &args.cluster_port);
    replace(&mut config.grpc_port, &args.grpc_port);
    match args.metrics_port {
        Some(MetricsPort::Port(port)) => config.metrics_port = Some(port),
        Some(MetricsPort::Off) => config.metrics_port = None,
        None => {}
    }
    if !args.seeds.is_empty() {
        config.seeds = args.seeds.clone();
    }
    replace(&mut config.cookie, &args.cookie);
    replace(&mut config.call_timeout_ms, &args.call_timeout_ms);
    replace(&mut config.idle_after_secs, &args.idle_after_secs);
    let membership = &mut config.membership;
    replace(&mut membership.probe_period_ms, &args.probe_period_ms);
    replace(&mut membership.probe_rtt_ms, &args.probe_rtt_ms);
    replace(&mut membership.suspect_to_down_ms, &args.suspect_to_down_ms);
    replace(&mut config.max_frame_bytes, &args.max_frame_bytes);
    replace(&mut config.handshake_timeout_ms, &args.handshake_timeout_ms);
    replace(
        &mut config.max_pending_handshakes,
        &args.max_pending_handshakes,
    );
    replace(
        &mut config.first_byte_timeout_ms,
        &args.first_byte_timeout_ms,
    );
    replace(&mut config.drain_timeout_secs, &args.drain_timeout_secs);
    if args.turn_audit.is_some() {
        config.turn_audit_path = args.turn_audit.clone();
    }
    if let Some(path) = &args.sqlite_path {
        config.storage.sqlite_path = path.clone();
    }
    if args.postgres_url.is_some() {
        config.storage.postgres_url = args.postgres_url.clone();
    }
}

fn replace<T: Clone>(slot: &mut T, value: &Option<T>) {
    if let Some(value) = value {
        *slot = value.clone();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use clap::Args as _;

    use super::*;

    const COOKIE: &str = "0123456789abcdef0123456789abcdef";

    fn config_file(toml: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(toml.as_bytes()).expect("write temp file");
        file
    }

    /// Returns the `gristmill.toml` block of the ConfigMap in `deploy/base`, unindented.
    fn deployed_config_text() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/base/configmap.yaml");
        let yaml = std::fs::read_to_string(path).expect("read the deployed ConfigMap");
        let mut lines = yaml
            .lines()
            .skip_while(|line| line.trim() != "gristmill.toml: |");
        lines
            .next()
            .expect("the ConfigMap has a gristmill.toml key");
        lines
            .take_while(|line| line.is_empty() || line.starts_with("    "))
            .map(|line| line.get(4..).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn deployed_config_is_valid_with_postgres() {
        // The StatefulSet supplies the cookie, the URL and the orchestrator from the
        // environment; the ConfigMap supplies the rest.
        let file = config_file(&deployed_config_text());
        let args = RunArgs {
            config: Some(file.path().to_owned()),
            cookie: Some(COOKIE.into()),
            postgres_url: Some("postgres://gristmill@db.invalid/gristmill".into()),
            orchestrator: Some("kubernetes".into()),
            ..RunArgs::default()
        };
        let config = load_node_config(&args).expect("the deployed config is valid");

        assert_eq!(config.storage.provider.to_string(), "postgres");
        assert_eq!(config.call_timeout_ms, 5000);
        assert_eq!(config.membership.suspect_to_down_ms, 2500);
    }

    #[test]
    fn orchestrator_flag_overrides_file_and_names_a_bad_value() {
        let file = config_file(&format!("cookie = \"{COOKIE}\"\norchestrator = \"none\"\n"));
        let args = RunArgs {
            config: Some(file.path().to_owned()),
            orchestrator: Some("Local".into()),
            ..RunArgs::default()
        };
        let config = load_node_config(&args).expect("valid config");
        assert_eq!(config.orchestrator, OrchestratorKind::Local);

        let args = RunArgs {
            config: Some(file.path().to_owned()),
            orchestrator: Some("k8s".into()),
            ..RunArgs::default()
        };
        let error = load_node_config(&args).expect_err("k8s is not an orchestrator");
        let message = error.to_string();
        assert!(message.contains("orchestrator"), "{message}");
        assert!(message.contains("k8s"), "{message}");
        assert!(message.contains("none, local or kubernetes"), "{message}");
    }

    #[test]
    fn flags_override_file_and_file_overrides_defaults() {
        let file = config_file(&format!(
            "node_name = \"from-file\"\ncookie = \"{COOKIE}\"\ncall_timeout_ms = 1234\n\
             [membership]\nprobe_period_ms = 400\n"
        ));
        let args = RunArgs {
            config: Some(file.path().to_owned()),
            node_name: Some("from-flag".into()),
            probe_rtt_ms: Some(90),
            ..RunArgs::default()
        };
        let config = load_node_config(&args).expect("valid config");

        assert_eq!(config.node_name, "from-flag");
        assert_eq!(config.call_timeout_ms, 1234);
        assert_eq!(config.membership.probe_period_ms, 400);
        assert_eq!(config.membership.probe_rtt_ms, 90);
        assert_eq!(
            config.idle_after_secs,
            NodeConfig::default().idle_after_secs
        );
    }

    #[test]
    fn metrics_port_off_disables_endpoint() {
        let args = RunArgs {
            cookie: Some(COOKIE.into()),
            metrics_port: Some("off".parse().expect("off parses")),
            ..RunArgs::default()
        };
        let config = load_node_config(&args).expect("valid config");
        assert_eq!(config.metrics_port, None);
    }

    #[test]
    fn invalid_values_name_the_setting() {
        let cases = [
            (
                RunArgs {
                    idle_after_secs: Some(0),
                    cookie: Some(COOKIE.into()),
                    ..RunArgs::default()
                },
                "idle_after_secs",
            ),
            (
                RunArgs {
                    cookie: Some("short".into()),
                    ..RunArgs::default()
                },
                "cookie",
            ),
            (
                RunArgs {
                    probe_rtt_ms: Some(2_000),
                    cookie: Some(COOKIE.into()),
                    ..RunArgs::default()
                },
                "membership.probe_rtt_ms",
            ),
        ];
        for (args, setting) in cases {
            let error = load_node_config(&args).expect_err(setting);
            assert!(
                error.to_string().contains(setting),
                "error {error:?} does not name {setting}"
            );
        }
    }

    #[test]
    fn unknown_file_key_is_rejected() {
        let file = config_file("no_such_setting = 1\n");
        let args = RunArgs {
            config: Some(file.path().to_owned()),
            ..RunArgs::default()
        };
        let error = load_node_config(&args).expect_err("unknown key");
        assert!(error.to_string().contains("no_such_setting"), "{error}");
    }

    #[test]
    fn help_defaults_match_node_config() {
        let help = crate::cli_help(&["gristmill", "run", "--help"]);
        let defaults = NodeConfig::default();
        let expected = [
            defaults.node_name.clone(),
            defaults.bind_ip.to_string(),
            defaults.call_timeout_ms.to_string(),
            defaults.idle_after_secs.to_string(),
            defaults.membership.probe_period_ms.to_string(),
            defaults.membership.probe_rtt_ms.to_string(),
            defaults.membership.suspect_to_down_ms.to_string(),
            defaults.max_frame_bytes.to_string(),
            defaults.handshake_timeout_ms.to_string(),
            defaults.max_pending_handshakes.to_string(),
            defaults.first_byte_timeout_ms.to_string(),
        ];
        for value in expected {
            assert!(
                help.contains(&format!("[default: {value}]")),
                "help does not show default {value}"
            );
        }
    }

    #[test]
    fn help_shows_membership_defaults() {
        let command = RunArgs::augment_args(clap::Command::new("run"));
        let defaults = gristmill::runtime::MembershipConfig::default();
        for (id, value) in [
            ("probe_period_ms", defaults.probe_period_ms),
            ("probe_rtt_ms", defaults.probe_rtt_ms),
            ("suspect_to_down_ms", defaults.suspect_to_down_ms),
        ] {
            let argument = command
                .get_arguments()
                .find(|argument| argument.get_id() == id)
                .unwrap_or_else(|| panic!("no argument {id}"));
            let help = argument
                .get_long_help()
                .or_else(|| argument.get_help())
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(
                help.contains(&format!("[default: {value}]")),
                "{id}: {help}"
            );
        }
    }
}
