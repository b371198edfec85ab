//! The one place where call errors become gRPC status codes.

use tonic::{Code, Status};

use crate::grain::CallError;

/// Metadata key that carries the application's error code of a failed grain call.
pub const ERROR_CODE_METADATA: &str = "gristmill-error-code";

/// Maps a call error to the gRPC status a client receives.
pub fn call_error_status(error: &CallError) -> Status {
    let code = match error {
        CallError::UnknownGrainType { .. } | CallError::UnknownMethod { .. } => Code::NotFound,
        CallError::InvalidPayload { .. }
        | CallError::InvalidKey { .. }
        | CallError::InvalidRequest { .. } => Code::InvalidArgument,
        CallError::DeadlineExceeded { .. } => Code::DeadlineExceeded,
        CallError::NodeUnavailable { .. }
        | CallError::NoActiveNode { .. }
        | CallError::ShuttingDown { .. }
        | CallError::TooManyHops { .. } => Code::Unavailable,
        CallError::Grain { .. } => Code::FailedPrecondition,
        CallError::GrainPanicked { .. } | CallError::Internal(_) => Code::Internal,
    };
    let mut status = Status::new(code, error.to_string());
    let application_code = match error {
        CallError::Grain { error, .. } | CallError::InvalidRequest { error, .. } => {
            error.code.as_str()
        }
        other => other.outcome_label(),
    };
    if let Ok(value) = application_code.parse() {
        status.metadata_mut().insert(ERROR_CODE_METADATA, value);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grain::{GrainError, GrainId};

    #[test]
    fn each_error_has_its_code() {
        let grain = GrainId::new("counter", "c1");
        let cases = [
            (
                CallError::UnknownGrainType {
                    grain_type: "x".into(),
                    known: String::new(),
                },
                Code::NotFound,
            ),
            (
                CallError::DeadlineExceeded {
                    grain: grain.clone(),
                    after_ms: 5,
                },
                Code::DeadlineExceeded,
            ),
            (
                CallError::NoActiveNode {
                    grain: grain.clone(),
                },
                Code::Unavailable,
            ),
            (
                CallError::Grain {
                    grain: grain.clone(),
                    error: GrainError::new("insufficient_funds", "no"),
                },
                Code::FailedPrecondition,
            ),
            (
                CallError::from_handler(
                    grain.clone(),
                    GrainError::invalid_argument("invalid_amount", "invalid amount 0"),
                ),
                Code::InvalidArgument,
            ),
            (
                CallError::GrainPanicked {
                    grain,
                    message: "boom".into(),
                },
                Code::Internal,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(call_error_status(&error).code(), code, "{error}");
        }
    }

    #[test]
    fn grain_error_code_travels_in_metadata() {
        let error = CallError::Grain {
            grain: GrainId::new("account", "a"),
            error: GrainError::new("insufficient_funds", "balance too low"),
        };
        let status = call_error_status(&error);
        let code = status
            .metadata()
            .get(ERROR_CODE_METADATA)
            .and_then(|v| v.to_str().ok());
        assert_eq!(code, Some("insufficient_funds"));
    }
}
