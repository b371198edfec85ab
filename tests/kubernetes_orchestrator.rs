//! The Kubernetes orchestrator against an in-process fake API server, over real HTTP.
//!
//! Goal: show that the orchestrator reads and patches the StatefulSet scale subresource as
//! the API server expects, retries only what a retry can fix, and never patches twice.
//! Method: an axum server on 127.0.0.1 serves the few API paths the orchestrator uses, with
//! scripted faults, and counts requests. The orchestrator talks to it through kube's own
//! client stack. A loopback TCP proxy in between can be unplugged to take the server "down".
#![cfg(feature = "kubernetes")]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gristmill::scaling::kubernetes::{
    KubernetesConfig, KubernetesOrchestrator, KubernetesSetupError, RetryPolicy, ScaleStep,
    install_crypto_provider,
};
use gristmill::scaling::orchestrator::{Orchestrator, OrchestratorError};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

const NAMESPACE: &str = "grains";
const STATEFULSET: &str = "gristmill";
const MAX_ATTEMPTS: u32 = 3;

/// A fault the fake injects into the next request of one kind.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Reply with this status and change nothing.
    Status(u16),
    /// Apply the patch, then reply with this status, as a proxy that lost the response would.
    ApplyThenStatus(u16),
    /// Another writer updates the StatefulSet (same size, new resourceVersion) just before
    /// the request, so its resourceVersion precondition fails.
    ConcurrentUpdate,
    /// Another writer resizes the StatefulSet to this size just before the request.
    ConcurrentResize(u32),
}

#[derive(Debug, Default)]
struct FakeState {
    replicas: u32,
    resource_version: u64,
    /// Pod names; every pod is Running, and Ready unless it is terminating.
    pods: Vec<String>,
    /// Pods with a deletion timestamp, as after an eviction or a scale-in.
    terminating: Vec<String>,
    /// RBAC rules missing from the service account, as `(verb, resource)`.
    denied: Vec<(&'static str, &'static str)>,
    get_scale_faults: VecDeque<Fault>,
    patch_faults: VecDeque<Fault>,
    get_scale_requests: u32,
    patch_requests: u32,
    /// Pod watch events with their resourceVersion, replayed to watches that start later.
    pod_events: Vec<(u64, String)>,
}

struct Fake {
    state: Mutex<FakeState>,
    /// Watch events, one JSON line each, sent to every open pod watch.
    pod_watchers: broadcast::Sender<String>,
}

impl Fake {
    fn with_replicas(replicas: u32) -> Self {
        let state = FakeState {
            replicas,
            resource_version: 7,
            pods: (0..replicas)
                .map(|i| format!("{STATEFULSET}-{i}"))
                .collect(),
            ..FakeState::default()
        };
        Self {
            state: Mutex::new(state),
            pod_watchers: broadcast::channel(16).0,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    fn add_pod(&self, name: &str) {
        self.state().pods.push(name.to_owned());
        self.send_pod_event("ADDED", name);
    }

    fn delete_pod(&self, name: &str) {
        {
            let mut state = self.state();
            state.pods.retain(|pod| pod != name);
            state.terminating.retain(|pod| pod != name);
        }
        self.send_pod_event("DELETED", name);
    }

    /// Sets the pod's deletion timestamp, as an eviction, a node drain or a scale-in does.
    fn terminate_pod(&self, name: &str) {
        self.state().terminating.push(name.to_owned());
        self.send_pod_event("MODIFIED", name);
    }

    fn send_pod_event(&self, kind: &str, name: &str) {
        let mut state = self.state();
        state.resource_version += 1;
        let terminating = state.terminating.iter().any(|pod| pod == name);
        let object = pod_json(name, state.resource_version, terminating);
        let event = json!({ "type": kind, "object": object });
        let line = format!("{event}\n");
        let version = state.resource_version;
        state.pod_events.push((version, line.clone()));
        // Sent under the lock, so a watch that subscribes under it misses nothing. An error
        // only means that no watch is open.
        let _ = self.pod_watchers.send(line);
    }
}

fn pod_json(name: &str, resource_version: u64, terminating: bool) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "resourceVersion": resource_version.to_string(),
            "labels": { "app.kubernetes.io/name": STATEFULSET },
        },
        "status": {
            "phase": "Running",
            "conditions": [{ "type": "Ready", "status": "True" }],
        },
    });
    if terminating {
        pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        pod["status"]["conditions"][0]["status"] = json!("False");
    }
    pod
}

fn scale_json(state: &FakeState) -> Value {
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": STATEFULSET,
            "namespace": NAMESPACE,
            "resourceVersion": state.resource_version.to_string(),
        },
        "spec": { "replicas": state.replicas },
        "status": { "replicas": state.replicas, "selector": "app.kubernetes.io/name=gristmill" },
    })
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Returns a `Status` body as the API server sends it for a failed request.
fn failure(code: u16, reason: &str, message: String) -> Response {
    let status = StatusCode::from_u16(code).unwrap();
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    json_response(status, body)
}

fn forbidden(verb: &str, resource: &str) -> Response {
    let message = format!(
        "{STATEFULSET} is forbidden: User \"system:serviceaccount:{NAMESPACE}:gristmill\" \
         cannot {verb} resource \"{resource}\" in the namespace \"{NAMESPACE}\""
    );
    failure(403, "Forbidden", message)
}

fn not_found(name: &str) -> Response {
    failure(
        404,
        "NotFound",
        format!("statefulsets.apps \"{name}\" not found"),
    )
}

/// Applies a fault that another writer causes before the request.
fn apply_concurrent_fault(state: &mut FakeState, fault: Option<Fault>) -> Option<Fault> {
    match fault {
        Some(Fault::ConcurrentUpdate) => state.resource_version += 1,
        Some(Fault::ConcurrentResize(replicas)) => {
            state.replicas = replicas;
            state.resource_version += 1;
        }
        other => return other,
    }
    None
}

async fn get_statefulset(
    State(fake): State<Arc<Fake>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let state = fake.state();
    if state.denied.contains(&("get", "statefulsets")) {
        return forbidden("get", "statefulsets");
    }
    if namespace != NAMESPACE || name != STATEFULSET {
        return not_found(&name);
    }
    let statefulset = json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": STATEFULSET,
            "namespace": NAMESPACE,
            "resourceVersion": state.resource_version.to_string(),
        },
        "spec": {
            "replicas": state.replicas,
            "serviceName": "gristmill-headless",
            "selector": { "matchLabels": { "app.kubernetes.io/name": STATEFULSET } },
            "template": {},
        },
    });
    json_response(StatusCode::OK, statefulset)
}

async fn get_scale(
    State(fake): State<Arc<Fake>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let mut state = fake.state();
    state.get_scale_requests += 1;
    if state.denied.contains(&("get", "statefulsets/scale")) {
        return forbidden("get", "statefulsets/scale");
    }
    if namespace != NAMESPACE || name != STATEFULSET {
        return not_found(&name);
    }
    let fault = state.get_scale_faults.pop_front();
    if let Some(Fault::Status(code)) = apply_concurrent_fault(&mut state, fault) {
        return failure(code, "InternalError", "scripted failure".into());
    }
    json_response(StatusCode::OK, scale_json(&state))
}

async fn patch_scale(
    State(fake): State<Arc<Fake>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = fake.state();
    state.patch_requests += 1;
    if state.denied.contains(&("patch", "statefulsets/scale")) {
        return forbidden("patch", "statefulsets/scale");
    }
    if namespace != NAMESPACE || name != STATEFULSET {
        return not_found(&name);
    }
    let content_type = headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes());
    if content_type != Some(b"application/merge-patch+json") {
        return failure(415, "UnsupportedMediaType", format!("{content_type:?}"));
    }
    let patch: Value = serde_json::from_slice(&body).unwrap();
    let Some(replicas) = patch["spec"]["replicas"].as_u64() else {
        return failure(422, "Invalid", format!("no spec.replicas in {patch}"));
    };

    let fault = state.patch_faults.pop_front();
    let fault = apply_concurrent_fault(&mut state, fault);
    if let Some(Fault::Status(code)) = fault {
        return failure(code, "InternalError", "scripted failure".into());
    }
    let precondition = patch["metadata"]["resourceVersion"].as_str();
    if precondition.is_some_and(|version| version != state.resource_version.to_string()) {
        let message = "the object has been modified; please apply your changes to the latest \
                       version and try again";
        return failure(409, "Conflict", message.into());
    }
    state.replicas = u32::try_from(replicas).unwrap();
    state.resource_version += 1;
    if let Some(Fault::ApplyThenStatus(code)) = fault {
        return failure(code, "InternalError", "response lost after commit".into());
    }
    json_response(StatusCode::OK, scale_json(&state))
}

async fn pods(State(fake): State<Arc<Fake>>, Path(namespace): Path<String>, uri: Uri) -> Response {
    assert_eq!(namespace, NAMESPACE);
    let query = uri.query().unwrap_or_default();
    assert!(
        query.contains("labelSelector=app.kubernetes.io%2Fname%3Dgristmill"),
        "pod requests must use the StatefulSet's selector: {query}"
    );
    if query.split('&').any(|pair| pair == "watch=true") {
        let since: u64 = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("resourceVersion="))
            .and_then(|version| version.parse().ok())
            .unwrap_or(0);
        let state = fake.state();
        let live = BroadcastStream::new(fake.pod_watchers.subscribe()).filter_map(|line| line.ok());
        let missed: Vec<String> = state
            .pod_events
            .iter()
            .filter(|(version, _)| *version > since)
            .map(|(_, line)| line.clone())
            .collect();
        let events = tokio_stream::iter(missed)
            .chain(live)
            .map(|line| Ok::<_, std::io::Error>(Bytes::from(line)));
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(events))
            .unwrap();
    }
    let state = fake.state();
    let items: Vec<Value> = state
        .pods
        .iter()
        .map(|name| {
            let terminating = state.terminating.contains(name);
            pod_json(name, state.resource_version, terminating)
        })
        .collect();
    let list = json!({
        "apiVersion": "v1",
        "kind": "PodList",
        "metadata": { "resourceVersion": state.resource_version.to_string() },
        "items": items,
    });
    json_response(StatusCode::OK, list)
}

/// Serves `fake` on a loopback port chosen by the OS.
async fn serve(fake: Arc<Fake>) -> SocketAddr {
    let statefulset = "/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}";
    let app = Router::new()
        .route(statefulset, get(get_statefulset))
        .route(
            &format!("{statefulset}/scale"),
            get(get_scale).patch(patch_scale),
        )
        .route("/api/v1/namespaces/{namespace}/pods", get(pods))
        .with_state(fake);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

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
