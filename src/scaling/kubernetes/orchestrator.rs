//! The orchestrator that sizes the node StatefulSet through its scale subresource.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::core::Selector;
use kube::{Api, Client};
use tracing::info;

use super::api_error::{ApiFailure, ApiRequest};
use super::config::{KubernetesConfig, KubernetesConfigError};
use super::disruption::{DisruptionMonitor, Disruptions, SharedDisruptions};
use super::ordinal;
use super::pods::{self, PodSet, PodWatch};
use super::resize::{NextStep, Resize, ResizePlan};
use super::retry::Retrier;
use super::steps::{ScaleStep, StepLog};
use crate::scaling::orchestrator::{BoxFuture, Orchestrator, OrchestratorError};

/// Field manager recorded on the StatefulSet for the orchestrator's patches.
const FIELD_MANAGER: &str = "gristmill-supervisor";

/// Failure to set up the Kubernetes orchestrator. Nothing in the cluster changed.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesSetupError {
    /// A setting is invalid; fix the configuration.
    #[error(transparent)]
    Config(#[from] KubernetesConfigError),
    /// No client configuration was found: neither a kubeconfig nor the in-cluster service
    /// account. Retrying cannot help.
    #[error("failed to load the Kubernetes client configuration: {0}")]
    Client(#[source] kube::Error),
    /// The StatefulSet could not be read. The source error tells whether a retry can help.
    #[error("failed to read StatefulSet {namespace}/{name}: {source}")]
    StatefulSet {
        /// Namespace searched.
        namespace: String,
        /// StatefulSet name.
        name: String,
        /// The failure of the read.
        #[source]
        source: OrchestratorError,
    },
}

/// Sizes the StatefulSet the nodes run in, for the scaling supervisor.
///
/// Every operation reads the scale subresource first and patches `spec.replicas` with the
/// read `resourceVersion` as a precondition, so a concurrent change makes the patch fail
/// with 409 instead of being overwritten. The steps of each operation go to a log that the
/// supervisor drains with [`KubernetesOrchestrator::take_steps`].
#[derive(Debug)]
pub struct KubernetesOrchestrator {
    statefulsets: Api<StatefulSet>,
    pods: Api<Pod>,
    namespace: String,
    statefulset: String,
    /// Label selector of the StatefulSet's pods, such as `app=gristmill`.
    pod_selector: String,
    config: KubernetesConfig,
    steps: StepLog,
    disruptions: SharedDisruptions,
    /// Started by the first [`Orchestrator::disrupted_nodes`] call.
    monitor: OnceLock<DisruptionMonitor>,
}

impl KubernetesOrchestrator {
    /// Connects with the in-cluster service account (or a kubeconfig, when one exists) and
    /// finds the StatefulSet. kube's built-in retry is turned off, because it repeats a PATCH
    /// after a 503 without re-reading; the orchestrator retries by itself instead.
    pub async fn connect(config: KubernetesConfig) -> Result<Self, KubernetesSetupError> {
        config.validate()?;
        super::install_crypto_provider();
        let mut client_config = kube::Config::infer()
            .await
            .map_err(|error| KubernetesSetupError::Client(kube::Error::InferConfig(error)))?;
        client_config.default_retry = false;
        let client = Client::try_from(client_config).map_err(KubernetesSetupError::Client)?;
        Self::with_client(client, config).await
    }

    /// Finds the StatefulSet through `client`, retrying as the config allows.
    ///
    /// Build `client` after [`install_crypto_provider`](super::install_crypto_provider) and
    /// with `kube::Config::default_retry` set to `false`. Otherwise kube repeats a PATCH that
    /// failed with 503 on its own, and the bounds of [`KubernetesConfig::retry`] do not hold.
    pub async fn with_client(
        client: Client,
        config: KubernetesConfig,
    ) -> Result<Self, KubernetesSetupError> {
        config.validate()?;
        let statefulset = config.statefulset_name()?;
        let namespace = config
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let mut orchestrator = Self {
            statefulsets: Api::namespaced(client.clone(), &namespace),
            pods: Api::namespaced(client, &namespace),
            namespace,
            statefulset,
            pod_selector: String::new(),
            config,
            steps: StepLog::new(),
            disruptions: SharedDisruptions::default(),
            monitor: OnceLock::new(),
        };
        orchestrator.pod_selector = orchestrator.read_pod_selector().await.map_err(|source| {
            KubernetesSetupError::StatefulSet {
                namespace: orchestrator.namespace.clone(),
                name: orchestrator.statefulset.clone(),
                source,
            }
        })?;
        info!(
            namespace = %orchestrator.namespace,
            statefulset = %orchestrator.statefulset,
            selector = %orchestrator.pod_selector,
            "kubernetes orchestrator found its StatefulSet"
        );
        Ok(orchestrator)
    }

    /// Returns the namespace of the StatefulSet.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Returns the name of the StatefulSet.
    pub fn statefulset(&self) -> &str {
        &self.statefulset
    }

    /// Removes and returns the steps recorded since the last call, oldest first, for the
    /// supervisor's decision record.
    pub fn take_steps(&self) -> Vec<ScaleStep> {
        self.steps.take()
    }

    /// Lists the StatefulSet's pods, retrying as the config allows.
    pub async fn list_pods(&self) -> Result<PodSet, OrchestratorError> {
        let request = self.request("list", "pods");
        let mut retrier = Retrier::new(&self.config.retry, &self.steps);
        loop {
            match pods::list_pods(&self.pods, &self.statefulset, &self.pod_selector).await {
                Ok(pods) => return Ok(pods),
                Err(error) => {
                    let failure = ApiFailure::classify(error, request);
                    retrier.wait_or_give_up(failure).await?;
                }
            }
        }
    }

    /// Starts a watch on the StatefulSet's pods. It runs until the returned handle is dropped.
    pub fn watch_pods(&self) -> PodWatch {
        PodWatch::spawn(
            self.pods.clone(),
            self.statefulset.clone(),
            self.pod_selector.clone(),
        )
    }

    fn request(&self, verb: &'static str, resource: &'static str) -> ApiRequest<'_> {
        ApiRequest {
            verb,
            resource,
            namespace: &self.namespace,
        }
    }

    /// Reads the StatefulSet and returns its pod selector as a label-selector string.
    async fn read_pod_selector(&self) -> Result<String, OrchestratorError> {
        let request = self.request("get", "statefulsets");
        let mut retrier = Retrier::new(&self.config.retry, &self.steps);
        let statefulset = loop {
            match self.statefulsets.get(&self.statefulset).await {
                Ok(statefulset) => break statefulset,
                Err(error) => {
                    let failure = ApiFailure::classify(error, request);
                    retrier.wait_or_give_up(failure).await?;
                }
            }
        };
        let label_selector = statefulset
            .spec
            .map(|spec| spec.selector)
            .unwrap_or_default();
        let selector = Selector::try_from(label_selector).map_err(|error| {
            OrchestratorError::Invalid(format!(
                "StatefulSet {} has a pod selector that cannot be used: {error}",
                self.statefulset
            ))
        })?;
        if selector.selects_all() {
            return Err(OrchestratorError::Invalid(format!(
                "StatefulSet {} has an empty pod selector",
                self.statefulset
            )));
        }
        Ok(selector.to_string())
    }

    /// Reads `spec.replicas` through the scale subresource, with its `resourceVersion`.
    async fn read_scale(&self) -> Result<(u32, Option<String>), ApiFailure> {
        let scale = self
            .statefulsets
            .get_scale(&self.statefulset)
            .await
            .map_err(|error| {
                ApiFailure::classify(error, self.request("get", "statefulsets/scale"))
            })?;
        let replicas = scale.spec.and_then(|spec| spec.replicas).unwrap_or(0);
        let replicas = u32::try_from(replicas).unwrap_or(0);
        self.steps.record(ScaleStep::ReadScale { replicas });
        Ok((replicas, scale.metadata.resource_version))
    }

    /// Reads the size, retrying as the config allows.
    async fn read_replicas(&self) -> Result<u32, OrchestratorError> {
        let mut retrier = Retrier::new(&self.config.retry, &self.steps);
        loop {
            match self.read_scale().await {
                Ok((replicas, _)) => return Ok(replicas),
                Err(failure) => retrier.wait_or_give_up(failure).await?,
            }
        }
    }

    /// Carries out `resize`, retrying as the config allows, and returns the base and target
    /// sizes.
    async fn resize(&self, resize: Resize) -> Result<(u32, u32), OrchestratorError> {
        let mut plan = ResizePlan::new(
            resize,
            &self.statefulset,
            self.config.min_replicas,
            self.config.max_replicas,
        );
        let mut retrier = Retrier::new(&self.config.retry, &self.steps);
        loop {
            match self.attempt_resize(&mut plan).await {
                Ok(sizes) => return Ok(sizes),
                Err(failure) => retrier.wait_or_give_up(failure).await?,
            }
        }
    }

    /// Makes one read and, if the plan needs it, one patch.
    async fn attempt_resize(&self, plan: &mut ResizePlan) -> Result<(u32, u32), ApiFailure> {
        let (replicas, resource_version) = self.read_scale().await?;
        let next = plan.handle_read(replicas).map_err(ApiFailure::Final)?;
        let sizes = plan.sizes().unwrap_or((replicas, replicas));
        let NextStep::Patch { from, to } = next else {
            if sizes.0 != sizes.1 {
                self.steps.record(ScaleStep::AlreadyAtTarget { replicas });
            }
            return Ok(sizes);
        };

        let mut patch = serde_json::json!({ "spec": { "replicas": to } });
        if let Some(resource_version) = resource_version {
            patch["metadata"] = serde_json::json!({ "resourceVersion": resource_version });
        }
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        self.statefulsets
            .patch_scale(&self.statefulset, &params, &Patch::Merge(&patch))
            .await
            .map_err(|error| {
                ApiFailure::classify(error, self.request("patch", "statefulsets/scale"))
            })?;
        info!(
            namespace = %self.namespace,
            statefulset = %self.statefulset,
            from,
            to,
            "patched StatefulSet replicas"
        );
        self.steps.record(ScaleStep::PatchedScale { from, to });
        Ok(sizes)
    }
}

impl Orchestrator for KubernetesOrchestrator {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn take_steps(&self) -> Vec<String> {
        self.steps.take().iter().map(ToString::to_string).collect()
    }

    fn current_nodes(&self) -> BoxFuture<'_, Result<u32, OrchestratorError>> {
        Box::pin(self.read_replicas())
    }

    /// Raises `spec.replicas` by `count` and returns the names of the new pods. Fails with
    /// `Invalid`, patching nothing, when the new size would exceed `max_replicas`.
    fn add_nodes(&self, count: u32) -> BoxFuture<'_, Result<Vec<String>, OrchestratorError>> {
        Box::pin(async move {
            let (base, target) = self.resize(Resize::Add(count)).await?;
            Ok((base..target)
                .map(|ordinal| ordinal::pod_name(&self.statefulset, ordinal))
                .collect())
        })
    }

    /// Lowers `spec.replicas` by one. Fails with `Invalid`, patching nothing, unless `name`
    /// is the pod with the highest ordinal and the new size stays at or above
    /// `min_replicas`.
    fn remove_node<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), OrchestratorError>> {
        Box::pin(async move {
            Disruptions::lock(&self.disruptions).expect_removal(name);
            let result = self.resize(Resize::Remove(name.to_owned())).await;
            if result.is_err() {
                Disruptions::lock(&self.disruptions).forget_removal(name);
            }
            result.map(|_| ())
        })
    }

    fn forced_removal_candidate(&self, nodes: &[String]) -> Option<String> {
        ordinal::highest_ordinal(&self.statefulset, nodes).map(str::to_owned)
    }

    /// Returns the StatefulSet's pods that are terminating although this orchestrator did not
    /// remove them. The first call starts a pod watch, so it reports nothing until the
    /// watch has listed the pods.
    fn disrupted_nodes(&self) -> BoxFuture<'_, BTreeSet<String>> {
        Box::pin(async move {
            self.monitor.get_or_init(|| {
                DisruptionMonitor::start(self.watch_pods(), self.disruptions.clone())
            });
            Disruptions::lock(&self.disruptions).take()
        })
    }
}
