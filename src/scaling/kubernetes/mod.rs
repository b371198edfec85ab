//! The Kubernetes orchestrator: sizes the node StatefulSet through its scale subresource.
//!
//! The nodes run as pods of one StatefulSet, so the cluster size is the StatefulSet's
//! `spec.replicas` and each node is named `<statefulset>-<ordinal>`. The orchestrator:
//!
//! 1. finds the StatefulSet from the config, or from the pod's own name by removing the
//!    ordinal, and reads its pod selector;
//! 2. scales out by patching `spec.replicas` upward; the new pods are the next ordinals;
//! 3. scales in by patching `spec.replicas` down by one, which deletes the highest ordinal.
//!    It rejects any other pod, so the supervisor drains the pod that
//!    [`Orchestrator::forced_removal_candidate`](crate::scaling::orchestrator::Orchestrator::forced_removal_candidate)
//!    names;
//! 4. reports pods that Kubernetes stops for its own reasons (eviction, node drain, a manual
//!    delete) to the supervisor, which records them and does not replace them (see
//!    `disruption.rs`);
//! 5. retries conflicts, server errors and connection errors with bounded exponential
//!    backoff, re-reading the size before each patch so that a patch whose response was lost
//!    is not applied twice (see `resize.rs`).
//!
//! RBAC, in the StatefulSet's namespace: `get` on `statefulsets`, `get` and `patch` on
//! `statefulsets/scale`, and `get`, `list` and `watch` on `pods`.

mod api_error;
mod config;
mod disruption;
mod lazy;
mod orchestrator;
mod ordinal;
mod pods;
mod resize;
mod retry;
mod steps;

pub use config::{KubernetesConfig, KubernetesConfigError, RetryPolicy};
pub use lazy::LazyKubernetesOrchestrator;
pub use orchestrator::{KubernetesOrchestrator, KubernetesSetupError};
pub use pods::{PodSet, PodView, PodWatch};
pub use steps::ScaleStep;

/// Installs ring as the process-wide rustls crypto provider unless one is installed.
///
/// kube's client needs a process-wide provider because the dependency graph enables both
/// ring (through kube) and aws-lc-rs (through ractor_cluster's TLS), so rustls cannot pick
/// one itself. [`KubernetesOrchestrator::connect`] calls this; callers that build a
/// `kube::Client` themselves call it first.
pub fn install_crypto_provider() {
    // An error means a provider is already installed, which is all this needs.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
