//! Circuit breaker routes (`/api/v1/circuit-breakers`) in the shape of ironflow-py's
//! `BreakerState`: list the environment's breakers, reset one by key.

use axum::Json;
use axum::extract::State;
use serde_json::Value;

use crate::engine::breaker_document;

use super::AppState;
use super::auth::RequestContext;
use super::error::ApiError;
use super::extract::PathParams;

/// `GET /api/v1/circuit-breakers`: every breaker of the environment (a JSON array).
pub async fn list(
    State(state): State<AppState>,
    ctx: RequestContext,
) -> Result<Json<Value>, ApiError> {
    let breakers = state.engine.list_breakers(&ctx.env).await?;
    Ok(Json(Value::Array(
        breakers.iter().map(breaker_document).collect(),
    )))
}

/// `POST /api/v1/circuit-breakers/{key}/reset`: closes the breaker; the runs that waited go.
pub async fn reset(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(key): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let record = state.engine.reset_breaker(&ctx.env, &key).await?;
    Ok(Json(breaker_document(&record)))
}
