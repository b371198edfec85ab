//! Caller-side cache of grain locations, bounded and evicting the least recently used entry.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;

use super::{CacheCounters, DirectoryEntry};
use crate::grain::GrainId;
use crate::membership::Incarnation;

/// Locations of recently called grains, so that calls skip the directory lookup.
///
/// An entry can be stale: the glue removes it when the host replies "not here"
/// ([`DirectoryCache::handle_not_here`]) or when the host incarnation dies
/// ([`DirectoryCache::handle_host_down`]), and then resolves the grain again.
#[derive(Debug)]
pub struct DirectoryCache {
    capacity: NonZeroUsize,
    /// Cached entries with the tick of their last use. Shared, so that a caller takes one
    /// out per call without copying the grain id and host names.
    entries: HashMap<GrainId, (Arc<DirectoryEntry>, u64)>,
    /// Grains by the tick of their last use, least recent first.
    by_use: BTreeMap<u64, GrainId>,
    next_tick: u64,
    counters: CacheCounters,
}

impl DirectoryCache {
    /// Creates an empty cache of at most `capacity` entries.
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            capacity,
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
            next_tick: 0,
            counters: CacheCounters::default(),
        }
    }

    /// Returns the number of cached entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Returns whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Returns the running event totals.
    pub fn counters(&self) -> &CacheCounters {
        &self.counters
    }

    /// Returns the cached entry of `grain` and marks it as recently used.
    pub fn get(&mut self, grain: &GrainId) -> Option<&DirectoryEntry> {
        self.get_shared(grain).map(|entry| &**entry)
    }

    /// Returns the cached entry of `grain` as the cache shares it, and marks it as recently
    /// used.
    pub fn get_shared(&mut self, grain: &GrainId) -> Option<&Arc<DirectoryEntry>> {
        let tick = self.take_tick();
        let Some((entry, last_use)) = self.entries.get_mut(grain) else {
            self.counters.misses += 1;
            return None;
        };
        self.counters.hits += 1;
        let grain = self
            .by_use
            .remove(last_use)
            .expect("every cached grain has a use tick");
        *last_use = tick;
        self.by_use.insert(tick, grain);
        Some(entry)
    }

    /// Caches `entry`, replacing any entry of the same grain and evicting the least recently
    /// used entry when the cache is full.
    pub fn insert(&mut self, entry: DirectoryEntry) {
        let tick = self.take_tick();
        if let Some((_, last_use)) = self.entries.remove(&entry.grain) {
            self.by_use.remove(&last_use);
        } else if self.entries.len() >= self.capacity.get()
            && let Some((_, evicted)) = self.by_use.pop_first()
        {
            self.entries.remove(&evicted);
            self.counters.evictions += 1;
        }
        self.by_use.insert(tick, entry.grain.clone());
        self.entries
            .insert(entry.grain.clone(), (Arc::new(entry), tick));
    }

    /// Removes the entry of `grain` after `host` replied that it does not hold the grain.
    ///
    /// An entry that already names another host is newer than the reply and stays. Returns
    /// whether an entry was removed.
    pub fn handle_not_here(&mut self, grain: &GrainId, host: &Incarnation) -> bool {
        match self.entries.get(grain) {
            Some((entry, _)) if entry.host == *host => {
                self.remove(grain);
                true
            }
            _ => false,
        }
    }

    /// Removes every entry hosted by `host`, which is no longer a live member; returns how many.
    ///
    /// This scans the whole cache, which is acceptable because hosts die rarely.
    pub fn handle_host_down(&mut self, host: &Incarnation) -> usize {
        let stale: Vec<GrainId> = self
            .entries
            .iter()
            .filter(|(_, (entry, _))| entry.host == *host)
            .map(|(grain, _)| grain.clone())
            .collect();
        for grain in &stale {
            self.remove(grain);
        }
        stale.len()
    }

    fn remove(&mut self, grain: &GrainId) {
        if let Some((_, last_use)) = self.entries.remove(grain) {
            self.by_use.remove(&last_use);
            self.counters.invalidations += 1;
        }
    }

    fn take_tick(&mut self) -> u64 {
        let tick = self.next_tick;
        self.next_tick += 1;
        tick
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::tests::incarnation;

    fn host(name: &str) -> Incarnation {
        incarnation(name, 1)
    }

    fn entry(key: &str, host_name: &str) -> DirectoryEntry {
        DirectoryEntry {
            grain: GrainId::new("counter", key),
            host: host(host_name),
            activation_id: 1,
            epoch: 0,
        }
    }

    fn cache(capacity: usize) -> DirectoryCache {
        DirectoryCache::new(NonZeroUsize::new(capacity).expect("test capacity is not zero"))
    }

    #[test]
    fn full_cache_evicts_least_recently_used() {
        let mut cache = cache(2);
        cache.insert(entry("a", "node-1"));
        cache.insert(entry("b", "node-1"));
        assert!(cache.get(&GrainId::new("counter", "a")).is_some());

        cache.insert(entry("c", "node-1"));

        assert_eq!(cache.len(), 2);
        assert!(cache.get(&GrainId::new("counter", "b")).is_none());
        assert!(cache.get(&GrainId::new("counter", "a")).is_some());
        assert!(cache.get(&GrainId::new("counter", "c")).is_some());
        assert_eq!(cache.counters().evictions, 1);
    }

    #[test]
    fn replacing_entry_does_not_evict() {
        let mut cache = cache(2);
        cache.insert(entry("a", "node-1"));
        cache.insert(entry("b", "node-1"));
        cache.insert(entry("a", "node-2"));

        assert_eq!(cache.len(), 2);
        assert_eq!(cache.counters().evictions, 0);
        let cached = cache
            .get(&GrainId::new("counter", "a"))
            .expect("a is cached");
        assert_eq!(cached.host, host("node-2"));
    }

    #[test]
    fn not_here_from_cached_host_invalidates() {
        let mut cache = cache(4);
        cache.insert(entry("a", "node-1"));

        assert!(cache.handle_not_here(&GrainId::new("counter", "a"), &host("node-1")));
        assert!(cache.get(&GrainId::new("counter", "a")).is_none());
        assert_eq!(cache.counters().invalidations, 1);
    }

    #[test]
    fn not_here_from_other_host_keeps_newer_entry() {
        let mut cache = cache(4);
        cache.insert(entry("a", "node-2"));

        assert!(!cache.handle_not_here(&GrainId::new("counter", "a"), &host("node-1")));
        assert!(cache.get(&GrainId::new("counter", "a")).is_some());
    }

    #[test]
    fn host_down_removes_only_its_entries() {
        let mut cache = cache(4);
        cache.insert(entry("a", "node-1"));
        cache.insert(entry("b", "node-2"));
        cache.insert(entry("c", "node-1"));

        assert_eq!(cache.handle_host_down(&host("node-1")), 2);

        assert_eq!(cache.len(), 1);
        assert!(cache.get(&GrainId::new("counter", "b")).is_some());
        // The use index must shrink with the entries, or later evictions would go wrong.
        cache.insert(entry("d", "node-2"));
        cache.insert(entry("e", "node-2"));
        cache.insert(entry("f", "node-2"));
        cache.insert(entry("g", "node-2"));
        assert_eq!(cache.len(), 4);
        assert!(cache.get(&GrainId::new("counter", "b")).is_none());
    }

    #[test]
    fn hits_and_misses_are_counted() {
        let mut cache = cache(4);
        cache.insert(entry("a", "node-1"));
        cache.get(&GrainId::new("counter", "a"));
        cache.get(&GrainId::new("counter", "z"));
        assert_eq!(cache.counters().hits, 1);
        assert_eq!(cache.counters().misses, 1);
    }
}
