//! Pods that Kubernetes stops for reasons of its own: terminating pods that the supervisor
//! did not remove.
//!
//! A pod gets a deletion timestamp when the StatefulSet shrinks, and also when it is evicted,
//! when its node is drained, or when someone deletes it. Only the first is the supervisor's
//! doing. The orchestrator notes each pod it removes before it patches `spec.replicas`, and
//! every other terminating pod is a disruption. Such a pod drains on SIGTERM, and the
//! StatefulSet starts a pod with the same name once it is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::JoinHandle;
use tracing::info;

use super::pods::{PodSet, PodWatch};

/// Progress of a removal that the supervisor requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Removal {
    /// `spec.replicas` is being lowered; the pod has not been seen terminating yet.
    Requested,
    /// The pod was seen terminating.
    Terminating,
}

/// Tells disruptions apart from the removals the orchestrator requested.
#[derive(Debug, Default)]
pub(super) struct DisruptionTracker {
    removals: BTreeMap<String, Removal>,
}

impl DisruptionTracker {
    /// Notes that the orchestrator is about to remove `pod`, so its termination is expected.
    pub(super) fn expect_removal(&mut self, pod: &str) {
        self.removals.insert(pod.to_owned(), Removal::Requested);
    }

    /// Forgets a removal whose patch failed, so that a later termination of the pod counts
    /// as a disruption again.
    pub(super) fn forget_removal(&mut self, pod: &str) {
        self.removals.remove(pod);
    }

    /// Returns the terminating pods of `pods` that the orchestrator did not remove.
    ///
    /// A requested removal ends once its pod was seen terminating and then disappeared, so a
    /// later pod with the same name is tracked afresh.
    pub(super) fn handle_pods(&mut self, pods: &PodSet) -> BTreeSet<String> {
        self.removals.retain(|name, removal| match pods.get(name) {
            Some(pod) if pod.terminating => {
                *removal = Removal::Terminating;
                true
            }
            Some(_) => true,
            None => *removal == Removal::Requested,
        });
        pods.values()
            .filter(|pod| pod.terminating && !self.removals.contains_key(&pod.name))
            .map(|pod| pod.name.clone())
            .collect()
    }
}

/// The disruptions seen so far, shared between the orchestrator and its monitor task.
#[derive(Debug, Default)]
pub(super) struct Disruptions {
    tracker: DisruptionTracker,
    /// Pods terminating without a request at the latest pod change.
    current: BTreeSet<String>,
    /// Pods seen disrupted since the supervisor last asked, so that a pod that terminates
    /// and disappears between two evaluations is still reported.
    unreported: BTreeSet<String>,
}

/// [`Disruptions`] behind a lock.
pub(super) type SharedDisruptions = Arc<Mutex<Disruptions>>;

impl Disruptions {
    pub(super) fn lock(shared: &SharedDisruptions) -> MutexGuard<'_, Disruptions> {
        shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn expect_removal(&mut self, pod: &str) {
        self.tracker.expect_removal(pod);
    }

    pub(super) fn forget_removal(&mut self, pod: &str) {
        self.tracker.forget_removal(pod);
    }

    fn handle_pods(&mut self, pods: &PodSet) {
        let current = self.tracker.handle_pods(pods);
        for pod in current.difference(&self.current) {
            info!(pod = %pod, "pod is terminating without a request from the supervisor");
        }
        self.unreported.extend(current.iter().cloned());
        self.current = current;
    }

    /// Returns the pods disrupted now or since the last call.
    pub(super) fn take(&mut self) -> BTreeSet<String> {
        let mut pods = std::mem::take(&mut self.unreported);
        pods.extend(self.current.iter().cloned());
        pods
    }
}

/// Feeds every change of the pod watch into [`Disruptions`] until it is dropped.
#[derive(Debug)]
pub(super) struct DisruptionMonitor {
    task: JoinHandle<()>,
    // Kept so that the watch runs as long as the monitor.
    _watch: PodWatch,
}

impl DisruptionMonitor {
    pub(super) fn start(watch: PodWatch, disruptions: SharedDisruptions) -> Self {
        let mut pods = watch.subscribe();
        let task = tokio::spawn(async move {
            while pods.changed().await.is_ok() {
                let snapshot = pods.borrow_and_update().clone();
                Disruptions::lock(&disruptions).handle_pods(&snapshot);
            }
        });
        Self {
            task,
            _watch: watch,
        }
    }
}

impl Drop for DisruptionMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::super::pods::PodView;
    use super::*;

    fn pods(entries: &[(&str, bool)]) -> PodSet {
        entries
            .iter()
            .map(|(name, terminating)| {
                let view = PodView {
                    name: (*name).to_owned(),
                    ordinal: None,
                    phase: Some("Running".into()),
                    ready: !terminating,
                    terminating: *terminating,
                };
                ((*name).to_owned(), view)
            })
            .collect()
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn unrequested_termination_is_disruption() {
        let mut tracker = DisruptionTracker::default();
        let seen = tracker.handle_pods(&pods(&[("g-0", false), ("g-1", true)]));
        assert_eq!(seen, names(&["g-1"]));
    }

    #[test]
    fn requested_removal_is_not_disruption() {
        let mut tracker = DisruptionTracker::default();
        tracker.expect_removal("g-2");
        let before = tracker.handle_pods(&pods(&[("g-1", false), ("g-2", false)]));
        assert!(before.is_empty(), "{before:?}");
        let terminating = tracker.handle_pods(&pods(&[("g-1", false), ("g-2", true)]));
        assert!(terminating.is_empty(), "{terminating:?}");
    }

    #[test]
    fn removal_ends_when_pod_is_gone() {
        // The supervisor removed g-2; later Kubernetes evicts the g-2 of a new scale-out.
        let mut tracker = DisruptionTracker::default();
        tracker.expect_removal("g-2");
        tracker.handle_pods(&pods(&[("g-2", true)]));
        tracker.handle_pods(&pods(&[]));
        tracker.handle_pods(&pods(&[("g-2", false)]));
        let evicted = tracker.handle_pods(&pods(&[("g-2", true)]));
        assert_eq!(evicted, names(&["g-2"]));
    }

    #[test]
    fn requested_removal_survives_unlisted_pod() {
        // The watch may not have listed the pod yet when the removal is requested.
        let mut tracker = DisruptionTracker::default();
        tracker.expect_removal("g-2");
        tracker.handle_pods(&pods(&[]));
        let terminating = tracker.handle_pods(&pods(&[("g-2", true)]));
        assert!(terminating.is_empty(), "{terminating:?}");
    }

    #[test]
    fn forgotten_removal_counts_again() {
        let mut tracker = DisruptionTracker::default();
        tracker.expect_removal("g-2");
        tracker.forget_removal("g-2");
        let evicted = tracker.handle_pods(&pods(&[("g-2", true)]));
        assert_eq!(evicted, names(&["g-2"]));
    }
}
