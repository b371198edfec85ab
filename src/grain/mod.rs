//! Grains: the application-facing trait, typed references, activations and the type registry.

pub(crate) mod activation;
mod context;
mod error;
mod id;
mod live;
mod mailbox;
pub(crate) mod methods;
mod payload;
mod reference;
pub(crate) mod registry;
pub mod samples;
mod traits;
mod turn;

pub use context::{GrainContext, STALE_STATE, STORAGE_FAILED, SharedContext};
pub use error::{CallError, GrainError};
pub use id::GrainId;
pub use methods::{Methods, REMINDER_METHOD};
pub use payload::{CodecError, Payload, PayloadFormat};
pub use reference::GrainRef;
pub use registry::{GrainRegistry, GrainTypeOptions, RegistryError};
pub use traits::{Grain, Handler, InterleavedHandler, Method};
