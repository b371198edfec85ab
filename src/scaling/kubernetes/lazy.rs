//! The Kubernetes orchestrator as the supervisor builds it: connected on first use.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::OnceCell;

use super::{KubernetesConfig, KubernetesOrchestrator, ordinal};
use crate::scaling::orchestrator::{BoxFuture, Orchestrator, OrchestratorError};

/// Connects to the API server when the supervisor first needs it, because the supervisor
/// builds its orchestrator synchronously, and retries the connection on the next request
/// if it failed.
pub struct LazyKubernetesOrchestrator {
    config: KubernetesConfig,
    statefulset: Option<String>,
    connected: Arc<OnceCell<KubernetesOrchestrator>>,
    /// Whether a background connection attempt runs.
    connecting: Arc<AtomicBool>,
}

impl LazyKubernetesOrchestrator {
    /// Creates the orchestrator; nothing is sent before the first request.
    pub fn new(config: KubernetesConfig) -> Self {
        let statefulset = config.statefulset_name().ok();
        Self {
            config,
            statefulset,
            connected: Arc::new(OnceCell::new()),
            connecting: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Starts connecting in a task unless a connection attempt already runs.
    fn maybe_connect_in_background(&self) {
        if self.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let connected = self.connected.clone();
        let config = self.config.clone();
        let connecting = self.connecting.clone();
        tokio::spawn(async move {
            let result = connected
                .get_or_try_init(|| KubernetesOrchestrator::connect(config))
                .await;
            if let Err(error) = result {
                tracing::warn!(%error, "cannot connect to the Kubernetes API to watch pods");
            }
            connecting.store(false, Ordering::Release);
        });
    }

    async fn connected(&self) -> Result<&KubernetesOrchestrator, OrchestratorError> {
        self.connected
            .get_or_try_init(|| KubernetesOrchestrator::connect(self.config.clone()))
            .await
            .map_err(|error| OrchestratorError::Unavailable(error.to_string()))
    }
}

impl Orchestrator for LazyKubernetesOrchestrator {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn take_steps(&self) -> Vec<String> {
        self.connected
            .get()
            .map(Orchestrator::take_steps)
            .unwrap_or_default()
    }

    fn current_nodes(&self) -> BoxFuture<'_, Result<u32, OrchestratorError>> {
        Box::pin(async move { self.connected().await?.current_nodes().await })
    }

    fn add_nodes(&self, count: u32) -> BoxFuture<'_, Result<Vec<String>, OrchestratorError>> {
        Box::pin(async move { self.connected().await?.add_nodes(count).await })
    }

    fn remove_node<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), OrchestratorError>> {
        Box::pin(async move { self.connected().await?.remove_node(name).await })
    }

    fn forced_removal_candidate(&self, nodes: &[String]) -> Option<String> {
        let statefulset = self.statefulset.as_deref()?;
        ordinal::highest_ordinal(statefulset, nodes).map(str::to_owned)
    }

    /// Reports nothing until connected. The first call starts connecting in the background,
    /// because the supervisor calls this on every evaluation and must not wait for retries against
    /// an API server that is down.
    fn disrupted_nodes(&self) -> BoxFuture<'_, BTreeSet<String>> {
        Box::pin(async move {
            if let Some(orchestrator) = self.connected.get() {
                return orchestrator.disrupted_nodes().await;
            }
            self.maybe_connect_in_background();
            BTreeSet::new()
        })
    }
}
