//! The step log: what the orchestrator did to the StatefulSet, for the decision record.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

/// One step of an orchestrator operation against the Kubernetes API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScaleStep {
    /// The scale subresource was read.
    ReadScale {
        /// `spec.replicas` of the StatefulSet.
        replicas: u32,
    },
    /// The StatefulSet already had the target size, so nothing was patched. This happens
    /// when an earlier patch whose response was lost had taken effect.
    AlreadyAtTarget {
        /// The size found.
        replicas: u32,
    },
    /// `spec.replicas` was patched.
    PatchedScale {
        /// Size before the patch.
        from: u32,
        /// Size after the patch.
        to: u32,
    },
    /// A request failed and will be retried after `backoff`.
    Retrying {
        /// Failed requests so far in this operation.
        failed_attempts: u32,
        /// Wait before the next request.
        backoff: Duration,
        /// The failure.
        reason: String,
    },
    /// The operation failed. The reason states whether anything changed.
    Failed {
        /// The final error.
        reason: String,
    },
}

impl fmt::Display for ScaleStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReadScale { replicas } => write!(f, "read scale: {replicas} replicas"),
            Self::AlreadyAtTarget { replicas } => {
                write!(f, "scale already at target: {replicas} replicas")
            }
            Self::PatchedScale { from, to } => write!(f, "patched scale: {from} -> {to}"),
            Self::Retrying {
                failed_attempts,
                backoff,
                reason,
            } => write!(
                f,
                "retrying after {backoff:?} ({failed_attempts} failed): {reason}"
            ),
            Self::Failed { reason } => write!(f, "failed: {reason}"),
        }
    }
}

/// A bounded log of steps that the supervisor drains after each operation.
#[derive(Debug)]
pub(super) struct StepLog {
    steps: Mutex<VecDeque<ScaleStep>>,
}

/// Steps kept while the log is not drained. Older steps are dropped first.
const MAX_STEPS: usize = 256;

impl StepLog {
    pub(super) fn new() -> Self {
        Self {
            steps: Mutex::new(VecDeque::new()),
        }
    }

    pub(super) fn record(&self, step: ScaleStep) {
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        if steps.len() == MAX_STEPS {
            steps.pop_front();
        }
        steps.push_back(step);
    }

    pub(super) fn take(&self) -> Vec<ScaleStep> {
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        steps.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_log_drops_oldest_beyond_bound() {
        let log = StepLog::new();
        let total = u32::try_from(MAX_STEPS).unwrap() + 3;
        for replicas in 0..total {
            log.record(ScaleStep::ReadScale { replicas });
        }
        let steps = log.take();
        assert_eq!(steps.len(), MAX_STEPS);
        assert_eq!(steps[0], ScaleStep::ReadScale { replicas: 3 });
        assert!(log.take().is_empty(), "take must drain the log");
    }
}
