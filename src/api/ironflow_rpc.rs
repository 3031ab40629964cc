//! `ironflow.v1.IronflowService` over Connect: thin handlers that parse, authorize, call the
//! engine and map the result.

use axum::response::Response;

use crate::ids::{EventId, FunctionId, RunId};
use crate::proto::v1 as pb;

use super::AppState;
use super::auth::RequestContext;
use super::connect::{Unary, respond};
use super::error::ApiError;
use super::function_versions_rpc as versions;
use super::proto_map as map;
use super::run_control_rpc as control;

pub async fn dispatch(
    state: &AppState,
    ctx: &RequestContext,
    caller: &super::streams_rpc::Caller,
    method: &str,
    unary: &Unary,
) -> Response {
    match method {
        "RegisterFunction" => respond(unary, |r| register_function(state, ctx, r)).await,
        "GetFunction" => respond(unary, |r| get_function(state, ctx, r)).await,
        "ListFunctions" => respond(unary, |r| list_functions(state, ctx, r)).await,
        "Trigger" | "Emit" => respond(unary, |r| emit(state, ctx, caller, r)).await,
        "TriggerSync" => respond(unary, |r| trigger_sync(state, ctx, r)).await,
        "InvokeFunction" => respond(unary, |r| invoke_function(state, ctx, r)).await,
        "InvokeFunctionSync" => respond(unary, |r| invoke_function_sync(state, ctx, r)).await,
        "GetRun" => respond(unary, |r| get_run(state, ctx, r)).await,
        "ListRuns" => respond(unary, |r| list_runs(state, ctx, r)).await,
        "GetRunSteps" => respond(unary, |r| get_run_steps(state, ctx, r)).await,
        "CancelRun" => respond(unary, |r| cancel_run(state, ctx, r)).await,
        "UpdateFunctionStatus" => {
            respond(unary, |r| versions::update_function_status(state, ctx, r)).await
        }
        "DeleteFunction" => respond(unary, |r| versions::delete_function(state, ctx, r)).await,
        "ListFunctionHistory" => {
            respond(unary, |r| versions::list_function_history(state, ctx, r)).await
        }
        "GetFunctionAtVersion" => {
            respond(unary, |r| versions::get_function_at_version(state, ctx, r)).await
        }
        "RollbackFunction" => respond(unary, |r| versions::rollback_function(state, ctx, r)).await,
        "PauseRun" => respond(unary, |r| control::pause_run(state, ctx, r)).await,
        "ResumeRun" => respond(unary, |r| control::resume_run(state, ctx, r)).await,
        "GetPausedState" => respond(unary, |r| control::get_paused_state(state, ctx, r)).await,
        "InjectStepOutput" => respond(unary, |r| control::inject_step_output(state, ctx, r)).await,
        "PatchStep" => respond(unary, |r| control::patch_step(state, ctx, r)).await,
        "RedactStep" => respond(unary, |r| control::redact_step(state, ctx, r)).await,
        "RedactRun" => respond(unary, |r| control::redact_run(state, ctx, r)).await,
        "RedactEvent" => respond(unary, |r| control::redact_event(state, ctx, r)).await,
        "DeleteRun" => respond(unary, |r| control::delete_run(state, ctx, r)).await,
        "DeleteRuns" => respond(unary, |r| control::delete_runs(state, ctx, r)).await,
        "TriggerBatch" => respond(unary, |r| control::trigger_batch(state, ctx, r)).await,
        "Health" => respond(unary, |r| health(state, r)).await,
        "Info" => respond(unary, |r| info(state, ctx, r)).await,
        m => super::connect::unknown_method("IronflowService", m),
    }
}

async fn register_function(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::RegisterFunctionRequest,
) -> Result<pb::RegisterFunctionResponse, ApiError> {
    let outcome = state
        .engine
        .register_function(&ctx.env, map::register_request(req)?)
        .await?;
    Ok(pb::RegisterFunctionResponse {
        function: Some(map::function(&outcome.function)),
        created: outcome.created,
    })
}

async fn get_function(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::GetFunctionRequest,
) -> Result<pb::Function, ApiError> {
    let id = FunctionId::parse(&req.id).map_err(|e| ApiError::invalid(format!("id: {e}")))?;
    let function = state.engine.get_function(&ctx.env, &id).await?;
    let mut out = map::function(&function);
    out.next_run = state
        .engine
        .next_cron_tick(&ctx.env, &id)
        .await?
        .map(map::timestamp);
    Ok(out)
}

async fn list_functions(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::ListFunctionsRequest,
) -> Result<pb::ListFunctionsResponse, ApiError> {
    let status = map::parse_function_status(req.status)?;
    let cursor = (!req.cursor.is_empty()).then_some(req.cursor);
    let page = state
        .engine
        .list_functions(&ctx.env, status, cursor, Some(req.limit.into()))
        .await?;
    Ok(pb::ListFunctionsResponse {
        total_count: i32::try_from(page.functions.len()).unwrap_or(i32::MAX),
        functions: page.functions.iter().map(map::function).collect(),
        next_cursor: page.next_cursor.unwrap_or_default(),
    })
}

async fn emit(
    state: &AppState,
    ctx: &RequestContext,
    caller: &super::streams_rpc::Caller,
    req: pb::TriggerRequest,
) -> Result<pb::TriggerResponse, ApiError> {
    let mut request = map::emit_request(req, "rpc");
    request.emitted_by_run = caller.run();
    let result = state.engine.emit(&ctx.env, request).await?;
    Ok(pb::TriggerResponse {
        run_ids: result.run_ids.iter().map(ToString::to_string).collect(),
        event_id: result.event_id.to_string(),
        error: None,
    })
}

/// `timeout_ms`: 0 is the server's longest wait; a negative value is refused (it used to be
/// read as "no timeout" and held the request for the longest wait).
fn sync_timeout(timeout_ms: i32) -> Result<std::time::Duration, ApiError> {
    u64::try_from(timeout_ms)
        .map(std::time::Duration::from_millis)
        .map_err(|_| {
            ApiError::invalid(format!(
                "timeout_ms must not be negative (got {timeout_ms}); 0 waits the longest the server allows"
            ))
        })
}

async fn trigger_sync(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::TriggerSyncRequest,
) -> Result<pb::TriggerSyncResponse, ApiError> {
    let timeout = sync_timeout(req.timeout_ms)?;
    let event = map::emit_request(
        pb::TriggerRequest {
            event: req.event,
            data: req.data,
            data_value: req.data_value,
            idempotency_key: req.idempotency_key,
            metadata: req.metadata,
            version: req.version,
        },
        "rpc",
    );
    let outcome = state.engine.trigger_sync(&ctx.env, event, timeout).await?;
    Ok(pb::TriggerSyncResponse {
        event_id: outcome.emitted.event_id.to_string(),
        results: map::run_results(&outcome),
    })
}

async fn invoke_function(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::InvokeFunctionRequest,
) -> Result<pb::InvokeFunctionResponse, ApiError> {
    let id = FunctionId::parse(&req.function_id)
        .map_err(|e| ApiError::invalid(format!("function_id: {e}")))?;
    let data = map::payload_json(req.data.as_ref(), req.data_value.as_ref());
    let key = (!req.idempotency_key.is_empty()).then_some(req.idempotency_key);
    let emitted = state
        .engine
        .invoke_function(&ctx.env, &id, data, key)
        .await?;
    Ok(pb::InvokeFunctionResponse {
        run_id: emitted
            .run_ids
            .first()
            .map(ToString::to_string)
            .unwrap_or_default(),
        event_id: emitted.event_id.to_string(),
    })
}

async fn invoke_function_sync(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::InvokeFunctionSyncRequest,
) -> Result<pb::InvokeFunctionSyncResponse, ApiError> {
    let id = FunctionId::parse(&req.function_id)
        .map_err(|e| ApiError::invalid(format!("function_id: {e}")))?;
    let data = map::payload_json(req.data.as_ref(), req.data_value.as_ref());
    let key = (!req.idempotency_key.is_empty()).then_some(req.idempotency_key);
    let outcome = state
        .engine
        .invoke_sync(&ctx.env, &id, data, key, sync_timeout(req.timeout_ms)?)
        .await?;
    Ok(pb::InvokeFunctionSyncResponse {
        result: map::run_results(&outcome).into_iter().next(),
    })
}

async fn get_run(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::GetRunRequest,
) -> Result<pb::Run, ApiError> {
    let id = RunId::parse(&req.id).map_err(|e| ApiError::invalid(format!("id: {e}")))?;
    Ok(map::run(&state.engine.get_run(&ctx.env, &id).await?))
}

async fn list_runs(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::ListRunsRequest,
) -> Result<pb::ListRunsResponse, ApiError> {
    let mut statuses = Vec::new();
    for value in std::iter::once(req.status).chain(req.statuses.iter().copied()) {
        if let Some(status) = map::parse_run_status(value)? {
            statuses.push(status);
        }
    }
    let query = crate::engine::RunPageQuery {
        cursor: (!req.cursor.is_empty()).then_some(req.cursor),
        limit: Some(req.limit.into()),
        function_id: (!req.function_id.is_empty())
            .then(|| FunctionId::parse(&req.function_id))
            .transpose()
            .map_err(|e| ApiError::invalid(format!("function_id: {e}")))?,
        statuses,
        event_id: (!req.event_id.is_empty())
            .then(|| EventId::parse(&req.event_id))
            .transpose()
            .map_err(|e| ApiError::invalid(format!("event_id: {e}")))?,
        since: req
            .since
            .as_ref()
            .map(|t| map::from_timestamp(t, "since"))
            .transpose()?,
        until: req
            .until
            .as_ref()
            .map(|t| map::from_timestamp(t, "until"))
            .transpose()?,
    };
    let page = state.engine.list_runs(&ctx.env, query).await?;
    Ok(pb::ListRunsResponse {
        total_count: i32::try_from(page.runs.len()).unwrap_or(i32::MAX),
        runs: page.runs.iter().map(map::run).collect(),
        next_cursor: page.next_cursor.unwrap_or_default(),
    })
}

async fn get_run_steps(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::GetRunStepsRequest,
) -> Result<pb::GetRunStepsResponse, ApiError> {
    let id = RunId::parse(&req.run_id).map_err(|e| ApiError::invalid(format!("run_id: {e}")))?;
    let steps = state.engine.run_steps(&ctx.env, &id).await?;
    Ok(pb::GetRunStepsResponse {
        steps: steps.iter().map(map::step).collect(),
    })
}

async fn cancel_run(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::CancelRunRequest,
) -> Result<pb::Run, ApiError> {
    let id = RunId::parse(&req.id).map_err(|e| ApiError::invalid(format!("id: {e}")))?;
    Ok(map::run(
        &state.engine.cancel_run(&ctx.env, &id, &req.reason).await?,
    ))
}

async fn health(state: &AppState, _req: pb::HealthRequest) -> Result<pb::HealthResponse, ApiError> {
    let db = state.engine.ping().await;
    let component = match &db {
        Ok(()) => pb::ComponentHealth {
            status: "ok".into(),
            message: String::new(),
        },
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unreachable");
            pb::ComponentHealth {
                status: "unavailable".into(),
                message: "database unreachable".into(),
            }
        }
    };
    Ok(pb::HealthResponse {
        status: if db.is_ok() { "ok" } else { "degraded" }.into(),
        timestamp: Some(map::timestamp(crate::domain::time::Ts::now())),
        components: [("database".to_owned(), component)].into_iter().collect(),
    })
}

async fn info(
    state: &AppState,
    ctx: &RequestContext,
    _req: pb::InfoRequest,
) -> Result<pb::InfoResponse, ApiError> {
    let counts = state.engine.env_counts(&ctx.env).await?;
    let workers = state.engine.connected_workers(&ctx.env).await?;
    Ok(pb::InfoResponse {
        version: env!("CARGO_PKG_VERSION").into(),
        go_version: String::new(),
        started_at: Some(map::timestamp(state.engine.started_at())),
        function_count: i32::try_from(counts.functions).unwrap_or(i32::MAX),
        active_runs: i32::try_from(counts.active_runs).unwrap_or(i32::MAX),
        connected_workers: i32::try_from(workers).unwrap_or(i32::MAX),
    })
}
