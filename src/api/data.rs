//! Config (`/api/v1/config`) and secrets (`/api/v1/secrets`) REST routes. Secret values go in,
//! never out.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::engine::config_document;
use crate::store::config::{ConfigChange, ConfigRecord};
use crate::store::secrets::SecretMeta;

use super::AppState;
use super::auth::RequestContext;
use super::error::ApiError;
use super::extract::JsonBody;
use super::extract::PathParams;
use super::kv::condition;

fn config_json(c: &ConfigRecord) -> Value {
    json!({"name": c.name, "data": c.data, "revision": c.revision, "updatedAt": c.updated_at.to_rfc3339()})
}

pub async fn list_configs(
    State(state): State<AppState>,
    ctx: RequestContext,
) -> Result<Json<Value>, ApiError> {
    let configs: Vec<Value> = state
        .engine
        .config_list(&ctx.env)
        .await?
        .iter()
        .map(|c| json!({"name": c.name, "revision": c.revision, "updatedAt": c.updated_at.to_rfc3339()}))
        .collect();
    Ok(Json(json!({"configs": configs})))
}

pub async fn get_config(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(name): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(config_json(
        &state.engine.config_get(&ctx.env, &name).await?,
    )))
}

async fn write_config(
    state: &AppState,
    ctx: &RequestContext,
    name: &str,
    headers: &HeaderMap,
    change: ConfigChange,
) -> Result<Json<Value>, ApiError> {
    let cond = condition(headers)?;
    let record = state
        .engine
        .config_write(&ctx.env, name, change, cond)
        .await?;
    Ok(Json(record.map_or_else(
        || json!({"name": name}),
        |r| json!({"name": r.name, "revision": r.revision}),
    )))
}

/// `POST /api/v1/config/{name}`: replaces the whole document.
pub async fn set_config(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(name): PathParams<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let doc = config_document(body)?;
    write_config(&state, &ctx, &name, &headers, ConfigChange::Replace(doc)).await
}

/// `PATCH /api/v1/config/{name}`: shallow merge of top-level keys.
pub async fn patch_config(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(name): PathParams<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let patch = config_document(body)?;
    write_config(&state, &ctx, &name, &headers, ConfigChange::Merge(patch)).await
}

/// `DELETE /api/v1/config/{name}`: idempotent unless `If-Match` is given.
pub async fn delete_config(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(name): PathParams<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let _deleted = write_config(&state, &ctx, &name, &headers, ConfigChange::Delete).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn secret_json(s: &SecretMeta) -> Value {
    json!({
        "name": s.name, "description": s.description, "revision": s.revision,
        "created_at": s.created_at.to_rfc3339(), "updated_at": s.updated_at.to_rfc3339(),
    })
}

#[derive(Deserialize)]
pub struct CreateSecret {
    name: String,
    value: String,
    #[serde(default)]
    description: String,
}

/// `POST /api/v1/secrets` → 201 with the metadata (never the value).
pub async fn create_secret(
    State(state): State<AppState>,
    ctx: RequestContext,
    JsonBody(b): JsonBody<CreateSecret>,
) -> Result<Response, ApiError> {
    let meta = state
        .engine
        .secret_create(&ctx.env, &b.name, &b.value, &b.description)
        .await?;
    Ok((StatusCode::CREATED, Json(secret_json(&meta))).into_response())
}

pub async fn list_secrets(
    State(state): State<AppState>,
    ctx: RequestContext,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(Value::Array(
        state
            .engine
            .secret_list(&ctx.env)
            .await?
            .iter()
            .map(secret_json)
            .collect(),
    )))
}

pub async fn get_secret(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(name): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(secret_json(
        &state.engine.secret_meta(&ctx.env, &name).await?,
    )))
}

#[derive(Deserialize)]
pub struct UpdateSecret {
    value: String,
    #[serde(default)]
    description: Option<String>,
}

/// `PUT /api/v1/secrets/{name}`: a new value (and optionally description).
pub async fn update_secret(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(name): PathParams<String>,
    JsonBody(b): JsonBody<UpdateSecret>,
) -> Result<Json<Value>, ApiError> {
    let meta = state
        .engine
        .secret_update(&ctx.env, &name, Some(&b.value), b.description.as_deref())
        .await?;
    Ok(Json(secret_json(&meta)))
}

#[derive(Deserialize)]
pub struct PatchSecret {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// `PATCH /api/v1/secrets/{name}`: metadata only.
pub async fn patch_secret(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(name): PathParams<String>,
    JsonBody(b): JsonBody<PatchSecret>,
) -> Result<Json<Value>, ApiError> {
    if b.name.as_deref().is_some_and(|n| n != name) {
        return Err(ApiError::invalid(
            "renaming a secret is not supported; create a new one and delete this one",
        ));
    }
    let meta = state
        .engine
        .secret_update(&ctx.env, &name, None, b.description.as_deref())
        .await?;
    Ok(Json(secret_json(&meta)))
}

pub async fn delete_secret(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(name): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    state.engine.secret_delete(&ctx.env, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
