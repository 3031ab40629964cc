//! `ironflow.v1.ProjectionService` and the projection REST routes: thin handlers that parse,
//! authorize, call the engine and map the result (the runner protocol, status and operations,
//! definition history, and the read-your-writes waits).

use std::time::Duration;

use axum::Json as AxumJson;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::domain::projection::{
    Catchup, Definition, GLOBAL_PARTITION, HeldLease, PresentedLease, ProjectionKind,
    ProjectionStatus, Registration,
};
use crate::engine::{
    CreateSqlProjection, FeedItem, MAX_CATCHUP_STREAM_WAIT, MAX_CATCHUP_WAIT, ProjectedEvent,
    ProjectionReport, RebuildRequest, RegisterProjection, RunnerCommit,
};
use crate::proto::v1 as pb;
use crate::store::projections::{Position, ProjectionQuery, ProjectionRecord, RevisionRecord};

use super::AppState;
use super::auth::RequestContext;
use super::connect::{Unary, prepare, respond};
use super::connect_stream::StreamRequest;
use super::error::ApiError;
use super::extract::{Body, PathParams};
use super::proto_map as map;

/// `POST /ironflow.v1.ProjectionService/{method}`.
pub async fn projection_service(
    State(state): State<AppState>,
    PathParams(method): PathParams<String>,
    ctx: RequestContext,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    if matches!(
        method.as_str(),
        "StreamProjectionEvents" | "WaitProjectionCatchupStream"
    ) {
        return match StreamRequest::parse(&headers, &body, state.max_request_bytes) {
            Ok(request) if method == "StreamProjectionEvents" => {
                stream_events(&state, &ctx, &request).await
            }
            Ok(request) => wait_catchup_stream(&state, &ctx, &request).await,
            Err(e) => e.into_response(),
        };
    }
    let unary = match prepare(&headers, body, state.max_request_bytes) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    dispatch(&state, &ctx, &method, &unary).await
}

async fn dispatch(state: &AppState, ctx: &RequestContext, method: &str, unary: &Unary) -> Response {
    match method {
        "RegisterProjection" => respond(unary, |r| register(state, ctx, r)).await,
        "UnregisterProjection" => respond(unary, |r| unregister(state, ctx, r)).await,
        "AcquireProjectionLease" => respond(unary, |r| acquire(state, ctx, r)).await,
        "RenewProjectionLease" => respond(unary, |r| renew(state, ctx, r)).await,
        "ReleaseProjectionLease" => respond(unary, |r| release(state, ctx, r)).await,
        "PollProjectionEvents" => respond(unary, |r| poll(state, ctx, r)).await,
        "SaveProjectionState" => respond(unary, |r| save(state, ctx, r)).await,
        "AckProjectionEvents" => respond(unary, |r| ack(state, ctx, r)).await,
        "GetProjection" => respond(unary, |r| get(state, ctx, r)).await,
        "ListProjections" => respond(unary, |r| list(state, ctx, r)).await,
        "GetProjectionStatus" => respond(unary, |r| status(state, ctx, r)).await,
        "PauseProjection" => respond(unary, |r| pause(state, ctx, r)).await,
        "ResumeProjection" => respond(unary, |r| resume(state, ctx, r)).await,
        "WaitProjectionCatchup" => respond(unary, |r| wait_catchup(state, ctx, r)).await,
        "WaitProjectionCatchupBatch" => respond(unary, |r| wait_batch(state, ctx, r)).await,
        "WaitForEvent" => respond(unary, |r| wait_for_event(state, ctx, r)).await,
        "ListProjectionHistory" => respond(unary, |r| list_history(state, ctx, r)).await,
        "GetProjectionRevision" => respond(unary, |r| get_revision(state, ctx, r)).await,
        "CreateSQLProjection" => respond(unary, |r| create_sql(state, ctx, r)).await,
        "QuerySQLProjection" => respond(unary, |r| query_sql(state, ctx, r)).await,
        "RebuildProjection" => respond(unary, |r| rebuild(state, ctx, r)).await,
        "GetRebuildJob" => respond(unary, |r| get_rebuild_job(state, ctx, r)).await,
        "CancelRebuild" => respond(unary, |r| cancel_rebuild(state, ctx, r)).await,
        m => super::connect::unknown_method("ProjectionService", m),
    }
}

fn lease_of(lease: Option<pb::ProjectionLease>) -> Option<PresentedLease> {
    lease.map(|l| PresentedLease {
        token: l.token,
        epoch: l.epoch,
    })
}

fn lease_message(lease: &HeldLease) -> pb::ProjectionLease {
    pb::ProjectionLease {
        token: lease.token.clone(),
        epoch: lease.epoch,
    }
}

fn duration(d: Duration) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A wait's timeout: 0 or absent means the default (30 s); more than the cap is the cap.
fn wait_timeout(
    timeout: Option<&pbjson_types::Duration>,
    cap: Duration,
) -> Result<Duration, ApiError> {
    let Some(t) = timeout else {
        return Ok(Duration::from_secs(30).min(cap));
    };
    if t.seconds < 0 || t.nanos < 0 {
        return Err(ApiError::invalid("timeout must not be negative"));
    }
    let requested = Duration::new(
        u64::try_from(t.seconds).unwrap_or(0),
        u32::try_from(t.nanos).unwrap_or(0),
    );
    if requested.is_zero() {
        return Ok(Duration::from_secs(30).min(cap));
    }
    Ok(requested.min(cap))
}

fn name_of(name: &str) -> Result<&str, ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::invalid("name is required"));
    }
    Ok(name)
}

fn state_fields(state: &Json) -> (Option<pbjson_types::Struct>, Option<pbjson_types::Value>) {
    match state {
        Json::Object(m) => (Some(map::map_to_struct(m)), None),
        Json::Null => (None, None),
        other => (None, Some(map::json_to_value(other))),
    }
}

fn state_from(state: Option<&pbjson_types::Struct>, value: Option<&pbjson_types::Value>) -> Json {
    if let Some(v) = value {
        return map::value_to_json(v);
    }
    state.map_or(Json::Object(serde_json::Map::new()), |s| {
        Json::Object(map::struct_to_map(s))
    })
}

fn event_message(e: &ProjectedEvent) -> pb::ProjectionEvent {
    let event = &e.event;
    let mut metadata = event.metadata.as_object().cloned().unwrap_or_default();
    metadata.insert("__partition".into(), Json::from(e.partition.as_str()));
    if let Some(entity) = &event.entity {
        metadata.insert("__entity_id".into(), Json::from(entity.entity_id.as_str()));
        metadata.insert(
            "__entity_type".into(),
            Json::from(entity.entity_type.as_str()),
        );
        metadata.insert("__entity_version".into(), Json::from(entity.version));
    }
    let (data, data_value) = match &event.data {
        Json::Object(m) => (Some(map::map_to_struct(m)), None),
        other => (None, Some(map::json_to_value(other))),
    };
    pb::ProjectionEvent {
        id: event.id.to_string(),
        name: event.name.clone(),
        data,
        data_value,
        seq: event.seq,
        timestamp: Some(map::timestamp(event.received_at)),
        source: event.source.clone(),
        metadata: Some(map::map_to_struct(&metadata)),
        kind: pb::ProjectionEventKind::Event as i32,
    }
}

fn info(p: &ProjectionRecord) -> pb::ProjectionInfo {
    let d = &p.definition;
    let handlers = d.event_handlers.as_ref().map(|h| {
        let m: serde_json::Map<String, Json> = h
            .iter()
            .map(|(k, v)| (k.clone(), Json::from(v.as_str())))
            .collect();
        map::map_to_struct(&m)
    });
    pb::ProjectionInfo {
        name: p.name.clone(),
        mode: d.kind.mode().to_owned(),
        status: p.status.as_str().to_owned(),
        events: d.events.clone(),
        partition_key: d.partition_key.clone(),
        version: i32::try_from(p.revision).unwrap_or(i32::MAX),
        last_event_seq: p.cursor_seq,
        created_at: Some(map::timestamp(p.created_at)),
        updated_at: Some(map::timestamp(p.updated_at)),
        environment_id: p.env_id.to_string(),
        error_message: p.error_message.clone(),
        r#type: d.kind.as_str().to_owned(),
        sql_definition: d.table_sql.clone().unwrap_or_default(),
        event_handlers: handlers,
        description: d.description.clone(),
        rebuild_target_seq: running_rebuild(p).and_then(|j| j["target_seq"].as_i64()),
        rebuild_start_cursor: running_rebuild(p).and_then(|j| j["start_seq"].as_i64()),
        rebuild_started_at: running_rebuild(p).and_then(started_at),
        version_full: p.revision,
    }
}

fn definition_message(
    name: &str,
    env: &str,
    revision: i64,
    d: &Definition,
) -> pb::ProjectionDefinition {
    pb::ProjectionDefinition {
        name: name.to_owned(),
        environment_id: env.to_owned(),
        version: revision,
        events: d.events.clone(),
        partition_key: d.partition_key.clone(),
        mode: d.kind.mode().to_owned(),
        r#type: d.kind.as_str().to_owned(),
        sql_definition: d.table_sql.clone().unwrap_or_default(),
        event_handlers: d
            .event_handlers
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        description: d.description.clone(),
    }
}

fn history_entry(name: &str, env: &str, r: &RevisionRecord) -> pb::ProjectionHistoryEntry {
    pb::ProjectionHistoryEntry {
        event_id: r.event_id.clone(),
        revision: r.revision,
        previous_definition: r
            .previous
            .as_ref()
            .map(|d| definition_message(name, env, r.revision - 1, d)),
        actor_id: r.actor_id.clone(),
        change_reason: r.change_reason.clone(),
        change_type: r.change_type.clone(),
        recorded_at: Some(map::timestamp(r.recorded_at)),
    }
}

fn catchup_message(
    mode: ProjectionKind,
    c: &Catchup,
    timed_out: bool,
) -> pb::WaitProjectionCatchupResponse {
    pb::WaitProjectionCatchupResponse {
        caught_up: c.caught_up,
        timed_out,
        current_seq: u64::try_from(c.current_seq).unwrap_or(0),
        target_seq: u64::try_from(c.target_seq).unwrap_or(0),
        behind_by_events: c.behind_by_events,
        rebuilding: false,
        mode: mode.mode().to_owned(),
    }
}

async fn register(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::RegisterProjectionRequest,
) -> Result<pb::RegisterProjectionResponse, ApiError> {
    let kind = ProjectionKind::from_mode(&req.mode).map_err(ApiError::invalid)?;
    let registered = state
        .engine
        .register_projection(
            &ctx.env,
            RegisterProjection {
                name: req.name,
                definition: Definition {
                    kind,
                    events: req.events,
                    partition_key: req.partition_key,
                    description: String::new(),
                    table_sql: None,
                    event_handlers: None,
                },
                actor: ctx.actor(&req.change_reason),
            },
        )
        .await?;
    let status = match registered.registration {
        Registration::Created => "registered",
        _ => "updated",
    };
    Ok(pb::RegisterProjectionResponse {
        status: status.to_owned(),
        last_event_seq: registered.record.cursor_seq,
    })
}

async fn unregister(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::UnregisterProjectionRequest,
) -> Result<pb::UnregisterProjectionResponse, ApiError> {
    state
        .engine
        .delete_projection(&ctx.env, name_of(&req.name)?, ctx.actor("unregistered"))
        .await?;
    Ok(pb::UnregisterProjectionResponse {})
}

async fn acquire(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::AcquireProjectionLeaseRequest,
) -> Result<pb::AcquireProjectionLeaseResponse, ApiError> {
    let granted = state
        .engine
        .acquire_projection_lease(&ctx.env, name_of(&req.name)?)
        .await?;
    Ok(pb::AcquireProjectionLeaseResponse {
        granted: granted.is_some(),
        lease: granted.as_ref().map(lease_message),
        ttl: Some(duration(state.engine.projection_lease_ttl())),
    })
}

async fn renew(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::RenewProjectionLeaseRequest,
) -> Result<pb::RenewProjectionLeaseResponse, ApiError> {
    let lease = lease_of(req.lease).unwrap_or(PresentedLease {
        token: String::new(),
        epoch: 0,
    });
    state
        .engine
        .renew_projection_lease(&ctx.env, name_of(&req.name)?, &lease)
        .await?;
    Ok(pb::RenewProjectionLeaseResponse {
        ttl: Some(duration(state.engine.projection_lease_ttl())),
    })
}

async fn release(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::ReleaseProjectionLeaseRequest,
) -> Result<pb::ReleaseProjectionLeaseResponse, ApiError> {
    if let Some(lease) = lease_of(req.lease) {
        state
            .engine
            .release_projection_lease(&ctx.env, name_of(&req.name)?, &lease)
            .await?;
    }
    Ok(pb::ReleaseProjectionLeaseResponse {})
}

async fn poll(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::PollProjectionEventsRequest,
) -> Result<pb::PollProjectionEventsResponse, ApiError> {
    let name = name_of(&req.name)?;
    let mut feed = state
        .engine
        .open_projection_feed(&ctx.env, name, lease_of(req.lease), req.batch_size, false)
        .await?;
    let events = feed.poll().await?;
    let last = events.last().map_or(0, |e| e.event.seq);
    let projection = state.engine.projection(&ctx.env, name).await?;
    let (current_state, current_state_value) =
        if projection.definition.kind == ProjectionKind::Managed {
            let saved = state
                .engine
                .projection_state(&ctx.env, name, GLOBAL_PARTITION)
                .await?
                .saved;
            saved.map_or((None, None), |s| state_fields(&s.state))
        } else {
            (None, None)
        };
    Ok(pb::PollProjectionEventsResponse {
        events: events.iter().map(event_message).collect(),
        current_state,
        current_state_value,
        last_event_seq: last,
    })
}

fn position(
    id: String,
    seq: i64,
    at: Option<&pbjson_types::Timestamp>,
) -> Result<Position, ApiError> {
    Ok(Position {
        seq,
        event_id: id,
        at: at
            .map(|t| map::from_timestamp(t, "last_event_time"))
            .transpose()?,
    })
}

async fn save(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::SaveProjectionStateRequest,
) -> Result<pb::SaveProjectionStateResponse, ApiError> {
    let value = state_from(req.state.as_ref(), req.state_value.as_ref());
    let commit = RunnerCommit {
        name: name_of(&req.name)?.to_owned(),
        lease: lease_of(req.lease),
        position: position(
            req.last_event_id,
            req.last_event_seq,
            req.last_event_time.as_ref(),
        )?,
    };
    state
        .engine
        .save_projection_state(&ctx.env, commit, &req.partition_key, value)
        .await?;
    Ok(pb::SaveProjectionStateResponse { ok: true })
}

async fn ack(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::AckProjectionEventsRequest,
) -> Result<pb::AckProjectionEventsResponse, ApiError> {
    let commit = RunnerCommit {
        name: name_of(&req.name)?.to_owned(),
        lease: lease_of(req.lease),
        position: position(req.last_event_id, req.last_event_seq, None)?,
    };
    state.engine.ack_projection_events(&ctx.env, commit).await?;
    Ok(pb::AckProjectionEventsResponse { ok: true })
}

async fn get(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::GetProjectionRequest,
) -> Result<pb::GetProjectionResponse, ApiError> {
    if req.as_of.is_some() {
        return Err(ApiError::invalid(
            "as_of is not supported: a projection's state is kept at its cursor only",
        ));
    }
    let found = state
        .engine
        .projection_state(&ctx.env, name_of(&req.name)?, &req.partition)
        .await?;
    let p = &found.projection;
    let saved = found.saved.as_ref();
    let (state_struct, state_value) = saved.map_or((None, None), |s| state_fields(&s.state));
    Ok(pb::GetProjectionResponse {
        name: p.name.clone(),
        partition: if req.partition.is_empty() {
            String::new()
        } else {
            found.partition.clone()
        },
        state: state_struct,
        state_value,
        last_event_id: saved
            .map(|s| s.last_event_id.clone())
            .or_else(|| p.cursor_event_id.clone())
            .unwrap_or_default(),
        last_event_time: saved
            .and_then(|s| s.last_event_at)
            .or(p.cursor_event_at)
            .map(map::timestamp),
        version: p.revision,
        mode: p.definition.kind.mode().to_owned(),
        registry: Some(info(p)),
        state_last_event_seq: saved.map_or(0, |s| s.last_event_seq),
        state_updated_at: saved.map(|s| map::timestamp(s.updated_at)),
        state_environment_id: p.env_id.to_string(),
    })
}

async fn list(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::ListProjectionsRequest,
) -> Result<pb::ListProjectionsResponse, ApiError> {
    let query = ProjectionQuery {
        status: Some(req.status).filter(|s| !s.is_empty()),
        kind: Some(req.mode).filter(|s| !s.is_empty()),
        limit: i64::from(req.limit),
        offset: i64::from(req.offset),
    };
    let (rows, total) = state.engine.list_projections(&ctx.env, query).await?;
    Ok(pb::ListProjectionsResponse {
        projections: rows.iter().map(info).collect(),
        total_count: i32::try_from(total).unwrap_or(i32::MAX),
    })
}

fn status_message(report: &ProjectionReport) -> pb::GetProjectionStatusResponse {
    let p = &report.projection;
    // The SDK's message has no field for a hold-back: it is said where a reader looks first.
    let error_message = if p.error_message.is_empty() {
        report.holdback_message().unwrap_or_default()
    } else {
        p.error_message.clone()
    };
    pb::GetProjectionStatusResponse {
        name: p.name.clone(),
        status: p.status.as_str().to_owned(),
        mode: p.definition.kind.mode().to_owned(),
        last_event_seq: p.cursor_seq,
        lag: report.lag_events,
        error_message,
        updated_at: Some(map::timestamp(p.updated_at)),
        rebuild_target_seq: running_rebuild(p)
            .and_then(|j| j["target_seq"].as_i64())
            .unwrap_or(0),
        rebuild_start_cursor: running_rebuild(p)
            .and_then(|j| j["start_seq"].as_i64())
            .unwrap_or(0),
        rebuild_started_at: running_rebuild(p).and_then(started_at),
    }
}

/// The projection's rebuild job while it runs.
fn running_rebuild(p: &ProjectionRecord) -> Option<&Json> {
    p.rebuild.as_ref().filter(|j| j["status"] == "running")
}

fn started_at(job: &Json) -> Option<pbjson_types::Timestamp> {
    job["started_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| pbjson_types::Timestamp {
            seconds: t.timestamp(),
            nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
        })
}

fn rebuild_job(name: &str, job: &Json) -> pb::RebuildJob {
    let processed = job["events_processed"].as_i64().unwrap_or(0);
    let total = job["total_events"].as_i64().unwrap_or(0);
    let progress = if total > 0 {
        (processed as f64 / total as f64).min(1.0)
    } else if job["status"] == "running" {
        0.0
    } else {
        1.0
    };
    let started = started_at(job);
    let estimated_remaining = match (&started, job["status"].as_str()) {
        (Some(t), Some("running")) if processed > 0 && total > processed => {
            let elapsed = (chrono::Utc::now().timestamp() - t.seconds).max(0) as f64;
            let remaining = elapsed / processed as f64 * (total - processed) as f64;
            Some(duration(Duration::from_secs_f64(remaining.max(0.0))))
        }
        _ => None,
    };
    let text = |k: &str| job[k].as_str().unwrap_or_default().to_owned();
    pb::RebuildJob {
        job_id: text("job_id"),
        projection_name: name.to_owned(),
        status: text("status"),
        events_processed: processed,
        total_events: total,
        progress,
        started_at: started,
        estimated_remaining,
        error: text("error"),
        from_event_id: text("from_event_id"),
        to_event_id: text("to_event_id"),
        partition: text("partition"),
        dry_run: job["dry_run"].as_bool().unwrap_or(false),
    }
}

async fn create_sql(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::CreateSqlProjectionRequest,
) -> Result<pb::CreateSqlProjectionResponse, ApiError> {
    let (registered, _table) = state
        .engine
        .create_sql_projection(
            &ctx.env,
            CreateSqlProjection {
                name: req.name,
                table_sql: req.table_sql,
                event_handlers: req.event_handlers.into_iter().collect(),
                events: req.events,
                description: req.description,
                actor: ctx.actor("created"),
            },
        )
        .await?;
    let status = match registered.registration {
        Registration::Created => "created",
        _ => "exists",
    };
    Ok(pb::CreateSqlProjectionResponse {
        name: registered.record.name,
        status: status.to_owned(),
    })
}

fn text_of(value: &Json) -> String {
    match value {
        Json::Null => String::new(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn query_sql(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::QuerySqlProjectionRequest,
) -> Result<pb::QuerySqlProjectionResponse, ApiError> {
    let page = state
        .engine
        .query_sql_projection(
            &ctx.env,
            name_of(&req.name)?,
            &req.r#where,
            &req.order_by,
            i64::from(req.limit),
            i64::from(req.offset),
        )
        .await?;
    let rows = page
        .rows
        .iter()
        .map(|row| {
            let cells: Vec<&Json> = page
                .columns
                .iter()
                .map(|c| row.get(c).unwrap_or(&Json::Null))
                .collect();
            pb::QuerySqlRow {
                values: cells.iter().map(|v| text_of(v)).collect(),
                typed_values: cells.iter().map(|v| map::json_to_value(v)).collect(),
            }
        })
        .collect();
    Ok(pb::QuerySqlProjectionResponse {
        columns: page.columns,
        rows,
        total_count: i32::try_from(page.total).unwrap_or(i32::MAX),
    })
}

async fn rebuild(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::RebuildProjectionRequest,
) -> Result<pb::RebuildProjectionResponse, ApiError> {
    let name = name_of(&req.name)?;
    let job = state
        .engine
        .rebuild_projection(
            &ctx.env,
            name,
            RebuildRequest {
                partition: req.partition,
                from_event_id: req.from_event_id,
                to_event_id: req.to_event_id,
                dry_run: req.dry_run,
            },
        )
        .await?;
    Ok(pb::RebuildProjectionResponse {
        job: Some(rebuild_job(name, &job)),
    })
}

async fn get_rebuild_job(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::GetRebuildJobRequest,
) -> Result<pb::GetRebuildJobResponse, ApiError> {
    let name = name_of(&req.name)?;
    let job = state.engine.rebuild_job(&ctx.env, name).await?;
    Ok(pb::GetRebuildJobResponse {
        job: Some(rebuild_job(name, &job)),
    })
}

async fn cancel_rebuild(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::CancelRebuildRequest,
) -> Result<pb::CancelRebuildResponse, ApiError> {
    let status = state
        .engine
        .cancel_rebuild(&ctx.env, name_of(&req.name)?)
        .await?;
    Ok(pb::CancelRebuildResponse { status })
}

async fn status(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::GetProjectionStatusRequest,
) -> Result<pb::GetProjectionStatusResponse, ApiError> {
    let report = state
        .engine
        .projection_report(&ctx.env, name_of(&req.name)?)
        .await?;
    Ok(status_message(&report))
}

/// Pause or resume: the status the projection now has.
async fn set_status(
    state: &AppState,
    ctx: &RequestContext,
    name: &str,
    status: ProjectionStatus,
    reason: &str,
) -> Result<String, ApiError> {
    let status = state
        .engine
        .set_projection_status(&ctx.env, name_of(name)?, status, ctx.actor(reason))
        .await?;
    Ok(status.as_str().to_owned())
}

async fn pause(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::PauseProjectionRequest,
) -> Result<pb::PauseProjectionResponse, ApiError> {
    let status = set_status(state, ctx, &req.name, ProjectionStatus::Paused, "paused").await?;
    Ok(pb::PauseProjectionResponse { status })
}

async fn resume(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::ResumeProjectionRequest,
) -> Result<pb::ResumeProjectionResponse, ApiError> {
    let status = set_status(state, ctx, &req.name, ProjectionStatus::Active, "resumed").await?;
    Ok(pb::ResumeProjectionResponse { status })
}

fn min_seq(value: u64) -> Result<i64, ApiError> {
    i64::try_from(value).map_err(|_| ApiError::invalid(format!("min_seq {value} is out of range")))
}

async fn wait_one(
    state: &AppState,
    ctx: &RequestContext,
    name: &str,
    target: i64,
    timeout: Duration,
) -> Result<pb::WaitProjectionCatchupResponse, ApiError> {
    let (projection, catchup, timed_out) = state
        .engine
        .wait_projection_catchup(&ctx.env, name_of(name)?, target, timeout, |_| {})
        .await?;
    Ok(catchup_message(
        projection.definition.kind,
        &catchup,
        timed_out,
    ))
}

async fn wait_catchup(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::WaitProjectionCatchupRequest,
) -> Result<pb::WaitProjectionCatchupResponse, ApiError> {
    let timeout = wait_timeout(req.timeout.as_ref(), MAX_CATCHUP_WAIT)?;
    wait_one(state, ctx, &req.name, min_seq(req.min_seq)?, timeout).await
}

async fn wait_batch(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::WaitProjectionCatchupBatchRequest,
) -> Result<pb::WaitProjectionCatchupBatchResponse, ApiError> {
    if req.items.is_empty() || req.items.len() > 16 {
        return Err(ApiError::invalid(format!(
            "a batch waits for 1 to 16 items (got {})",
            req.items.len()
        )));
    }
    let timeout = wait_timeout(req.timeout.as_ref(), MAX_CATCHUP_WAIT)?;
    let waits = req.items.iter().map(|item| async move {
        let target = min_seq(item.min_seq)?;
        wait_one(state, ctx, &item.name, target, timeout).await
    });
    let results = futures::future::join_all(waits).await;
    Ok(pb::WaitProjectionCatchupBatchResponse {
        results: results
            .into_iter()
            .map(|r| match r {
                Ok(result) => pb::WaitItemResult {
                    result: Some(result),
                    error: String::new(),
                },
                Err(e) => pb::WaitItemResult {
                    result: None,
                    error: e.message,
                },
            })
            .collect(),
    })
}

async fn wait_for_event(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::WaitForEventRequest,
) -> Result<pb::WaitProjectionCatchupResponse, ApiError> {
    if req.event_id.trim().is_empty() {
        return Err(ApiError::invalid("event_id is required"));
    }
    let timeout = wait_timeout(req.timeout.as_ref(), MAX_CATCHUP_WAIT)?;
    let seq = state.engine.event_seq(&ctx.env, &req.event_id).await?;
    wait_one(state, ctx, &req.projection, seq, timeout).await
}

async fn list_history(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::ListProjectionHistoryRequest,
) -> Result<pb::ListProjectionHistoryResponse, ApiError> {
    let name = name_of(&req.name)?;
    let (rows, has_more) = state
        .engine
        .projection_revisions(&ctx.env, name, req.before_revision, i64::from(req.limit))
        .await?;
    let env = ctx.env.to_string();
    Ok(pb::ListProjectionHistoryResponse {
        next_before_revision: if has_more {
            rows.last().map_or(0, |r| r.revision)
        } else {
            0
        },
        entries: rows.iter().map(|r| history_entry(name, &env, r)).collect(),
        has_more,
    })
}

async fn get_revision(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::GetProjectionRevisionRequest,
) -> Result<pb::GetProjectionRevisionResponse, ApiError> {
    let name = name_of(&req.name)?;
    let r = state
        .engine
        .projection_revision(&ctx.env, name, req.revision)
        .await?;
    Ok(pb::GetProjectionRevisionResponse {
        entry: Some(history_entry(name, ctx.env.as_str(), &r)),
    })
}

/// `StreamProjectionEvents`: the runner's feed, from the durable cursor, until the client goes,
/// the lease is lost (ABORTED in the end message) or the server stops.
async fn stream_events(
    state: &AppState,
    ctx: &RequestContext,
    request: &StreamRequest,
) -> Response {
    let opened = async {
        let req: pb::StreamProjectionEventsRequest = request.decode()?;
        let name = name_of(&req.name)?.to_owned();
        Ok::<_, ApiError>(
            state
                .engine
                .open_projection_feed(
                    &ctx.env,
                    &name,
                    lease_of(req.lease),
                    req.batch_size,
                    req.accept_heartbeats,
                )
                .await?,
        )
    }
    .await;
    let mut feed = match opened {
        Ok(f) => f,
        Err(e) => return request.fail(&e),
    };
    let (response, sink) = request.open();
    tokio::spawn(async move {
        loop {
            let item = tokio::select! {
                item = feed.next() => item,
                () = sink.closed() => return,
            };
            match item {
                Ok(FeedItem::Events(events)) => {
                    for e in &events {
                        if !sink.send(&event_message(e)).await {
                            return;
                        }
                    }
                }
                Ok(FeedItem::Heartbeat) => {
                    let beat = pb::ProjectionEvent {
                        kind: pb::ProjectionEventKind::Heartbeat as i32,
                        ..Default::default()
                    };
                    if !sink.send(&beat).await {
                        return;
                    }
                }
                Err(e) => {
                    sink.finish(Some(&ApiError::from(e))).await;
                    return;
                }
            }
        }
    });
    response
}

/// `WaitProjectionCatchupStream`: a PROGRESS frame at each cursor move, then DONE.
async fn wait_catchup_stream(
    state: &AppState,
    ctx: &RequestContext,
    request: &StreamRequest,
) -> Response {
    let parsed = (|| {
        let req: pb::WaitProjectionCatchupRequest = request.decode()?;
        name_of(&req.name)?;
        let timeout = wait_timeout(req.timeout.as_ref(), MAX_CATCHUP_STREAM_WAIT)?;
        Ok::<_, ApiError>((req.name.clone(), min_seq(req.min_seq)?, timeout))
    })();
    let (name, target, timeout) = match parsed {
        Ok(p) => p,
        Err(e) => return request.fail(&e),
    };
    let (response, sink) = request.open();
    let engine = state.engine.clone();
    let env = ctx.env.clone();
    tokio::spawn(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Catchup>();
        let wait = engine.wait_projection_catchup(&env, &name, target, timeout, move |c| {
            let _ = tx.send(*c);
        });
        tokio::pin!(wait);
        let frame = |kind: pb::WaitStreamFrameKind, c: &Catchup, timed_out: bool, mode: &str| {
            pb::WaitProjectionCatchupStreamResponse {
                kind: kind as i32,
                current_seq: u64::try_from(c.current_seq).unwrap_or(0),
                target_seq: u64::try_from(c.target_seq).unwrap_or(0),
                behind_by_events: c.behind_by_events,
                caught_up: c.caught_up,
                timed_out,
                error: String::new(),
                mode: mode.to_owned(),
            }
        };
        let outcome = loop {
            tokio::select! {
                done = &mut wait => break done,
                Some(c) = rx.recv() => {
                    if !sink.send(&frame(pb::WaitStreamFrameKind::Progress, &c, false, "")).await {
                        return;
                    }
                }
                () = sink.closed() => return,
            }
        };
        match outcome {
            Ok((projection, c, timed_out)) => {
                let mode = projection.definition.kind.mode();
                let _ = sink
                    .send(&frame(pb::WaitStreamFrameKind::Done, &c, timed_out, mode))
                    .await;
                sink.finish(None).await;
            }
            Err(e) => sink.finish(Some(&ApiError::from(e))).await,
        }
    });
    response
}

/// `DELETE /api/v1/projections/{name}`: the projection, its cursor and its states.
pub async fn delete_projection(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(name): Path<String>,
) -> Result<AxumJson<Json>, ApiError> {
    state
        .engine
        .delete_projection(&ctx.env, &name, ctx.actor("deleted"))
        .await?;
    Ok(AxumJson(json!({"status": "deleted", "name": name})))
}

#[derive(Debug, Deserialize)]
pub struct PartitionsQuery {
    pub limit: Option<i64>,
    pub q: Option<String>,
}

/// `GET /api/v1/projections/{name}/partitions?limit&q`: the partitions with saved state.
pub async fn list_partitions(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(name): Path<String>,
    Query(query): Query<PartitionsQuery>,
) -> Result<AxumJson<Json>, ApiError> {
    let search = query.q.as_deref().filter(|q| !q.is_empty());
    let partitions = state
        .engine
        .projection_partitions(&ctx.env, &name, search, query.limit.unwrap_or(0))
        .await?;
    Ok(AxumJson(
        json!({"partitions": partitions, "returned": partitions.len()}),
    ))
}

/// `GET /api/v1/projections/{name}/status`: the cursor, the lag, and the open transaction that
/// holds the projection back, if any, as fields.
pub async fn projection_status(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(name): Path<String>,
) -> Result<AxumJson<Json>, ApiError> {
    let report = state.engine.projection_report(&ctx.env, &name).await?;
    let p = &report.projection;
    let h = &report.holdback;
    Ok(AxumJson(json!({
        "name": p.name,
        "mode": p.definition.kind.mode(),
        "status": p.status.as_str(),
        "error_message": p.error_message,
        "cursor_seq": p.cursor_seq,
        "cursor_event_id": p.cursor_event_id,
        "lag_events": report.lag_events,
        "lag_seconds": report.lag_seconds,
        "held_back": (h.held > 0).then(|| json!({
            "events": h.held,
            "backend_pid": h.pid,
            "transaction_started_at": h.since.map(|t| t.to_rfc3339()),
            "message": report.holdback_message(),
        })),
        "table": state.engine.sql_projection_table(p),
        "rebuild": p.rebuild,
        "lease_epoch": p.lease_epoch,
        "lease_expires_at": p.lease.as_ref().map(|l| l.expires_at.to_rfc3339()),
        "revision": p.revision,
        "updated_at": p.updated_at.to_rfc3339(),
    })))
}
