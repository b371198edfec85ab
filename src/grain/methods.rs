//! The method table of a grain type: decoding, dispatch to handlers, and encoding of replies.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::context::{GrainContext, SharedContext};
use super::error::GrainError;
use super::live::{self, LiveGrain};
use super::payload::{CodecError, Payload, PayloadFormat};
use super::traits::{Grain, Handler, InterleavedHandler, Method};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a dispatched turn did not produce a reply.
#[derive(Debug)]
pub(crate) enum DispatchError {
    /// No method of that name.
    UnknownMethod,
    /// The request could not be decoded.
    Decode(String),
    /// The reply could not be encoded.
    Encode(String),
    /// The handler returned an error.
    Grain(GrainError),
}

type DispatchFn<G> = for<'a> fn(
    &'a mut G,
    &'a mut GrainContext,
    Payload,
) -> BoxFuture<'a, Result<Payload, DispatchError>>;

type InterleavedDispatchFn<G> =
    for<'a> fn(&'a G, &'a SharedContext, Payload) -> BoxFuture<'a, Result<Payload, DispatchError>>;

/// The kind of turn one method runs in.
enum Entry<G> {
    /// With the grain to itself ([`Handler`]).
    Exclusive(DispatchFn<G>),
    /// Beside other interleaved turns ([`InterleavedHandler`]).
    Interleaved(InterleavedDispatchFn<G>),
}

impl<G> Clone for Entry<G> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<G> Copy for Entry<G> {}

/// Wraps an activated grain for its activation: exclusively owned, or behind a lock that
/// interleaved turns share.
type IntoLiveFn<G> = fn(G, Arc<Methods<G>>) -> Box<dyn LiveGrain>;

/// Encodes a typed request that travels as [`Payload::Local`] when it must cross a node.
pub(crate) type EncodeFn = fn(&(dyn Any + Send), PayloadFormat) -> Result<Vec<u8>, CodecError>;

/// The methods a grain type serves, keyed by [`Method::NAME`].
pub struct Methods<G> {
    /// Every method with its name, in the order added; a [`MethodId`] is a position here.
    entries: Vec<(&'static str, Entry<G>)>,
    /// The position of each name in `entries`.
    positions: HashMap<&'static str, usize>,
    into_live: IntoLiveFn<G>,
}

/// A method of one grain type, resolved once by name when a call enters the node.
///
/// It names a position in the type's method table, so a turn dispatches without looking the
/// name up again. It is valid only for the grain type that resolved it, and never leaves the
/// node: calls between nodes carry the method's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MethodId {
    /// The method's [`Method::NAME`].
    pub name: &'static str,
    position: usize,
}

impl std::fmt::Display for MethodId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Name of the built-in method through which the runtime fires reminders.
pub const REMINDER_METHOD: &str = "gristmill.reminder";

/// The request of the built-in reminder method.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct ReminderTick {
    pub name: String,
}

impl Method for ReminderTick {
    const NAME: &'static str = REMINDER_METHOD;
    type Response = ();
}

impl<G: Grain> Methods<G> {
    pub(crate) fn new() -> Self {
        let mut methods = Self {
            entries: Vec::new(),
            positions: HashMap::new(),
            into_live: live::exclusive::<G>,
        };
        methods.insert(REMINDER_METHOD, Entry::Exclusive(dispatch_reminder::<G>));
        methods
    }

    /// Adds `entry` under `name`, in place of an earlier method of that name.
    fn insert(&mut self, name: &'static str, entry: Entry<G>) {
        match self.positions.get(name) {
            Some(&position) => self.entries[position] = (name, entry),
            None => {
                self.positions.insert(name, self.entries.len());
                self.entries.push((name, entry));
            }
        }
    }

    /// Adds the method `M`, served one turn at a time by [`Handler<M>`]; a second method with
    /// the same name replaces the first.
    pub fn add<M: Method>(&mut self) -> &mut Self
    where
        G: Handler<M>,
    {
        self.insert(M::NAME, Entry::Exclusive(dispatch::<G, M>));
        self
    }

    /// Adds the method `M`, served by [`InterleavedHandler<M>`] in turns that may run beside
    /// other interleaved turns. A second method with the same name replaces the first.
    ///
    /// A type with at least one interleaved method keeps its activations behind a read-write
    /// lock, which exclusive turns take for writing and interleaved turns for reading.
    pub fn add_interleaved<M: Method>(&mut self) -> &mut Self
    where
        G: InterleavedHandler<M>,
    {
        self.insert(M::NAME, Entry::Interleaved(dispatch_interleaved::<G, M>));
        self.into_live = live::shared::<G>;
        self
    }

    /// Returns the names of the methods the application added, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self
            .entries
            .iter()
            .map(|(name, _)| *name)
            .filter(|n| *n != REMINDER_METHOD)
            .collect();
        names.sort_unstable();
        names
    }

    /// Resolves the method named `method`, if the type has one.
    pub(crate) fn resolve(&self, method: &str) -> Option<MethodId> {
        let (&name, &position) = self.positions.get_key_value(method)?;
        Some(MethodId { name, position })
    }

    /// Returns the entry of `method`. An id resolved by another type finds nothing, unless
    /// that type has a method of the same name at the same position.
    fn entry(&self, method: MethodId) -> Option<Entry<G>> {
        match self.entries.get(method.position) {
            Some((name, entry)) if *name == method.name => Some(*entry),
            _ => None,
        }
    }

    /// Returns whether `method` runs in interleaved turns.
    pub(crate) fn is_interleaved(&self, method: MethodId) -> bool {
        matches!(self.entry(method), Some(Entry::Interleaved(_)))
    }

    /// Wraps a freshly activated grain for its activation.
    pub(crate) fn into_live(self: &Arc<Self>, grain: G) -> Box<dyn LiveGrain> {
        (self.into_live)(grain, Arc::clone(self))
    }

    /// Runs `method` with the grain to itself; an interleaved method runs too, alone.
    pub(crate) fn dispatch<'a>(
        &self,
        grain: &'a mut G,
        ctx: &'a mut GrainContext,
        method: MethodId,
        payload: Payload,
    ) -> BoxFuture<'a, Result<Payload, DispatchError>> {
        match self.entry(method) {
            Some(Entry::Exclusive(dispatch)) => dispatch(grain, ctx, payload),
            Some(Entry::Interleaved(dispatch)) => dispatch(grain, ctx, payload),
            None => Box::pin(async { Err(DispatchError::UnknownMethod) }),
        }
    }

    /// Runs the interleaved `method` with the grain shared.
    pub(crate) fn dispatch_interleaved<'a>(
        &self,
        grain: &'a G,
        ctx: &'a SharedContext,
        method: MethodId,
        payload: Payload,
    ) -> BoxFuture<'a, Result<Payload, DispatchError>> {
        match self.entry(method) {
            Some(Entry::Interleaved(dispatch)) => dispatch(grain, ctx, payload),
            Some(Entry::Exclusive(_)) | None => {
                Box::pin(async { Err(DispatchError::UnknownMethod) })
            }
        }
    }
}

/// Returns the encoder of typed `M` values, for [`Payload::Local`].
pub(crate) fn encoder_of<M: serde::Serialize + 'static>() -> EncodeFn {
    |value, format| match value.downcast_ref::<M>() {
        Some(value) => format.encode(value),
        None => Err(CodecError::new("local payload of an unexpected type")),
    }
}

fn dispatch_reminder<'a, G: Grain>(
    grain: &'a mut G,
    ctx: &'a mut GrainContext,
    payload: Payload,
) -> BoxFuture<'a, Result<Payload, DispatchError>> {
    Box::pin(async move {
        let (tick, format) = decode_request::<ReminderTick>(payload)?;
        grain
            .on_reminder(&tick.name, ctx)
            .await
            .map_err(DispatchError::Grain)?;
        encode_response::<ReminderTick>((), format)
    })
}

fn dispatch<'a, G: Handler<M>, M: Method>(
    grain: &'a mut G,
    ctx: &'a mut GrainContext,
    payload: Payload,
) -> BoxFuture<'a, Result<Payload, DispatchError>> {
    Box::pin(async move {
        let (request, format) = decode_request::<M>(payload)?;
        let response = grain
            .handle(request, ctx)
            .await
            .map_err(DispatchError::Grain)?;
        encode_response::<M>(response, format)
    })
}

fn dispatch_interleaved<'a, G: InterleavedHandler<M>, M: Method>(
    grain: &'a G,
    ctx: &'a SharedContext,
    payload: Payload,
) -> BoxFuture<'a, Result<Payload, DispatchError>> {
    Box::pin(async move {
        let (request, format) = decode_request::<M>(payload)?;
        let response = grain
            .handle(request, ctx)
            .await
            .map_err(DispatchError::Grain)?;
        encode_response::<M>(response, format)
    })
}

/// Returns the typed request, with the wire format the reply must use when it came encoded.
fn decode_request<M: Method>(
    payload: Payload,
) -> Result<(M, Option<PayloadFormat>), DispatchError> {
    match payload {
        Payload::Local { value, .. } => {
            let request = value
                .downcast::<M>()
                .map_err(|_| DispatchError::Decode("local payload of an unexpected type".into()))?;
            Ok((*request, None))
        }
        Payload::Encoded { format, bytes } => {
            let request = format
                .decode(&bytes)
                .map_err(|e| DispatchError::Decode(e.to_string()))?;
            Ok((request, Some(format)))
        }
    }
}

fn encode_response<M: Method>(
    response: M::Response,
    format: Option<PayloadFormat>,
) -> Result<Payload, DispatchError> {
    match format {
        None => Ok(Payload::Local {
            value: Box::new(response),
            encode: encoder_of::<M::Response>(),
        }),
        Some(format) => {
            let bytes = format
                .encode(&response)
                .map_err(|e| DispatchError::Encode(e.to_string()))?;
            Ok(Payload::Encoded { format, bytes })
        }
    }
}
