//! Classification of failed attempts: breaker failures and retry safety.

/// The kind of failure of one attempt, as routing sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The request never left the client: the connection to the gateway was refused or could
    /// not be opened. The call did not run.
    NotSent,
    /// The gateway is shutting down and rejected the call before running it.
    ShuttingDown,
    /// The cluster rejected the call before running it: no Active node could host the grain,
    /// or the call exceeded its forward limit.
    ClusterRejected,
    /// The gateway could not reach the grain's node; the call may or may not have run.
    ClusterUnavailable,
    /// The connection broke after the request was sent; the call may or may not have run.
    ConnectionLost,
    /// The gateway sent no reply before the attempt's deadline plus a margin; the call may or
    /// may not have run.
    NoResponse,
    /// The gateway returned `DEADLINE_EXCEEDED`; the call may or may not have run.
    DeadlineExceeded,
    /// Unknown grain type or method (`NOT_FOUND`); every node would return the same.
    NotFound,
    /// An application error, invalid input or internal error from the grain; the call ran.
    Application,
}

impl Failure {
    /// Returns whether the failure counts against the gateway's circuit breaker: the gateway
    /// itself sent no reply or is going away. Errors the gateway reported about other nodes or
    /// about the call show that the gateway works.
    pub fn is_gateway_failure(self) -> bool {
        matches!(
            self,
            Failure::NotSent
                | Failure::ShuttingDown
                | Failure::ConnectionLost
                | Failure::NoResponse
        )
    }

    /// Returns the label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::NotSent => "not_sent",
            Failure::ShuttingDown => "shutting_down",
            Failure::ClusterRejected => "cluster_rejected",
            Failure::ClusterUnavailable => "cluster_unavailable",
            Failure::ConnectionLost => "connection_lost",
            Failure::NoResponse => "no_response",
            Failure::DeadlineExceeded => "deadline_exceeded",
            Failure::NotFound => "not_found",
            Failure::Application => "application",
        }
    }
}

/// Whether a failed attempt may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetrySafety {
    /// The call did not run, or its method is idempotent: a retry is safe.
    Safe,
    /// The call may have run and its method is not marked idempotent.
    MayHaveRun,
    /// Every node would give the same answer, so a retry cannot help.
    Pointless,
}

/// Decides whether an attempt that failed with `failure` may be retried, given whether the
/// method is marked idempotent in the client's settings.
pub fn retry_safety(failure: Failure, idempotent: bool) -> RetrySafety {
    match failure {
        Failure::NotSent | Failure::ShuttingDown | Failure::ClusterRejected => RetrySafety::Safe,
        Failure::ClusterUnavailable
        | Failure::ConnectionLost
        | Failure::NoResponse
        | Failure::DeadlineExceeded => {
            if idempotent {
                RetrySafety::Safe
            } else {
                RetrySafety::MayHaveRun
            }
        }
        Failure::NotFound | Failure::Application => RetrySafety::Pointless,
    }
}
