//! Circuit breaker routes (`/api/v1/circuit-breakers`) in the shape of ironflow-py's
//! `BreakerState`: list the environment's breakers, reset one by key.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use crate::domain::breaker::breaker_key;
use crate::store::push_store::BreakerRecord;
use crate::tenancy::Permission;

use super::AppState;
use super::auth::RequestContext;
use super::error::ApiError;

fn breaker_state(r: &BreakerRecord) -> Value {
    let mut v = json!({
        "key": breaker_key(r.function_id.as_str(), &r.endpoint),
        "function_id": r.function_id,
        "endpoint": r.endpoint,
        "environment_id": r.env_id,
        "state": r.breaker.state.as_str(),
        "consecutive_fails": r.breaker.consecutive_fails,
        "updated_at": r.updated_at.to_rfc3339(),
    });
    if let Some(t) = r.breaker.last_failure_at {
        v["last_failure"] = json!(t.to_rfc3339());
    }
    if let Some(e) = &r.breaker.last_error {
        v["last_error"] = json!(e);
    }
    if let Some(t) = r.breaker.open_until {
        v["open_until"] = json!(t.to_rfc3339());
    }
    v
}

/// `GET /api/v1/circuit-breakers`: every breaker of the environment (a JSON array).
pub async fn list(
    State(state): State<AppState>,
    ctx: RequestContext,
) -> Result<Json<Value>, ApiError> {
    ctx.require(Permission::Read)?;
    let breakers = state.engine.list_breakers(&ctx.env).await?;
    Ok(Json(Value::Array(
        breakers.iter().map(breaker_state).collect(),
    )))
}

/// `POST /api/v1/circuit-breakers/{key}/reset`: closes the breaker; the runs that waited go.
pub async fn reset(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    ctx.require(Permission::Write)?;
    let record = state.engine.reset_breaker(&ctx.env, &key).await?;
    Ok(Json(breaker_state(&record)))
}
