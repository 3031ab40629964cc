//! KV REST routes under `/api/v1/kv/buckets` as ironflow-py's client uses them: raw value
//! bodies, base64 values out, `If-None-Match: *` create-only and `If-Match: <revision>` CAS.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::kv::{BucketSettings, KvCondition};
use crate::store::kv::{BucketRecord, KvEntry};

use super::AppState;
use super::auth::RequestContext;
use super::error::ApiError;
use super::extract::PathParams;
use super::extract::{Body, JsonBody, QueryParams};

#[derive(Deserialize)]
pub struct CreateBucket {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    history: Option<i32>,
    #[serde(default)]
    max_bytes: Option<i64>,
    #[serde(default)]
    max_value_size: Option<i64>,
    #[serde(default)]
    ttl_seconds: Option<i64>,
}

fn bucket_json(b: &BucketRecord) -> Value {
    let s = &b.settings;
    json!({
        "name": s.name, "description": s.description, "history": s.history.max(1),
        "ttl_seconds": s.ttl_seconds, "max_value_size": s.max_value_size, "max_bytes": s.max_bytes,
        "values": b.values, "bytes": b.bytes, "created_at": b.created_at.to_rfc3339(),
    })
}

fn entry_json(e: &KvEntry) -> Value {
    json!({
        "key": e.key,
        "value": STANDARD.encode(&e.value),
        "revision": e.revision,
        "created_at": e.created_at.to_rfc3339(),
        "operation": if e.deleted { "delete" } else { "put" },
    })
}

/// `POST /api/v1/kv/buckets` → 201, or 409 when it exists.
pub async fn create_bucket(
    State(state): State<AppState>,
    ctx: RequestContext,
    JsonBody(b): JsonBody<CreateBucket>,
) -> Result<Response, ApiError> {
    let settings = BucketSettings {
        name: b.name,
        description: b.description,
        ttl_seconds: b.ttl_seconds.unwrap_or(0),
        max_value_size: b.max_value_size.unwrap_or(0),
        max_bytes: b.max_bytes.unwrap_or(0),
        history: b.history.unwrap_or(1).max(1),
    };
    let bucket = state.engine.kv_create_bucket(&ctx.env, settings).await?;
    Ok((StatusCode::CREATED, Json(bucket_json(&bucket))).into_response())
}

pub async fn list_buckets(
    State(state): State<AppState>,
    ctx: RequestContext,
) -> Result<Json<Value>, ApiError> {
    let buckets: Vec<Value> = state
        .engine
        .kv_list_buckets(&ctx.env)
        .await?
        .iter()
        .map(bucket_json)
        .collect();
    Ok(Json(json!({"count": buckets.len(), "buckets": buckets})))
}

pub async fn get_bucket(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(bucket): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(bucket_json(
        &state.engine.kv_bucket(&ctx.env, &bucket).await?,
    )))
}

pub async fn delete_bucket(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(bucket): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    state.engine.kv_delete_bucket(&ctx.env, &bucket).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `If-None-Match: *` (create-only) or `If-Match: <revision>` (compare-and-set).
pub(super) fn condition(headers: &HeaderMap) -> Result<KvCondition, ApiError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().trim_matches('"').to_owned())
    };
    match (header("if-none-match"), header("if-match")) {
        (Some(v), _) if v == "*" => Ok(KvCondition::Absent),
        (Some(v), _) => Err(ApiError::invalid(format!(
            "If-None-Match supports only '*' (got '{v}')"
        ))),
        (None, Some(rev)) => rev.parse::<i64>().map(KvCondition::Revision).map_err(|_| {
            ApiError::invalid(format!("If-Match must be a revision number (got '{rev}')"))
        }),
        (None, None) => Ok(KvCondition::None),
    }
}

/// `PUT /api/v1/kv/buckets/{b}/keys/{key}`: the body is stored verbatim.
pub async fn put_key(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams((bucket, key)): PathParams<(String, String)>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let cond = condition(&headers)?;
    let entry = state
        .engine
        .kv_write(&ctx.env, &bucket, &key, Some(body.to_vec()), cond)
        .await?;
    Ok(Json(json!({"revision": entry.revision})))
}

pub async fn get_key(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams((bucket, key)): PathParams<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(entry_json(
        &state.engine.kv_get(&ctx.env, &bucket, &key).await?,
    )))
}

#[derive(Deserialize, Default)]
pub struct DeleteParams {
    #[serde(default)]
    purge: Option<bool>,
}

/// `DELETE …/keys/{key}`: a tombstone (the key reads as absent, history kept), or with
/// `?purge=true` the key and all its revisions are removed.
pub async fn delete_key(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams((bucket, key)): PathParams<(String, String)>,
    headers: HeaderMap,
    QueryParams(p): QueryParams<DeleteParams>,
) -> Result<StatusCode, ApiError> {
    if p.purge.unwrap_or(false) {
        state.engine.kv_purge(&ctx.env, &bucket, &key).await?;
    } else {
        state
            .engine
            .kv_write(&ctx.env, &bucket, &key, None, condition(&headers)?)
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
pub struct KeysParams {
    #[serde(default)]
    filter: Option<String>,
}

pub async fn list_keys(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(bucket): PathParams<String>,
    QueryParams(p): QueryParams<KeysParams>,
) -> Result<Json<Value>, ApiError> {
    let filter = p.filter.filter(|f| !f.is_empty());
    let keys = state
        .engine
        .kv_keys(&ctx.env, &bucket, filter.as_deref())
        .await?;
    Ok(Json(json!({"count": keys.len(), "keys": keys})))
}

/// `GET …/keys/{key}/history`: kept revisions, oldest first, tombstones included.
pub async fn key_history(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams((bucket, key)): PathParams<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let entries: Vec<Value> = state
        .engine
        .kv_history(&ctx.env, &bucket, &key)
        .await?
        .iter()
        .map(entry_json)
        .collect();
    Ok(Json(json!({"count": entries.len(), "entries": entries})))
}
