//! Grain calls through the gRPC API of real node processes: single activation, conserved
//! transfers, and errors that name an unknown grain type or method.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Cluster, NodeClient, Timing, cluster_slot};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use tokio::task::JoinSet;

/// Calls in flight at once in the load tests.
const CONCURRENCY: usize = 32;

/// Runs `total` calls from [`CONCURRENCY`] tasks; call `i` goes through node `i % nodes` and is
/// made by `call(i, client)`. Returns the messages of the calls that failed.
async fn run_calls<F, Fut>(clients: &[NodeClient], total: usize, call: F) -> Vec<String>
where
    F: Fn(usize, NodeClient) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..CONCURRENCY {
        let next = Arc::clone(&next);
        let clients = clients.to_vec();
        let call = call.clone();
        tasks.spawn(async move {
            let mut failures = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    return failures;
                }
                let client = clients[index % clients.len()].clone();
                if let Err(failure) = call(index, client).await {
                    failures.push(failure);
                }
            }
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        failures.extend(joined.expect("call task"));
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_keep_one_activation_per_counter() {
    const COUNTERS: usize = 1_000;
    const CALLS: usize = 10_000;
    let _slot = cluster_slot().await;
    let cluster = Cluster::start(3, Timing::FAST).await;
    let mut clients = cluster.clients().await;

    let failures = run_calls(&clients, CALLS, |index, mut client| async move {
        let key = format!("c-{}", index % COUNTERS);
        let outcome = client
            .invoke("counter", &key, "add", json!({ "amount": 1 }), 0)
            .await;
        outcome
            .map(drop)
            .map_err(|status| format!("add on {key}: {status}"))
    })
    .await;
    assert!(
        failures.is_empty(),
        "{} of {CALLS} calls failed, first: {:?}",
        failures.len(),
        failures.first()
    );

    let mut activations_per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for client in &mut clients {
        for activation in client.activations("counter").await {
            activations_per_key
                .entry(activation.key)
                .or_default()
                .push(activation.node);
        }
    }
    assert_eq!(
        activations_per_key.len(),
        COUNTERS,
        "distinct active counters"
    );
    for (key, nodes) in &activations_per_key {
        assert_eq!(nodes.len(), 1, "counter {key} is active on {nodes:?}");
    }

    let expected = i64::try_from(CALLS / COUNTERS).expect("small");
    let failures = run_calls(&clients, COUNTERS, move |index, mut client| async move {
        let key = format!("c-{index}");
        match client.invoke("counter", &key, "get", json!(null), 0).await {
            Ok((value, _)) if value == json!(expected) => Ok(()),
            Ok((value, _)) => Err(format!("counter {key} = {value}, expected {expected}")),
            Err(status) => Err(format!("get on {key}: {status}")),
        }
    })
    .await;
    assert!(
        failures.is_empty(),
        "{} counters wrong, first: {:?}",
        failures.len(),
        failures.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_conserve_total_balance() {
    const ACCOUNTS: u64 = 20;
    const TRANSFERS: usize = 400;
    const SEED: u64 = 0x5eed;
    let _slot = cluster_slot().await;
    let cluster = Cluster::start(3, Timing::FAST).await;
    let mut clients = cluster.clients().await;

    // Transfers of at most 10 cannot exhaust a balance of 1000 within 400 transfers between 20
    // accounts in practice, so every transfer must succeed.
    let mut rng = StdRng::seed_from_u64(SEED);
    let plan: Arc<Vec<(u64, u64, i64)>> = Arc::new(
        (0..TRANSFERS)
            .map(|_| {
                let from = rng.random_range(0..ACCOUNTS);
                let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
                (from, to, rng.random_range(1..=10))
            })
            .collect(),
    );
    let failures = run_calls(&clients, TRANSFERS, move |index, mut client| {
        let plan = Arc::clone(&plan);
        async move {
            let (from, to, amount) = plan[index];
            let payload =
                json!({ "from": format!("a-{from}"), "to": format!("a-{to}"), "amount": amount });
            let outcome = client.invoke("bank", "main", "transfer", payload, 0).await;
            outcome
                .map(drop)
                .map_err(|status| format!("transfer a-{from} -> a-{to} of {amount}: {status}"))
        }
    })
    .await;
    assert!(
        failures.is_empty(),
        "seed {SEED:#x}: {} transfers failed, first: {:?}",
        failures.len(),
        failures.first()
    );

    let mut total = 0;
    for account in 0..ACCOUNTS {
        let client = &mut clients[usize::try_from(account).expect("small") % 3];
        let (balance, _) = client
            .invoke(
                "account",
                &format!("a-{account}"),
                "balance",
                json!(null),
                0,
            )
            .await
            .unwrap_or_else(|status| panic!("balance of a-{account}: {status}"));
        total += balance
            .as_i64()
            .unwrap_or_else(|| panic!("balance of a-{account} is {balance}"));
    }
    assert_eq!(
        total,
        1_000 * ACCOUNTS as i64,
        "seed {SEED:#x}: total balance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_grain_type_and_method_are_named() {
    let _slot = cluster_slot().await;
    let cluster = Cluster::start(1, Timing::FAST).await;
    let mut client = cluster.nodes[0].client().await;

    let cases = [
        ("no-such-type", "add", "no-such-type"),
        ("counter", "no_such_method", "no_such_method"),
    ];
    for (grain_type, method, named) in cases {
        let status = client
            .invoke(grain_type, "k", method, json!({ "amount": 1 }), 0)
            .await
            .expect_err("unknown type or method must fail");
        assert!(
            status.message().contains(named),
            "error for {grain_type}.{method} does not name {named}: {status:?}"
        );
    }

    let (value, _) = client
        .invoke("counter", "k", "add", json!({ "amount": 2 }), 0)
        .await
        .expect("the node keeps serving after bad calls");
    assert_eq!(value, json!(2));
}
