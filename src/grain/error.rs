//! Errors of grain calls: what application code returns, and what callers receive.

use serde::{Deserialize, Serialize};

use super::GrainId;

/// Error returned by application grain code; the caller receives it as
/// [`CallError::Grain`], or as [`CallError::InvalidRequest`] when it was made with
/// [`GrainError::invalid_argument`]. The activation stays active and keeps serving.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct GrainError {
    /// Short machine-readable code chosen by the application, such as `insufficient_funds`.
    pub code: String,
    /// Human-readable description.
    pub message: String,
    /// Whether the request is invalid whatever the grain's state. It is not encoded, because
    /// between nodes the variant [`CallError::InvalidRequest`] carries it, and skipping it
    /// keeps the encoding that older nodes read.
    #[serde(skip)]
    invalid_argument: bool,
}

impl GrainError {
    /// Creates an error with an application code and a message, for a request that the
    /// grain's state rules out, such as a withdrawal larger than the balance. gRPC callers
    /// receive `FAILED_PRECONDITION`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            invalid_argument: false,
        }
    }

    /// Creates an error for a request that is invalid whatever the grain's state, such as a
    /// negative amount or an empty account key. The handler must return it before it changes
    /// any state. gRPC callers receive `INVALID_ARGUMENT`, so the message should name the
    /// invalid value and the valid ones.
    pub fn invalid_argument(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            invalid_argument: true,
            ..Self::new(code, message)
        }
    }

    /// Returns whether the error was made with [`GrainError::invalid_argument`].
    pub fn is_invalid_argument(&self) -> bool {
        self.invalid_argument
    }
}

impl From<CallError> for GrainError {
    /// Wraps the failure of a call that a grain made to another grain.
    fn from(error: CallError) -> Self {
        match error {
            CallError::Grain { error, .. } => error,
            CallError::InvalidRequest { error, .. } => {
                GrainError::invalid_argument(error.code, error.message)
            }
            other => GrainError::new("call_failed", other.to_string()),
        }
    }
}

/// Failure of a grain call, as the caller sees it. It crosses node boundaries, so it is
/// serializable; the gRPC API maps each variant to one status code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CallError {
    /// No grain type of that name is registered. Nothing ran; retrying cannot help.
    #[error("grain type {grain_type:?} is not registered; registered types: {known}")]
    UnknownGrainType {
        /// The requested type name.
        grain_type: String,
        /// The registered names, comma-separated.
        known: String,
    },
    /// The grain type has no method of that name. Nothing ran; retrying cannot help.
    #[error("unknown method {method:?} of grain type {grain_type:?}; its methods: {known}")]
    UnknownMethod {
        /// The grain type.
        grain_type: String,
        /// The requested method name.
        method: String,
        /// The type's method names, comma-separated.
        known: String,
    },
    /// The request payload could not be decoded as the method's request type. Nothing ran.
    #[error("invalid payload for {grain_type}.{method}: {detail}")]
    InvalidPayload {
        /// The grain type.
        grain_type: String,
        /// The method.
        method: String,
        /// The decoder's message.
        detail: String,
    },
    /// The deadline passed before a reply arrived. The call may or may not have run.
    #[error("call to {grain} timed out after {after_ms} ms")]
    DeadlineExceeded {
        /// The called grain.
        grain: GrainId,
        /// The call's whole timeout in milliseconds.
        after_ms: u64,
    },
    /// The node that hosts the grain could not be reached. Whether the call ran is unknown
    /// unless `before_send` is true; a retry can help once membership has caught up.
    #[error("node {node} is unavailable for {grain}: {detail}")]
    NodeUnavailable {
        /// Name of the node.
        node: String,
        /// The called grain.
        grain: GrainId,
        /// What failed.
        detail: String,
        /// True when the request was never handed to the node, so a retry cannot run it twice.
        before_send: bool,
    },
    /// No Active node can take a new activation. Nothing ran; retry when a node is Active.
    #[error("no active node can host {grain}")]
    NoActiveNode {
        /// The grain that needed an activation.
        grain: GrainId,
    },
    /// The grain's activation returned an application error. The turn ran.
    #[error("{grain} failed: {error}")]
    Grain {
        /// The called grain.
        grain: GrainId,
        /// The application's error.
        error: GrainError,
    },
    /// The grain panicked during the turn (or during activation); that activation was dropped
    /// and the next call activates it afresh.
    #[error("{grain} panicked: {message}")]
    GrainPanicked {
        /// The called grain.
        grain: GrainId,
        /// The panic message.
        message: String,
    },
    /// The node is shutting down or was declared dead and accepts no new calls.
    #[error("node {node} is shutting down")]
    ShuttingDown {
        /// Name of the node.
        node: String,
    },
    /// The call was forwarded more often than the limit, which indicates a routing loop
    /// while membership changes. Nothing ran on the last node; retrying later can help.
    #[error("call to {grain} was forwarded {hops} times without reaching its activation")]
    TooManyHops {
        /// The called grain.
        grain: GrainId,
        /// Forwards taken.
        hops: u32,
    },
    /// An internal failure, such as a reply that could not be encoded.
    #[error("internal error: {0}")]
    Internal(String),
    /// The grain key is empty or longer than the limit. Nothing ran. After the variants above,
    /// so that its encoding leaves theirs unchanged.
    #[error(
        "invalid key of {key_bytes} bytes for grain type {grain_type}: use 1 to {max_bytes} bytes"
    )]
    InvalidKey {
        /// The grain type.
        grain_type: String,
        /// Length of the key given, in bytes.
        key_bytes: usize,
        /// The maximum key length, in bytes.
        max_bytes: usize,
    },
    /// The grain rejected the request as invalid whatever its state
    /// ([`GrainError::invalid_argument`]). The turn ran, and by that constructor's contract
    /// it changed nothing, so retrying the same request cannot help. Last, so that its encoding leaves the other variants'
    /// unchanged.
    #[error("{grain} rejected the request: {error}")]
    InvalidRequest {
        /// The called grain.
        grain: GrainId,
        /// The application's error.
        error: GrainError,
    },
}

impl CallError {
    /// Wraps the error that the handler of a turn on `grain` returned.
    pub fn from_handler(grain: GrainId, error: GrainError) -> Self {
        if error.is_invalid_argument() {
            CallError::InvalidRequest { grain, error }
        } else {
            CallError::Grain { grain, error }
        }
    }

    /// Returns whether the call certainly did not run, so that retrying cannot apply it twice.
    pub fn is_before_execution(&self) -> bool {
        match self {
            CallError::UnknownGrainType { .. }
            | CallError::UnknownMethod { .. }
            | CallError::InvalidPayload { .. }
            | CallError::InvalidKey { .. }
            | CallError::NoActiveNode { .. }
            | CallError::ShuttingDown { .. }
            | CallError::TooManyHops { .. } => true,
            CallError::NodeUnavailable { before_send, .. } => *before_send,
            CallError::DeadlineExceeded { .. }
            | CallError::Grain { .. }
            | CallError::InvalidRequest { .. }
            | CallError::GrainPanicked { .. }
            | CallError::Internal(_) => false,
        }
    }

    /// Returns the label used in metrics for this outcome.
    pub fn outcome_label(&self) -> &'static str {
        match self {
            CallError::UnknownGrainType { .. } | CallError::UnknownMethod { .. } => "unknown",
            CallError::InvalidPayload { .. } => "invalid_payload",
            CallError::InvalidKey { .. } => "invalid_key",
            CallError::DeadlineExceeded { .. } => "deadline_exceeded",
            CallError::NodeUnavailable { .. } => "node_unavailable",
            CallError::NoActiveNode { .. } => "no_active_node",
            CallError::Grain { .. } => "grain_error",
            CallError::InvalidRequest { .. } => "invalid_request",
            CallError::GrainPanicked { .. } => "grain_panicked",
            CallError::ShuttingDown { .. } => "shutting_down",
            CallError::TooManyHops { .. } => "too_many_hops",
            CallError::Internal(_) => "internal",
        }
    }
}
