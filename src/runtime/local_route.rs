//! The route that a grain reference caches to its grain's local activation, so that repeat
//! calls skip the method and catalog lookups.
//!
//! A [`GrainRef`](crate::grain::GrainRef) caches the activation handle that served its last
//! local call and the methods it resolved. The next call sends its turn through that handle,
//! with no lock but the route's own and the activation's mailbox lock. Staleness is detected,
//! not prevented. An activation that leaves the catalog (idle deactivation, migration, a
//! requested or abandoned stop) is retired under its mailbox lock, and a turn sent through a
//! retired handle is rejected or handed back. The call then takes the full path (see
//! `Node::invoke_cached`) and caches whatever activation serves it there. The argument that
//! no turn runs on a retired activation is at `ActivationRef::cast_turn_if_current`.
//!
//! NOTE: a reference whose activation was retired keeps its handle until its next call, which
//! holds the stopped mailbox and the activation's shared record in memory (a few hundred
//! bytes, none of the grain's state).

use std::any::TypeId;
use std::sync::Mutex;

use super::catalog::ActivationHandle;
use super::router::CheckedMethod;
use crate::grain::Payload;
use crate::grain::activation::{Runner, Turn};
use crate::grain::methods::MethodId;

/// How many resolved methods one reference caches: each slot adds 40 bytes to every reference.
/// A reference that calls more methods than this resolves the others again, as a reference
/// without the cache would on every call.
const METHOD_SLOTS: usize = 3;

/// A grain reference's cached route to its local activation, and the methods it resolved.
///
/// Each clone of a reference has its own copy, so clones used on different tasks do not share
/// a lock.
#[derive(Default)]
pub(crate) struct LocalRoute(Mutex<Cached>);

#[derive(Clone, Default)]
struct Cached {
    /// The activation that served the last local call, until a call finds it retired.
    activation: Option<ActivationHandle>,
    /// Methods resolved by earlier calls, keyed by the request type, newest first. None of
    /// them belongs to a stateless worker type, because calls to workers are never cached.
    methods: [Option<(TypeId, MethodId)>; METHOD_SLOTS],
}

impl Cached {
    /// Returns the method that an earlier call with the request type `request` resolved.
    fn method(&self, request: TypeId) -> Option<CheckedMethod> {
        let (_, id) = self
            .methods
            .iter()
            .flatten()
            .find(|(cached, _)| *cached == request)?;
        Some(CheckedMethod {
            id: *id,
            worker_limit: None,
        })
    }
}

impl Clone for LocalRoute {
    fn clone(&self) -> Self {
        Self(Mutex::new(self.lock().clone()))
    }
}

impl LocalRoute {
    /// Sends the turn that `make_turn` builds to the cached activation, if the request type
    /// `request` has a cached method and the activation is still current. Gives the payload
    /// back otherwise, and clears an activation that rejected the turn.
    pub fn try_send<R>(
        &self,
        request: TypeId,
        payload: Payload,
        make_turn: impl FnOnce(Payload, CheckedMethod) -> (Turn, R),
    ) -> Result<(Option<Runner>, R), Payload> {
        let mut cached = self.lock();
        let Some(method) = cached.method(request) else {
            return Err(payload);
        };
        let Some(activation) = &cached.activation else {
            return Err(payload);
        };
        let sent = activation.try_send_current(payload, |payload| make_turn(payload, method));
        if sent.is_err() {
            cached.activation = None;
        }
        sent
    }

    /// Caches `method` under the request type `request`, in place of the oldest one when
    /// every slot is taken.
    pub fn cache_method(&self, request: TypeId, method: CheckedMethod) {
        debug_assert!(
            method.worker_limit.is_none(),
            "stateless worker calls are never cached"
        );
        let mut cached = self.lock();
        if cached.methods.iter().flatten().any(|(t, _)| *t == request) {
            return;
        }
        cached.methods.rotate_right(1);
        cached.methods[0] = Some((request, method.id));
    }

    /// Caches the activation that served a call.
    pub fn cache_activation(&self, handle: ActivationHandle) {
        self.lock().activation = Some(handle);
    }

    /// Clears the cached activation after it gave a turn back.
    pub fn clear_activation(&self) {
        self.lock().activation = None;
    }

    /// Returns the cached activation, for tests to compare with the catalog's.
    #[cfg(test)]
    pub fn cached_activation(&self) -> Option<ActivationHandle> {
        self.lock().activation.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.0.lock().expect("local route lock poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grain::methods::Methods;
    use crate::grain::samples::Counter;

    struct A;
    struct B;
    struct C;
    struct D;

    /// Returns a resolved method; which one does not matter to the route.
    fn checked() -> CheckedMethod {
        let id = Methods::<Counter>::new()
            .resolve(crate::grain::REMINDER_METHOD)
            .expect("every type has the reminder method");
        CheckedMethod {
            id,
            worker_limit: None,
        }
    }

    #[test]
    fn methods_are_found_by_request_type() {
        let route = LocalRoute::default();
        assert!(route.lock().method(TypeId::of::<A>()).is_none());
        route.cache_method(TypeId::of::<A>(), checked());
        assert!(route.lock().method(TypeId::of::<A>()).is_some());
        assert!(route.lock().method(TypeId::of::<B>()).is_none());
    }

    #[test]
    fn oldest_method_gives_way_when_full() {
        let route = LocalRoute::default();
        let types = [TypeId::of::<A>(), TypeId::of::<B>(), TypeId::of::<C>()];
        assert_eq!(types.len(), METHOD_SLOTS);
        for request in types {
            route.cache_method(request, checked());
        }
        route.cache_method(TypeId::of::<D>(), checked());
        assert!(
            route.lock().method(TypeId::of::<A>()).is_none(),
            "A was oldest"
        );
        for request in &types[1..] {
            assert!(route.lock().method(*request).is_some());
        }
        assert!(route.lock().method(TypeId::of::<D>()).is_some());
    }

    #[test]
    fn clones_have_their_own_copy() {
        let route = LocalRoute::default();
        route.cache_method(TypeId::of::<A>(), checked());
        let copy = route.clone();
        copy.cache_method(TypeId::of::<B>(), checked());
        assert!(copy.lock().method(TypeId::of::<A>()).is_some());
        assert!(route.lock().method(TypeId::of::<B>()).is_none());
    }
}
