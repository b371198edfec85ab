//! Transitions of the member view, one behaviour per test.

use std::net::IpAddr;
use std::time::Duration;

use foca::OwnedNotification;

use super::*;
use crate::membership::NodeIdFields;

const RETENTION: Duration = Duration::from_secs(60);
const T0: Millis = Millis(1_000);

fn node(name: &str, boot_id: u64, bump: u32) -> NodeId {
    NodeId::new(NodeIdFields {
        name: name.into(),
        boot_id,
        bump,
        ip: IpAddr::from([127, 0, 0, 1]),
        gossip_port: 1,
        cluster_port: 2,
        grpc_port: 3,
    })
}

fn meta(version: u64, state: NodeState, activations: u64) -> NodeMeta {
    NodeMeta {
        version,
        state,
        load: NodeLoad {
            activations,
            ..NodeLoad::default()
        },
        started_at_unix_ms: 42,
        store_id: None,
        unreachable: Vec::new(),
    }
}

fn view() -> MemberView {
    MemberView::new(
        node("local", 1, 0),
        &meta(1, NodeState::Active, 0),
        RETENTION,
    )
}

fn up(view: &mut MemberView, id: &NodeId) -> Vec<MembershipEvent> {
    view.handle_notification(OwnedNotification::MemberUp(id.clone()), T0)
}

fn down(view: &mut MemberView, id: &NodeId, now: Millis) -> Vec<MembershipEvent> {
    view.handle_notification(OwnedNotification::MemberDown(id.clone()), now)
}

fn rename(view: &mut MemberView, old: &NodeId, new: &NodeId) -> Vec<MembershipEvent> {
    view.handle_notification(OwnedNotification::Rename(old.clone(), new.clone()), T0)
}

fn broadcast(view: &mut MemberView, id: &NodeId, meta: NodeMeta) -> Vec<MembershipEvent> {
    view.handle_meta(SharedMeta::new(&id.name, id.boot_id, meta), T0)
}

fn left(events: &[MembershipEvent]) -> Vec<(String, LeaveReason)> {
    events
        .iter()
        .filter_map(|event| match event {
            MembershipEvent::Left { member, reason } => Some((member.id.to_string(), *reason)),
            _ => None,
        })
        .collect()
}

fn joined(events: &[MembershipEvent]) -> Vec<MemberInfo> {
    events
        .iter()
        .filter_map(|event| match event {
            MembershipEvent::Joined(info) => Some(info.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn new_view_holds_only_local_node() {
    let view = view();

    let names: Vec<_> = view.members().map(|info| info.id.name.clone()).collect();
    assert_eq!(names, ["local"]);
    assert_eq!(view.local().state, NodeState::Active);
    assert_eq!(view.local().meta_version, 1);
    assert!(!view.is_connected());
}

#[test]
fn member_up_without_meta_joins_as_joining() {
    let mut view = view();
    let peer = node("peer", 7, 0);

    let events = up(&mut view, &peer);

    let joined = joined(&events);
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0].id, peer);
    assert_eq!(joined[0].state, NodeState::Joining);
    assert_eq!(joined[0].meta_version, 0);
    assert_eq!(joined[0].started_at_unix_ms, None);
}

#[test]
fn repeated_member_up_is_quiet() {
    let mut view = view();
    let peer = node("peer", 7, 0);
    up(&mut view, &peer);

    assert_eq!(up(&mut view, &peer), []);
}

#[test]
fn meta_of_live_member_updates_state_and_load() {
    let mut view = view();
    let peer = node("peer", 7, 0);
    up(&mut view, &peer);

    let events = broadcast(&mut view, &peer, meta(3, NodeState::Active, 5));

    let [MembershipEvent::Updated(info)] = events.as_slice() else {
        panic!("expected one Updated, got {events:?}");
    };
    assert_eq!(info.state, NodeState::Active);
    assert_eq!(info.load.activations, 5);
    assert_eq!(info.meta_version, 3);
    assert_eq!(info.started_at_unix_ms, Some(42));
}

#[test]
fn stale_meta_version_is_ignored() {
    let mut view = view();
    let peer = node("peer", 7, 0);
    up(&mut view, &peer);
    broadcast(&mut view, &peer, meta(3, NodeState::Active, 5));

    let older = broadcast(&mut view, &peer, meta(2, NodeState::Draining, 9));
    let same = broadcast(&mut view, &peer, meta(3, NodeState::Draining, 9));

    assert_eq!(older, []);
    assert_eq!(same, []);
    let info = view.by_name("peer").expect("peer is listed");
    assert_eq!(info.state, NodeState::Active);
    assert_eq!(info.meta_version, 3);
}

#[test]
fn newer_unchanged_meta_raises_version_quietly() {
    let mut view = view();
    let peer = node("peer", 7, 0);
    up(&mut view, &peer);
    broadcast(&mut view, &peer, meta(3, NodeState::Active, 5));

    let events = broadcast(&mut view, &peer, meta(4, NodeState::Active, 5));

    assert_eq!(events, []);
    assert_eq!(view.by_name("peer").map(|info| info.meta_version), Some(4));
}

#[test]
fn meta_of_older_incarnation_is_ignored() {
    let mut view = view();
    let peer = node("peer", 7, 0);
    up(&mut view, &peer);

    let events = broadcast(
        &mut view,
        &node("peer", 6, 0),
        meta(9, NodeState::Active, 5),
    );

    assert_eq!(events, []);
    assert_eq!(
        view.by_name("peer").map(|info| info.state),
        Some(NodeState::Joining)
    );
}

#[test]
fn meta_before_member_up_applies_on_join() {
    let mut view = view();
    let peer = node("peer", 7, 0);

    let early = broadcast(&mut view, &peer, meta(2, NodeState::Active, 4));
    let events = up(&mut view, &peer);

    assert_eq!(early, []);
    assert_eq!(view.by_name("peer").map(|info| info.id.clone()), Some(peer));
    let joined = joined(&events);
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0].state, NodeState::Active);
    assert_eq!(joined[0].load.activations, 4);
    assert_eq!(joined[0].meta_version, 2);
}

#[test]
fn meta_about_local_name_is_ignored() {
    let mut view = view();

    let events = broadcast(&mut view, &node("local", 1, 0), meta(9, NodeState::Dead, 0));

    assert_eq!(events, []);
    assert_eq!(view.local().state, NodeState::Active);
}

#[test]
fn member_down_marks_dead_as_declared_down() {
    let mut view = view();
    let peer = node("peer", 7, 0);
    up(&mut view, &peer);
    broadcast(&mut view, &peer, meta(2, NodeState::Active, 4));

    let events = down(&mut view, &peer, T0);

    assert_eq!(
        left(&events),
        [(peer.to_string(), LeaveReason::DeclaredDown)]
    );
    let info = view.by_name("peer").expect("dead members stay listed");
    assert_eq!(info.state, NodeState::Dead);
    assert_eq!(info.load.activations, 4);
    assert_eq!(view.live().count(), 1);
}

#[test]
fn member_down_after_leaving_meta_is_graceful() {
    let mut view = view();
    let peer = node("peer", 7, 0);
    up(&mut view, &peer);
    broadcast(&mut view, &peer, meta(2, NodeState::Leaving, 0));

    let events = down(&mut view, &peer, T0);

    assert_eq!(left(&events), [(peer.to_string(), LeaveReason::Left)]);
}

#[test]
fn dead_meta_means_left_gracefully() {
    let mut view = view();
    let peer = node("peer", 7, 0);
    up(&mut view, &peer);

    let events = broadcast(&mut view, &peer, meta(2, NodeState::Dead, 0));
    let later_down = down(&mut view, &peer, T0);

    assert_eq!(left(&events), [(peer.to_string(), LeaveReason::Left)]);
    assert_eq!(later_down, [], "a member leaves only once");
}

#[test]
fn member_down_of_stale_identity_ignored() {
    let mut view = view();
    let peer = node("peer", 7, 1);
    up(&mut view, &peer);

    assert_eq!(down(&mut view, &node("other", 1, 0), T0), []);
    assert_eq!(down(&mut view, &node("peer", 7, 0), T0), []);
    assert_eq!(view.live().count(), 2);
}

#[test]
fn rename_of_live_member_replaces_it() {
    let mut view = view();
    let old = node("peer", 7, 0);
    let new = node("peer", 8, 0);
    up(&mut view, &old);
    broadcast(&mut view, &old, meta(5, NodeState::Active, 3));

    let events = rename(&mut view, &old, &new);

    assert_eq!(left(&events), [(old.to_string(), LeaveReason::Replaced)]);
    let joined = joined(&events);
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0].id, new);
    assert_eq!(
        joined[0].state,
        NodeState::Joining,
        "a new process has no meta yet"
    );
    assert_eq!(
        view.members().filter(|info| info.id.name == "peer").count(),
        1
    );
    assert!(view.get(&old.incarnation()).is_none());
    assert!(view.get(&new.incarnation()).is_some());
}

#[test]
fn renewed_identity_ends_incarnation() {
    let mut view = view();
    let old = node("peer", 7, 0);
    let renewed = node("peer", 7, 1);
    up(&mut view, &old);
    broadcast(&mut view, &old, meta(5, NodeState::Active, 3));

    let renamed = rename(&mut view, &old, &renewed);
    let upped = up(&mut view, &renewed);
    let later = broadcast(&mut view, &renewed, meta(6, NodeState::Active, 0));

    assert_eq!(
        left(&renamed),
        [(renewed.to_string(), LeaveReason::DeclaredDown)]
    );
    assert_eq!(joined(&renamed), []);
    assert_eq!(upped, [], "the renewed identity does not come back");
    assert_eq!(later, []);
    let entry = view.by_name("peer").expect("peer is listed");
    assert_eq!(entry.state, NodeState::Dead);
    assert_eq!(entry.id, renewed);
}

#[test]
fn declared_down_member_stays_dead_after_renew() {
    let mut view = view();
    let old = node("peer", 7, 0);
    let renewed = node("peer", 7, 1);
    up(&mut view, &old);

    let downed = down(&mut view, &old, T0);
    let renamed = rename(&mut view, &old, &renewed);
    let upped = up(&mut view, &renewed);

    assert_eq!(
        left(&downed),
        [(old.to_string(), LeaveReason::DeclaredDown)]
    );
    assert_eq!(renamed, []);
    assert_eq!(upped, [], "the renewed identity does not come back");
    assert_eq!(
        view.by_name("peer").map(|info| info.state),
        Some(NodeState::Dead)
    );
}

#[test]
fn restart_after_declared_down_joins() {
    let mut view = view();
    let old = node("peer", 7, 0);
    let renewed = node("peer", 7, 1);
    let restarted = node("peer", 8, 0);
    up(&mut view, &old);
    down(&mut view, &old, T0);
    rename(&mut view, &old, &renewed);

    let renamed = rename(&mut view, &renewed, &restarted);
    let upped = up(&mut view, &restarted);

    assert_eq!(renamed, []);
    assert_eq!(joined(&upped).len(), 1, "a new boot id is a new member");
    assert_eq!(
        view.by_name("peer").map(|info| info.id.clone()),
        Some(restarted)
    );
}

#[test]
fn rename_of_dead_member_waits_for_member_up() {
    let mut view = view();
    let old = node("peer", 7, 0);
    let new = node("peer", 8, 0);
    up(&mut view, &old);
    down(&mut view, &old, T0);

    let renamed = rename(&mut view, &old, &new);
    let upped = up(&mut view, &new);

    assert_eq!(renamed, []);
    assert_eq!(joined(&upped).len(), 1);
    assert_eq!(view.by_name("peer").map(|info| info.id.clone()), Some(new));
}

#[test]
fn rename_of_unknown_member_waits_for_member_up() {
    let mut view = view();
    let old = node("peer", 7, 0);
    let new = node("peer", 8, 0);

    let renamed = rename(&mut view, &old, &new);

    assert_eq!(renamed, []);
    assert_eq!(
        view.by_name("peer").map(|info| info.state),
        Some(NodeState::Dead)
    );
    assert_eq!(joined(&up(&mut view, &new)).len(), 1);
}

#[test]
fn member_up_with_newer_boot_replaces_dead_entry() {
    let mut view = view();
    let old = node("peer", 7, 0);
    let new = node("peer", 8, 0);
    up(&mut view, &old);
    down(&mut view, &old, T0);

    let events = up(&mut view, &new);

    assert_eq!(left(&events), [], "the old incarnation already left");
    assert_eq!(joined(&events).len(), 1);
    let peers: Vec<_> = view
        .members()
        .filter(|info| info.id.name == "peer")
        .collect();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].id, new);
}

#[test]
fn member_up_with_newer_boot_replaces_live_entry() {
    let mut view = view();
    let old = node("peer", 7, 0);
    let new = node("peer", 8, 0);
    up(&mut view, &old);

    let events = up(&mut view, &new);

    assert_eq!(left(&events), [(old.to_string(), LeaveReason::Replaced)]);
    assert_eq!(joined(&events).len(), 1);
    assert_eq!(view.members().count(), 2);
}

#[test]
fn member_up_with_older_identity_is_ignored() {
    let mut view = view();
    let new = node("peer", 8, 0);
    up(&mut view, &new);

    let events = up(&mut view, &node("peer", 7, 3));

    assert_eq!(events, []);
    assert_eq!(view.by_name("peer").map(|info| info.id.clone()), Some(new));
}

#[test]
fn pending_meta_of_departed_member_keeps_it_dead() {
    let mut view = view();
    let peer = node("peer", 7, 0);
    broadcast(&mut view, &peer, meta(2, NodeState::Dead, 0));

    let events = up(&mut view, &peer);

    assert_eq!(events, []);
    assert_eq!(
        view.by_name("peer").map(|info| info.state),
        Some(NodeState::Dead)
    );
}

#[test]
fn dead_member_is_forgotten_after_retention() {
    let mut view = view();
    let peer = node("peer", 7, 0);
    up(&mut view, &peer);
    down(&mut view, &peer, T0);

    let cases = [
        (T0, 0, true),
        (T0 + RETENTION - Duration::from_millis(1), 0, true),
        (T0 + RETENTION, 1, false),
    ];
    for (now, forgotten, listed) in cases {
        assert_eq!(view.handle_tick(now), forgotten, "forgotten at {now}");
        assert_eq!(view.by_name("peer").is_some(), listed, "listed at {now}");
    }
    assert!(
        view.by_name("local").is_some(),
        "the local entry is never forgotten"
    );
}

#[test]
fn pending_meta_expires_after_retention() {
    let mut view = view();
    let peer = node("peer", 7, 0);
    broadcast(&mut view, &peer, meta(2, NodeState::Active, 4));

    view.handle_tick(T0 + RETENTION);
    let events = up(&mut view, &peer);

    assert_eq!(joined(&events)[0].state, NodeState::Joining);
}

#[test]
fn active_and_idle_toggle_connected() {
    let mut view = view();

    assert_eq!(view.handle_notification(OwnedNotification::Active, T0), []);
    assert!(view.is_connected());
    assert_eq!(view.handle_notification(OwnedNotification::Idle, T0), []);
    assert!(!view.is_connected());
}

#[test]
fn rejoin_declares_self_down_and_renews_local_id() {
    let mut view = view();
    let renewed = node("local", 1, 1);

    let events = view.handle_notification(OwnedNotification::Rejoin(renewed.clone()), T0);

    assert_eq!(events, [MembershipEvent::SelfDeclaredDown]);
    assert_eq!(view.local().id, renewed);
}

#[test]
fn unexpected_defunct_declares_self_down() {
    let mut view = view();
    view.handle_notification(OwnedNotification::Active, T0);

    let events = view.handle_notification(OwnedNotification::Defunct, T0);

    assert_eq!(events, [MembershipEvent::SelfDeclaredDown]);
    assert!(!view.is_connected());
}

#[test]
fn defunct_after_leaving_is_quiet() {
    let mut view = view();
    view.set_local_meta(&meta(2, NodeState::Leaving, 0));

    let events = view.handle_notification(OwnedNotification::Defunct, T0);

    assert_eq!(events, []);
    assert_eq!(view.local().state, NodeState::Dead);
}

#[test]
fn local_meta_change_updates_local_entry() {
    let mut view = view();

    let changed = view.set_local_meta(&meta(2, NodeState::Draining, 0));
    let unchanged = view.set_local_meta(&meta(3, NodeState::Draining, 0));

    let [MembershipEvent::Updated(info)] = changed.as_slice() else {
        panic!("expected one Updated, got {changed:?}");
    };
    assert_eq!(info.state, NodeState::Draining);
    assert_eq!(unchanged, []);
    assert_eq!(view.local().meta_version, 3);
}

#[test]
fn notifications_about_local_name_are_ignored() {
    let mut view = view();
    let other_local = node("local", 9, 0);

    assert_eq!(up(&mut view, &other_local), []);
    assert_eq!(down(&mut view, &other_local, T0), []);
    assert_eq!(rename(&mut view, &node("local", 1, 0), &other_local), []);
    assert_eq!(view.local().id, node("local", 1, 0));
}

#[test]
fn queries_filter_by_state() {
    let mut view = view();
    let joining = node("a-joining", 1, 0);
    let active = node("b-active", 1, 0);
    let dead = node("c-dead", 1, 0);
    for id in [&joining, &active, &dead] {
        up(&mut view, id);
    }
    broadcast(&mut view, &active, meta(1, NodeState::Active, 0));
    down(&mut view, &dead, T0);

    let names = |infos: Vec<MemberInfo>| -> Vec<String> {
        infos.iter().map(|info| info.id.name.to_string()).collect()
    };
    assert_eq!(
        names(view.members().collect()),
        ["a-joining", "b-active", "c-dead", "local"]
    );
    assert_eq!(
        names(view.live().collect()),
        ["a-joining", "b-active", "local"]
    );
    assert_eq!(names(view.active().collect()), ["b-active", "local"]);
    assert_eq!(
        view.get(&active.incarnation()).map(|info| info.state),
        Some(NodeState::Active)
    );
    assert!(view.get(&node("b-active", 2, 0).incarnation()).is_none());
    assert!(view.by_name("missing").is_none());
}

#[test]
fn restart_after_suppressed_renew_joins_without_member_up() {
    let mut view = view();
    let old = node("peer", 7, 0);
    let renewed = node("peer", 7, 1);
    let restarted = node("peer", 8, 0);
    up(&mut view, &old);
    down(&mut view, &old, T0);
    rename(&mut view, &old, &renewed);
    // foca counts the renewed identity as up, although the view keeps it dead.
    up(&mut view, &renewed);

    // foca renames an identity that is up without a `MemberUp` for the new one.
    let renamed = rename(&mut view, &renewed, &restarted);

    assert_eq!(joined(&renamed).len(), 1, "the restart is a new member");
    assert_eq!(
        view.by_name("peer")
            .map(|info| (info.id.clone(), info.state)),
        Some((restarted, NodeState::Joining))
    );
}

#[test]
fn member_row_stays_small() {
    // A node keeps a row per member, so a simulation of n nodes keeps n² of them.
    assert_eq!(std::mem::size_of::<Entry>(), 24);
    assert_eq!(std::mem::size_of::<IdKey>(), 8);
}
