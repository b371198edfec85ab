//! A fake Kubernetes API server for tests: the StatefulSet, its scale subresource and its pods,
//! served by axum on a loopback port, with scripted faults and request counts.
//!
//! Included with `#[path]` by the orchestrator tests and by the node process tests, so not
//! every item is used by every test binary.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

/// Namespace of the fake StatefulSet.
pub const NAMESPACE: &str = "grains";
/// Name of the fake StatefulSet; its pods are `gristmill-<ordinal>`.
pub const STATEFULSET: &str = "gristmill";

/// A fault the fake injects into the next request of one kind.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
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
pub struct FakeState {
    pub replicas: u32,
    pub resource_version: u64,
    /// Pod names; every pod is Running, and Ready unless it is terminating.
    pub pods: Vec<String>,
    /// Pods with a deletion timestamp, as after an eviction or a scale-in.
    pub terminating: Vec<String>,
    /// RBAC rules missing from the service account, as `(verb, resource)`.
    pub denied: Vec<(&'static str, &'static str)>,
    pub get_scale_faults: VecDeque<Fault>,
    pub patch_faults: VecDeque<Fault>,
    pub get_scale_requests: u32,
    pub patch_requests: u32,
    /// Pod watch events with their resourceVersion, replayed to watches that start later.
    pub pod_events: Vec<(u64, String)>,
}

pub struct Fake {
    pub state: Mutex<FakeState>,
    /// Watch events, one JSON line each, sent to every open pod watch.
    pub pod_watchers: broadcast::Sender<String>,
}

impl Fake {
    pub fn with_replicas(replicas: u32) -> Self {
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

    pub fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    pub fn add_pod(&self, name: &str) {
        self.state().pods.push(name.to_owned());
        self.send_pod_event("ADDED", name);
    }

    pub fn delete_pod(&self, name: &str) {
        {
            let mut state = self.state();
            state.pods.retain(|pod| pod != name);
            state.terminating.retain(|pod| pod != name);
        }
        self.send_pod_event("DELETED", name);
    }

    /// Sets the pod's deletion timestamp, as an eviction, a node drain or a scale-in does.
    pub fn terminate_pod(&self, name: &str) {
        self.state().terminating.push(name.to_owned());
        self.send_pod_event("MODIFIED", name);
    }

    pub fn send_pod_event(&self, kind: &str, name: &str) {
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

pub fn pod_json(name: &str, resource_version: u64, terminating: bool) -> Value {
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

pub fn scale_json(state: &FakeState) -> Value {
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

pub fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Returns a `Status` body as the API server sends it for a failed request.
pub fn failure(code: u16, reason: &str, message: String) -> Response {
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

pub fn forbidden(verb: &str, resource: &str) -> Response {
    let message = format!(
        "{STATEFULSET} is forbidden: User \"system:serviceaccount:{NAMESPACE}:gristmill\" \
         cannot {verb} resource \"{resource}\" in the namespace \"{NAMESPACE}\""
    );
    failure(403, "Forbidden", message)
}

pub fn not_found(name: &str) -> Response {
    failure(
        404,
        "NotFound",
        format!("statefulsets.apps \"{name}\" not found"),
    )
}

/// Applies a fault that another writer causes before the request.
pub fn apply_concurrent_fault(state: &mut FakeState, fault: Option<Fault>) -> Option<Fault> {
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

pub async fn get_statefulset(
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

pub async fn get_scale(
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

pub async fn patch_scale(
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

pub async fn pods(
    State(fake): State<Arc<Fake>>,
    Path(namespace): Path<String>,
    uri: Uri,
) -> Response {
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
pub async fn serve(fake: Arc<Fake>) -> SocketAddr {
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
