//! Nodes that use different databases, over real node processes on 127.0.0.1: a node whose
//! database differs from the cluster's must not join it, because grains that lived on it
//! would lose their acknowledged writes when they move.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Cluster, NodeProcess, Timing, cluster_slot, describe};
use gristmill::storage::{StorageConfig, StoreId};

/// Time a rejected node has to learn the cluster's store id, leave and exit, with a margin
/// for a loaded machine.
const EXIT_WITHIN: Duration = Duration::from_secs(30);

/// Exit code of `gristmill run` for an invalid configuration.
const EXIT_INVALID_CONFIG: i32 = 2;

/// Returns the store id of the SQLite file at `path`, creating it if the file has none.
async fn store_id_of(path: &Path) -> StoreId {
    let config = StorageConfig {
        sqlite_path: path.to_owned(),
        ..StorageConfig::default()
    };
    let store = gristmill::storage::open(&config)
        .await
        .expect("open the SQLite file");
    store.store_id()
}

// Goal: a node started with `--seed` and another SQLite file than the cluster's exits with
// code 2 and a message that names both store ids, the Active member and the fix. The cluster
// keeps serving, warns that it ignores node-1 and leaves node-1 out of its member list.
// Before store ids, the node joined, and the grains that lived on it read 0 after it was
// killed, because their state was in its own file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_with_other_sqlite_file_is_rejected() {
    let _slot = cluster_slot().await;
    let files = tempfile::tempdir().expect("temporary directory");
    let cluster_file = files.path().join("cluster.sqlite3");
    let other_file = files.path().join("other.sqlite3");
    let cluster_path = cluster_file.to_str().expect("UTF-8 path");
    let other_path = other_file.to_str().expect("UTF-8 path");
    let cluster = Cluster::start_with(1, Timing::DEFAULT, &["--sqlite-path", cluster_path]).await;
    let seed = [cluster.nodes[0].ready.gossip_addr];
    let mut client = cluster.nodes[0].client().await;

    let mut rejected = NodeProcess::start(
        "node-1",
        &seed,
        Timing::DEFAULT,
        &["--sqlite-path", other_path],
    )
    .await;
    let status = rejected.wait_exit(EXIT_WITHIN).await;
    let log = std::fs::read_to_string(&rejected.log_path).expect("read the node-1 log");
    let cluster_store = store_id_of(&cluster_file).await;
    let other_store = store_id_of(&other_file).await;
    eprintln!(
        "measured: node-1 exited with {status}; store ids: cluster {cluster_store}, node-1 \
         {other_store}; node-1 log in {}",
        rejected.log_path.display()
    );

    assert_ne!(cluster_store, other_store, "two files have two store ids");
    assert_eq!(
        status.code(),
        Some(EXIT_INVALID_CONFIG),
        "exit status of node-1"
    );
    let message = log
        .lines()
        .find(|line| line.starts_with("error: "))
        .unwrap_or_else(|| panic!("node-1 printed no error line; log:\n{log}"));
    for expected in [
        cluster_store.to_string().as_str(),
        other_store.to_string().as_str(),
        "\"node-0\"",
        "every node of a cluster must use the same database",
        "--sqlite-path or --postgres-url",
    ] {
        assert!(
            message.contains(expected),
            "{expected:?} missing in {message}"
        );
    }

    for index in 1..=10 {
        let key = format!("d-{index}");
        let (reply, served_by) = client
            .invoke(
                "counter",
                &key,
                "add",
                serde_json::json!({ "amount": 7 }),
                0,
            )
            .await
            .unwrap_or_else(|status| panic!("add to {key} after the rejection: {status}"));
        assert_eq!(reply, serde_json::json!(7), "reply of {key}");
        assert_eq!(served_by, "node-0", "host of {key}");
    }
    let node_0 = &cluster.nodes[0];
    let member_store = format!("member_store_id={other_store}");
    node_0
        .wait_log_line(
            "WARN",
            &["ignoring a member", "node-1#", &member_store],
            EXIT_WITHIN,
        )
        .await;
    let members = client.members().await.expect("members after the rejection");
    assert!(
        members.iter().all(|member| member.name != "node-1"),
        "node-0 lists node-1, which uses another database: {}",
        describe(&members)
    );
}
