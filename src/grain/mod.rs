//! Grains: the application-facing trait, typed references, activations and the type registry.

mod id;

pub use id::GrainId;
