//! REST handlers under `/api/v1`: events, functions, runs (snake_case JSON as the Ironflow v1
//! clients read it).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::domain::function::FunctionStatus;
use crate::domain::run::RunStatus;
use crate::domain::time::Ts;
use crate::engine::{EmitEvent, EventPageQuery, RunPageQuery};
use crate::ids::{EventId, FunctionId, RunId};
use crate::store::events::{EventNameQuery, EventRecord};
use crate::store::functions::FunctionRecord;
use crate::store::history::HistoryRecord;
use crate::store::runs::{RunRecord, StepRecord};

use super::AppState;
use super::auth::RequestContext;
use super::error::ApiError;
use super::extract::PathParams;
use super::extract::{JsonBody, QueryParams};

type ApiResult = Result<Json<Value>, ApiError>;

#[derive(Deserialize)]
pub struct EmitBody {
    name: String,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    version: Option<i32>,
    /// Hold the request until the triggered runs end (a sync trigger).
    #[serde(default)]
    wait: bool,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// `POST /api/v1/events`; with `"wait": true` it answers when the triggered runs have ended
/// (200), or when `timeout_ms` passed (202, the unfinished runs keep running).
pub async fn emit_event(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody<EmitBody>,
) -> Result<Response, ApiError> {
    let metadata = match body.metadata {
        None | Some(Value::Null) => json!({}),
        Some(m @ Value::Object(_)) => m,
        Some(_) => return Err(ApiError::invalid("metadata must be a JSON object")),
    };
    let request = EmitEvent {
        name: body.name,
        data: body.data.unwrap_or_else(|| json!({})),
        metadata,
        idempotency_key: body.idempotency_key,
        source: body
            .source
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "api".into()),
        version: body.version.unwrap_or(0),
        emitted_by_run: super::streams_rpc::Caller::from_headers(&headers).run(),
    };
    if body.wait {
        let timeout = std::time::Duration::from_millis(body.timeout_ms.unwrap_or(0));
        let outcome = state
            .engine
            .trigger_sync(&ctx.env, request, timeout)
            .await?;
        return Ok(sync_response(&outcome));
    }
    let result = state.engine.emit(&ctx.env, request).await?;
    Ok(Json(json!({
        "event_id": result.event_id,
        "seq": result.seq,
        "run_ids": result.run_ids,
        "duplicate": result.duplicate,
    }))
    .into_response())
}

#[derive(Deserialize)]
pub struct InvokeBody {
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    wait: bool,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// `POST /api/v1/functions/{id}/invoke`: one run of the function with `data` as its input;
/// with `"wait": true`, answered when the run ends (200) or the timeout passed (202).
pub async fn invoke_function(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<InvokeBody>,
) -> Result<Response, ApiError> {
    let id = FunctionId::parse(&id)?;
    let data = body.data.unwrap_or_else(|| json!({}));
    let key = body.idempotency_key.filter(|k| !k.is_empty());
    if body.wait {
        let timeout = std::time::Duration::from_millis(body.timeout_ms.unwrap_or(0));
        let outcome = state
            .engine
            .invoke_sync(&ctx.env, &id, data, key, timeout)
            .await?;
        return Ok(sync_response(&outcome));
    }
    let result = state
        .engine
        .invoke_function(&ctx.env, &id, data, key)
        .await?;
    Ok(Json(json!({
        "event_id": result.event_id,
        "run_id": result.run_ids.first(),
        "duplicate": result.duplicate,
    }))
    .into_response())
}

fn sync_response(outcome: &crate::engine::SyncOutcome) -> Response {
    let results: Vec<Value> = outcome
        .runs
        .iter()
        .map(|r| {
            let still_running = outcome.still_running_message(&r.id);
            let timed_out = still_running.is_some();
            json!({
                "run_id": r.id,
                "function_id": r.function_id,
                "status": r.status.as_str(),
                "output": r.output,
                "error": match still_running {
                    Some(message) => json!({"code": "WAIT_TIMEOUT", "message": message}),
                    None => json!(r.error),
                },
                "wait_timed_out": timed_out,
                "duration_ms": r.ended_at.map(|end| (end.0 - r.created_at.0).num_milliseconds()),
            })
        })
        .collect();
    let status = if outcome.timed_out.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let body = json!({
        "event_id": outcome.emitted.event_id,
        "run_ids": outcome.emitted.run_ids,
        "duplicate": outcome.emitted.duplicate,
        "results": results,
    });
    (status, Json(body)).into_response()
}

#[derive(Deserialize, Default)]
pub struct EventListParams {
    cursor: Option<String>,
    before: Option<String>,
    limit: Option<i64>,
    name: Option<String>,
    names: Option<String>,
    source: Option<String>,
    since: Option<String>,
    until: Option<String>,
    search: Option<String>,
}

/// `GET /api/v1/events`
pub async fn list_events(
    State(state): State<AppState>,
    ctx: RequestContext,
    QueryParams(p): QueryParams<EventListParams>,
) -> ApiResult {
    let names = p.names.as_deref().map(|n| {
        n.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    });
    let query = EventPageQuery {
        cursor: non_empty(p.cursor),
        before: non_empty(p.before),
        limit: p.limit,
        name: non_empty(p.name),
        names: names.filter(|n| !n.is_empty()),
        source: non_empty(p.source),
        since: parse_time("since", p.since)?,
        until: parse_time("until", p.until)?,
        search: non_empty(p.search),
    };
    let page = state.engine.list_events(&ctx.env, query).await?;
    let events = page.events.iter().map(|e| event_json(e, None)).collect();
    let mut body = page_json("events", events, Some(page.limit), page.next_cursor);
    body["has_prev"] = json!(page.has_prev);
    Ok(Json(body))
}

/// `GET /api/v1/events/{id}`
pub async fn get_event(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
) -> ApiResult {
    let id = EventId::parse(&id)?;
    let (event, runs) = state.engine.get_event(&ctx.env, &id).await?;
    Ok(Json(event_json(&event, Some(&runs))))
}

#[derive(Deserialize, Default)]
pub struct EventNamesParams {
    source: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

/// `GET /api/v1/events/names`: counts per name over the newest events (bounded scan).
pub async fn event_names(
    State(state): State<AppState>,
    ctx: RequestContext,
    QueryParams(p): QueryParams<EventNamesParams>,
) -> ApiResult {
    const SCAN_CAP: i64 = 100_000;
    let query = EventNameQuery {
        source: non_empty(p.source),
        since: parse_time("since", p.since)?,
        until: parse_time("until", p.until)?,
        scan_cap: SCAN_CAP,
    };
    let (names, scanned) = state.engine.event_names(&ctx.env, query).await?;
    Ok(Json(json!({
        "names": names.iter().map(|n| json!({"name": n.name, "count": n.count})).collect::<Vec<_>>(),
        "scanned": scanned,
        "scan_cap": SCAN_CAP,
        "truncated": scanned >= SCAN_CAP,
    })))
}

#[derive(Deserialize, Default)]
pub struct FunctionListParams {
    cursor: Option<String>,
    limit: Option<i64>,
    status: Option<String>,
}

/// `GET /api/v1/functions`
pub async fn list_functions(
    State(state): State<AppState>,
    ctx: RequestContext,
    QueryParams(p): QueryParams<FunctionListParams>,
) -> ApiResult {
    let status = non_empty(p.status)
        .map(|s| {
            FunctionStatus::parse(&s)
                .ok_or_else(|| ApiError::invalid(format!("status: unknown function status '{s}'")))
        })
        .transpose()?;
    let page = state
        .engine
        .list_functions(&ctx.env, status, non_empty(p.cursor), p.limit)
        .await?;
    let functions = page.functions.iter().map(function_json).collect();
    Ok(Json(page_json(
        "functions",
        functions,
        None,
        page.next_cursor,
    )))
}

/// `GET /api/v1/functions/{id}`
pub async fn get_function(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
) -> ApiResult {
    let id = FunctionId::parse(&id)?;
    Ok(Json(function_json(
        &state.engine.get_function(&ctx.env, &id).await?,
    )))
}

#[derive(Deserialize, Default)]
pub struct RunListParams {
    cursor: Option<String>,
    limit: Option<i64>,
    function_id: Option<String>,
    status: Option<String>,
    event_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

/// `GET /api/v1/runs`: `status` takes one status or a comma-separated list.
pub async fn list_runs(
    State(state): State<AppState>,
    ctx: RequestContext,
    QueryParams(p): QueryParams<RunListParams>,
) -> ApiResult {
    let statuses = non_empty(p.status)
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<RunStatus>()
                        .map_err(|e| ApiError::invalid(format!("status: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    let query = RunPageQuery {
        cursor: non_empty(p.cursor),
        limit: p.limit,
        function_id: non_empty(p.function_id)
            .map(|f| FunctionId::parse(&f))
            .transpose()
            .map_err(|e| ApiError::invalid(format!("function_id: {e}")))?,
        statuses,
        event_id: non_empty(p.event_id)
            .map(|e| EventId::parse(&e))
            .transpose()
            .map_err(|e| ApiError::invalid(format!("event_id: {e}")))?,
        since: parse_time("since", p.since)?,
        until: parse_time("until", p.until)?,
    };
    let page = state.engine.list_runs(&ctx.env, query).await?;
    let runs = page.runs.iter().map(run_json).collect();
    Ok(Json(page_json(
        "runs",
        runs,
        Some(page.limit),
        page.next_cursor,
    )))
}

/// `GET /api/v1/runs/{id}`
pub async fn get_run(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
) -> ApiResult {
    let id = RunId::parse(&id)?;
    Ok(Json(run_json(&state.engine.get_run(&ctx.env, &id).await?)))
}

/// `GET /api/v1/runs/{id}/steps`
pub async fn run_steps(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
) -> ApiResult {
    let id = RunId::parse(&id)?;
    let steps = state.engine.run_steps(&ctx.env, &id).await?;
    Ok(Json(
        json!({ "steps": steps.iter().map(step_json).collect::<Vec<_>>() }),
    ))
}

/// `GET /api/v1/runs/{id}/streams`: the entity streams the run touched (its trigger's, and those
/// its steps appended to).
pub async fn run_streams(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
) -> ApiResult {
    let id = RunId::parse(&id)?;
    let streams = state.engine.run_streams(&ctx.env, &id).await?;
    Ok(Json(json!({ "entity_ids": streams })))
}

/// `GET /api/v1/runs/{id}/history`: the run's entries of the continuous history, in order.
pub async fn run_history(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
) -> ApiResult {
    let id = RunId::parse(&id)?;
    let entries = state.engine.run_history(&ctx.env, &id).await?;
    Ok(Json(
        json!({ "entries": entries.iter().map(history_json).collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize, Default)]
pub struct CancelBody {
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /api/v1/runs/{id}/cancel` (body optional: `{"reason": "…"}`)
pub async fn cancel_run(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParams(id): PathParams<String>,
    super::extract::OptionalJsonBody(body): super::extract::OptionalJsonBody<CancelBody>,
) -> ApiResult {
    let id = RunId::parse(&id)?;
    let run = state
        .engine
        .cancel_run(&ctx.env, &id, body.reason.as_deref().unwrap_or_default())
        .await?;
    Ok(Json(run_json(&run)))
}

/// The list envelope: `{<field>: [...], count, limit?, has_next, next_cursor}`.
fn page_json(
    field: &str,
    items: Vec<Value>,
    limit: Option<i64>,
    next_cursor: Option<String>,
) -> Value {
    let mut body = json!({
        "count": items.len(),
        "has_next": next_cursor.is_some(),
        "next_cursor": next_cursor,
    });
    body[field] = Value::Array(items);
    if let Some(limit) = limit {
        body["limit"] = json!(limit);
    }
    body
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// RFC 3339 (`2026-11-22T10:00:00Z`) or Unix seconds.
fn parse_time(field: &str, value: Option<String>) -> Result<Option<Ts>, ApiError> {
    let Some(value) = non_empty(value) else {
        return Ok(None);
    };
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value.trim()) {
        return Ok(Some(Ts(t.with_timezone(&chrono::Utc))));
    }
    value
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .map(|t| Some(Ts(t)))
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "{field}: '{value}' is not a time; use RFC 3339 (2026-11-22T10:00:00Z) or Unix seconds"
            ))
        })
}

#[derive(Serialize)]
struct EventJson<'a> {
    id: &'a EventId,
    seq: i64,
    name: &'a str,
    data: &'a Value,
    metadata: &'a Value,
    source: &'a str,
    timestamp: String,
    created_at: String,
    processed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
    version: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_ids: Option<&'a [RunId]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entity_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entity_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entity_version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema_hash: Option<&'a str>,
    /// Set when the event was stored under enforcement `warn` although it did not conform.
    #[serde(skip_serializing_if = "Option::is_none")]
    schema_error: Option<&'a str>,
}

fn event_json(e: &EventRecord, runs: Option<&[RunId]>) -> Value {
    let at = e.received_at.to_rfc3339();
    serde_json::to_value(EventJson {
        id: &e.id,
        seq: e.seq,
        name: &e.name,
        data: &e.data,
        metadata: &e.metadata,
        source: &e.source,
        timestamp: at.clone(),
        created_at: at,
        // Trigger matching happens in the emit transaction, so a stored event is processed.
        processed: true,
        idempotency_key: e.idempotency_key.as_deref(),
        version: e.version,
        run_ids: runs,
        entity_id: e.entity.as_ref().map(|x| x.entity_id.as_str()),
        entity_type: e.entity.as_ref().map(|x| x.entity_type.as_str()),
        entity_version: e.entity.as_ref().map(|x| x.version),
        schema_hash: e.schema.hash.as_deref(),
        schema_error: e.schema.error.as_deref(),
    })
    .unwrap_or_default()
}

fn function_json(f: &FunctionRecord) -> Value {
    let mut value = serde_json::to_value(&f.definition).unwrap_or_default();
    if let Value::Object(map) = &mut value {
        map.insert("id".into(), json!(f.id));
        map.insert("version".into(), json!(f.version));
        map.insert("status".into(), json!(f.status.as_str()));
        map.insert("created_at".into(), json!(f.created_at.to_rfc3339()));
        map.insert("updated_at".into(), json!(f.updated_at.to_rfc3339()));
    }
    value
}

fn run_json(r: &RunRecord) -> Value {
    json!({
        "id": r.id,
        "function_id": r.function_id,
        "function_version": r.function_version,
        "event_id": r.event_id,
        "event_name": r.event_name,
        "status": r.status.as_str(),
        "input": r.input,
        "output": r.output,
        "error": r.error,
        "attempt": r.attempt,
        "max_attempts": r.max_attempts,
        "parent_run_id": r.parent_run_id,
        "cancellation_cause": r.cancellation_cause,
        "environment_id": r.env_id,
        "created_at": r.created_at.to_rfc3339(),
        "updated_at": r.updated_at.to_rfc3339(),
        "started_at": r.started_at.map(Ts::to_rfc3339),
        "ended_at": r.ended_at.map(Ts::to_rfc3339),
        "pause_requested": r.pause_requested,
        "pause_reason": r.pause_reason,
        "resume_from_step": r.resume_from_step,
    })
}

fn step_json(s: &StepRecord) -> Value {
    json!({
        "run_id": s.run_id,
        "step_id": s.step_id,
        "name": s.name,
        "type": s.step_type,
        "sequence": s.sequence,
        "status": s.status,
        "output": s.output,
        "error": s.error,
        "attempt": s.attempt,
        "started_at": s.started_at.map(Ts::to_rfc3339),
        "ended_at": s.ended_at.map(Ts::to_rfc3339),
        "original_output": s.original_output,
        "patched_at": s.patched_at.map(Ts::to_rfc3339),
        "patched_by": s.patched_by,
        "injected": s.injected,
    })
}

fn history_json(h: &HistoryRecord) -> Value {
    json!({
        "seq": h.seq,
        "recorded_at": h.recorded_at.to_rfc3339(),
        "kind": h.kind,
        "run_id": h.run_id,
        "function_id": h.function_id,
        "event_id": h.event_id,
        "payload": h.payload,
    })
}
