//! Nodes that the platform stops for reasons of its own, and how long automatic scaling waits
//! for them to come back.
//!
//! Kubernetes evicts a pod, drains its node or deletes it on request without asking the
//! supervisor. The pod drains on SIGTERM and the StatefulSet starts a pod with the same name,
//! so the cluster returns to its size by itself. While that happens the node is missing from
//! the Active count, and an evaluation would add a node to replace it or patch the size in
//! reaction. The supervisor therefore delays automatic actions while such a node is
//! reported, and afterwards until a node of that name is Active again.
//!
//! NOTE: a node that does not come back within [`RETURN_TIMEOUT`] of its last report stops
//! holding scaling back, as when another writer shrank the StatefulSet meanwhile. The timeout
//! is a fixed estimate of a pod restart, not a setting.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::clock::Millis;
use crate::scaling::load::ClusterSnapshot;

/// Maximum wait for a disrupted node to be Active again after the platform last reported it.
pub const RETURN_TIMEOUT: Duration = Duration::from_secs(300);

/// The disrupted nodes and when each was last reported.
#[derive(Clone, Debug, Default)]
pub struct DisruptionHold {
    last_reported: BTreeMap<String, Millis>,
}

impl DisruptionHold {
    /// Takes the nodes the orchestrator reports as disrupted now and returns those reported
    /// for the first time, in name order.
    ///
    /// A node stays held while it is reported, and afterwards until a node of its name is
    /// Active in `snapshot` or [`RETURN_TIMEOUT`] has passed.
    pub fn handle_report(
        &mut self,
        snapshot: &ClusterSnapshot,
        reported: &BTreeSet<String>,
        now: Millis,
    ) -> Vec<String> {
        let first_reports: Vec<String> = reported
            .iter()
            .filter(|name| !self.last_reported.contains_key(*name))
            .cloned()
            .collect();
        for name in reported {
            self.last_reported.insert(name.clone(), now);
        }
        let active: BTreeSet<&str> = snapshot
            .active_nodes()
            .map(|node| node.incarnation.name.as_str())
            .collect();
        self.last_reported.retain(|name, last| {
            reported.contains(name)
                || (!active.contains(name.as_str()) && now.saturating_since(*last) < RETURN_TIMEOUT)
        });
        first_reports
    }

    /// Returns whether a disrupted node delays automatic actions.
    pub fn is_holding(&self) -> bool {
        !self.last_reported.is_empty()
    }

    /// Returns the held nodes in name order.
    pub fn nodes(&self) -> Vec<String> {
        self.last_reported.keys().cloned().collect()
    }
}
