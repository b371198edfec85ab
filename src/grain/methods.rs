//! The method table of a grain type: decoding, dispatch to handlers, and encoding of replies.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use super::context::GrainContext;
use super::error::GrainError;
use super::payload::{CodecError, Payload, PayloadFormat};
use super::traits::{Grain, Handler, Method};

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

/// Encodes a typed request that travels as [`Payload::Local`] when it must cross a node.
pub(crate) type EncodeFn = fn(&(dyn Any + Send), PayloadFormat) -> Result<Vec<u8>, CodecError>;

/// The methods a grain type serves, keyed by [`Method::NAME`].
pub struct Methods<G> {
    entries: HashMap<&'static str, DispatchFn<G>>,
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
        let mut entries: HashMap<&'static str, DispatchFn<G>> = HashMap::new();
        entries.insert(REMINDER_METHOD, dispatch_reminder::<G>);
        Self { entries }
    }

    /// Adds the method `M`; a second method with the same name replaces the first.
    pub fn add<M: Method>(&mut self) -> &mut Self
    where
        G: Handler<M>,
    {
        self.entries.insert(M::NAME, dispatch::<G, M>);
        self
    }

    /// Returns the names of the methods the application added, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self
            .entries
            .keys()
            .copied()
            .filter(|n| *n != REMINDER_METHOD)
            .collect();
        names.sort_unstable();
        names
    }

    pub(crate) fn contains(&self, method: &str) -> bool {
        self.entries.contains_key(method)
    }

    pub(crate) fn dispatch<'a>(
        &self,
        grain: &'a mut G,
        ctx: &'a mut GrainContext,
        method: &str,
        payload: Payload,
    ) -> BoxFuture<'a, Result<Payload, DispatchError>> {
        match self.entries.get(method) {
            Some(dispatch) => dispatch(grain, ctx, payload),
            None => Box::pin(async { Err(DispatchError::UnknownMethod) }),
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
        let tick: ReminderTick = match payload {
            Payload::Local { value, .. } => *value
                .downcast::<ReminderTick>()
                .map_err(|_| DispatchError::Decode("local payload of an unexpected type".into()))?,
            Payload::Encoded { format, bytes } => format
                .decode(&bytes)
                .map_err(|e| DispatchError::Decode(e.to_string()))?,
        };
        grain
            .on_reminder(&tick.name, ctx)
            .await
            .map_err(DispatchError::Grain)?;
        Ok(Payload::Local {
            value: Box::new(()),
            encode: encoder_of::<()>(),
        })
    })
}

fn dispatch<'a, G: Handler<M>, M: Method>(
    grain: &'a mut G,
    ctx: &'a mut GrainContext,
    payload: Payload,
) -> BoxFuture<'a, Result<Payload, DispatchError>> {
    Box::pin(async move {
        match payload {
            Payload::Local { value, .. } => {
                let request = value.downcast::<M>().map_err(|_| {
                    DispatchError::Decode("local payload of an unexpected type".into())
                })?;
                let response = grain
                    .handle(*request, ctx)
                    .await
                    .map_err(DispatchError::Grain)?;
                Ok(Payload::Local {
                    value: Box::new(response),
                    encode: encoder_of::<M::Response>(),
                })
            }
            Payload::Encoded { format, bytes } => {
                let request: M = format
                    .decode(&bytes)
                    .map_err(|e| DispatchError::Decode(e.to_string()))?;
                let response = grain
                    .handle(request, ctx)
                    .await
                    .map_err(DispatchError::Grain)?;
                let bytes = format
                    .encode(&response)
                    .map_err(|e| DispatchError::Encode(e.to_string()))?;
                Ok(Payload::Encoded { format, bytes })
            }
        }
    })
}
