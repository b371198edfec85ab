//! Request and reply payloads: typed values for local calls, encoded bytes across nodes.

use std::any::Any;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Encoding of a payload that crosses a process boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PayloadFormat {
    /// postcard, the compact serde format used between nodes.
    Postcard,
    /// UTF-8 JSON, for gRPC clients in other languages and for humans.
    Json,
}

/// The request or reply of one grain call.
pub enum Payload {
    /// A typed value handed over in-process without encoding.
    Local {
        /// The value.
        value: Box<dyn Any + Send>,
        /// Encodes `value` when the call has to leave the process after all.
        encode: super::methods::EncodeFn,
    },
    /// Bytes in the given format.
    Encoded {
        /// Encoding of `bytes`.
        format: PayloadFormat,
        /// The encoded value.
        bytes: Vec<u8>,
    },
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Local { .. } => f.write_str("Payload::Local(..)"),
            Payload::Encoded { format, bytes } => {
                write!(f, "Payload::Encoded({format:?}, {} bytes)", bytes.len())
            }
        }
    }
}

/// Failure to encode or decode a payload.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(String);

impl CodecError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        CodecError(message.into())
    }
}

impl Payload {
    /// Returns the payload encoded in `format`, encoding a local value if needed.
    pub fn into_bytes(self, format: PayloadFormat) -> Result<Vec<u8>, CodecError> {
        match self {
            Payload::Local { value, encode } => encode(value.as_ref(), format),
            Payload::Encoded {
                format: have,
                bytes,
            } if have == format => Ok(bytes),
            Payload::Encoded { format: have, .. } => Err(CodecError(format!(
                "payload is {have:?}, expected {format:?}"
            ))),
        }
    }

    /// Decodes the payload as a `T`, taking a local value as it is.
    pub fn into_value<T: DeserializeOwned + 'static>(self) -> Result<T, CodecError> {
        match self {
            Payload::Local { value, .. } => value
                .downcast::<T>()
                .map(|boxed| *boxed)
                .map_err(|_| CodecError("local reply of an unexpected type".into())),
            Payload::Encoded { format, bytes } => format.decode(&bytes),
        }
    }
}

impl PayloadFormat {
    /// Encodes `value` in this format.
    pub fn encode<T: Serialize>(self, value: &T) -> Result<Vec<u8>, CodecError> {
        match self {
            PayloadFormat::Postcard => {
                postcard::to_allocvec(value).map_err(|e| CodecError(format!("postcard: {e}")))
            }
            PayloadFormat::Json => {
                serde_json::to_vec(value).map_err(|e| CodecError(format!("json: {e}")))
            }
        }
    }

    /// Decodes a `T` from `bytes`. An empty JSON payload reads as `null`, so methods without
    /// arguments can be called with no payload at all.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        match self {
            PayloadFormat::Postcard => {
                postcard::from_bytes(bytes).map_err(|e| CodecError(format!("postcard: {e}")))
            }
            PayloadFormat::Json if bytes.iter().all(u8::is_ascii_whitespace) => {
                serde_json::from_slice(b"null").map_err(|e| CodecError(format!("json: {e}")))
            }
            PayloadFormat::Json => {
                serde_json::from_slice(bytes).map_err(|e| CodecError(format!("json: {e}")))
            }
        }
    }
}
