//! The engine's one error type; transports map it to HTTP / Connect / gRPC status once.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{kind} '{id}' not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{what} is {size} bytes; the limit is {limit} bytes")]
    PayloadTooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller may not do this (beyond what the route's permission said).
    #[error("{0}")]
    PermissionDenied(String),
    /// A credential was wrong (a sign-in's email or password).
    #[error("{0}")]
    Unauthenticated(String),
    /// A conditional write's precondition (If-Match / If-None-Match) did not hold.
    #[error("{0}")]
    ConditionFailed(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// An optimistic-concurrency check failed (an append's expected version): read and retry.
    #[error("{0}")]
    Conflict(String),
    /// The fence of an ack or report does not match the current dispatch.
    #[error("this execution is stale: the run was re-dispatched, cancelled or its lease expired")]
    StaleExecution,
    /// A checkpoint was recorded and the run paused at it (a pause was requested): the
    /// dispatch is over, as for a stale fence.
    #[error(
        "the run was paused at this step boundary: the reported steps are recorded, and the dispatch is over until the run is resumed"
    )]
    PausedAtBoundary,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EngineError {
    pub fn not_found(kind: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            kind,
            id: id.to_string(),
        }
    }
}
