//! `ironflow.v1.PubSubService` over Connect: `Publish` (what `step.publish` calls). The
//! subscription and consumer-group methods answer `unimplemented` until they land.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::proto::v1 as pb;
use crate::tenancy::Permission;

use super::AppState;
use super::auth::RequestContext;
use super::connect::{prepare, respond};
use super::error::{ApiError, Code};
use super::proto_map as map;

/// `POST /ironflow.v1.PubSubService/{method}`.
pub async fn pubsub_service(
    State(state): State<AppState>,
    Path(method): Path<String>,
    ctx: RequestContext,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let unary = match prepare(&headers, body, state.max_request_bytes) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    match method.as_str() {
        "Publish" => respond(&unary, |r| publish(&state, &ctx, r)).await,
        m => ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            Code::Unimplemented,
            format!("ironflow.v1.PubSubService/{m} is not implemented by this server yet"),
        )
        .into_response(),
    }
}

async fn publish(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::PublishRequest,
) -> Result<pb::PublishResponse, ApiError> {
    ctx.require(Permission::Write)?;
    let data = map::payload_json(req.data.as_ref(), req.data_value.as_ref());
    let key = (!req.idempotency_key.is_empty()).then_some(req.idempotency_key.as_str());
    let published = state
        .engine
        .publish(&ctx.env, &req.topic, data, key)
        .await?;
    Ok(pb::PublishResponse {
        event_id: published.event_id,
        sequence: u64::try_from(published.sequence).unwrap_or_default(),
        duplicate: published.duplicate,
    })
}
