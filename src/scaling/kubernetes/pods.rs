//! The pods of the StatefulSet as the API server reports them: a one-off list and a live
//! watch.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::ordinal;

/// One pod of the StatefulSet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    /// Pod name, such as `gristmill-2`; the node name of the node it runs.
    pub name: String,
    /// Ordinal from the name's `-<n>` suffix, or `None` for a pod that the selector matched
    /// but the StatefulSet did not name.
    pub ordinal: Option<u32>,
    /// `status.phase`, such as `Pending` or `Running`; `None` before the kubelet reports.
    pub phase: Option<String>,
    /// Whether the pod's `Ready` condition is `True`, which the gRPC readiness probe sets once
    /// the node has joined the cluster.
    pub ready: bool,
    /// Whether the pod is terminating (it has a deletion timestamp).
    pub terminating: bool,
}

impl PodView {
    pub(super) fn from_pod(statefulset: &str, pod: &Pod) -> Option<Self> {
        let name = pod.metadata.name.clone()?;
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|status| status.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|condition| condition.type_ == "Ready" && condition.status == "True");
        Some(Self {
            ordinal: ordinal::ordinal_in(statefulset, &name),
            phase: status.and_then(|status| status.phase.clone()),
            ready,
            terminating: pod.metadata.deletion_timestamp.is_some(),
            name,
        })
    }
}

/// The pods of the StatefulSet by name.
pub type PodSet = BTreeMap<String, PodView>;

/// Lists the pods that `selector` matches.
pub(super) async fn list_pods(
    api: &Api<Pod>,
    statefulset: &str,
    selector: &str,
) -> kube::Result<PodSet> {
    let pods = api.list(&ListParams::default().labels(selector)).await?;
    Ok(pods
        .items
        .iter()
        .filter_map(|pod| PodView::from_pod(statefulset, pod))
        .map(|view| (view.name.clone(), view))
        .collect())
}

/// A live view of the StatefulSet's pods, kept current by a watch on the API server.
///
/// The view starts empty and fills after the first list. Dropping the `PodWatch` stops the
/// watch.
#[derive(Debug)]
pub struct PodWatch {
    pods: watch::Receiver<PodSet>,
    task: JoinHandle<()>,
}

impl PodWatch {
    pub(super) fn spawn(api: Api<Pod>, statefulset: String, selector: String) -> Self {
        let (sender, pods) = watch::channel(PodSet::new());
        let task = tokio::spawn(run_watch(api, statefulset, selector, sender));
        Self { pods, task }
    }

    /// Returns the pods as last reported.
    pub fn pods(&self) -> PodSet {
        self.pods.borrow().clone()
    }

    /// Returns a receiver that is notified on every change of the pods.
    pub fn subscribe(&self) -> watch::Receiver<PodSet> {
        self.pods.clone()
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Applies watch events to `sender` until every receiver is gone. The watcher lists again
/// after an error, with kube's default backoff.
async fn run_watch(
    api: Api<Pod>,
    statefulset: String,
    selector: String,
    sender: watch::Sender<PodSet>,
) {
    let config = watcher::Config::default().labels(&selector);
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut relisted = PodSet::new();
    let mut errors_in_a_row: u32 = 0;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                errors_in_a_row += 1;
                warn!(%error, errors_in_a_row, "pod watch failed, restarting");
                continue;
            }
        };
        errors_in_a_row = 0;
        let view = |pod: &Pod| PodView::from_pod(&statefulset, pod);
        match event {
            watcher::Event::Init => relisted.clear(),
            watcher::Event::InitApply(pod) => {
                if let Some(view) = view(&pod) {
                    relisted.insert(view.name.clone(), view);
                }
            }
            watcher::Event::InitDone => {
                debug!(pods = relisted.len(), "pod watch listed pods");
                sender.send_replace(std::mem::take(&mut relisted));
            }
            watcher::Event::Apply(pod) => {
                if let Some(view) = view(&pod) {
                    sender.send_modify(|pods| {
                        pods.insert(view.name.clone(), view);
                    });
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some(name) = pod.metadata.name {
                    sender.send_modify(|pods| {
                        pods.remove(&name);
                    });
                }
            }
        }
        if sender.is_closed() {
            break;
        }
    }
}
