//! Grain affinity cache: which node served each grain last, for grain-aware routing.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;

use crate::grain::GrainId;

/// Maps grain ids to the node name that served them last, bounded in size.
///
/// NOTE: eviction is first in, first out rather than least recently used; a hot grain that was
/// cached early is evicted and costs one forward before it is cached again.
#[derive(Clone, Debug)]
pub struct AffinityCache {
    nodes: HashMap<GrainId, String>,
    order: VecDeque<GrainId>,
    capacity: NonZeroUsize,
}

impl AffinityCache {
    /// Creates an empty cache of at most `capacity` grains.
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            nodes: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// Returns the node that served `grain` last, if cached.
    pub fn node_of(&self, grain: &GrainId) -> Option<&str> {
        self.nodes.get(grain).map(String::as_str)
    }

    /// Returns the number of cached grains.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Returns whether no grain is cached.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Records that `node` served `grain`, evicting the oldest entry when full.
    pub fn remember(&mut self, grain: &GrainId, node: &str) {
        if let Some(cached) = self.nodes.get_mut(grain) {
            if cached != node {
                node.clone_into(cached);
            }
            return;
        }
        if self.nodes.len() >= self.capacity.get()
            && let Some(oldest) = self.order.pop_front()
        {
            self.nodes.remove(&oldest);
        }
        self.nodes.insert(grain.clone(), node.to_owned());
        self.order.push_back(grain.clone());
    }

    /// Drops every entry that points at `node`, because the node left or failed.
    pub fn forget_node(&mut self, node: &str) {
        self.nodes.retain(|_, cached| cached != node);
        let nodes = &self.nodes;
        self.order.retain(|grain| nodes.contains_key(grain));
    }
}
