//! ConnectRPC unary transport: codec (binary proto or proto-JSON), gzip request bodies,
//! timeouts and the Connect error envelope. The methods themselves live in `ironflow_rpc`.

use std::future::Future;
use std::io::Read;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::AppState;
use super::auth::RequestContext;
use super::error::{ApiError, Code};
use super::extract::Body;
use super::extract::PathParams;
use super::ironflow_rpc;
use super::run_control_rpc;
use crate::domain::storable::check_json;

/// How a Connect message is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Proto,
    Json,
}

impl Codec {
    fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/proto" | "application/x-protobuf" | "application/protobuf" => {
                Ok(Self::Proto)
            }
            "application/json" | "" => Ok(Self::Json),
            other => Err(ApiError::unsupported_media(format!(
                "unsupported content type '{other}': use application/proto or application/json"
            ))),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Proto => "application/proto",
            Self::Json => "application/json",
        }
    }
}

/// A decoded request plus what is needed to answer it.
pub struct Unary {
    codec: Codec,
    body: Bytes,
}

impl Unary {
    /// Decodes the request; a malformed message, or one carrying U+0000 in any string, is a
    /// 400 naming the problem.
    pub fn decode<T: prost::Message + Default + DeserializeOwned + Serialize>(
        &self,
    ) -> Result<T, ApiError> {
        self.decode_adjusted(|_| {})
    }

    /// Like [`decode`](Self::decode), first rewriting a JSON body (for well-known types whose
    /// canonical JSON form the generated code does not read, such as `FieldMask` strings).
    pub fn decode_adjusted<T: prost::Message + Default + DeserializeOwned + Serialize>(
        &self,
        adjust: fn(&mut serde_json::Value),
    ) -> Result<T, ApiError> {
        match self.codec {
            Codec::Proto => {
                let message = T::decode(self.body.as_ref())
                    .map_err(|e| ApiError::invalid(format!("malformed protobuf request: {e}")))?;
                check_message(&message)?;
                Ok(message)
            }
            Codec::Json if self.body.iter().all(u8::is_ascii_whitespace) => Ok(T::default()),
            Codec::Json => {
                let mut value: serde_json::Value = serde_json::from_slice(&self.body)
                    .map_err(|e| ApiError::invalid(format!("malformed JSON request: {e}")))?;
                if !value.is_object() {
                    return Err(ApiError::invalid(
                        "malformed JSON request: a message must be a JSON object",
                    ));
                }
                check_json("", &value)?;
                adjust(&mut value);
                serde_json::from_value(value)
                    .map_err(|e| ApiError::invalid(format!("malformed JSON request: {e}")))
            }
        }
    }

    pub fn encode<T: prost::Message + Serialize>(&self, message: &T) -> Response {
        let body = match self.codec {
            Codec::Proto => message.encode_to_vec(),
            Codec::Json => match serde_json::to_vec(message) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "encoding a Connect JSON response");
                    return ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        Code::Internal,
                        "internal error",
                    )
                    .into_response();
                }
            },
        };
        let mut response = (StatusCode::OK, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.codec.content_type()),
        );
        response
    }
}

/// Refuses a decoded message that carries U+0000 in any string (Postgres cannot store it); the
/// error names the field as proto-JSON spells it.
pub fn check_message<T: Serialize>(message: &T) -> Result<(), ApiError> {
    let value = serde_json::to_value(message).map_err(|e| {
        tracing::error!(error = %e, "re-encoding a decoded request as JSON");
        ApiError::invalid("the request could not be read")
    })?;
    Ok(check_json("", &value)?)
}

/// Decodes, runs `handler` and encodes the answer in the request's codec.
pub async fn respond<Req, Resp, F, Fut>(unary: &Unary, handler: F) -> Response
where
    Req: prost::Message + Default + DeserializeOwned + Serialize,
    Resp: prost::Message + Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<Resp, ApiError>>,
{
    let request = match unary.decode::<Req>() {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match handler(request).await {
        Ok(message) => unary.encode(&message),
        Err(e) => e.into_response(),
    }
}

/// A unary call of any service: the body decoded once (codec, gzip, size), `call` run on it
/// within the client's `connect-timeout-ms`.
async fn unary_call<Fut>(
    state: &AppState,
    headers: &HeaderMap,
    method: &str,
    body: Bytes,
    call: impl FnOnce(Unary) -> Fut,
) -> Response
where
    Fut: Future<Output = Response>,
{
    match prepare(headers, body, state.max_request_bytes) {
        Ok(unary) => within_deadline(headers, method, call(unary)).await,
        Err(e) => e.into_response(),
    }
}

/// The answer to a method a known service does not have: Connect's `unimplemented`.
pub fn unknown_method(service: &str, method: &str) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        Code::Unimplemented,
        format!("unknown method ironflow.v1.{service}/{method}"),
    )
    .into_response()
}

/// `POST /ironflow.v1.IronflowService/{method}`.
pub async fn ironflow_service(
    State(state): State<AppState>,
    PathParams(method): PathParams<String>,
    ctx: RequestContext,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    let caller = super::streams_rpc::Caller::from_headers(&headers);
    let (s, c, m, who) = (&state, &ctx, method.as_str(), &caller);
    unary_call(s, &headers, m, body, move |u| async move {
        ironflow_rpc::dispatch(s, c, who, m, &u).await
    })
    .await
}

/// `POST /ironflow.v1.TimeTravelService/{method}`.
pub async fn time_travel_service(
    State(state): State<AppState>,
    PathParams(method): PathParams<String>,
    ctx: RequestContext,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    let (s, c, m) = (&state, &ctx, method.as_str());
    unary_call(s, &headers, m, body, move |u| async move {
        run_control_rpc::time_travel(s, c, m, &u).await
    })
    .await
}

/// `POST /ironflow.v1.EntityStreamService/{method}`.
pub async fn entity_stream_service(
    State(state): State<AppState>,
    PathParams(method): PathParams<String>,
    ctx: RequestContext,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    let caller = super::streams_rpc::Caller::from_headers(&headers);
    let (s, c, m, who) = (&state, &ctx, method.as_str(), &caller);
    unary_call(s, &headers, m, body, move |u| async move {
        super::streams_rpc::dispatch(s, c, who, m, &u).await
    })
    .await
}

/// `POST /ironflow.v1.EventSchemaService/{method}`.
pub async fn event_schema_service(
    State(state): State<AppState>,
    PathParams(method): PathParams<String>,
    ctx: RequestContext,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    let (s, c, m) = (&state, &ctx, method.as_str());
    unary_call(s, &headers, m, body, move |u| async move {
        super::schemas_rpc::dispatch(s, c, m, &u).await
    })
    .await
}

/// A call cut off at the client's `connect-timeout-ms`, if it sent one.
async fn within_deadline(
    headers: &HeaderMap,
    method: &str,
    call: impl Future<Output = Response>,
) -> Response {
    match timeout(headers) {
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(response) => response,
            Err(_) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                Code::DeadlineExceeded,
                format!("{method} did not finish within connect-timeout-ms"),
            )
            .into_response(),
        },
        None => call.await,
    }
}

pub(super) fn prepare(
    headers: &HeaderMap,
    body: Bytes,
    max_bytes: usize,
) -> Result<Unary, ApiError> {
    let codec = Codec::from_headers(headers)?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_ascii_lowercase());
    let body = match encoding.as_deref() {
        None | Some("identity") | Some("") => body,
        Some("gzip") => gunzip(&body, max_bytes, "request body")?,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Code::Unimplemented,
                format!("unsupported content-encoding '{other}': use gzip or identity"),
            ));
        }
    };
    Ok(Unary { codec, body })
}

/// Decompresses at most `max_bytes`; a larger body is refused rather than inflated. `what`
/// names it in the error ("request body", "request message").
pub(super) fn gunzip(body: &[u8], max_bytes: usize, what: &str) -> Result<Bytes, ApiError> {
    let mut out = Vec::new();
    let limit = u64::try_from(max_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    flate2::read::GzDecoder::new(body)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::invalid(format!("malformed gzip {what}: {e}")))?;
    if out.len() > max_bytes {
        return Err(ApiError::too_large(format!(
            "{what} is over the limit of {max_bytes} bytes once decompressed"
        )));
    }
    Ok(Bytes::from(out))
}

fn timeout(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
}
