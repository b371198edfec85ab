//! An activated grain with its type erased: exclusively owned, or shared by interleaved turns.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::RwLock;

use super::context::{GrainContext, SharedContext};
use super::error::GrainError;
use super::methods::{DispatchError, MethodId, Methods};
use super::payload::Payload;
use super::traits::Grain;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One activated grain, as its activation drives it.
///
/// Every method taking `&mut self` is exclusive: the activation calls it only when no
/// interleaved turn runs. [`LiveGrain::dispatch_interleaved`] returns a future that owns what
/// it needs, so that the activation can spawn it and go on taking messages.
pub(crate) trait LiveGrain: Send {
    /// Returns whether `method` runs in interleaved turns.
    fn is_interleaved(&self, method: MethodId) -> bool;
    /// Returns whether the type lets interleaved turns overtake queued exclusive work.
    fn is_reentrant(&self) -> bool;
    fn dispatch<'a>(
        &'a mut self,
        ctx: &'a mut GrainContext,
        method: MethodId,
        payload: Payload,
    ) -> BoxFuture<'a, Result<Payload, DispatchError>>;
    fn dispatch_interleaved(
        &self,
        ctx: Arc<SharedContext>,
        method: MethodId,
        payload: Payload,
    ) -> BoxFuture<'static, Result<Payload, DispatchError>>;
    fn deactivate<'a>(&'a mut self, ctx: &'a mut GrainContext) -> BoxFuture<'a, ()>;
    fn dehydrate<'a>(&'a mut self, ctx: &'a mut GrainContext) -> BoxFuture<'a, Option<Vec<u8>>>;
    fn timer<'a>(
        &'a mut self,
        ctx: &'a mut GrainContext,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), GrainError>>;
}

/// Wraps a grain of a type without interleaved methods: it is owned, and need not be `Sync`.
pub(crate) fn exclusive<G: Grain>(grain: G, methods: Arc<Methods<G>>) -> Box<dyn LiveGrain> {
    Box::new(Exclusive { grain, methods })
}

/// Wraps a grain of a type with interleaved methods behind a read-write lock.
pub(crate) fn shared<G: Grain + Sync>(grain: G, methods: Arc<Methods<G>>) -> Box<dyn LiveGrain> {
    Box::new(Shared {
        grain: Arc::new(RwLock::new(grain)),
        methods,
    })
}

struct Exclusive<G> {
    grain: G,
    methods: Arc<Methods<G>>,
}

/// A grain that interleaved turns read while exclusive work writes.
///
/// The activation already keeps the two apart (it starts exclusive work only once no
/// interleaved turn runs), so the lock is never contended. It is what lets the borrow checker
/// accept the sharing, and it would make a scheduling mistake wait instead of race.
struct Shared<G> {
    grain: Arc<RwLock<G>>,
    methods: Arc<Methods<G>>,
}

impl<G: Grain> LiveGrain for Exclusive<G> {
    fn is_interleaved(&self, _method: MethodId) -> bool {
        false
    }

    fn is_reentrant(&self) -> bool {
        G::REENTRANT
    }

    fn dispatch<'a>(
        &'a mut self,
        ctx: &'a mut GrainContext,
        method: MethodId,
        payload: Payload,
    ) -> BoxFuture<'a, Result<Payload, DispatchError>> {
        self.methods.dispatch(&mut self.grain, ctx, method, payload)
    }

    fn dispatch_interleaved(
        &self,
        _ctx: Arc<SharedContext>,
        _method: MethodId,
        _payload: Payload,
    ) -> BoxFuture<'static, Result<Payload, DispatchError>> {
        // `Methods::add_interleaved` switches the type to `Shared`, so no method gets here.
        Box::pin(async { Err(DispatchError::UnknownMethod) })
    }

    fn deactivate<'a>(&'a mut self, ctx: &'a mut GrainContext) -> BoxFuture<'a, ()> {
        Box::pin(self.grain.on_deactivate(ctx))
    }

    fn dehydrate<'a>(&'a mut self, ctx: &'a mut GrainContext) -> BoxFuture<'a, Option<Vec<u8>>> {
        Box::pin(self.grain.dehydrate(ctx))
    }

    fn timer<'a>(
        &'a mut self,
        ctx: &'a mut GrainContext,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), GrainError>> {
        Box::pin(self.grain.on_timer(name, ctx))
    }
}

impl<G: Grain + Sync> LiveGrain for Shared<G> {
    fn is_interleaved(&self, method: MethodId) -> bool {
        self.methods.is_interleaved(method)
    }

    fn is_reentrant(&self) -> bool {
        G::REENTRANT
    }

    fn dispatch<'a>(
        &'a mut self,
        ctx: &'a mut GrainContext,
        method: MethodId,
        payload: Payload,
    ) -> BoxFuture<'a, Result<Payload, DispatchError>> {
        Box::pin(async move {
            let mut grain = self.grain.write().await;
            self.methods
                .dispatch(&mut grain, ctx, method, payload)
                .await
        })
    }

    fn dispatch_interleaved(
        &self,
        ctx: Arc<SharedContext>,
        method: MethodId,
        payload: Payload,
    ) -> BoxFuture<'static, Result<Payload, DispatchError>> {
        let grain = Arc::clone(&self.grain);
        let methods = Arc::clone(&self.methods);
        Box::pin(async move {
            let grain = grain.read_owned().await;
            methods
                .dispatch_interleaved(&grain, &ctx, method, payload)
                .await
        })
    }

    fn deactivate<'a>(&'a mut self, ctx: &'a mut GrainContext) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.grain.write().await.on_deactivate(ctx).await })
    }

    fn dehydrate<'a>(&'a mut self, ctx: &'a mut GrainContext) -> BoxFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move { self.grain.write().await.dehydrate(ctx).await })
    }

    fn timer<'a>(
        &'a mut self,
        ctx: &'a mut GrainContext,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), GrainError>> {
        Box::pin(async move { self.grain.write().await.on_timer(name, ctx).await })
    }
}
