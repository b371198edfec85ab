//! The node process that hosts the counter grains the remote, one-way and gRPC scenarios call.

use std::time::Duration;

use gristmill::api::pb;

use super::driver::counter_key;
use super::procs::{Helper, NodeLauncher};
use crate::client::NodeClient;
use crate::ready::ReadyLine;

/// A `gristmill run` node with `in_flight` counter grains active on it and its rebalancer
/// paused, so the grains stay where the benchmark expects them.
pub struct HostNode {
    /// The node's addresses.
    pub ready: ReadyLine,
    /// A gRPC client of the node.
    pub client: NodeClient,
    _process: Helper,
}

/// Returns the `counter.get` request for grain `key`, encoded with postcard.
pub fn get_request(key: String) -> pb::InvokeRequest {
    pb::InvokeRequest {
        grain_type: "counter".into(),
        key,
        method: "get".into(),
        // `Get` is a unit struct, which postcard encodes as no bytes.
        payload: Vec::new(),
        format: pb::PayloadFormat::Postcard as i32,
        timeout_ms: 0,
    }
}

impl HostNode {
    /// Returns the host in `slot`, starting it first if the slot is empty.
    pub async fn get_or_start<'a>(
        slot: &'a mut Option<HostNode>,
        launcher: &NodeLauncher,
        grains: usize,
    ) -> Result<&'a mut HostNode, String> {
        if slot.is_none() {
            *slot = Some(HostNode::start(launcher, grains).await?);
        }
        Ok(slot.as_mut().expect("the slot was just filled"))
    }

    async fn start(launcher: &NodeLauncher, grains: usize) -> Result<HostNode, String> {
        let (process, ready) = launcher.start("bench-host", None).await?;
        let mut client = NodeClient::connect(&ready.grpc_addr.to_string())
            .await
            .map_err(|error| error.to_string())?;
        client
            .grains
            .set_rebalancer_paused(pb::SetRebalancerPausedRequest { paused: true })
            .await
            .map_err(|error| format!("cannot pause the host's rebalancer: {error}"))?;
        // Alone in its cluster, the host places every grain on itself.
        for index in 0..grains {
            let started = std::time::Instant::now();
            while let Err(status) = client.grains.invoke(get_request(counter_key(index))).await {
                if started.elapsed() > Duration::from_secs(30) {
                    return Err(format!("cannot activate {}: {status}", counter_key(index)));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(HostNode {
            ready,
            client,
            _process: process,
        })
    }

    /// Returns the number of activations the host holds.
    pub async fn activations(&mut self) -> Result<u64, String> {
        self.client
            .activation_count()
            .await
            .map_err(|error| format!("cannot list the host's activations: {error}"))
    }
}
