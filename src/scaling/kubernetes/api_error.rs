//! Sorts Kubernetes API failures into retryable ones and final orchestrator errors.

use std::fmt;

use crate::scaling::orchestrator::OrchestratorError;

/// One API request the orchestrator makes, named the way RBAC rules name it.
#[derive(Clone, Copy, Debug)]
pub(super) struct ApiRequest<'a> {
    /// RBAC verb: `get`, `patch`, `list` or `watch`.
    pub verb: &'static str,
    /// RBAC resource, with its subresource: `statefulsets/scale`.
    pub resource: &'static str,
    /// Namespace the request targets.
    pub namespace: &'a str,
}

impl fmt::Display for ApiRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} in namespace {}",
            self.verb, self.resource, self.namespace
        )
    }
}

/// A failed API request, sorted by what the caller can do about it.
#[derive(Debug)]
pub(super) enum ApiFailure {
    /// The object changed since it was read (HTTP 409). Re-reading and retrying can help.
    Conflict(String),
    /// A server error, throttling or connection failure. The request may or may not have
    /// taken effect; a retry after re-reading can help.
    Transient(String),
    /// A failure that a retry cannot fix, such as a missing permission.
    Final(OrchestratorError),
}

impl ApiFailure {
    /// Sorts `error` from `request`. A 403 names the RBAC rule the service account lacks.
    pub(super) fn classify(error: kube::Error, request: ApiRequest<'_>) -> Self {
        let status = match error {
            kube::Error::Api(status) => status,
            kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
                return Self::Transient(format!("{request} failed: {error}"));
            }
            other => {
                return Self::Final(OrchestratorError::Unavailable(format!(
                    "{request} failed: {other}"
                )));
            }
        };
        let detail = format!("HTTP {} {}: {}", status.code, status.reason, status.message);
        match status.code {
            409 => Self::Conflict(format!("{request} conflicted: {detail}")),
            429 | 500..=599 => Self::Transient(format!("{request} failed: {detail}")),
            401 | 403 => Self::Final(OrchestratorError::Forbidden {
                action: request.to_string(),
                detail: format!(
                    "{detail}; grant the verb to the pod's service account in a Role \
                     (see deploy/base/rbac.yaml)"
                ),
            }),
            404 => Self::Final(OrchestratorError::Invalid(format!(
                "{request} found no object ({detail}); check kubernetes.statefulset and \
                 kubernetes.namespace"
            ))),
            _ => Self::Final(OrchestratorError::Invalid(format!(
                "{request} was rejected: {detail}"
            ))),
        }
    }

    /// Returns the error to report when no retry is left.
    pub(super) fn into_final(self, attempts: u32) -> OrchestratorError {
        match self {
            Self::Conflict(detail) => {
                OrchestratorError::Conflict(format!("{detail} (after {attempts} attempts)"))
            }
            Self::Transient(detail) => {
                OrchestratorError::Unavailable(format!("{detail} (after {attempts} attempts)"))
            }
            Self::Final(error) => error,
        }
    }
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Conflict(detail) | Self::Transient(detail) => f.write_str(detail),
            Self::Final(error) => error.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATCH_SCALE: ApiRequest<'static> = ApiRequest {
        verb: "patch",
        resource: "statefulsets/scale",
        namespace: "grains",
    };

    fn api_error(code: u16) -> kube::Error {
        let status = kube::core::Status::failure("denied", "Reason").with_code(code);
        kube::Error::Api(status.boxed())
    }

    #[test]
    fn status_codes_sort_into_retry_classes() {
        let cases = [
            (409, "conflict"),
            (429, "transient"),
            (500, "transient"),
            (503, "transient"),
            (401, "forbidden"),
            (403, "forbidden"),
            (404, "invalid"),
            (422, "invalid"),
        ];
        for (code, expected) in cases {
            let class = match ApiFailure::classify(api_error(code), PATCH_SCALE) {
                ApiFailure::Conflict(_) => "conflict",
                ApiFailure::Transient(_) => "transient",
                ApiFailure::Final(OrchestratorError::Forbidden { .. }) => "forbidden",
                ApiFailure::Final(OrchestratorError::Invalid(_)) => "invalid",
                ApiFailure::Final(_) => "other",
            };
            assert_eq!(class, expected, "HTTP {code}");
        }
    }

    #[test]
    fn forbidden_names_the_missing_rule() {
        let ApiFailure::Final(OrchestratorError::Forbidden { action, .. }) =
            ApiFailure::classify(api_error(403), PATCH_SCALE)
        else {
            panic!("403 must map to Forbidden");
        };
        assert_eq!(action, "patch statefulsets/scale in namespace grains");
    }
}
