//! Settings of one node, with their units, defaults and validation.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::storage::{StorageConfig, StorageError};

/// Settings of one node. Every field has a default, so an empty TOML file is a valid config.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Stable node name, such as `node-1` or the StatefulSet pod name. Default: `node-0`.
    /// Must be 1 to 63 characters of ASCII letters, digits, `-`, `_` and `.`.
    pub node_name: String,
    /// Address the node binds its sockets to. Default: `127.0.0.1`.
    pub bind_ip: IpAddr,
    /// Address that peers use to reach this node; default: the bind address. Must not be
    /// unspecified (`0.0.0.0`) because peers dial it.
    pub advertise_ip: Option<IpAddr>,
    /// UDP port for SWIM gossip. Default: 0, which lets the OS choose a free port.
    pub gossip_port: u16,
    /// TCP port for the ractor_cluster node server. Default: 0 (OS-chosen).
    pub cluster_port: u16,
    /// TCP port for the gRPC API. Default: 0 (OS-chosen).
    pub grpc_port: u16,
    /// TCP port for the Prometheus `/metrics` endpoint; `None` turns the endpoint off.
    /// Default: `Some(0)` (OS-chosen).
    pub metrics_port: Option<u16>,
    /// Gossip addresses (`host:port`) of nodes to join through. Default: empty, which starts a
    /// new cluster.
    pub seeds: Vec<String>,
    /// Shared secret that ractor_cluster peers prove they know when they connect. Required:
    /// at least 16 characters. Default: empty (invalid), so a node never runs with a guessable
    /// cookie by accident.
    pub cookie: String,
    /// Deadline of a grain call that names none, in milliseconds. Default: 5000. Range: 1 to
    /// 3,600,000.
    pub call_timeout_ms: u64,
    /// Time an activation may stay idle before it is deactivated, in seconds. Default: 300.
    /// Must be positive; grain types can override it.
    pub idle_after_secs: u64,
    /// Membership failure-detector settings.
    pub membership: MembershipConfig,
    /// Maximum size of one inbound ractor_cluster frame, in bytes. Default: 4 MiB. Range: 64 KiB
    /// to 256 MiB; configure every node alike, because the limit applies to inbound frames only.
    pub max_frame_bytes: u64,
    /// Time an inbound cluster connection has to complete the cookie handshake before the
    /// node closes it, in milliseconds. Default: 5000. Range: 100 to 600,000; keep it well
    /// above the handshake round trip between nodes, which includes a 500 ms internal check
    /// in ractor_cluster when the node is busy.
    pub handshake_timeout_ms: u64,
    /// Inbound cluster connections that may wait to authenticate at once; further ones are
    /// closed at once and counted. Default: 1024. Range: 1 to 65,536. Each waiting connection
    /// uses a file descriptor and about 80 KiB (an estimate from one run of
    /// `benches/connection_flood.py` on a debug build), so the default bounds the waiting
    /// connections near 80 MiB. Keep it above the number of peers that may dial this node at
    /// the same moment, such as the cluster size during a restart.
    pub max_pending_handshakes: usize,
    /// Time data sent on a cluster connection may stay unacknowledged before the kernel
    /// closes the connection (`TCP_USER_TIMEOUT`, Linux only), in milliseconds. Default: 5000.
    /// Range: 1000 to 600,000. ractor_cluster pings every session every few seconds, so a
    /// peer that stops acknowledging loses its sessions within about this time plus one ping
    /// interval, and `membership.unreachable_after` starts counting then.
    pub cluster_ack_timeout_ms: u64,
    /// Time a connection to the gRPC or `/metrics` port has to send its first byte before the
    /// node closes it, in milliseconds. Default: 5000. Range: 100 to 600,000. gRPC clients
    /// send the HTTP/2 preface and scrapers their request as soon as they connect, so only
    /// connections that send nothing are closed. The deadline ends with the first byte:
    /// it does not bound a request that starts and then stalls.
    pub first_byte_timeout_ms: u64,
    /// Database for grain state and reminders. Default: SQLite in `gristmill.sqlite3` in the
    /// working directory.
    pub storage: StorageConfig,
    /// Interval between two polls for due reminders, in milliseconds. Default: 1000. Range:
    /// 10 to 60,000; a reminder fires at most this late.
    pub reminder_poll_ms: u64,
    /// Time a drain on SIGTERM may take to move every activation away and leave the cluster,
    /// in seconds. Leaving keeps up to half of it, at most 10 s, for the quiet period in which
    /// peers learn of the leave and for requests in flight; the drain gets the rest, and what
    /// it leaves behind is deactivated. Default: 60. Range: 1 to 3600; keep it below the
    /// orchestrator's grace period (Kubernetes `terminationGracePeriodSeconds`).
    pub drain_timeout_secs: u64,
    /// File to which the node appends one line per grain turn: grain, node, boot id,
    /// activation id, epoch, and start and end in nanoseconds since the Unix epoch, separated
    /// by tabs. Tests use it to prove that two activations of a grain never ran turns at the
    /// same time. It costs a write per turn. Default: `None` (off); for tests only.
    pub turn_audit_path: Option<std::path::PathBuf>,
    /// Rebalancer settings: round interval, tolerance band, load weights and move limits.
    /// Default: [`crate::migration::rebalancer::RebalancerConfig::default`]; see its fields.
    pub rebalancer: crate::migration::rebalancer::RebalancerConfig,
    /// Scaling supervisor settings: node bounds, policies, windows and cooldown. Default:
    /// [`crate::scaling::ScalingConfig::default`]; see its fields for units and ranges.
    pub scaling: crate::scaling::ScalingConfig,
    /// The backend that starts and stops nodes for the scaling supervisor: `none`, `local`
    /// (node processes on loopback) or `kubernetes` (the StatefulSet scale subresource). Default:
    /// `none`. `local` needs a loopback `bind_ip`. With `none`, automatic decisions are
    /// recorded but not carried out. Manual drains and scale-ins ask the node to leave, and a
    /// manual scale-out is rejected.
    pub orchestrator: crate::scaling::supervisor::OrchestratorKind,
    /// Forwarding between nodes: the circuit breaker per peer, and the stateless worker types
    /// whose calls are balanced over every Active node. Default:
    /// [`crate::routing::ForwardingConfig::default`]; see its fields.
    pub forwarding: crate::routing::ForwardingConfig,
    /// The KEDA external scaler service: how often an open `StreamIsActive` stream checks
    /// and re-sends. Default: [`crate::scaling::keda::KedaConfig::default`]; see its fields.
    pub keda: crate::scaling::keda::KedaConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node_name: "node-0".into(),
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            advertise_ip: None,
            gossip_port: 0,
            cluster_port: 0,
            grpc_port: 0,
            metrics_port: Some(0),
            seeds: Vec::new(),
            cookie: String::new(),
            call_timeout_ms: 5_000,
            idle_after_secs: 300,
            membership: MembershipConfig::default(),
            max_frame_bytes: 4 * 1024 * 1024,
            handshake_timeout_ms: 5_000,
            max_pending_handshakes: 1_024,
            cluster_ack_timeout_ms: 5_000,
            first_byte_timeout_ms: 5_000,
            storage: StorageConfig::default(),
            reminder_poll_ms: 1_000,
            drain_timeout_secs: 60,
            turn_audit_path: None,
            rebalancer: crate::migration::rebalancer::RebalancerConfig::default(),
            scaling: crate::scaling::ScalingConfig::default(),
            orchestrator: crate::scaling::supervisor::OrchestratorKind::None,
            forwarding: crate::routing::ForwardingConfig::default(),
            keda: crate::scaling::keda::KedaConfig::default(),
        }
    }
}

/// SWIM failure-detector settings, passed to foca.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipConfig {
    /// Time between two probes of a random member, in milliseconds. Default: 750. Range: 50 to
    /// 60,000; must be larger than `probe_rtt_ms`.
    pub probe_period_ms: u64,
    /// Time a probed member has to acknowledge before indirect probes start, in milliseconds.
    /// Default: 250. Must be positive and below `probe_period_ms`.
    pub probe_rtt_ms: u64,
    /// Time a suspected member has to refute the suspicion before it is declared down, in
    /// milliseconds. Default: 2500. Must be positive. It is also the length of the membership
    /// lease. With the default timings, three crash benchmark runs of 20 kills each had a p99
    /// from 4.6 to 4.9 s until the node was declared down. A live node that acknowledges no
    /// probe for about 3 s (a stopped process, say) is declared down too.
    pub suspect_to_down_ms: u64,
    /// Members probed indirectly when a direct probe fails. Default: 3.
    pub indirect_probes: NonZeroU32,
    /// Period of the re-sent state and load broadcast, in milliseconds. Default: 1000. Must be
    /// positive. Clusters of more than about 30 nodes stretch it so that each node forwards
    /// at most about 200 meta items per second (9 s at 200 nodes, 60 s at 1,000); state
    /// changes are broadcast at once regardless and restart the period. Each wait until the
    /// next re-send is a random 50 % to 150 % of the period, so that nodes that joined together
    /// do not re-send in step. The agent checks at this interval whether a re-send is due, and
    /// removes dead members whose retention ended.
    pub meta_period_ms: u64,
    /// Interval between announce retries to the seeds until the node has joined, in
    /// milliseconds; also the time after which a member-list request is sent again when its page
    /// has not come. Default: 500. Must be positive.
    pub announce_retry_ms: u64,
    /// Mean period between two pulls of the whole member list from a random member, in
    /// milliseconds. Default: 30000. Must be positive. The pull repairs views that missed a
    /// member update, which gossip alone repairs only when the two members happen to exchange a
    /// datagram. Clusters of more than about 1,500 nodes stretch it so that each node receives
    /// at most about 50 member entries per second (200 s at 10,000). Each pull waits a random
    /// 50 % to 150 % of the period. A joining node also pulls the list as soon as it joins,
    /// whatever this setting.
    pub member_list_period_ms: u64,
    /// Time a live peer may have no ready cluster session to this node before this node
    /// reports it as unreachable in its meta broadcast, as text such as `10s`. Default: 10 s.
    /// Range: 1 s to 1 hour; keep it above the 2 s maximum backoff between two dials of a
    /// peer. A member that `unreachable_votes` other members report is declared down, which
    /// catches a node whose gossip works but whose cluster port does not.
    #[serde(with = "crate::duration_text")]
    pub unreachable_after: Duration,
    /// Number of distinct other members that must report a member as unreachable before it
    /// is declared down. Default: 2. Use 0 to turn the votes off; 1 is rejected, because one
    /// node whose own network fails would then get every healthy peer declared down. The
    /// number is never lowered for small clusters: in a cluster of two nodes no member is
    /// declared down this way. A member that at least this many members report does not vote
    /// itself.
    pub unreachable_votes: u32,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            probe_period_ms: 750,
            probe_rtt_ms: 250,
            suspect_to_down_ms: 2_500,
            indirect_probes: NonZeroU32::new(3).expect("3 is not zero"),
            meta_period_ms: 1_000,
            announce_retry_ms: 500,
            member_list_period_ms: 30_000,
            unreachable_after: Duration::from_secs(10),
            unreachable_votes: 2,
        }
    }
}

impl MembershipConfig {
    /// Returns the probe period as a duration.
    pub fn probe_period(&self) -> Duration {
        Duration::from_millis(self.probe_period_ms)
    }
}

/// A setting with an invalid value. The message names the setting, the value and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `{setting}` = {value:?}: {reason}")]
pub struct ConfigError {
    /// Name of the setting as it appears in TOML (`membership.probe_rtt_ms`).
    pub setting: String,
    /// The rejected value, as text.
    pub value: String,
    /// What a valid value looks like.
    pub reason: String,
}

impl ConfigError {
    fn new(setting: impl Into<String>, value: impl ToString, reason: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

impl NodeConfig {
    /// Checks every setting and returns the first invalid one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name_ok = !self.node_name.is_empty()
            && self.node_name.len() <= 63
            && self
                .node_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(ConfigError::new(
                "node_name",
                &self.node_name,
                "use 1 to 63 ASCII letters, digits, '-', '_' or '.'",
            ));
        }
        if let Some(ip) = self.advertise_ip
            && ip.is_unspecified()
        {
            return Err(ConfigError::new(
                "advertise_ip",
                ip,
                "use an address that peers can dial, not an unspecified one",
            ));
        }
        if self.advertise_ip.is_none() && self.bind_ip.is_unspecified() {
            return Err(ConfigError::new(
                "advertise_ip",
                "(unset)",
                "set advertise_ip when bind_ip is unspecified, so peers know where to dial",
            ));
        }
        let cookie_chars = self.cookie.chars().count();
        if cookie_chars < 16 {
            // The value is a secret, so the message gives only its length.
            let value = if cookie_chars == 0 {
                "(unset)".to_owned()
            } else {
                format!("({cookie_chars} characters, hidden)")
            };
            return Err(ConfigError::new(
                "cookie",
                value,
                "use a random secret of at least 16 characters, the same on every node, in \
                 GRISTMILL_COOKIE or --cookie",
            ));
        }
        if !(1..=3_600_000).contains(&self.call_timeout_ms) {
            return Err(ConfigError::new(
                "call_timeout_ms",
                self.call_timeout_ms,
                "use 1 to 3600000 milliseconds",
            ));
        }
        if self.idle_after_secs == 0 {
            return Err(ConfigError::new(
                "idle_after_secs",
                self.idle_after_secs,
                "use a positive number of seconds",
            ));
        }
        if !(64 * 1024..=256 * 1024 * 1024).contains(&self.max_frame_bytes) {
            return Err(ConfigError::new(
                "max_frame_bytes",
                self.max_frame_bytes,
                "use 65536 to 268435456 bytes",
            ));
        }
        if !(100..=600_000).contains(&self.handshake_timeout_ms) {
            return Err(ConfigError::new(
                "handshake_timeout_ms",
                self.handshake_timeout_ms,
                "use 100 to 600000 milliseconds",
            ));
        }
        if !(1..=65_536).contains(&self.max_pending_handshakes) {
            return Err(ConfigError::new(
                "max_pending_handshakes",
                self.max_pending_handshakes,
                "use 1 to 65536 connections",
            ));
        }
        if !(1_000..=600_000).contains(&self.cluster_ack_timeout_ms) {
            return Err(ConfigError::new(
                "cluster_ack_timeout_ms",
                self.cluster_ack_timeout_ms,
                "use 1000 to 600000 milliseconds",
            ));
        }
        if !(100..=600_000).contains(&self.first_byte_timeout_ms) {
            return Err(ConfigError::new(
                "first_byte_timeout_ms",
                self.first_byte_timeout_ms,
                "use 100 to 600000 milliseconds",
            ));
        }
        for seed in &self.seeds {
            if seed.rsplit_once(':').is_none_or(|(host, port)| {
                host.is_empty() || !matches!(port.parse::<u16>(), Ok(1..))
            }) {
                return Err(ConfigError::new(
                    "seeds",
                    seed,
                    "write each seed as host:port with a port from 1 to 65535, such as 127.0.0.1:7946",
                ));
            }
        }
        if !(10..=60_000).contains(&self.reminder_poll_ms) {
            return Err(ConfigError::new(
                "reminder_poll_ms",
                self.reminder_poll_ms,
                "use 10 to 60000 milliseconds",
            ));
        }
        if !(1..=3_600).contains(&self.drain_timeout_secs) {
            return Err(ConfigError::new(
                "drain_timeout_secs",
                self.drain_timeout_secs,
                "use 1 to 3600 seconds",
            ));
        }
        self.storage.validate().map_err(storage_error)?;
        self.rebalancer.validate().map_err(|error| {
            ConfigError::new(
                format!("rebalancer.{}", error.field),
                error.value,
                error.reason,
            )
        })?;
        self.scaling.validate().map_err(|error| {
            ConfigError::new(
                format!("scaling.{}", error.field()),
                "(see reason)",
                error.to_string(),
            )
        })?;
        self.forwarding.validate().map_err(|error| {
            ConfigError::new(
                format!("forwarding.{}", error.field),
                error.value,
                error.fix,
            )
        })?;
        self.keda.validate().map_err(|error| {
            ConfigError::new(format!("keda.{}", error.field), error.value, error.reason)
        })?;
        if self.orchestrator == crate::scaling::supervisor::OrchestratorKind::Local
            && !self.bind_ip.is_loopback()
        {
            return Err(ConfigError::new(
                "orchestrator",
                "local",
                "the local orchestrator starts nodes on loopback only; set bind_ip to 127.0.0.1",
            ));
        }
        self.membership.validate()
    }

    /// Returns the limits on inbound cluster connections that have not authenticated yet.
    pub fn handshake_limits(&self) -> crate::transport::HandshakeLimits {
        crate::transport::HandshakeLimits {
            timeout: Duration::from_millis(self.handshake_timeout_ms),
            max_pending: self.max_pending_handshakes,
        }
    }

    /// Returns the time a gRPC or metrics connection has to send its first byte.
    pub fn first_byte_timeout(&self) -> Duration {
        Duration::from_millis(self.first_byte_timeout_ms)
    }

    /// Checks the settings that name grain types against the types in `grains`.
    pub(crate) fn validate_grain_types(
        &self,
        grains: &crate::grain::GrainRegistry,
    ) -> Result<(), ConfigError> {
        let worker_types: Vec<&str> = grains
            .type_names()
            .into_iter()
            .filter(|name| {
                grains
                    .get(name)
                    .is_some_and(|factory| factory.options().stateless_worker.is_some())
            })
            .collect();
        self.forwarding
            .check_spread_workers(&worker_types)
            .map_err(|error| {
                ConfigError::new(
                    format!("forwarding.{}", error.field),
                    error.value,
                    error.fix,
                )
            })
    }

    /// Returns the address peers dial: `advertise_ip`, or the bind address when unset.
    pub fn advertised_ip(&self) -> IpAddr {
        self.advertise_ip.unwrap_or(self.bind_ip)
    }

    /// Returns the default call deadline as a duration.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    /// Returns the drain timeout as a duration.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    /// Returns the default idle age as a duration.
    pub fn idle_after(&self) -> Duration {
        Duration::from_secs(self.idle_after_secs)
    }
}

/// Names a storage setting under its `storage.` table.
fn storage_error(error: StorageError) -> ConfigError {
    match error {
        StorageError::Config { field, reason } => {
            ConfigError::new(format!("storage.{field}"), "(see reason)", reason)
        }
        other => ConfigError::new("storage", "(see reason)", other.to_string()),
    }
}

impl MembershipConfig {
    /// Checks the failure-detector settings and returns the first invalid one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(50..=60_000).contains(&self.probe_period_ms) {
            return Err(ConfigError::new(
                "membership.probe_period_ms",
                self.probe_period_ms,
                "use 50 to 60000 milliseconds",
            ));
        }
        if self.probe_rtt_ms == 0 || self.probe_rtt_ms >= self.probe_period_ms {
            return Err(ConfigError::new(
                "membership.probe_rtt_ms",
                self.probe_rtt_ms,
                "use a positive value below membership.probe_period_ms",
            ));
        }
        let positive = [
            ("membership.suspect_to_down_ms", self.suspect_to_down_ms),
            ("membership.meta_period_ms", self.meta_period_ms),
            ("membership.announce_retry_ms", self.announce_retry_ms),
            (
                "membership.member_list_period_ms",
                self.member_list_period_ms,
            ),
        ];
        for (setting, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(
                    setting,
                    value,
                    "use a positive number of milliseconds",
                ));
            }
        }
        let unreachable_range = Duration::from_secs(1)..=Duration::from_secs(3_600);
        if !unreachable_range.contains(&self.unreachable_after) {
            return Err(ConfigError::new(
                "membership.unreachable_after",
                humantime_serde::re::humantime::format_duration(self.unreachable_after),
                "use a duration from 1s to 1h, such as 10s",
            ));
        }
        if self.unreachable_votes == 1 {
            return Err(ConfigError::new(
                "membership.unreachable_votes",
                self.unreachable_votes,
                "use 0 to turn the votes off, or 2 or more: with 1, a single node whose own \
                 network fails gets every healthy peer declared down",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> NodeConfig {
        NodeConfig {
            cookie: "0123456789abcdef".into(),
            ..NodeConfig::default()
        }
    }

    #[test]
    fn default_with_cookie_is_valid() {
        assert_eq!(valid().validate(), Ok(()));
    }

    #[test]
    fn invalid_settings_are_named() {
        let cases: Vec<(&str, NodeConfig)> = vec![
            (
                "node_name",
                NodeConfig {
                    node_name: "a b".into(),
                    ..valid()
                },
            ),
            (
                "cookie",
                NodeConfig {
                    cookie: "short".into(),
                    ..valid()
                },
            ),
            (
                "call_timeout_ms",
                NodeConfig {
                    call_timeout_ms: 0,
                    ..valid()
                },
            ),
            (
                "idle_after_secs",
                NodeConfig {
                    idle_after_secs: 0,
                    ..valid()
                },
            ),
            (
                "seeds",
                NodeConfig {
                    seeds: vec!["nohost".into()],
                    ..valid()
                },
            ),
            (
                "seeds",
                NodeConfig {
                    seeds: vec!["127.0.0.1:0".into()],
                    ..valid()
                },
            ),
            (
                "max_frame_bytes",
                NodeConfig {
                    max_frame_bytes: 10,
                    ..valid()
                },
            ),
            (
                "handshake_timeout_ms",
                NodeConfig {
                    handshake_timeout_ms: 99,
                    ..valid()
                },
            ),
            (
                "max_pending_handshakes",
                NodeConfig {
                    max_pending_handshakes: 0,
                    ..valid()
                },
            ),
            (
                "first_byte_timeout_ms",
                NodeConfig {
                    first_byte_timeout_ms: 0,
                    ..valid()
                },
            ),
            (
                "membership.probe_rtt_ms",
                NodeConfig {
                    membership: MembershipConfig {
                        probe_rtt_ms: 5_000,
                        ..Default::default()
                    },
                    ..valid()
                },
            ),
            (
                "membership.unreachable_after",
                NodeConfig {
                    membership: MembershipConfig {
                        unreachable_after: Duration::ZERO,
                        ..Default::default()
                    },
                    ..valid()
                },
            ),
            (
                "membership.unreachable_votes",
                NodeConfig {
                    membership: MembershipConfig {
                        unreachable_votes: 1,
                        ..Default::default()
                    },
                    ..valid()
                },
            ),
        ];
        for (setting, config) in cases {
            let error = config.validate().expect_err(setting);
            assert_eq!(error.setting, setting);
        }
    }

    #[test]
    fn empty_toml_is_default() {
        let config: NodeConfig = toml_like_empty();
        assert_eq!(config.node_name, "node-0");
    }

    #[test]
    fn unreachable_settings_read_from_toml() {
        let text = "[membership]\nunreachable_after = \"3s\"\nunreachable_votes = 0\n";
        let config: NodeConfig = toml::from_str(text).expect("valid settings");
        assert_eq!(config.membership.unreachable_after, Duration::from_secs(3));
        assert_eq!(config.membership.unreachable_votes, 0);

        let zero: NodeConfig =
            toml::from_str("[membership]\nunreachable_after = \"0s\"\n").expect("parses");
        let error = NodeConfig {
            cookie: valid().cookie,
            ..zero
        }
        .validate()
        .expect_err("zero is rejected");
        let message = error.to_string();
        assert!(
            message.contains("`membership.unreachable_after` = \"0s\""),
            "{message}"
        );
        assert!(message.contains("from 1s to 1h"), "{message}");
    }

    fn toml_like_empty() -> NodeConfig {
        serde_json::from_str("{}").expect("all fields have defaults")
    }
}
