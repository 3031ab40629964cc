//! Function status and versions over `ironflow.v1.IronflowService`: `UpdateFunctionStatus`,
//! `DeleteFunction`, `ListFunctionHistory`, `GetFunctionAtVersion`, `RollbackFunction`.

use crate::domain::function::FunctionStatus;
use crate::domain::function_history::FunctionChange;
use crate::ids::{EnvId, FunctionId};
use crate::proto::v1 as pb;
use crate::store::functions::FunctionRecord;

use super::AppState;
use super::auth::RequestContext;
use super::error::ApiError;
use super::proto_map as map;

fn function_id(value: &str, field: &str) -> Result<FunctionId, ApiError> {
    FunctionId::parse(value).map_err(|e| ApiError::invalid(format!("{field}: {e}")))
}

/// A change as the SDK's `FunctionHistoryEntry` (the snapshot is the function after it).
fn entry(env: &EnvId, id: &FunctionId, c: &FunctionChange) -> pb::FunctionHistoryEntry {
    let snapshot = c.definition.clone().map(|definition| FunctionRecord {
        env_id: env.clone(),
        id: id.clone(),
        status: c.status,
        version: c.version,
        definition,
        created_at: c.recorded_at,
        updated_at: c.recorded_at,
    });
    pb::FunctionHistoryEntry {
        event_id: c.seq.to_string(),
        entity_version: c.entity_version,
        function_id: id.to_string(),
        function_snapshot: snapshot.as_ref().map(map::function),
        actor_id: c.actor_id.clone(),
        change_reason: c.change_reason.clone(),
        change_type: c.change_type.into(),
        recorded_at: Some(map::timestamp(c.recorded_at)),
    }
}

pub(super) async fn update_function_status(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::UpdateFunctionStatusRequest,
) -> Result<pb::Function, ApiError> {
    let id = function_id(&req.id, "id")?;
    let status: FunctionStatus = map::parse_function_status(req.status)?.ok_or_else(|| {
        ApiError::invalid("status is required: FUNCTION_STATUS_ACTIVE, _PAUSED or _ARCHIVED")
    })?;
    let function = state
        .engine
        .update_function_status(&ctx.env, &id, status, &ctx.actor("UpdateFunctionStatus"))
        .await?;
    Ok(map::function(&function))
}

pub(super) async fn delete_function(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::DeleteFunctionRequest,
) -> Result<pbjson_types::Empty, ApiError> {
    let id = function_id(&req.id, "id")?;
    state
        .engine
        .delete_function(&ctx.env, &id, &ctx.actor("DeleteFunction"))
        .await?;
    Ok(pbjson_types::Empty {})
}

pub(super) async fn list_function_history(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::ListFunctionHistoryRequest,
) -> Result<pb::ListFunctionHistoryResponse, ApiError> {
    let id = function_id(&req.function_id, "function_id")?;
    if req.from_version < 0 {
        return Err(ApiError::invalid("from_version must not be negative"));
    }
    let page = state
        .engine
        .function_history(&ctx.env, &id, req.from_version, Some(req.limit.into()))
        .await?;
    Ok(pb::ListFunctionHistoryResponse {
        entries: page
            .entries
            .iter()
            .map(|c| entry(&ctx.env, &id, c))
            .collect(),
        has_more: page.has_more,
    })
}

pub(super) async fn get_function_at_version(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::GetFunctionAtVersionRequest,
) -> Result<pb::GetFunctionAtVersionResponse, ApiError> {
    let id = function_id(&req.function_id, "function_id")?;
    let change = state
        .engine
        .function_at_version(&ctx.env, &id, req.version)
        .await?;
    Ok(pb::GetFunctionAtVersionResponse {
        entry: Some(entry(&ctx.env, &id, &change)),
    })
}

pub(super) async fn rollback_function(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::RollbackFunctionRequest,
) -> Result<pb::RollbackFunctionResponse, ApiError> {
    let id = function_id(&req.function_id, "function_id")?;
    let reason = if req.change_reason.is_empty() {
        "RollbackFunction"
    } else {
        req.change_reason.as_str()
    };
    let function = state
        .engine
        .rollback_function(&ctx.env, &id, req.version, &ctx.actor(reason))
        .await?;
    Ok(pb::RollbackFunctionResponse {
        function: Some(map::function(&function)),
    })
}
