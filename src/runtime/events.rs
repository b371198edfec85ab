//! Reactions to membership events: sessions, directory hand-off, caches, and self-removal.

use tokio::sync::mpsc;

use super::node::Node;
use crate::membership::{LeaveReason, MemberInfo, MembershipEvent, NodeState};

/// Applies membership events to the node until the membership agent stops.
pub(crate) async fn run_event_loop(
    node: Node,
    mut events: mpsc::UnboundedReceiver<MembershipEvent>,
) {
    while let Some(event) = events.recv().await {
        let mut live_set_changed = false;
        match &event {
            MembershipEvent::Joined(member) => {
                tracing::info!(node = %node.id().name, member = %member.id, "member joined");
                node.transport().handle_peer_up(&member.id);
                live_set_changed = true;
            }
            MembershipEvent::Updated(member) => {
                if member.state == NodeState::Leaving {
                    node.record_departure(member.incarnation());
                }
                if member.state == NodeState::Dead {
                    node.transport().handle_peer_down(&member.id).await;
                    live_set_changed = true;
                }
            }
            MembershipEvent::Left { member, reason } => {
                log_departure(&node, member, *reason);
                if *reason == LeaveReason::Left {
                    node.record_departure(member.incarnation());
                }
                node.transport().handle_peer_down(&member.id).await;
                node.inner
                    .cache
                    .lock()
                    .expect("cache lock poisoned")
                    .handle_host_down(&member.incarnation());
                node.inner
                    .recent_placements
                    .lock()
                    .expect("placements lock poisoned")
                    .remove(&member.incarnation());
                live_set_changed = true;
            }
            MembershipEvent::SelfDeclaredDown => {
                node.stop_declared_down().await;
            }
        }
        let before: Vec<_> = node
            .inner
            .members
            .read()
            .expect("members lock poisoned")
            .live
            .clone();
        node.refresh_members();
        node.inner.metrics.set_members(&node.members());
        let after_changed = node
            .inner
            .members
            .read()
            .expect("members lock poisoned")
            .live
            != before;
        // Placement counts are only needed until the next load gossip arrives.
        if let MembershipEvent::Updated(member) = &event {
            node.inner
                .recent_placements
                .lock()
                .expect("placements lock poisoned")
                .remove(&member.incarnation());
        }
        let _ = node.inner.member_events.send(event);
        if live_set_changed || after_changed {
            node.sync_directory().await;
        }
    }
}

/// Logs a member's departure: a graceful leave or a replacement at info level, a failure that
/// the failure detector found at warn level.
fn log_departure(node: &Node, member: &MemberInfo, reason: LeaveReason) {
    let local = &node.id().name;
    match reason {
        LeaveReason::Left => tracing::info!(node = %local, member = %member.id, "member left"),
        LeaveReason::Replaced => {
            tracing::info!(node = %local, member = %member.id, "member replaced by a new incarnation")
        }
        LeaveReason::DeclaredDown => {
            tracing::warn!(node = %local, member = %member.id, "member declared down by the failure detector")
        }
    }
}
