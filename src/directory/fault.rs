//! Test-only faults that break the directory protocol on purpose, behind `fault-injection`.
//!
//! The deterministic simulator turns a fault on to prove that its invariant checks catch a
//! broken directory. Nothing outside tests should enable the `fault-injection` feature.

/// A deliberate protocol violation of a [`DirectoryPartition`](super::DirectoryPartition).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectoryFault {
    /// Registrations with `Expect::Absent` overwrite an existing entry instead of returning
    /// `Conflict`, so two racing activations of one grain both win.
    SkipCompareAndSet,
}
