//! Conversions from runtime types to the generated gRPC messages.

use super::pb;
use crate::membership::{MemberInfo, NodeLoad, NodeState};

pub(crate) fn state(state: NodeState) -> pb::NodeState {
    match state {
        NodeState::Joining => pb::NodeState::Joining,
        NodeState::Active => pb::NodeState::Active,
        NodeState::Draining => pb::NodeState::Draining,
        NodeState::Leaving => pb::NodeState::Leaving,
        NodeState::Dead => pb::NodeState::Dead,
    }
}

pub(crate) fn load(load: &NodeLoad) -> pb::NodeLoad {
    pb::NodeLoad {
        activations: load.activations,
        calls_per_sec: load.calls_per_sec,
        mailbox_depth_total: load.mailbox_depth_total,
        mailbox_depth_max: load.mailbox_depth_max,
        cpu_percent: load.cpu_percent,
        memory_bytes: load.memory_bytes,
    }
}

pub(crate) fn member(member: &MemberInfo, local_name: &str) -> pb::Member {
    pb::Member {
        name: member.id.name.to_string(),
        boot_id: member.id.boot_id,
        gossip_addr: member.id.gossip_addr().to_string(),
        cluster_addr: member.id.cluster_addr().to_string(),
        grpc_addr: member.id.grpc_addr().to_string(),
        state: state(member.state).into(),
        load: Some(load(&member.load)),
        is_self: member.id.name == local_name,
        meta_version: member.meta_version,
        started_at_unix_ms: member.started_at_unix_ms.unwrap_or(0),
    }
}
