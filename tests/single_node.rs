//! One node in this test process: typed grain calls, gRPC calls, errors and idle collection.
//!
//! ractor keeps process-global registries, so this binary starts exactly one node and runs
//! every check against it in one test.

use std::time::Duration;

use gristmill::api::pb;
use gristmill::grain::samples::{self, Add, Balance, Counter, Get, Transfer};
use gristmill::grain::{
    CallError, Grain, GrainContext, GrainError, GrainRegistry, Handler, Method, Methods,
};
use gristmill::membership::NodeState;
use gristmill::runtime::{Node, NodeConfig};
use serde::{Deserialize, Serialize};

/// A grain that panics on request, to check that a panic deactivates only that activation.
struct Fragile;

#[derive(Serialize, Deserialize)]
struct Explode;

impl Method for Explode {
    const NAME: &'static str = "explode";
    type Response = ();
}

impl Grain for Fragile {
    const TYPE_NAME: &'static str = "fragile";

    async fn activate(_ctx: &mut GrainContext) -> Result<Self, GrainError> {
        Ok(Fragile)
    }

    fn register(methods: &mut Methods<Self>) {
        methods.add::<Explode>();
    }
}

impl Handler<Explode> for Fragile {
    async fn handle(
        &mut self,
        _request: Explode,
        _ctx: &mut GrainContext,
    ) -> Result<(), GrainError> {
        panic!("fragile grain exploded");
    }
}

fn config(data: &tempfile::TempDir) -> NodeConfig {
    let storage = gristmill::storage::StorageConfig {
        sqlite_path: data.path().join("state.sqlite3"),
        ..Default::default()
    };
    NodeConfig {
        storage,
        node_name: "solo".into(),
        cookie: "single-node-test-cookie".into(),
        idle_after_secs: 1,
        ..NodeConfig::default()
    }
}

async fn wait_active(node: &Node) {
    let mut state = node.watch_state();
    let active = state.wait_for(|s| *s == NodeState::Active);
    tokio::time::timeout(Duration::from_secs(10), active)
        .await
        .expect("node became Active")
        .expect("state channel open");
}

async fn balance(node: &Node, key: &str) -> Result<i64, CallError> {
    node.grain::<samples::Account>(key).call(Balance).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_serves_grains() {
    let mut grains: GrainRegistry = samples::registry();
    grains.register::<Fragile>();
    let data = tempfile::tempdir().expect("temporary directory");
    let node = Node::start(config(&data), grains)
        .await
        .expect("node starts");
    wait_active(&node).await;

    // Typed calls: one activation keeps its in-memory state between calls.
    let counter = node.grain::<Counter>("c1");
    assert_eq!(counter.call(Add { amount: 2 }).await, Ok(2));
    assert_eq!(counter.call(Add { amount: 3 }).await, Ok(5));
    assert_eq!(counter.call(Get).await, Ok(5));

    // Grain-to-grain calls: the bank worker moves money between two account grains.
    let bank = node.grain::<samples::Bank>("main");
    let bob = node.grain::<samples::Account>("bob");
    let transfer = |amount, id| Transfer {
        from: "alice".into(),
        to: "bob".into(),
        amount,
        id: Some(id),
    };
    assert_eq!(bank.call(transfer(300, 1)).await, Ok(700));
    assert_eq!(bob.call(Balance).await, Ok(1_300));
    // A retry with the same id, as after a lost reply, moves nothing more.
    assert_eq!(bank.call(transfer(300, 1)).await, Ok(700));
    assert_eq!(bob.call(Balance).await, Ok(1_300));
    let overdraft = bank.call(transfer(5_000, 2)).await;
    assert!(
        matches!(overdraft, Err(CallError::Grain { ref error, .. }) if error.code == "insufficient_funds"),
        "{overdraft:?}"
    );
    let too_long = Transfer {
        to: "k".repeat(2_000),
        ..transfer(10, 3)
    };
    let invalid = bank.call(too_long).await;
    assert!(
        matches!(invalid, Err(CallError::InvalidRequest { ref error, .. }) if error.code == "invalid_transfer"),
        "{invalid:?}"
    );
    assert_eq!(bob.call(Balance).await, Ok(1_300), "nothing moved");

    // A transfer that reuses an id with other accounts or another amount moves nothing.
    let transfer_7 = |from: &str, to: &str, amount| Transfer {
        from: from.into(),
        to: to.into(),
        amount,
        id: Some(7),
    };
    assert_eq!(bank.call(transfer_7("x-1", "x-2", 10)).await, Ok(990));
    let reused = bank.call(transfer_7("x-1", "x-3", 900)).await;
    assert!(
        matches!(reused, Err(CallError::InvalidRequest { ref error, .. }) if error.code == "transfer_id_reused"),
        "{reused:?}"
    );
    // Only the receiver x-2 remembers id 7 here, so the withdrawal is paid back.
    let reused_at_receiver = bank.call(transfer_7("x-4", "x-2", 10)).await;
    assert!(
        matches!(reused_at_receiver, Err(CallError::Grain { ref error, .. }) if error.code == "transfer_refunded"),
        "{reused_at_receiver:?}"
    );
    for (key, expected) in [("x-1", 990), ("x-2", 1_010), ("x-3", 1_000), ("x-4", 1_000)] {
        assert_eq!(balance(&node, key).await, Ok(expected), "balance of {key}");
    }

    // A deposit that would overflow the receiver is paid back to the source, and a retry of
    // the transfer moves nothing, even once the receiver's balance went down.
    let rich = node.grain::<samples::Account>("y-1");
    let deposit = samples::Deposit {
        amount: i64::MAX - 1_000,
        transfer: None,
        from: None,
    };
    assert_eq!(rich.call(deposit).await, Ok(i64::MAX));
    let transfer_99 = || Transfer {
        from: "y-2".into(),
        to: "y-1".into(),
        amount: 500,
        id: Some(99),
    };
    let overflow = bank.call(transfer_99()).await;
    let Err(CallError::Grain { ref error, .. }) = overflow else {
        panic!("transfer into a full account: {overflow:?}");
    };
    assert_eq!(error.code, "transfer_refunded", "{}", error.message);
    assert!(
        error.message.contains("the 500 went back to y-2"),
        "{}",
        error.message
    );
    assert_eq!(balance(&node, "y-2").await, Ok(1_000));
    let withdraw = samples::Withdraw {
        amount: 1_000,
        transfer: None,
        to: None,
    };
    assert_eq!(rich.call(withdraw).await, Ok(i64::MAX - 1_000));
    let retry = bank.call(transfer_99()).await;
    assert!(
        matches!(retry, Err(CallError::Grain { ref error, .. }) if error.code == "transfer_refunded"),
        "{retry:?}"
    );
    assert_eq!(balance(&node, "y-2").await, Ok(1_000));
    assert_eq!(balance(&node, "y-1").await, Ok(i64::MAX - 1_000));

    // gRPC: JSON payloads, unknown names are rejected with the name in the message.
    let mut client =
        pb::grains_client::GrainsClient::connect(format!("http://{}", node.grpc_addr()))
            .await
            .expect("connect");
    let invoke = |grain_type: &str, method: &str, payload: &str| pb::InvokeRequest {
        grain_type: grain_type.into(),
        key: "c1".into(),
        method: method.into(),
        payload: payload.as_bytes().to_vec(),
        format: pb::PayloadFormat::Json.into(),
        timeout_ms: 2_000,
    };
    let reply = client
        .invoke(invoke("counter", "add", r#"{"amount":10}"#))
        .await
        .expect("invoke")
        .into_inner();
    assert_eq!(reply.payload, b"15");
    assert_eq!(reply.served_by, "solo");
    let unknown_type = client
        .invoke(invoke("nosuchtype", "add", ""))
        .await
        .expect_err("unknown type");
    assert_eq!(unknown_type.code(), tonic::Code::NotFound);
    assert!(
        unknown_type.message().contains("nosuchtype"),
        "{}",
        unknown_type.message()
    );
    let unknown_method = client
        .invoke(invoke("counter", "nosuchmethod", ""))
        .await
        .expect_err("unknown method");
    assert!(
        unknown_method.message().contains("nosuchmethod"),
        "{}",
        unknown_method.message()
    );
    let bad_payload = client
        .invoke(invoke("counter", "add", "not json"))
        .await
        .expect_err("bad payload");
    assert_eq!(bad_payload.code(), tonic::Code::InvalidArgument);

    // gRPC codes of the bank: invalid input is INVALID_ARGUMENT with the value and the fix,
    // and a transfer that the balance rules out is FAILED_PRECONDITION.
    let transfers = [
        (
            r#"{"from":"alice","to":"","amount":1}"#,
            tonic::Code::InvalidArgument,
            r#"invalid "to" account key "": use a key of 1 to 1024 bytes"#,
        ),
        (
            r#"{"from":"alice","to":"bob","amount":0}"#,
            tonic::Code::InvalidArgument,
            "invalid amount 0: give a positive amount",
        ),
        (
            r#"{"from":"bob","to":"bob","amount":1}"#,
            tonic::Code::InvalidArgument,
            r#"invalid transfer from account "bob" to itself: give "to" another account key"#,
        ),
        (
            r#"{"from":"alice","to":"bob","amount":5000}"#,
            tonic::Code::FailedPrecondition,
            "balance 700 is below 5000",
        ),
        (
            r#"{"from":"alice","to":"carol","amount":1,"id":1}"#,
            tonic::Code::InvalidArgument,
            r#"transfer id 1 is already used by a transfer of 300 to "bob""#,
        ),
    ];
    for (payload, code, expected) in transfers {
        let mut request = invoke("bank", "transfer", payload);
        request.key = "main".into();
        let status = client.invoke(request).await.expect_err(payload);
        assert_eq!(status.code(), code, "{payload}: {}", status.message());
        assert!(
            status.message().contains(expected),
            "{payload}: {}",
            status.message()
        );
    }
    assert_eq!(
        bob.call(Balance).await,
        Ok(1_300),
        "no invalid transfer moved money"
    );
    for key in [String::new(), "k".repeat(1_025)] {
        let mut request = invoke("counter", "add", r#"{"amount":1}"#);
        request.key = key.clone();
        let rejected = client.invoke(request).await.expect_err("invalid key");
        assert_eq!(
            rejected.code(),
            tonic::Code::InvalidArgument,
            "key of {} bytes",
            key.len()
        );
        let expected = format!(
            "invalid key of {} bytes for grain type counter: use 1 to 1024 bytes",
            key.len()
        );
        assert!(
            rejected.message().contains(&expected),
            "{}",
            rejected.message()
        );
    }

    // A panicking grain fails its call and the node keeps serving.
    let fragile = node.grain::<Fragile>("f").call(Explode).await;
    assert!(
        matches!(fragile, Err(CallError::GrainPanicked { .. })),
        "{fragile:?}"
    );
    assert_eq!(counter.call(Get).await, Ok(15));

    // Idle collection: with a 1 s idle age the counter deactivates.
    let listed = client
        .list_activations(pb::ListActivationsRequest {
            grain_type: "counter".into(),
            limit: 0,
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.total, 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listed = client
            .list_activations(pb::ListActivationsRequest {
                grain_type: "counter".into(),
                limit: 0,
            })
            .await
            .expect("list")
            .into_inner();
        if listed.total == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "counter never deactivated"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The state was persisted, so the new activation reads what the old one acknowledged.
    assert_eq!(counter.call(Get).await, Ok(15));

    node.drain_and_leave().await;
    assert_eq!(node.state(), NodeState::Dead);
}
