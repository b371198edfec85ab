//! Node lifecycle states and the load figures that nodes gossip about themselves.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Incarnation;
use crate::storage::StoreId;

/// Lifecycle state of a node: `Joining → Active → Draining → Leaving → Dead`.
///
/// Only `Active` nodes receive new activations. `Draining` nodes keep serving the grains they
/// hold until each one has migrated away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NodeState {
    /// Started and gossiping, not yet ready to host grains.
    Joining,
    /// Hosts grains and receives new activations.
    Active,
    /// Serves the grains it holds while they migrate away; receives no new activations.
    Draining,
    /// Holds no grains and is about to leave the cluster.
    Leaving,
    /// Left gracefully or was declared down by the failure detector.
    Dead,
}

impl NodeState {
    /// Returns whether placement may choose a node in this state for a new activation.
    pub fn accepts_activations(self) -> bool {
        self == NodeState::Active
    }

    /// Returns the upper-case name used in metrics labels and the gRPC API.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Joining => "JOINING",
            NodeState::Active => "ACTIVE",
            NodeState::Draining => "DRAINING",
            NodeState::Leaving => "LEAVING",
            NodeState::Dead => "DEAD",
        }
    }

    /// All states, in lifecycle order.
    pub const ALL: [NodeState; 5] = [
        NodeState::Joining,
        NodeState::Active,
        NodeState::Draining,
        NodeState::Leaving,
        NodeState::Dead,
    ];
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Load figures of one node, sampled by the node itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Number of grain activations the node hosts.
    pub activations: u64,
    /// Grain calls served per second, averaged over the last sampling period.
    pub calls_per_sec: f64,
    /// Messages waiting in all activation mailboxes together.
    pub mailbox_depth_total: u64,
    /// Messages waiting in the fullest activation mailbox.
    pub mailbox_depth_max: u64,
    /// CPU use of the node process in percent of one core (200 means two busy cores).
    pub cpu_percent: f64,
    /// Resident memory of the node process in bytes.
    pub memory_bytes: u64,
}

impl NodeLoad {
    /// Replaces rates that no node measures, which only a faulty or hostile peer sends (not a
    /// number, infinite or negative), with 0, so that the scaling policies never compute with
    /// them. Returns whether a figure was replaced.
    pub fn sanitize(&mut self) -> bool {
        let mut replaced = false;
        for figure in [&mut self.calls_per_sec, &mut self.cpu_percent] {
            if !figure.is_finite() || *figure < 0.0 {
                *figure = 0.0;
                replaced = true;
            }
        }
        replaced
    }
}

/// What a node broadcasts about itself: its lifecycle state and load, with a version.
///
/// Receivers keep the item with the highest version per incarnation and ignore older ones, so
/// re-sending the same item is harmless and late joiners catch up from the periodic re-send.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeMeta {
    /// Raised by the node on every change and every periodic re-send.
    pub version: u64,
    /// Lifecycle state.
    pub state: NodeState,
    /// Load figures at the time of sending.
    pub load: NodeLoad,
    /// Milliseconds since the Unix epoch at which the node's process started; the oldest Active
    /// node runs the scaling supervisor.
    pub started_at_unix_ms: u64,
    /// Id of the node's database; `None` from releases that did not send one. Nodes with
    /// different ids do not form one cluster (see `membership::check_before_active`).
    pub store_id: Option<StoreId>,
    /// Live peers to which the node has had no ready cluster session for at least
    /// `membership.unreachable_after`: its votes to declare them down (see the
    /// `unreachable_votes` module). At most [`MAX_UNREACHABLE_REPORT`] incarnations; empty
    /// from releases that did not send it.
    ///
    /// It is the last field so that older releases, which stop decoding before it, still
    /// read the meta.
    pub unreachable: Vec<Incarnation>,
}

/// Maximum number of peers in [`NodeMeta::unreachable`]. It bounds the size of the meta
/// broadcast: eight names of at most 63 bytes with their boot ids add at most about 600 bytes.
pub const MAX_UNREACHABLE_REPORT: usize = 8;
