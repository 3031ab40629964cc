//! Pending debounces (`/api/v1/debounce/entries`) in the shape of ironflow-py's
//! `DebounceEntryView`: list the environment's, drop one (its run never starts).

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use serde_json::{Value, json};

use crate::ids::FunctionId;
use crate::store::schedules::DebounceEntryRow;

use super::AppState;
use super::auth::RequestContext;
use super::error::ApiError;
use super::extract::PathParams;

/// `GET /api/v1/debounce/entries`: the environment's pending debounces, soonest first.
pub async fn list(
    State(state): State<AppState>,
    ctx: RequestContext,
) -> Result<Json<Value>, ApiError> {
    let entries = state.engine.list_debounces(&ctx.env).await?;
    Ok(Json(entries.iter().map(entry_view).collect()))
}

/// `DELETE /api/v1/debounce/entries/{env}/{fn}/{key}`: the key travels base64url-encoded
/// without padding, as ironflow-py sends it.
pub async fn delete(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams((env, function, key)): PathParams<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    delete_entry(&state, &ctx, &env, &function, &key).await
}

/// `DELETE /api/v1/debounce/entries/{env}/{fn}/`: the global key `""` (base64url of nothing is
/// an empty last segment).
pub async fn delete_global(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams((env, function)): PathParams<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    delete_entry(&state, &ctx, &env, &function, "").await
}

async fn delete_entry(
    state: &AppState,
    ctx: &RequestContext,
    env: &str,
    function: &str,
    key: &str,
) -> Result<Json<Value>, ApiError> {
    if env != ctx.env.as_str() {
        return Err(ApiError::not_found(format!(
            "debounce entry {env}/{function}: not in this environment ({})",
            ctx.env
        )));
    }
    let function =
        FunctionId::parse(function).map_err(|e| ApiError::invalid(format!("function id: {e}")))?;
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key.trim_end_matches('='))
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| ApiError::invalid("key: must be the debounce key in unpadded base64url"))?;
    state
        .engine
        .delete_debounce(&ctx.env, &function, &key)
        .await?;
    Ok(Json(json!({"deleted": true})))
}

fn entry_view(e: &DebounceEntryRow) -> Value {
    json!({
        "environment_id": e.env_id,
        "function_id": e.function_id,
        "function_version": e.function_version,
        "debounce_key": e.debounce_key,
        "event_id": e.event_id,
        "period_ms": e.period_ms,
        "events": e.events,
        "armed_at": e.armed_at.to_rfc3339(),
        "fires_at": e.fires_at.to_rfc3339(),
    })
}
