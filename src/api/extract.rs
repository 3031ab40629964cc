//! Request extractors whose rejections are JSON `ApiError`s (axum's defaults answer in plain text).

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, RawPathParams, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::domain::storable::{check_json, check_text};

use http_body_util::BodyExt as _;

use super::AppState;
use super::error::{ApiError, Code};

/// The raw body, at most `--max-payload-bytes` plus the envelope; over the limit is a JSON 413.
/// An oversized body is still read to its end (up to [`DRAIN_LIMIT`]) and dropped, so the
/// client's connection stays usable for its next request instead of being closed under it.
pub struct Body(pub Bytes);

/// How much of an oversized body is read and dropped before the connection is given up on.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.max_request_bytes;
        let mut body = req.into_body();
        let mut buf = Vec::new();
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| ApiError::invalid(format!("could not read the request body: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen = seen.saturating_add(data.len());
            if seen > limit {
                if seen > DRAIN_LIMIT {
                    break;
                }
                continue;
            }
            buf.extend_from_slice(&data);
        }
        if seen > limit {
            return Err(ApiError::too_large(
                "request body is over the server's size limit (--max-payload-bytes)",
            ));
        }
        Ok(Body(Bytes::from(buf)))
    }
}

/// A JSON body. Malformed JSON or a wrong type is a 400 naming the problem.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let Body(bytes) = Body::from_request(req, state).await?;
        parse_object(&bytes).map(JsonBody)
    }
}

/// A JSON object body, checked for U+0000 and read into `T`; the error names the field.
pub fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("malformed JSON body: {e}")))?;
    // serde would also read a struct from an array, field by field; bodies are objects.
    if !value.is_object() {
        return Err(ApiError::invalid("the request body must be a JSON object"));
    }
    check_json("", &value)?;
    serde_path_to_error::deserialize(value)
        .map_err(|e| ApiError::invalid(format!("invalid field '{}': {}", e.path(), e.inner())))
}

/// A JSON object body that may be left out (empty or whitespace only: `T::default()`).
pub struct OptionalJsonBody<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let Body(bytes) = Body::from_request(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        parse_object(&bytes).map(OptionalJsonBody)
    }
}

/// Query parameters; an unparsable one is a 400 naming it.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            check_text(&format!("query parameter '{name}'"), &name)?;
            check_text(&format!("query parameter '{name}'"), &value)?;
        }
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| QueryParams(q))
            .map_err(|e: QueryRejection| {
                ApiError::invalid(format!("bad query parameters: {}", e.body_text()))
            })
    }
}

/// Path parameters: percent-decoded, valid UTF-8 and free of U+0000, or a JSON 400 naming
/// the parameter (axum's own rejection is plain text).
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(format!("bad path: {}", e.body_text())))?;
        for (name, value) in &raw {
            check_text(&format!("path parameter '{name}'"), value)?;
        }
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| PathParams(v))
            .map_err(|e: PathRejection| ApiError::invalid(format!("bad path: {}", e.body_text())))
    }
}

/// A WebSocket upgrade; a request that is not one is a JSON 400 (or 405 / 426) saying so.
pub struct WsUpgrade(pub WebSocketUpgrade);

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .map(WsUpgrade)
            .map_err(|e: WebSocketUpgradeRejection| {
                let status = e.status();
                let code = if status == StatusCode::METHOD_NOT_ALLOWED {
                    Code::Unimplemented
                } else {
                    Code::InvalidArgument
                };
                ApiError::new(
                    status,
                    code,
                    format!("this route is a WebSocket: {}", e.body_text()),
                )
            })
    }
}
