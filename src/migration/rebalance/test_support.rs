//! Members and activations for the rebalancer's tests.

use std::net::IpAddr;

use crate::grain::GrainId;
use crate::membership::{MemberInfo, NodeId, NodeIdFields, NodeLoad, NodeState};

use super::planner::ActivationSample;

/// A member named `name` in `state` with the gossiped `load`.
pub(crate) fn member_with(name: &str, state: NodeState, load: NodeLoad) -> MemberInfo {
    MemberInfo {
        id: NodeId::new(NodeIdFields {
            name: name.into(),
            boot_id: 1,
            bump: 0,
            ip: IpAddr::from([127, 0, 0, 1]),
            gossip_port: 1,
            cluster_port: 2,
            grpc_port: 3,
        }),
        state,
        load,
        meta_version: 1,
        started_at_unix_ms: Some(1),
        store_id: None,
    }
}

/// An Active member whose load is `activations` idle activations.
pub(crate) fn member(name: &str, activations: u64) -> MemberInfo {
    let load = NodeLoad {
        activations,
        ..NodeLoad::default()
    };
    member_with(name, NodeState::Active, load)
}

/// A movable `counter` activation that ran `turns` turns.
pub(crate) fn sample(key: &str, turns: u64) -> ActivationSample {
    ActivationSample {
        grain: GrainId::new("counter", key),
        turns,
        mailbox_depth: 0,
        immovable: false,
    }
}

/// `count` idle activations with keys `{prefix}-000` and up.
pub(crate) fn idle_grains(prefix: &str, count: usize) -> Vec<ActivationSample> {
    (0..count)
        .map(|i| sample(&format!("{prefix}-{i:03}"), 0))
        .collect()
}
