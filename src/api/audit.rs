//! The audit log over REST (`/api/v1/audit`, `/api/v1/audit/settings`) and Connect
//! (`AuditService.GetAuditTrail` / `GetAuthAuditTrail`), in ironflow-py's shapes.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::time::Ts;
use crate::engine::{AuditPage, AuditQuery, AuditSettings};
use crate::proto::v1 as pb;
use crate::store::audit::{AuditFilter, AuditRecord};

use super::AppState;
use super::auth::RequestContext;
use super::connect::{prepare, respond};
use super::error::ApiError;
use super::extract::{Body, JsonBody, PathParams, QueryParams};
use super::proto_map as map;

fn time(field: &str, text: Option<&str>) -> Result<Option<Ts>, ApiError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map(|d| Some(Ts(d.with_timezone(&chrono::Utc))))
            .map_err(|_| ApiError::invalid(format!("{field} must be an RFC 3339 timestamp"))),
    }
}

/// What an entry says, beyond the SDK's fixed fields.
fn payload(e: &crate::store::audit::AuditEntry) -> Value {
    json!({
        "action": e.action, "resource": e.resource, "outcome": e.outcome, "reason": e.reason,
        "status": e.status, "method": e.method, "path": e.path, "rpc": e.rpc,
        "actor_kind": e.actor_kind, "actor_id": e.actor_id,
    })
}

fn scope(e: &crate::store::audit::AuditEntry) -> &'static str {
    if e.env_id.is_empty() {
        "org"
    } else {
        "environment"
    }
}

fn event_json(r: &AuditRecord) -> Value {
    let e = &r.entry;
    json!({
        "id": e.id, "run_id": e.run_id, "function_id": e.function_id, "step_id": "",
        "event_type": e.event_type, "environment_id": e.env_id,
        "created_at": e.at.to_rfc3339(), "payload": payload(e),
        "metadata": {"api_key_id": if e.actor_kind == "key" { e.actor_id.as_str() } else { "" },
                     "seq": r.seq},
        "scope": scope(e),
    })
}

fn settings_json(s: &AuditSettings) -> Value {
    json!({
        "retention_days": s.retention_days.unwrap_or(0),
        "capture_scope": "authorization",
        "function_recording": "off",
        "kv_capture": false,
        "authz_successful_reads": s.log_reads,
        "authz_excluded_actions": ["events:emit", "functions:invoke", "streams:append",
            "kv:write", "config:write", "topics:publish", "groups:write", "workers:run",
            "projections:write"],
        "payload_redaction_enabled": true,
        "payload_redaction_fields": ["value"],
        "delivery_guarantee": "synchronous",
        "delivery_healthy": true,
        "delivery_failure_count": 0,
        "changes_require_restart": false,
        "updated_at": s.updated_at.map(Ts::to_rfc3339),
    })
}

#[derive(Deserialize, Default)]
pub struct AuditParams {
    action: Option<String>,
    api_key_id: Option<String>,
    cursor: Option<String>,
    event_type: Option<String>,
    from: Option<String>,
    to: Option<String>,
    function_id: Option<String>,
    run_id: Option<String>,
    outcome: Option<String>,
    limit: Option<i64>,
}

fn page_json(page: &AuditPage) -> Value {
    json!({
        "events": page.entries.iter().map(event_json).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor.clone().unwrap_or_default(),
        "total_count": page.entries.len(),
        "retention_days": page.retention_days.unwrap_or(0),
    })
}

/// `GET /api/v1/audit`: the organisation's entries, newest first.
pub async fn list(
    State(state): State<AppState>,
    ctx: RequestContext,
    QueryParams(q): QueryParams<AuditParams>,
) -> Result<Json<Value>, ApiError> {
    let page = state
        .engine
        .audit_page(AuditQuery {
            filter: AuditFilter {
                org_id: ctx.principal.org_id.clone(),
                action: q.action.unwrap_or_default(),
                actor_id: q.api_key_id.unwrap_or_default(),
                event_type: q.event_type.unwrap_or_default(),
                function_id: q.function_id.unwrap_or_default(),
                run_id: q.run_id.unwrap_or_default(),
                outcome: q.outcome.unwrap_or_default(),
                from: time("from", q.from.as_deref())?,
                to: time("to", q.to.as_deref())?,
                ..AuditFilter::default()
            },
            cursor: q.cursor,
            limit: q.limit,
        })
        .await?;
    Ok(Json(page_json(&page)))
}

pub async fn get_settings(
    State(state): State<AppState>,
    ctx: RequestContext,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(settings_json(
        &state.engine.audit_settings(&ctx.principal.org_id).await?,
    )))
}

#[derive(Deserialize)]
pub struct SettingsBody {
    #[serde(default, alias = "log_reads")]
    authz_successful_reads: Option<bool>,
    /// A number of days; `null` or 0 keeps everything.
    #[serde(default, deserialize_with = "present")]
    retention_days: Option<Option<i32>>,
}

/// Tells a field sent as `null` (Some(None)) from one left out (None).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i32>>, D::Error> {
    Ok(Some(Option::<i32>::deserialize(d)?))
}

/// `PUT /api/v1/audit/settings`: whether successful reads are recorded, and the retention.
pub async fn put_settings(
    State(state): State<AppState>,
    ctx: RequestContext,
    JsonBody(body): JsonBody<SettingsBody>,
) -> Result<Json<Value>, ApiError> {
    let retention = body.retention_days.map(|d| d.filter(|n| *n != 0));
    Ok(Json(settings_json(
        &state
            .engine
            .set_audit_settings(
                &ctx.principal.org_id,
                body.authz_successful_reads,
                retention,
            )
            .await?,
    )))
}

fn event_pb(r: &AuditRecord) -> pb::AuditEvent {
    let e = &r.entry;
    let payload = match payload(e) {
        Value::Object(m) => Some(map::map_to_struct(&m)),
        _ => None,
    };
    let mut metadata = std::collections::HashMap::new();
    if e.actor_kind == "key" {
        metadata.insert("api_key_id".to_owned(), e.actor_id.clone());
    }
    metadata.insert("seq".to_owned(), r.seq.to_string());
    pb::AuditEvent {
        id: e.id.clone(),
        run_id: e.run_id.clone(),
        function_id: e.function_id.clone(),
        event_type: e.event_type.clone(),
        payload,
        metadata,
        created_at: Some(map::timestamp(e.at)),
        environment_id: e.env_id.clone(),
        scope: scope(e).to_owned(),
        ..Default::default()
    }
}

/// One page of a trail in the proto's shape: events, their count, the next cursor.
async fn trail(
    state: &AppState,
    filter: AuditFilter,
    cursor: String,
    limit: i32,
) -> Result<(Vec<pb::AuditEvent>, i32, String), ApiError> {
    let page = state
        .engine
        .audit_page(AuditQuery {
            filter,
            cursor: Some(cursor),
            limit: Some(i64::from(limit)),
        })
        .await?;
    Ok((
        page.entries.iter().map(event_pb).collect(),
        i32::try_from(page.entries.len()).unwrap_or(i32::MAX),
        page.next_cursor.unwrap_or_default(),
    ))
}

/// `POST /ironflow.v1.AuditService/{method}`.
pub async fn audit_service(
    State(state): State<AppState>,
    PathParams(method): PathParams<String>,
    ctx: RequestContext,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    let unary = match prepare(&headers, body, state.max_request_bytes) {
        Ok(u) => u,
        Err(e) => return axum::response::IntoResponse::into_response(e),
    };
    let (s, c) = (&state, &ctx);
    match method.as_str() {
        "GetAuditTrail" => {
            respond(&unary, |r: pb::GetAuditTrailRequest| async move {
                let filter = AuditFilter {
                    org_id: c.principal.org_id.clone(),
                    run_id: r.run_id,
                    event_type: r.event_type,
                    from: time("from_timestamp", Some(&r.from_timestamp))?,
                    to: time("to_timestamp", Some(&r.to_timestamp))?,
                    ..AuditFilter::default()
                };
                let (events, total_count, next_cursor) =
                    trail(s, filter, r.cursor, r.limit).await?;
                Ok(pb::GetAuditTrailResponse {
                    events,
                    total_count,
                    next_cursor,
                })
            })
            .await
        }
        "GetAuthAuditTrail" => {
            respond(&unary, |r: pb::GetAuthAuditTrailRequest| async move {
                if !r.org_id.is_empty() && r.org_id != c.principal.org_id {
                    return Err(ApiError::not_found(format!(
                        "organisation '{}' not found",
                        r.org_id
                    )));
                }
                let filter = AuditFilter {
                    org_id: c.principal.org_id.clone(),
                    actor_id: r.api_key_id,
                    action: r.action,
                    from: time("from_timestamp", Some(&r.from_timestamp))?,
                    to: time("to_timestamp", Some(&r.to_timestamp))?,
                    ..AuditFilter::default()
                };
                let (events, total_count, next_cursor) =
                    trail(s, filter, r.cursor, r.limit).await?;
                Ok(pb::GetAuthAuditTrailResponse {
                    events,
                    total_count,
                    next_cursor,
                })
            })
            .await
        }
        m => super::connect::unknown_method("AuditService", m),
    }
}
