//! `ApiError`: the one place engine/store errors become HTTP statuses and Connect codes.
//!
//! The JSON body is `{"code", "message", "error"}`: Connect clients read `code`/`message`,
//! REST clients read `message` or `error`. Internal details go to the log, never the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::engine::EngineError;
use crate::ids::IdError;
use crate::store::StoreError;

/// Connect / gRPC status codes we use, by their canonical lower-case names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    Aborted,
    FailedPrecondition,
    ResourceExhausted,
    DeadlineExceeded,
    Unimplemented,
    Unavailable,
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::Aborted => "aborted",
            Self::FailedPrecondition => "failed_precondition",
            Self::ResourceExhausted => "resource_exhausted",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Unimplemented => "unimplemented",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status the Connect protocol assigns to each code.
    pub fn connect_status(self) -> StatusCode {
        match self {
            Self::InvalidArgument => StatusCode::BAD_REQUEST,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::AlreadyExists => StatusCode::CONFLICT,
            Self::Aborted => StatusCode::CONFLICT,
            Self::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
            Self::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error as the client sees it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
    /// A protocol code workers act on (`STALE_EXECUTION`), sent as the `error` field.
    pub fence_code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fence_code: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Code::InvalidArgument, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, Code::Unauthenticated, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, Code::PermissionDenied, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, Code::NotFound, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::ResourceExhausted,
            message,
        )
    }

    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::InvalidArgument,
            message,
        )
    }

    fn from_store(err: &StoreError) -> Self {
        match err {
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %err, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Code::Unavailable,
                    "the database is unavailable; retry shortly",
                )
            }
            StoreError::Conflict(_) => {
                tracing::info!(error = %err, "write conflict");
                Self::new(
                    StatusCode::CONFLICT,
                    Code::Aborted,
                    "a concurrent change conflicted with this request; retry it",
                )
            }
            StoreError::Corrupt(_) | StoreError::Internal(_) => {
                tracing::error!(error = %err, "store error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Code::Internal,
                    "internal error; see the server log",
                )
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::InvalidArgument(m) => Self::invalid(m),
            e @ EngineError::NotFound { .. } => Self::not_found(e.to_string()),
            e @ EngineError::PayloadTooLarge { .. } => Self::too_large(e.to_string()),
            EngineError::FailedPrecondition(m) => {
                Self::new(StatusCode::PRECONDITION_FAILED, Code::FailedPrecondition, m)
            }
            EngineError::ConditionFailed(m) => {
                Self::new(StatusCode::PRECONDITION_FAILED, Code::FailedPrecondition, m)
            }
            EngineError::AlreadyExists(m) => {
                Self::new(StatusCode::CONFLICT, Code::AlreadyExists, m)
            }
            e @ EngineError::StaleExecution => Self {
                fence_code: Some("STALE_EXECUTION"),
                ..Self::new(StatusCode::CONFLICT, Code::Aborted, e.to_string())
            },
            EngineError::Store(e) => Self::from_store(&e),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        Self::from_store(&err)
    }
}

impl From<IdError> for ApiError {
    fn from(err: IdError) -> Self {
        Self::invalid(err.to_string())
    }
}

impl ApiError {
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "code": self.code.as_str(),
            "message": self.message,
            "error": self.fence_code.unwrap_or(&self.message),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}
