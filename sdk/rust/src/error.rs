//! The two error types: [`FnError`], what a function handler or a step returns (it decides
//! whether the server retries the run), and [`SdkError`], what the worker and the client
//! return when talking to the server fails.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

/// A function or step failure, as reported to the server.
///
/// `retryable` decides what the server does with the run: a retryable failure is retried with
/// the function's backoff (steps that completed are memoized and skipped on the next attempt);
/// a non-retryable one fails the run at once.
///
/// Any [`std::error::Error`] converts into a *retryable* `FnError` (so `?` works on I/O, HTTP
/// or JSON errors, which are usually transient). For that blanket conversion to be coherent,
/// `FnError` itself does not implement `std::error::Error` (the same trade-off as `anyhow`);
/// it converts into `Box<dyn Error + Send + Sync>` when one is needed.
#[derive(Debug, Clone, PartialEq)]
pub struct FnError {
    message: String,
    code: Option<String>,
    retryable: bool,
    retry_after: Option<Duration>,
    details: Option<Value>,
}

impl FnError {
    /// A failure worth another attempt (the default for errors converted with `?`).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: None,
            retryable: true,
            retry_after: None,
            details: None,
        }
    }

    /// A failure that ends the run: no more attempts.
    pub fn non_retryable(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            ..Self::retryable(message)
        }
    }

    /// Sets a machine-readable code (stored as the run's `error.code`; the server uses
    /// `FUNCTION_ERROR` when none is given).
    #[must_use]
    pub fn code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Asks the server to wait at least this long before the next attempt (instead of the
    /// function's backoff). Only meaningful for retryable errors.
    #[must_use]
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// Attaches structured details (for errors that come from the server, the stored error
    /// JSON, e.g. a failed child run's `child_run_id`).
    #[must_use]
    pub fn details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn error_code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry_after
    }

    pub fn error_details(&self) -> Option<&Value> {
        self.details.as_ref()
    }

    /// The error as the worker stream carries it; the server stores a failed step's error
    /// as `{"message", "code"?, "retryable"}`.
    pub(crate) fn to_proto(&self) -> crate::proto::v1::Error {
        crate::proto::v1::Error {
            message: self.message.clone(),
            code: self.code.clone().unwrap_or_default(),
            retryable: self.retryable,
            retry_after_ms: self
                .retry_after
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0),
            ..Default::default()
        }
    }

    /// Rebuilds an error from a stored `error` JSON (a memoized failed step); such an error
    /// already failed for good, so it is never retryable.
    pub(crate) fn from_stored(error: Value, default_code: &str) -> Self {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("the step failed")
            .to_owned();
        let code = error
            .get("code")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .unwrap_or(default_code)
            .to_owned();
        Self::non_retryable(message).code(code).details(error)
    }
}

impl fmt::Display for FnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{code}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl<E> From<E> for FnError
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(e: E) -> Self {
        Self::retryable(e.to_string())
    }
}

impl From<FnError> for Box<dyn std::error::Error + Send + Sync + 'static> {
    fn from(e: FnError) -> Self {
        e.to_string().into()
    }
}

/// A failure of the SDK itself: configuration, HTTP, the worker stream, or an error answer of
/// the server (with the server's message).
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// A builder was given something unusable (no handler, a bad URL, a duplicate id).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The server answered with an error status; `message` is the server's JSON `message`.
    #[error("server answered {status} ({code}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The request did not reach the server or the answer did not arrive.
    #[error("HTTP request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The worker stream failed (connection refused, stream broken).
    #[error("worker stream failed: {0}")]
    Stream(String),
    /// The server refused the worker stream for good (bad key, missing permission, bad
    /// registration): reconnecting would not help.
    #[error("worker stream refused: {0}")]
    Refused(String),
    /// A server answer that does not have the expected shape.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
}

impl SdkError {
    /// Whether trying again later may succeed (network trouble, a server error or restart).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Http(_) | Self::Stream(_) => true,
            Self::Api { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            Self::Config(_) | Self::Refused(_) | Self::Decode(_) => false,
        }
    }
}
