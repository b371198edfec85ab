//! The plan of one resize: the target size, checked against the limits, and what to do after
//! each read of the current size.
//!
//! The plan fixes its target at the first read and only ever patches from that base size to
//! that target. After a failed patch the orchestrator reads again, with three outcomes:
//!
//! - the target: an earlier patch took effect although its response was lost, so the plan
//!   stops instead of patching twice;
//! - the base: the patch did not take effect, so the plan patches again;
//! - any other size: another writer resized the StatefulSet, so the plan stops with a
//!   conflict and the supervisor decides again on fresh numbers.

use std::num::NonZeroU32;

use super::ordinal;
use crate::scaling::orchestrator::OrchestratorError;

/// A size change that the supervisor requested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Resize {
    /// Add this many pods.
    Add(u32),
    /// Remove this pod, which must have the highest ordinal.
    Remove(String),
}

/// The action that follows a read of the current size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NextStep {
    /// Patch `spec.replicas` from `from` to `to`.
    Patch {
        /// The size read.
        from: u32,
        /// The target size.
        to: u32,
    },
    /// The StatefulSet has the target size; nothing more to do.
    Done,
}

/// One resize in progress.
#[derive(Debug)]
pub(super) struct ResizePlan {
    resize: Resize,
    statefulset: String,
    min_replicas: NonZeroU32,
    max_replicas: NonZeroU32,
    /// `(base, target)`, fixed by the first read.
    sizes: Option<(u32, u32)>,
}

impl ResizePlan {
    pub(super) fn new(
        resize: Resize,
        statefulset: &str,
        min_replicas: NonZeroU32,
        max_replicas: NonZeroU32,
    ) -> Self {
        Self {
            resize,
            statefulset: statefulset.to_owned(),
            min_replicas,
            max_replicas,
            sizes: None,
        }
    }

    /// Returns `(base, target)` once the first read has fixed them.
    pub(super) fn sizes(&self) -> Option<(u32, u32)> {
        self.sizes
    }

    /// Decides the next step from a read of `spec.replicas`.
    ///
    /// Fails with `Invalid` when the request breaks the limits or names a pod the StatefulSet
    /// cannot remove, and with `Conflict` when the size changed to neither the base nor the
    /// target since the first read. Nothing was patched in either case.
    pub(super) fn handle_read(&mut self, replicas: u32) -> Result<NextStep, OrchestratorError> {
        let (base, target) = match self.sizes {
            Some(sizes) => sizes,
            None => {
                let target = self.target_from(replicas)?;
                self.sizes = Some((replicas, target));
                (replicas, target)
            }
        };
        if replicas == target {
            Ok(NextStep::Done)
        } else if replicas == base {
            Ok(NextStep::Patch {
                from: base,
                to: target,
            })
        } else {
            Err(OrchestratorError::Conflict(format!(
                "StatefulSet {} changed size from {base} to {replicas} while this request \
                 wanted {target}; nothing was patched",
                self.statefulset
            )))
        }
    }

    fn target_from(&self, replicas: u32) -> Result<u32, OrchestratorError> {
        let (min, max) = (self.min_replicas.get(), self.max_replicas.get());
        match &self.resize {
            Resize::Add(count) => {
                let target = replicas.saturating_add(*count);
                if target > max {
                    return Err(OrchestratorError::Invalid(format!(
                        "adding {count} pods to StatefulSet {} with {replicas} replicas would \
                         exceed max_replicas {max}",
                        self.statefulset
                    )));
                }
                Ok(target)
            }
            Resize::Remove(pod_name) => {
                let Some(highest) = replicas.checked_sub(1) else {
                    return Err(OrchestratorError::Invalid(format!(
                        "cannot remove {pod_name}: StatefulSet {} has no replicas",
                        self.statefulset
                    )));
                };
                let expected = ordinal::pod_name(&self.statefulset, highest);
                if *pod_name != expected {
                    return Err(OrchestratorError::Invalid(format!(
                        "cannot remove {pod_name}: a StatefulSet removes its highest ordinal \
                         first, which is {expected}"
                    )));
                }
                if highest < min {
                    return Err(OrchestratorError::Invalid(format!(
                        "removing {pod_name} would shrink StatefulSet {} below min_replicas {min}",
                        self.statefulset
                    )));
                }
                Ok(highest)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(resize: Resize) -> ResizePlan {
        let min = NonZeroU32::new(2).unwrap();
        let max = NonZeroU32::new(5).unwrap();
        ResizePlan::new(resize, "gristmill", min, max)
    }

    fn remove(pod_name: &str) -> Resize {
        Resize::Remove(pod_name.to_owned())
    }

    #[test]
    fn first_read_fixes_target_within_limits() {
        let cases: [(Resize, u32, Option<NextStep>); 8] = [
            (Resize::Add(2), 3, Some(NextStep::Patch { from: 3, to: 5 })),
            (Resize::Add(3), 3, None),
            (Resize::Add(0), 3, Some(NextStep::Done)),
            (
                remove("gristmill-3"),
                4,
                Some(NextStep::Patch { from: 4, to: 3 }),
            ),
            (remove("gristmill-2"), 4, None),
            (remove("gristmill-1"), 2, None),
            (remove("gristmill-0"), 0, None),
            (remove("other-3"), 4, None),
        ];
        for (resize, replicas, expected) in cases {
            let label = format!("{resize:?} at {replicas} replicas");
            let next = plan(resize).handle_read(replicas);
            match expected {
                Some(step) => assert_eq!(next.unwrap(), step, "{label}"),
                None => assert!(
                    matches!(next, Err(OrchestratorError::Invalid(_))),
                    "{label}: {next:?}"
                ),
            }
        }
    }

    #[test]
    fn reread_at_target_stops_without_second_patch() {
        let mut plan = plan(Resize::Add(1));
        assert_eq!(
            plan.handle_read(3).unwrap(),
            NextStep::Patch { from: 3, to: 4 }
        );
        assert_eq!(plan.handle_read(4).unwrap(), NextStep::Done);
    }

    #[test]
    fn reread_at_base_patches_again() {
        let mut plan = plan(remove("gristmill-3"));
        let first = plan.handle_read(4).unwrap();
        assert_eq!(plan.handle_read(4).unwrap(), first);
    }

    #[test]
    fn reread_at_other_size_is_conflict() {
        let mut plan = plan(Resize::Add(1));
        plan.handle_read(3).unwrap();
        let next = plan.handle_read(2);
        assert!(
            matches!(next, Err(OrchestratorError::Conflict(_))),
            "{next:?}"
        );
        assert_eq!(plan.sizes(), Some((3, 4)));
    }

    #[test]
    fn remove_names_the_expected_pod() {
        let Err(OrchestratorError::Invalid(message)) = plan(remove("gristmill-1")).handle_read(4)
        else {
            panic!("removing a low ordinal must be invalid");
        };
        assert!(message.contains("gristmill-3"), "{message}");
    }
}
