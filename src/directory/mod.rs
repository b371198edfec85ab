//! Grain directory: which node holds the one activation of each grain.

mod cache;
mod config;
mod counters;
mod entry;
#[cfg(feature = "fault-injection")]
mod fault;
mod outcome;
mod partition;
mod readiness;
mod store;
#[cfg(test)]
mod tests;

pub use cache::DirectoryCache;
pub use config::{DirectoryConfig, DirectoryConfigError};
pub use counters::{CacheCounters, PartitionCounters};
pub use entry::DirectoryEntry;
#[cfg(feature = "fault-injection")]
pub use fault::DirectoryFault;
pub use outcome::{DirectoryCommand, Expect, LookupOutcome, RegisterOutcome, UnregisterOutcome};
pub use partition::{partition_owner, rendezvous_max, rendezvous_score};
pub use readiness::ViewId;
pub use store::DirectoryPartition;
