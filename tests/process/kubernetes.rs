//! The scaling supervisor with the Kubernetes orchestrator, over real node processes and a
//! fake API server: a scale-in drains the highest ordinal, checks that it has 0
//! activations, and only then lowers `spec.replicas`.
//!
//! A pod that Kubernetes stops on its own is recorded and not replaced.
//!
//! Method: the fake API server of the orchestrator tests serves a StatefulSet `gristmill` with
//! 2 replicas on loopback, and two `gristmill run` processes named like its pods find it
//! through a kubeconfig in `KUBECONFIG`.

#[path = "../support/fake_kube_api.rs"]
mod fake_kube_api;

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use common::{
    Cluster, NodeProcess, Timing, cluster_slot, counters_on, wait_supervisor, wait_until,
};
use fake_kube_api::{Fake, NAMESPACE, serve};
use gristmill::api::pb;
use gristmill::api::pb::scaling_client::ScalingClient;
use tonic::transport::Channel;

/// Supervisor settings: the Kubernetes orchestrator with at least `min_nodes` nodes, and a
/// scale-in window that keeps automatic scale-ins away.
fn config(min_nodes: u32) -> String {
    format!(
        "orchestrator = \"kubernetes\"\n\
         [scaling]\nmin_nodes = {min_nodes}\nmax_nodes = 3\nevaluation_interval = \"300ms\"\n\
         cooldown = \"0s\"\n\
         [scaling.scale_in]\nstabilization_window = \"10m\"\n"
    )
}

/// Two node processes, `gristmill-0` and `gristmill-1`, against `fake`, with `gristmill-0`
/// acting as supervisor. The files must live as long as the nodes.
struct KubeCluster {
    cluster: Cluster,
    scaling: ScalingClient<Channel>,
    /// The kubeconfig and the node config, deleted when dropped.
    files: [tempfile::NamedTempFile; 2],
}

async fn start(fake: &Arc<Fake>, min_nodes: u32) -> KubeCluster {
    let server = serve(Arc::clone(fake)).await;
    let kubeconfig = temp_file(&kubeconfig(server));
    let config = temp_file(&config(min_nodes));
    let env = [(
        "KUBECONFIG",
        kubeconfig.path().to_str().expect("utf-8 path"),
    )];
    let args = ["--config", config.path().to_str().expect("utf-8 path")];

    let first = NodeProcess::start_with_env("gristmill-0", &[], Timing::LOADED, &args, &env).await;
    let seed = [first.ready.gossip_addr];
    let second =
        NodeProcess::start_with_env("gristmill-1", &seed, Timing::LOADED, &args, &env).await;
    let cluster = Cluster {
        nodes: vec![first, second],
    };
    cluster.wait_converged().await;
    let supervisor_addr = cluster.nodes[0].ready.grpc_addr;
    let scaling = ScalingClient::connect(format!("http://{supervisor_addr}"))
        .await
        .expect("connect to the Scaling service");
    let status = wait_supervisor(&scaling, "gristmill-0").await;
    assert_eq!(status.orchestrator, "kubernetes");
    // The supervisor starts its pod watch in the background at its first evaluation.
    wait_until(
        "the supervisor watches the pods",
        Duration::from_secs(30),
        || {
            let watches = fake.pod_watchers.receiver_count();
            async move {
                if watches > 0 {
                    Ok(())
                } else {
                    Err("no pod watch open".to_owned())
                }
            }
        },
    )
    .await;
    KubeCluster {
        cluster,
        scaling,
        files: [kubeconfig, config],
    }
}

async fn list_decisions(
    mut scaling: ScalingClient<Channel>,
) -> Result<Vec<pb::ScalingDecision>, String> {
    let request = pb::ListDecisionsRequest {
        limit: 1_000,
        before_id: 0,
    };
    Ok(scaling
        .list_decisions(request)
        .await
        .map_err(|status| format!("ListDecisions failed: {status}"))?
        .into_inner()
        .decisions)
}

fn temp_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write temp file");
    file
}

/// Returns a kubeconfig whose current context is the fake API server at `server`.
fn kubeconfig(server: std::net::SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
         clusters:\n- name: fake\n  cluster:\n    server: http://{server}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    \
         namespace: {NAMESPACE}\n\
         users:\n- name: fake\n  user: {{}}\n"
    )
}

fn action_kind(decision: &pb::ScalingDecision) -> pb::action::Kind {
    let kind = decision.action.as_ref().map_or(0, |action| action.kind);
    pb::action::Kind::try_from(kind).unwrap_or(pb::action::Kind::Unspecified)
}

/// Returns decision `id` once its action has ended, or describes what is seen.
async fn ended(scaling: ScalingClient<Channel>, id: u64) -> Result<pb::ScalingDecision, String> {
    let decision = list_decisions(scaling)
        .await?
        .into_iter()
        .find(|decision| decision.id == id)
        .ok_or(format!("decision d{id} is not recorded"))?;
    match decision.duration_ms {
        Some(_) => Ok(decision),
        None => Err(format!("the action of d{id} is running")),
    }
}

// Goal: the whole chain that runs in a cluster, from a `ScaleTo` request through the drain to
// the PATCH of the scale subresource, with kube's client in the node process. Method:
// counters are placed on `gristmill-1`, and `ScaleTo 1` must move them away and find the node
// empty before the replicas are patched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_in_drains_before_patching_replicas() {
    let _slot = cluster_slot().await;
    let fake = Arc::new(Fake::with_replicas(2));
    let KubeCluster {
        cluster,
        scaling,
        files: _files,
    } = start(&fake, 1).await;

    let mut clients = cluster.clients().await;
    let keys = counters_on(&mut clients, "gristmill-1", 20).await;
    println!("{} counters on gristmill-1 before the scale-in", keys.len());

    let decision = scaling
        .clone()
        .scale_to(pb::ScaleToRequest { nodes: 1 })
        .await
        .expect("ScaleTo 1")
        .into_inner()
        .decision
        .expect("a decision");
    assert_eq!(action_kind(&decision), pb::action::Kind::ScaleIn);
    let drained: Vec<&str> = decision
        .action
        .iter()
        .flat_map(|action| action.remove_nodes.iter())
        .map(String::as_str)
        .collect();
    assert_eq!(drained, ["gristmill-1"], "the highest ordinal is drained");

    let (ended, took) = wait_until("the scale-in ends", Duration::from_secs(60), || {
        ended(scaling.clone(), decision.id)
    })
    .await;
    println!("scale-in took {} ms", took.as_millis());
    let outcome = ended
        .outcome
        .as_ref()
        .expect("an ended action has an outcome");
    assert_eq!(
        outcome.kind,
        pb::action_outcome::Kind::Succeeded as i32,
        "outcome: {outcome:?}"
    );
    assert_eq!(ended.removals.len(), 1, "{:?}", ended.removals);
    let removal = &ended.removals[0];
    assert_eq!(removal.node, "gristmill-1");
    assert_eq!(
        removal.activations_before_stop, 0,
        "the node reported no activation before the patch"
    );
    assert!(removal.stopped, "the node was removed");
    assert!(
        ended
            .orchestrator_steps
            .iter()
            .any(|step| step == "patched scale: 2 -> 1"),
        "the decision records the patch: {:?}",
        ended.orchestrator_steps
    );

    {
        let state = fake.state();
        assert_eq!(state.replicas, 1, "spec.replicas was lowered by one");
        assert_eq!(state.patch_requests, 1, "exactly one patch");
    }

    // The counters moved to gristmill-0 with their values.
    let mut survivor = cluster.nodes[0].client().await;
    for key in &keys {
        let (value, served_by) = survivor
            .invoke("counter", key, "add", serde_json::json!({ "amount": 1 }), 0)
            .await
            .unwrap_or_else(|status| panic!("counter {key}: {status}"));
        assert_eq!(served_by, "gristmill-0", "counter {key}");
        assert_eq!(value, serde_json::json!(2), "counter {key} kept its value");
    }
}

// Goal: a pod that Kubernetes evicts is recorded as a disruption and not fought: although
// its loss leaves fewer Active nodes than min_nodes, the supervisor adds no node and patches
// nothing until the StatefulSet has recreated it. Method: min_nodes = 2; the fake sets the
// deletion timestamp of gristmill-1 and the test sends it SIGTERM, as the kubelet would; a
// new gristmill-1 process then plays the recreated pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_pod_is_recorded_not_replaced() {
    let _slot = cluster_slot().await;
    let fake = Arc::new(Fake::with_replicas(2));
    let KubeCluster {
        mut cluster,
        scaling,
        files,
    } = start(&fake, 2).await;

    // Kubernetes sets the deletion timestamp first and sends SIGTERM only after the 10 s
    // preStop pause, which gives the supervisor's watch time to see the pod terminating.
    fake.terminate_pod("gristmill-1");
    let (recorded, took) = wait_until("a disruption is recorded", Duration::from_secs(30), || {
        let scaling = scaling.clone();
        async move {
            list_decisions(scaling)
                .await?
                .into_iter()
                .find(|decision| decision.trigger == "disruption")
                .ok_or("no disruption decision yet".to_owned())
        }
    })
    .await;
    println!(
        "disruption recorded {} ms after the eviction",
        took.as_millis()
    );
    assert_eq!(action_kind(&recorded), pb::action::Kind::None);
    assert!(
        recorded.summary.contains("gristmill-1"),
        "{}",
        recorded.summary
    );
    assert!(
        recorded.summary.contains("deleted by Kubernetes"),
        "{}",
        recorded.summary
    );
    cluster.nodes[1].terminate();
    let status = cluster.nodes[1].wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "the evicted node drains and exits 0: {status}"
    );

    // Ten more evaluations with one Active node below min_nodes 2: none may act.
    let (held, _) = wait_until(
        "ten evaluations after the disruption",
        Duration::from_secs(30),
        || {
            let scaling = scaling.clone();
            async move {
                let later: Vec<pb::ScalingDecision> = list_decisions(scaling)
                    .await?
                    .into_iter()
                    .filter(|decision| decision.id > recorded.id && decision.trigger == "periodic")
                    .collect();
                if later.len() >= 10 {
                    Ok(later)
                } else {
                    Err(format!("{} evaluations so far", later.len()))
                }
            }
        },
    )
    .await;
    for decision in &held {
        assert_eq!(
            action_kind(decision),
            pb::action::Kind::None,
            "d{} acted: {}",
            decision.id,
            decision.summary
        );
    }
    let below_min = held
        .iter()
        .filter(|decision| decision.current_nodes < 2)
        .count();
    assert!(below_min > 0, "the evaluations saw the lost node: {held:?}");
    assert_eq!(fake.state().patch_requests, 0, "the eviction is not fought");
    assert_eq!(fake.state().replicas, 2);

    // The StatefulSet recreates gristmill-1; once it is Active, scaling is free again.
    fake.delete_pod("gristmill-1");
    fake.add_pod("gristmill-1");
    let seed = [cluster.nodes[0].ready.gossip_addr];
    let args = ["--config", files[1].path().to_str().expect("utf-8 path")];
    let env = [("KUBECONFIG", files[0].path().to_str().expect("utf-8 path"))];
    let recreated =
        NodeProcess::start_with_env("gristmill-1", &seed, Timing::LOADED, &args, &env).await;
    cluster.nodes[1] = recreated;
    wait_until("the hold ends", Duration::from_secs(30), || {
        let scaling = scaling.clone();
        async move {
            let last = list_decisions(scaling)
                .await?
                .into_iter()
                .find(|decision| decision.trigger == "periodic")
                .ok_or("no periodic decision".to_owned())?;
            let holding = last
                .limits
                .iter()
                .any(|limit| limit.kind == pb::applied_limit::Kind::Disruption as i32);
            if last.current_nodes == 2 && !holding {
                Ok(())
            } else {
                Err(format!("d{}: {}", last.id, last.summary))
            }
        }
    })
    .await;
    assert_eq!(
        fake.state().patch_requests,
        0,
        "nothing was patched at any point"
    );
}
