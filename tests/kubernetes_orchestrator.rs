//! The Kubernetes orchestrator against an in-process fake API server, over real HTTP.
//!
//! Goal: show that the orchestrator reads and patches the StatefulSet scale subresource as
//! the API server expects, retries only what a retry can fix, and never patches twice.
//! Method: an axum server on 127.0.0.1 serves the few API paths the orchestrator uses, with
//! scripted faults, and counts requests. The orchestrator talks to it through kube's own
//! client stack. A loopback TCP proxy in between can be unplugged to take the server "down".
#![cfg(feature = "kubernetes")]

#[path = "support/fake_kube_api.rs"]
mod fake_kube_api;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use fake_kube_api::{Fake, Fault, NAMESPACE, STATEFULSET, serve};
use gristmill::scaling::kubernetes::{
    KubernetesConfig, KubernetesOrchestrator, KubernetesSetupError, RetryPolicy, ScaleStep,
    install_crypto_provider,
};
use gristmill::scaling::orchestrator::{Orchestrator, OrchestratorError};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const MAX_ATTEMPTS: u32 = 3;

/// A loopback TCP proxy that can be unplugged: it then closes every open connection and
/// closes new ones at once, as an API server that went down would.
struct Proxy {
    address: SocketAddr,
    plugged: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let plugged = Arc::new(tokio::sync::watch::channel(true).0);
        let sender = Arc::clone(&plugged);
        tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let (mut inbound, _) = listener.accept().await.unwrap();
                if !*sender.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut unplugged = sender.subscribe();
                connections.spawn(async move {
                    let mut outbound = TcpStream::connect(upstream).await.unwrap();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = unplugged.wait_for(|plugged| !plugged) => {}
                    }
                });
            }
        });
        Self { address, plugged }
    }

    fn set_plugged(&self, plugged: bool) {
        self.plugged.send_replace(plugged);
    }
}

fn client(address: SocketAddr) -> kube::Client {
    install_crypto_provider();
    let mut config = kube::Config::new(format!("http://{address}").parse().unwrap());
    config.default_namespace = NAMESPACE.into();
    // The orchestrator retries by itself; kube's own retry would repeat patches blindly.
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

fn config() -> KubernetesConfig {
    KubernetesConfig {
        pod_name: Some(format!("{STATEFULSET}-0")),
        min_replicas: NonZeroU32::new(1).unwrap(),
        max_replicas: NonZeroU32::new(5).unwrap(),
        retry: RetryPolicy {
            max_attempts: NonZeroU32::new(MAX_ATTEMPTS).unwrap(),
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
        },
        ..KubernetesConfig::default()
    }
}

async fn orchestrator_for(fake: &Arc<Fake>) -> KubernetesOrchestrator {
    let address = serve(Arc::clone(fake)).await;
    KubernetesOrchestrator::with_client(client(address), config())
        .await
        .unwrap()
}

fn patched_steps(steps: &[ScaleStep]) -> Vec<&ScaleStep> {
    steps
        .iter()
        .filter(|step| matches!(step, ScaleStep::PatchedScale { .. }))
        .collect()
}

#[tokio::test]
async fn setup_finds_statefulset_from_pod_name() {
    let fake = Arc::new(Fake::with_replicas(3));
    let orchestrator = orchestrator_for(&fake).await;

    assert_eq!(orchestrator.namespace(), NAMESPACE);
    assert_eq!(orchestrator.statefulset(), STATEFULSET);
    assert_eq!(orchestrator.kind(), "kubernetes");
    assert_eq!(orchestrator.current_nodes().await.unwrap(), 3);
}

#[tokio::test]
async fn setup_reports_missing_statefulset() {
    let fake = Arc::new(Fake::with_replicas(3));
    let address = serve(fake).await;
    let config = KubernetesConfig {
        statefulset: Some("absent".into()),
        ..config()
    };

    let error = KubernetesOrchestrator::with_client(client(address), config)
        .await
        .unwrap_err();

    let KubernetesSetupError::StatefulSet { name, source, .. } = error else {
        panic!("expected a StatefulSet error, got {error}");
    };
    assert_eq!(name, "absent");
    assert!(matches!(source, OrchestratorError::Invalid(_)), "{source}");
}

#[tokio::test]
async fn scale_out_patches_replicas_and_names_new_pods() {
    let fake = Arc::new(Fake::with_replicas(3));
    let orchestrator = orchestrator_for(&fake).await;

    let added = orchestrator.add_nodes(2).await.unwrap();

    assert_eq!(added, ["gristmill-3", "gristmill-4"]);
    assert_eq!(fake.state().replicas, 5);
    assert_eq!(fake.state().patch_requests, 1);
    assert_eq!(
        orchestrator.take_steps(),
        [
            ScaleStep::ReadScale { replicas: 3 },
            ScaleStep::PatchedScale { from: 3, to: 5 },
        ]
    );
}

#[tokio::test]
async fn scale_in_removes_highest_ordinal() {
    let fake = Arc::new(Fake::with_replicas(3));
    let orchestrator = orchestrator_for(&fake).await;
    let nodes: Vec<String> = (0..3).map(|i| format!("{STATEFULSET}-{i}")).collect();

    let candidate = orchestrator.forced_removal_candidate(&nodes).unwrap();
    orchestrator.remove_node(&candidate).await.unwrap();

    assert_eq!(candidate, "gristmill-2");
    assert_eq!(fake.state().replicas, 2);
    assert_eq!(fake.state().patch_requests, 1);
}

#[tokio::test]
async fn invalid_requests_patch_nothing() {
    // (replicas, pods to add or pod to remove, fragment of the expected message)
    let cases: [(u32, Result<u32, &str>, &str); 4] = [
        (4, Ok(2), "max_replicas 5"),
        (
            3,
            Err("gristmill-1"),
            "highest ordinal first, which is gristmill-2",
        ),
        (
            3,
            Err("other-2"),
            "highest ordinal first, which is gristmill-2",
        ),
        (1, Err("gristmill-0"), "below min_replicas 1"),
    ];
    for (replicas, request, fragment) in cases {
        let fake = Arc::new(Fake::with_replicas(replicas));
        let orchestrator = orchestrator_for(&fake).await;

        let error = match request {
            Ok(count) => orchestrator.add_nodes(count).await.unwrap_err(),
            Err(pod_name) => orchestrator.remove_node(pod_name).await.unwrap_err(),
        };

        let label = format!("{request:?} at {replicas} replicas: {error}");
        assert!(matches!(error, OrchestratorError::Invalid(_)), "{label}");
        assert!(error.to_string().contains(fragment), "{label}");
        assert_eq!(fake.state().replicas, replicas, "{label}");
        assert_eq!(fake.state().patch_requests, 0, "{label}");
    }
}

#[tokio::test]
async fn conflict_is_retried_after_reread() {
    let fake = Arc::new(Fake::with_replicas(3));
    let orchestrator = orchestrator_for(&fake).await;
    fake.state().patch_faults.push_back(Fault::ConcurrentUpdate);

    let added = orchestrator.add_nodes(1).await.unwrap();

    assert_eq!(added, ["gristmill-3"]);
    assert_eq!(fake.state().replicas, 4);
    assert_eq!(fake.state().patch_requests, 2);
    let steps = orchestrator.take_steps();
    let retries = steps
        .iter()
        .filter(|step| matches!(step, ScaleStep::Retrying { reason, .. } if reason.contains("409")))
        .count();
    assert_eq!(retries, 1, "{steps:?}");
    assert_eq!(patched_steps(&steps).len(), 1, "{steps:?}");
}

#[tokio::test]
async fn concurrent_resize_stops_with_conflict() {
    let fake = Arc::new(Fake::with_replicas(3));
    let orchestrator = orchestrator_for(&fake).await;
    fake.state()
        .patch_faults
        .push_back(Fault::ConcurrentResize(5));

    let error = orchestrator.add_nodes(1).await.unwrap_err();

    assert!(matches!(error, OrchestratorError::Conflict(_)), "{error}");
    assert_eq!(
        fake.state().replicas,
        5,
        "the other writer's size must stand"
    );
    assert_eq!(fake.state().patch_requests, 1);
}

#[tokio::test]
async fn missing_rbac_is_forbidden_and_named() {
    let fake = Arc::new(Fake::with_replicas(3));
    let orchestrator = orchestrator_for(&fake).await;
    fake.state().denied.push(("patch", "statefulsets/scale"));

    let error = orchestrator.add_nodes(1).await.unwrap_err();

    let OrchestratorError::Forbidden { action, detail } = &error else {
        panic!("expected Forbidden, got {error}");
    };
    assert_eq!(action, "patch statefulsets/scale in namespace grains");
    assert!(detail.contains("403"), "{detail}");
    assert_eq!(fake.state().patch_requests, 1, "a 403 must not be retried");
    assert_eq!(fake.state().replicas, 3);
    let steps = orchestrator.take_steps();
    assert!(
        matches!(steps.last(), Some(ScaleStep::Failed { .. })),
        "{steps:?}"
    );
}

#[tokio::test]
async fn server_errors_are_retried_a_bounded_number_of_times() {
    let fake = Arc::new(Fake::with_replicas(3));
    let orchestrator = orchestrator_for(&fake).await;
    fake.state()
        .get_scale_faults
        .extend([Fault::Status(503); 10]);

    let error = orchestrator.add_nodes(1).await.unwrap_err();

    assert!(
        matches!(error, OrchestratorError::Unavailable(_)),
        "{error}"
    );
    assert!(error.to_string().contains("after 3 attempts"), "{error}");
    assert_eq!(fake.state().get_scale_requests, MAX_ATTEMPTS);
    assert_eq!(fake.state().patch_requests, 0);
    assert_eq!(fake.state().replicas, 3);
}

#[tokio::test]
async fn lost_patch_response_is_not_patched_twice() {
    let fake = Arc::new(Fake::with_replicas(3));
    let orchestrator = orchestrator_for(&fake).await;
    fake.state()
        .patch_faults
        .push_back(Fault::ApplyThenStatus(503));

    let added = orchestrator.add_nodes(1).await.unwrap();

    assert_eq!(added, ["gristmill-3"]);
    assert_eq!(fake.state().replicas, 4);
    assert_eq!(fake.state().patch_requests, 1);
    let steps = orchestrator.take_steps();
    assert!(
        steps.contains(&ScaleStep::AlreadyAtTarget { replicas: 4 }),
        "{steps:?}"
    );
}

#[tokio::test]
async fn api_server_down_fails_bounded_then_recovers() {
    let fake = Arc::new(Fake::with_replicas(3));
    let proxy = Proxy::start(serve(Arc::clone(&fake)).await).await;
    let orchestrator = KubernetesOrchestrator::with_client(client(proxy.address), config())
        .await
        .unwrap();

    proxy.set_plugged(false);
    let error = orchestrator.add_nodes(1).await.unwrap_err();

    assert!(
        matches!(error, OrchestratorError::Unavailable(_)),
        "{error}"
    );
    assert_eq!(fake.state().patch_requests, 0);
    assert_eq!(fake.state().replicas, 3);
    let steps = orchestrator.take_steps();
    let retries = steps
        .iter()
        .filter(|step| matches!(step, ScaleStep::Retrying { .. }))
        .count();
    assert_eq!(retries, MAX_ATTEMPTS as usize - 1, "{steps:?}");

    proxy.set_plugged(true);
    orchestrator.add_nodes(1).await.unwrap();

    assert_eq!(fake.state().replicas, 4);
    assert_eq!(fake.state().patch_requests, 1);
}

#[tokio::test]
async fn setup_against_unreachable_server_fails_bounded() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);

    let error = KubernetesOrchestrator::with_client(client(address), config())
        .await
        .unwrap_err();

    let KubernetesSetupError::StatefulSet { source, .. } = &error else {
        panic!("expected a StatefulSet error, got {error}");
    };
    assert!(
        matches!(source, OrchestratorError::Unavailable(_)),
        "{error}"
    );
    assert!(error.to_string().contains("after 3 attempts"), "{error}");
}

#[tokio::test]
async fn list_pods_reports_ready_pods() {
    let fake = Arc::new(Fake::with_replicas(2));
    let orchestrator = orchestrator_for(&fake).await;

    let pods = orchestrator.list_pods().await.unwrap();

    let names: Vec<&str> = pods.keys().map(String::as_str).collect();
    assert_eq!(names, ["gristmill-0", "gristmill-1"]);
    let pod = &pods["gristmill-1"];
    assert_eq!(pod.ordinal, Some(1));
    assert!(pod.ready);
    assert_eq!(pod.phase.as_deref(), Some("Running"));
}

#[tokio::test]
async fn watch_pods_follows_added_and_deleted_pods() {
    let fake = Arc::new(Fake::with_replicas(2));
    let orchestrator = orchestrator_for(&fake).await;
    let watch = orchestrator.watch_pods();
    let mut pods = watch.subscribe();
    pods.wait_for(|pods| pods.len() == 2).await.unwrap();

    fake.add_pod("gristmill-2");
    pods.wait_for(|pods| pods.contains_key("gristmill-2"))
        .await
        .unwrap();
    fake.delete_pod("gristmill-0");
    pods.wait_for(|pods| !pods.contains_key("gristmill-0"))
        .await
        .unwrap();

    let names: Vec<String> = watch.pods().into_keys().collect();
    assert_eq!(names, ["gristmill-1", "gristmill-2"]);
}

/// Polls `disrupted_nodes` until `done` holds for its result, for at most 10 s.
async fn poll_disrupted(
    orchestrator: &KubernetesOrchestrator,
    done: impl Fn(&std::collections::BTreeSet<String>) -> bool,
) -> std::collections::BTreeSet<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let disrupted = orchestrator.disrupted_nodes().await;
        if done(&disrupted) {
            return disrupted;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "disrupted nodes stayed at {disrupted:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn eviction_is_reported_not_patched() {
    // Goal: a pod that Kubernetes deletes on its own (eviction, node drain) is reported as a
    // disruption, and the orchestrator sends no scale request in reaction; a pod that the
    // orchestrator removed itself is not reported.
    // Method: the fake sets deletion timestamps through the pod watch. The requested removal
    // of gristmill-2 terminates before gristmill-1 is deleted, and the watch delivers events
    // in order, so once gristmill-1 is gone from the report, gristmill-2 was processed too.
    let fake = Arc::new(Fake::with_replicas(3));
    let orchestrator = orchestrator_for(&fake).await;
    assert!(orchestrator.disrupted_nodes().await.is_empty());

    fake.terminate_pod("gristmill-1");
    let disrupted = poll_disrupted(&orchestrator, |pods| !pods.is_empty()).await;
    assert_eq!(disrupted.into_iter().collect::<Vec<_>>(), ["gristmill-1"]);
    assert_eq!(fake.state().patch_requests, 0, "an eviction is not fought");
    assert_eq!(
        fake.state().get_scale_requests,
        0,
        "nor even read as a resize"
    );
    assert_eq!(fake.state().replicas, 3);

    orchestrator.remove_node("gristmill-2").await.unwrap();
    fake.terminate_pod("gristmill-2");
    fake.delete_pod("gristmill-1");
    let disrupted = poll_disrupted(&orchestrator, |pods| !pods.contains("gristmill-1")).await;
    assert!(
        !disrupted.contains("gristmill-2"),
        "a requested removal is not a disruption: {disrupted:?}"
    );
    assert_eq!(fake.state().patch_requests, 1, "only the requested removal");
}
