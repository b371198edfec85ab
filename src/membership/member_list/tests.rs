//! Paging of the member list and the joining node's transfer, one behaviour per test.

use std::net::IpAddr;

use foca::{OwnedNotification, State};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::membership::NodeIdFields;
use crate::membership::{NodeLoad, NodeState};

const T0: Millis = Millis(10_000);
const RETRY: Duration = Duration::from_millis(500);

fn node(name: &str) -> NodeId {
    NodeId::new(NodeIdFields {
        name: name.into(),
        boot_id: 7,
        bump: 0,
        ip: IpAddr::from([127, 0, 0, 1]),
        gossip_port: 1,
        cluster_port: 2,
        grpc_port: 3,
    })
}

fn meta(version: u64) -> NodeMeta {
    NodeMeta {
        version,
        state: NodeState::Active,
        load: NodeLoad::default(),
        started_at_unix_ms: 5,
        store_id: None,
        unreachable: Vec::new(),
    }
}

/// Builds a view of `local` that lists `others` as up, each with one broadcast applied.
fn view_with(local: &str, others: &[NodeId]) -> MemberView {
    let mut view = MemberView::new(node(local), &meta(1), Duration::from_secs(60));
    for id in others {
        view.handle_notification(OwnedNotification::MemberUp(id.clone()), T0);
        view.handle_meta(SharedMeta::new(&id.name, id.boot_id, meta(3)), T0);
    }
    view
}

/// foca's record of `count` alive members named `member-0` onwards.
fn members(count: usize) -> Vec<Member<NodeId>> {
    (0..count)
        .map(|index| Member::new(node(&format!("member-{index}")), 2, State::Alive))
        .collect()
}

fn pages_snapshot(members: &[Member<NodeId>]) -> MemberListPages {
    let ids: Vec<NodeId> = members.iter().map(|member| member.id().clone()).collect();
    let view = view_with("local", &ids);
    let mut pages = MemberListPages::default();
    pages.refresh(members.iter(), &view, T0);
    pages
}

fn page_of(names: &[&str], after: Option<&str>, more: bool) -> MembersPage {
    MembersPage {
        after: after.map(String::from),
        entries: names
            .iter()
            .map(|name| MemberListEntry {
                member: Member::alive(node(name)),
                meta: None,
            })
            .collect(),
        more,
    }
}

fn request_after(after: Option<&str>) -> MembersRequest {
    MembersRequest {
        after: after.map(String::from),
    }
}

#[test]
fn request_is_padded_and_round_trips() {
    let request = request_after(Some("member-3"));

    let body = request.encode().expect("request encodes");

    assert_eq!(body.len(), REQUEST_BODY_LEN);
    assert_eq!(MembersRequest::decode(&body).expect("decodes"), request);
}

#[test]
fn short_request_is_rejected() {
    let body = request_after(None).encode().expect("request encodes");

    let error = MembersRequest::decode(&body[..MIN_REQUEST_BODY_LEN - 1]).expect_err("too short");

    assert!(
        matches!(error, MemberListError::RequestTooShort(_)),
        "{error:?}"
    );
}

#[test]
fn pages_list_every_member_once_in_name_order() {
    let members = members(300);
    let pages = pages_snapshot(&members);
    let mut expected: Vec<String> = members
        .iter()
        .map(|member| member.id().name.to_string())
        .chain(std::iter::once(String::from("local")))
        .collect();
    expected.sort();

    let mut listed = Vec::new();
    let mut request = request_after(None);
    let mut page_count = 0;
    loop {
        let page = pages.page(&request, REQUEST_BODY_LEN);
        page_count += 1;
        listed.extend(page.entries.iter().map(|e| e.member.id().name.to_string()));
        if !page.more {
            break;
        }
        request = request_after(listed.last().map(String::as_str));
    }

    assert_eq!(listed, expected);
    assert!(page_count > 1, "300 members need several pages");
}

#[test]
fn page_fits_request_length() {
    let pages = pages_snapshot(&members(300));

    for max_len in [MIN_REQUEST_BODY_LEN, 700, REQUEST_BODY_LEN] {
        let page = pages.page(&request_after(Some("member-1")), max_len);
        let encoded = page.encode().expect("page encodes");

        assert!(
            encoded.len() <= max_len,
            "page of {} bytes for {max_len}",
            encoded.len()
        );
        assert!(!page.entries.is_empty(), "page for {max_len} is empty");
        assert!(page.more, "page for {max_len} holds every member");
    }
}

#[test]
fn page_carries_meta_of_view() {
    let pages = pages_snapshot(&members(2));

    let page = pages.page(&request_after(None), REQUEST_BODY_LEN);

    let metas: Vec<Option<u64>> = page
        .entries
        .iter()
        .map(|entry| entry.meta.as_ref().map(|meta| meta.version))
        .collect();
    assert_eq!(
        metas,
        [Some(1), Some(3), Some(3)],
        "local, member-0, member-1"
    );
    assert_eq!(page.entries[1].member.incarnation(), 2);
}

#[test]
fn snapshot_takes_meta_of_same_live_incarnation() {
    let renewed = |name: &str| {
        NodeId::new(NodeIdFields {
            boot_id: 8,
            ..(*node(name)).clone()
        })
    };
    let mut view = view_with("local", &[node("a"), node("b"), node("d")]);
    view.handle_notification(OwnedNotification::MemberDown(node("d")), T0);
    // In foca's order, which is not by name.
    let members = [
        Member::new(node("d"), 0, State::Alive),
        Member::new(node("c"), 0, State::Alive),
        Member::new(renewed("b"), 0, State::Alive),
        Member::new(node("a"), 0, State::Alive),
    ];
    let mut pages = MemberListPages::default();

    pages.refresh(members.iter(), &view, T0);

    let entries: Vec<(&str, Option<u64>)> = pages
        .entries
        .iter()
        .map(|(entry, _)| {
            let name = entry.member.id().name.as_str();
            (name, entry.meta.as_ref().map(|meta| meta.version))
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("a", Some(3)),
            ("b", None),
            ("c", None),
            ("d", None),
            ("local", Some(1))
        ],
        "b has another boot id in the view, c is not in it, d is dead there"
    );
    for (entry, len) in &pages.entries {
        let encoded = postcard::to_allocvec(entry).expect("entry encodes");
        assert_eq!(*len, encoded.len(), "length of {entry:?}");
    }
}

#[test]
fn snapshot_turns_stale_after_max_age() {
    let mut pages = MemberListPages::default();
    assert!(pages.is_stale(T0));

    pages.refresh(members(1).iter(), &view_with("local", &[]), T0);

    assert!(!pages.is_stale(T0));
    assert!(pages.is_stale(T0 + SNAPSHOT_MAX_AGE));
}

#[test]
fn stale_snapshot_is_forgotten() {
    let mut pages = pages_snapshot(&members(3));

    pages.forget_if_stale(T0);
    let fresh = pages.page(&request_after(None), REQUEST_BODY_LEN);
    pages.forget_if_stale(T0 + SNAPSHOT_MAX_AGE);
    let forgotten = pages.page(&request_after(None), REQUEST_BODY_LEN);

    assert_eq!(fresh.entries.len(), 4);
    assert!(forgotten.entries.is_empty());
    assert!(pages.is_stale(T0 + SNAPSHOT_MAX_AGE));
}

#[test]
fn pull_follows_pages_until_last() {
    let mut pull = MemberListPull::default();
    let peer = node("seed");
    let from_peer = |id: &NodeId| id.name == "seed";

    let first = pull.start(peer.clone(), T0);
    let second = pull.handle_page(&page_of(&["a", "b"], None, true), from_peer, T0);
    let done = pull.handle_page(&page_of(&["c"], Some("b"), false), from_peer, T0);

    let request = |after: Option<&str>| PullStep::Send {
        peer: peer.clone(),
        request: request_after(after),
    };
    assert_eq!(first, request(None));
    assert_eq!(second, Some(request(Some("b"))));
    assert_eq!(
        done,
        Some(PullStep::Done {
            pages: 2,
            members: 3
        })
    );
    assert!(!pull.is_running());
}

#[test]
fn pull_ignores_unexpected_pages() {
    let from_peer = |id: &NodeId| id.name == "seed";
    let cases = [
        ("another sender", page_of(&["a"], None, false), false),
        ("other position", page_of(&["c"], Some("b"), false), true),
        (
            "names out of order",
            page_of(&["b", "a"], None, false),
            true,
        ),
        (
            "name not after position",
            page_of(&["a"], Some("a"), false),
            true,
        ),
        ("more without entries", page_of(&[], None, true), true),
    ];

    for (case, page, sent_by_peer) in cases {
        let mut pull = MemberListPull::default();
        pull.start(node("seed"), T0);

        let step = pull.handle_page(&page, |id| sent_by_peer && from_peer(id), T0);

        assert_eq!(step, None, "{case}");
        assert!(pull.is_running(), "{case}");
    }
}

#[test]
fn pull_without_transfer_ignores_page() {
    let mut pull = MemberListPull::default();

    let step = pull.handle_page(&page_of(&["a"], None, false), |_| true, T0);

    assert_eq!(step, None);
}

#[test]
fn pull_resends_then_gives_up() {
    let mut pull = MemberListPull::default();
    let peer = node("seed");
    let resend = PullStep::Send {
        peer: peer.clone(),
        request: request_after(None),
    };
    pull.start(peer.clone(), T0);

    assert_eq!(pull.handle_tick(T0 + RETRY / 2, RETRY), PullStep::Wait);
    let mut now = T0;
    for attempt in 2..=MAX_ATTEMPTS {
        now = now + RETRY;
        assert_eq!(pull.handle_tick(now, RETRY), resend, "attempt {attempt}");
    }
    now = now + RETRY;
    assert_eq!(
        pull.handle_tick(now, RETRY),
        PullStep::GaveUp { peer, pages: 0 }
    );
    assert!(!pull.is_running());
}

#[test]
fn page_resets_attempts() {
    let mut pull = MemberListPull::default();
    pull.start(node("seed"), T0);
    pull.handle_tick(T0 + RETRY, RETRY);

    let later = T0 + RETRY * 2;
    pull.handle_page(&page_of(&["a"], None, true), |_| true, later);

    for attempt in 2..=MAX_ATTEMPTS {
        let now = later + RETRY * (attempt - 1);
        assert!(
            matches!(pull.handle_tick(now, RETRY), PullStep::Send { .. }),
            "attempt {attempt}"
        );
    }
}

#[test]
fn join_peer_prefers_announced_seed() {
    let members = members(5);
    let seed = members[3].id().clone();

    let chosen = choose_peer(members.iter(), std::slice::from_ref(&seed));
    let fallback = choose_peer(members.iter(), &[node("gone")]);
    let nobody = choose_peer(std::iter::empty(), std::slice::from_ref(&seed));

    assert_eq!(chosen, Some(seed));
    assert_eq!(fallback, Some(members[0].id().clone()));
    assert_eq!(nobody, None);
}

#[test]
fn pull_delay_stays_near_period() {
    let mut rng = StdRng::seed_from_u64(1);
    let period = Duration::from_secs(30);

    for _ in 0..1_000 {
        let delay = pull_delay(period, &mut rng);
        assert!(delay >= period / 2, "{delay:?}");
        assert!(delay < period * 3 / 2, "{delay:?}");
    }
}

#[test]
fn random_peer_is_a_member() {
    let members = members(5);
    let mut rng = StdRng::seed_from_u64(1);

    let chosen = choose_random_peer(members.iter(), &mut rng).expect("a member");

    assert!(members.iter().any(|member| *member.id() == chosen));
    assert_eq!(choose_random_peer(std::iter::empty(), &mut rng), None);
}
