//! The traits applications implement: a grain type, its methods, and a handler per method.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::{GrainContext, SharedContext};
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

    /// Lets interleaved turns start ahead of queued exclusive work, as Orleans' `[Reentrant]`
    /// lets a request start while others wait. Default: false.
    ///
    /// Exclusive turns never overlap any other turn, whatever the flag is. The flag decides what
    /// an interleaved call does when it arrives behind an exclusive turn or timer tick that
    /// waits for running interleaved turns to end:
    ///
    /// - `false`: it waits its turn, so calls start in arrival order and a waiting exclusive
    ///   turn starts as soon as the running interleaved turns end.
    /// - `true`: it starts at once. A call cycle through interleaved methods (A calls B, B calls
    ///   A back) then completes even when an exclusive call reached A in between, but a steady
    ///   stream of overlapping interleaved calls can hold an exclusive call back until its
    ///   deadline.
    ///
    /// Migration and deactivation are never overtaken: once one is queued, later calls wait
    /// behind it. A type without interleaved methods behaves the same either way.
    const REENTRANT: bool = false;

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

/// Serving of the method `M` by a grain type, one turn at a time.
///
/// Add it with [`Methods::add`]. The turn has the grain to itself: no other turn of the
/// activation, exclusive or interleaved, runs until it ends.
pub trait Handler<M: Method>: Grain {
    /// Handles one call. No other turn of the activation runs until it returns.
    fn handle(
        &mut self,
        request: M,
        ctx: &mut GrainContext,
    ) -> impl Future<Output = Result<M::Response, GrainError>> + Send;
}

/// Serving of the method `M` by a grain type in interleaved turns, which may run beside each
/// other, like Orleans' `[ReadOnly]` and `[AlwaysInterleave]` methods.
///
/// Add it with [`Methods::add_interleaved`]. Every interleaved handler is also a [`Handler`],
/// so [`GrainRef::call`](super::GrainRef::call) accepts the method, and [`Methods::add`] would
/// serve it in exclusive turns instead. The handler borrows the grain shared (`&self`) and
/// gets the [`SharedContext`], so any number of interleaved turns of one activation run at
/// once, each as its own task. They never overlap an exclusive turn ([`Handler`]), a timer
/// tick, migration or deactivation: those wait until every running interleaved turn has
/// ended, and interleaved calls that arrive meanwhile wait for them (see [`Grain::REENTRANT`]).
///
/// What Rust's borrow rules allow, and so what differs from Orleans:
///
/// - An interleaved turn changes the grain only through interior mutability (atomics, a
///   `Mutex` held between awaits), which is why the grain must be `Sync`. It cannot write
///   persisted state or start timers, which need the exclusive [`GrainContext`].
/// - An exclusive turn is never re-entered. If it calls another grain that calls back into
///   this activation, the call back waits for the exclusive turn, which waits for the call:
///   both end with a deadline error. A cycle completes only if both the method that calls out
///   and the method called back are interleaved.
/// - An interleaved turn that calls an exclusive method of its own grain waits for itself, and
///   likewise ends with a deadline error.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use gristmill::grain::{
///     Grain, GrainContext, GrainError, InterleavedHandler, Method, Methods, SharedContext,
/// };
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Default)]
/// struct Gauge { reads: AtomicU64 }
///
/// #[derive(Serialize, Deserialize)]
/// struct Read;
///
/// impl Method for Read {
///     const NAME: &'static str = "read";
///     type Response = u64;
/// }
///
/// impl Grain for Gauge {
///     const TYPE_NAME: &'static str = "gauge";
///     async fn activate(_ctx: &mut GrainContext) -> Result<Self, GrainError> {
///         Ok(Gauge::default())
///     }
///     fn register(methods: &mut Methods<Self>) {
///         methods.add_interleaved::<Read>();
///     }
/// }
///
/// impl InterleavedHandler<Read> for Gauge {
///     async fn handle(&self, _request: Read, _ctx: &SharedContext) -> Result<u64, GrainError> {
///         Ok(self.reads.fetch_add(1, Ordering::Relaxed) + 1)
///     }
/// }
/// ```
pub trait InterleavedHandler<M: Method>: Grain + Sync {
    /// Handles one call, possibly while other interleaved turns of the activation run.
    fn handle(
        &self,
        request: M,
        ctx: &SharedContext,
    ) -> impl Future<Output = Result<M::Response, GrainError>> + Send;
}

/// Serves an interleaved method in an exclusive turn when it is added with [`Methods::add`],
/// and lets typed references call interleaved methods.
impl<G: InterleavedHandler<M>, M: Method> Handler<M> for G {
    fn handle(
        &mut self,
        request: M,
        ctx: &mut GrainContext,
    ) -> impl Future<Output = Result<M::Response, GrainError>> + Send {
        InterleavedHandler::handle(&*self, request, ctx)
    }
}
