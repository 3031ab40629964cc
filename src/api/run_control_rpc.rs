//! The run-control and history-editing methods of `ironflow.v1.IronflowService` (pause,
//! resume, paused state, inject, patch, redact, delete, trigger batch) and
//! `ironflow.v1.TimeTravelService`: thin handlers that parse, authorize, call the engine and
//! map the result.

use axum::response::Response;
use serde_json::Value as Json;

use crate::domain::lifecycle::control::StepEdit;
use crate::domain::time::Ts;
use crate::domain::time_travel::StepAt;
use crate::ids::{EventId, FunctionId, RunId};
use crate::proto::v1 as pb;
use crate::store::control::StepRef;

use super::AppState;
use super::auth::RequestContext;
use super::connect::{Unary, respond};
use super::error::ApiError;
use super::proto_map as map;

fn run_id(value: &str, field: &str) -> Result<RunId, ApiError> {
    RunId::parse(value).map_err(|e| ApiError::invalid(format!("{field}: {e}")))
}

/// A step's row id as `Step.id` shows it: `<run id>:<step id>`.
fn step_row_id(value: &str) -> Result<StepRef, ApiError> {
    let (run, step) = value.split_once(':').ok_or_else(|| {
        ApiError::invalid(format!(
            "step_id '{value}': expected a step row id '<run id>:<step id>' (Step.id)"
        ))
    })?;
    if step.is_empty() {
        return Err(ApiError::invalid(format!(
            "step_id '{value}': the step id after '<run id>:' is empty"
        )));
    }
    Ok(StepRef {
        run: run_id(run, "step_id")?,
        step_id: step.to_owned(),
    })
}

/// A step of a known run: its step id, or its row id (`<run id>:<step id>`).
fn step_of_run(run: &RunId, value: &str) -> Result<StepRef, ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid("step_id is required"));
    }
    let row_prefix = format!("{run}:{run}:");
    let step_id = if value.starts_with(&row_prefix) {
        &value[run.as_str().len() + 1..]
    } else {
        value
    };
    Ok(StepRef {
        run: run.clone(),
        step_id: step_id.to_owned(),
    })
}

/// A JSON payload carried as bytes.
fn json_bytes(bytes: &[u8], field: &str) -> Result<Json, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("{field}: not valid JSON ({e})")))
}

fn to_bytes(value: Option<&Json>) -> Vec<u8> {
    value
        .map(|v| v.to_string().into_bytes())
        .unwrap_or_default()
}

pub(super) async fn pause_run(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::PauseRunRequest,
) -> Result<pb::PauseRunResponse, ApiError> {
    let id = run_id(&req.run_id, "run_id")?;
    let (status, _) = state
        .engine
        .pause_run(&ctx.env, &id, &ctx.actor("PauseRun"))
        .await?;
    Ok(pb::PauseRunResponse {
        status: status.into(),
    })
}

pub(super) async fn resume_run(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::ResumeRunRequest,
) -> Result<pb::Run, ApiError> {
    let id = run_id(&req.run_id, "run_id")?;
    let from_step = (!req.from_step.is_empty())
        .then(|| step_of_run(&id, &req.from_step))
        .transpose()?;
    let run = state
        .engine
        .resume_run(
            &ctx.env,
            &id,
            from_step.as_ref().map(|s| s.step_id.as_str()),
            &ctx.actor("ResumeRun"),
        )
        .await?;
    Ok(map::run(&run))
}

pub(super) async fn get_paused_state(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::GetPausedStateRequest,
) -> Result<pb::GetPausedStateResponse, ApiError> {
    let id = run_id(&req.run_id, "run_id")?;
    let paused = state.engine.paused_state(&ctx.env, &id).await?;
    Ok(pb::GetPausedStateResponse {
        steps: paused
            .steps
            .iter()
            .map(|s| pb::PausedStepInfo {
                id: format!("{}:{}", s.run_id, s.step_id),
                name: s.name.clone(),
                output: to_bytes(s.output.as_ref()),
                injected: s.injected,
                completed_at: s.ended_at.map(map::timestamp),
                step_type: s.step_type.clone(),
                status: s.status.clone(),
                error: to_bytes(s.error.as_ref()),
            })
            .collect(),
        next_step_hint: paused.next_step_hint.unwrap_or_default(),
        pause_reason: paused.pause_reason.unwrap_or_default(),
    })
}

pub(super) async fn inject_step_output(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::InjectStepOutputRequest,
) -> Result<pb::InjectStepOutputResponse, ApiError> {
    let id = run_id(&req.run_id, "run_id")?;
    let step = step_of_run(&id, &req.step_id)?;
    let output = json_bytes(&req.new_output, "new_output")?;
    let (edited, previous) = state
        .engine
        .edit_step(
            &ctx.env,
            &step,
            StepEdit::Inject,
            &output,
            &ctx.actor(&req.reason),
        )
        .await?;
    Ok(pb::InjectStepOutputResponse {
        step_id: edited.step_id,
        previous_output: to_bytes(previous.as_ref()),
    })
}

pub(super) async fn patch_step(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::PatchStepRequest,
) -> Result<pb::Step, ApiError> {
    let step = step_row_id(&req.step_id)?;
    if req.output.is_none() && req.output_value.is_none() {
        return Err(ApiError::invalid(
            "output (or output_value) is required: the step's new output",
        ));
    }
    let output = map::payload_json(req.output.as_ref(), req.output_value.as_ref());
    let (edited, _) = state
        .engine
        .edit_step(
            &ctx.env,
            &step,
            StepEdit::Patch,
            &output,
            &ctx.actor(&req.reason),
        )
        .await?;
    Ok(map::step(&edited))
}

pub(super) async fn redact_step(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::RedactStepRequest,
) -> Result<pbjson_types::Empty, ApiError> {
    let step = step_row_id(&req.step_id)?;
    state
        .engine
        .redact_run(
            &ctx.env,
            &step.run,
            Some(&step.step_id),
            &ctx.actor("RedactStep"),
        )
        .await?;
    Ok(pbjson_types::Empty {})
}

pub(super) async fn redact_run(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::RedactRunRequest,
) -> Result<pbjson_types::Empty, ApiError> {
    let id = run_id(&req.run_id, "run_id")?;
    state
        .engine
        .redact_run(&ctx.env, &id, None, &ctx.actor("RedactRun"))
        .await?;
    Ok(pbjson_types::Empty {})
}

pub(super) async fn redact_event(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::RedactEventRequest,
) -> Result<pbjson_types::Empty, ApiError> {
    let id =
        EventId::parse(&req.event_id).map_err(|e| ApiError::invalid(format!("event_id: {e}")))?;
    state
        .engine
        .redact_event(&ctx.env, &id, &ctx.actor("RedactEvent"))
        .await?;
    Ok(pbjson_types::Empty {})
}

pub(super) async fn delete_run(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::DeleteRunRequest,
) -> Result<pbjson_types::Empty, ApiError> {
    let id = run_id(&req.id, "id")?;
    state
        .engine
        .delete_run(&ctx.env, &id, &ctx.actor("DeleteRun"))
        .await?;
    Ok(pbjson_types::Empty {})
}

pub(super) async fn delete_runs(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::DeleteRunsRequest,
) -> Result<pb::DeleteRunsResponse, ApiError> {
    let query = crate::engine::DeleteRunsQuery {
        function_id: (!req.function_id.is_empty())
            .then(|| FunctionId::parse(&req.function_id))
            .transpose()
            .map_err(|e| ApiError::invalid(format!("function_id: {e}")))?,
        status: map::parse_run_status(req.status)?,
        until: req
            .until
            .as_ref()
            .map(|t| map::from_timestamp(t, "until"))
            .transpose()?,
    };
    let deleted = state
        .engine
        .delete_runs(&ctx.env, &query, &ctx.actor("DeleteRuns"))
        .await?;
    Ok(pb::DeleteRunsResponse {
        deleted: i64::try_from(deleted).unwrap_or(i64::MAX),
    })
}

/// Each item answered on its own: one failure does not stop the rest.
pub(super) async fn trigger_batch(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::TriggerBatchRequest,
) -> Result<pb::TriggerBatchResponse, ApiError> {
    if req.events.len() > crate::engine::MAX_TRIGGER_BATCH {
        return Err(ApiError::invalid(format!(
            "events: {} items; at most {} per TriggerBatch",
            req.events.len(),
            crate::engine::MAX_TRIGGER_BATCH
        )));
    }
    let events = req
        .events
        .into_iter()
        .map(|e| map::emit_request(e, "rpc"))
        .collect();
    let results = state.engine.emit_each(&ctx.env, events).await;
    Ok(pb::TriggerBatchResponse {
        results: results
            .into_iter()
            .map(|r| match r {
                Ok(emitted) => pb::TriggerResponse {
                    run_ids: emitted.run_ids.iter().map(ToString::to_string).collect(),
                    event_id: emitted.event_id.to_string(),
                    error: None,
                },
                Err(e) => {
                    let e = ApiError::from(e);
                    pb::TriggerResponse {
                        run_ids: Vec::new(),
                        event_id: String::new(),
                        error: Some(pb::Error {
                            code: e.code.as_str().into(),
                            message: e.message,
                            retryable: e.retryable,
                            ..Default::default()
                        }),
                    }
                }
            })
            .collect(),
    })
}

/// `ironflow.v1.TimeTravelService`.
pub(super) async fn time_travel(
    state: &AppState,
    ctx: &RequestContext,
    method: &str,
    unary: &Unary,
) -> Response {
    match method {
        "GetRunStateAt" => respond(unary, |r| get_run_state_at(state, ctx, r)).await,
        "GetRunTimeline" => respond(unary, |r| get_run_timeline(state, ctx, r)).await,
        "GetStepOutputAt" => respond(unary, |r| get_step_output_at(state, ctx, r)).await,
        m => super::connect::unknown_method("TimeTravelService", m),
    }
}

/// The instant asked for; unset is now.
fn instant(ts: Option<&pbjson_types::Timestamp>) -> Result<Ts, ApiError> {
    ts.map_or_else(|| Ok(Ts::now()), |t| map::from_timestamp(t, "timestamp"))
}

fn step_snapshot(s: &StepAt) -> pb::TimeTravelStepSnapshot {
    pb::TimeTravelStepSnapshot {
        step_id: s.step_id.clone(),
        name: s.name.clone(),
        r#type: s.step_type.clone(),
        sequence: i32::try_from(s.sequence).unwrap_or(i32::MAX),
        status: s.status.clone(),
        output: to_bytes(s.output.as_ref()),
        error: to_bytes(s.error.as_ref()),
        original_output: to_bytes(s.original_output.as_ref()),
        started_at: s.started_at.map(map::timestamp),
        completed_at: s.completed_at.map(map::timestamp),
        duration_ms: s
            .duration_ms()
            .map_or(0, |d| i32::try_from(d).unwrap_or(i32::MAX)),
        injected: s.injected,
        patched: s.patched,
    }
}

async fn get_run_state_at(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::GetRunStateAtRequest,
) -> Result<pb::GetRunStateAtResponse, ApiError> {
    let id = run_id(&req.run_id, "run_id")?;
    let at = instant(req.timestamp.as_ref())?;
    let (run, snapshot) = state.engine.run_state_at(&ctx.env, &id, at).await?;
    Ok(pb::GetRunStateAtResponse {
        snapshot: Some(pb::TimeTravelRunStateSnapshot {
            run_id: run.id.to_string(),
            function_id: run.function_id.to_string(),
            status: snapshot.status.clone(),
            input: to_bytes(Some(&run.input)),
            steps: snapshot.steps.iter().map(step_snapshot).collect(),
            timestamp: Some(map::timestamp(at)),
            created_at: Some(map::timestamp(run.created_at)),
        }),
    })
}

async fn get_run_timeline(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::GetRunTimelineRequest,
) -> Result<pb::GetRunTimelineResponse, ApiError> {
    let id = run_id(&req.run_id, "run_id")?;
    let entries = state.engine.run_timeline(&ctx.env, &id).await?;
    Ok(pb::GetRunTimelineResponse {
        events: entries
            .into_iter()
            .map(|e| pb::TimeTravelTimelineEvent {
                id: e.seq.to_string(),
                event_type: e.kind,
                step_id: e.step_id.unwrap_or_default(),
                step_name: e.step_name.unwrap_or_default(),
                summary: e.summary,
                significant: e.significant,
                timestamp: Some(map::timestamp(e.at)),
            })
            .collect(),
    })
}

async fn get_step_output_at(
    state: &AppState,
    ctx: &RequestContext,
    req: pb::GetStepOutputAtRequest,
) -> Result<pb::GetStepOutputAtResponse, ApiError> {
    let id = run_id(&req.run_id, "run_id")?;
    let step = step_of_run(&id, &req.step_id)?;
    let at = instant(req.timestamp.as_ref())?;
    let (_, snapshot) = state.engine.run_state_at(&ctx.env, &id, at).await?;
    let found = snapshot
        .steps
        .iter()
        .find(|s| s.step_id == step.step_id)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "run '{id}' had no step '{}' at {}",
                step.step_id,
                at.to_rfc3339()
            ))
        })?;
    Ok(pb::GetStepOutputAtResponse {
        step_id: found.step_id.clone(),
        status: found.status.clone(),
        output: to_bytes(found.output.as_ref()),
        original_output: to_bytes(found.original_output.as_ref()),
        patched: found.patched,
        injected: found.injected,
    })
}
