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
    /// The same request may succeed later (sent as `"retryable": true`, with `Retry-After`).
    pub retryable: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fence_code: None,
            retryable: false,
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
            StoreError::Unavailable(_) | StoreError::Contention(_) => {
                tracing::warn!(error = %err, "store unavailable");
                Self {
                    retryable: true,
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        Code::Unavailable,
                        "the database is unavailable or busy; retry shortly",
                    )
                }
            }
            StoreError::Conflict(_) => {
                tracing::info!(error = %err, "write conflict");
                Self {
                    retryable: true,
                    ..Self::new(
                        StatusCode::CONFLICT,
                        Code::Aborted,
                        "a concurrent change conflicted with this request; retry it",
                    )
                }
            }
            StoreError::Invalid(_) => {
                tracing::info!(error = %err, "value refused by the database");
                Self::invalid(
                    "a value in this request cannot be stored (U+0000 or invalid text); nothing was written",
                )
            }
            StoreError::Setup(_) => {
                tracing::error!(error = %err, "the database refused the server's role");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Code::Internal,
                    "the server's database role may not do this; its operator must grant the right \
                     (the server log names it; README: Running on Postgres)",
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
            EngineError::PermissionDenied(m) => Self::forbidden(m),
            EngineError::Unauthenticated(m) => Self::unauthenticated(m),
            EngineError::ConditionFailed(m) => {
                Self::new(StatusCode::PRECONDITION_FAILED, Code::FailedPrecondition, m)
            }
            EngineError::AlreadyExists(m) => {
                Self::new(StatusCode::CONFLICT, Code::AlreadyExists, m)
            }
            EngineError::Conflict(m) => Self::new(StatusCode::CONFLICT, Code::Aborted, m),
            e @ (EngineError::StaleExecution | EngineError::PausedAtBoundary) => Self {
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

impl From<crate::domain::storable::NulError> for ApiError {
    fn from(err: crate::domain::storable::NulError) -> Self {
        Self::invalid(err.to_string())
    }
}

impl From<IdError> for ApiError {
    fn from(err: IdError) -> Self {
        Self::invalid(err.to_string())
    }
}

impl ApiError {
    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "code": self.code.as_str(),
            "message": self.message,
            "error": self.fence_code.unwrap_or(&self.message),
        });
        if self.retryable {
            body["retryable"] = true.into();
        }
        body
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
        if self.retryable && self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl Code {
    /// The code of an HTTP error status produced outside our handlers.
    pub fn for_status(status: StatusCode) -> Self {
        match status.as_u16() {
            401 => Self::Unauthenticated,
            403 => Self::PermissionDenied,
            404 => Self::NotFound,
            405 | 501 => Self::Unimplemented,
            408 | 504 => Self::DeadlineExceeded,
            409 => Self::Aborted,
            412 | 428 => Self::FailedPrecondition,
            413 | 429 => Self::ResourceExhausted,
            503 => Self::Unavailable,
            s if s >= 500 => Self::Internal,
            _ => Self::InvalidArgument,
        }
    }
}

/// Error bodies larger than this are not read back (ours are a few hundred bytes).
const FOREIGN_ERROR_BODY: usize = 16 * 1024;

/// Middleware, outermost: an error answer that is not JSON (axum's own rejections, a 405, a
/// layer's refusal) becomes the documented JSON body with the same status and headers. The
/// text of a 4xx is kept as the message; a 5xx's is logged and replaced by a generic one.
pub async fn json_error_bodies(response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct.starts_with("application/json") || ct.starts_with("application/grpc")
        });
    if !(status.is_client_error() || status.is_server_error()) || json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, FOREIGN_ERROR_BODY)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    let reason = status.canonical_reason().unwrap_or("error").to_owned();
    let message = if status.is_server_error() {
        if !text.is_empty() {
            tracing::error!(status = status.as_u16(), body = %text, "a non-JSON server error was answered");
        }
        "internal error; see the server log".to_owned()
    } else if text.is_empty() {
        match status {
            StatusCode::METHOD_NOT_ALLOWED => {
                "this route does not accept that HTTP method".to_owned()
            }
            _ => reason.to_lowercase(),
        }
    } else {
        text
    };
    let rebuilt = ApiError::new(status, Code::for_status(status), message).into_response();
    let (new_parts, new_body) = rebuilt.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    for (name, value) in &new_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, new_body)
}

/// A handler that panicked answers a JSON 500; the panic is logged, the server goes on.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default();
    tracing::error!(panic = %detail, "a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        Code::Internal,
        "internal error; see the server log",
    )
    .into_response()
}
