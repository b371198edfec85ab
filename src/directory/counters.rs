//! Event counts of a directory partition and cache, for the glue to export as metrics.

/// Running totals of what a [`DirectoryPartition`](super::DirectoryPartition) did since it was
/// created. Every field only rises; the glue exports them as Prometheus counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionCounters {
    /// Entries stored by a registration, a re-assertion or a migration hand-off.
    pub registrations: u64,
    /// Of `registrations`, those that replaced the previous epoch in a migration.
    pub migrations: u64,
    /// Registrations and re-assertions rejected because another activation was registered,
    /// or because a migration expected a different epoch.
    pub conflicts: u64,
    /// Lookups and registrations rejected with `NotReady` during a readiness window.
    pub not_ready_replies: u64,
    /// Requests for grains that another member owns in this node's view.
    pub not_owner_replies: u64,
    /// Entries removed by an unregistration.
    pub unregistrations: u64,
    /// Entries sent to new owners after a membership change or forwarded from a hand-off.
    pub handoff_entries_sent: u64,
    /// Hand-off entries stored by this partition.
    pub handoff_entries_accepted: u64,
    /// Hand-off entries that met a different activation of the same grain; each produces one
    /// deactivation command for the loser.
    pub handoff_conflicts: u64,
    /// Entries dropped because their host incarnation is not a live member.
    pub dead_host_entries_dropped: u64,
}

/// Running totals of what a [`DirectoryCache`](super::DirectoryCache) did since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounters {
    /// Look-ups that found an entry.
    pub hits: u64,
    /// Look-ups that found none.
    pub misses: u64,
    /// Entries evicted to stay within the capacity.
    pub evictions: u64,
    /// Entries removed after a "not here" reply or because their host died.
    pub invalidations: u64,
}
