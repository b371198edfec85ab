//! The `gristmill.v1.Cluster` service: members, load and membership changes.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;

use futures::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tonic::{Request, Response, Status};

use super::convert;
use super::pb;
use super::pb::membership_event::Kind;
use crate::membership::{Incarnation, MembershipEvent, NodeState, shares_store};
use crate::runtime::Node;
use crate::storage::StoreId;

/// Serves cluster membership and metrics from one node's view.
pub struct ClusterService {
    node: Node,
}

impl ClusterService {
    /// Creates the service over `node`.
    pub fn new(node: Node) -> Self {
        Self { node }
    }

    fn members(&self) -> Vec<pb::Member> {
        let local = &self.node.id().name;
        self.node
            .members()
            .iter()
            .map(|m| convert::member(m, local))
            .collect()
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::MembershipEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn list_members(
        &self,
        _request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        Ok(Response::new(pb::ListMembersResponse {
            members: self.members(),
            node: self.node.id().name.to_string(),
        }))
    }

    async fn get_cluster_metrics(
        &self,
        _request: Request<pb::GetClusterMetricsRequest>,
    ) -> Result<Response<pb::GetClusterMetricsResponse>, Status> {
        let members = self.node.members();
        let live = members.iter().filter(|m| m.state != NodeState::Dead);
        let mut members_by_state: HashMap<String, u64> = HashMap::new();
        for member in &members {
            *members_by_state
                .entry(member.state.as_str().to_string())
                .or_default() += 1;
        }
        Ok(Response::new(pb::GetClusterMetricsResponse {
            total_activations: live.clone().map(|m| m.load.activations).sum(),
            total_calls_per_sec: live.clone().map(|m| m.load.calls_per_sec).sum(),
            mailbox_depth_max: live.map(|m| m.load.mailbox_depth_max).max().unwrap_or(0),
            members_by_state,
            members: self.members(),
            node: self.node.id().name.to_string(),
        }))
    }

    async fn drain_node(
        &self,
        request: Request<pb::NodeDrainRequest>,
    ) -> Result<Response<pb::NodeDrainResponse>, Status> {
        super::migrate::drain_node(&self.node, request.into_inner())
            .await
            .map(Response::new)
    }

    type WatchMembershipStream = EventStream;

    async fn watch_membership(
        &self,
        _request: Request<pb::WatchMembershipRequest>,
    ) -> Result<Response<Self::WatchMembershipStream>, Status> {
        // Subscribe before taking the snapshot, so no change falls between the two.
        let changes = BroadcastStream::new(self.node.subscribe_members());
        let snapshot: Vec<Result<pb::MembershipEvent, Status>> = self
            .members()
            .into_iter()
            .map(|member| {
                Ok(pb::MembershipEvent {
                    kind: Kind::Snapshot.into(),
                    member: Some(member),
                })
            })
            .collect();
        let local = self.node.id().name.clone();
        let store_id = self.node.store_id();
        let mut hidden = HashSet::new();
        let changes = changes.filter_map(move |event| match event {
            Ok(event) => membership_event(&event, &local, store_id, &mut hidden).map(Ok),
            // A slow client missed events; tell it to resubscribe for a fresh snapshot.
            Err(_) => Some(Err(Status::data_loss(
                "membership events were dropped; watch again",
            ))),
        });
        let stream = tokio_stream::iter(snapshot).chain(changes);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Converts a membership event for a watcher, or returns `None` to skip it.
///
/// A member that uses another database than `store_id` is not part of this node's cluster, so
/// the node does not list it (see `Node::members`). A watcher that already saw it, such as in
/// a `Joined` event sent before its store id arrived, gets one `Left` event for it in place of
/// its later events. `hidden` records the incarnations that got that event.
fn membership_event(
    event: &MembershipEvent,
    local: &str,
    store_id: StoreId,
    hidden: &mut HashSet<Incarnation>,
) -> Option<pb::MembershipEvent> {
    let (mut kind, member) = match event {
        MembershipEvent::Joined(member) => (Kind::Joined, member),
        MembershipEvent::Updated(member) => (Kind::Updated, member),
        MembershipEvent::Left { member, .. } => (Kind::Left, member),
        MembershipEvent::SelfDeclaredDown => return None,
    };
    if kind == Kind::Left {
        if hidden.remove(&member.incarnation()) {
            return None;
        }
    } else if !shares_store(store_id, member) {
        if !hidden.insert(member.incarnation()) {
            return None;
        }
        kind = Kind::Left;
    }
    let mut member = convert::member(member, local);
    if kind == Kind::Left {
        member.state = pb::NodeState::Dead.into();
    }
    Some(pb::MembershipEvent {
        kind: kind.into(),
        member: Some(member),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{LeaveReason, MemberInfo, test_members};

    const OURS: StoreId = StoreId(1);
    const THEIRS: StoreId = StoreId(2);

    fn member(state: NodeState, store_id: Option<StoreId>) -> MemberInfo {
        test_members::member("node-1", state, store_id)
    }

    /// Returns the kind and state of each event that a watcher receives for `events`.
    fn watched(events: &[MembershipEvent]) -> Vec<(Kind, pb::NodeState)> {
        let mut hidden = HashSet::new();
        events
            .iter()
            .filter_map(|event| membership_event(event, "node-0", OURS, &mut hidden))
            .map(|event| {
                let state = event.member.as_ref().expect("event has a member").state();
                (event.kind(), state)
            })
            .collect()
    }

    #[test]
    fn member_with_same_store_is_forwarded() {
        let events = [
            MembershipEvent::Joined(member(NodeState::Joining, None)),
            MembershipEvent::Updated(member(NodeState::Active, Some(OURS))),
            MembershipEvent::Left {
                member: member(NodeState::Dead, Some(OURS)),
                reason: LeaveReason::Left,
            },
        ];

        assert_eq!(
            watched(&events),
            [
                (Kind::Joined, pb::NodeState::Joining),
                (Kind::Updated, pb::NodeState::Active),
                (Kind::Left, pb::NodeState::Dead),
            ]
        );
    }

    #[test]
    fn member_with_other_store_is_shown_leaving_once() {
        let events = [
            MembershipEvent::Joined(member(NodeState::Joining, None)),
            MembershipEvent::Updated(member(NodeState::Joining, Some(THEIRS))),
            MembershipEvent::Updated(member(NodeState::Active, Some(THEIRS))),
            MembershipEvent::Left {
                member: member(NodeState::Dead, Some(THEIRS)),
                reason: LeaveReason::Left,
            },
        ];

        assert_eq!(
            watched(&events),
            [
                (Kind::Joined, pb::NodeState::Joining),
                (Kind::Left, pb::NodeState::Dead),
            ]
        );
    }
}
