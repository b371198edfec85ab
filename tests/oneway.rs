//! One-way grain messages between two nodes in this test process: local and remote sends
//! reach the grain in the order sent, a remote send gets no reply envelope, and a send to an
//! unknown grain type fails at the sender.

use std::time::{Duration, Instant};

use gristmill::grain::{
    CallError, Grain, GrainContext, GrainError, GrainRegistry, Handler, Method, Methods,
};
use gristmill::membership::NodeState;
use gristmill::runtime::{Node, NodeConfig};
use serde::{Deserialize, Serialize};

/// Messages of one burst.
const BURST: u64 = 2_000;

/// A grain that counts numbered messages and the ones that arrived out of order.
#[derive(Default)]
struct Sequence {
    expected: u64,
    received: u64,
    out_of_order: u64,
}

/// The next message of a burst, numbered from 0.
#[derive(Serialize, Deserialize)]
struct Next {
    seq: u64,
}

/// Returns what the grain received: `(received, out_of_order, node name)`.
#[derive(Serialize, Deserialize)]
struct Report;

impl Method for Next {
    const NAME: &'static str = "next";
    type Response = ();
}

impl Method for Report {
    const NAME: &'static str = "report";
    type Response = (u64, u64, String);
}

impl Grain for Sequence {
    const TYPE_NAME: &'static str = "sequence";

    async fn activate(_ctx: &mut GrainContext) -> Result<Self, GrainError> {
        Ok(Sequence::default())
    }

    fn register(methods: &mut Methods<Self>) {
        methods.add::<Next>().add::<Report>();
    }
}

impl Handler<Next> for Sequence {
    async fn handle(&mut self, request: Next, _ctx: &mut GrainContext) -> Result<(), GrainError> {
        if request.seq != self.expected {
            self.out_of_order += 1;
        }
        self.expected = request.seq + 1;
        self.received += 1;
        Ok(())
    }
}

impl Handler<Report> for Sequence {
    async fn handle(
        &mut self,
        _request: Report,
        ctx: &mut GrainContext,
    ) -> Result<(u64, u64, String), GrainError> {
        Ok((
            self.received,
            self.out_of_order,
            ctx.node_name().to_string(),
        ))
    }
}

/// A grain type that no node registers.
struct Unregistered;

impl Grain for Unregistered {
    const TYPE_NAME: &'static str = "unregistered";

    async fn activate(_ctx: &mut GrainContext) -> Result<Self, GrainError> {
        Ok(Unregistered)
    }

    fn register(methods: &mut Methods<Self>) {
        methods.add::<Next>();
    }
}

impl Handler<Next> for Unregistered {
    async fn handle(&mut self, _request: Next, _ctx: &mut GrainContext) -> Result<(), GrainError> {
        Ok(())
    }
}

async fn start(name: &str, seeds: Vec<String>, data: &tempfile::TempDir) -> Node {
    let mut grains = GrainRegistry::new();
    grains.register::<Sequence>();
    let config = NodeConfig {
        storage: gristmill::storage::StorageConfig {
            // One database for the cluster: a node with another store id is not admitted.
            sqlite_path: data.path().join("cluster.sqlite3"),
            ..Default::default()
        },
        node_name: name.into(),
        cookie: "oneway-test-cookie-0123456789".into(),
        seeds,
        ..NodeConfig::default()
    };
    let node = Node::start(config, grains).await.expect("node starts");
    let mut state = node.watch_state();
    tokio::time::timeout(
        Duration::from_secs(20),
        state.wait_for(|s| *s == NodeState::Active),
    )
    .await
    .expect("node became Active")
    .expect("state channel open");
    node
}

/// Polls `condition` every 10 ms until it holds; panics naming `what` after 20 s.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Returns a key of a `sequence` grain that runs on `host`, activating grains from `caller`.
async fn key_hosted_on(caller: &Node, host: &str) -> String {
    for index in 0..64 {
        let key = format!("placed-{index}");
        let (_, _, node) = caller
            .grain::<Sequence>(key.clone())
            .call(Report)
            .await
            .expect("report call");
        if node == host {
            return key;
        }
    }
    panic!("placement put none of 64 grains on {host}");
}

/// Sends a burst of `BURST` numbered messages from `sender` and checks with a later call
/// that all arrived, in order.
async fn send_burst(sender: &Node, key: &str, first: u64) {
    let grain = sender.grain::<Sequence>(key.to_string());
    for seq in first..BURST {
        grain.send(Next { seq }).await.expect("send");
    }
    let (received, out_of_order, _) = grain.call(Report).await.expect("report call");
    assert_eq!(
        (received, out_of_order),
        (BURST, 0),
        "{key}: received {received} of {BURST} messages, {out_of_order} out of order"
    );
}

// Goal: `GrainRef::send` delivers to a local and to a remote grain, keeps one sender's order,
// and a remote message costs the receiver no reply envelope; an unknown grain type fails at
// the sender. ractor keeps process-global registries, so both nodes serve one test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oneway_sends_reach_grains_in_order() {
    let data = tempfile::tempdir().expect("temporary directory");
    let a = start("oneway-a", Vec::new(), &data).await;
    let seed = format!("127.0.0.1:{}", a.id().gossip_port);
    let b = start("oneway-b", vec![seed], &data).await;
    wait_until("both nodes see two live members", || {
        [&a, &b]
            .iter()
            .all(|node| node.members().iter().filter(|m| m.is_live()).count() == 2)
    })
    .await;

    // Local: a grain active on the sender's node.
    let local = key_hosted_on(&a, "oneway-a").await;
    send_burst(&a, &local, 0).await;

    // Remote: the first message may find the host through the call path, the others are cast.
    let remote = key_hosted_on(&a, "oneway-b").await;
    a.grain::<Sequence>(remote.clone())
        .send(Next { seq: 0 })
        .await
        .expect("first send");
    // A report call orders the counters: the gateway counts a cast before it serves the call
    // sent after it.
    let (received, _, _) = a
        .grain::<Sequence>(remote.clone())
        .call(Report)
        .await
        .expect("report call");
    assert_eq!(received, 1, "the first message arrived");
    let replies_before = b.metrics().inbound_call_replies.get();
    let received_before = b.metrics().oneway_received.get();
    send_burst(&a, &remote, 1).await;
    let cast = b.metrics().oneway_received.get() - received_before;
    // The burst's report call is the only call that b replied to.
    let replies = b.metrics().inbound_call_replies.get() - replies_before;
    eprintln!("remote burst: {cast} messages cast, {replies} reply envelopes at the receiver");
    assert_eq!(cast, BURST - 1, "every message after the first is cast");
    assert_eq!(replies, 1, "only the report call gets a reply envelope");

    let unknown = a
        .grain::<Unregistered>("nobody")
        .send(Next { seq: 0 })
        .await;
    assert!(
        matches!(unknown, Err(CallError::UnknownGrainType { .. })),
        "a send to an unregistered type: {unknown:?}"
    );
}
