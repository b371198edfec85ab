//! Several agents on loopback UDP in one process, with fast failure-detector settings.
//!
//! foca keeps no global state, so each test starts its own small cluster on OS-chosen ports.
//! Tests wait on the member list or on events with a timeout, never on a fixed sleep.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

use super::*;
use crate::membership::NodeIdFields;
use crate::membership::{LeaveReason, NodeLoad, lease_duration};

/// Upper bound for any single wait; generous because two cores may run several tests.
const WAIT: Duration = Duration::from_secs(10);

fn fast_config() -> MembershipConfig {
    MembershipConfig {
        probe_period_ms: 200,
        probe_rtt_ms: 80,
        suspect_to_down_ms: 600,
        indirect_probes: NonZeroU32::new(2).expect("2 is not zero"),
        meta_period_ms: 200,
        announce_retry_ms: 100,
        member_list_period_ms: 1_000,
        ..MembershipConfig::default()
    }
}

struct TestNode {
    id: NodeId,
    handle: MembershipHandle,
    events: mpsc::UnboundedReceiver<MembershipEvent>,
}

/// Cookie of the test nodes' cluster.
const COOKIE: &str = "membership-test-cookie-0123456789";

fn key() -> GossipKey {
    GossipKey::from_cookie(COOKIE)
}

impl TestNode {
    async fn start(name: &str, boot_id: u64, seeds: &[&TestNode]) -> Self {
        Self::start_with_key(name, boot_id, seeds, key()).await
    }

    async fn start_with_key(name: &str, boot_id: u64, seeds: &[&TestNode], key: GossipKey) -> Self {
        let seeds = seeds
            .iter()
            .map(|seed| seed.id.gossip_addr().to_string())
            .collect();
        Self::start_with(name, boot_id, seeds, fast_config(), key).await
    }

    async fn start_with(
        name: &str,
        boot_id: u64,
        seeds: Vec<String>,
        config: MembershipConfig,
        key: GossipKey,
    ) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind loopback");
        let id = NodeId::new(NodeIdFields {
            name: name.into(),
            boot_id,
            bump: 0,
            ip: IpAddr::from([127, 0, 0, 1]),
            gossip_port: socket.local_addr().expect("bound").port(),
            cluster_port: 0,
            grpc_port: 0,
        });
        let (handle, events) =
            MembershipAgent::start(id.clone(), config, seeds, socket, boot_id, None, key)
                .expect("agent starts");
        Self { id, handle, events }
    }

    fn address(&self) -> SocketAddr {
        self.id.gossip_addr()
    }

    /// Waits until the member list satisfies `condition` and returns that list.
    async fn wait_members(
        &self,
        what: &str,
        condition: impl FnMut(&Vec<MemberInfo>) -> bool,
    ) -> Vec<MemberInfo> {
        let mut members = self.handle.watch_members();
        match timeout(WAIT, members.wait_for(condition)).await {
            Ok(Ok(list)) => list.clone(),
            Ok(Err(_)) => panic!("{}: agent stopped while waiting for {what}", self.id.name),
            Err(_) => panic!(
                "{}: timed out waiting for {what}; members: {:#?}",
                self.id.name,
                self.handle.members()
            ),
        }
    }

    async fn wait_live(&self, count: usize) -> Vec<MemberInfo> {
        self.wait_members(&format!("{count} live members"), |members| {
            members.iter().filter(|info| info.is_live()).count() == count
        })
        .await
    }

    /// Waits for the first event that `select` maps to a value, skipping the others.
    async fn wait_event<T>(
        &mut self,
        what: &str,
        mut select: impl FnMut(MembershipEvent) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => {
                    if let Some(found) = select(event) {
                        return found;
                    }
                }
                Ok(None) => panic!("{}: event channel closed waiting for {what}", self.id.name),
                Err(_) => panic!("{}: timed out waiting for {what}", self.id.name),
            }
        }
    }

    async fn wait_left(&mut self, name: &str) -> (MemberInfo, LeaveReason) {
        self.wait_event(&format!("{name} to leave"), |event| match event {
            MembershipEvent::Left { member, reason } if member.id.name == name => {
                Some((member, reason))
            }
            _ => None,
        })
        .await
    }
}

fn find<'a>(members: &'a [MemberInfo], name: &str) -> &'a MemberInfo {
    members
        .iter()
        .find(|info| info.id.name == name)
        .unwrap_or_else(|| panic!("{name} is not listed in {members:#?}"))
}

async fn three_node_cluster() -> (TestNode, TestNode, TestNode) {
    let a = TestNode::start("a", 1, &[]).await;
    let b = TestNode::start("b", 2, &[&a]).await;
    let c = TestNode::start("c", 3, &[&a]).await;
    for node in [&a, &b, &c] {
        node.wait_live(3).await;
    }
    (a, b, c)
}

#[tokio::test]
async fn agents_converge_and_share_meta() {
    // Goal: three agents joined through one seed list each other and see each other's
    // state and load broadcasts. A fourth agent that joins later learns the meta of all.
    let (a, b, c) = three_node_cluster().await;
    let mut watcher = b.handle.subscribe().expect("agent runs");

    for (activations, node) in [&a, &b, &c].into_iter().enumerate() {
        node.handle
            .set_state(NodeState::Active)
            .expect("agent runs");
        node.handle
            .set_load(NodeLoad {
                activations: activations as u64 + 10,
                ..NodeLoad::default()
            })
            .expect("agent runs");
    }
    let all_active_with_load = |members: &Vec<MemberInfo>| {
        ["a", "b", "c"].iter().all(|name| {
            members.iter().any(|info| {
                info.id.name == *name
                    && info.state == NodeState::Active
                    && info.load.activations >= 10
            })
        })
    };
    for node in [&a, &b, &c] {
        node.wait_members("every node Active with load", all_active_with_load)
            .await;
    }

    let update = timeout(WAIT, async {
        loop {
            match watcher.recv().await {
                Ok(MembershipEvent::Updated(info)) if info.id.name == "a" => return info,
                Ok(_) => {}
                Err(error) => panic!("watcher failed: {error}"),
            }
        }
    })
    .await
    .expect("b's watchers receive a's update");
    assert_eq!(update.state, NodeState::Active);
    for node in [&a, &b, &c] {
        assert!(node.handle.is_joined(), "{}", node.id.name);
    }

    let late = TestNode::start("d", 4, &[&a]).await;
    let seen = late
        .wait_members("the meta of a, b and c", all_active_with_load)
        .await;
    for (name, activations, started_at) in [("a", 10, 1), ("b", 11, 2), ("c", 12, 3)] {
        let info = find(&seen, name);
        assert_eq!(info.load.activations, activations, "{name}");
        assert_eq!(info.started_at_unix_ms, Some(started_at), "{name}");
        assert!(info.meta_version > 0, "{name}");
    }
    assert_eq!(find(&seen, "d").state, NodeState::Joining);
    for node in [&a, &b, &c] {
        node.wait_live(4).await;
    }
}

#[tokio::test]
async fn local_node_is_first_joined_event() {
    let mut a = TestNode::start("a", 1, &[]).await;

    let first = a.events.recv().await.expect("agent runs");

    let MembershipEvent::Joined(info) = first else {
        panic!("expected Joined, got {first:?}");
    };
    assert_eq!(info.id, a.id);
    assert_eq!(info.state, NodeState::Joining);
    assert!(!a.handle.is_joined(), "a lone node has nobody to join");
}

#[tokio::test]
async fn abrupt_stop_is_declared_dead() {
    let (mut a, mut b, c) = three_node_cluster().await;

    let stopped_at = Instant::now();
    drop(c);
    let (member, reason) = a.wait_left("c").await;
    let detected_after = stopped_at.elapsed();
    let (_, reason_at_b) = b.wait_left("c").await;

    eprintln!("abrupt stop detected after {detected_after:?}");
    assert_eq!(reason, LeaveReason::DeclaredDown);
    assert_eq!(reason_at_b, LeaveReason::DeclaredDown);
    assert_eq!(member.state, NodeState::Dead);
    let members = a.wait_live(2).await;
    assert_eq!(
        find(&members, "c").state,
        NodeState::Dead,
        "dead members stay listed"
    );
}

#[tokio::test]
async fn leave_is_seen_as_graceful() {
    let (mut a, b, mut c) = three_node_cluster().await;

    let left_at = Instant::now();
    b.handle.leave().await.expect("leave completes");
    let (_, reason) = a.wait_left("b").await;
    let seen_after = left_at.elapsed();
    let (_, reason_at_c) = c.wait_left("b").await;

    eprintln!("graceful leave seen after {seen_after:?}");
    assert_eq!(reason, LeaveReason::Left);
    assert_eq!(reason_at_c, LeaveReason::Left);
    let probe_and_suspicion = Duration::from_millis(200 + 600);
    assert!(
        seen_after < probe_and_suspicion,
        "leave took {seen_after:?}, as long as failure detection"
    );
    assert!(matches!(
        b.handle.set_state(NodeState::Active),
        Err(MembershipError::Stopped)
    ));
}

#[tokio::test]
async fn restart_replaces_old_incarnation() {
    let (mut a, b, c) = three_node_cluster().await;
    let old_b = b.id.clone();

    drop(b);
    let new_b = TestNode::start("b", 20, &[&a]).await;
    let (left, _) = a.wait_left("b").await;
    let members = a
        .wait_members("the new b live", |members| {
            members
                .iter()
                .any(|info| info.id.boot_id == 20 && info.is_live())
        })
        .await;

    assert_eq!(left.id, old_b);
    assert_eq!(
        members.iter().filter(|info| info.id.name == "b").count(),
        1,
        "one entry per name: {members:#?}"
    );
    for node in [&a, &c, &new_b] {
        let members = node
            .wait_members("three live members, the new b among them", |members| {
                let live = members.iter().filter(|info| info.is_live()).count();
                let new_b_live = members
                    .iter()
                    .any(|info| info.id.name == "b" && info.id.boot_id == 20 && info.is_live());
                live == 3 && new_b_live
            })
            .await;
        let entries = members.iter().filter(|info| info.id.name == "b").count();
        assert_eq!(entries, 1, "{}", node.id.name);
    }
}

#[tokio::test]
async fn random_datagrams_are_rejected() {
    let (a, b) = {
        let a = TestNode::start("a", 1, &[]).await;
        let b = TestNode::start("b", 2, &[&a]).await;
        a.wait_live(2).await;
        b.wait_live(2).await;
        (a, b)
    };
    let attacker = UdpSocket::bind("127.0.0.1:0").await.expect("bind loopback");
    let mut rng = StdRng::seed_from_u64(7);
    let mut datagrams: Vec<Vec<u8>> = Vec::new();
    for len in [1, 2, 3, 17, 64, 300, 1399, 1400] {
        let mut junk = vec![0; len];
        rng.fill_bytes(&mut junk);
        junk[0] = !wire::MAGIC;
        datagrams.push(junk.clone());
        if len > 2 {
            junk[..2].copy_from_slice(&[wire::MAGIC, wire::Kind::Foca as u8]);
            datagrams.push(junk);
        }
    }
    datagrams.push(vec![0; 4000]);
    datagrams.push(vec![wire::MAGIC, 0xee]);
    datagrams.push(vec![wire::MAGIC, wire::Kind::IdentityRequest as u8]);
    datagrams.push(vec![wire::MAGIC, wire::Kind::IdentityReply as u8, 0xff]);
    datagrams.push(wire::encode_identity_reply(&b.id).expect("identity encodes"));
    // The junk is signed with the cluster's key, so that it reaches the framing and foca's
    // decoder. The same datagrams unsigned, or signed with another cookie, fail earlier.
    let key = key();
    let other_key = GossipKey::from_cookie("another-cookie-0123456789");
    let unsigned = datagrams.clone();
    let mut datagrams: Vec<Vec<u8>> = datagrams.iter().map(|d| key.seal(d)).collect();
    datagrams.extend(unsigned.iter().map(|d| other_key.seal(d)));
    datagrams.extend(unsigned);
    datagrams.push(other_key.seal(&wire::encode_identity_request()));
    let rejected_before = a.handle.rejected_datagrams();

    for datagram in &datagrams {
        attacker
            .send_to(datagram, a.address())
            .await
            .expect("loopback send");
    }
    // The agent handles datagrams in order, so its reply to this request proves that it
    // handled every datagram above.
    attacker
        .send_to(&key.seal(&wire::encode_identity_request()), a.address())
        .await
        .expect("loopback send");
    let mut reply = vec![0; 2048];
    let (len, _) = timeout(WAIT, attacker.recv_from(&mut reply))
        .await
        .expect("identity reply arrives")
        .expect("loopback receive");

    let opened = key.open(&reply[..len]).expect("the reply is signed");
    assert_eq!(
        wire::decode(opened).ok(),
        Some(Datagram::IdentityReply(a.id.clone()))
    );
    assert_eq!(
        a.handle.rejected_datagrams() - rejected_before,
        datagrams.len() as u64
    );
    a.handle.set_state(NodeState::Draining).expect("agent runs");
    b.wait_members("a Draining", |members| {
        members
            .iter()
            .any(|info| info.id.name == "a" && info.state == NodeState::Draining)
    })
    .await;
}

#[tokio::test]
async fn node_with_other_cookie_never_joins() {
    // Goal: a node whose cookie differs cannot join through a seed, and the seed lists only
    // itself and the members that share its cookie.
    let a = TestNode::start("a", 1, &[]).await;
    let b = TestNode::start("b", 2, &[&a]).await;
    a.wait_live(2).await;
    let rejected_before = a.handle.rejected_datagrams();
    let other = GossipKey::from_cookie("another-cookie-0123456789");
    let intruder = TestNode::start_with_key("intruder", 3, &[&a], other).await;

    // The intruder retries its announce every 100 ms; wait until the seed rejected several.
    let deadline = Instant::now() + WAIT;
    while a.handle.rejected_datagrams() < rejected_before + 3 {
        assert!(
            Instant::now() < deadline,
            "the seed rejected no datagram of the intruder"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let members = a.handle.members();
    assert!(
        members.iter().all(|info| info.id.name != "intruder"),
        "the seed lists the intruder: {members:?}"
    );
    let seen = intruder.handle.members();
    assert!(
        seen.iter()
            .all(|info| info.id.name != "a" && info.id.name != "b"),
        "the intruder lists cluster members: {seen:?}"
    );
    drop(b);
}

#[test]
fn start_rejects_port_mismatch_and_invalid_config() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime builds");
    runtime.block_on(async {
        let socket = || async { UdpSocket::bind("127.0.0.1:0").await.expect("bind loopback") };
        let first = socket().await;
        let port = first.local_addr().expect("bound").port();
        let id = NodeId::new(NodeIdFields {
            name: "a".into(),
            boot_id: 1,
            bump: 0,
            ip: IpAddr::from([127, 0, 0, 1]),
            gossip_port: port.wrapping_add(1),
            cluster_port: 0,
            grpc_port: 0,
        });
        let invalid = MembershipConfig {
            probe_rtt_ms: 5_000,
            ..fast_config()
        };

        let mismatch =
            MembershipAgent::start(id.clone(), fast_config(), vec![], first, 0, None, key());
        let id = NodeId::new(NodeIdFields {
            gossip_port: port,
            ..(*id).clone()
        });
        let rejected = MembershipAgent::start(id, invalid, vec![], socket().await, 0, None, key());

        assert!(matches!(
            mismatch,
            Err(MembershipError::PortMismatch { .. })
        ));
        assert!(matches!(rejected, Err(MembershipError::InvalidConfig(_))));
    });
}

#[tokio::test]
async fn running_agent_reports_no_stall() {
    let lone = TestNode::start("lone", 9, &[]).await;
    let (a, b, c) = three_node_cluster().await;

    // Several refresh periods, so a refresh that stopped after joining would show.
    let mut longest = Duration::ZERO;
    let started = Instant::now();
    while started.elapsed() < 10 * CURRENT_PERIOD {
        for node in [&a, &b, &c] {
            longest = longest.max(node.handle.stalled_for());
        }
        tokio::time::sleep(CURRENT_PERIOD / 5).await;
    }

    eprintln!("longest stall reported by a running agent: {longest:?}");
    assert!(a.handle.is_joined(), "a joined");
    // Far above the refresh period, because two cores may run several tests.
    assert!(
        longest < Duration::from_millis(500),
        "stalled for {longest:?}"
    );
    assert_eq!(
        lone.handle.stalled_for(),
        Duration::ZERO,
        "no peers, no stall"
    );
    b.handle.leave().await.expect("leave completes");
    assert_eq!(b.handle.stalled_for(), Duration::ZERO, "stopped agent");
}

/// Polls `condition` every few milliseconds and returns how long it took to hold; panics
/// after [`WAIT`].
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < WAIT, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn cut_off_agent_loses_lease_before_verdict() {
    // Goal: an agent whose peers stop replying loses its lease before its failure detector
    // (with the same timing as the peers' detectors) declares them down, and stays fenced
    // once it lists fewer live members than members declared down. Method: three agents;
    // the two peers of `a` stop without leaving, which `a` cannot tell from a cut.
    let (mut a, b, c) = three_node_cluster().await;
    wait_for("a's lease is fresh", || a.handle.lease_is_fresh()).await;

    let cut = Instant::now();
    drop(b);
    drop(c);
    let lapsed_after = wait_for("a's lease ends", || !a.handle.lease_is_fresh()).await;
    // Either verdict may come first, and waiting for one skips the events before it.
    let mut declared = std::collections::BTreeSet::new();
    while declared.len() < 2 {
        let name = a
            .wait_event("b and c to leave", |event| match event {
                MembershipEvent::Left { member, .. } => Some(member.id.name.clone()),
                _ => None,
            })
            .await;
        declared.insert(name);
    }
    let declared_after = cut.elapsed();

    eprintln!(
        "lease ended {lapsed_after:?} and peers were declared down {declared_after:?} after the cut"
    );
    assert!(
        lapsed_after < declared_after,
        "lease ended {lapsed_after:?} after the cut, verdicts {declared_after:?}"
    );
    assert!(
        lapsed_after <= lease_duration(&fast_config()) + Duration::from_millis(200),
        "lease ended {lapsed_after:?} after the cut"
    );
    assert!(
        !a.handle.lease_is_fresh(),
        "one live member against two declared down is the minority"
    );
}

#[tokio::test]
async fn two_node_survivor_keeps_lease() {
    // Goal: the survivor of a two-node cluster serves again once it has declared its peer
    // down, because one live member against one declared down is no minority.
    let mut a = TestNode::start("a", 1, &[]).await;
    let b = TestNode::start("b", 2, &[&a]).await;
    a.wait_live(2).await;
    b.wait_live(2).await;
    wait_for("a's lease is fresh", || a.handle.lease_is_fresh()).await;

    drop(b);
    a.wait_left("b").await;
    let fresh_after = wait_for("a's lease is fresh again", || a.handle.lease_is_fresh()).await;
    eprintln!("lease fresh {fresh_after:?} after the peer was declared down");
}

#[tokio::test]
async fn member_list_request_is_answered() {
    let (a, b, c) = three_node_cluster().await;
    for node in [&a, &b, &c] {
        node.handle
            .set_state(NodeState::Active)
            .expect("agent runs");
    }
    a.wait_members("every member Active", |members| {
        members.iter().all(|info| info.state == NodeState::Active)
    })
    .await;
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind loopback");
    let request =
        wire::encode_members_request(&MembersRequest { after: None }).expect("request encodes");
    let rejected_before = a.handle.rejected_datagrams();

    // A request cut below the minimum length is rejected without a reply. The agent handles
    // datagrams in order, so the page that answers the full request shows that it handled the
    // short one first.
    let short = &request[..wire::HEADER_LEN + super::super::member_list::MIN_REQUEST_BODY_LEN - 1];
    for datagram in [short, &request[..]] {
        client
            .send_to(&key().seal(datagram), a.address())
            .await
            .expect("loopback send");
    }
    let mut reply = vec![0; 2048];
    let (sealed_len, _) = timeout(WAIT, client.recv_from(&mut reply))
        .await
        .expect("page arrives")
        .expect("loopback receive");
    let opened = key()
        .open(&reply[..sealed_len])
        .expect("the page is signed");
    let len = opened.len();

    let Ok(Datagram::MembersPage(page)) = wire::decode(opened) else {
        panic!("reply is not a member list page: {opened:?}");
    };
    let names: Vec<&str> = page
        .entries
        .iter()
        .map(|entry| entry.member.id().name.as_str())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(!page.more);
    assert!(len <= request.len(), "page of {len} bytes");
    assert!(
        sealed_len <= wire::MAX_DATAGRAM_LEN,
        "signed page of {sealed_len} bytes"
    );
    // The answering node's own meta is always known. Whether the others' is depends on the
    // broadcasts that reached it before its snapshot; the unit tests of `member_list` cover it.
    assert!(page.entries[0].meta.is_some(), "{page:#?}");
    assert_eq!(a.handle.rejected_datagrams() - rejected_before, 1);
}

/// A joining agent pulls the member list from the seed it announced to and applies it. The seed
/// here is a foca instance driven by the test, so the only way the agent can learn the member
/// `listed-only` is the page that the test sends. The periodic pull is set far out, so the
/// request must come from the pull at joining.
#[tokio::test]
async fn joining_agent_pulls_member_list_from_seed() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind loopback");
    let seed_id = NodeId::new(NodeIdFields {
        name: "seed".into(),
        boot_id: 1,
        bump: 0,
        ip: IpAddr::from([127, 0, 0, 1]),
        gossip_port: socket.local_addr().expect("bound").port(),
        cluster_port: 0,
        grpc_port: 0,
    });
    let (accepted, _accepted_meta) = mpsc::unbounded_channel();
    let mut seed = foca::Foca::with_custom_broadcast(
        seed_id.clone(),
        foca::Config::simple(),
        StdRng::seed_from_u64(3),
        PostcardCodec,
        MetaHandler::new(accepted, Default::default()),
    );
    let config = MembershipConfig {
        member_list_period_ms: 600_000,
        ..fast_config()
    };
    let seeds = vec![seed_id.gossip_addr().to_string()];
    let mut joiner = TestNode::start_with("joiner", 2, seeds, config, key()).await;
    let listed_only = NodeId::new(NodeIdFields {
        name: "listed-only".into(),
        boot_id: 9,
        gossip_port: 9,
        ..(*seed_id).clone()
    });
    let listed_meta = NodeMeta {
        version: 4,
        state: NodeState::Active,
        load: NodeLoad::default(),
        started_at_unix_ms: 5,
        store_id: None,
        unreachable: Vec::new(),
    };

    let mut buffer = vec![0; 2048];
    let deadline = Instant::now() + WAIT;
    let requested_after = loop {
        let (len, from) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buffer))
            .await
            .expect("the joiner sends a member list request")
            .expect("loopback receive");
        let mut runtime = AccumulatingRuntime::new();
        let opened = key()
            .open(&buffer[..len])
            .expect("the joiner signs its datagrams");
        match wire::decode(opened).expect("the joiner sends valid datagrams") {
            Datagram::IdentityRequest { .. } => {
                let reply = wire::encode_identity_reply(&seed_id).expect("identity encodes");
                let reply = key().seal(&reply);
                socket.send_to(&reply, from).await.expect("loopback send");
            }
            Datagram::Foca(packet) => {
                seed.handle_data(packet, &mut runtime)
                    .expect("seed accepts the joiner's packet");
            }
            Datagram::MembersRequest { request, .. } => break request.after,
            other => panic!("unexpected datagram {other:?}"),
        }
        while let Some((to, packet)) = runtime.to_send() {
            let datagram = key().seal(&wire::encode_foca(&packet));
            socket
                .send_to(&datagram, to.gossip_addr())
                .await
                .expect("loopback send");
        }
    };
    let page = MembersPage {
        after: None,
        entries: vec![super::super::member_list::MemberListEntry {
            member: foca::Member::alive(listed_only.clone()),
            meta: Some(listed_meta),
        }],
        more: false,
    };
    let datagram = key().seal(&wire::encode_members_page(&page).expect("page encodes"));
    socket
        .send_to(&datagram, joiner.address())
        .await
        .expect("loopback send");

    assert_eq!(
        requested_after, None,
        "the transfer starts at the first page"
    );
    let state = joiner
        .wait_event("listed-only with its meta", |event| match event {
            MembershipEvent::Updated(member) if member.id == listed_only => Some(member.state),
            _ => None,
        })
        .await;
    assert_eq!(state, NodeState::Active);
}

#[tokio::test]
async fn votes_declare_unreachable_member_down() {
    // Goal: a member that gossips but to which no member has a ready cluster session is
    // declared down once at least two members list it, no earlier than `unreachable_after`,
    // and it learns that it was declared down. Method: four agents with a 1 s
    // `unreachable_after`. a, b and c report ready sessions to each other but not to d, and
    // d reports none.
    let config = MembershipConfig {
        unreachable_after: Duration::from_secs(1),
        ..fast_config()
    };
    let a = TestNode::start_with("a", 1, Vec::new(), config.clone(), key()).await;
    let seeds = vec![a.address().to_string()];
    let b = TestNode::start_with("b", 2, seeds.clone(), config.clone(), key()).await;
    let c = TestNode::start_with("c", 3, seeds.clone(), config.clone(), key()).await;
    let mut d = TestNode::start_with("d", 4, seeds, config, key()).await;
    for node in [&a, &b, &c, &d] {
        node.wait_live(4).await;
    }
    let sessions = |peers: &[&TestNode]| -> HashSet<String> {
        peers
            .iter()
            .map(|peer| peer.id.cluster_node_name().to_owned())
            .collect()
    };
    let reported = Instant::now();
    let ready = [
        sessions(&[&b, &c]),
        sessions(&[&a, &c]),
        sessions(&[&a, &b]),
    ];
    for (node, ready) in [&a, &b, &c].into_iter().zip(ready) {
        node.handle.set_ready_sessions(ready).expect("agent runs");
    }
    d.handle
        .set_ready_sessions(HashSet::new())
        .expect("agent runs");

    let mut healthy = [a, b, c];
    for node in &mut healthy {
        let (member, reason) = node.wait_left("d").await;
        assert_eq!(reason, LeaveReason::DeclaredDown, "{}", node.id.name);
        assert_eq!(member.id.boot_id, 4);
    }
    let detected = reported.elapsed();
    d.wait_event("d learns it was declared down", |event| {
        (event == MembershipEvent::SelfDeclaredDown).then_some(())
    })
    .await;

    assert!(
        detected >= Duration::from_secs(1),
        "declared after {detected:?}"
    );
    let declared: u64 = healthy
        .iter()
        .map(|node| node.handle.unreachable_declared_down())
        .sum();
    assert!(declared >= 1, "no node counted its verdict");
    for node in &healthy {
        let live: Vec<String> = node
            .handle
            .members()
            .into_iter()
            .filter(MemberInfo::is_live)
            .map(|info| info.id.name.to_string())
            .collect();
        assert_eq!(live, ["a", "b", "c"], "live members of {}", node.id.name);
    }
}
