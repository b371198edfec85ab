//! The traits applications implement: a grain type, its methods, and a handler per method.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::GrainContext;
use super::error::GrainError;
use super::methods::Methods;

/// A grain type: an application actor addressed by key, activated on demand on some node.
///
/// Implement [`Grain`] once per type and [`Handler`] once per method the type serves:
///
/// ```ignore
/// impl Grain for Counter {
///     const TYPE_NAME: &'static str = "counter";
///     async fn activate(_ctx: &mut GrainContext) -> Result<Self, GrainError> { Ok(Counter { value: 0 }) }
///     fn register(methods: &mut Methods<Self>) { methods.add::<Add>().add::<Get>(); }
/// }
/// ```
pub trait Grain: Sized + Send + 'static {
    /// Name the type is registered and called under, such as `counter`. Unique per node.
    const TYPE_NAME: &'static str;

    /// Creates the in-memory grain when it is activated; `ctx.id()` names the grain.
    ///
    /// An error fails the call that caused the activation, and the next call tries again.
    fn activate(ctx: &mut GrainContext) -> impl Future<Output = Result<Self, GrainError>> + Send;

    /// Lists the methods the grain serves, by adding each [`Method`] it has a [`Handler`] for.
    fn register(methods: &mut Methods<Self>);

    /// Runs before the activation is dropped: after the idle age, on migration or on shutdown.
    fn on_deactivate(&mut self, _ctx: &mut GrainContext) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Returns the in-memory state to carry along when this activation migrates to another
    /// node; the new activation finds it in [`GrainContext::migration_state`] during
    /// [`Grain::activate`]. The default carries nothing, and the new activation reads the
    /// persisted state as any activation does.
    fn dehydrate(
        &mut self,
        _ctx: &mut GrainContext,
    ) -> impl Future<Output = Option<Vec<u8>>> + Send {
        async { None }
    }

    /// Runs when the timer `name` started with [`GrainContext::start_timer`] fires.
    fn on_timer(
        &mut self,
        _name: &str,
        _ctx: &mut GrainContext,
    ) -> impl Future<Output = Result<(), GrainError>> + Send {
        async { Ok(()) }
    }

    /// Runs when the durable reminder `name` registered with
    /// [`GrainContext::register_reminder`] fires; the grain is activated for it if needed.
    fn on_reminder(
        &mut self,
        name: &str,
        _ctx: &mut GrainContext,
    ) -> impl Future<Output = Result<(), GrainError>> + Send {
        let _ = name;
        async { Ok(()) }
    }
}

/// A request type of one grain method, with the response type the method returns.
///
/// The request crosses the network encoded with postcard (or JSON for gRPC clients that ask for
/// it), so never reorder or remove fields of a deployed method: add new methods instead.
pub trait Method: Serialize + DeserializeOwned + Send + 'static {
    /// Method name used on the wire and in the gRPC API, such as `add`.
    const NAME: &'static str;

    /// What the method returns on success.
    type Response: Serialize + DeserializeOwned + Send + 'static;
}

/// Serving of the method `M` by a grain type.
pub trait Handler<M: Method>: Grain {
    /// Handles one call. Calls to one activation never overlap: each turn runs to completion
    /// before the next message is taken from the mailbox.
    fn handle(
        &mut self,
        request: M,
        ctx: &mut GrainContext,
    ) -> impl Future<Output = Result<M::Response, GrainError>> + Send;
}
