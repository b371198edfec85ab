//! Errors of client calls: configuration, no gateway, deadlines and error statuses.

use std::time::Duration;

use super::config::ClientConfigError;
use crate::api::ERROR_CODE_METADATA;

/// A client call or client construction that failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The settings are invalid; no client was built. Fix the named field.
    #[error(transparent)]
    Config(#[from] ClientConfigError),
    /// No seed answered and no gateway is known yet. Nothing changed; retry once a seed is up.
    #[error("no gateway known after {waited:?} from seeds {seeds:?}: {problem}")]
    NoMembers {
        /// The seeds tried.
        seeds: Vec<String>,
        /// How long the client waited.
        waited: Duration,
        /// The problem of the last seed tried: a connection error, or members none of which
        /// is Active yet.
        problem: String,
    },
    /// Every Active gateway's circuit breaker is open, or no node is Active. The call was not
    /// sent; retrying after the breakers' `open_for` may help.
    #[error("no gateway available for {grain_type}/{key}: {gateways} known, none accepts calls")]
    NoGateway {
        /// Grain type of the call.
        grain_type: String,
        /// Grain key of the call.
        key: String,
        /// Gateways known, breakers open or not.
        gateways: usize,
    },
    /// A gateway returned an error status and the call was not retried further. The call may
    /// have changed state, unless the code is `NOT_FOUND` or `INVALID_ARGUMENT`.
    #[error("call failed at {node} after {attempts} attempt(s): {}: {}", .status.code(), .status.message())]
    Status {
        /// Gateway of the last attempt.
        node: String,
        /// Attempts made.
        attempts: u32,
        /// The status of the last attempt.
        status: tonic::Status,
    },
    /// The last attempt's gateway sent no response before `deadline` passed; the call may have
    /// run. The client waits 100 ms past the deadline for the gateway's own timeout reply
    /// before it gives up. Retrying helps once the gateway recovers or its breaker opens.
    #[error("no response from {node} before {deadline} passed ({attempts} attempt(s))")]
    NoResponse {
        /// Gateway of the last attempt.
        node: String,
        /// The deadline that ended the last attempt.
        deadline: AttemptDeadline,
        /// Attempts made.
        attempts: u32,
    },
    /// The call's deadline passed between attempts; the earlier attempts may have run.
    #[error("deadline of {timeout:?} exceeded after {attempts} attempt(s)")]
    DeadlineExceeded {
        /// The call's deadline, from its start.
        timeout: Duration,
        /// Attempts made.
        attempts: u32,
    },
    /// The request could not be encoded as JSON; nothing was sent.
    #[error("cannot encode the request as JSON: {0}")]
    Encode(#[source] serde_json::Error),
    /// The reply is not the expected JSON; the call ran.
    #[error("invalid JSON reply from {node}: {source}")]
    Decode {
        /// Node that served the call.
        node: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// The deadline that ends one attempt of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptDeadline {
    /// The call's own deadline, as the caller gave it (or `call_timeout`), from the call's start.
    Call(Duration),
    /// The client's `attempt_timeout`, when it is shorter than the time left in the call.
    Attempt(Duration),
}

impl std::fmt::Display for AttemptDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptDeadline::Call(timeout) => {
                write!(f, "the call's deadline of {} ms", timeout.as_millis())
            }
            AttemptDeadline::Attempt(timeout) => {
                write!(f, "attempt_timeout of {} ms", timeout.as_millis())
            }
        }
    }
}

impl ClientError {
    /// Returns the gRPC code of the failure, when a status or a deadline ended the call.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Status { status, .. } => Some(status.code()),
            ClientError::NoResponse { .. } | ClientError::DeadlineExceeded { .. } => {
                Some(tonic::Code::DeadlineExceeded)
            }
            ClientError::NoGateway { .. } | ClientError::NoMembers { .. } => {
                Some(tonic::Code::Unavailable)
            }
            _ => None,
        }
    }

    /// Returns the application's error code (metadata `gristmill-error-code`) of a failed
    /// grain call, such as `insufficient_funds`.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            ClientError::Status { status, .. } => status
                .metadata()
                .get(ERROR_CODE_METADATA)
                .and_then(|value| value.to_str().ok()),
            _ => None,
        }
    }
}
