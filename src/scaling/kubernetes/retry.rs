//! Bounded exponential backoff between the attempts of one orchestrator operation.

use tracing::warn;

use super::api_error::ApiFailure;
use super::config::RetryPolicy;
use super::steps::{ScaleStep, StepLog};
use crate::scaling::orchestrator::OrchestratorError;

/// Counts the failed requests of one operation and waits between them.
pub(super) struct Retrier<'a> {
    policy: &'a RetryPolicy,
    steps: &'a StepLog,
    failed_attempts: u32,
}

impl<'a> Retrier<'a> {
    pub(super) fn new(policy: &'a RetryPolicy, steps: &'a StepLog) -> Self {
        Self {
            policy,
            steps,
            failed_attempts: 0,
        }
    }

    /// Records `failure` and waits before the next attempt, or returns the final error when
    /// the failure cannot be retried or the attempts are used up.
    pub(super) async fn wait_or_give_up(
        &mut self,
        failure: ApiFailure,
    ) -> Result<(), OrchestratorError> {
        self.failed_attempts += 1;
        let backoff = match failure {
            ApiFailure::Final(_) => None,
            _ => self.policy.backoff_after(self.failed_attempts),
        };
        let Some(backoff) = backoff else {
            let error = failure.into_final(self.failed_attempts);
            self.give_up(&error);
            return Err(error);
        };
        warn!(
            failed_attempts = self.failed_attempts,
            ?backoff,
            %failure,
            "kubernetes request failed, retrying"
        );
        self.steps.record(ScaleStep::Retrying {
            failed_attempts: self.failed_attempts,
            backoff,
            reason: failure.to_string(),
        });
        tokio::time::sleep(backoff).await;
        Ok(())
    }

    /// Records an error that ends the operation without a retry.
    pub(super) fn give_up(&self, error: &OrchestratorError) {
        match error {
            OrchestratorError::Forbidden { .. } | OrchestratorError::Unavailable(_) => {
                tracing::error!(%error, "kubernetes orchestrator request failed");
            }
            OrchestratorError::Conflict(_) | OrchestratorError::Invalid(_) => {
                warn!(%error, "kubernetes orchestrator request rejected");
            }
        }
        self.steps.record(ScaleStep::Failed {
            reason: error.to_string(),
        });
    }
}
