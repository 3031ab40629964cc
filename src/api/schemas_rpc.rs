//! `ironflow.v1.EventSchemaService`: thin handlers for registering, reading, deleting and
//! upcasting event schemas, their archived revisions, and the enforcement report.

use axum::response::Response;

use crate::engine::RegisterSchema;
use crate::proto::v1 as pb;
use crate::store::schemas::{SchemaRecord, SchemaRevision};

use super::AppState;
use super::auth::RequestContext;
use super::connect::{Unary, respond};
use super::error::ApiError;
use super::proto_map as map;

pub(super) async fn dispatch(
    state: &AppState,
    ctx: &RequestContext,
    method: &str,
    unary: &Unary,
) -> Response {
    match method {
        "RegisterSchema" => respond(unary, |r| register(state, ctx, r)).await,
        "GetSchema" => respond(unary, |r| get(state, ctx, r)).await,
        "ListSchemas" => respond(unary, |r| list(state, ctx, r)).await,
        "DeleteSchema" => respond(unary, |r| delete(state, ctx, r)).await,
        "TestUpcast" => respond(unary, |r| test_upcast(state, ctx, r)).await,
        "CheckEnforcement" => respond(unary, |r| check_enforcement(state, ctx, r)).await,
        "ListSchemaHistory" => respond(unary, |r| list_history(state, ctx, r)).await,
        "GetSchemaRevision" => respond(unary, |r| get_revision(state, ctx, r)).await,
        m => super::connect::unknown_method("EventSchemaService", m),
    }
}

fn required(value: &str, field: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        Err(ApiError::invalid(format!("{field} is required")))
    } else {
        Ok(())
    }
}

fn schema_info(s: &SchemaRecord, env: &str) -> pb::SchemaInfo {
    pb::SchemaInfo {
        event_name: s.event_name.clone(),
        version: s.version,
        description: s.description.clone(),
        created_at: Some(map::timestamp(s.created_at)),
        schema_json: s.schema_json.clone(),
        environment_id: env.to_owned(),
    }
}

fn history_entry(r: &SchemaRevision, env: &str) -> pb::SchemaHistoryEntry {
    pb::SchemaHistoryEntry {
        event_id: String::new(),
        revision: r.revision,
        previous_definition: Some(pb::SchemaDefinition {
            event_name: r.event_name.clone(),
            environment_id: env.to_owned(),
            version: r.version,
            schema_json: r.schema_json.clone(),
            description: r.description.clone(),
        }),
        actor_id: r.actor_id.clone(),
        change_reason: r.change_reason.clone(),
        change_type: r.change_type.clone(),
        recorded_at: Some(map::timestamp(r.recorded_at)),
    }
}

async fn register(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::RegisterSchemaRequest,
) -> Result<pb::RegisterSchemaResponse, ApiError> {
    required(&req.event_name, "event_name")?;
    required(&req.schema_json, "schema_json")?;
    let actor = ctx.actor(&req.change_reason);
    let created = state
        .engine
        .register_schema(
            &ctx.env,
            RegisterSchema {
                event_name: req.event_name,
                version: req.version,
                schema_json: req.schema_json,
                description: req.description,
                change_reason: req.change_reason,
            },
            &actor,
        )
        .await?;
    Ok(pb::RegisterSchemaResponse {
        status: if created { "created" } else { "updated" }.into(),
    })
}

async fn get(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::GetSchemaRequest,
) -> Result<pb::GetSchemaResponse, ApiError> {
    required(&req.event_name, "event_name")?;
    let s = state
        .engine
        .get_schema(&ctx.env, &req.event_name, req.version)
        .await?;
    Ok(pb::GetSchemaResponse {
        event_name: s.event_name,
        version: s.version,
        schema_json: s.schema_json,
        description: s.description,
        created_at: Some(map::timestamp(s.created_at)),
        environment_id: ctx.env.to_string(),
    })
}

async fn list(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::ListSchemasRequest,
) -> Result<pb::ListSchemasResponse, ApiError> {
    let name = Some(req.event_name.as_str()).filter(|n| !n.is_empty());
    let (schemas, total) = state
        .engine
        .list_schemas(&ctx.env, name, req.limit, req.offset)
        .await?;
    let env = ctx.env.to_string();
    Ok(pb::ListSchemasResponse {
        schemas: schemas.iter().map(|s| schema_info(s, &env)).collect(),
        total_count: i32::try_from(total).unwrap_or(i32::MAX),
    })
}

async fn delete(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::DeleteSchemaRequest,
) -> Result<pb::DeleteSchemaResponse, ApiError> {
    required(&req.event_name, "event_name")?;
    let actor = ctx.actor(&req.change_reason);
    state
        .engine
        .delete_schema(
            &ctx.env,
            &req.event_name,
            req.version,
            &req.change_reason,
            &actor,
        )
        .await?;
    Ok(pb::DeleteSchemaResponse {})
}

async fn test_upcast(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::TestUpcastRequest,
) -> Result<pb::TestUpcastResponse, ApiError> {
    required(&req.event_name, "event_name")?;
    let data = map::payload_json(req.data.as_ref(), req.data_value.as_ref());
    let (data, steps) = state
        .engine
        .test_upcast(
            &ctx.env,
            &req.event_name,
            req.from_version,
            req.to_version,
            &data,
        )
        .await?;
    Ok(pb::TestUpcastResponse {
        data: data.as_object().map(map::map_to_struct),
        data_value: Some(map::json_to_value(&data)),
        steps_applied: steps
            .into_iter()
            .map(|s| pb::UpcastStep {
                from_version: s.from_version,
                to_version: s.to_version,
                description: s.description,
            })
            .collect(),
    })
}

async fn check_enforcement(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::CheckEnforcementRequest,
) -> Result<pb::CheckEnforcementResponse, ApiError> {
    let name = Some(req.event_name.as_str()).filter(|n| !n.is_empty());
    let report = state
        .engine
        .check_enforcement(&ctx.env, name, req.traffic_window_hours)
        .await?;
    Ok(pb::CheckEnforcementResponse {
        mode: report.mode.as_str().into(),
        schemas: report
            .schemas
            .into_iter()
            .map(|c| pb::SchemaCheck {
                event_name: c.event_name,
                schema_hash: c.schema_hash,
                version: c.version,
                asserts: c.asserts,
                compile_error: c.compile_error.unwrap_or_default(),
                traffic: c
                    .traffic
                    .into_iter()
                    .map(|t| pb::SchemaTraffic {
                        version: t.version,
                        schema_hash: t.schema_hash,
                        count: t.count,
                    })
                    .collect(),
                traffic_truncated: c.traffic_truncated,
            })
            .collect(),
        traffic_window_hours: report.window_hours,
        total_schemas: i32::try_from(report.total_schemas).unwrap_or(i32::MAX),
    })
}

async fn list_history(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::ListSchemaHistoryRequest,
) -> Result<pb::ListSchemaHistoryResponse, ApiError> {
    required(&req.event_name, "event_name")?;
    let page = state
        .engine
        .schema_history(
            &ctx.env,
            &req.event_name,
            req.version,
            req.limit,
            req.before_revision,
        )
        .await?;
    let env = ctx.env.to_string();
    let next = if page.has_more {
        page.entries.last().map_or(0, |e| e.revision)
    } else {
        0
    };
    Ok(pb::ListSchemaHistoryResponse {
        entries: page
            .entries
            .iter()
            .map(|e| history_entry(e, &env))
            .collect(),
        has_more: page.has_more,
        next_before_revision: next,
    })
}

async fn get_revision(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::GetSchemaRevisionRequest,
) -> Result<pb::GetSchemaRevisionResponse, ApiError> {
    required(&req.event_name, "event_name")?;
    let r = state
        .engine
        .schema_revision(&ctx.env, &req.event_name, req.version, req.revision)
        .await?;
    Ok(pb::GetSchemaRevisionResponse {
        entry: Some(history_entry(&r, ctx.env.as_ref())),
    })
}
