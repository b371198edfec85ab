//! `gristmill ctl`: query a node's members, metrics and activations, invoke grains, and
//! control the scaling supervisor.

pub mod scaling;

use std::process::ExitCode;
use std::time::Duration;

use gristmill::api::pb;
use gristmill::routing::{ClientBuilder, ClientConfig, StrategyKind};
use serde_json::{Value, json};

use crate::client::{self, ClientError, NodeClient};
use crate::table::Table;

/// Exit code when the request failed: no connection, or an error status from the node.
const EXIT_REQUEST_FAILED: u8 = 1;
/// Exit code for invalid input, such as a payload that is not JSON.
const EXIT_INVALID_INPUT: u8 = 2;

/// Options of `gristmill ctl`.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// gRPC address of the node to ask, as host:port (the `grpc_addr` of its ready line).
    /// Required, before or after the subcommand.
    #[arg(
        long,
        global = true,
        env = "GRISTMILL_ADDR",
        value_name = "HOST:PORT",
        value_parser = parse_addr
    )]
    pub addr: Option<String>,

    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// How long to wait for a reply before giving up on a paused or stuck node, such as 30s
    /// or 500ms. A drain or a migration is given its own timeout plus 15 s when that is
    /// longer.
    #[arg(
        long,
        global = true,
        value_name = "DURATION",
        default_value = "30s",
        value_parser = crate::duration_arg::parse_positive
    )]
    pub request_timeout: humantime::Duration,

    /// The request to send.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// Checks that `--addr` names a host and a port, so a missing port is reported before any
/// connection attempt instead of as a transport error.
fn parse_addr(text: &str) -> Result<String, String> {
    let port = text
        .rsplit_once(':')
        .map(|(host, port)| (host, port.parse::<u16>()));
    match port {
        Some((host, Ok(port))) if !host.is_empty() && !host.contains('/') && port != 0 => {
            Ok(text.to_owned())
        }
        _ => Err(format!(
            "expected HOST:PORT with a port from 1 to 65535, such as 127.0.0.1:40003 (the \
             grpc_addr of a node's ready line), got {text:?}"
        )),
    }
}

/// Requests of `gristmill ctl`.
#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// List the members in the node's membership view, with state and load, except members
    /// that use another database.
    Members,
    /// Show cluster totals and per-node load from the load gossip.
    Metrics,
    /// List the activations the node hosts.
    Activations {
        /// Only activations of this grain type.
        #[arg(long = "type", value_name = "TYPE")]
        grain_type: Option<String>,
        /// Maximum number of activations to list; 0 lists all of them. [default: all]
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Call one method of one grain with a JSON payload and print the JSON reply.
    Invoke {
        /// Grain type, such as `counter` or `account`.
        grain_type: String,
        /// Grain key within its type.
        key: String,
        /// Method name, such as `add` or `balance`.
        method: String,
        /// Request payload as JSON, such as '{"amount": 5}', or `-` to read it from standard
        /// input. [default: null]
        payload: Option<String>,
        /// Deadline of the call in milliseconds. [default: 5000]
        #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u32).range(1..=3_600_000))]
        timeout_ms: Option<u32>,
    },
    /// Move one grain's activation, with its in-memory state, to another node.
    Migrate {
        /// Grain type, such as `counter`.
        grain_type: String,
        /// Grain key within its type.
        key: String,
        /// Node to move the grain to. [default: an Active node chosen by placement]
        #[arg(long = "to", value_name = "NODE")]
        target: Option<String>,
        /// Deadline of the migration in milliseconds. [default: the node's call timeout]
        #[arg(long, value_name = "MS")]
        timeout_ms: Option<u32>,
    },
    /// Drain a node: it stops taking new activations and migrates every activation away.
    ///
    /// The node stays Draining afterwards; only a restart brings it back as Active. Exits 1
    /// when activations remain at the timeout.
    Drain {
        /// Name of the node to drain, such as `node-2`.
        node: String,
        /// Time allowed for the drain in milliseconds. [default: 120000]
        #[arg(long, value_name = "MS")]
        timeout_ms: Option<u32>,
        /// Let the node leave the cluster and exit once it holds no activation.
        #[arg(long)]
        leave: bool,
    },
    /// Show and control the scaling supervisor.
    Scaling {
        /// The scaling request.
        #[command(subcommand)]
        command: scaling::ScalingCommand,
    },
}

impl CtlArgs {
    /// Returns `--addr`, which [`run`] checked before it sends anything.
    fn addr(&self) -> &str {
        self.addr.as_deref().unwrap_or_default()
    }
}

/// Runs one `ctl` request and prints its result on stdout, or the error on stderr.
pub async fn run(args: CtlArgs) -> ExitCode {
    // clap cannot require an option that may follow the subcommand, so `ctl` checks it.
    if args.addr.is_none() {
        eprintln!(
            "error: missing --addr HOST:PORT: give the grpc_addr of a node's ready line, \
             or set GRISTMILL_ADDR"
        );
        return ExitCode::from(EXIT_INVALID_INPUT);
    }
    match execute(&args).await {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(CtlError::Scaling(
            error @ (scaling::ScalingCtlError::PolicyFile { .. }
            | scaling::ScalingCtlError::PolicyFileUnreadable { .. }),
        )) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_INVALID_INPUT)
        }
        Err(CtlError::InvalidPayload(error)) => {
            eprintln!("error: invalid JSON payload: {error}");
            ExitCode::from(EXIT_INVALID_INPUT)
        }
        Err(CtlError::Incomplete { output, detail }) => {
            print!("{output}");
            eprintln!("error: {detail}");
            ExitCode::from(EXIT_REQUEST_FAILED)
        }
        Err(error @ (CtlError::Client(_) | CtlError::Routing(_) | CtlError::Scaling(_))) => {
            let timed_out = match &error {
                CtlError::Client(ClientError::Status(status))
                | CtlError::Scaling(scaling::ScalingCtlError::Client(ClientError::Status(
                    status,
                ))) => client::is_request_timeout(status),
                _ => false,
            };
            if timed_out {
                eprintln!(
                    "error: DEADLINE_EXCEEDED: no reply from {} within --request-timeout {}",
                    args.addr(),
                    args.request_timeout
                );
            } else {
                eprintln!("error: {error}");
            }
            // `invoke` sends its call through the node that owns the grain, and a watch stream
            // that breaks off was served by `--addr` before, so neither failure shows that
            // `--addr` is wrong.
            let addr_proven = matches!(
                args.command,
                CtlCommand::Invoke { .. }
                    | CtlCommand::Scaling {
                        command: scaling::ScalingCommand::Watch { .. }
                    }
            );
            let hint = match &error {
                _ if addr_proven => None,
                CtlError::Client(ClientError::Status(status))
                | CtlError::Scaling(scaling::ScalingCtlError::Client(ClientError::Status(
                    status,
                ))) => client::wrong_port_hint(status, args.addr()),
                _ => None,
            };
            if let Some(hint) = hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(EXIT_REQUEST_FAILED)
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum CtlError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{prefix}{error}", prefix = routing_code_prefix(.0), error = .0)]
    Routing(gristmill::routing::ClientError),
    #[error("invalid JSON payload: {0}")]
    InvalidPayload(serde_json::Error),
    /// The request ran but did not finish its work: `output` is its report.
    #[error("{detail}")]
    Incomplete { output: String, detail: String },
    #[error(transparent)]
    Scaling(#[from] scaling::ScalingCtlError),
}

/// Returns `CODE: ` for a client error that maps to a gRPC code, so that it prints like an
/// error status.
fn routing_code_prefix(error: &gristmill::routing::ClientError) -> String {
    error
        .code()
        .map(|code| format!("{}: ", client::code_name(code)))
        .unwrap_or_default()
}

impl From<gristmill::routing::ClientError> for CtlError {
    /// Keeps an error status as a status, so that it prints with its code name as every other
    /// failed request does.
    fn from(error: gristmill::routing::ClientError) -> Self {
        match error {
            gristmill::routing::ClientError::Status { status, node, .. } => {
                // The call may have gone to another node than `--addr`, so name it.
                let message = format!("{} (from node {node})", status.message());
                let status =
                    tonic::Status::with_metadata(status.code(), message, status.metadata().clone());
                CtlError::Client(ClientError::Status(status))
            }
            other => CtlError::Routing(other),
        }
    }
}

impl From<tonic::Status> for CtlError {
    fn from(status: tonic::Status) -> Self {
        CtlError::Client(ClientError::Status(status))
    }
}

/// How long `gristmill local` waits for a node to accept its decision watch; the stream of
/// decisions that follows has no deadline.
pub(crate) const WATCH_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Time the node is given beyond a request's own timeout before `ctl` stops waiting.
const REPLY_MARGIN: Duration = Duration::from_secs(15);

/// Returns how long `ctl` waits for the reply to `command`: `query` for a request that the
/// node replies to at once. A migration or a drain runs for up to its own timeout before it
/// replies: `timeout_ms`, or 120 s when unset, which is the drain default and above the
/// migration default.
fn request_timeout(command: &CtlCommand, query: Duration) -> Duration {
    match command {
        CtlCommand::Migrate { timeout_ms, .. } | CtlCommand::Drain { timeout_ms, .. } => {
            let runs_for = Duration::from_millis(u64::from(timeout_ms.unwrap_or(120_000)));
            (runs_for + REPLY_MARGIN).max(query)
        }
        _ => query,
    }
}

/// Sends the request and returns the text to print.
async fn execute(args: &CtlArgs) -> Result<String, CtlError> {
    // Parse the payload before connecting, so a typo fails fast and offline.
    let payload = match &args.command {
        CtlCommand::Invoke {
            payload: Some(text),
            ..
        } if text == "-" => {
            serde_json::from_reader(std::io::stdin().lock()).map_err(CtlError::InvalidPayload)?
        }
        CtlCommand::Invoke {
            payload: Some(text),
            ..
        } => serde_json::from_str(text).map_err(CtlError::InvalidPayload)?,
        _ => Value::Null,
    };
    if let CtlCommand::Scaling { command } = &args.command {
        // The scaling client reads a policy file offline first, and then connects by itself.
        let timeout = args.request_timeout.into();
        return Ok(scaling::execute(args.addr(), command, args.json, timeout).await?);
    }
    let timeout = request_timeout(&args.command, args.request_timeout.into());
    let mut node = NodeClient::connect_with(args.addr(), Some(timeout)).await?;

    match &args.command {
        CtlCommand::Members => {
            let response = node.members().await?;
            Ok(render_members(&response, args.json))
        }
        CtlCommand::Metrics => {
            let request = pb::GetClusterMetricsRequest {};
            let response = node
                .cluster
                .get_cluster_metrics(request)
                .await?
                .into_inner();
            Ok(render_metrics(&response, args.json))
        }
        CtlCommand::Activations { grain_type, limit } => {
            let request = pb::ListActivationsRequest {
                grain_type: grain_type.clone().unwrap_or_default(),
                limit: limit.unwrap_or(0),
            };
            let response = node.grains.list_activations(request).await?.into_inner();
            Ok(render_activations(&response, args.json))
        }
        CtlCommand::Invoke {
            grain_type,
            key,
            method,
            timeout_ms,
            ..
        } => {
            // The cluster-aware client learns the members from `--addr` and sends the call
            // straight to the grain's node where it can, saving a forward.
            let config = ClientConfig {
                seeds: vec![args.addr().to_owned()],
                strategy: StrategyKind::GrainAware,
                ..ClientConfig::default()
            };
            let cluster = ClientBuilder::new(config).connect().await?;
            let timeout = timeout_ms.map(|ms| Duration::from_millis(u64::from(ms)));
            let bytes = serde_json::to_vec(&payload).expect("a JSON value always encodes");
            let reply = cluster
                .invoke(
                    grain_type,
                    key,
                    method,
                    bytes,
                    pb::PayloadFormat::Json,
                    timeout,
                )
                .await?;
            let response = pb::InvokeResponse {
                payload: reply.payload,
                format: reply.format as i32,
                served_by: reply.served_by,
                hops: reply.hops,
            };
            Ok(render_invoke(&response, args.json))
        }
        CtlCommand::Migrate {
            grain_type,
            key,
            target,
            timeout_ms,
        } => {
            let request = pb::MigrateRequest {
                grain_type: grain_type.clone(),
                key: key.clone(),
                target_node: target.clone().unwrap_or_default(),
                timeout_ms: timeout_ms.unwrap_or(0),
            };
            let moved = node.grains.migrate(request).await?.into_inner();
            let summary = json!({
                "grain": format!("{grain_type}/{key}"),
                "from_node": moved.from_node,
                "to_node": moved.to_node,
                "epoch": moved.epoch,
                "duration_us": moved.duration_us,
            });
            if args.json {
                return Ok(json_line(&summary));
            }
            Ok(format!(
                "moved {grain_type}/{key} from {} to {} (epoch {}) in {} us\n",
                moved.from_node, moved.to_node, moved.epoch, moved.duration_us
            ))
        }
        CtlCommand::Drain {
            node: name,
            timeout_ms,
            leave,
        } => {
            let request = pb::NodeDrainRequest {
                node: name.clone(),
                timeout_ms: timeout_ms.unwrap_or(0),
                leave_after: *leave,
            };
            let report = node.cluster.drain_node(request).await?.into_inner();
            let output = if args.json {
                json_line(&json!({
                    "node": report.node,
                    "migrated": report.migrated,
                    "deactivated": report.deactivated,
                    "remaining": report.remaining,
                    "duration_ms": report.duration_ms,
                }))
            } else {
                format!(
                    "drained {}: {} migrated, {} deactivated, {} remaining, in {} ms\n",
                    report.node,
                    report.migrated,
                    report.deactivated,
                    report.remaining,
                    report.duration_ms
                )
            };
            if report.remaining > 0 {
                return Err(CtlError::Incomplete {
                    output,
                    detail: format!(
                        "the drain of {} ended with {} activations left, and the node stays \
                         Draining; run the drain again, with a longer --timeout-ms or with \
                         --leave",
                        report.node, report.remaining
                    ),
                });
            }
            Ok(output)
        }
        CtlCommand::Scaling { .. } => unreachable!("scaling commands return before connecting"),
    }
}

fn render_members(response: &pb::ListMembersResponse, as_json: bool) -> String {
    if as_json {
        let members: Vec<Value> = response.members.iter().map(client::member_json).collect();
        return json_line(&json!({ "node": response.node, "members": members }));
    }
    member_table(&response.members).render()
}

fn render_metrics(response: &pb::GetClusterMetricsResponse, as_json: bool) -> String {
    if as_json {
        let members: Vec<Value> = response.members.iter().map(client::member_json).collect();
        return json_line(&json!({
            "node": response.node,
            "total_activations": response.total_activations,
            "total_calls_per_sec": response.total_calls_per_sec,
            "mailbox_depth_max": response.mailbox_depth_max,
            "members_by_state": response.members_by_state,
            "members": members,
        }));
    }
    let mut states: Vec<String> = response
        .members_by_state
        .iter()
        .map(|(state, count)| format!("{state}={count}"))
        .collect();
    states.sort();
    format!(
        "answered by {}\nactivations {}  calls/s {:.1}  max mailbox depth {}  members {}\n\n{}",
        response.node,
        response.total_activations,
        response.total_calls_per_sec,
        response.mailbox_depth_max,
        states.join(" "),
        member_table(&response.members).render(),
    )
}

fn member_table(members: &[pb::Member]) -> Table {
    let mut table = Table::new(vec![
        "NAME",
        "BOOT_ID",
        "STATE",
        "GRPC_ADDR",
        "GOSSIP_ADDR",
        "ACTIVATIONS",
        "CALLS/S",
        "MAILBOX_MAX",
        "CPU%",
        "MEMORY_MIB",
    ]);
    for member in members {
        let load = member.load.unwrap_or_default();
        let name = if member.is_self {
            format!("{} (self)", member.name)
        } else {
            member.name.clone()
        };
        table.push(vec![
            name,
            format!("{:016x}", member.boot_id),
            client::state_name(member.state).to_owned(),
            member.grpc_addr.clone(),
            member.gossip_addr.clone(),
            load.activations.to_string(),
            format!("{:.1}", load.calls_per_sec),
            load.mailbox_depth_max.to_string(),
            format!("{:.0}", load.cpu_percent),
            format!("{:.1}", load.memory_bytes as f64 / (1024.0 * 1024.0)),
        ]);
    }
    table
}

fn render_activations(response: &pb::ListActivationsResponse, as_json: bool) -> String {
    if as_json {
        let activations: Vec<Value> = response
            .activations
            .iter()
            .map(client::activation_json)
            .collect();
        return json_line(&json!({
            "node": response.node,
            "total": response.total,
            "activations": activations,
        }));
    }
    let mut table = Table::new(vec![
        "TYPE",
        "KEY",
        "ACTIVATION_ID",
        "EPOCH",
        "IDLE_MS",
        "MAILBOX",
    ]);
    for activation in &response.activations {
        table.push(vec![
            activation.grain_type.clone(),
            activation.key.clone(),
            activation.activation_id.to_string(),
            activation.epoch.to_string(),
            activation.idle_ms.to_string(),
            activation.mailbox_depth.to_string(),
        ]);
    }
    format!(
        "{}{} of {} activations on {}\n",
        table.render(),
        response.activations.len(),
        response.total,
        response.node,
    )
}

fn render_invoke(response: &pb::InvokeResponse, as_json: bool) -> String {
    let reply = client::reply_json(response);
    if as_json {
        return json_line(&json!({
            "reply": reply,
            "served_by": response.served_by,
            "hops": response.hops,
        }));
    }
    let reply_text = serde_json::to_string_pretty(&reply).expect("a JSON value always encodes");
    format!(
        "{reply_text}\nserved by {} after {}\n",
        response.served_by,
        crate::table::counted(response.hops, "hop", "hops")
    )
}

fn json_line(value: &Value) -> String {
    format!("{value}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, state: pb::NodeState) -> pb::Member {
        pb::Member {
            name: name.into(),
            boot_id: 0xab,
            state: state as i32,
            grpc_addr: "127.0.0.1:5000".into(),
            ..Default::default()
        }
    }

    #[test]
    fn members_json_names_states() {
        let response = pb::ListMembersResponse {
            members: vec![member("node-0", pb::NodeState::Active)],
            node: "node-0".into(),
        };
        let output: Value = serde_json::from_str(&render_members(&response, true)).unwrap();

        assert_eq!(output["members"][0]["state"], "ACTIVE");
        assert_eq!(output["members"][0]["boot_id"], 0xab);
    }

    #[test]
    fn members_table_shows_state_and_boot_id() {
        let response = pb::ListMembersResponse {
            members: vec![member("node-1", pb::NodeState::Dead)],
            node: "node-0".into(),
        };
        let output = render_members(&response, false);

        assert!(output.contains("node-1"), "{output}");
        assert!(output.contains("DEAD"), "{output}");
        assert!(output.contains("00000000000000ab"), "{output}");
    }

    #[test]
    fn addr_without_port_is_rejected() {
        for bad in [
            "localhost",
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:0",
            ":40003",
            "h:99999",
        ] {
            let error = parse_addr(bad).expect_err(bad);
            assert!(error.contains("HOST:PORT"), "{error}");
            assert!(error.contains(bad), "{error}");
        }
        assert_eq!(
            parse_addr("127.0.0.1:40003").as_deref(),
            Ok("127.0.0.1:40003")
        );
        assert_eq!(parse_addr("[::1]:40003").as_deref(), Ok("[::1]:40003"));
    }

    #[test]
    fn invoke_reply_that_is_not_json_becomes_string() {
        let response = pb::InvokeResponse {
            payload: b"not json".to_vec(),
            format: pb::PayloadFormat::Json as i32,
            served_by: "node-2".into(),
            hops: 1,
        };
        let output: Value = serde_json::from_str(&render_invoke(&response, true)).unwrap();

        assert_eq!(output["reply"], "not json");
        assert_eq!(output["served_by"], "node-2");
    }
}
