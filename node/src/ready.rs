//! The one JSON line that `gristmill run` prints on stdout once the node serves.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Events `gristmill run` prints on stdout, one JSON object per line, tagged by `event`.
///
/// Only `ready` exists: `{"event":"ready","node":"node-0","boot_id":..,"gossip_addr":..}`.
/// Logs go to stderr, so stdout stays machine-readable for `gristmill local` and tests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum NodeEvent {
    /// The node has started and serves on the addresses it lists.
    Ready(ReadyLine),
}

/// Name, boot id and bound addresses of a started node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReadyLine {
    /// Stable node name.
    pub node: String,
    /// Id of this process start.
    pub boot_id: u64,
    /// UDP address of the SWIM gossip, and the address other nodes use as a seed.
    pub gossip_addr: SocketAddr,
    /// TCP address of the node-to-node cluster transport.
    pub cluster_addr: SocketAddr,
    /// TCP address of the gRPC API.
    pub grpc_addr: SocketAddr,
    /// TCP address of the Prometheus `/metrics` endpoint, or `None` when it is off.
    pub metrics_addr: Option<SocketAddr>,
}

impl ReadyLine {
    /// Parses one stdout line of `gristmill run`.
    pub fn parse(line: &str) -> Result<ReadyLine, serde_json::Error> {
        let NodeEvent::Ready(ready) = serde_json::from_str(line)?;
        Ok(ready)
    }

    /// Encodes the line as `gristmill run` prints it, without the newline.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(&NodeEvent::Ready(self.clone()))
            .expect("a ready line has only strings, numbers and addresses")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_round_trips_with_event_tag() {
        let ready = ReadyLine {
            node: "node-1".into(),
            boot_id: 42,
            gossip_addr: "127.0.0.1:4001".parse().unwrap(),
            cluster_addr: "127.0.0.1:4002".parse().unwrap(),
            grpc_addr: "127.0.0.1:4003".parse().unwrap(),
            metrics_addr: None,
        };
        let line = ready.to_json_line();

        assert!(
            line.starts_with(r#"{"event":"ready","node":"node-1","boot_id":42,"#),
            "{line}"
        );
        assert!(line.ends_with(r#""metrics_addr":null}"#), "{line}");
        assert_eq!(ReadyLine::parse(&line).unwrap(), ready);
    }
}
