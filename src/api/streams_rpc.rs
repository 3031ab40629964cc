//! `ironflow.v1.EntityStreamService`: thin handlers that parse, authorize, call the engine and
//! map the result (appends, reads, listings, entity history, snapshots, deletion).

use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::Value as Json;

use crate::domain::stream::{Direction, ExpectedVersion};
use crate::engine::{AppendEvent, EntityHistoryEntry};
use crate::ids::{EntityId, RunId};
use crate::proto::v1 as pb;
use crate::store::events::EventRecord;
use crate::store::streams::{StreamInfo, StreamQuery, StreamRange};

use super::AppState;
use super::auth::RequestContext;
use super::connect::{Unary, respond};
use super::error::ApiError;
use super::proto_map as map;

/// Who is calling, beyond the key: the run whose step sends the request, if it says so.
pub struct Caller {
    run: Option<String>,
}

impl Caller {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self {
            run: headers
                .get("x-ironflow-run-id")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned),
        }
    }

    /// The calling run; a malformed header is ignored rather than failing the append.
    pub fn run(&self) -> Option<RunId> {
        self.run.as_deref().and_then(|r| RunId::parse(r).ok())
    }
}

pub(super) async fn dispatch(
    state: &AppState,
    ctx: &RequestContext,
    caller: &Caller,
    method: &str,
    unary: &Unary,
) -> Response {
    match method {
        "AppendEvent" => respond(unary, |r| append_event(state, ctx, caller, r)).await,
        "ReadStream" => respond(unary, |r| read_stream(state, ctx, r)).await,
        "GetStreamInfo" => respond(unary, |r| get_stream_info(state, ctx, r)).await,
        "ListStreams" => respond(unary, |r| list_streams(state, ctx, r)).await,
        "GetEntityHistory" => respond(unary, |r| get_entity_history(state, ctx, r)).await,
        "CreateSnapshot" => respond(unary, |r| create_snapshot(state, ctx, r)).await,
        "GetSnapshot" => respond(unary, |r| get_snapshot(state, ctx, r)).await,
        "DeleteStream" => respond(unary, |r| delete_stream(state, ctx, r)).await,
        m => super::connect::unknown_method("EntityStreamService", m),
    }
}

fn entity(value: &str) -> Result<EntityId, ApiError> {
    Ok(EntityId::parse(value)?)
}

fn direction(value: &str) -> Result<Direction, ApiError> {
    Direction::from_wire(value).map_err(ApiError::invalid)
}

fn struct_of(value: &Json) -> Option<pbjson_types::Struct> {
    value.as_object().map(map::map_to_struct)
}

fn stream_event(e: &EventRecord) -> pb::StreamEvent {
    let entity = e.entity.as_ref();
    pb::StreamEvent {
        id: e.id.to_string(),
        name: e.name.clone(),
        data: struct_of(&e.data),
        data_value: Some(map::json_to_value(&e.data)),
        entity_version: entity.map_or(0, |x| x.version),
        version: e.version,
        timestamp: Some(map::timestamp(e.received_at)),
        source: e.source.clone(),
        metadata: struct_of(&e.metadata),
        environment_id: e.env_id.to_string(),
        idempotency_key: e.idempotency_key.clone().unwrap_or_default(),
        // Trigger matching happens in the append's transaction.
        processed: true,
        run_id: e
            .emitted_by_run
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        webhook_source_id: String::new(),
        schema_hash: e.schema.hash.clone().unwrap_or_default(),
        created_at: Some(map::timestamp(e.received_at)),
        entity_id: entity.map(|x| x.entity_id.to_string()).unwrap_or_default(),
        entity_type: entity.map(|x| x.entity_type.clone()).unwrap_or_default(),
        nats_seq: e.seq,
        emitted_by: e
            .emitted_by_run
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    }
}

fn stream_info(i: &StreamInfo) -> pb::GetStreamInfoResponse {
    pb::GetStreamInfoResponse {
        entity_id: i.entity_id.to_string(),
        entity_type: i.entity_type.clone(),
        version: i.version,
        event_count: i.event_count,
        created_at: Some(map::timestamp(i.created_at)),
        updated_at: Some(map::timestamp(i.updated_at)),
        deleted: i.deleted,
    }
}

fn count(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

async fn append_event(
    state: &AppState,
    ctx: &RequestContext,
    caller: &Caller,
    req: pb::AppendEventRequest,
) -> Result<pb::AppendEventResponse, ApiError> {
    let expected = ExpectedVersion::from_wire(req.expected_version).map_err(ApiError::invalid)?;
    let request = AppendEvent {
        entity_id: entity(&req.entity_id)?,
        entity_type: req.entity_type,
        event_name: req.event_name,
        data: map::payload_json(req.data.as_ref(), req.data_value.as_ref()),
        metadata: Json::Object(
            req.metadata
                .as_ref()
                .map(map::struct_to_map)
                .unwrap_or_default(),
        ),
        expected,
        idempotency_key: Some(req.idempotency_key).filter(|k| !k.is_empty()),
        version: req.version,
        emitted_by_run: caller.run(),
    };
    let appended = state.engine.append_event(&ctx.env, request).await?;
    Ok(pb::AppendEventResponse {
        entity_version: appended.entity_version,
        event_id: appended.event_id.to_string(),
        sequence: u64::try_from(appended.seq).unwrap_or_default(),
    })
}

async fn read_stream(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::ReadStreamRequest,
) -> Result<pb::ReadStreamResponse, ApiError> {
    let id = entity(&req.entity_id)?;
    let (events, total) = state
        .engine
        .read_stream(
            &ctx.env,
            &id,
            req.from_version,
            req.limit,
            direction(&req.direction)?,
        )
        .await?;
    Ok(pb::ReadStreamResponse {
        events: events.iter().map(stream_event).collect(),
        total_count: count(total),
    })
}

async fn get_stream_info(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::GetStreamInfoRequest,
) -> Result<pb::GetStreamInfoResponse, ApiError> {
    let info = state
        .engine
        .stream_info(&ctx.env, &entity(&req.entity_id)?)
        .await?;
    Ok(stream_info(&info))
}

async fn list_streams(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::ListStreamsRequest,
) -> Result<pb::ListStreamsResponse, ApiError> {
    let query = StreamQuery {
        entity_type: Some(req.entity_type).filter(|t| !t.is_empty()),
        search: Some(req.search).filter(|s| !s.is_empty()),
        include_deleted: req.include_deleted,
        ..StreamQuery::default()
    };
    let (streams, total) = state
        .engine
        .list_streams(&ctx.env, query, req.limit, req.offset)
        .await?;
    Ok(pb::ListStreamsResponse {
        streams: streams.iter().map(stream_info).collect(),
        total_count: count(total),
    })
}

fn millis(from: Option<crate::domain::time::Ts>, to: Option<crate::domain::time::Ts>) -> i64 {
    match (from, to) {
        (Some(a), Some(b)) => (b.millis() - a.millis()).max(0),
        _ => 0,
    }
}

fn history_entry(e: &EntityHistoryEntry) -> pb::EntityHistoryEntry {
    let data = &e.event.data;
    pb::EntityHistoryEntry {
        event_id: e.event.id.to_string(),
        event_name: e.event.name.clone(),
        event_data: struct_of(data),
        event_data_value: Some(map::json_to_value(data)),
        entity_version: e.event.entity.as_ref().map_or(0, |x| x.version),
        schema_version: e.event.version,
        source: e.event.source.clone(),
        timestamp: Some(map::timestamp(e.event.received_at)),
        runs: e
            .runs
            .iter()
            .map(|(run, steps)| {
                let started = run.started_at.or(Some(run.created_at));
                let full = millis(started, run.ended_at);
                pb::EntityHistoryRun {
                    run_id: run.id.to_string(),
                    function_id: run.function_id.to_string(),
                    status: run.status.as_str().to_owned(),
                    duration_ms: count(full),
                    started_at: started.map(map::timestamp),
                    ended_at: run.ended_at.map(map::timestamp),
                    steps: steps
                        .iter()
                        .map(|s| {
                            let full = millis(s.started_at, s.ended_at);
                            pb::EntityHistoryStep {
                                step_id: s.step_id.clone(),
                                name: s.name.clone(),
                                step_type: s.step_type.clone(),
                                status: s.status.clone(),
                                duration_ms: count(full),
                                error_message: s
                                    .error
                                    .as_ref()
                                    .map(|e| {
                                        e.get("message")
                                            .and_then(Json::as_str)
                                            .map_or_else(|| e.to_string(), str::to_owned)
                                    })
                                    .unwrap_or_default(),
                                duration_ms_full: full,
                            }
                        })
                        .collect(),
                    duration_ms_full: full,
                }
            })
            .collect(),
    }
}

async fn get_entity_history(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::GetEntityHistoryRequest,
) -> Result<pb::GetEntityHistoryResponse, ApiError> {
    let id = entity(&req.entity_id)?;
    let range = StreamRange {
        from_version: req.from_version,
        direction: direction(&req.direction)?,
        since: req
            .from_timestamp
            .as_ref()
            .map(|t| map::from_timestamp(t, "from_timestamp"))
            .transpose()?,
        until: req
            .to_timestamp
            .as_ref()
            .map(|t| map::from_timestamp(t, "to_timestamp"))
            .transpose()?,
        limit: 0,
    };
    let page = state
        .engine
        .entity_history(&ctx.env, &id, range, req.limit)
        .await?;
    Ok(pb::GetEntityHistoryResponse {
        entries: page.entries.iter().map(history_entry).collect(),
        next_cursor: page.next_version.unwrap_or(0),
        total_events: page.info.event_count,
        info: Some(pb::EntityHistoryInfo {
            entity_id: page.info.entity_id.to_string(),
            entity_type: page.info.entity_type.clone(),
            current_version: page.info.version,
            total_event_count: page.info.event_count,
            created_at: Some(map::timestamp(page.info.created_at)),
            updated_at: Some(map::timestamp(page.info.updated_at)),
        }),
    })
}

async fn create_snapshot(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::CreateSnapshotRequest,
) -> Result<pb::CreateSnapshotResponse, ApiError> {
    let id = entity(&req.entity_id)?;
    let snapshot_state = map::payload_json(req.state.as_ref(), req.state_value.as_ref());
    let snapshot_id = state
        .engine
        .create_snapshot(
            &ctx.env,
            &id,
            &req.entity_type,
            req.entity_version,
            snapshot_state,
        )
        .await?;
    Ok(pb::CreateSnapshotResponse { snapshot_id })
}

async fn get_snapshot(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::GetSnapshotRequest,
) -> Result<pb::GetSnapshotResponse, ApiError> {
    let id = entity(&req.entity_id)?;
    let s = state
        .engine
        .get_snapshot(&ctx.env, &id, req.before_version)
        .await?;
    Ok(pb::GetSnapshotResponse {
        snapshot_id: s.id,
        entity_id: s.entity_id.to_string(),
        entity_type: s.entity_type,
        entity_version: s.entity_version,
        state: struct_of(&s.state),
        state_value: Some(map::json_to_value(&s.state)),
        created_at: Some(map::timestamp(s.created_at)),
    })
}

async fn delete_stream(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::DeleteStreamRequest,
) -> Result<pb::DeleteStreamResponse, ApiError> {
    let id = entity(&req.entity_id)?;
    let actor = ctx.actor("DeleteStream");
    let version = state
        .engine
        .delete_stream(&ctx.env, &id, req.purge, &actor)
        .await?;
    Ok(pb::DeleteStreamResponse {
        entity_version: version,
    })
}
