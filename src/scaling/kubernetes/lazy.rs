//! The Kubernetes orchestrator as the supervisor builds it: connected on first use.

use tokio::sync::OnceCell;

use super::{KubernetesConfig, KubernetesOrchestrator, ordinal};
use crate::scaling::orchestrator::{BoxFuture, Orchestrator, OrchestratorError};

/// Connects to the API server when the supervisor first needs it, because the supervisor
/// builds its orchestrator synchronously, and retries the connection on the next request
/// if it failed.
pub struct LazyKubernetesOrchestrator {
    config: KubernetesConfig,
    statefulset: Option<String>,
    connected: OnceCell<KubernetesOrchestrator>,
}

impl LazyKubernetesOrchestrator {
    /// Creates the orchestrator; nothing is sent before the first request.
    pub fn new(config: KubernetesConfig) -> Self {
        let statefulset = config.statefulset_name().ok();
        Self {
            config,
            statefulset,
            connected: OnceCell::new(),
        }
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
}
